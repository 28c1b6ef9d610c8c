/* ratelimit.h: the agent's share of the API's rate limit (libcivis-internal).
 *
 * Civis allows a user N requests per window (1,000 per 5 minutes), and the
 * job's own API calls share them with the agent. This keeps the agent's
 * authenticated tries within a budget (a share of N; N from
 * X-RateLimit-Limit when the API sends it), counted over a sliding window
 * of RL_BUCKETS slots, and holds every call while a 429's Retry-After runs.
 * Pure bookkeeping on a clock given by the caller (http_gate.c asks before each
 * try and tells it each answer), so the unit test drives it with a fake one. */
#ifndef CIVIS_RATELIMIT_H
#define CIVIS_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RL_BUCKETS            60
#define RL_DEFAULT_LIMIT      1000u
#define RL_DEFAULT_WINDOW_MS  300000u
#define RL_DEFAULT_BUDGET_PCT 20u
#define RL_MAX_LIMIT          10000000u
#define RL_MAX_PAUSE_MS       120000u   /* a longer Retry-After is clamped */
#define RL_DEFAULT_PAUSE_MS   1000u     /* a 429 without Retry-After */

typedef struct civis__rl {
	/* settings */
	unsigned limit;           /* the user's requests per window */
	int limit_from_api;       /* limit came from X-RateLimit-Limit */
	unsigned budget_pct;      /* 1..100; 100 turns the budget off */
	uint64_t window_ns;
	uint64_t slot_ns;         /* window_ns / RL_BUCKETS */
	/* the window */
	uint32_t count[RL_BUCKETS];
	uint64_t slot;            /* absolute slot number of the newest bucket */
	uint64_t paused_until_ns; /* a 429's Retry-After, 0 when none */
	long remaining;           /* X-RateLimit-Remaining last seen, -1 unknown */
	/* counters */
	uint64_t tries;           /* authenticated tries sent (that reached the API) */
	uint64_t max_in_window;   /* the most tries in any window */
	uint64_t http_429;
	uint64_t paused_ns;       /* time every call was held by 429s */
	uint64_t held;            /* tries that had to wait (budget or pause) */
} civis__rl;

/* Priorities (civis_http_prio): below NORMAL waits first, FINAL never waits
 * for the budget (only for a 429's pause). */
#define RL_PRIO_LOW    (-1)
#define RL_PRIO_NORMAL 0
#define RL_PRIO_FINAL  1

/* 0 for any setting takes its default; budget_pct over 100 is 100. */
void     civis__rl_init(civis__rl *rl, unsigned limit, uint64_t window_ms, unsigned budget_pct,
                        uint64_t now_ns);
/* Change the settings and keep the counts (a limit 0 keeps the current one). */
void     civis__rl_configure(civis__rl *rl, unsigned limit, uint64_t window_ms,
                             unsigned budget_pct, uint64_t now_ns);
/* The agent's tries allowed per window: limit * budget_pct / 100, at least 1. */
unsigned civis__rl_budget(const civis__rl *rl);
/* Tries sent in the window that ends at now. */
unsigned civis__rl_used(civis__rl *rl, uint64_t now_ns);
/* May a try of this priority go at now? 0: yes (then call _sent); else the
 * monotonic time at which to ask again. */
uint64_t civis__rl_admit(civis__rl *rl, int prio, uint64_t now_ns);
/* A try went at now: counted in its slot, whose number is returned. */
uint64_t civis__rl_sent(civis__rl *rl, uint64_t now_ns);
/* That try never reached the API (no connection, nothing sent): uncount it. */
void     civis__rl_unsent(civis__rl *rl, uint64_t slot, uint64_t now_ns);
/* An answer: its status and the X-RateLimit-Limit / X-RateLimit-Remaining /
 * Retry-After values ("" or NULL when absent; Retry-After already in ms). A
 * 429 holds every call until now + Retry-After. */
void     civis__rl_answer(civis__rl *rl, uint64_t now_ns, long http_code, const char *limit,
                          const char *remaining, uint64_t retry_after_ms);
/* Tries of this priority still allowed in the window at now (0 while paused). */
unsigned civis__rl_left(civis__rl *rl, int prio, uint64_t now_ns);

#endif
