/* http_testserver.h: the scripted HTTP server on 127.0.0.1 (a thread) and
 * the civis_http fixture shared by test_http.c, test_http_body.c and
 * test_http_auth.c. Each step says what the server answers to the next
 * request; every request it saw is kept (S.reqs) for the tests to check. */
#ifndef CIVIS_TEST_HTTP_SERVER_H
#define CIVIS_TEST_HTTP_SERVER_H

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
#define TS_UNUSED __attribute__((unused))

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

static TS_UNUSED void
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

static TS_UNUSED void
conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->endless = 0;
	c->stalled = 0;
}

/* Take every complete request from c->buf and act on it. */
static TS_UNUSED void
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

static TS_UNUSED void *
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

static TS_UNUSED void
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

static TS_UNUSED void
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

static TS_UNUSED size_t
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

static TS_UNUSED void
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

static TS_UNUSED int
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

static TS_UNUSED int
teardown(void **state)
{
	(void)state;
	civis_http_free(F.http);
	civis_loop_free(F.loop);
	server_stop();
	return 0;
}

static TS_UNUSED void
run_until(const struct got *g, uint64_t max_ns)
{
	uint64_t end = civis_now_ns() + max_ns;

	while (!g->called && civis_now_ns() < end)
		assert_int_equal(civis_loop_run_once(F.loop, 100 * MS), CIVIS_OK);
	assert_int_equal(g->called, 1);
}

static TS_UNUSED civis_http_spec
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

static const struct step steps_stall[] TS_UNUSED = {
	{ STALL, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab" },
};

#endif
