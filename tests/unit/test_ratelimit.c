/* test_ratelimit.c: the agent's API budget (ratelimit.c) on a fake clock:
 * the budget as a share of the limit, the sliding window, priorities, the
 * limit learnt from X-RateLimit-Limit, and a 429 that holds every call. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../lib/src/ratelimit.h"

#define MS 1000000ull
#define S  (1000 * MS)
#define T0 (1000 * S)   /* a fake monotonic start, not a slot boundary */

static void
test_defaults(void **state)
{
	civis__rl rl;

	(void)state;
	civis__rl_init(&rl, 0, 0, 0, T0);
	assert_int_equal(rl.limit, 1000);
	assert_int_equal(rl.budget_pct, 20);
	assert_int_equal(civis__rl_budget(&rl), 200);
	assert_true(rl.window_ns == 300 * S);
	assert_int_equal(rl.remaining, -1);
	assert_int_equal(civis__rl_used(&rl, T0), 0);
	/* a tiny share still allows one */
	civis__rl_configure(&rl, 3, 0, 1, T0);
	assert_int_equal(civis__rl_budget(&rl), 1);
	civis__rl_configure(&rl, 0, 0, 250, T0);
	assert_int_equal(rl.budget_pct, 100);
	assert_int_equal(civis__rl_budget(&rl), 3);
}

/* 100 per 60 s at 20%: 20 tries, then NORMAL waits until the oldest try
 * leaves the window; FINAL goes anyway and counts. */
static void
test_budget_and_sliding_window(void **state)
{
	civis__rl rl;
	uint64_t t = T0, again;
	int i;

	(void)state;
	civis__rl_init(&rl, 100, 60000, 20, t);
	assert_int_equal(civis__rl_budget(&rl), 20);
	for (i = 0; i < 20; i++) {
		assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t) == 0);
		civis__rl_sent(&rl, t);
		t += 100 * MS;                     /* 2 s for the 20 */
	}
	assert_int_equal(civis__rl_used(&rl, t), 20);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_NORMAL, t), 0);
	again = civis__rl_admit(&rl, RL_PRIO_NORMAL, t);
	/* the first try's 1-second slot leaves the window 60 s after it began */
	assert_true(again > T0 + 59 * S && again <= T0 + 61 * S);
	assert_true(civis__rl_admit(&rl, RL_PRIO_FINAL, t) == 0);
	civis__rl_sent(&rl, t);
	assert_int_equal(civis__rl_used(&rl, t), 21);
	assert_int_equal(rl.max_in_window, 21);
	/* at `again` some slots have left: NORMAL may go again */
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, again) == 0);
	assert_true(civis__rl_used(&rl, again) < 21);
	/* a window later everything has left */
	assert_int_equal(civis__rl_used(&rl, t + 61 * S), 0);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_NORMAL, t + 61 * S), 20);
	/* a long jump of the clock empties every slot at once */
	civis__rl_sent(&rl, t + 3600 * S);
	assert_int_equal(civis__rl_used(&rl, t + 3600 * S), 1);
	assert_int_equal(rl.tries, 22);
}

/* LOW (heartbeats, cancel polls) stops at 90% of the budget, so that under
 * pressure the log and the outputs keep the last tenth. */
static void
test_low_priority_waits_first(void **state)
{
	civis__rl rl;
	uint64_t t = T0;
	int i;

	(void)state;
	civis__rl_init(&rl, 100, 60000, 20, t);
	for (i = 0; i < 18; i++)
		civis__rl_sent(&rl, t);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_LOW, t), 0);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_NORMAL, t), 2);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_FINAL, t), 2);
	assert_true(civis__rl_admit(&rl, RL_PRIO_LOW, t) != 0);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t) == 0);
	/* a budget under 10 keeps one back */
	civis__rl_init(&rl, 20, 60000, 25, t);
	assert_int_equal(civis__rl_budget(&rl), 5);
	for (i = 0; i < 4; i++)
		civis__rl_sent(&rl, t);
	assert_true(civis__rl_admit(&rl, RL_PRIO_LOW, t) != 0);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t) == 0);
}

/* X-RateLimit-Limit replaces the limit (and so the budget); Remaining is
 * kept; malformed values are ignored. */
static void
test_limit_from_headers(void **state)
{
	civis__rl rl;

	(void)state;
	civis__rl_init(&rl, 0, 0, 0, T0);
	civis__rl_answer(&rl, T0, 200, "100", "73", 0);
	assert_int_equal(rl.limit, 100);
	assert_int_equal(rl.limit_from_api, 1);
	assert_int_equal(rl.remaining, 73);
	assert_int_equal(civis__rl_budget(&rl), 20);
	civis__rl_answer(&rl, T0, 200, "12x", "-1", 0);
	assert_int_equal(rl.limit, 100);
	assert_int_equal(rl.remaining, 73);
	civis__rl_answer(&rl, T0, 200, "0", "", 0);
	assert_int_equal(rl.limit, 100);
	civis__rl_answer(&rl, T0, 200, "99999999999", NULL, 0);
	assert_int_equal(rl.limit, 100);
	civis__rl_answer(&rl, T0, 204, NULL, "0", 0);
	assert_int_equal(rl.remaining, 0);
	assert_int_equal(rl.http_429, 0);
}

/* A 429 holds every priority until its Retry-After; overlapping 429s
 * extend the pause, and the time paused is counted once. */
static void
test_429_pauses_everything(void **state)
{
	civis__rl rl;
	uint64_t t = T0;

	(void)state;
	civis__rl_init(&rl, 0, 0, 0, t);
	civis__rl_answer(&rl, t, 429, "1000", "0", 3000);
	assert_int_equal(rl.http_429, 1);
	assert_true(civis__rl_admit(&rl, RL_PRIO_FINAL, t) == t + 3 * S);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t + 1 * S) == t + 3 * S);
	assert_true(civis__rl_admit(&rl, RL_PRIO_LOW, t + 2 * S) == t + 3 * S);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_FINAL, t + 2 * S), 0);
	/* another 429 a second later, for 5 s: until t + 6 s, 6 s in all */
	civis__rl_answer(&rl, t + 1 * S, 429, NULL, NULL, 5000);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t + 4 * S) == t + 6 * S);
	assert_true(rl.paused_ns == 6 * S);
	/* a shorter one inside it changes nothing */
	civis__rl_answer(&rl, t + 2 * S, 429, NULL, NULL, 1000);
	assert_true(rl.paused_ns == 6 * S);
	assert_int_equal(rl.http_429, 3);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, t + 6 * S) == 0);
	/* no Retry-After: 1 s; a huge one: clamped at 120 s */
	civis__rl_answer(&rl, t + 10 * S, 429, NULL, NULL, 0);
	assert_true(civis__rl_admit(&rl, RL_PRIO_FINAL, t + 10 * S) == t + 11 * S);
	civis__rl_answer(&rl, t + 20 * S, 429, NULL, NULL, 31ull * 365 * 86400 * 1000);
	assert_true(civis__rl_admit(&rl, RL_PRIO_FINAL, t + 20 * S) == t + 140 * S);
}

/* A try that never reached the API (refused connection) gives its slot
 * back; one whose slot already left the window changes nothing. */
static void
test_unsent_tries_do_not_count(void **state)
{
	civis__rl rl;
	uint64_t a, b;

	(void)state;
	civis__rl_init(&rl, 10, 60000, 20, T0);
	a = civis__rl_sent(&rl, T0);
	b = civis__rl_sent(&rl, T0 + 2 * S);
	assert_int_equal(civis__rl_left(&rl, RL_PRIO_NORMAL, T0 + 2 * S), 0);
	civis__rl_unsent(&rl, b, T0 + 3 * S);
	assert_int_equal(civis__rl_used(&rl, T0 + 3 * S), 1);
	assert_int_equal(rl.tries, 1);
	assert_true(civis__rl_admit(&rl, RL_PRIO_NORMAL, T0 + 3 * S) == 0);
	civis__rl_unsent(&rl, a, T0 + 100 * S);
	assert_int_equal(civis__rl_used(&rl, T0 + 100 * S), 0);
	assert_int_equal(rl.tries, 0);
}

/* budget_pct 100: no budget, only the 429 pause. */
static void
test_budget_off(void **state)
{
	civis__rl rl;
	int i;

	(void)state;
	civis__rl_init(&rl, 10, 60000, 100, T0);
	for (i = 0; i < 50; i++) {
		assert_true(civis__rl_admit(&rl, RL_PRIO_LOW, T0) == 0);
		civis__rl_sent(&rl, T0);
	}
	assert_int_equal(rl.max_in_window, 50);
	civis__rl_answer(&rl, T0, 429, NULL, NULL, 2000);
	assert_true(civis__rl_admit(&rl, RL_PRIO_LOW, T0) == T0 + 2 * S);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_budget_and_sliding_window),
		cmocka_unit_test(test_low_priority_waits_first),
		cmocka_unit_test(test_limit_from_headers),
		cmocka_unit_test(test_429_pauses_everything),
		cmocka_unit_test(test_budget_off),
		cmocka_unit_test(test_unsent_tries_do_not_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
