/* test_loop.c: timers (order, cancel, re-entrancy), io callbacks on pipes,
 * wakeup from another thread. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "../../lib/src/loop_internal.h"

#define MS 1000000ull

struct trace {
	int order[32];
	int n;
	civis_loop *loop;
	civis_timer_id victim;
	int victim_ran;
};

static struct trace T;

static void
record(civis_loop *loop, void *ud)
{
	(void)loop;
	if (T.n < 32)
		T.order[T.n++] = (int)(intptr_t)ud;
}

static void
run_for(civis_loop *loop, uint64_t ns)
{
	uint64_t end = civis_now_ns() + ns;

	while (civis_now_ns() < end)
		assert_int_equal(civis_loop_run_once(loop, end - civis_now_ns()), CIVIS_OK);
}

static int
setup(void **state)
{
	civis_loop *loop = NULL;

	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	memset(&T, 0, sizeof(T));
	T.loop = loop;
	*state = loop;
	return 0;
}

static int
teardown(void **state)
{
	civis_loop_free(*state);
	return 0;
}

static void
test_now_monotonic(void **state)
{
	uint64_t a = civis_now_ns(), b;

	(void)state;
	b = civis_now_ns();
	assert_true(a > 0);
	assert_true(b >= a);
}

static void
test_timer_order(void **state)
{
	civis_loop *loop = *state;
	uint64_t now = civis_now_ns();
	civis_timer_id a, b, c, d;

	assert_int_equal(civis_loop_add_timer(loop, now + 30 * MS, record, (void *)1, &a), CIVIS_OK);
	assert_int_equal(civis_loop_add_timer(loop, now + 10 * MS, record, (void *)2, &b), CIVIS_OK);
	assert_int_equal(civis_loop_add_timer(loop, now + 20 * MS, record, (void *)3, &c), CIVIS_OK);
	assert_int_equal(civis_loop_add_timer(loop, now + 10 * MS, record, (void *)4, &d), CIVIS_OK);
	/* ids: never 0, never reused, increasing */
	assert_true(a != 0 && b > a && c > b && d > c);
	run_for(loop, 60 * MS);
	assert_int_equal(T.n, 4);
	assert_int_equal(T.order[0], 2);   /* same due: creation order */
	assert_int_equal(T.order[1], 4);
	assert_int_equal(T.order[2], 3);
	assert_int_equal(T.order[3], 1);
	assert_int_equal(civis__loop_ntimers(loop), 0);
}

static void
test_timer_not_early(void **state)
{
	civis_loop *loop = *state;
	uint64_t start = civis_now_ns();

	assert_int_equal(civis_loop_add_timer(loop, start + 50 * MS, record, (void *)7, NULL), CIVIS_OK);
	/* one run_once with a long max wait returns when the timer is due */
	while (T.n == 0)
		assert_int_equal(civis_loop_run_once(loop, 10000 * MS), CIVIS_OK);
	assert_true(civis_now_ns() - start >= 50 * MS);
	assert_true(civis_now_ns() - start < 1000 * MS);
}

static void
test_timer_cancel(void **state)
{
	civis_loop *loop = *state;
	uint64_t now = civis_now_ns();
	civis_timer_id ids[40];
	int i;

	for (i = 0; i < 40; i++)
		assert_int_equal(civis_loop_add_timer(loop, now + (uint64_t)(40 - i) * MS, record,
		                                      (void *)(intptr_t)i, &ids[i]), CIVIS_OK);
	/* cancel every odd one, some twice, and an id that never existed */
	for (i = 1; i < 40; i += 2)
		civis_loop_cancel_timer(loop, ids[i]);
	civis_loop_cancel_timer(loop, ids[1]);
	civis_loop_cancel_timer(loop, 0);
	civis_loop_cancel_timer(loop, ids[39] + 1000);
	assert_int_equal(civis__loop_ntimers(loop), 20);
	run_for(loop, 60 * MS);
	/* only the first 32 fit in the trace; all in due order, all even */
	assert_int_equal(T.n, 20);
	for (i = 0; i < 20; i++)
		assert_int_equal(T.order[i], 38 - 2 * i);
	civis_loop_cancel_timer(loop, ids[0]);   /* already ran: harmless */
	assert_int_equal(civis__loop_ntimers(loop), 0);
}

static void
victim(civis_loop *loop, void *ud)
{
	(void)loop;
	(void)ud;
	T.victim_ran++;
}

static void
rearm(civis_loop *loop, void *ud)
{
	civis_timer_id id;

	record(loop, ud);
	/* cancel another due timer, and add one due now: it waits for the
	 * next iteration rather than running in this one */
	civis_loop_cancel_timer(loop, T.victim);
	if ((intptr_t)ud < 5)
		assert_int_equal(civis_loop_add_timer(loop, civis_now_ns(), rearm,
		                                      (void *)((intptr_t)ud + 1), &id), CIVIS_OK);
}

static void
test_timer_reentrant(void **state)
{
	civis_loop *loop = *state;
	uint64_t now = civis_now_ns();

	assert_int_equal(civis_loop_add_timer(loop, now, rearm, (void *)1, NULL), CIVIS_OK);
	assert_int_equal(civis_loop_add_timer(loop, now + 1, victim, NULL, &T.victim), CIVIS_OK);
	/* everything is due: one iteration runs only the first */
	while (civis_now_ns() < now + 2)
		;
	assert_int_equal(civis_loop_run_once(loop, 0), CIVIS_OK);
	assert_int_equal(T.n, 1);
	assert_int_equal(T.victim_ran, 0);
	run_for(loop, 20 * MS);
	assert_int_equal(T.n, 5);
	assert_int_equal(T.order[4], 5);
	assert_int_equal(T.victim_ran, 0);
}

static void
test_timer_many(void **state)
{
	civis_loop *loop = *state;
	uint64_t now = civis_now_ns();
	uint64_t x = 88172645463325252ull;
	int i;

	/* the heap grows past its first size and stays ordered */
	for (i = 0; i < 1000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		assert_int_equal(civis_loop_add_timer(loop, now + x % (5 * MS), victim, NULL, NULL),
		                 CIVIS_OK);
	}
	assert_int_equal(civis__loop_ntimers(loop), 1000);
	run_for(loop, 20 * MS);
	assert_int_equal(T.victim_ran, 1000);
	assert_int_equal(civis_loop_add_timer(loop, now, NULL, NULL, NULL), CIVIS_EINVAL);
}

struct io_state {
	int calls;
	int revents;
	int other_fd;
	char buf[16];
	int hup;
};

static struct io_state IO[2];

static void
on_read(civis_loop *loop, int fd, int revents, void *ud)
{
	struct io_state *s = ud;
	ssize_t r;

	s->calls++;
	s->revents |= revents;
	r = read(fd, s->buf, sizeof(s->buf));
	if (r == 0) {
		s->hup = 1;
		assert_int_equal(civis_loop_del_io(loop, fd), CIVIS_OK);
	}
	if (s->other_fd >= 0)
		assert_int_equal(civis_loop_del_io(loop, s->other_fd), CIVIS_OK);
}

static void
test_io_pipe(void **state)
{
	civis_loop *loop = *state;
	int p[2];

	memset(IO, 0, sizeof(IO));
	IO[0].other_fd = -1;
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(civis_loop_add_io(loop, p[0], POLLIN, on_read, &IO[0]), CIVIS_OK);
	assert_int_equal(civis_loop_add_io(loop, p[0], POLLIN, on_read, &IO[0]), CIVIS_EINVAL);
	assert_int_equal(civis_loop_run_once(loop, 10 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls, 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(civis_loop_run_once(loop, 1000 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls, 1);
	assert_true(IO[0].revents & POLLIN);
	assert_int_equal(IO[0].buf[0], 'x');

	/* paused: data waits, the callback does not run */
	assert_int_equal(civis_loop_set_io(loop, p[0], 0), CIVIS_OK);
	assert_int_equal(write(p[1], "y", 1), 1);
	assert_int_equal(civis_loop_run_once(loop, 20 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls, 1);
	assert_int_equal(civis_loop_set_io(loop, p[0], POLLIN), CIVIS_OK);
	assert_int_equal(civis_loop_run_once(loop, 1000 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls, 2);
	assert_int_equal(IO[0].buf[0], 'y');

	/* writer gone, nothing buffered: POLLHUP alone must still arrive
	 * (libcurl's revents drop it; the loop's own poll keeps it) */
	close(p[1]);
	IO[0].revents = 0;
	assert_int_equal(civis_loop_run_once(loop, 1000 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls, 3);
	assert_true(IO[0].revents & POLLHUP);
	assert_int_equal(IO[0].hup, 1);
	assert_int_equal(civis_loop_del_io(loop, p[0]), CIVIS_ENOTFOUND);
	assert_int_equal(civis_loop_set_io(loop, p[0], POLLIN), CIVIS_ENOTFOUND);
	close(p[0]);
}

static void
test_io_reentrant_delete(void **state)
{
	civis_loop *loop = *state;
	int a[2], b[2];

	memset(IO, 0, sizeof(IO));
	assert_int_equal(pipe2(a, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(pipe2(b, O_CLOEXEC | O_NONBLOCK), 0);
	/* whichever runs first deletes the other: exactly one runs */
	IO[0].other_fd = b[0];
	IO[1].other_fd = a[0];
	assert_int_equal(civis_loop_add_io(loop, a[0], POLLIN, on_read, &IO[0]), CIVIS_OK);
	assert_int_equal(civis_loop_add_io(loop, b[0], POLLIN, on_read, &IO[1]), CIVIS_OK);
	assert_int_equal(write(a[1], "a", 1), 1);
	assert_int_equal(write(b[1], "b", 1), 1);
	assert_int_equal(civis_loop_run_once(loop, 1000 * MS), CIVIS_OK);
	assert_int_equal(IO[0].calls + IO[1].calls, 1);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

static void
test_io_limit(void **state)
{
	civis_loop *loop = *state;
	int p[CIVIS_LOOP_MAX_IO + 1][2];
	int i;

	for (i = 0; i <= CIVIS_LOOP_MAX_IO; i++)
		assert_int_equal(pipe2(p[i], O_CLOEXEC), 0);
	for (i = 0; i < CIVIS_LOOP_MAX_IO; i++)
		assert_int_equal(civis_loop_add_io(loop, p[i][0], POLLIN, on_read, &IO[0]), CIVIS_OK);
	assert_int_equal(civis_loop_add_io(loop, p[i][0], POLLIN, on_read, &IO[0]), CIVIS_ETOOBIG);
	assert_int_equal(civis_loop_add_io(loop, -1, POLLIN, on_read, &IO[0]), CIVIS_EINVAL);
	assert_int_equal(civis_loop_del_io(loop, p[3][0]), CIVIS_OK);
	assert_int_equal(civis_loop_add_io(loop, p[i][0], POLLIN, on_read, &IO[0]), CIVIS_OK);
	for (i = 0; i <= CIVIS_LOOP_MAX_IO; i++) {
		(void)civis_loop_del_io(loop, p[i][0]);
		close(p[i][0]);
		close(p[i][1]);
	}
}

static void *
wake_later(void *arg)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	civis_loop_wakeup(arg);
	return NULL;
}

static void
test_wakeup(void **state)
{
	civis_loop *loop = *state;
	pthread_t th;
	uint64_t start;

	/* Waking needs libcurl's wakeup pipe, made with the multi handle. */
	assert_non_null(civis__loop_curl_multi(loop));
	start = civis_now_ns();
	assert_int_equal(pthread_create(&th, NULL, wake_later, loop), 0);
	assert_int_equal(civis_loop_run_once(loop, 5000 * MS), CIVIS_OK);
	assert_true(civis_now_ns() - start < 2000 * MS);
	pthread_join(th, NULL);
}

static void
test_idle_iteration_cost(void **state)
{
	civis_loop *loop = *state;
	int p[2], i;
	char big[4096];
	uint64_t start;

	/* a busy fd: each iteration should cost microseconds, not more */
	memset(IO, 0, sizeof(IO));
	IO[0].other_fd = -1;
	memset(big, 'z', sizeof(big));
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(civis_loop_add_io(loop, p[0], POLLIN, on_read, &IO[0]), CIVIS_OK);
	start = civis_now_ns();
	for (i = 0; i < 20000; i++) {
		assert_int_equal(write(p[1], big, 16), 16);
		assert_int_equal(civis_loop_run_once(loop, 1000 * MS), CIVIS_OK);
	}
	assert_int_equal(IO[0].calls, 20000);
	print_message("loop: %.2f us per iteration with one busy fd\n",
	              (double)(civis_now_ns() - start) / 20000.0 / 1000.0);
	assert_int_equal(civis_loop_del_io(loop, p[0]), CIVIS_OK);
	close(p[0]);
	close(p[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_now_monotonic),
		cmocka_unit_test_setup_teardown(test_timer_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_not_early, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_reentrant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_reentrant_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wakeup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_iteration_cost, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
