/* test_http.c: retry math, status classification, and civis_http (plus
 * civis_client_call) against a scripted HTTP server on 127.0.0.1 in a
 * thread: every test states what the server answers and checks what it saw. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "../../lib/src/http_int.h"

#define MS 1000000ull

/* ------------------------------------------------------------ retry math */

static void
test_policy_default(void **state)
{
	civis_retry_policy p;

	(void)state;
	memset(&p, 0xff, sizeof(p));
	civis_retry_policy_default(&p);
	assert_int_equal(p.max_attempts, 10);
	assert_int_equal(p.base_ms, 500);
	assert_int_equal(p.cap_ms, 30000);
	assert_int_equal(p.deadline_ms, 0);
	assert_int_equal(p.max_retry_after_ms, 120000);
	assert_int_equal(p.retry_ambiguous, 1);
}

static uint64_t
xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
test_backoff_bounds(void **state)
{
	civis_retry_policy p;
	uint64_t s = 0x1234567887654321ull;
	unsigned attempt;
	int i;

	(void)state;
	civis_retry_policy_default(&p);
	for (attempt = 1; attempt <= 40; attempt++) {
		uint64_t cap = attempt >= 8 ? 30000 : 500ull << (attempt - 1);
		uint64_t lo = UINT64_MAX, hi = 0, sum = 0;

		if (cap > 30000)
			cap = 30000;
		for (i = 0; i < 2000; i++) {
			uint64_t w = civis_retry_backoff_ms(&p, attempt, 0, xorshift(&s));

			assert_true(w <= cap);
			if (w < lo)
				lo = w;
			if (w > hi)
				hi = w;
			sum += w;
		}
		/* full jitter: spread over the whole [0, cap] */
		assert_true(lo < cap / 10 + 1);
		assert_true(hi > cap - cap / 10 - 1);
		assert_true(sum / 2000 > cap / 3 && sum / 2000 < cap * 2 / 3);
	}
	/* extreme random values and attempt numbers stay in bounds */
	assert_true(civis_retry_backoff_ms(&p, 1, 0, UINT64_MAX) <= 500);
	assert_true(civis_retry_backoff_ms(&p, 0, 0, UINT64_MAX) <= 500);
	assert_true(civis_retry_backoff_ms(&p, UINT32_MAX, 0, UINT64_MAX) <= 30000);
	p.base_ms = UINT64_MAX / 3;
	p.cap_ms = UINT64_MAX;
	assert_true(civis_retry_backoff_ms(&p, 70, 0, 12345) == 12345);
	p.base_ms = 0;
	p.cap_ms = 0;
	assert_int_equal(civis_retry_backoff_ms(&p, 3, 0, 999), 0);
}

static void
test_backoff_retry_after(void **state)
{
	civis_retry_policy p;
	uint64_t s = 42;
	int i;

	(void)state;
	civis_retry_policy_default(&p);
	for (i = 0; i < 1000; i++) {
		/* Retry-After is a floor, even above the cap */
		uint64_t w = civis_retry_backoff_ms(&p, 1, 45000, xorshift(&s));

		assert_int_equal(w, 45000);
		w = civis_retry_backoff_ms(&p, 10, 2000, xorshift(&s));
		assert_true(w >= 2000 && w <= 30000);
	}
	/* a huge Retry-After is clamped to max_retry_after_ms */
	assert_int_equal(civis_retry_backoff_ms(&p, 1, UINT64_MAX, 0), 120000);
	assert_int_equal(civis_retry_backoff_ms(&p, 1, 86400000, 7), 120000);
	p.max_retry_after_ms = 0;
	assert_true(civis_retry_backoff_ms(&p, 1, 86400000, 7) <= 500);
}

static void
test_retry_after_parse(void **state)
{
	/* 1994-11-06 08:49:37 UTC */
	const int64_t then = 784111777;

	(void)state;
	assert_int_equal(civis_retry_after_parse_ms("1", 0), 1000);
	assert_int_equal(civis_retry_after_parse_ms("120", 0), 120000);
	assert_int_equal(civis_retry_after_parse_ms("  7 \r\n", 0), 7000);
	assert_int_equal(civis_retry_after_parse_ms("0", 0), 0);
	assert_true(civis_retry_after_parse_ms("99999999999999999999999999", 0) >= 1000ull * 1000000000ull);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then - 30), 30000);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then + 5), 0);
	assert_int_equal(civis_retry_after_parse_ms("Thu, 01 Jan 1970 00:01:00 GMT", 0), 60000);
	assert_int_equal(civis_retry_after_parse_ms("Tue, 29 Feb 2028 12:00:00 GMT", 1835438400 - 1), 1000);
	/* garbage, other date formats, negatives: 0 */
	assert_int_equal(civis_retry_after_parse_ms(NULL, 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("soon", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("-5", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("5s", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("1.5", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sunday, 06-Nov-94 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun Nov  6 08:49:37 1994", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 UTC", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Foo 1994 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 36 Nov 1994 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 28:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:3x GMT", 0), 0);
}

static void
test_status_retryable(void **state)
{
	long code;

	(void)state;
	for (code = 0; code < 1000; code++) {
		int want = code == 0 || code == 408 || code == 429 || (code >= 500 && code <= 599);

		assert_int_equal(civis_http_status_retryable(code), want);
	}
	assert_int_equal(civis_http_status_retryable(-1), 0);
}

/* ------------------------------------------------------- scripted server */

enum act { ANSWER, ANSWER_CLOSE, CUT, STALL, ENDLESS };

struct step {
	enum act act;
	const char *bytes;   /* what to send (the whole answer, or its head) */
};

#define MAX_CONN 8
#define MAX_REQS 16

struct conn {
	int fd;
	char buf[1 << 16];
	size_t len;
	int endless;
	int stalled;
};

struct server {
	int lfd;
	int port;
	pthread_t th;
	atomic_int stop;
	pthread_mutex_t mu;
	const struct step *steps;
	size_t nsteps, next;
	char reqs[MAX_REQS][4096];
	int req_conn[MAX_REQS];     /* which accepted connection carried it */
	size_t nreqs;
	int accepts;
	struct conn conns[MAX_CONN];
	int conn_id[MAX_CONN];
};

static struct server S;

static void
send_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void
conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->endless = 0;
	c->stalled = 0;
}

/* Take every complete request from c->buf and act on it. */
static void
serve_requests(struct conn *c, int cid)
{
	for (;;) {
		char *end;
		size_t head, clen = 0, total;
		const char *cl;
		struct step st = { ANSWER, "HTTP/1.1 500 Internal Server Error\r\n"
		                           "Content-Length: 13\r\n\r\nno more steps" };

		if (c->fd < 0 || c->stalled || c->endless)
			return;
		c->buf[c->len < sizeof(c->buf) ? c->len : sizeof(c->buf) - 1] = '\0';
		end = strstr(c->buf, "\r\n\r\n");
		if (end == NULL)
			return;
		head = (size_t)(end - c->buf) + 4;
		cl = strcasestr(c->buf, "\r\nContent-Length:");
		if (cl != NULL && cl < end)
			clen = strtoul(cl + 17, NULL, 10);
		total = head + clen;
		if (c->len < total)
			return;
		pthread_mutex_lock(&S.mu);
		if (S.nreqs < MAX_REQS) {
			size_t n = total < sizeof(S.reqs[0]) - 1 ? total : sizeof(S.reqs[0]) - 1;

			memcpy(S.reqs[S.nreqs], c->buf, n);
			S.reqs[S.nreqs][n] = '\0';
			S.req_conn[S.nreqs] = cid;
			S.nreqs++;
		}
		if (S.next < S.nsteps)
			st = S.steps[S.next++];
		pthread_mutex_unlock(&S.mu);
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
		switch (st.act) {
		case ANSWER:
			send_all(c->fd, st.bytes, strlen(st.bytes));
			break;
		case ANSWER_CLOSE:
			send_all(c->fd, st.bytes, strlen(st.bytes));
			conn_close(c);
			return;
		case CUT:
			conn_close(c);
			return;
		case STALL:
			send_all(c->fd, st.bytes, strlen(st.bytes));
			c->stalled = 1;
			return;
		case ENDLESS:
			send_all(c->fd, st.bytes, strlen(st.bytes));
			c->endless = 1;
			return;
		}
	}
}

static void *
server_main(void *arg)
{
	static char chunk[16384];

	(void)arg;
	memset(chunk, 'x', sizeof(chunk));
	while (!atomic_load(&S.stop)) {
		struct pollfd pfd[MAX_CONN + 1];
		int map[MAX_CONN + 1];
		int n = 0, i;

		pfd[n].fd = S.lfd;
		pfd[n].events = POLLIN;
		map[n++] = -1;
		for (i = 0; i < MAX_CONN; i++) {
			if (S.conns[i].fd < 0)
				continue;
			pfd[n].fd = S.conns[i].fd;
			pfd[n].events = POLLIN | (S.conns[i].endless ? POLLOUT : 0);
			map[n++] = i;
		}
		if (poll(pfd, (nfds_t)n, 20) <= 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			int fd = accept(S.lfd, NULL, NULL);

			for (i = 0; fd >= 0 && i < MAX_CONN; i++) {
				if (S.conns[i].fd < 0) {
					S.conns[i].fd = fd;
					S.conns[i].len = 0;
					pthread_mutex_lock(&S.mu);
					S.conn_id[i] = ++S.accepts;
					pthread_mutex_unlock(&S.mu);
					fd = -1;
				}
			}
			if (fd >= 0)
				close(fd);
		}
		for (i = 1; i < n; i++) {
			struct conn *c = &S.conns[map[i]];

			if (c->fd < 0)
				continue;
			if (c->endless && (pfd[i].revents & POLLOUT)) {
				if (send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
				    errno != EAGAIN) {
					conn_close(c);
					continue;
				}
			}
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);

				if (r <= 0) {
					conn_close(c);
					continue;
				}
				c->len += (size_t)r;
				serve_requests(c, S.conn_id[map[i]]);
			}
		}
	}
	return NULL;
}

static void
server_start(const struct step *steps, size_t n)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int one = 1, i;

	memset(&S, 0, sizeof(S));
	for (i = 0; i < MAX_CONN; i++)
		S.conns[i].fd = -1;
	S.steps = steps;
	S.nsteps = n;
	pthread_mutex_init(&S.mu, NULL);
	S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(S.lfd >= 0);
	setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(S.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(S.lfd, 16), 0);
	assert_int_equal(getsockname(S.lfd, (struct sockaddr *)&a, &al), 0);
	S.port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&S.th, NULL, server_main, NULL), 0);
}

static void
server_stop(void)
{
	int i;

	atomic_store(&S.stop, 1);
	pthread_join(S.th, NULL);
	for (i = 0; i < MAX_CONN; i++)
		if (S.conns[i].fd >= 0)
			close(S.conns[i].fd);
	close(S.lfd);
	pthread_mutex_destroy(&S.mu);
}

static size_t
server_nreqs(void)
{
	size_t n;

	pthread_mutex_lock(&S.mu);
	n = S.nreqs;
	pthread_mutex_unlock(&S.mu);
	return n;
}

/* ---------------------------------------------------------- the client */

struct got {
	int called;
	int status;
	long http_code;
	char body[4096];
	size_t body_len;
	char etag[128];
	unsigned attempts;
	unsigned ambiguous;
	char error[600];
	uint64_t at;                /* civis_now_ns() when done ran */
};

static void
on_done(void *ud, const civis_http_result *res)
{
	struct got *g = ud;

	g->called++;
	g->at = civis_now_ns();
	g->status = res->status;
	g->http_code = res->http_code;
	g->body_len = res->body_len;
	snprintf(g->body, sizeof(g->body), "%s", res->body);
	snprintf(g->etag, sizeof(g->etag), "%s", res->etag != NULL ? res->etag : "");
	g->attempts = res->attempts;
	g->ambiguous = res->ambiguous;
	snprintf(g->error, sizeof(g->error), "%s", res->error);
}

struct fixture {
	civis_loop *loop;
	civis_http *http;
	char base[64];
	civis_retry_policy fast;
};

static struct fixture F;

static int
setup(void **state)
{
	(void)state;
	memset(&F, 0, sizeof(F));
	assert_int_equal(civis_loop_new(&F.loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&F.http, F.loop), CIVIS_OK);
	civis_retry_policy_default(&F.fast);
	F.fast.base_ms = 20;
	F.fast.cap_ms = 50;
	F.fast.max_attempts = 3;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	civis_http_free(F.http);
	civis_loop_free(F.loop);
	server_stop();
	return 0;
}

static void
run_until(const struct got *g, uint64_t max_ns)
{
	uint64_t end = civis_now_ns() + max_ns;

	while (!g->called && civis_now_ns() < end)
		assert_int_equal(civis_loop_run_once(F.loop, 100 * MS), CIVIS_OK);
	assert_int_equal(g->called, 1);
}

static civis_http_spec
spec_for(const char *method, const char *path, struct got *g)
{
	static char url[256];
	civis_http_spec s;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", S.port, path);
	memset(&s, 0, sizeof(s));
	s.method = method;
	s.url = url;
	s.what = "test";
	s.retry = &F.fast;
	s.done = on_done;
	s.done_ud = g;
	return s;
}

static const struct step steps_503_200[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 11\r\n\r\n{\"id\": 12}\n" },
};

static void
test_retry_503_then_200(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_200, 2);
	s = spec_for("GET", "/thing?token=abc", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	assert_int_equal(civis_http_pending(F.http), 1);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 200);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_string_equal(g.body, "{\"id\": 12}\n");
	assert_int_equal(g.body_len, 11);
	assert_string_equal(g.etag, "\"abc\"");
	assert_string_equal(g.error, "");
	assert_int_equal(civis_http_pending(F.http), 0);
	assert_int_equal(server_nreqs(), 2);
	assert_non_null(strstr(S.reqs[0], "GET /thing?token=abc HTTP/1.1\r\n"));
	assert_null(strcasestr(S.reqs[0], "\r\nAuthorization:"));
	/* keep-alive: the retry went over the same connection */
	assert_int_equal(S.req_conn[0], S.req_conn[1]);
	assert_int_equal(S.accepts, 1);
}

static const struct step steps_503x3[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy" },
	{ ANSWER, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
	          "Content-Length: 61\r\n\r\n{\"error\":\"busy\",\"errorDescription\":\"try later\\nplease\",\"x\":1}" },
};

static void
test_retry_gives_up(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503x3, 3);
	s = spec_for("GET", "/a/b?secret=1", &g);
	s.error_text = civis_parse_error_text;   /* what civis_client_call installs */
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 503);
	assert_int_equal(g.attempts, 3);
	assert_string_equal(g.error, "test: GET /a/b: HTTP 503 Service Unavailable: "
	                    "busy: try later please (after 3 tries)");
}

static const struct step steps_two_400[] = {
	{ ANSWER, "HTTP/1.1 400 Bad Request\r\nContent-Length: 52\r\n\r\n"
	          "\r\n  {\"error\":\"bad\"} first\tline \x01\r\nsecond line\r\nthird" },
	{ ANSWER, "HTTP/1.1 422 Unprocessable Content\r\nContent-Length: 5\r\n\r\nabcde" },
};

static void
count_reader(const char *body, size_t len, char *buf, size_t buflen)
{
	snprintf(buf, buflen, "%zu bytes starting with %c", len, len > 0 ? body[0] : '-');
}

/* The transport knows no API: without a reader the text of an error answer
 * is its first non-blank line, cleaned; a reader in the spec (the client's
 * Civis parser, say) replaces that. */
static void
test_error_text_reader(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_two_400, 2);
	s = spec_for("POST", "/files/", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_EHTTP);
	assert_int_equal(g1.attempts, 1);
	assert_string_equal(g1.error, "test: POST /files/: HTTP 400 Bad Request: "
	                    "{\"error\":\"bad\"} first line");
	s = spec_for("POST", "/files/", &g2);
	s.error_text = count_reader;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_string_equal(g2.error, "test: POST /files/: HTTP 422 Unprocessable Content: "
	                    "5 bytes starting with a");
}

static const struct step steps_429[] = {
	{ ANSWER, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
};

static void
test_retry_after_respected(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start;

	(void)state;
	server_start(steps_429, 2);
	s = spec_for("POST", "/logs", &g);
	s.body = "{\"messages\":[]}";
	s.body_len = strlen(s.body);
	s.content_type = "application/json";
	start = civis_now_ns();
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_true(civis_now_ns() - start >= 1000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 204);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.body_len, 0);
	assert_string_equal(g.body, "");
	assert_non_null(strstr(S.reqs[1], "POST /logs HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 15\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\n{\"messages\":[]}"));
	assert_null(strcasestr(S.reqs[1], "\r\nExpect:"));
}

static const struct step steps_cut_200[] = {
	{ CUT, NULL },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" },
};

static void
test_cut_ambiguous_not_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	F.fast.retry_ambiguous = 0;
	s = spec_for("POST", "/files/", &g);
	s.body = "{}";
	s.body_len = 2;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ENET);
	assert_int_equal(g.http_code, 0);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.error, "test: POST /files/: Server returned nothing (no headers, no data)");
}

static void
test_cut_ambiguous_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	s = spec_for("POST", "/files/", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.body, "ok");
	/* a POST without a body still says Content-Length: 0 */
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 0\r\n"));
}

static void
test_cut_get_is_not_ambiguous(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	F.fast.retry_ambiguous = 0;
	s = spec_for("GET", "/runs/1", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
}

static const struct step steps_redirect[] = {
	{ ANSWER, "HTTP/1.1 302 Found\r\nLocation: https://Evil.Example.com/x?sig=SECRET\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_redirect_not_followed(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_redirect, 2);
	s = spec_for("GET", "/r?q=SECRET", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 302);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /r: unexpected redirect to evil.example.com (not followed)");
	assert_int_equal(server_nreqs(), 1);
}

static const struct step steps_huge_length[] = {
	{ ANSWER_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\nxxxx" },
};

static void
test_huge_content_length(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_huge_length, 1);
	s = spec_for("GET", "/big", &g);
	s.max_response = 1000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ETOOBIG);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /big: answer larger than 1000 bytes");
}

static const struct step steps_endless[] = {
	{ ENDLESS, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" },
};

static void
test_endless_body(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_endless, 1);
	s = spec_for("GET", "/endless", &g);
	s.max_response = 100000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ETOOBIG);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /endless: answer larger than 100000 bytes");
}

static const struct step steps_stall[] = {
	{ STALL, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab" },
};

static void
test_stall_cut_by_low_speed(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start = civis_now_ns();

	(void)state;
	server_start(steps_stall, 1);
	F.fast.max_attempts = 1;
	s = spec_for("POST", "/stall", &g);
	s.low_speed_time_s = 1;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 10000 * MS);
	print_message("low-speed cut after %.2f s\n", (double)(civis_now_ns() - start) / 1e9);
	/* the 2 bytes received keep the average at >= 1 B/s for ~2 s, then
	 * 1 s under the limit cuts it: seconds, not minutes */
	assert_true(civis_now_ns() - start < 6000 * MS);
	assert_int_equal(g.status, CIVIS_ETIMEOUT);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.error, "test: POST /stall: Timeout was reached");
}

static void
test_connection_refused(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	char url[64];
	int fd;

	(void)state;
	server_start(NULL, 0);
	/* a port with nothing listening */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x?y=z", ntohs(a.sin_port));
	close(fd);
	s = spec_for("POST", "/", &g);
	s.url = url;
	F.fast.max_attempts = 2;
	F.fast.retry_ambiguous = 0;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ENET);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_string_equal(g.error, "test: POST /x: Couldn't connect to server (after 2 tries)");
}

static const struct step steps_401[] = {
	{ ANSWER, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"api\"\r\n"
	          "Content-Length: 55\r\n\r\n{\"error\":\"unauthorized\",\"errorDescription\":\"bad key\"}\n\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_401_not_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char origin[64];

	(void)state;
	server_start(steps_401, 2);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	s = spec_for("GET", "/me", &g);
	s.error_text = civis_parse_error_text;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "sekrit:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EAUTH);
	assert_int_equal(g.http_code, 401);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /me: HTTP 401 Unauthorized: unauthorized: bad key");
	assert_null(strstr(g.error, "sekrit"));
	/* sent once, preemptively, as Basic "sekrit:" */
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic c2Vrcml0Og==\r\n"));
}

static const struct step steps_two_ok[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_auth_only_to_origin(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	civis_http_spec s;
	char origin[64], other[64], url[96];
	static const char *const smuggled[] = { "authorization: Bearer x", NULL };
	civis_http_req *req = (civis_http_req *)&g3;

	(void)state;
	server_start(steps_two_ok, 3);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/api/", S.port);
	snprintf(other, sizeof(other), "http://127.0.0.1:%d/", S.port + 1 == 65536 ? 1 : S.port + 1);

	/* under the origin: carries the key */
	s = spec_for("GET", "/api/runs", &g1);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic azE6\r\n"));

	/* a presigned upload: no credentials at all */
	s = spec_for("PUT", "/bucket/part?X-Amz-Signature=s", &g2);
	s.body = "0123456789";
	s.body_len = 10;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_null(strcasestr(S.reqs[1], "\r\nAuthorization:"));
	assert_non_null(strstr(S.reqs[1], "PUT /bucket/part?X-Amz-Signature=s HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 10\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\n0123456789"));
	assert_null(strcasestr(S.reqs[1], "\r\nExpect:"));
	assert_null(strcasestr(S.reqs[1], "\r\nTransfer-Encoding:"));

	/* and an Authorization header smuggled into a plain request is refused */
	s.headers = smuggled;
	assert_int_equal(civis_http_start(F.http, &s, &req), CIVIS_EUNSAFE);
	assert_null(req);

	/* refused: another port, outside the path, another scheme, user info */
	s = spec_for("GET", "/api/runs", &g3);
	snprintf(url, sizeof(url), "%sapi/x", other);
	s.url = url;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/other", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://u:p@127.0.0.1:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://127.0.0.1.evil.com:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	s.url = "not a url";
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	assert_int_equal(g3.called, 0);
	assert_int_equal(server_nreqs(), 2);

	/* default ports are normalized: :443 and nothing are the same origin;
	 * cancel before anything can go out */
	s.url = "https://api.example.invalid/v1/x";
	req = NULL;
	assert_int_equal(civis__http_start_auth(F.http, &s, "https://API.example.invalid:443/v1/",
	                                       "k1:", &req), CIVIS_OK);
	assert_non_null(req);
	civis_http_cancel(F.http, req);
	assert_int_equal(g3.called, 1);
	assert_int_equal(g3.status, CIVIS_ECANCELED);
	assert_string_equal(g3.error, "test: GET /v1/x: canceled");
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* A streamed body: at most `piece` bytes per read (3 by default, to make
 * curl come back for more), failing with `fail_rc` at offset `fail_at` when
 * that is set, or ending early there when fail_rc is CIVIS_OK. */
struct stream {
	const char *data;
	size_t len;
	int starts;                 /* reads at offset 0: one per try */
	int calls;
	size_t fail_at;             /* 0: never */
	int fail_rc;
	uint64_t max_off;
};

static int
stream_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	struct stream *st = ud;
	size_t k = n;

	st->calls++;
	if (off == 0)
		st->starts++;
	assert_true(off <= st->len);
	if (off > st->max_off)
		st->max_off = off;
	if (st->fail_at != 0 && off >= st->fail_at) {
		*got = 0;
		return st->fail_rc;
	}
	if (k > 3)
		k = 3;
	if (k > st->len - off)
		k = st->len - (size_t)off;
	memcpy(buf, st->data + off, k);
	*got = k;
	return CIVIS_OK;
}

static void
test_bad_specs(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	static const char *const folded[] = { "X-A: 1\nX-B: 2", NULL };
	static const char *many[70];
	static struct stream st = { .data = "abc", .len = 3 };
	int i;

	(void)state;
	server_start(NULL, 0);
	s = spec_for("get", "/", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.done = NULL;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("POST", "/", &g);
	s.body_len = 3;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.content_type = "text/plain\r\nX-Evil: 1";
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.headers = folded;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	/* more than 64 extra headers */
	for (i = 0; i < 69; i++)
		many[i] = "X-Many: 1";
	many[69] = NULL;
	s.headers = many;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	/* one body only; a size needs a reader */
	s = spec_for("POST", "/", &g);
	s.body = "abc";
	s.body_len = 3;
	s.body_read = stream_read;
	s.body_size = 3;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("POST", "/", &g);
	s.body_size = 3;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	assert_int_equal(st.calls, 0);
	assert_int_equal(g.called, 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

static void
test_free_cancels_in_flight(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_stall, 1);
	s = spec_for("GET", "/stall", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	/* and one waiting on its retry timer */
	s = spec_for("GET", "/", &g2);
	s.url = "http://127.0.0.1:1/";
	F.fast.base_ms = 60000;
	F.fast.cap_ms = 60000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	/* the first is stalled at the server, the second waits to retry */
	{
		uint64_t end = civis_now_ns() + 300 * MS;

		while (civis_now_ns() < end)
			assert_int_equal(civis_loop_run_once(F.loop, 50 * MS), CIVIS_OK);
	}
	assert_int_equal(server_nreqs(), 1);
	assert_int_equal(g1.called + g2.called, 0);
	assert_int_equal(civis_http_pending(F.http), 2);
	civis_http_free(F.http);
	F.http = NULL;
	assert_int_equal(g1.called, 1);
	assert_int_equal(g1.status, CIVIS_ECANCELED);
	assert_int_equal(g2.called, 1);
	assert_int_equal(g2.status, CIVIS_ECANCELED);
	assert_string_equal(g2.error, "test: GET /: canceled");
}

static const struct step steps_methods[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nETag: \"part-1\"\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
};

static void
test_streamed_body_and_methods(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	struct stream st = { .data = "part one of the file", .len = 20 };
	civis_http_spec s;

	(void)state;
	server_start(steps_methods, 4);
	/* a streamed PUT starts over on the retry, with an exact length */
	s = spec_for("PUT", "/bucket/key?partNumber=1&X-Amz-Signature=zz", &g1);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_int_equal(g1.attempts, 2);
	assert_int_equal(st.starts, 2);
	assert_string_equal(g1.etag, "\"part-1\"");
	assert_non_null(strstr(S.reqs[1], "PUT /bucket/key?partNumber=1&X-Amz-Signature=zz HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 20\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\npart one of the file"));
	assert_null(strcasestr(S.reqs[1], "\r\nTransfer-Encoding:"));

	s = spec_for("PATCH", "/runs/1", &g2);
	s.body = "{\"state\":\"running\"}";
	s.body_len = strlen(s.body);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[2], "PATCH /runs/1 HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[2], "\r\n\r\n{\"state\":\"running\"}"));

	s = spec_for("DELETE", "/files/9", &g3);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g3, 5000 * MS);
	assert_int_equal(g3.status, CIVIS_OK);
	assert_int_equal(g3.http_code, 204);
	assert_non_null(strstr(S.reqs[3], "DELETE /files/9 HTTP/1.1\r\n"));
}

static const struct step steps_503_then_ok[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" },
};

/* A streamed POST that gets a 503 is read again from offset 0 for the
 * retry, in short reads, and both tries carry the whole body with its
 * exact length. */
static void
test_streamed_post_retry_rereads(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "{\"messages\":[\"a\",\"b\"]}", .len = 22 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("POST", "/logs", &g);
	s.content_type = "application/json";
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 201);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_int_equal(st.starts, 2);
	/* 22 bytes, 3 at a time: 8 reads per try */
	assert_int_equal(st.calls, 16);
	assert_int_equal(server_nreqs(), 2);
	for (int i = 0; i < 2; i++) {
		assert_non_null(strstr(S.reqs[i], "POST /logs HTTP/1.1\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\nContent-Length: 22\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\nContent-Type: application/json\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\n\r\n{\"messages\":[\"a\",\"b\"]}"));
		assert_null(strcasestr(S.reqs[i], "\r\nTransfer-Encoding:"));
	}
}

/* The reader fails at byte 9: the try ends at once, is not retried, and
 * the error is one line naming where; the server never saw a whole request. */
static void
test_streamed_read_error(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "0123456789abcdefghij", .len = 20, .fail_at = 9, .fail_rc = CIVIS_ESYS };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("POST", "/logs?x=secret", &g);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ESYS);
	assert_int_equal(g.http_code, 0);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(st.starts, 1);
	assert_string_equal(g.error, "test: POST /logs: cannot read the request body at "
	                    "byte 9 of 20: system call failed");
	assert_null(strchr(g.error, '\n'));
	assert_int_equal(server_nreqs(), 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* The reader says "no more" before body_size: a clean failure too. */
static void
test_streamed_body_ends_early(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "0123456789abcdefghij", .len = 20, .fail_at = 12, .fail_rc = CIVIS_OK };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("PUT", "/bucket/part", &g);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ESYS);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: PUT /bucket/part: the request body ended at "
	                    "byte 12 of 20");
	assert_int_equal(server_nreqs(), 0);
}

static const struct step steps_ok_cut_ok[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ CUT, NULL },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" },
};

/* A reused connection dies before any answer: libcurl resends the body on
 * a fresh one by itself (one try for us), rewinding the reader to 0. The
 * server may have stored the first copy, so the POST counts as ambiguous. */
static void
test_streamed_silent_resend_is_ambiguous(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	struct stream st = { .data = "{\"messages\":[]}", .len = 15 };
	civis_http_spec s;

	(void)state;
	server_start(steps_ok_cut_ok, 3);
	s = spec_for("GET", "/warm", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	s = spec_for("POST", "/logs", &g2);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_string_equal(g2.body, "ok");
	assert_int_equal(server_nreqs(), 3);
	assert_non_null(strstr(S.reqs[2], "\r\n\r\n{\"messages\":[]}"));
	assert_int_equal(st.starts, 2);
	if (g2.attempts == 1) {
		assert_int_equal(g2.ambiguous, 1);   /* the silent resend */
	} else {
		/* a libcurl that does not resend by itself: our retry */
		assert_int_equal(g2.attempts, 2);
		assert_int_equal(g2.ambiguous, 1);
	}
}

/* ---------------------------------------------------------- proxies */

static const char *const proxy_vars[] = {
	"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
	"no_proxy", "NO_PROXY", NULL
};

/* A new civis_http that reads every proxy variable as `value` (NULL: unset). */
static void
http_with_proxy_env(const char *value)
{
	size_t i;

	civis_http_free(F.http);
	for (i = 0; proxy_vars[i] != NULL; i++) {
		if (value != NULL && strstr(proxy_vars[i], "no_") == NULL &&
		    strstr(proxy_vars[i], "NO_") == NULL)
			setenv(proxy_vars[i], value, 1);
		else
			unsetenv(proxy_vars[i]);
	}
	assert_int_equal(civis_http_new(&F.http, F.loop), CIVIS_OK);
}

/* Every proxy variable names a recording server (here the scripted one),
 * yet a plain-http loopback request with the key goes direct: the request
 * line is origin-form, never "GET http://..." to a proxy. */
static void
test_plain_http_ignores_proxy_env(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char origin[64], proxy[64], shown[160];

	(void)state;
	server_start(steps_two_ok, 3);
	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", S.port);
	http_with_proxy_env(proxy);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_proxy_for(F.http, origin, shown, sizeof(shown)), CIVIS_OK);
	assert_string_equal(shown, "");
	s = spec_for("GET", "/direct", &g);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k3y:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	http_with_proxy_env(NULL);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "GET /direct HTTP/1.1\r\n"));
	assert_null(strstr(S.reqs[0], "http://"));
	assert_null(strcasestr(S.reqs[0], "\r\nProxy-"));
}

static const struct step steps_connect_403[] = {
	{ ANSWER_CLOSE, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n" },
};

/* https goes through HTTPS_PROXY as a CONNECT tunnel: the proxy sees the
 * host and port and its own credentials, never the key (that stays inside
 * TLS); a failure names the proxy, without its credentials. */
static void
test_https_through_proxy_tunnel(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char proxy[64], want[160], shown[160];

	(void)state;
	server_start(steps_connect_403, 1);
	snprintf(proxy, sizeof(proxy), "http://alice:pw@127.0.0.1:%d", S.port);
	http_with_proxy_env(proxy);
	assert_int_equal(civis_http_proxy_for(F.http, "https://api.example.invalid/", shown,
	                                      sizeof(shown)), CIVIS_OK);
	snprintf(want, sizeof(want), "http://127.0.0.1:%d", S.port);
	assert_string_equal(shown, want);
	F.fast.max_attempts = 1;
	s = spec_for("GET", "/x", &g);
	s.url = "https://api.example.invalid/v1/x";
	assert_int_equal(civis__http_start_auth(F.http, &s, "https://api.example.invalid/v1/",
	                                       "sekrit:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	http_with_proxy_env(NULL);
	assert_int_equal(g.status, CIVIS_ENET);
	/* libcurl's words for a refused CONNECT vary by version; ours do not */
	assert_true(strncmp(g.error, "test: GET /v1/x: ", 17) == 0);
	snprintf(want, sizeof(want), " (through the proxy http://127.0.0.1:%d)", S.port);
	assert_true(strlen(g.error) > strlen(want));
	assert_string_equal(g.error + strlen(g.error) - strlen(want), want);
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "CONNECT api.example.invalid:443 HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n"));
	assert_null(strstr(S.reqs[0], "c2Vrcml0Og"));   /* base64 of "sekrit:" */
	assert_null(strstr(S.reqs[0], "sekrit"));
	assert_null(strstr(g.error, "alice"));
}

/* A request without the key (a presigned storage URL) must be https://,
 * or http:// to a loopback host, the endpoint's rule: otherwise it fails
 * before anything is sent, with one line saying why. */
static void
test_presigned_url_must_be_https(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;
	civis_http_req *req = NULL;

	(void)state;
	server_start(NULL, 0);
	s = spec_for("PUT", "/", &g1);
	s.url = "http://Storage.Example.invalid/bucket/key?X-Amz-Signature=zz";
	s.body = "data";
	s.body_len = 4;
	assert_int_equal(civis_http_start(F.http, &s, &req), CIVIS_OK);
	assert_non_null(req);
	assert_int_equal(g1.called, 0);             /* never from inside start */
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_EUNSAFE);
	assert_int_equal(g1.attempts, 0);
	assert_string_equal(g1.error, "test: PUT /bucket/key: refused to send to "
	                    "http://storage.example.invalid: a URL without the API key must use "
	                    "https:// (http:// only to a loopback host)");
	s = spec_for("POST", "/", &g2);
	s.url = "ftp://127.0.0.1/upload";
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_EUNSAFE);
	assert_non_null(strstr(g2.error, "refused to send to ftp://127.0.0.1: "));
	assert_int_equal(server_nreqs(), 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* ---------------------------------------------------------- the budget */

static const struct step steps_four_ok_rl[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 3\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 2\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 1\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 0\r\n"
	          "Content-Length: 0\r\n\r\n" },
};

static void
run_until_all(struct got *const *gs, size_t n, uint64_t max_ns)
{
	uint64_t end = civis_now_ns() + max_ns;
	size_t i, done;

	do {
		assert_int_equal(civis_loop_run_once(F.loop, 20 * MS), CIVIS_OK);
		for (i = 0, done = 0; i < n; i++)
			done += gs[i]->called;
	} while (done < n && civis_now_ns() < end);
	for (i = 0; i < n; i++)
		assert_int_equal(gs[i]->called, 1);
}

/* A budget of 2 tries per 1.2 s window (50% of a limit of 4): two NORMAL
 * calls go, the third waits for the window, a FINAL one started last goes
 * at once; the X-RateLimit headers are read from every answer. */
static void
test_budget_holds_normal_not_final(void **state)
{
	struct got g[4] = { { 0 } };
	struct got *gs[4] = { &g[0], &g[1], &g[2], &g[3] };
	civis_http_rate_stats st;
	civis_http_spec s;
	char origin[64];
	uint64_t t0;
	int i;

	(void)state;
	server_start(steps_four_ok_rl, 4);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_set_budget(F.http, 50, 4, 1200), CIVIS_OK);
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_NORMAL), 2);
	t0 = civis_now_ns();
	for (i = 0; i < 4; i++) {
		s = spec_for("GET", "/api/x", &g[i]);
		s.prio = i == 3 ? CIVIS_HTTP_PRIO_FINAL : CIVIS_HTTP_PRIO_NORMAL;
		assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	}
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_NORMAL), 0);
	civis_http_get_rate_stats(F.http, &st);
	assert_int_equal(st.waiting, 1);
	assert_int_equal(st.used, 3);
	run_until_all(gs, 4, 5000 * MS);
	for (i = 0; i < 4; i++)
		assert_int_equal(g[i].status, CIVIS_OK);
	/* the held one went once the window had moved on: about 1.2 s */
	assert_true(g[2].at - t0 >= 1000 * MS);
	assert_true(g[0].at - t0 < 900 * MS);
	assert_true(g[1].at - t0 < 900 * MS);
	assert_true(g[3].at - t0 < 900 * MS);   /* FINAL did not wait */
	civis_http_get_rate_stats(F.http, &st);
	assert_int_equal(st.tries, 4);
	assert_int_equal(st.held, 1);
	assert_int_equal(st.max_in_window, 3);
	assert_int_equal(st.limit, 4);
	assert_int_equal(st.limit_from_api, 1);
	assert_int_equal(st.remaining, 0);
	assert_int_equal(st.http_429, 0);
	/* a storage request (no key) never counts */
	assert_int_equal(server_nreqs(), 4);
}

static const struct step steps_429_then_ok[] = {
	{ ANSWER, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nX-RateLimit-Limit: 50\r\n"
	          "X-RateLimit-Remaining: 0\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

/* A 429 on one call holds every authenticated call until its Retry-After,
 * not only the one that got it; a storage request goes on. */
static void
test_429_pauses_every_authenticated_call(void **state)
{
	struct got ga = { 0 }, gb = { 0 }, gc = { 0 };
	struct got *gs[3] = { &ga, &gb, &gc };
	civis_http_rate_stats st;
	civis_http_spec s;
	char origin[64];
	uint64_t t429, end;

	(void)state;
	server_start(steps_429_then_ok, 4);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_set_budget(F.http, 100, 0, 0), CIVIS_OK);
	s = spec_for("POST", "/api/logs", &ga);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	end = civis_now_ns() + 5000 * MS;
	do {
		assert_int_equal(civis_loop_run_once(F.loop, 5 * MS), CIVIS_OK);
		civis_http_get_rate_stats(F.http, &st);
	} while (st.http_429 == 0 && civis_now_ns() < end);
	assert_int_equal(st.http_429, 1);
	t429 = civis_now_ns();
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_FINAL), 0);
	s = spec_for("GET", "/api/heartbeat", &gb);
	s.prio = CIVIS_HTTP_PRIO_FINAL;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	s = spec_for("PUT", "/bucket/part", &gc);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until_all(gs, 3, 5000 * MS);
	assert_int_equal(ga.status, CIVIS_OK);
	assert_int_equal(ga.attempts, 2);
	assert_int_equal(gb.status, CIVIS_OK);
	assert_int_equal(gc.status, CIVIS_OK);
	assert_true(gc.at - t429 < 700 * MS);    /* storage: not held */
	assert_true(gb.at - t429 >= 900 * MS);   /* held until Retry-After */
	civis_http_get_rate_stats(F.http, &st);
	assert_true(st.paused_ms >= 1000 && st.paused_ms <= 1100);
	assert_true(st.held >= 1);
	assert_int_equal(st.limit, 50);
	assert_int_equal(st.tries, 3);
}

#define N503 40
static struct step steps_503_forever[N503];

static void
test_deadline(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start, took;
	char want[128];
	int i;

	(void)state;
	for (i = 0; i < N503; i++) {
		steps_503_forever[i].act = ANSWER;
		steps_503_forever[i].bytes = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
	}
	server_start(steps_503_forever, N503);
	/* unlimited attempts, waits of 0..100 ms, 350 ms in all: it stops
	 * when the next wait would end past the deadline, not after it */
	F.fast.max_attempts = 0;
	F.fast.base_ms = 100;
	F.fast.cap_ms = 100;
	F.fast.deadline_ms = 350;
	s = spec_for("GET", "/x", &g);
	start = civis_now_ns();
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	took = civis_now_ns() - start;
	print_message("deadline 350 ms: gave up after %.0f ms, %u tries\n", (double)took / 1e6,
	              g.attempts);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 503);
	assert_true(g.attempts >= 2 && g.attempts < N503);
	assert_true(took < 450 * MS);
	snprintf(want, sizeof(want), "test: GET /x: HTTP 503 Service Unavailable (after %u tries)",
	         g.attempts);
	assert_string_equal(g.error, want);
}

#define MANY 500
static struct step steps_many[MANY];

static void
test_keepalive_throughput(void **state)
{
	static struct got g[MANY];
	civis_http_spec s;
	uint64_t start, end;
	int i;

	(void)state;
	memset(g, 0, sizeof(g));
	for (i = 0; i < MANY; i++) {
		steps_many[i].act = ANSWER;
		steps_many[i].bytes = "HTTP/1.1 204 No Content\r\n\r\n";
	}
	server_start(steps_many, MANY);
	start = civis_now_ns();
	/* one after the other, like log batches: each reuses the connection */
	for (i = 0; i < MANY; i++) {
		s = spec_for("POST", "/logs", &g[i]);
		s.body = "{\"messages\":[{\"message\":\"x\",\"level\":\"info\"}]}";
		s.body_len = strlen(s.body);
		assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
		run_until(&g[i], 5000 * MS);
		assert_int_equal(g[i].status, CIVIS_OK);
	}
	end = civis_now_ns();
	print_message("http: %d sequential POSTs in %.1f ms (%.0f us each), %d connection(s)\n",
	              MANY, (double)(end - start) / 1e6, (double)(end - start) / 1e3 / MANY,
	              S.accepts);
	assert_int_equal(server_nreqs(), MAX_REQS);   /* the recorder keeps the first few */
	assert_int_equal(S.accepts, 1);
}

/* ------------------------------------------------------ client over HTTP */

static const char *
cfg_lookup(const char *name, void *ud)
{
	const char *const *kv = ud;

	for (; kv[0] != NULL; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

static const struct step steps_client[] = {
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nnot authorized" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_client_call_headers_and_401_latch(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	civis_client_config cfg;
	civis_client *c = NULL;
	civis_http_spec s;
	char endpoint[64], err[256], path[128];
	civis_http_req *req = NULL;

	(void)state;
	server_start(steps_client, 3);
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", S.port);
	{
		const char *kv[] = { "CIVIS_API_KEY", "abcKEY123", "CIVIS_JOB_ID", "17",
		                     "CIVIS_RUN_ID", "42", "CIVIS_API_ENDPOINT", endpoint, NULL };

		assert_int_equal(civis_client_config_parse(&cfg, cfg_lookup, kv, err, sizeof(err)),
		                 CIVIS_OK);
	}
	assert_int_equal(civis_client_new(&c, F.loop, F.http, &cfg), CIVIS_OK);
	civis_client_config_dispose(&cfg);
	assert_ptr_equal(civis_client_http(c), F.http);
	assert_int_equal(civis_client_run_path(c, "/logs", path, sizeof(path)), CIVIS_OK);
	assert_string_equal(path, "scripts/containers/17/runs/42/logs");

	memset(&s, 0, sizeof(s));
	s.method = "POST";
	s.url = path;
	s.what = "log batch";
	s.body = "{\"messages\":[]}";
	s.body_len = strlen(s.body);
	s.retry = &F.fast;
	s.done = on_done;
	s.done_ud = &g1;
	assert_int_equal(civis_client_call(c, &s, &req), CIVIS_OK);
	assert_non_null(req);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[0], "POST /scripts/containers/17/runs/42/logs HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic YWJjS0VZMTIzOg==\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nUser-Agent: civis-agent/"));
	assert_non_null(strstr(S.reqs[0], "\r\nX-Civis-Job-ID: 17\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nX-Civis-Run-ID: 42\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nAccept: application/json\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nContent-Length: 15\r\n"));

	/* a GET has no Content-Type; a 401 latches */
	assert_int_equal(civis_client_run_path(c, "", path, sizeof(path)), CIVIS_OK);
	s.method = "GET";
	s.url = path;
	s.what = "run state";
	s.body = NULL;
	s.body_len = 0;
	s.done_ud = &g2;
	assert_int_equal(civis_client_auth_rejected(c), 0);
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_EAUTH);
	assert_string_equal(g2.error, "run state: GET /scripts/containers/17/runs/42: "
	                    "HTTP 401 Unauthorized: not authorized");
	assert_null(strcasestr(S.reqs[1], "\r\nContent-Type:"));
	assert_int_equal(civis_client_auth_rejected(c), 1);

	/* after it: refused at once, nothing sent, done not called */
	s.done_ud = &g3;
	assert_int_equal(civis_client_call(c, &s, &req), CIVIS_EAUTH);
	assert_null(req);
	assert_int_equal(g3.called, 0);
	assert_int_equal(server_nreqs(), 2);
	civis_client_free(c);
}

static void
test_client_refuses_other_urls(void **state)
{
	struct got g = { 0 };
	civis_client_config cfg;
	civis_client *c = NULL;
	civis_http_spec s;
	char err[256];
	const char *kv[] = { "CIVIS_API_KEY", "k", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2",
	                     "CIVIS_API_ENDPOINT", "https://api.example.invalid/", NULL };

	(void)state;
	server_start(steps_stall, 1);
	assert_int_equal(civis_client_config_parse(&cfg, cfg_lookup, (void *)kv, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(civis_client_new(&c, F.loop, F.http, &cfg), CIVIS_OK);
	assert_string_equal(civis_client_get_config(c)->endpoint, "https://api.example.invalid/");
	memset(&s, 0, sizeof(s));
	s.method = "GET";
	s.done = on_done;
	s.done_ud = &g;
	s.url = "https://evil.example.com/x";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	s.url = "//evil.example.com/x";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	s.url = "files/\r\nX: y";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	/* a call in flight is canceled by civis_client_free */
	s.url = "/files/1";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_OK);
	civis_client_free(c);
	assert_int_equal(g.called, 1);
	assert_int_equal(g.status, CIVIS_ECANCELED);
	assert_string_equal(g.error, "request: GET /files/1: canceled");
	civis_client_config_dispose(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_default),
		cmocka_unit_test(test_backoff_bounds),
		cmocka_unit_test(test_backoff_retry_after),
		cmocka_unit_test(test_retry_after_parse),
		cmocka_unit_test(test_status_retryable),
		cmocka_unit_test_setup_teardown(test_retry_503_then_200, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_gives_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_text_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_after_respected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_ambiguous_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_ambiguous_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_get_is_not_ambiguous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirect_not_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_content_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_endless_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall_cut_by_low_speed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_401_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_only_to_origin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_specs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_cancels_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_body_and_methods, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_post_retry_rereads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_holds_normal_not_final, setup, teardown),
		cmocka_unit_test_setup_teardown(test_429_pauses_every_authenticated_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plain_http_ignores_proxy_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_https_through_proxy_tunnel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presigned_url_must_be_https, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_read_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_body_ends_early, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_silent_resend_is_ambiguous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive_throughput, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_call_headers_and_401_latch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_refuses_other_urls, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
