/* prog.c: a program built only against the installed headers and
 * `pkg-config civis`, as a user of the library builds one. It creates a
 * loop and runs a timer on it, parses a configuration from a lookup
 * function (which loads libcurl at run time for the endpoint check),
 * refuses a bad one with a one-line message, and prints the version. */
#include <stdio.h>
#include <string.h>

#include <civis/civis.h>
#include <civis/client.h>
#include <civis/http.h>
#include <civis/loop.h>

static const char *const vars[][2] = {
	{ "CIVIS_API_KEY", "k3y" },
	{ "CIVIS_JOB_ID", "12" },
	{ "CIVIS_RUN_ID", "34" },
	{ "CIVIS_API_ENDPOINT", "http://127.0.0.1:9/api" },
};

static const char *
lookup(const char *name, void *ud)
{
	size_t i;

	if (ud != NULL && strcmp(name, "CIVIS_RUN_ID") == 0)
		return "not-a-number";
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (strcmp(vars[i][0], name) == 0)
			return vars[i][1];
	return NULL;
}

static void
on_timer(civis_loop *loop, void *ud)
{
	(void)loop;
	*(int *)ud += 1;
}

int
main(void)
{
	civis_loop *loop = NULL;
	civis_client_config cfg;
	civis_retry_policy pol;
	char err[256];
	int fired = 0, rc;

	if (civis_loop_new(&loop) != CIVIS_OK) {
		fprintf(stderr, "prog: civis_loop_new failed\n");
		return 1;
	}
	if (civis_loop_add_timer(loop, civis_now_ns(), on_timer, &fired, NULL) != CIVIS_OK ||
	    civis_loop_run_once(loop, 1000000000u) != CIVIS_OK || fired != 1) {
		fprintf(stderr, "prog: the timer did not run once (%d)\n", fired);
		civis_loop_free(loop);
		return 1;
	}
	civis_loop_free(loop);

	rc = civis_client_config_parse(&cfg, lookup, NULL, err, sizeof(err));
	if (rc != CIVIS_OK) {
		fprintf(stderr, "prog: config: %s: %s\n", civis_strerror(rc), err);
		return 1;
	}
	printf("endpoint %s job %lld run %lld\n", cfg.endpoint, (long long)cfg.job_id,
	       (long long)cfg.run_id);
	civis_client_config_dispose(&cfg);

	rc = civis_client_config_parse(&cfg, lookup, (void *)1, err, sizeof(err));
	if (rc != CIVIS_ECONFIG || strchr(err, '\n') != NULL) {
		fprintf(stderr, "prog: a bad CIVIS_RUN_ID was not refused (%d)\n", rc);
		return 1;
	}
	printf("refused: %s\n", err);

	civis_retry_policy_default(&pol);
	printf("retry %u attempts, backoff cap %llu ms\n", pol.max_attempts,
	       (unsigned long long)pol.cap_ms);
	printf("civis %s\n", civis_version());
	return 0;
}
