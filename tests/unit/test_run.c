/* test_run.c: the run module against a stub Civis API on 127.0.0.1 in a
 * thread: every test says what the stub answers per path and checks the
 * requests it saw (method, path, body) and what the module counted and said. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/logbatch.h"
#include "civis/run.h"

#define MS 1000000ULL
#define RUN_PATH "/scripts/containers/1/runs/2"

#include "stub_api.h"

/* ------------------------------------------------------------ fixture */

struct fx {
	struct stub stub;
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_run *run;
	char said[16][512];
	int nsaid;
	int cancels;
	int done_calls, done_status;
	int64_t done_id;
	char done_err[512];
};

static void
on_say(void *ud, const char *text)
{
	struct fx *f = ud;

	if (f->nsaid < 16)
		snprintf(f->said[f->nsaid++], sizeof(f->said[0]), "%s", text);
}

static int
said_count(struct fx *f, const char *needle)
{
	int n = 0;

	for (int i = 0; i < f->nsaid; i++)
		n += strstr(f->said[i], needle) != NULL;
	return n;
}

static void
run_opts(struct fx *f, civis_run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->flush_ns = 100 * MS;
	o->mem_max = 4u << 20;
	o->spool_max = 16u << 20;
	o->say = on_say;
	o->say_ud = f;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char url[64], err[256];
	civis_client_config cfg = { .api_key = (char *)"unit-key", .job_id = 1, .run_id = 2 };
	civis_run_opts o;

	assert_int_equal(stub_start(&f->stub), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", f->stub.port);
	cfg.endpoint = url;
	assert_int_equal(civis_loop_new(&f->loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&f->http, f->loop), CIVIS_OK);
	assert_int_equal(civis_client_new(&f->client, f->loop, f->http, &cfg), CIVIS_OK);
	run_opts(f, &o);
	assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &o, err, sizeof(err)), CIVIS_OK);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	civis_run_free(f->run);
	civis_client_free(f->client);
	civis_http_free(f->http);
	civis_loop_free(f->loop);
	stub_stop(&f->stub);
	free(f);
	return 0;
}

/* Turn the loop until cond(f) or the time is up (a loaded machine: generous). */
static void
spin_until(struct fx *f, int (*cond)(struct fx *), uint64_t max_ns)
{
	uint64_t end = civis_now_ns() + max_ns;

	while (civis_now_ns() < end && !(cond && cond(f)))
		(void)civis_loop_run_once(f->loop, 10 * MS);
}

static int
log_idle(struct fx *f)
{
	return civis_run_log_idle(f->run);
}

static int
got_done(struct fx *f)
{
	return f->done_calls > 0;
}

/* ------------------------------------------------------------ the run log */

/* Lines become batches (split at the message cap), all acknowledged. */
static void
test_log_delivered(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;
	char line[32];

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	civis_run_free(f->run);
	{
		civis_run_opts o;
		char err[256];

		run_opts(f, &o);
		o.batch_lines = 100;
		assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &o, err, sizeof(err)),
		                 CIVIS_OK);
	}
	for (int i = 0; i < 250; i++) {
		int n = snprintf(line, sizeof(line), "line %d", i);

		assert_int_equal(civis_run_log(f->run, i % 2 ? "error" : "info", line, (size_t)n,
		                               civis_clock_realtime_ns()), CIVIS_OK);
	}
	assert_false(civis_run_log_idle(f->run));
	civis_run_log_flush(f->run);
	spin_until(f, log_idle, 10000 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, 250);
	assert_int_equal((int)st.undelivered, 0);
	assert_int_equal((int)st.dropped, 0);
	assert_int_equal((int)st.requests, 3);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"messages\":["), 3);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"message\":\"line 249\""), 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"level\":\"error\""), 3);
	assert_int_equal(f->nsaid, 0);
}

/* An open batch goes out by itself after half the flush interval. */
static void
test_log_sealed_by_tick(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 200, "{}");
	assert_int_equal(civis_run_log(f->run, NULL, "alone", 5, civis_clock_realtime_ns()),
	                 CIVIS_OK);
	spin_until(f, log_idle, 10000 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"level\":\"info\""), 1);
}

/* A batch the API refuses for good (400) is dropped, said, not retried. */
static void
test_log_refused(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 400, "{\"errorDescription\":\"no\"}");
	for (int i = 0; i < 3; i++)
		assert_int_equal(civis_run_log(f->run, "info", "x", 1, civis_clock_realtime_ns()),
		                 CIVIS_OK);
	civis_run_log_flush(f->run);
	spin_until(f, log_idle, 10000 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, 0);
	assert_int_equal((int)st.dropped, 3);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", NULL), 1);
	assert_int_equal(said_count(f, "the run log refused 3 lines"), 1);
}

static int
log_not_full(struct fx *f)
{
	return !civis_run_log_full(f->run);
}

/* No writable spool directory: the run log is kept in memory only. The
 * queue refuses batches over its cap; the run keeps them, says so once (no
 * note per batch), is full until acks free memory, and delivers all. */
static void
test_log_memory_only(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;
	civis_run_opts o;
	char err[256], line[96];
	int i, was_full = 0;

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	civis_run_free(f->run);
	run_opts(f, &o);
	o.batch_lines = 50;
	o.mem_max = 64u << 10;
	o.spool_dir = "/nonexistent-civis-dir/spool";
	assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &o, err, sizeof(err)), CIVIS_OK);
	assert_false(civis_run_log_full(f->run));
	/* nobody sending: more than the memory holds is kept anyway */
	for (i = 0; i < 1000; i++) {
		int n = snprintf(line, sizeof(line), "line %d %060d", i, i);

		assert_int_equal(civis_run_log(f->run, "info", line, (size_t)n,
		                               civis_clock_realtime_ns()), CIVIS_OK);
	}
	assert_true(civis_run_log_full(f->run));
	spin_until(f, log_not_full, 10000 * MS);
	assert_false(civis_run_log_full(f->run));
	/* a writer that waits while it is full, as the log stream does */
	for (; i < 3000; i++) {
		int n = snprintf(line, sizeof(line), "line %d %060d", i, i);

		if (civis_run_log_full(f->run)) {
			was_full = 1;
			spin_until(f, log_not_full, 10000 * MS);
		}
		assert_int_equal(civis_run_log(f->run, "info", line, (size_t)n,
		                               civis_clock_realtime_ns()), CIVIS_OK);
	}
	assert_true(was_full);
	civis_run_log_final(f->run);
	spin_until(f, log_idle, 20000 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.dropped, 0);
	assert_int_equal((int)st.undelivered, 0);
	assert_int_equal((int)st.delivered, 3000 + 1);     /* and the note */
	assert_true(st.mem_peak <= o.mem_max);
	assert_int_equal(said_count(f, "memory only"), 1);
	assert_int_equal(said_count(f, "/nonexistent-civis-dir/spool"), 1);
	assert_int_equal(said_count(f, "--log-memory-max 64 KiB"), 1);
	assert_int_equal(said_count(f, "could not queue"), 0);
	assert_int_equal(said_count(f, "dropped"), 0);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"message\":\"line 0 "), 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "\"message\":\"line 2999 "), 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", "kept in memory only"), 1);
}

/* A 401 stops sending, said once; the lines stay counted as undelivered. */
static void
test_log_auth_rejected(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 401, "{}");
	assert_int_equal(civis_run_log(f->run, "info", "a", 1, civis_clock_realtime_ns()), CIVIS_OK);
	civis_run_log_flush(f->run);
	spin_until(f, log_idle, 10000 * MS);
	assert_true(civis_run_auth_dead(f->run));
	assert_int_equal(civis_run_log(f->run, "info", "b", 1, civis_clock_realtime_ns()), CIVIS_OK);
	civis_run_log_flush(f->run);
	spin_until(f, NULL, 200 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, 0);
	assert_int_equal((int)st.undelivered, 2);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", NULL), 1);
	assert_int_equal(said_count(f, "API key rejected (HTTP 401)"), 1);
	assert_int_equal(f->nsaid, 1);
}

/* ------------------------------------------------------------ heartbeats, cancel */

static void
on_cancel(void *ud, const char *why)
{
	struct fx *f = ud;

	f->cancels++;
	assert_string_equal(why, "cancel requested");
}

static int
cancelled(struct fx *f)
{
	return f->cancels > 0;
}

/* Heartbeats go out at once and on their interval; a cancel request is
 * seen once and stops the poll. */
static void
test_watch_heartbeats_and_cancel(void **state)
{
	struct fx *f = *state;
	civis_run_watch_opts w = { .heartbeat_ns = 50 * MS, .cancel_poll_ns = 50 * MS,
	                           .on_cancel = on_cancel };
	civis_run_watch_stats st;
	int polls;

	w.ud = f;
	stub_route(&f->stub, "POST", RUN_PATH "/heartbeats", 204, "");
	stub_route(&f->stub, "GET", RUN_PATH, 200,
	           "{\"id\":2,\"state\":\"running\",\"isCancelRequested\":true}");
	assert_int_equal(civis_run_watch(f->run, &w), CIVIS_OK);
	assert_int_equal(civis_run_watch(f->run, &w), CIVIS_EINVAL);   /* once */
	spin_until(f, cancelled, 10000 * MS);
	assert_int_equal(f->cancels, 1);
	polls = stub_count(&f->stub, "GET", RUN_PATH, NULL);
	spin_until(f, NULL, 300 * MS);
	assert_int_equal(f->cancels, 1);
	assert_int_equal(stub_count(&f->stub, "GET", RUN_PATH, NULL), polls);
	civis_run_watch_stats_get(f->run, &st);
	assert_true(st.heartbeats_ok >= 2);
	assert_int_equal((int)st.heartbeats_failed, 0);
	assert_int_equal((int)st.polls_ok, 1);
	assert_int_equal(st.heartbeats_off, 0);
}

/* No heartbeat endpoint (404): heartbeats stop after the first, said once
 * on say() and once in the run log. */
static void
test_watch_no_heartbeat_endpoint(void **state)
{
	struct fx *f = *state;
	civis_run_watch_opts w = { .heartbeat_ns = 30 * MS };
	civis_run_watch_stats st;

	stub_route(&f->stub, "POST", RUN_PATH "/heartbeats", 404, "{\"error\":\"not found\"}");
	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	assert_int_equal(civis_run_watch(f->run, &w), CIVIS_OK);
	spin_until(f, NULL, 400 * MS);
	civis_run_log_flush(f->run);
	spin_until(f, log_idle, 10000 * MS);
	civis_run_watch_stats_get(f->run, &st);
	assert_int_equal(st.heartbeats_off, 1);
	assert_int_equal((int)st.heartbeats_failed, 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/heartbeats", NULL), 1);
	assert_int_equal(f->nsaid, 1);
	assert_int_equal(said_count(f, "the API has no endpoint for heartbeats here (HTTP 404)"), 1);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs",
	                            "civis-agent: the API has no endpoint for heartbeats"), 1);
}

/* Moved from test_runwatch.c: the jitter is +-10% and uses the whole range. */
static void
test_jitter_bounds(void **state)
{
	uint64_t lo = UINT64_MAX, hi = 0, x = 88172645463325252ULL;

	(void)state;
	for (int i = 0; i < 100000; i++) {
		uint64_t v;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v = civis_run_jitter(30000 * MS, x);
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
	}
	assert_true(lo >= 27000 * MS);     /* -10% */
	assert_true(hi < 33000 * MS);      /* +10% */
	assert_true(lo < 27100 * MS && hi > 32900 * MS);   /* the whole range is used */
	assert_true(civis_run_jitter(3, 12345) == 3);  /* too small to jitter */
}

/* Moved from test_runwatch.c: with nothing listening, nothing is counted
 * as sent and no cancel is seen. */
static void
test_watch_unreachable(void **state)
{
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_run *run;
	civis_run_opts o = { .flush_ns = 100 * MS };
	civis_run_watch_stats st;
	civis_client_config cfg = {
		.endpoint = (char *)"http://127.0.0.1:1/", .api_key = (char *)"k",
		.job_id = 1, .run_id = 2,
	};
	civis_run_watch_opts w = { .heartbeat_ns = 50 * MS, .cancel_poll_ns = 50 * MS,
	                           .on_cancel = on_cancel };
	char err[256];
	uint64_t end;

	(void)state;
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	assert_int_equal(civis_client_new(&client, loop, http, &cfg), CIVIS_OK);
	assert_int_equal(civis_run_new(&run, loop, client, &o, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis_run_watch(run, &w), CIVIS_OK);
	end = civis_now_ns() + 400 * MS;
	while (civis_now_ns() < end)
		(void)civis_loop_run_once(loop, 10 * MS);
	civis_run_watch_stats_get(run, &st);
	assert_int_equal((int)st.heartbeats_ok, 0);
	assert_int_equal((int)st.polls_ok, 0);
	assert_int_equal(st.heartbeats_off, 0);
	civis_run_free(run);
	civis_client_free(client);
	civis_http_free(http);
	civis_loop_free(loop);
}

/* ------------------------------------------------------------ outputs, values, state */

static void
on_done(void *ud, int status, const char *error)
{
	struct fx *f = ud;

	f->done_calls++;
	f->done_status = status;
	snprintf(f->done_err, sizeof(f->done_err), "%s", error);
}

static void
on_done_id(void *ud, int status, int64_t id, const char *error)
{
	struct fx *f = ud;

	f->done_id = id;
	on_done(ud, status, error);
}

/* Any of the API's types, by id; a failure names the object. */
static void
test_register_output(void **state)
{
	struct fx *f = *state;

	stub_route(&f->stub, "POST", RUN_PATH "/outputs", 201, "{}");
	assert_int_equal(civis_run_register_output(f->run, "Table", 7, on_done, f), CIVIS_OK);
	assert_int_equal(civis_run_pending(f->run), 1);
	spin_until(f, got_done, 10000 * MS);
	assert_int_equal(f->done_status, CIVIS_OK);
	assert_int_equal(civis_run_pending(f->run), 0);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/outputs",
	                            "{\"objectType\":\"Table\",\"objectId\":7}"), 1);
	assert_int_equal(civis_run_register_output(f->run, "Spreadsheet", 7, on_done, f),
	                 CIVIS_EINVAL);
	assert_int_equal(civis_run_register_output(f->run, "File", 0, on_done, f), CIVIS_EINVAL);
	assert_int_equal(civis_run_register_output(f->run, "File", 1, NULL, f), CIVIS_EINVAL);
}

static void
test_register_output_fails(void **state)
{
	struct fx *f = *state;

	stub_route(&f->stub, "POST", RUN_PATH "/outputs", 403, "{\"errorDescription\":\"nope\"}");
	assert_int_equal(civis_run_register_output(f->run, "File", 12, on_done, f), CIVIS_OK);
	spin_until(f, got_done, 10000 * MS);
	assert_int_equal(f->done_status, CIVIS_EHTTP);
	assert_non_null(strstr(f->done_err, "registering file 12 as a run output: "));
}

/* The value goes as a JSON string; the answer's id comes back. */
static void
test_json_value(void **state)
{
	struct fx *f = *state;
	static char big[CIVIS_JSON_VALUE_MAX + 2];

	stub_route(&f->stub, "POST", "/json_values/", 200, "{\"id\":55,\"name\":\"outputs\"}");
	assert_int_equal(civis_run_create_json_value(f->run, "outputs", "{\"a\":[1,\"x\"]}", 13,
	                                             on_done_id, f), CIVIS_OK);
	spin_until(f, got_done, 10000 * MS);
	assert_int_equal(f->done_status, CIVIS_OK);
	assert_int_equal((int)f->done_id, 55);
	assert_int_equal(stub_count(&f->stub, "POST", "/json_values/",
	                 "{\"name\":\"outputs\",\"valueStr\":\"{\\\"a\\\":[1,\\\"x\\\"]}\"}"), 1);
	memset(big, ' ', sizeof(big));
	big[0] = '1';
	assert_int_equal(civis_run_create_json_value(f->run, "n", big, sizeof(big), on_done_id, f),
	                 CIVIS_ETOOBIG);
	assert_int_equal(civis_run_create_json_value(f->run, "n", "{x", 2, on_done_id, f),
	                 CIVIS_EINVAL);
	assert_int_equal(civis_run_create_json_value(f->run, "", "1", 1, on_done_id, f),
	                 CIVIS_EINVAL);
}

static void
test_json_value_no_id(void **state)
{
	struct fx *f = *state;

	stub_route(&f->stub, "POST", "/json_values/", 200, "{\"name\":\"outputs\"}");
	assert_int_equal(civis_run_create_json_value(f->run, "outputs", "1", 1, on_done_id, f),
	                 CIVIS_OK);
	spin_until(f, got_done, 10000 * MS);
	assert_int_equal(f->done_status, CIVIS_EPROTO);
	assert_non_null(strstr(f->done_err, "creating JSON value \"outputs\": the answer has no id"));
}

static int
none_pending(struct fx *f)
{
	return civis_run_pending(f->run) == 0;
}

/* The three marks, as PATCH bodies. */
static void
test_report_state(void **state)
{
	struct fx *f = *state;

	stub_route(&f->stub, "PATCH", RUN_PATH, 200, "{}");
	assert_int_equal(civis_run_report(f->run, CIVIS_RUN_ACCEPTED, 1764600000123456789ULL),
	                 CIVIS_OK);
	assert_int_equal(civis_run_report(f->run, CIVIS_RUN_STARTED, 1764600001000000000ULL),
	                 CIVIS_OK);
	assert_int_equal(civis_run_report(f->run, CIVIS_RUN_FAILED, 0), CIVIS_OK);
	spin_until(f, none_pending, 10000 * MS);
	assert_int_equal(stub_count(&f->stub, "PATCH", RUN_PATH,
	                 "{\"bocceAcceptedAt\":\"2025-12-01T14:40:00.123456789Z\"}"), 1);
	assert_int_equal(stub_count(&f->stub, "PATCH", RUN_PATH,
	                 "{\"bocceStartedAt\":\"2025-12-01T14:40:01.000000000Z\"}"), 1);
	assert_int_equal(stub_count(&f->stub, "PATCH", RUN_PATH, "{\"state\":\"failed\"}"), 1);
	assert_int_equal(f->nsaid, 0);
}

/* An API without PATCH (405): said once, nothing more is sent. */
static void
test_report_state_gone(void **state)
{
	struct fx *f = *state;

	stub_route(&f->stub, "PATCH", RUN_PATH, 405, "{}");
	assert_int_equal(civis_run_report(f->run, CIVIS_RUN_ACCEPTED, civis_clock_realtime_ns()),
	                 CIVIS_OK);
	spin_until(f, none_pending, 10000 * MS);
	assert_int_equal(civis_run_report(f->run, CIVIS_RUN_SUCCEEDED, 0), CIVIS_ENOTFOUND);
	assert_int_equal(stub_count(&f->stub, "PATCH", RUN_PATH, NULL), 1);
	assert_int_equal(said_count(f, "the API has no endpoint for run state reports here "
	                               "(HTTP 405)"), 1);
	assert_int_equal(f->nsaid, 1);
}

/* Calls still in flight at free end with CIVIS_ECANCELED, once. */
static void
test_free_cancels(void **state)
{
	struct fx *f = *state;

	/* nothing answers this path quickly: the stub gives 404 only once read */
	assert_int_equal(civis_run_register_output(f->run, "Report", 3, on_done, f), CIVIS_OK);
	civis_run_free(f->run);
	f->run = NULL;
	assert_int_equal(f->done_calls, 1);
	assert_int_equal(f->done_status, CIVIS_ECANCELED);
}

/* ------------------------------------------------------------ the budget */

/* A run whose http has a budget of pct% of `limit` requests per window_ms
 * (pct 100: none), flush ticks every 10 ms. */
static void
budget_run(struct fx *f, unsigned pct, unsigned limit, uint64_t window_ms)
{
	civis_run_opts o;
	char err[256];

	civis_run_free(f->run);
	run_opts(f, &o);
	o.flush_ns = 20 * MS;
	assert_int_equal(civis_http_set_budget(f->http, pct, limit, window_ms), CIVIS_OK);
	assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &o, err, sizeof(err)), CIVIS_OK);
}

/* Messages trickling in for ~1 s: with the budget tight, batches are held
 * and grow instead of going out every tick; nothing is lost. */
static int
log_trickle(struct fx *f, int n)
{
	civis_run_log_stats st;
	char line[32];

	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	for (int i = 0; i < n; i++) {
		int len = snprintf(line, sizeof(line), "trickle %d", i);

		assert_int_equal(civis_run_log(f->run, "info", line, (size_t)len,
		                               civis_clock_realtime_ns()), CIVIS_OK);
		spin_until(f, NULL, 20 * MS);
	}
	civis_run_log_final(f->run);
	spin_until(f, log_idle, 10000 * MS);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, n);
	assert_int_equal((int)st.undelivered, 0);
	return (int)st.requests;
}

static void
test_budget_holds_batches(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;
	uint64_t t0 = civis_now_ns(), ms;
	int with_budget, span_max;

	budget_run(f, 10, 20, 2000);        /* 2 requests per 2 s */
	with_budget = log_trickle(f, 50);
	ms = (civis_now_ns() - t0) / MS;
	civis_run_log_stats_get(f->run, &st);
	assert_true(st.held > 0);
	/* held a tenth of the window (200 ms) at most while tight, the final
	 * flush on top */
	span_max = (int)(ms / 200) + 2;
	assert_true(with_budget <= span_max);
	assert_int_equal(stub_count(&f->stub, "POST", RUN_PATH "/logs", NULL), with_budget);
}

/* The same trickle without a budget: a request per tick or so (the
 * comparison that shows the budget made the batches larger). */
static void
test_budget_off_sends_per_tick(void **state)
{
	struct fx *f = *state;
	civis_run_log_stats st;
	int without;

	budget_run(f, 100, 20, 2000);       /* no budget */
	without = log_trickle(f, 50);
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.held, 0);
	assert_true(without > 15);
}

/* After civis_run_log_final the run log is not held back, even with no
 * slot left; heartbeats wait for a slot instead of going every interval. */
static void
test_budget_final_and_heartbeats(void **state)
{
	struct fx *f = *state;
	civis_run_watch_opts w = { .heartbeat_ns = 10 * MS };
	civis_run_watch_stats ws;
	civis_run_log_stats st;
	uint64_t t0;
	int hbs, ms;

	budget_run(f, 10, 20, 2000);        /* 2 per 2 s: LOW stops at 1 */
	stub_route(&f->stub, "POST", RUN_PATH "/heartbeats", 204, "");
	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	t0 = civis_now_ns();
	assert_int_equal(civis_run_watch(f->run, &w), CIVIS_OK);   /* the first slot */
	spin_until(f, NULL, 500 * MS);
	ms = (int)((civis_now_ns() - t0) / MS);
	hbs = stub_count(&f->stub, "POST", RUN_PATH "/heartbeats", NULL);
	assert_true(hbs >= 1 && hbs <= ms / 200 + 1);     /* not one per 10 ms */
	civis_run_log_final(f->run);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(civis_run_log(f->run, "info", "last", 4, civis_clock_realtime_ns()),
		                 CIVIS_OK);
		civis_run_log_flush(f->run);
		spin_until(f, log_idle, 10000 * MS);
	}
	civis_run_log_stats_get(f->run, &st);
	assert_int_equal((int)st.delivered, 5);
	assert_int_equal((int)st.requests, 5);           /* none waited for a slot */
	civis_run_watch_stats_get(f->run, &ws);
	assert_int_equal((int)ws.heartbeats_failed, 0);
}

/* A flood of log batches (each message its own batch) under a budget of 10
 * requests per second: the run log takes at most 8 of them, the cancel poll
 * still gets its turn, and a cancel is seen. */
static void
test_budget_flood_leaves_room_for_polls(void **state)
{
	struct fx *f = *state;
	civis_run_opts o;
	civis_run_watch_opts w = { .cancel_poll_ns = 20 * MS, .on_cancel = on_cancel };
	char err[256];
	uint64_t t0;
	int logs, spans;

	w.ud = f;
	civis_run_free(f->run);
	run_opts(f, &o);
	o.batch_lines = 1;
	assert_int_equal(civis_http_set_budget(f->http, 10, 100, 1000), CIVIS_OK);
	assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &o, err, sizeof(err)), CIVIS_OK);
	stub_route(&f->stub, "POST", RUN_PATH "/logs", 204, "");
	stub_route(&f->stub, "GET", RUN_PATH, 200,
	           "{\"id\":2,\"state\":\"running\",\"isCancelRequested\":false}");
	t0 = civis_now_ns();
	for (int i = 0; i < 100; i++)
		assert_int_equal(civis_run_log(f->run, "info", "x", 1, civis_clock_realtime_ns()),
		                 CIVIS_OK);
	assert_int_equal(civis_run_watch(f->run, &w), CIVIS_OK);
	spin_until(f, NULL, 1500 * MS);
	spans = (int)((civis_now_ns() - t0) / (1000 * MS)) + 2;
	logs = stub_count(&f->stub, "POST", RUN_PATH "/logs", NULL);
	assert_true(logs >= 1 && logs <= 8 * spans);
	assert_true(stub_count(&f->stub, "GET", RUN_PATH, NULL) >= 2);
	/* the platform cancels: the next poll sees it */
	pthread_mutex_lock(&f->stub.mu);
	f->stub.routes[1].body = "{\"id\":2,\"state\":\"running\",\"isCancelRequested\":true}";
	pthread_mutex_unlock(&f->stub.mu);
	spin_until(f, cancelled, 10000 * MS);
	assert_int_equal(f->cancels, 1);
	assert_false(civis_run_log_idle(f->run));      /* the flood waits for its slots */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_log_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_sealed_by_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_memory_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_auth_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_heartbeats_and_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_no_heartbeat_endpoint, setup, teardown),
		cmocka_unit_test(test_jitter_bounds),
		cmocka_unit_test(test_watch_unreachable),
		cmocka_unit_test_setup_teardown(test_register_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_output_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_value, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_value_no_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_state_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_cancels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_holds_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_off_sends_per_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_final_and_heartbeats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_flood_leaves_room_for_polls, setup, teardown),
	};
	return cmocka_run_group_tests_name("run", tests, NULL, NULL);
}
