/* jobapi.c: the job API socket (see jobapi.h for the promises).
 *
 * Each client is a slot with a bounded input buffer and a one-reply output
 * buffer. A slot reads until it has a line, hands the request to the
 * handler, and reads nothing more until the reply is written: a client
 * gets one call at a time, and its pipelined bytes wait in its buffer. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "civis/civis.h"
#include "jobapi.h"

#define IN_FIRST   4096u
#define SWEEP_NS   (1000ULL * 1000000ULL)

struct client {
	int fd;                     /* -1: free slot */
	char *in;
	size_t inlen, incap;
	char out[AGENT_JOBAPI_MAX_REPLY];
	size_t outlen, outoff;
	uint64_t call_id;           /* the call awaiting an answer, 0 none */
	uint64_t last_ns;           /* last progress either way */
	uint64_t line_ns;           /* when the unfinished request began, 0 none */
	int eof;                    /* the client shut its side */
	int in_serve;               /* serve() is running for this slot */
	int closing;                /* close once the reply is out */
};

struct agent_jobapi {
	civis_loop *loop;
	int lfd;
	int listening;              /* lfd watched by the loop */
	int abstract;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];
	char dir[PATH_MAX];
	struct client cl[AGENT_JOBAPI_MAX_CLIENTS];
	uint64_t next_call;
	agent_jobapi_call_fn fn;
	void *ud;
	uint64_t idle_ns;
	civis_timer_id sweep;
	agent_jobapi_stats st;
};

static void on_client(civis_loop *loop, int fd, int revents, void *ud);
static void on_sweep(civis_loop *loop, void *ud);
static void serve(agent_jobapi *j, struct client *c);

static unsigned
nclients(const agent_jobapi *j)
{
	unsigned n = 0;

	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		n += j->cl[i].fd >= 0;
	return n;
}

static void
drop(agent_jobapi *j, struct client *c)
{
	if (c->fd < 0 || j->loop == NULL)
		return;
	civis_loop_del_io(j->loop, c->fd);
	close(c->fd);
	free(c->in);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	/* A slot is free again: take the connections waiting in the backlog. */
	if (j->lfd >= 0 && !j->listening && civis_loop_set_io(j->loop, j->lfd, POLLIN) == CIVIS_OK)
		j->listening = 1;
}

/* Watch what the slot waits for: its reply going out, or its next request. */
static void
rewatch(agent_jobapi *j, struct client *c)
{
	int ev = 0;

	if (c->outoff < c->outlen)
		ev = POLLOUT;
	else if (c->call_id == 0 && !c->eof && !c->closing)
		ev = POLLIN;
	civis_loop_set_io(j->loop, c->fd, ev);
}

static void
flush_out(agent_jobapi *j, struct client *c)
{
	while (c->outoff < c->outlen) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			c->outoff += (size_t)n;
			c->last_ns = civis_now_ns();
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			rewatch(j, c);
			return;
		}
		drop(j, c);                 /* the client left: its answer has no reader */
		return;
	}
	c->outlen = c->outoff = 0;
	if (c->closing || (c->eof && c->inlen == 0)) {
		drop(j, c);
		return;
	}
	serve(j, c);
}

static void
reply(agent_jobapi *j, struct client *c, int status, int64_t id, const char *text)
{
	c->outlen = agent_jobapi_format_reply(c->out, sizeof(c->out), status, id, text);
	c->outoff = 0;
	flush_out(j, c);
}

/* Take one request out of the input buffer and hand it out. */
static int
serve_one(agent_jobapi *j, struct client *c)
{
	char err[256];
	agent_jobapi_req req;
	char *nl;
	size_t linelen, used;
	int rc;

	nl = c->inlen ? memchr(c->in, '\n', c->inlen) : NULL;
	if (nl == NULL && !(c->eof && c->inlen > 0)) {
		if (c->inlen > AGENT_JOBAPI_MAX_REQUEST) {
			j->st.bad++;
			c->closing = 1;
			snprintf(err, sizeof(err), "request over %u bytes", AGENT_JOBAPI_MAX_REQUEST);
			reply(j, c, CIVIS_ETOOBIG, 0, err);
		} else if (c->eof) {
			drop(j, c);
		} else {
			rewatch(j, c);
		}
		return 0;
	}
	linelen = nl ? (size_t)(nl - c->in) : c->inlen;
	used = nl ? linelen + 1 : linelen;
	if (linelen > 0 && c->in[linelen - 1] == '\r')
		linelen--;
	rc = agent_jobapi_parse_request(c->in, linelen, &req, err, sizeof(err));
	memmove(c->in, c->in + used, c->inlen - used);
	c->inlen -= used;
	c->line_ns = c->inlen ? civis_now_ns() : 0;
	if (rc != CIVIS_OK) {
		j->st.bad++;
		reply(j, c, rc, 0, err);
		return 1;
	}
	j->st.requests++;
	c->call_id = ++j->next_call;
	rewatch(j, c);
	j->fn(j->ud, c->call_id, &req);    /* may answer at once */
	agent_jobapi_req_dispose(&req);
	return 1;
}

/* Serve the client's requests while it has complete ones and nothing
 * outstanding. A loop, not recursion: an answer given inside the handler
 * comes back here through flush_out(), which must not nest. */
static void
serve(agent_jobapi *j, struct client *c)
{
	if (c->fd < 0 || c->in_serve)
		return;
	c->in_serve = 1;
	while (c->fd >= 0 && c->call_id == 0 && c->outlen == 0)
		if (!serve_one(j, c))
			break;
	if (c->fd >= 0)
		c->in_serve = 0;
}

static void
read_in(agent_jobapi *j, struct client *c)
{
	for (;;) {
		ssize_t n;

		if (c->inlen == c->incap) {
			size_t cap = c->incap ? c->incap * 2 : IN_FIRST;
			char *p;

			if (c->incap > AGENT_JOBAPI_MAX_REQUEST)
				break;              /* full: serve() refuses it */
			if (cap > AGENT_JOBAPI_MAX_REQUEST + 1)
				cap = AGENT_JOBAPI_MAX_REQUEST + 1;
			p = realloc(c->in, cap);
			if (p == NULL) {
				drop(j, c);
				return;
			}
			c->in = p;
			c->incap = cap;
		}
		n = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
		if (n > 0) {
			if (c->inlen == 0)
				c->line_ns = civis_now_ns();
			c->inlen += (size_t)n;
			c->last_ns = civis_now_ns();
			if (memchr(c->in + c->inlen - (size_t)n, '\n', (size_t)n) != NULL)
				break;
			continue;
		}
		if (n == 0) {
			c->eof = 1;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		drop(j, c);
		return;
	}
	serve(j, c);
}

static void
on_client(civis_loop *loop, int fd, int revents, void *ud)
{
	agent_jobapi *j = ud;
	struct client *c = NULL;

	(void)loop;
	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		if (j->cl[i].fd == fd)
			c = &j->cl[i];
	if (c == NULL)
		return;
	if (c->outoff < c->outlen) {
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			flush_out(j, c);
		return;
	}
	if (revents & (POLLIN | POLLHUP | POLLERR))
		read_in(j, c);
}

static int
peer_allowed(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof(cr))
		return 0;
	return cr.uid == geteuid() || cr.uid == 0;
}

static void
on_listen(civis_loop *loop, int fd, int revents, void *ud)
{
	agent_jobapi *j = ud;

	(void)revents;
	for (;;) {
		struct client *c = NULL;
		int cfd;

		for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS && c == NULL; i++)
			if (j->cl[i].fd < 0)
				c = &j->cl[i];
		if (c == NULL) {
			/* All slots busy: leave the rest in the backlog for now. */
			civis_loop_set_io(loop, fd, 0);
			j->listening = 0;
			return;
		}
		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;                 /* EAGAIN, or out of descriptors: retry on the next event */
		}
		if (!peer_allowed(cfd)) {
			static const char no[] =
			    "{\"ok\":false,\"status\":-13,\"error\":\"refused: not the agent's user\"}\n";

			char sink[512];

			j->st.refused++;
			/* Read what it sent first: closing with unread bytes would
			 * reset the connection under the refusal. */
			while (recv(cfd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
				;
			(void)!send(cfd, no, sizeof(no) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			shutdown(cfd, SHUT_WR);
			close(cfd);
			continue;
		}
		if (civis_loop_add_io(loop, cfd, POLLIN, on_client, j) != CIVIS_OK) {
			close(cfd);
			return;
		}
		memset(c, 0, sizeof(*c));
		c->fd = cfd;
		c->last_ns = civis_now_ns();
		j->st.accepted++;
		/* Idle clients are swept once a second while there are any. */
		if (j->sweep == 0)
			civis_loop_add_timer(loop, c->last_ns + SWEEP_NS, on_sweep, j, &j->sweep);
	}
}

static void
on_sweep(civis_loop *loop, void *ud)
{
	agent_jobapi *j = ud;
	uint64_t now = civis_now_ns();

	j->sweep = 0;
	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++) {
		struct client *c = &j->cl[i];

		/* A call in progress is the agent's time, not the client's. */
		if (c->fd < 0 || (c->call_id != 0 && c->outlen == 0))
			continue;
		/* Idle, or trickling one request for longer than a whole idle
		 * period (a slow sender must not hold a slot for ever). */
		if (now - c->last_ns > j->idle_ns ||
		    (c->line_ns != 0 && c->call_id == 0 && now - c->line_ns > j->idle_ns)) {
			j->st.dropped++;
			drop(j, c);
		}
	}
	if (nclients(j) > 0)
		civis_loop_add_timer(loop, now + SWEEP_NS, on_sweep, j, &j->sweep);
}

static int
listen_path(agent_jobapi *j, const char *base, int fd)
{
	struct sockaddr_un sa;
	mode_t old;
	int n, rc;

	n = snprintf(j->dir, sizeof(j->dir), "%s/civis-agent.XXXXXX", base);
	if (n < 0 || (size_t)n >= sizeof(j->dir) || mkdtemp(j->dir) == NULL) {
		j->dir[0] = '\0';
		return -1;
	}
	n = snprintf(j->path, sizeof(j->path), "%s/sock", j->dir);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		rmdir(j->dir);
		j->dir[0] = '\0';
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, j->path, (size_t)n);
	old = umask(077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc != 0 || chmod(j->path, 0600) != 0) {
		if (rc == 0)
			unlink(j->path);
		rmdir(j->dir);
		j->dir[0] = '\0';
		return -1;
	}
	return 0;
}

/* No writable directory: a name in the abstract namespace (SO_PEERCRED
 * still keeps other users out). */
static int
listen_abstract(agent_jobapi *j, int fd)
{
	struct sockaddr_un sa;
	uint64_t r = civis_now_ns() ^ ((uint64_t)getpid() << 32);
	int n;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	n = snprintf(j->path, sizeof(j->path), "@civis-agent.%ld.%016llx", (long)getpid(),
	             (unsigned long long)r);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path + 1, j->path + 1, (size_t)n - 1);
	if (bind(fd, (struct sockaddr *)&sa,
	         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n)) != 0)
		return -1;
	j->abstract = 1;
	return 0;
}

int
agent_jobapi_new(agent_jobapi **out, const char *dir, agent_jobapi_call_fn fn, void *ud,
                 char *err, size_t errlen)
{
	agent_jobapi *j;
	const char *base = dir;
	int rc;

	*out = NULL;
	if (base == NULL || *base == '\0')
		base = getenv("TMPDIR");
	if (base == NULL || *base == '\0')
		base = "/tmp";
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		snprintf(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	j->fn = fn;
	j->ud = ud;
	j->idle_ns = AGENT_JOBAPI_IDLE_NS;
	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		j->cl[i].fd = -1;
	j->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (j->lfd < 0 ||
	    (listen_path(j, base, j->lfd) != 0 && listen_abstract(j, j->lfd) != 0) ||
	    listen(j->lfd, 16) != 0) {
		snprintf(err, errlen, "job API socket under %s: %s", base, strerror(errno));
		rc = CIVIS_ESYS;
		goto fail;
	}
	*out = j;
	return CIVIS_OK;
fail:
	agent_jobapi_free(j);
	return rc;
}

int
agent_jobapi_attach(agent_jobapi *j, civis_loop *loop)
{
	int rc;

	if (j->loop != NULL || j->lfd < 0)
		return CIVIS_EINVAL;
	rc = civis_loop_add_io(loop, j->lfd, POLLIN, on_listen, j);
	if (rc != CIVIS_OK)
		return rc;
	j->loop = loop;
	j->listening = 1;
	return CIVIS_OK;
}

const char *
agent_jobapi_path(const agent_jobapi *j)
{
	return j->path;
}

void
agent_jobapi_answer(agent_jobapi *j, uint64_t call_id, int status, int64_t id, const char *text)
{
	if (j == NULL || call_id == 0)
		return;
	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++) {
		struct client *c = &j->cl[i];

		if (c->fd >= 0 && c->call_id == call_id) {
			c->call_id = 0;
			c->last_ns = civis_now_ns();
			reply(j, c, status, id, text);
			return;
		}
	}
}

unsigned
agent_jobapi_pending(const agent_jobapi *j)
{
	unsigned n = 0;

	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		n += j->cl[i].fd >= 0 && j->cl[i].call_id != 0;
	return n;
}

void
agent_jobapi_stop_listening(agent_jobapi *j)
{
	if (j == NULL || j->lfd < 0)
		return;
	if (j->loop != NULL)
		civis_loop_del_io(j->loop, j->lfd);
	close(j->lfd);
	j->lfd = -1;
	j->listening = 0;
	if (!j->abstract && j->dir[0] != '\0') {
		unlink(j->path);
		rmdir(j->dir);
		j->dir[0] = '\0';
	}
}

void
agent_jobapi_stats_get(const agent_jobapi *j, agent_jobapi_stats *st)
{
	*st = j->st;
}

void
agent_jobapi_free(agent_jobapi *j)
{
	if (j == NULL)
		return;
	for (size_t i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		drop(j, &j->cl[i]);
	if (j->lfd >= 0 && j->loop != NULL)
		civis_loop_del_io(j->loop, j->lfd);
	j->listening = 1;           /* keep drop() from re-arming a closed fd */
	if (j->lfd >= 0) {
		close(j->lfd);
		j->lfd = -1;
	}
	if (!j->abstract && j->dir[0] != '\0') {
		unlink(j->path);
		rmdir(j->dir);
	}
	if (j->sweep && j->loop != NULL)
		civis_loop_cancel_timer(j->loop, j->sweep);
	free(j);
}

#ifdef CIVIS_UNITTEST
void
agent__jobapi_set_idle_ns(agent_jobapi *j, uint64_t ns)
{
	j->idle_ns = ns;
}
#endif
