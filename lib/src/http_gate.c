/* http_gate.c: the API budget in front of every authenticated try.
 *
 * Before a try of a request that carries the key, the gate asks the rate
 * bookkeeping (ratelimit.c) whether it may go now. If not, the request
 * joins one queue, ordered by priority and then by arrival, and a single
 * loop timer wakes the gate when the first of them may go (the oldest try
 * leaving the window, or a 429's pause ending). A request never passes one
 * of equal or higher priority that is already waiting. Presigned storage
 * requests (no key) do not count and never wait here. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http_req.h"
#include "civis/civis.h"

static void gate_cb(civis_loop *loop, void *ud);

void
civis__http_gate_init(civis_http *http)
{
	/* no budget until the caller sets one (civis_http_set_budget): only
	 * the 429 pause and the headers' bookkeeping */
	civis__rl_init(&http->rl, 0, 0, 100, civis_now_ns());
}

static void
enqueue(civis_http *http, civis_http_req *r)
{
	civis_http_req *at = http->wait_tail;

	/* behind every waiter of the same or a higher priority */
	while (at != NULL && at->prio < r->prio)
		at = at->wprev;
	r->wprev = at;
	r->wnext = at != NULL ? at->wnext : http->wait_head;
	if (r->wnext != NULL)
		r->wnext->wprev = r;
	else
		http->wait_tail = r;
	if (at != NULL)
		at->wnext = r;
	else
		http->wait_head = r;
	r->waiting = 1;
	http->rl.held++;
}

void
civis__http_gate_remove(civis_http_req *r)
{
	civis_http *http = r->http;

	if (!r->waiting)
		return;
	if (r->wprev != NULL)
		r->wprev->wnext = r->wnext;
	else
		http->wait_head = r->wnext;
	if (r->wnext != NULL)
		r->wnext->wprev = r->wprev;
	else
		http->wait_tail = r->wprev;
	r->wprev = r->wnext = NULL;
	r->waiting = 0;
}

/* One timer for the whole queue, at the earliest time worth asking again. */
static void
arm(civis_http *http, uint64_t due)
{
	if (http->gate_timer != 0 && http->gate_due <= due)
		return;
	if (http->gate_timer != 0)
		civis_loop_cancel_timer(http->loop, http->gate_timer);
	http->gate_timer = 0;
	http->gate_due = due;
	if (civis_loop_add_timer(http->loop, due, gate_cb, http, &http->gate_timer) != CIVIS_OK)
		http->gate_timer = 0;   /* the next answer or request wakes the gate */
}

static int
go(civis_http_req *r, uint64_t now)
{
	r->rl_slot = civis__rl_sent(&r->http->rl, now);
	return civis__http_try_start(r);
}

/* Let go every waiter the budget allows, highest priority first. */
static void
drain(civis_http *http)
{
	uint64_t now = civis_now_ns();

	while (http->wait_head != NULL) {
		civis_http_req *r = http->wait_head;
		uint64_t again = civis__rl_admit(&http->rl, r->prio, now);
		int rc;

		if (again != 0) {
			arm(http, again);
			return;
		}
		civis__http_gate_remove(r);
		rc = go(r, now);
		if (rc != CIVIS_OK) {
			/* done may free http: the rest wait for the timer */
			if (http->wait_head != NULL)
				arm(http, now);
			civis__http_req_error(r, "could not start the request: %s", civis_strerror(rc));
			civis__http_req_finish(r, rc, 0);
			return;
		}
	}
}

static void
gate_cb(civis_loop *loop, void *ud)
{
	civis_http *http = ud;

	(void)loop;
	http->gate_timer = 0;
	drain(http);
}

int
civis__http_gate_try(civis_http_req *r)
{
	civis_http *http = r->http;
	uint64_t now, again;
	civis_http_req *w;

	if (r->userpwd == NULL)
		return civis__http_try_start(r);
	now = civis_now_ns();
	/* a waiter of the same or a higher priority goes first */
	for (w = http->wait_head; w != NULL && w->prio < r->prio; w = w->wnext)
		;
	again = w != NULL ? 1 : civis__rl_admit(&http->rl, r->prio, now);
	if (again == 0)
		return go(r, now);
	enqueue(http, r);
	again = civis__rl_admit(&http->rl, http->wait_head->prio, now);
	arm(http, again != 0 ? again : now);
	return CIVIS_OK;
}

void
civis__http_gate_answer(civis_http_req *r, long code, int reached)
{
	civis_http *http = r->http;
	uint64_t ra = code == 429 ? civis_retry_after_parse_ms(r->retry_after, (int64_t)time(NULL))
	                          : 0;

	if (!reached)
		civis__rl_unsent(&http->rl, r->rl_slot, civis_now_ns());
	civis__rl_answer(&http->rl, civis_now_ns(), code, r->rl_limit, r->rl_remaining, ra);
	if (http->wait_head != NULL)
		arm(http, civis_now_ns());
}

void
civis__http_gate_free(civis_http *http)
{
	if (http->gate_timer != 0)
		civis_loop_cancel_timer(http->loop, http->gate_timer);
	http->gate_timer = 0;
}

/* ------------------------------------------------------------ the API */

int
civis_http_set_budget(civis_http *http, unsigned budget_pct, unsigned limit, uint64_t window_ms)
{
	if (http == NULL || budget_pct > 100)
		return CIVIS_EINVAL;
	civis__rl_configure(&http->rl, limit, window_ms, budget_pct, civis_now_ns());
	if (http->wait_head != NULL)
		arm(http, civis_now_ns());
	return CIVIS_OK;
}

void
civis_http_get_rate_stats(civis_http *http, civis_http_rate_stats *out)
{
	civis__rl *rl = &http->rl;
	const civis_http_req *w;
	uint64_t now = civis_now_ns();

	memset(out, 0, sizeof(*out));
	out->limit = rl->limit;
	out->limit_from_api = rl->limit_from_api;
	out->remaining = rl->remaining;
	out->budget = civis__rl_budget(rl);
	out->used = civis__rl_used(rl, now);
	out->window_ms = rl->window_ns / 1000000u;
	out->tries = rl->tries;
	out->max_in_window = rl->max_in_window;
	out->http_429 = rl->http_429;
	out->paused_ms = rl->paused_ns / 1000000u;
	out->held = rl->held;
	for (w = http->wait_head; w != NULL; w = w->wnext)
		out->waiting++;
}

unsigned
civis_http_budget_left(civis_http *http, int prio)
{
	return civis__rl_left(&http->rl, prio, civis_now_ns());
}
