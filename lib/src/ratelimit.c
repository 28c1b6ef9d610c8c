/* ratelimit.c: the agent's share of the API's rate limit (ratelimit.h).
 *
 * The window is RL_BUCKETS slots of window/RL_BUCKETS each; a try counts in
 * the slot of its start and leaves the window RL_BUCKETS slots later, so
 * the count is exact to a slot (5 s of a 5-minute window). Priorities: a
 * LOW try (heartbeat, cancel poll) goes only while a tenth of the budget is
 * still free, so that under pressure the log and the outputs keep their
 * requests; NORMAL while any of the budget is; FINAL (the last log flush,
 * output registration) whatever the budget says. A 429 holds them all. */
#include <string.h>

#include "ratelimit.h"

static uint64_t
ms_to_ns(uint64_t ms)
{
	return ms > UINT64_MAX / 2000000u ? UINT64_MAX / 2 : ms * 1000000u;
}

static void
set_window(civis__rl *rl, uint64_t window_ms, uint64_t now_ns)
{
	uint64_t w = ms_to_ns(window_ms != 0 ? window_ms : RL_DEFAULT_WINDOW_MS);

	if (w < RL_BUCKETS)
		w = RL_BUCKETS;
	if (w != rl->window_ns) {
		/* another slot length: the counts start afresh */
		memset(rl->count, 0, sizeof(rl->count));
		rl->window_ns = w;
		rl->slot_ns = w / RL_BUCKETS;
		rl->slot = now_ns / rl->slot_ns;
	}
}

void
civis__rl_init(civis__rl *rl, unsigned limit, uint64_t window_ms, unsigned budget_pct,
               uint64_t now_ns)
{
	memset(rl, 0, sizeof(*rl));
	rl->remaining = -1;
	rl->limit = RL_DEFAULT_LIMIT;
	rl->budget_pct = RL_DEFAULT_BUDGET_PCT;
	civis__rl_configure(rl, limit, window_ms, budget_pct, now_ns);
}

void
civis__rl_configure(civis__rl *rl, unsigned limit, uint64_t window_ms, unsigned budget_pct,
                    uint64_t now_ns)
{
	if (limit != 0) {
		rl->limit = limit > RL_MAX_LIMIT ? RL_MAX_LIMIT : limit;
		rl->limit_from_api = 0;
	}
	rl->budget_pct = budget_pct == 0 ? RL_DEFAULT_BUDGET_PCT : budget_pct > 100 ? 100 : budget_pct;
	set_window(rl, window_ms, now_ns);
}

unsigned
civis__rl_budget(const civis__rl *rl)
{
	uint64_t b = (uint64_t)rl->limit * rl->budget_pct / 100u;

	return b == 0 ? 1u : (unsigned)b;
}

/* Move the window to now: slots that left it are emptied. */
static void
advance(civis__rl *rl, uint64_t now_ns)
{
	uint64_t s = now_ns / rl->slot_ns;

	if (s <= rl->slot)
		return;   /* the same slot (or a clock that went back: keep counting) */
	if (s - rl->slot >= RL_BUCKETS) {
		memset(rl->count, 0, sizeof(rl->count));
	} else {
		uint64_t k;

		for (k = rl->slot + 1; k <= s; k++)
			rl->count[k % RL_BUCKETS] = 0;
	}
	rl->slot = s;
}

unsigned
civis__rl_used(civis__rl *rl, uint64_t now_ns)
{
	uint64_t sum = 0;
	unsigned i;

	advance(rl, now_ns);
	for (i = 0; i < RL_BUCKETS; i++)
		sum += rl->count[i];
	return sum > UINT32_MAX ? UINT32_MAX : (unsigned)sum;
}

/* The tries a priority may have in the window. */
static unsigned
ceiling(const civis__rl *rl, int prio)
{
	unsigned b = civis__rl_budget(rl);

	if (prio < RL_PRIO_NORMAL)
		return b - (b >= 10 ? b / 10 : (b > 1 ? 1 : 0));
	return b;
}

/* When the oldest try in the window leaves it. */
static uint64_t
next_free_ns(const civis__rl *rl)
{
	uint64_t k, first = rl->slot + 1 >= RL_BUCKETS ? rl->slot + 1 - RL_BUCKETS : 0;

	for (k = first; k <= rl->slot; k++)
		if (rl->count[k % RL_BUCKETS] != 0)
			return (k + RL_BUCKETS) * rl->slot_ns;
	return (rl->slot + 1) * rl->slot_ns;
}

uint64_t
civis__rl_admit(civis__rl *rl, int prio, uint64_t now_ns)
{
	if (rl->paused_until_ns > now_ns)
		return rl->paused_until_ns;
	if (prio >= RL_PRIO_FINAL || rl->budget_pct >= 100)
		return 0;
	if (civis__rl_used(rl, now_ns) < ceiling(rl, prio))
		return 0;
	return next_free_ns(rl);
}

unsigned
civis__rl_left(civis__rl *rl, int prio, uint64_t now_ns)
{
	unsigned used, cap;

	if (rl->paused_until_ns > now_ns)
		return 0;
	used = civis__rl_used(rl, now_ns);
	cap = ceiling(rl, prio);
	return used < cap ? cap - used : 0;
}

uint64_t
civis__rl_sent(civis__rl *rl, uint64_t now_ns)
{
	unsigned used;

	advance(rl, now_ns);
	if (rl->count[rl->slot % RL_BUCKETS] < UINT32_MAX)
		rl->count[rl->slot % RL_BUCKETS]++;
	rl->tries++;
	used = civis__rl_used(rl, now_ns);
	if (used > rl->max_in_window)
		rl->max_in_window = used;
	return rl->slot;
}

void
civis__rl_unsent(civis__rl *rl, uint64_t slot, uint64_t now_ns)
{
	advance(rl, now_ns);
	if (rl->tries > 0)
		rl->tries--;
	if (slot > rl->slot || rl->slot - slot >= RL_BUCKETS || rl->count[slot % RL_BUCKETS] == 0)
		return;   /* already out of the window */
	rl->count[slot % RL_BUCKETS]--;
}

/* A header's unsigned value, or -1 when absent or not a plain number. */
static long
header_number(const char *v)
{
	long n = 0;
	size_t i;

	if (v == NULL || v[0] == '\0')
		return -1;
	for (i = 0; v[i] != '\0'; i++) {
		if (v[i] < '0' || v[i] > '9' || i >= 9)
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	return n;
}

void
civis__rl_answer(civis__rl *rl, uint64_t now_ns, long http_code, const char *limit,
                 const char *remaining, uint64_t retry_after_ms)
{
	long l = header_number(limit), r = header_number(remaining);

	if (l > 0) {
		rl->limit = (unsigned long)l > RL_MAX_LIMIT ? RL_MAX_LIMIT : (unsigned)l;
		rl->limit_from_api = 1;
	}
	if (r >= 0)
		rl->remaining = r;
	if (http_code == 429) {
		uint64_t ms = retry_after_ms != 0 ? retry_after_ms : RL_DEFAULT_PAUSE_MS;
		uint64_t until;

		if (ms > RL_MAX_PAUSE_MS)
			ms = RL_MAX_PAUSE_MS;
		until = now_ns + ms_to_ns(ms);
		rl->http_429++;
		if (until > rl->paused_until_ns) {
			uint64_t from = rl->paused_until_ns > now_ns ? rl->paused_until_ns : now_ns;

			rl->paused_ns += until - from;
			rl->paused_until_ns = until;
		}
	}
}
