/* http_req.h: a civis_http and its requests, shared by the files of the
 * http module only: http.c (requests, outcome, the API), http_try.c (one
 * try: the easy handle, body, answer capture) and http_gate.c (the rate
 * limit's gate before each try). */
#ifndef CIVIS_HTTP_REQ_H
#define CIVIS_HTTP_REQ_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "dl.h"
#include "http_int.h"
#include "ratelimit.h"

#define ERROR_TEXT_MAX         512
#define ETAG_MAX               256
#define RETRY_AFTER_MAX        64
#define METHOD_MAX             16

struct civis_http {
	civis_loop *loop;
	CURLM *multi;
	CURLSH *share;
	civis_http_req *head;
	unsigned pending;
	uint64_t rng;
	int closing;
	char ca_file[PATH_MAX];     /* CURLOPT_CAINFO (tls.h), or "" for libcurl's */
	civis__proxy_env proxy_env; /* the proxy variables at civis_http_new */
	/* the API budget (http_gate.c): authenticated tries wait here */
	civis__rl rl;
	civis_http_req *wait_head, *wait_tail; /* by priority, then first come */
	civis_timer_id gate_timer;
	uint64_t gate_due;
};

struct civis_http_req {
	civis_http *http;
	civis_http_req *prev, *next;
	CURL *easy;                 /* the try in flight, or NULL */
	civis_timer_id timer;       /* the wait before the next try, or 0 */
	int in_done;

	char method[METHOD_MAX];
	char *url;
	char *what;
	char *path;                 /* for messages: no host, no query */
	const char *body;           /* in memory, or */
	size_t body_len;
	civis_http_read_fn body_read; /* streamed, or */
	uint64_t body_size;
	void *body_ud;
	size_t send_buffer;         /* CURLOPT_UPLOAD_BUFFERSIZE, or 0: libcurl's */
	uint64_t body_pos;          /* next offset libcurl reads, per try */
	int body_rc;                /* the reader's failure in this try, or CIVIS_OK */
	unsigned rewinds;           /* libcurl resent a streamed body by itself */
	struct curl_slist *headers;
	char *userpwd;
	char *proxy;                /* CURLOPT_PROXY: as set (credentials too), "" = direct */
	char proxy_shown[160];      /* the same for messages: scheme://host:port */
	size_t max_response;
	long connect_timeout_ms;
	long low_speed_time_s;
	long timeout_ms;
	civis_retry_policy policy;
	civis_http_done_fn done;
	void *done_ud;
	civis_http_error_text_fn error_text;
	int prio;                   /* civis_http_prio */
	int waiting;                /* in the gate's queue */
	uint64_t rl_slot;           /* where the budget counted this try */
	civis_http_req *wprev, *wnext;

	/* the answer of the latest try */
	char *resp;
	size_t resp_len;
	size_t resp_cap;
	int too_big;
	char etag[ETAG_MAX];
	char retry_after[RETRY_AFTER_MAX];
	char rl_limit[RETRY_AFTER_MAX];     /* X-RateLimit-Limit */
	char rl_remaining[RETRY_AFTER_MAX]; /* X-RateLimit-Remaining */

	unsigned attempts;
	unsigned ambiguous;
	uint64_t first_ns;
	char error[ERROR_TEXT_MAX];
};

/* "<what>: <METHOD> <path>: " + the formatted detail, truncated to one line. */
void civis__http_req_error(civis_http_req *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int  civis__http_req_method_is(const civis_http_req *r, const char *m);
/* GET, HEAD, PUT, DELETE: a repeat cannot act twice. */
int  civis__http_req_idempotent(const civis_http_req *r);

/* Report the outcome once (done), then free the request. */
void civis__http_req_finish(civis_http_req *r, int status, long http_code);

/* ---- http_gate.c: the API budget in front of authenticated tries */

void civis__http_gate_init(civis_http *http);
/* The next try of r: at once, or (authenticated and over the budget or
 * paused by a 429) queued until the gate lets it go. CIVIS_OK or why the
 * try could not start. */
int  civis__http_gate_try(civis_http_req *r);
/* An authenticated try ended (code 0: no answer; reached 0: nothing got to
 * the server, so it does not count): the budget learns from it. */
void civis__http_gate_answer(civis_http_req *r, long code, int reached);
/* Take r out of the queue (cancel). */
void civis__http_gate_remove(civis_http_req *r);
void civis__http_gate_free(civis_http *http);

/* Start one try of r: a fresh easy handle with every option, added to the
 * multi handle (r->easy, r->attempts counted). CIVIS_OK or why not. */
int  civis__http_try_start(civis_http_req *r);

#endif
