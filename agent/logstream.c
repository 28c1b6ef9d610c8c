/* logstream.c: the command's output -> tee + run log. See logstream.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/linebuf.h"
#include "civis/logbatch.h"
#include "civis/run.h"
#include "logstream.h"

#define READ_BUF      (256u << 10)  /* one read from a pipe at most */
#define READS_PER_EV  4             /* reads per readiness, so one stream can't starve the rest */
#define BACKLOG_MIN_READ (16u << 10) /* reads this big go through the backlog */
#define NOTE_MAX      2048

struct stream;

struct stream {
	agent_logstream *ls;
	int id;                     /* AGENT_STDOUT / AGENT_STDERR */
	int fd;                     /* -1 once at EOF or closed */
	int tee_fd;                 /* -1: no copy */
	civis_redact_stream *rs;    /* mask for the run log */
	civis_redact_stream *tee_rs;/* mask for the copy, with --redact-tee */
	civis_linebuf *lb;
	uint64_t partial_since;     /* when a partial line or held bytes started waiting */
	uint64_t read_ns;           /* realtime of the read being processed */
	int finished;               /* its last line went out */
};

struct agent_logstream {
	agent_logstream_opts o;
	civis_loop *loop;
	civis_run *run;             /* NULL: tee only */
	struct stream st[2];
	civis_timer_id tick;
	char *readbuf;
	/* The backlog: during a flood, reads are copied as they come (tee) and
	 * appended raw, with their read time, to an unlinked file; lines are
	 * made from it in slices between reads, so the command never waits on
	 * the line/JSON/redaction work. Empty: reads are processed at once. */
	int bl_fd;                  /* -1 until first needed */
	uint64_t bl_woff, bl_roff;
	uint64_t bl_peak;
	int bl_broken;              /* cannot write it: process inline */
	civis_timer_id bl_timer;
	uint64_t bl_last_slice;     /* monotonic time of the last backlog slice */
	uint64_t last_read;         /* monotonic time of the last read with data */
	int tee_broken[2];
	agent_logstream_stats stats;
};

/* ---------------------------------------------------------------- tee */

/* Write all of buf to fd, waiting if fd is non-blocking; stop copying to a
 * closed reader (EPIPE) without disturbing anything else. */
static void
tee_write(agent_logstream *ls, int id, int fd, const char *buf, size_t len)
{
	while (len > 0 && !ls->tee_broken[id]) {
		ssize_t n = write(fd, buf, len);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			(void)poll(&p, 1, 1000);
		} else {
			ls->tee_broken[id] = 1;
		}
	}
}

static int
tee_out(void *ud, const char *data, size_t len)
{
	struct stream *s = ud;

	tee_write(s->ls, s->id, s->tee_fd, data, len);
	return 0;
}

/* ---------------------------------------------------------------- batches */

/* Every finished message goes through here, to the run. */
static void
add_message(agent_logstream *ls, const char *msg, size_t len, const char *level, uint64_t read_ns)
{
	(void)civis_run_log(ls->run, level, msg, len, read_ns);
}

static int
on_line(void *ud, const char *line, size_t len, unsigned flags)
{
	struct stream *s = ud;
	agent_logstream *ls = s->ls;

	/* The end of a line whose text a flush already handed over. */
	if (len == 0 && (flags & CIVIS_LINE_CONTINUATION) && !(flags & CIVIS_LINE_CONTINUES))
		return 0;
	ls->stats.lines++;
	add_message(ls, line, len, ls->o.level[s->id], s->read_ns);
	return 0;
}

static int
redacted_out(void *ud, const char *data, size_t len)
{
	struct stream *s = ud;

	return civis_linebuf_feed(s->lb, data, len, on_line, s);
}

static void
to_log(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;

	if (!ls->run)
		return;
	if (s->rs)
		(void)civis_redact_stream_feed(s->rs, data, len, redacted_out, s);
	else
		(void)civis_linebuf_feed(s->lb, data, len, on_line, s);
	if (s->partial_since == 0 &&
	    (civis_linebuf_pending(s->lb) > 0 || (s->rs && civis_redact_stream_held(s->rs) > 0)))
		s->partial_since = civis_now_ns();
	else if (civis_linebuf_pending(s->lb) == 0 && !(s->rs && civis_redact_stream_held(s->rs) > 0))
		s->partial_since = 0;
}

/* Push out held bytes and the partial line of s. */
static void
flush_stream(struct stream *s)
{
	if (s->rs)
		(void)civis_redact_stream_flush(s->rs, redacted_out, s);
	(void)civis_linebuf_flush(s->lb, on_line, s);
	s->partial_since = 0;
}

/* ---------------------------------------------------------------- reading */

/* The end of a stream's text: its last partial line goes out. */
static void
finish_stream(struct stream *s)
{
	if (s->finished || !s->ls->run)
		return;
	s->finished = 1;
	if (s->rs)
		(void)civis_redact_stream_flush(s->rs, redacted_out, s);
	(void)civis_linebuf_finish(s->lb, on_line, s);
	s->partial_since = 0;
}

static void
close_stream(struct stream *s)
{
	agent_logstream *ls = s->ls;

	if (s->fd < 0)
		return;
	(void)civis_loop_del_io(ls->loop, s->fd);
	close(s->fd);
	s->fd = -1;
	/* with a backlog, its text is still to come: finish when drained */
	if (ls->bl_woff == ls->bl_roff)
		finish_stream(s);
	if (s->tee_rs)
		(void)civis_redact_stream_flush(s->tee_rs, tee_out, s);
}

/* ---------------------------------------------------------------- backlog */

struct bl_hdr {
	uint32_t len;
	uint32_t stream;
	uint64_t read_ns;
};

static int
bl_open(agent_logstream *ls)
{
	const char *dir = ls->o.spool_dir;
	char path[4096];
	int fd;

	if (!dir || !*dir)
		dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (snprintf(path, sizeof(path), "%s/civis-agent-backlog-XXXXXX", dir) >= (int)sizeof(path))
			return -1;
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			(void)unlink(path);
	}
	ls->bl_fd = fd;
	return fd;
}

/* All of len bytes at off, written (writing) or read; -1 on error or EOF. */
static int
all_at(int fd, char *buf, size_t len, uint64_t off, int writing)
{
	while (len > 0) {
		ssize_t n = writing ? pwrite(fd, buf, len, (off_t)off)
		                    : pread(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void bl_schedule(agent_logstream *ls);

/* Append one read to the backlog; -1 when it cannot (then process inline). */
static int
bl_append(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;
	struct bl_hdr h = { (uint32_t)len, (uint32_t)s->id, s->read_ns };

	if (ls->bl_broken || (ls->bl_fd < 0 && bl_open(ls) < 0))
		goto broken;
	if (all_at(ls->bl_fd, (char *)&h, sizeof(h), ls->bl_woff, 1) != 0 ||
	    all_at(ls->bl_fd, (char *)data, len, ls->bl_woff + sizeof(h), 1) != 0)
		goto broken;
	ls->bl_woff += sizeof(h) + len;
	if (ls->bl_woff - ls->bl_roff > ls->bl_peak)
		ls->bl_peak = ls->bl_woff - ls->bl_roff;
	bl_schedule(ls);
	return 0;
broken:
	if (!ls->bl_broken)
		fprintf(stderr, "civis-agent: cannot keep a log backlog file in %s (%s); lines are "
		        "made as the output is read, which may slow the command down\n",
		        ls->o.spool_dir ? ls->o.spool_dir : "$TMPDIR", strerror(errno));
	ls->bl_broken = 1;
	return -1;
}

/* Make lines from up to `budget` bytes of the backlog (UINT64_MAX: all). */
static void
bl_drain(agent_logstream *ls, uint64_t budget)
{
	while (ls->bl_roff < ls->bl_woff && budget > 0) {
		struct bl_hdr h;
		struct stream *s;

		if (all_at(ls->bl_fd, (char *)&h, sizeof(h), ls->bl_roff, 0) != 0 ||
		    h.len > READ_BUF || h.stream > 1 ||
		    all_at(ls->bl_fd, ls->readbuf, h.len, ls->bl_roff + sizeof(h), 0) != 0) {
			/* our own file, just written: only a failing disk gets here */
			fprintf(stderr, "civis-agent: the log backlog file cannot be read back (%s); "
			        "%llu bytes of output are not in the run log\n", strerror(errno),
			        (unsigned long long)(ls->bl_woff - ls->bl_roff));
			ls->bl_roff = ls->bl_woff;
			break;
		}
		ls->bl_roff += sizeof(h) + h.len;
		budget = h.len >= budget ? 0 : budget - h.len;
		s = &ls->st[h.stream];
		s->read_ns = h.read_ns;
		to_log(s, ls->readbuf, h.len);
	}
	if (ls->bl_roff == ls->bl_woff && ls->bl_woff > 0) {
		/* caught up: give the space back and start over */
		if (ftruncate(ls->bl_fd, 0) == 0)
			ls->bl_roff = ls->bl_woff = 0;
		for (int i = 0; i < 2; i++)
			if (ls->st[i].fd < 0 && ls->st[i].lb)
				finish_stream(&ls->st[i]);
	}
}

#define BL_QUIET_NS  2000000ULL   /* the pipes count as busy this long after a read */
#define BL_FLOOR_NS  50000000ULL  /* yet a slice at least this often */

static void
on_backlog(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;
	uint64_t now = civis_now_ns();

	ls->bl_timer = 0;
	/* While the command floods, the agent only reads, copies and appends:
	 * line work (and the requests it feeds) would take CPU from the command
	 * on a small machine. A slice now and then keeps the run log moving. */
	if (now - ls->last_read < BL_QUIET_NS && now - ls->bl_last_slice < BL_FLOOR_NS) {
		(void)civis_loop_add_timer(loop, now + BL_QUIET_NS, on_backlog, ls, &ls->bl_timer);
		return;
	}
	ls->bl_last_slice = now;
	/* one slice per loop turn: reads and transfers go on in between */
	bl_drain(ls, 256u << 10);
	if (ls->bl_roff < ls->bl_woff)
		bl_schedule(ls);
}

static void
bl_schedule(agent_logstream *ls)
{
	if (!ls->bl_timer)
		(void)civis_loop_add_timer(ls->loop, civis_now_ns(), on_backlog, ls, &ls->bl_timer);
}

static void
on_readable(civis_loop *loop, int fd, int revents, void *ud)
{
	struct stream *s = ud;
	agent_logstream *ls = s->ls;

	(void)loop;
	(void)revents;
	for (int i = 0; i < READS_PER_EV && s->fd == fd; i++) {
		ssize_t n = read(fd, ls->readbuf, READ_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close_stream(s);
			return;
		}
		ls->stats.bytes += (uint64_t)n;
		s->read_ns = civis_clock_realtime_ns();
		ls->last_read = civis_now_ns();
		if (ls->o.tee && s->tee_fd >= 0) {
			if (s->tee_rs)
				(void)civis_redact_stream_feed(s->tee_rs, ls->readbuf, (size_t)n, tee_out, s);
			else
				tee_write(ls, s->id, s->tee_fd, ls->readbuf, (size_t)n);
		}
		/* A big read means a flood: keep the raw bytes for later rather
		 * than make the command wait on the line work (a few lines, the
		 * usual case, are made at once). */
		if (ls->run && (ls->bl_woff > ls->bl_roff || (size_t)n >= BACKLOG_MIN_READ) &&
		    bl_append(s, ls->readbuf, (size_t)n) == 0)
			continue;
		to_log(s, ls->readbuf, (size_t)n);
		if ((size_t)n < READ_BUF)
			return;
	}
}

/* ---------------------------------------------------------------- timer */

static void
on_tick(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;
	uint64_t now = civis_now_ns(), half = ls->o.flush_ns / 2;

	for (int i = 0; i < 2; i++) {
		struct stream *s = &ls->st[i];

		if (s->partial_since && now - s->partial_since >= half)
			flush_stream(s);
	}
	(void)civis_loop_add_timer(loop, now + (half ? half : 1), on_tick, ls, &ls->tick);
}

/* ---------------------------------------------------------------- notes */

static void
note_to_log(agent_logstream *ls, const char *level, const char *text)
{
	if (!ls->run || civis_run_auth_dead(ls->run))
		return;
	add_message(ls, text, strlen(text), level, civis_clock_realtime_ns());
}

/* Mask secrets in text; NULL when that failed (then say nothing). */
static const char *
mask(agent_logstream *ls, const char *text, char *buf, size_t len)
{
	int rc;

	if (!ls->o.redact)
		return text;
	rc = civis_redact_string(ls->o.redact, text, buf, len);
	/* ETOOBIG: cut to fit, still masked */
	return rc == CIVIS_OK || rc == CIVIS_ETOOBIG ? buf : NULL;
}

void
agent_logstream_note_log_only(agent_logstream *ls, const char *level, const char *text)
{
	char masked[NOTE_MAX * 2];

	text = mask(ls, text, masked, sizeof(masked));
	if (text)
		note_to_log(ls, level, text);
}

void
agent_logstream_note(agent_logstream *ls, const char *level, const char *fmt, ...)
{
	char raw[NOTE_MAX], masked[NOTE_MAX * 2];
	const char *text;
	va_list ap;
	int n;

	n = snprintf(raw, sizeof(raw), "civis-agent: ");
	va_start(ap, fmt);
	vsnprintf(raw + n, sizeof(raw) - (size_t)n, fmt, ap);
	va_end(ap);
	text = mask(ls, raw, masked, sizeof(masked));
	if (!text)
		return;
	fprintf(stderr, "%s\n", text);
	note_to_log(ls, level, text);
}

/* ---------------------------------------------------------------- life */

int
agent_logstream_new(agent_logstream **out, civis_loop *loop, const agent_logstream_opts *o,
                    char *err, size_t errlen)
{
	agent_logstream *ls;
	int rc = CIVIS_ENOMEM;

	*out = NULL;
	ls = calloc(1, sizeof(*ls));
	if (!ls) {
		snprintf(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	ls->o = *o;
	if (ls->o.flush_ns < 10000000ULL)
		ls->o.flush_ns = 10000000ULL;
	ls->loop = loop;
	ls->run = o->run;
	for (int i = 0; i < 2; i++) {
		ls->st[i].ls = ls;
		ls->st[i].id = i;
		ls->st[i].fd = -1;
		ls->st[i].tee_fd = -1;
	}
	ls->bl_fd = -1;
	ls->readbuf = malloc(READ_BUF);
	if (!ls->readbuf)
		goto fail;
	if (o->redact_tee && o->redact) {
		for (int i = 0; i < 2; i++)
			if ((rc = civis_redact_stream_new(&ls->st[i].tee_rs, o->redact)) != CIVIS_OK)
				goto fail;
	}
	if (ls->run) {
		for (int i = 0; i < 2; i++) {
			if ((rc = civis_linebuf_new(&ls->st[i].lb, o->line_max)) != CIVIS_OK)
				goto fail;
			if (o->redact && (rc = civis_redact_stream_new(&ls->st[i].rs, o->redact)) != CIVIS_OK)
				goto fail;
		}
		rc = civis_loop_add_timer(loop, civis_now_ns() + ls->o.flush_ns / 2, on_tick, ls, &ls->tick);
		if (rc != CIVIS_OK)
			goto fail;
	}
	*out = ls;
	return CIVIS_OK;
fail:
	snprintf(err, errlen, "cannot set up the log stream: %s", civis_strerror(rc));
	agent_logstream_free(ls);
	return rc;
}

int
agent_logstream_add_pipe(agent_logstream *ls, int stream, int fd, int tee_fd)
{
	struct stream *s = &ls->st[stream];

	s->fd = fd;
	s->tee_fd = tee_fd;
	return civis_loop_add_io(ls->loop, fd, POLLIN, on_readable, s);
}

int
agent_logstream_eof(const agent_logstream *ls)
{
	return ls->st[0].fd < 0 && ls->st[1].fd < 0 && ls->bl_roff == ls->bl_woff;
}

void
agent_logstream_close_pipes(agent_logstream *ls)
{
	for (int i = 0; i < 2; i++) {
		struct stream *s = &ls->st[i];

		/* Take what is already in the pipe, without waiting for more. */
		for (int k = 0; k < 64 && s->fd >= 0; k++) {
			struct pollfd p = { .fd = s->fd, .events = POLLIN };

			if (poll(&p, 1, 0) <= 0)
				break;
			on_readable(ls->loop, s->fd, p.revents, s);
		}
		close_stream(s);
	}
	bl_drain(ls, UINT64_MAX);
}

void
agent_logstream_finish(agent_logstream *ls)
{
	if (!ls->run)
		return;
	bl_drain(ls, UINT64_MAX);
	for (int i = 0; i < 2; i++)
		flush_stream(&ls->st[i]);
	civis_run_log_flush(ls->run);
}

int
agent_logstream_idle(const agent_logstream *ls)
{
	return !ls->run || civis_run_log_idle(ls->run);
}

void
agent_logstream_stats_get(const agent_logstream *ls, agent_logstream_stats *st)
{
	*st = ls->stats;
	if (ls->run) {
		civis_run_log_stats rs;

		civis_run_log_stats_get(ls->run, &rs);
		st->delivered = rs.delivered;
		st->undelivered = rs.undelivered;
		st->dropped = rs.dropped;
		st->requests = rs.requests;
		st->ambiguous = rs.ambiguous;
		st->spool_bytes = rs.spool_bytes;
		st->mem_peak = rs.mem_peak;
	}
}

void
agent_logstream_free(agent_logstream *ls)
{
	if (!ls)
		return;
	if (ls->tick)
		civis_loop_cancel_timer(ls->loop, ls->tick);
	ls->run = NULL;          /* closing now must not start requests */
	for (int i = 0; i < 2; i++) {
		close_stream(&ls->st[i]);
		civis_linebuf_free(ls->st[i].lb);
		civis_redact_stream_free(ls->st[i].rs);
		civis_redact_stream_free(ls->st[i].tee_rs);
	}
	if (ls->bl_timer)
		civis_loop_cancel_timer(ls->loop, ls->bl_timer);
	if (ls->bl_fd >= 0)
		close(ls->bl_fd);
	free(ls->readbuf);
	free(ls);
}
