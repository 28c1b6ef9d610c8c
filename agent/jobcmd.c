/* jobcmd.c: `civis-agent mask` and `civis-agent output` (see jobcmd.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cJSON.h>

#include "civis/civis.h"
#include "jobapi_proto.h"
#include "jobclient.h"
#include "jobcmd.h"

/* Replies to mask and output come quickly; an agent that does not answer
 * in this time is stuck or gone. */
#define CALL_TIMEOUT_MS 120000

void
agent_jobcmd_usage(FILE *f)
{
	fputs("usage: civis-agent mask VALUE\n"
	      "       civis-agent mask -            (the value from stdin; one trailing newline dropped)\n"
	      "       civis-agent output TYPE ID    (TYPE: File, Table, Report, Project, Credential, JSONValue)\n"
	      "       civis-agent output json NAME JSON\n", f);
}

static const char *
socket_addr(void)
{
	const char *s = getenv(AGENT_JOBCLIENT_ENV);

	return s != NULL && *s != '\0' ? s : NULL;
}

/* Read the secret from stdin: at most AGENT_JOBAPI_MAX_SECRET bytes. */
static int
read_stdin_value(char *buf, size_t cap, size_t *len)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = read(STDIN_FILENO, buf + n, cap - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "civis-agent: mask: reading stdin: %s\n", strerror(errno));
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap) {
			fprintf(stderr, "civis-agent: mask: the value on stdin is over %u bytes\n",
			        AGENT_JOBAPI_MAX_SECRET);
			return -1;
		}
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	*len = n;
	return 0;
}

int
agent_mask_cmd_main(int argc, char **argv)
{
	static char buf[AGENT_JOBAPI_MAX_SECRET + 1];
	agent_jobapi_req r = { .op = AGENT_JOBAPI_MASK };
	const char *addr = socket_addr();
	char text[512];
	int64_t id;
	size_t n;
	int rc;

	if (argc != 2 || (argv[1][0] == '-' && argv[1][1] != '\0')) {
		agent_jobcmd_usage(stderr);
		return AGENT_JOBCMD_USAGE;
	}
	if (strcmp(argv[1], "-") == 0) {
		if (read_stdin_value(buf, sizeof(buf) - 1, &n) != 0)
			return AGENT_JOBCMD_FAILED;
		r.value = buf;
	} else {
		r.value = argv[1];
		n = strlen(argv[1]);
	}
	if (n == 0 || memchr(r.value, '\0', n) != NULL) {
		fprintf(stderr, "civis-agent: mask: the value is empty\n");
		return AGENT_JOBCMD_USAGE;
	}
	r.value_len = n;
	if (addr == NULL) {
		fprintf(stderr, "civis-agent: mask: no agent to tell (%s is not set): run it inside a "
		        "command started by civis-agent\n", AGENT_JOBCLIENT_ENV);
		return AGENT_JOBCMD_FAILED;
	}
	rc = agent_jobclient_call(addr, &r, CALL_TIMEOUT_MS, &id, text, sizeof(text));
	memset(buf, 0, sizeof(buf));
	if (rc != CIVIS_OK) {
		fprintf(stderr, "civis-agent: mask: %s\n", text);
		return AGENT_JOBCMD_FAILED;
	}
	return AGENT_JOBCMD_OK;
}

static int
parse_id(const char *s, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1)
		return -1;
	*out = v;
	return 0;
}

/* The JSON argument, checked and made compact, into *out (cJSON_free). */
static int
compact_json(const char *text, char **out, size_t *len)
{
	cJSON *v = cJSON_Parse(text);

	*out = NULL;
	if (v == NULL) {
		fprintf(stderr, "civis-agent: output: JSON is not valid JSON (quote strings: '\"text\"')\n");
		return -1;
	}
	*out = cJSON_PrintUnformatted(v);
	cJSON_Delete(v);
	if (*out == NULL) {
		fprintf(stderr, "civis-agent: output: out of memory\n");
		return -1;
	}
	*len = strlen(*out);
	if (*len > AGENT_JOBAPI_MAX_JSON) {
		fprintf(stderr, "civis-agent: output: the JSON value is %zu bytes; the API takes at "
		        "most %u\n", *len, AGENT_JOBAPI_MAX_JSON);
		cJSON_free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static int
output_via_agent(const char *addr, agent_jobapi_req *r, const char *what)
{
	char text[512];
	int64_t id;
	int rc;

	rc = agent_jobclient_call(addr, r, CALL_TIMEOUT_MS, &id, text, sizeof(text));
	if (rc != CIVIS_OK) {
		fprintf(stderr, "civis-agent: output: %s\n", text);
		return AGENT_JOBCMD_FAILED;
	}
	printf("%lld\t%s\n", (long long)(id > 0 ? id : r->id), what);
	return AGENT_JOBCMD_OK;
}

int
agent_output_cmd_main(int argc, char **argv)
{
	agent_jobapi_req r = { .op = AGENT_JOBAPI_OUTPUT };
	const char *addr = socket_addr(), *type;
	char *json = NULL;
	size_t json_len = 0;
	long long id = 0;
	int rc;

	if (argc == 4 && strcmp(argv[1], "json") == 0) {
		if (argv[2][0] == '\0') {
			fprintf(stderr, "civis-agent: output: NAME is empty\n");
			return AGENT_JOBCMD_USAGE;
		}
		if (compact_json(argv[3], &json, &json_len) != 0)
			return AGENT_JOBCMD_USAGE;
		r.op = AGENT_JOBAPI_JSON;
		r.name = argv[2];
		r.value = json;
		r.value_len = json_len;
		rc = addr ? output_via_agent(addr, &r, argv[2])
		          : agent_output_standalone("JSONValue", 0, argv[2], json, json_len);
		cJSON_free(json);
		return rc;
	}
	if (argc != 3) {
		agent_jobcmd_usage(stderr);
		return AGENT_JOBCMD_USAGE;
	}
	type = agent_jobapi_object_type(argv[1]);
	if (type == NULL) {
		fprintf(stderr, "civis-agent: output: '%s' is not an output type (File, Table, Report, "
		        "Project, Credential, JSONValue)\n", argv[1]);
		return AGENT_JOBCMD_USAGE;
	}
	if (parse_id(argv[2], &id) != 0) {
		fprintf(stderr, "civis-agent: output: ID must be a positive integer\n");
		return AGENT_JOBCMD_USAGE;
	}
	snprintf(r.type, sizeof(r.type), "%s", type);
	r.id = id;
	if (addr != NULL)
		return output_via_agent(addr, &r, type);
	return agent_output_standalone(type, id, NULL, NULL, 0);
}
