/* http.h: asynchronous HTTP requests on the loop, with the retry policy.
 *
 * One request = one logical call; the module retries it by the policy
 * (network errors, 408, 429, 5xx; capped full-jitter exponential backoff,
 * never sooner than Retry-After; other 4xx are final) and calls done once. */
#ifndef CIVIS_HTTP_H
#define CIVIS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include "civis/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct civis_http civis_http;          /* one per loop */
typedef struct civis_http_req civis_http_req;  /* one call in flight */

typedef struct civis_retry_policy {
	unsigned max_attempts;   /* tries in all; 0 means until the deadline */
	uint64_t base_ms;        /* first backoff cap (full jitter: uniform 0..cap) */
	uint64_t cap_ms;         /* backoff never above this (Retry-After may be) */
	uint64_t deadline_ms;    /* give up this long after the first try; 0 = none */
	uint64_t max_retry_after_ms; /* a larger Retry-After is clamped to this */
	int retry_ambiguous;     /* retry when the server may have acted (timeout after send) */
} civis_retry_policy;

/* Defaults: 10 attempts, base 500 ms, cap 30 s, no deadline, Retry-After
 * clamped at 120 s, ambiguous failures retried. */
void civis_retry_policy_default(civis_retry_policy *p);

/* Backoff before retry number `attempt` (1 = after the first failure):
 * uniform in [0, min(cap, base * 2^(attempt-1))], then at least retry_after_ms
 * (itself clamped to max_retry_after_ms). rnd is a uniform 64-bit value. */
uint64_t civis_retry_backoff_ms(const civis_retry_policy *p, unsigned attempt,
                                uint64_t retry_after_ms, uint64_t rnd);

/* Parse a Retry-After header value (delta-seconds or HTTP-date relative to
 * now_epoch). Returns milliseconds, or 0 when absent/unparsable. */
uint64_t civis_retry_after_parse_ms(const char *value, int64_t now_epoch);

/* Whether an answer is worth another try: 0 (network error), 408, 429, 5xx. */
int civis_http_status_retryable(long http_code);

typedef struct civis_http_result {
	int status;              /* CIVIS_OK for 2xx, else a civis_status */
	long http_code;          /* 0 when no answer came */
	const char *body;        /* answer body, NUL-terminated, capped; never NULL */
	size_t body_len;
	const char *etag;        /* ETag header or NULL */
	unsigned attempts;       /* tries made */
	unsigned ambiguous;      /* failed tries the server may have acted on */
	const char *error;       /* one line of detail, no secret; "" when OK */
} civis_http_result;

/* Called exactly once per request, from civis_loop_run_once (or from
 * civis_http_free with status CIVIS_ECANCELED). res is valid only during
 * the call. */
typedef void (*civis_http_done_fn)(void *ud, const civis_http_result *res);

/* A streamed request body: copy up to n bytes of the body from offset off
 * into buf and set *got (1..n; fewer than n is fine, 0 only at the end).
 * Return CIVIS_OK, or a civis_status: the try then fails at once with a
 * one-line error naming the offset, and is not retried. Offsets only grow
 * within a try, except when libcurl rewinds to send the body again by
 * itself; every retry reads from 0 again. */
typedef int (*civis_http_read_fn)(void *ud, uint64_t off, char *buf, size_t n, size_t *got);

/* Writes the one-line text of an error answer (status >= 300) into buf,
 * cleaned (no control characters, whole UTF-8 sequences), "" if none. */
typedef void (*civis_http_error_text_fn)(const char *body, size_t len, char *buf,
                                         size_t buflen);

/* The generic reader: the answer's first non-blank line, cleaned. */
void civis_http_error_text_line(const char *body, size_t len, char *buf, size_t buflen);

/* How a request stands against the API budget (civis_http_set_budget) when
 * the agent's own requests use it up: LOW waits first, FINAL never waits
 * for the budget. Every authenticated request waits while a 429's
 * Retry-After runs. */
typedef enum civis_http_prio {
	CIVIS_HTTP_PRIO_LOW    = -1,  /* heartbeats, cancel polls */
	CIVIS_HTTP_PRIO_NORMAL = 0,   /* the default: log batches, file creation */
	CIVIS_HTTP_PRIO_FINAL  = 1    /* the final log flush, output registration */
} civis_http_prio;

typedef struct civis_http_spec {
	const char *method;      /* "GET", "POST", "PUT", "PATCH", "DELETE" */
	const char *url;         /* absolute */
	const char *what;        /* short name for messages: "log batch" */
	const char *content_type;/* NULL: none */
	const char *body;        /* in-memory request body or NULL; borrowed until done */
	size_t body_len;
	uint64_t body_size;      /* streamed body (instead of body): its exact length, */
	civis_http_read_fn body_read; /* and its reader; sent with that Content-Length */
	void *body_ud;
	const char *const *headers; /* extra "Name: value" headers, NULL-terminated, or
	                               NULL; the array and strings borrowed until start returns */
	size_t max_response;     /* answer body cap; 0 = 1 MiB */
	long connect_timeout_ms; /* 0 = 10 s */
	long low_speed_time_s;   /* cut when under 1 byte/s this long; 0 = 30 s */
	long timeout_ms;         /* whole-try limit; 0 = none beyond low-speed */
	const civis_retry_policy *retry; /* NULL = default */
	civis_http_done_fn done;
	void *done_ud;
	civis_http_error_text_fn error_text; /* NULL: civis_http_error_text_line */
	int prio;                /* civis_http_prio; 0 = NORMAL */
	size_t send_buffer;      /* a streamed body is read body_read at most this
	                            many bytes at a time, and sent so: 0 = 64 KiB;
	                            16 KiB to CIVIS_HTTP_SEND_BUFFER_MAX (bigger
	                            bodies: fewer reads and sends, more memory) */
} civis_http_spec;

#define CIVIS_HTTP_SEND_BUFFER_MIN (16u << 10)
#define CIVIS_HTTP_SEND_BUFFER_MAX (2u << 20)

int  civis_http_new(civis_http **out, civis_loop *loop);
/* Cancels what is in flight (their done callbacks run with CIVIS_ECANCELED). */
void civis_http_free(civis_http *http);

/* Start a request with no credentials (presigned upload URLs). Redirects are
 * not followed. On failure to start, done is NOT called. The URL must be
 * https://, or http:// to a loopback host; any other fails the request
 * (done, CIVIS_EUNSAFE, with the reason in res->error) before it is sent. */
int  civis_http_start(civis_http *http, const civis_http_spec *spec, civis_http_req **out);

/* Abort one request; its done runs with CIVIS_ECANCELED before this returns. */
void civis_http_cancel(civis_http *http, civis_http_req *req);

/* The proxy a request to url goes through, as "scheme://host:port" (never
 * its credentials) into buf, or "" for a direct connection (for -v).
 * An http:// URL (loopback only) never uses one; an https:// URL follows
 * https_proxy, else HTTPS_PROXY, else all_proxy, else ALL_PROXY, unless its
 * host is in no_proxy/NO_PROXY (libcurl's rules), as the environment was
 * at civis_http_new. CIVIS_EINVAL for a URL that does not parse. */
int  civis_http_proxy_for(const civis_http *http, const char *url, char *buf, size_t len);

/* ---- the API budget: authenticated requests (civis_client_call) only.
 *
 * Civis allows a user `limit` requests per `window` (1,000 per 5 minutes),
 * shared by the agent and the job's own API calls. The agent keeps its own
 * tries (retries included) within budget_pct of the limit over a sliding
 * window; a try over it waits (LOW from 90% of the budget, NORMAL at 100%,
 * FINAL not at all). The limit is taken from X-RateLimit-Limit when the API
 * sends one. A 429 holds every authenticated try until its Retry-After
 * (clamped at 120 s; 1 s when absent), not only the one that got it. */

/* A new civis_http has no budget, only the 429 pause, until this is called.
 * 0 for a setting takes its default: budget_pct 20 (100: no budget), limit
 * 1000, window 300000 ms. A limit set here is replaced by the next
 * X-RateLimit-Limit. Tries that never reached the API (no connection) do
 * not count. */
int  civis_http_set_budget(civis_http *http, unsigned budget_pct, unsigned limit,
                           uint64_t window_ms);

typedef struct civis_http_rate_stats {
	unsigned limit;          /* the user's requests per window, as last known */
	int limit_from_api;      /* 1 when limit came from X-RateLimit-Limit */
	long remaining;          /* X-RateLimit-Remaining last seen, -1 unknown */
	unsigned budget;         /* the agent's tries allowed per window */
	unsigned used;           /* its tries in the window that ends now */
	uint64_t window_ms;
	uint64_t tries;          /* authenticated tries sent in all */
	uint64_t max_in_window;  /* the most in any window */
	uint64_t http_429;       /* 429 answers */
	uint64_t paused_ms;      /* time every call was held by 429s */
	uint64_t held;           /* tries that had to wait (budget or 429) */
	unsigned waiting;        /* tries waiting now */
} civis_http_rate_stats;

void civis_http_get_rate_stats(civis_http *http, civis_http_rate_stats *out);

/* Tries of priority prio the budget still allows in the current window
 * (0 while a 429 holds the calls): "send more, or batch bigger?". */
unsigned civis_http_budget_left(civis_http *http, int prio);

/* Requests in flight or waiting to retry. */
unsigned civis_http_pending(const civis_http *http);

#ifdef __cplusplus
}
#endif
#endif
