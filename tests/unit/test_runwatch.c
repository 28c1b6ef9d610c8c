/* test_runwatch.c: heartbeat/cancel timing math, and that with an
 * unreachable API nothing fires the cancel callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "../../agent/runwatch.h"

#define MS 1000000ULL

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
		v = agent_runwatch_jitter(30000 * MS, x);
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
	}
	assert_true(lo >= 27000 * MS);     /* -10% */
	assert_true(hi < 33000 * MS);      /* +10% */
	assert_true(lo < 27100 * MS && hi > 32900 * MS);   /* the whole range is used */
	assert_true(agent_runwatch_jitter(3, 12345) == 3);  /* too small to jitter */
}

static int cancelled;

static void
on_cancel(void *ud, const char *why)
{
	(void)ud;
	(void)why;
	cancelled++;
}

static void
test_unreachable_api(void **state)
{
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	agent_runwatch *rw;
	agent_runwatch_stats st;
	civis_client_config cfg = {
		.endpoint = (char *)"http://127.0.0.1:1/", .api_key = (char *)"k",
		.job_id = 1, .run_id = 2,
	};
	agent_runwatch_opts o = {
		.heartbeat_ns = 50 * MS, .cancel_poll_ns = 50 * MS, .on_cancel = on_cancel,
	};
	uint64_t end;

	(void)state;
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	assert_int_equal(civis_client_new(&client, loop, http, &cfg), CIVIS_OK);
	assert_int_equal(agent_runwatch_new(&rw, loop, client, &o), CIVIS_OK);
	end = civis_now_ns() + 400 * MS;
	while (civis_now_ns() < end)
		(void)civis_loop_run_once(loop, 10 * MS);
	agent_runwatch_stats_get(rw, &st);
	assert_int_equal((int)st.heartbeats_ok, 0);
	assert_int_equal((int)st.polls_ok, 0);
	assert_int_equal(cancelled, 0);
	agent_runwatch_free(rw);
	civis_client_free(client);
	civis_http_free(http);
	civis_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jitter_bounds),
		cmocka_unit_test(test_unreachable_api),
	};
	return cmocka_run_group_tests_name("runwatch", tests, NULL, NULL);
}
