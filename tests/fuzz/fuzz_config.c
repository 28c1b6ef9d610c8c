/* fuzz_config.c: civis_client_config_parse with a lookup over fuzzed
 * values. Input: up to four NUL-separated values for CIVIS_API_KEY,
 * CIVIS_JOB_ID, CIVIS_RUN_ID, CIVIS_API_ENDPOINT (fewer parts: the rest
 * unset). Must never crash or leak; success gives positive ids and an
 * endpoint ending in '/'; every message is one line that does not depend
 * on the key's value. The same values then go through the proxy choice
 * (http_proxy.c) as https_proxy, NO_PROXY and a URL: never a proxy for an
 * http:// URL, never a control character in what is shown of one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <strings.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "../../lib/src/dl.h"
#include "../../lib/src/http_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[4] = {
	"CIVIS_API_KEY", "CIVIS_JOB_ID", "CIVIS_RUN_ID", "CIVIS_API_ENDPOINT"
};

static const char *
fuzz_lookup(const char *name, void *ud)
{
	const char *const *vals = ud;

	for (int i = 0; i < 4; i++)
		if (strcmp(name, names[i]) == 0)
			return vals[i];
	return NULL;
}

static const char *
proxy_lookup(const char *name, void *ud)
{
	const char *const *vals = ud;

	if (strcmp(name, "https_proxy") == 0)
		return vals[0];
	if (strcmp(name, "NO_PROXY") == 0)
		return vals[1];
	return NULL;
}

/* The proxy for the URL vals[3], with vals[0] as https_proxy and vals[1]
 * as NO_PROXY; vals[2] as a host against that list. */
static void
fuzz_proxy(const char *const *vals)
{
	static char full[CIVIS__PROXY_MAX];
	static civis__proxy_env pe;
	char shown[160];
	size_t i;

	if (civis__dl_curl(NULL, 0) != CIVIS_OK)
		return;
	civis__proxy_env_read(&pe, proxy_lookup, (void *)vals);
	(void)civis__noproxy_match(vals[1], vals[2] != NULL ? vals[2] : "");
	if (vals[3] == NULL || civis__proxy_pick(&pe, vals[3], full, sizeof(full)) != CIVIS_OK)
		return;
	if (strncasecmp(vals[3], "http://", 7) == 0 && full[0] != '\0')
		abort();
	civis__proxy_display(full, shown, sizeof(shown));
	for (i = 0; shown[i] != '\0'; i++)
		if ((unsigned char)shown[i] < 0x20 || shown[i] == 0x7f)
			abort();
}

static int
sendable(const char *k)
{
	for (; *k != '\0'; k++)
		if ((unsigned char)*k <= 0x20 || (unsigned char)*k >= 0x7f || *k == ':')
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *vals[4] = { NULL, NULL, NULL, NULL };
	civis_client_config cfg;
	char err[512];
	char *copy, *p;
	int rc, n = 0;

	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (p = copy; n < 4 && p <= copy + size; n++) {
		vals[n] = p;
		p += strlen(p) + 1;
	}

	rc = civis_client_config_parse(&cfg, fuzz_lookup, vals, err, sizeof(err));
	if (strchr(err, '\n') != NULL || strchr(err, '\r') != NULL)
		abort();
	if (rc == CIVIS_OK) {
		size_t el = strlen(cfg.endpoint);

		if (err[0] != '\0' || cfg.job_id <= 0 || cfg.run_id <= 0 || el == 0 ||
		    cfg.endpoint[el - 1] != '/' || strcmp(cfg.api_key, vals[0]) != 0 ||
		    (strncmp(cfg.endpoint, "https://", 8) != 0 &&
		     strncmp(cfg.endpoint, "http://", 7) != 0))
			abort();
		civis_client_config_dispose(&cfg);
	} else {
		if (err[0] == '\0' || cfg.api_key != NULL || cfg.endpoint != NULL)
			abort();
	}
	/* The message never depends on the key's value: a sendable key of
	 * the same length gives the very same result and text. */
	if (vals[0] != NULL && sendable(vals[0])) {
		size_t kl = strlen(vals[0]);
		char *other = malloc(kl + 1);
		const char *vals2[4] = { other, vals[1], vals[2], vals[3] };
		char err2[512];

		if (other != NULL) {
			memset(other, 'Q', kl);
			other[kl] = '\0';
			if (civis_client_config_parse(&cfg, fuzz_lookup, vals2, err2, sizeof(err2)) != rc ||
			    strcmp(err, err2) != 0)
				abort();
			civis_client_config_dispose(&cfg);
			free(other);
		}
	}
	fuzz_proxy(vals);
	free(copy);
	return 0;
}
