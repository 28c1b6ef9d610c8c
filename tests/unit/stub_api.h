/* stub_api.h: a stub Civis API for test_run.c: a thread on 127.0.0.1 that
 * answers each request by (method, path) from a route table (404 for the
 * rest) and records every request it saw (method, path, body). HTTP/1.1
 * keep-alive, Content-Length bodies only. */
#ifndef TEST_STUB_API_H
#define TEST_STUB_API_H

#include <arpa/inet.h>
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

/* ------------------------------------------------------------ the stub */

#define MAX_ROUTES 8
#define MAX_SEEN   256
#define MAX_CONNS  16

struct route {
	const char *method, *path;
	int status;
	const char *body;
};

struct seen {
	char method[8];
	char path[128];
	char *body;
};

struct stub {
	int lfd, port;
	pthread_t th;
	atomic_int stop;
	pthread_mutex_t mu;
	struct route routes[MAX_ROUTES];
	int nroutes;
	struct seen seen[MAX_SEEN];
	int nseen;
};

struct sconn {
	int fd;
	char *buf;
	size_t len, cap;
};

static const struct route *
find_route(struct stub *s, const char *method, const char *path)
{
	for (int i = 0; i < s->nroutes; i++)
		if (strcmp(s->routes[i].method, method) == 0 && strcmp(s->routes[i].path, path) == 0)
			return &s->routes[i];
	return NULL;
}

/* Answer every complete request in c->buf; 0 while the connection lives. */
static int
serve_buf(struct stub *s, struct sconn *c)
{
	for (;;) {
		char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), method[8], path[128], out[4096];
		const char *cl;
		size_t head, blen = 0, total;
		const struct route *rt;
		int n;

		if (!end)
			return 0;
		head = (size_t)(end - c->buf) + 4;
		*end = '\0';
		cl = strcasestr(c->buf, "\r\nContent-Length:");
		if (cl)
			blen = strtoul(cl + 17, NULL, 10);
		*end = '\r';
		total = head + blen;
		if (c->len < total)
			return 0;
		if (sscanf(c->buf, "%7s %127s", method, path) != 2)
			return -1;
		pthread_mutex_lock(&s->mu);
		if (s->nseen < MAX_SEEN) {
			struct seen *sn = &s->seen[s->nseen++];

			snprintf(sn->method, sizeof(sn->method), "%s", method);
			snprintf(sn->path, sizeof(sn->path), "%s", path);
			sn->body = calloc(1, blen + 1);
			memcpy(sn->body, c->buf + head, blen);
		}
		rt = find_route(s, method, path);
		pthread_mutex_unlock(&s->mu);
		n = snprintf(out, sizeof(out), "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
		             "Content-Length: %zu\r\n\r\n%s", rt ? rt->status : 404,
		             strlen(rt && rt->body ? rt->body : "{}"),
		             rt && rt->body ? rt->body : "{}");
		if (write(c->fd, out, (size_t)n) != n)
			return -1;
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
		c->buf[c->len] = '\0';
	}
}

static void *
stub_main(void *ud)
{
	struct stub *s = ud;
	struct sconn conns[MAX_CONNS];
	int nconns = 0;

	while (!atomic_load(&s->stop)) {
		struct pollfd p[MAX_CONNS + 1];

		p[0].fd = s->lfd;
		p[0].events = POLLIN;
		for (int i = 0; i < nconns; i++) {
			p[i + 1].fd = conns[i].fd;
			p[i + 1].events = POLLIN;
		}
		int polled;

		if (poll(p, (nfds_t)nconns + 1, 20) <= 0)
			continue;
		polled = nconns;        /* the pollfds of the connections polled */
		if ((p[0].revents & POLLIN) && nconns < MAX_CONNS) {
			int fd = accept(s->lfd, NULL, NULL);

			if (fd >= 0) {
				conns[nconns].fd = fd;
				conns[nconns].cap = 4u << 20;
				conns[nconns].buf = malloc(conns[nconns].cap);
				conns[nconns].len = 0;
				nconns++;
			}
		}
		for (int i = 0; i < polled; i++) {
			struct sconn *c = &conns[i];
			ssize_t n;

			if (!(p[i + 1].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(c->fd, c->buf + c->len, c->cap - 1 - c->len);
			if (n > 0)
				c->buf[c->len + (size_t)n] = '\0';   /* sscanf and strcasestr stop there */
			if (n <= 0 || (c->len += (size_t)n, serve_buf(s, c) != 0)) {
				close(c->fd);
				free(c->buf);
				conns[i] = conns[--nconns];
				i = -1;     /* the pollfds no longer match: next turn */
				break;
			}
		}
	}
	for (int i = 0; i < nconns; i++) {
		close(conns[i].fd);
		free(conns[i].buf);
	}
	return NULL;
}

static void
stub_route(struct stub *s, const char *method, const char *path, int status, const char *body)
{
	pthread_mutex_lock(&s->mu);
	s->routes[s->nroutes++] = (struct route){ method, path, status, body };
	pthread_mutex_unlock(&s->mu);
}

static int
stub_count(struct stub *s, const char *method, const char *path, const char *body_has)
{
	int n = 0;

	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < s->nseen; i++)
		if (strcmp(s->seen[i].method, method) == 0 && strcmp(s->seen[i].path, path) == 0 &&
		    (!body_has || strstr(s->seen[i].body, body_has)))
			n++;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* Listen on a free port of 127.0.0.1 (s->port) and serve in a thread; 0 or -1. */
static int
stub_start(struct stub *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(s->lfd, 16) != 0 || getsockname(s->lfd, (struct sockaddr *)&a, &alen) != 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->th, NULL, stub_main, s) == 0 ? 0 : -1;
}

static void
stub_stop(struct stub *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->th, NULL);
	close(s->lfd);
	for (int i = 0; i < s->nseen; i++)
		free(s->seen[i].body);
	pthread_mutex_destroy(&s->mu);
}

#endif
