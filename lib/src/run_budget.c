/* run_budget.c: the run's share of the API rate limit (civis_run_opts
 * budget_pct), counted over the run's own requests. See run.h.
 *
 * The limit is a sliding window (Civis: 1,000 per 5 minutes). The run
 * keeps to budget_pct% of it over a tenth of the window, so that it never
 * spends the window's share in one burst: 20% of 1,000 per 300 s is at most
 * 20 requests in any 30 s. The transport's retries count too (each try is a
 * request), when they are known: at the end of a call. */
#include <stdint.h>
#include <string.h>

#include "civis/civis.h"
#include "run_int.h"

void
civis__run_budget_init(civis_run *r)
{
	struct run_budget *b = &r->budget;
	uint64_t limit = r->o.rate_limit ? r->o.rate_limit : CIVIS_RATE_LIMIT;
	uint64_t window = r->o.rate_window_ns ? r->o.rate_window_ns : CIVIS_RATE_WINDOW_NS;
	uint64_t n;

	memset(b, 0, sizeof(*b));
	if (r->o.budget_pct == 0 || r->o.budget_pct > 100)
		return;
	n = limit * r->o.budget_pct / 1000;    /* per tenth of the window */
	b->span_ns = window / 10;
	if (n == 0)
		n = 1;
	if (n > RUN_BUDGET_RING) {
		/* the same rate over a shorter span */
		b->span_ns = b->span_ns * RUN_BUDGET_RING / n;
		n = RUN_BUDGET_RING;
	}
	b->n = (unsigned)n;
}

unsigned
civis__run_budget_room(const civis_run *r, uint64_t now)
{
	const struct run_budget *b = &r->budget;
	unsigned room = 0;

	if (b->n == 0)
		return UINT32_MAX;
	for (unsigned i = 0; i < b->n; i++)
		if (b->t[i] == 0 || now - b->t[i] >= b->span_ns)
			room++;
	return room;
}

void
civis__run_budget_spend(civis_run *r, unsigned n)
{
	struct run_budget *b = &r->budget;
	uint64_t now = civis_now_ns();

	if (b->n == 0)
		return;
	/* The oldest goes; past the room that undercounts a little, which
	 * only top-priority calls do. */
	for (unsigned i = 0; i < n && i < b->n; i++) {
		b->t[b->head] = now ? now : 1;
		b->head = (b->head + 1) % b->n;
	}
}

uint64_t
civis__run_budget_next(const civis_run *r, uint64_t now)
{
	const struct run_budget *b = &r->budget;
	uint64_t next = UINT64_MAX;

	if (b->n == 0)
		return now;
	for (unsigned i = 0; i < b->n; i++) {
		if (b->t[i] == 0 || now - b->t[i] >= b->span_ns)
			return now;
		if (b->t[i] + b->span_ns < next)
			next = b->t[i] + b->span_ns;
	}
	return next;
}

int
civis__run_budget_tight(const civis_run *r, uint64_t now)
{
	return r->budget.n > 0 && civis__run_budget_room(r, now) * 2 <= r->budget.n;
}
