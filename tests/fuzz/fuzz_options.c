/* fuzz_options.c: the command line and CIVIS_AGENT_* environment parser on
 * arbitrary words. Input: NUL-separated words; those with '=' become
 * environment entries, the rest argv. Must never crash, and any accepted
 * command must be a non-empty argv. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

static char *env_words[32];
static size_t n_env;

static const char *
fuzz_getenv(const char *name, void *ud)
{
	size_t n = strlen(name);

	(void)ud;
	for (size_t i = 0; i < n_env; i++)
		if (strncmp(env_words[i], name, n) == 0 && env_words[i][n] == '=')
			return env_words[i] + n + 1;
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *argv[34];
	int argc = 0;
	agent_opts o;
	char err[512];
	int rc;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	n_env = 0;
	argv[argc++] = (char *)"civis-agent";
	for (char *p = copy; p < copy + size + 1 && argc < 33; p += strlen(p) + 1) {
		/* an env entry names a CIVIS_AGENT_ variable */
		if (strncmp(p, "CIVIS_AGENT_", 12) == 0 && strchr(p, '=') && n_env < 32)
			env_words[n_env++] = p;
		else
			argv[argc++] = p;
		if (p + strlen(p) >= copy + size)
			break;
	}
	argv[argc] = NULL;
	rc = agent_opts_parse(&o, argc, argv, fuzz_getenv, NULL, err, sizeof(err));
	if (rc == AGENT_OPTS_RUN && (o.argc < 1 || !o.argv[0] || o.argv[o.argc] != NULL))
		abort();
	if (rc < 0 && (err[0] == '\0' || strchr(err, '\n')))
		abort();
	agent_opts_dispose(&o);
	free(copy);
	return 0;
}
