/* loop.c: one-thread event loop over fds, timers and a curl multi handle.
 *
 * One curl_multi_poll waits on libcurl's sockets and ours together. libcurl
 * 7.88 reports only IN/OUT/PRI in the extra fds' revents (a pipe whose
 * writer is gone shows POLLHUP alone, which it drops), so after the wait a
 * zero-timeout poll(2) of our own fds reads their exact revents. Nothing is
 * allocated per iteration; timers live in a binary heap ordered by
 * (due, id), and ids only grow, so they are never reused. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dl.h"
#include "civis/civis.h"
#include "civis/loop.h"
#include "loop_internal.h"

struct io_entry {
	int fd;
	int events;
	uint64_t gen;        /* tells a re-added fd from the one a poll saw */
	civis_io_fn fn;
	void *ud;
};

struct timer {
	uint64_t due_ns;
	civis_timer_id id;
	civis_timer_fn fn;
	void *ud;
};

struct civis_loop {
	CURLM *multi;
	struct io_entry io[CIVIS_LOOP_MAX_IO];
	size_t nio;
	uint64_t io_gen;
	struct timer *heap;
	size_t ntimers;
	size_t cap_timers;
	civis_timer_id next_id;
	civis__loop_curl_done_fn curl_done;
	void *curl_done_ctx;
};

uint64_t
civis_now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int
civis_loop_new(civis_loop **out)
{
	civis_loop *loop;

	*out = NULL;
	loop = calloc(1, sizeof(*loop));
	if (loop == NULL)
		return CIVIS_ENOMEM;
	/* libcurl is set up on first use (civis__loop_curl_multi): a loop
	 * that only moves bytes between fds never pays for its TLS init. */
	loop->next_id = 1;
	*out = loop;
	return CIVIS_OK;
}

/* The http module (its transfers) must be freed before the loop. */
void
civis_loop_free(civis_loop *loop)
{
	if (loop == NULL)
		return;
	if (loop->multi != NULL) {
		curl_multi_cleanup(loop->multi);
		curl_global_cleanup();
	}
	free(loop->heap);
	free(loop);
}

CURLM *
civis__loop_curl_multi(civis_loop *loop)
{
	if (loop->multi == NULL) {
		/* libcurl is dlopen'ed here, not linked: a run without http never
		 * pays for mapping it and its ~45 dependencies */
		if (civis__dl_curl(NULL, 0) != CIVIS_OK)
			return NULL;
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		loop->multi = curl_multi_init();
		if (loop->multi == NULL)
			curl_global_cleanup();
	}
	return loop->multi;
}

int
civis__loop_set_curl_done(civis_loop *loop, civis__loop_curl_done_fn fn, void *ctx)
{
	if (fn != NULL && loop->curl_done != NULL)
		return CIVIS_EINVAL;
	loop->curl_done = fn;
	loop->curl_done_ctx = fn != NULL ? ctx : NULL;
	return CIVIS_OK;
}

/* ------------------------------------------------------------------ io */

static struct io_entry *
io_find(civis_loop *loop, int fd)
{
	size_t i;

	for (i = 0; i < loop->nio; i++)
		if (loop->io[i].fd == fd)
			return &loop->io[i];
	return NULL;
}

int
civis_loop_add_io(civis_loop *loop, int fd, int events, civis_io_fn fn, void *ud)
{
	struct io_entry *e;

	if (fd < 0 || fn == NULL || (events & ~(POLLIN | POLLOUT | POLLPRI)) != 0)
		return CIVIS_EINVAL;
	if (io_find(loop, fd) != NULL)
		return CIVIS_EINVAL;
	if (loop->nio >= CIVIS_LOOP_MAX_IO)
		return CIVIS_ETOOBIG;
	e = &loop->io[loop->nio++];
	e->fd = fd;
	e->events = events;
	e->gen = ++loop->io_gen;
	e->fn = fn;
	e->ud = ud;
	return CIVIS_OK;
}

int
civis_loop_set_io(civis_loop *loop, int fd, int events)
{
	struct io_entry *e;

	if ((events & ~(POLLIN | POLLOUT | POLLPRI)) != 0)
		return CIVIS_EINVAL;
	e = io_find(loop, fd);
	if (e == NULL)
		return CIVIS_ENOTFOUND;
	e->events = events;
	return CIVIS_OK;
}

int
civis_loop_del_io(civis_loop *loop, int fd)
{
	struct io_entry *e;

	e = io_find(loop, fd);
	if (e == NULL)
		return CIVIS_ENOTFOUND;
	*e = loop->io[--loop->nio];
	memset(&loop->io[loop->nio], 0, sizeof(loop->io[0]));
	return CIVIS_OK;
}

/* -------------------------------------------------------------- timers */

static int
timer_before(const struct timer *a, const struct timer *b)
{
	if (a->due_ns != b->due_ns)
		return a->due_ns < b->due_ns;
	return a->id < b->id;
}

static void
heap_up(struct timer *h, size_t i)
{
	struct timer t = h[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!timer_before(&t, &h[parent]))
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = t;
}

static void
heap_down(struct timer *h, size_t n, size_t i)
{
	struct timer t = h[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && timer_before(&h[c + 1], &h[c]))
			c++;
		if (!timer_before(&h[c], &t))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = t;
}

static void
heap_remove_at(civis_loop *loop, size_t i)
{
	loop->ntimers--;
	if (i == loop->ntimers)
		return;
	loop->heap[i] = loop->heap[loop->ntimers];
	if (i > 0 && timer_before(&loop->heap[i], &loop->heap[(i - 1) / 2]))
		heap_up(loop->heap, i);
	else
		heap_down(loop->heap, loop->ntimers, i);
}

int
civis_loop_add_timer(civis_loop *loop, uint64_t due_ns, civis_timer_fn fn,
                     void *ud, civis_timer_id *out)
{
	struct timer *t;

	if (out != NULL)
		*out = 0;
	if (fn == NULL)
		return CIVIS_EINVAL;
	if (loop->ntimers == loop->cap_timers) {
		size_t cap = loop->cap_timers ? loop->cap_timers * 2 : 16;
		struct timer *h;

		if (cap > SIZE_MAX / sizeof(*h))
			return CIVIS_ENOMEM;
		h = realloc(loop->heap, cap * sizeof(*h));
		if (h == NULL)
			return CIVIS_ENOMEM;
		loop->heap = h;
		loop->cap_timers = cap;
	}
	t = &loop->heap[loop->ntimers];
	t->due_ns = due_ns;
	t->id = loop->next_id++;
	t->fn = fn;
	t->ud = ud;
	if (out != NULL)
		*out = t->id;
	loop->ntimers++;
	heap_up(loop->heap, loop->ntimers - 1);
	return CIVIS_OK;
}

/* Linear in the number of timers, which stays small (a few per module and
 * one per request waiting to retry). */
void
civis_loop_cancel_timer(civis_loop *loop, civis_timer_id id)
{
	size_t i;

	if (loop == NULL || id == 0)
		return;
	for (i = 0; i < loop->ntimers; i++) {
		if (loop->heap[i].id == id) {
			heap_remove_at(loop, i);
			return;
		}
	}
}

/* Run the timers due by now. Timers added while this runs wait for the
 * next iteration, so a timer re-arming itself at "now" cannot starve I/O. */
static void
run_timers(civis_loop *loop)
{
	civis_timer_id limit = loop->next_id;
	uint64_t now = civis_now_ns();

	while (loop->ntimers > 0) {
		struct timer t = loop->heap[0];

		if (t.due_ns > now || t.id >= limit)
			break;
		heap_remove_at(loop, 0);
		t.fn(loop, t.ud);
	}
}

/* ----------------------------------------------------------------- run */

static void
finish_transfers(civis_loop *loop)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL) {
		CURL *easy;
		CURLcode result;

		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg dies with curl_multi_remove_handle: copy first */
		easy = msg->easy_handle;
		result = msg->data.result;
		if (loop->curl_done != NULL) {
			loop->curl_done(loop->curl_done_ctx, easy, result);
		} else {
			curl_multi_remove_handle(loop->multi, easy);
			curl_easy_cleanup(easy);
		}
	}
}

static int
wait_ms(civis_loop *loop, uint64_t max_wait_ns)
{
	uint64_t wait_ns = max_wait_ns;
	long curl_ms = -1;

	if (loop->ntimers > 0) {
		uint64_t now = civis_now_ns();
		uint64_t due = loop->heap[0].due_ns;
		uint64_t until = due > now ? due - now : 0;

		if (until < wait_ns)
			wait_ns = until;
	}
	if (loop->multi != NULL && curl_multi_timeout(loop->multi, &curl_ms) == CURLM_OK &&
	    curl_ms >= 0) {
		uint64_t c = (uint64_t)curl_ms * 1000000ull;

		if (c < wait_ns)
			wait_ns = c;
	}
	/* round up: waking a little early for a timer would only spin */
	wait_ns = wait_ns / 1000000ull + (wait_ns % 1000000ull != 0);
	return wait_ns > INT_MAX ? INT_MAX : (int)wait_ns;
}

int
civis_loop_run_once(civis_loop *loop, uint64_t max_wait_ns)
{
	struct curl_waitfd wfd[CIVIS_LOOP_MAX_IO];
	struct pollfd pfd[CIVIS_LOOP_MAX_IO];
	uint64_t gen[CIVIS_LOOP_MAX_IO];
	unsigned n = 0;
	size_t i;
	int running = 0;
	CURLMcode mc;

	for (i = 0; i < loop->nio; i++) {
		if (loop->io[i].events == 0)
			continue;
		wfd[n].fd = loop->io[i].fd;
		wfd[n].events = (short)((loop->io[i].events & POLLIN ? CURL_WAIT_POLLIN : 0) |
		                        (loop->io[i].events & POLLPRI ? CURL_WAIT_POLLPRI : 0) |
		                        (loop->io[i].events & POLLOUT ? CURL_WAIT_POLLOUT : 0));
		wfd[n].revents = 0;
		pfd[n].fd = loop->io[i].fd;
		pfd[n].events = (short)loop->io[i].events;
		pfd[n].revents = 0;
		gen[n] = loop->io[i].gen;
		n++;
	}

	if (loop->multi != NULL) {
		mc = curl_multi_poll(loop->multi, wfd, n, wait_ms(loop, max_wait_ns), NULL);
		if (mc != CURLM_OK)
			return CIVIS_ESYS;
	}

	if (n > 0 || loop->multi == NULL) {
		int r, timeout = loop->multi != NULL ? 0 : wait_ms(loop, max_wait_ns);

		do
			r = poll(pfd, n, timeout);
		while (r < 0 && errno == EINTR && timeout == 0);
		if (r < 0 && errno == EINTR)
			r = 0;
		if (r < 0)
			return CIVIS_ESYS;
		/* Callbacks may add, pause or delete fds (their own or others):
		 * look each one up again, and skip one that is gone or new. */
		for (i = 0; r > 0 && i < n; i++) {
			struct io_entry *e;
			int rev = pfd[i].revents;

			if (rev == 0)
				continue;
			e = io_find(loop, pfd[i].fd);
			if (e == NULL || e->gen != gen[i])
				continue;
			rev &= e->events | POLLHUP | POLLERR | POLLNVAL;
			if (e->events == 0 || rev == 0)
				continue;
			e->fn(loop, pfd[i].fd, rev, e->ud);
		}
	}

	if (loop->multi != NULL) {
		mc = curl_multi_perform(loop->multi, &running);
		if (mc != CURLM_OK && mc != CURLM_CALL_MULTI_PERFORM)
			return CIVIS_ESYS;
		finish_transfers(loop);
	}
	run_timers(loop);
	return CIVIS_OK;
}

void
civis_loop_wakeup(civis_loop *loop)
{
	/* Without libcurl set up the wait is a plain poll bounded by its
	 * timeout; nothing to wake. */
	if (loop->multi != NULL)
		curl_multi_wakeup(loop->multi);
}

#ifdef CIVIS_UNITTEST
size_t
civis__loop_ntimers(const civis_loop *loop)
{
	return loop->ntimers;
}
#endif
