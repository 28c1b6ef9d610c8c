/* jobcmd_api.c: `civis-agent output` without a running agent: the calls go
 * straight to the API through the run module (CIVIS_API_KEY, CIVIS_JOB_ID,
 * CIVIS_RUN_ID, CIVIS_API_ENDPOINT as for the agent). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/run.h"
#include "jobcmd.h"

struct standalone {
	civis_run *run;
	const char *type;
	int64_t id;
	int done;
	int status;
	char error[512];
};

static void
say(void *ud, const char *text)
{
	(void)ud;
	fprintf(stderr, "civis-agent: output: %s\n", text);
}

static void
on_registered(void *ud, int status, const char *error)
{
	struct standalone *s = ud;

	s->status = status;
	if (status != CIVIS_OK)
		snprintf(s->error, sizeof(s->error), "%s", error ? error : civis_strerror(status));
	s->done = 1;
}

static void
on_created(void *ud, int status, int64_t id, const char *error)
{
	struct standalone *s = ud;
	int rc;

	if (status != CIVIS_OK) {
		on_registered(s, status, error);
		return;
	}
	s->id = id;
	rc = civis_run_register_output(s->run, "JSONValue", id, on_registered, s);
	if (rc != CIVIS_OK) {
		snprintf(s->error, sizeof(s->error), "JSON value %lld was created but cannot be "
		         "registered: %s", (long long)id, civis_strerror(rc));
		s->status = rc;
		s->done = 1;
	}
}

int
agent_output_standalone(const char *type, long long id, const char *name,
                        const char *json, size_t json_len)
{
	struct standalone s = { .type = type, .id = id };
	civis_client_config cfg;
	civis_loop *loop = NULL;
	civis_http *http = NULL;
	civis_client *client = NULL;
	civis_run_opts ro;
	char err[512];
	int rc, exit_rc = AGENT_JOBCMD_FAILED;

	memset(&cfg, 0, sizeof(cfg));
	rc = civis_client_config_from_env(&cfg, err, sizeof(err));
	if (rc == CIVIS_ENOTFOUND) {
		fprintf(stderr, "civis-agent: output: neither CIVIS_AGENT_SOCKET nor CIVIS_API_KEY, "
		        "CIVIS_JOB_ID and CIVIS_RUN_ID are set: run this inside a Civis job\n");
		return AGENT_JOBCMD_FAILED;
	}
	if (rc != CIVIS_OK) {
		fprintf(stderr, "civis-agent: output: %s\n", err);
		return AGENT_JOBCMD_FAILED;
	}
	memset(&ro, 0, sizeof(ro));
	ro.flush_ns = 1000000000ULL;
	ro.say = say;
	if (civis_loop_new(&loop) != CIVIS_OK || civis_http_new(&http, loop) != CIVIS_OK ||
	    civis_client_new(&client, loop, http, &cfg) != CIVIS_OK ||
	    civis_run_new(&s.run, loop, client, &ro, err, sizeof(err)) != CIVIS_OK) {
		fprintf(stderr, "civis-agent: output: cannot set up the HTTP client\n");
		goto out;
	}
	if (json != NULL)
		rc = civis_run_create_json_value(s.run, name, json, json_len, on_created, &s);
	else
		rc = civis_run_register_output(s.run, type, id, on_registered, &s);
	if (rc != CIVIS_OK) {
		fprintf(stderr, "civis-agent: output: %s\n", civis_strerror(rc));
		goto out;
	}
	while (!s.done) {
		rc = civis_loop_run_once(loop, 1000000000ULL);
		if (rc != CIVIS_OK) {
			fprintf(stderr, "civis-agent: output: the event loop failed: %s\n",
			        civis_strerror(rc));
			goto out;
		}
	}
	if (s.status != CIVIS_OK) {
		fprintf(stderr, "civis-agent: output: %s\n", s.error);
		goto out;
	}
	printf("%lld\t%s\n", (long long)s.id, json != NULL ? name : type);
	exit_rc = AGENT_JOBCMD_OK;
out:
	civis_run_free(s.run);
	civis_client_free(client);
	civis_http_free(http);
	civis_loop_free(loop);
	civis_client_config_dispose(&cfg);
	return exit_rc;
}
