/* tee.c: the byte-exact copy of the command's output. See logstream_int.h.
 *
 * The copy never blocks the agent: its fd is non-blocking and waited on by
 * the loop like any other. When the reader does not take the bytes, the
 * rest of the read is kept and the stream's pipe is paused, so the command
 * blocks on its own write, as it would under cat, while heartbeats, log
 * delivery, cancel polls and uploads go on. One read's worth is all that is
 * ever kept (plus what the drain at the end reads without waiting).
 *
 * Non-blocking without disturbing others: the agent's stdout may be shared
 * with other processes (a shell pipeline, the container runtime), and
 * O_NONBLOCK lives on the shared file description. So:
 * - a pipe or FIFO is opened again through /proc/self/fd, which gives the
 *   agent a description of its own for the same pipe, made non-blocking;
 * - failing that (no /proc), and for a socket, O_NONBLOCK is set on the
 *   shared description and the flags are restored when the agent is done;
 * - a regular file, a terminal or /dev/null stays as it is (a file never
 *   waits on a reader; a terminal only on the user's Ctrl-S). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logstream_int.h"

#define TEE_KEEP_MAX (64u << 20)   /* bytes kept for a stalled reader, at most */

/* A description of our own for the pipe behind fd, non-blocking; -1 if
 * that cannot be had. */
static int
reopen_pipe(int fd, const struct stat *st)
{
	char path[64];
	struct stat st2;
	int nfd;

	if (snprintf(path, sizeof(path), "/proc/self/fd/%d", fd) >= (int)sizeof(path))
		return -1;
	nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (nfd < 0)
		return -1;
	if (fstat(nfd, &st2) != 0 || st2.st_dev != st->st_dev || st2.st_ino != st->st_ino) {
		close(nfd);
		return -1;
	}
	return nfd;
}

void
agent_tee_setup(struct stream *s, int fd)
{
	struct stat st;
	int fl;

	s->tee_fd = fd;
	s->tee_own = 0;
	s->tee_saved_fl = -1;
	if (fd < 0 || !s->ls->o.tee || fstat(fd, &st) != 0)
		return;
	if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
		return;
	if (S_ISFIFO(st.st_mode)) {
		int nfd = reopen_pipe(fd, &st);

		if (nfd >= 0) {
			s->tee_fd = nfd;
			s->tee_own = 1;
			return;
		}
	}
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0)
		s->tee_saved_fl = fl;
}

int
agent_tee_stalled(const struct stream *s)
{
	return s->tee_len > s->tee_off && !s->ls->tee_broken[s->id];
}

/* Write from buf until done or the reader is full; bytes written, or
 * (size_t)-1 once the copy is broken (reader gone, write error). */
static size_t
tee_try(struct stream *s, const char *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(s->tee_fd, buf + done, len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			break;
		else {
			s->ls->tee_broken[s->id] = 1;
			s->tee_off = s->tee_len = 0;
			return (size_t)-1;
		}
	}
	return done;
}

static void on_tee_writable(civis_loop *loop, int fd, int revents, void *ud);

/* Keep bytes the reader has not taken; pause the pipe until it does. */
static void
tee_keep(struct stream *s, const char *buf, size_t len)
{
	agent_logstream *ls = s->ls;

	if (s->tee_off > 0 && s->tee_off == s->tee_len)
		s->tee_off = s->tee_len = 0;
	if (s->tee_len + len > s->tee_cap) {
		size_t cap = s->tee_cap ? s->tee_cap : READ_BUF;
		char *nb;

		while (cap < s->tee_len + len && cap < TEE_KEEP_MAX)
			cap *= 2;
		nb = cap >= s->tee_len + len ? realloc(s->tee_buf, cap) : NULL;
		if (!nb) {
			fprintf(stderr, "civis-agent: the copy of the command's %s lost %zu bytes: "
			        "its reader took none of the last %zu bytes\n",
			        s->id == AGENT_STDOUT ? "stdout" : "stderr", len, s->tee_len - s->tee_off);
			return;
		}
		s->tee_buf = nb;
		s->tee_cap = cap;
	}
	memcpy(s->tee_buf + s->tee_len, buf, len);
	s->tee_len += len;
	if (!s->tee_watch && civis_loop_add_io(ls->loop, s->tee_fd, POLLOUT, on_tee_writable, s) == CIVIS_OK)
		s->tee_watch = 1;
	if (s->fd >= 0)
		(void)civis_loop_set_io(ls->loop, s->fd, 0);
}

static void
tee_put(struct stream *s, const char *buf, size_t len)
{
	size_t n = 0;

	if (s->ls->tee_broken[s->id] || len == 0)
		return;
	if (!agent_tee_stalled(s))
		n = tee_try(s, buf, len);
	if (n != (size_t)-1 && n < len)
		tee_keep(s, buf + n, len - n);
}

static void
tee_resume(struct stream *s)
{
	agent_logstream *ls = s->ls;

	s->tee_off = s->tee_len = 0;
	if (s->tee_watch)
		(void)civis_loop_del_io(ls->loop, s->tee_fd);
	s->tee_watch = 0;
	if (s->fd >= 0)
		(void)civis_loop_set_io(ls->loop, s->fd, POLLIN);
}

static void
on_tee_writable(civis_loop *loop, int fd, int revents, void *ud)
{
	struct stream *s = ud;
	size_t n;

	(void)loop;
	(void)fd;
	(void)revents;
	n = tee_try(s, s->tee_buf + s->tee_off, s->tee_len - s->tee_off);
	if (n != (size_t)-1)
		s->tee_off += n;
	if (!agent_tee_stalled(s))
		tee_resume(s);
}

static int
tee_out(void *ud, const char *data, size_t len)
{
	tee_put(ud, data, len);
	return 0;
}

void
agent_tee_copy(struct stream *s, const char *data, size_t len)
{
	if (!s->ls->o.tee || s->tee_fd < 0)
		return;
	if (s->tee_rs)
		(void)civis_redact_stream_feed(s->tee_rs, data, len, tee_out, s);
	else
		tee_put(s, data, len);
}

void
agent_tee_end(struct stream *s)
{
	if (s->tee_rs && s->ls->o.tee && s->tee_fd >= 0)
		(void)civis_redact_stream_flush(s->tee_rs, tee_out, s);
}

void
agent_tee_free(struct stream *s)
{
	while (agent_tee_stalled(s)) {
		struct pollfd p = { .fd = s->tee_fd, .events = POLLOUT };
		size_t n;

		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		n = tee_try(s, s->tee_buf + s->tee_off, s->tee_len - s->tee_off);
		if (n != (size_t)-1)
			s->tee_off += n;
	}
	if (s->tee_watch)
		(void)civis_loop_del_io(s->ls->loop, s->tee_fd);
	s->tee_watch = 0;
	if (s->tee_own)
		close(s->tee_fd);
	else if (s->tee_saved_fl >= 0)
		(void)fcntl(s->tee_fd, F_SETFL, s->tee_saved_fl);
	s->tee_own = 0;
	s->tee_saved_fl = -1;
	s->tee_fd = -1;
	free(s->tee_buf);
	s->tee_buf = NULL;
	s->tee_off = s->tee_len = s->tee_cap = 0;
}
