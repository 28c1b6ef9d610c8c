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
#include "civis/logqueue.h"
#include "logstream.h"

#define READ_BUF      (256u << 10)  /* one read from a pipe at most */
#define READS_PER_EV  4             /* reads per readiness, so one stream can't starve the rest */
#define MAX_INFLIGHT  16
#define BACKLOG_MIN_READ (16u << 10) /* reads this big go through the backlog */
#define NOTE_MAX      2048

struct stream;

/* One log request in flight: a queue chunk streamed as the request body. */
struct sending {
	agent_logstream *ls;
	civis_logq_chunk *chunk;
	civis_http_req *req;
	size_t off;                 /* read position of the body, per try */
	unsigned rewinds;           /* libcurl sent the body again by itself */
	int used;
};

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
	civis_client *client;       /* NULL: tee only, or after the key was rejected */
	struct stream st[2];
	civis_batch *batch;
	civis_tsclock clock;
	civis_logq *q;
	struct sending send[MAX_INFLIGHT];
	unsigned inflight;
	civis_retry_policy retry;
	civis_timer_id tick;
	civis_timer_id resume;      /* sending paused after a failure */
	uint64_t batch_opened;      /* monotonic time of the batch's first message */
	char logs_path[128];
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
	int auth_dead;
	int start_failed;           /* the last request could not be started (said once) */
	uint64_t spool_peak;        /* spool disk use at its largest, seen at ticks */
	agent_logstream_stats stats;
	char note[NOTE_MAX];
};

static void pump(agent_logstream *ls);

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

static void
seal(agent_logstream *ls)
{
	size_t len, n = civis_batch_count(ls->batch);
	const char *body;
	int rc;

	if (n == 0)
		return;
	body = civis_batch_body(ls->batch, &len);
	rc = civis_logq_push(ls->q, body, len, (uint32_t)n, civis_batch_first_ns(ls->batch),
	                     civis_batch_last_ns(ls->batch));
	if (rc != CIVIS_OK)   /* counted by the queue; reported at the next tick */
		fprintf(stderr, "civis-agent: could not queue %zu log lines: %s\n",
		        n, civis_logq_last_error(ls->q));
	civis_batch_reset(ls->batch);
	ls->batch_opened = 0;
	pump(ls);
}

static void
add_message(agent_logstream *ls, const char *msg, size_t len, const char *level, uint64_t read_ns)
{
	uint64_t ts = civis_tsclock_next(&ls->clock, read_ns);
	int rc = civis_batch_add(ls->batch, msg, len, level, ts);

	if (rc == CIVIS_ETOOBIG) {
		seal(ls);
		rc = civis_batch_add(ls->batch, msg, len, level, ts);
	}
	if (rc != CIVIS_OK) {
		ls->stats.dropped++;
		return;
	}
	if (ls->batch_opened == 0)
		ls->batch_opened = civis_now_ns();
	if (civis_batch_count(ls->batch) >= ls->o.batch_lines)
		seal(ls);
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

	if (!ls->client)
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
	if (s->finished || !s->ls->client)
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
		if (ls->client && (ls->bl_woff > ls->bl_roff || (size_t)n >= BACKLOG_MIN_READ) &&
		    bl_append(s, ls->readbuf, (size_t)n) == 0)
			continue;
		to_log(s, ls->readbuf, (size_t)n);
		if ((size_t)n < READ_BUF)
			return;
	}
}

/* ---------------------------------------------------------------- sending */

/* The key was refused (by a log request, or by any other call: the client
 * latches a 401): stop sending and say so once, whoever met it first. */
static void
auth_rejected(agent_logstream *ls)
{
	if (ls->auth_dead)
		return;
	ls->auth_dead = 1;
	fprintf(stderr, "civis-agent: API key rejected (HTTP 401): no more API calls; "
	        "the command keeps running. Check CIVIS_API_KEY.\n");
}

/* The request body: the chunk, read at any offset (http streams it, and
 * reads it from 0 again for a retry or a rewind). */
static int
body_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	struct sending *sd = ud;

	*got = 0;
	if (off > (uint64_t)civis_logq_chunk_len(sd->chunk))
		return CIVIS_EINVAL;
	return civis_logq_chunk_read(sd->ls->q, sd->chunk, (size_t)off, buf, n, got);
}

static void
on_resume(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;

	(void)loop;
	ls->resume = 0;
	pump(ls);
}

static void
on_sent(void *ud, const civis_http_result *res)
{
	struct sending *sd = ud;
	agent_logstream *ls = sd->ls;
	uint32_t n = civis_logq_chunk_lines(sd->chunk);

	ls->stats.ambiguous += res->ambiguous + sd->rewinds;
	sd->used = 0;
	sd->req = NULL;
	ls->inflight--;
	if (res->status == CIVIS_OK) {
		civis_logq_ack(ls->q, sd->chunk);
		ls->stats.delivered += n;
		ls->stats.requests++;
	} else if (res->status == CIVIS_ECANCELED) {
		civis_logq_nack(ls->q, sd->chunk);
		return;
	} else if (res->status == CIVIS_EAUTH) {
		civis_logq_nack(ls->q, sd->chunk);
		auth_rejected(ls);
		return;
	} else if (res->http_code >= 400 && res->http_code < 500 && res->http_code != 408 &&
	           res->http_code != 429) {
		/* The API refuses this batch for good: say so, don't retry forever. */
		civis_logq_ack(ls->q, sd->chunk);
		ls->stats.dropped += n;
		fprintf(stderr, "civis-agent: the run log refused %u lines: %s\n", n, res->error);
	} else {
		/* Retries ran out: keep the lines and try again a little later. */
		civis_logq_nack(ls->q, sd->chunk);
		if (ls->o.verbose)
			fprintf(stderr, "civis-agent: log batch not delivered yet: %s\n", res->error);
		if (!ls->resume)
			(void)civis_loop_add_timer(ls->loop, civis_now_ns() + 2000000000ULL, on_resume,
			                           ls, &ls->resume);
		return;
	}
	pump(ls);
}

/* Start as many log requests as the in-flight limit allows. */
static void
pump(agent_logstream *ls)
{
	unsigned max = ls->o.max_inflight;

	if (!ls->client || ls->auth_dead || ls->resume)
		return;
	while (ls->inflight < max) {
		struct sending *sd = NULL;
		civis_logq_chunk *c = NULL;
		civis_http_spec spec;
		int rc;

		for (unsigned i = 0; i < max; i++)
			if (!ls->send[i].used) {
				sd = &ls->send[i];
				break;
			}
		if (!sd)
			return;
		rc = civis_logq_take(ls->q, &c);
		if (rc == CIVIS_EPROTO) {
			/* corrupt spool records were dropped (and counted): go on */
			fprintf(stderr, "civis-agent: %s\n", civis_logq_last_error(ls->q));
			continue;
		}
		if (rc != CIVIS_OK || !c)
			return;
		memset(sd, 0, sizeof(*sd));
		sd->ls = ls;
		sd->chunk = c;
		sd->used = 1;
		memset(&spec, 0, sizeof(spec));
		spec.method = "POST";
		spec.url = ls->logs_path;
		spec.what = "log batch";
		spec.content_type = "application/json";
		/* Every body is streamed (memory or spool alike); http counts
		 * libcurl's silent resends of it in res->ambiguous. */
		spec.body_size = civis_logq_chunk_len(c);
		spec.body_read = body_read;
		spec.body_ud = sd;
		spec.retry = &ls->retry;
		spec.done = on_sent;
		spec.done_ud = sd;
		ls->inflight++;
		rc = civis_client_call(ls->client, &spec, &sd->req);
		if (rc != CIVIS_OK) {
			ls->inflight--;
			sd->used = 0;
			civis_logq_nack(ls->q, c);
			if (rc == CIVIS_EAUTH) {
				auth_rejected(ls);
			} else if (!ls->start_failed) {
				/* Never silent: the next tick tries again. */
				ls->start_failed = 1;
				fprintf(stderr, "civis-agent: cannot start a log request: %s\n",
				        civis_strerror(rc));
			}
			return;
		}
		ls->start_failed = 0;
	}
}

/* ---------------------------------------------------------------- timer */

static void
on_tick(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;
	uint64_t now = civis_now_ns(), half = ls->o.flush_ns / 2;
	uint64_t dropped;

	for (int i = 0; i < 2; i++) {
		struct stream *s = &ls->st[i];

		if (s->partial_since && now - s->partial_since >= half)
			flush_stream(s);
	}
	if (ls->batch_opened && now - ls->batch_opened >= half)
		seal(ls);
	{
		struct civis_logq_stats qs;

		civis_logq_stats(ls->q, &qs);
		if (qs.spool_disk > ls->spool_peak)
			ls->spool_peak = qs.spool_disk;
	}
	if (!ls->auth_dead && civis_client_auth_rejected(ls->client))
		auth_rejected(ls);
	dropped = civis_logq_take_dropped(ls->q);
	if (dropped) {
		snprintf(ls->note, sizeof(ls->note), "civis-agent: %llu log lines were dropped: %s",
		         (unsigned long long)dropped, civis_logq_last_error(ls->q));
		fprintf(stderr, "%s\n", ls->note);
		add_message(ls, ls->note, strlen(ls->note), "warn", civis_clock_realtime_ns());
	}
	pump(ls);
	(void)civis_loop_add_timer(loop, now + (half ? half : 1), on_tick, ls, &ls->tick);
}

/* ---------------------------------------------------------------- notes */

static void
note_to_log(agent_logstream *ls, const char *level, const char *text)
{
	if (!ls->client || ls->auth_dead)
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
	civis_logq_opts qo;
	int rc = CIVIS_ENOMEM;

	*out = NULL;
	ls = calloc(1, sizeof(*ls));
	if (!ls) {
		snprintf(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	ls->o = *o;
	if (ls->o.max_inflight == 0)
		ls->o.max_inflight = 4;
	if (ls->o.max_inflight > MAX_INFLIGHT)
		ls->o.max_inflight = MAX_INFLIGHT;
	if (ls->o.flush_ns < 10000000ULL)
		ls->o.flush_ns = 10000000ULL;
	ls->loop = loop;
	ls->client = o->client;
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
	if (ls->client) {
		const civis_client_config *cfg = civis_client_get_config(ls->client);

		(void)cfg;
		rc = civis_client_run_path(ls->client, "/logs", ls->logs_path, sizeof(ls->logs_path));
		if (rc != CIVIS_OK)
			goto fail;
		for (int i = 0; i < 2; i++) {
			if ((rc = civis_linebuf_new(&ls->st[i].lb, o->line_max)) != CIVIS_OK)
				goto fail;
			if (o->redact && (rc = civis_redact_stream_new(&ls->st[i].rs, o->redact)) != CIVIS_OK)
				goto fail;
		}
		if ((rc = civis_batch_new(&ls->batch, o->batch_lines, o->batch_bytes)) != CIVIS_OK)
			goto fail;
		memset(&qo, 0, sizeof(qo));
		qo.mem_cap = o->mem_max;
		qo.spool_cap = o->spool_max;
		qo.spool_dir = o->spool_dir;
		if ((rc = civis_logq_new(&ls->q, &qo, err, errlen)) != CIVIS_OK) {
			agent_logstream_free(ls);
			return rc;
		}
		civis_retry_policy_default(&ls->retry);
		ls->retry.max_attempts = 0;       /* until delivered; the caller bounds the wait */
		ls->retry.base_ms = 250;
		ls->retry.cap_ms = 5000;
		ls->retry.retry_ambiguous = 1;
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
	if (!ls->client)
		return;
	bl_drain(ls, UINT64_MAX);
	for (int i = 0; i < 2; i++)
		flush_stream(&ls->st[i]);
	seal(ls);
}

int
agent_logstream_idle(const agent_logstream *ls)
{
	struct civis_logq_stats qs;

	if (!ls->client || ls->auth_dead)
		return 1;
	if (ls->inflight || civis_batch_count(ls->batch))
		return 0;
	civis_logq_stats(ls->q, &qs);
	return qs.mem_chunks + qs.disk_chunks + qs.inflight_chunks == 0;
}

void
agent_logstream_stats_get(const agent_logstream *ls, agent_logstream_stats *st)
{
	*st = ls->stats;
	if (ls->client) {
		struct civis_logq_stats qs;

		civis_logq_stats(ls->q, &qs);
		st->undelivered = qs.mem_lines + qs.disk_lines + qs.inflight_lines +
		                  civis_batch_count(ls->batch);
		st->spool_bytes = qs.spool_disk > ls->spool_peak ? qs.spool_disk : ls->spool_peak;
		st->dropped += qs.dropped_lines;
		st->mem_peak = qs.mem_peak;
	}
}

void
agent_logstream_free(agent_logstream *ls)
{
	if (!ls)
		return;
	/* Requests still in flight end here, with CIVIS_ECANCELED: the caller
	 * frees the client (and its http) after this. */
	for (unsigned i = 0; i < MAX_INFLIGHT; i++)
		if (ls->send[i].used && ls->send[i].req)
			civis_http_cancel(civis_client_http(ls->client), ls->send[i].req);
	if (ls->tick)
		civis_loop_cancel_timer(ls->loop, ls->tick);
	if (ls->resume)
		civis_loop_cancel_timer(ls->loop, ls->resume);
	ls->client = NULL;          /* closing now must not start requests */
	for (int i = 0; i < 2; i++) {
		close_stream(&ls->st[i]);
		civis_linebuf_free(ls->st[i].lb);
		civis_redact_stream_free(ls->st[i].rs);
		civis_redact_stream_free(ls->st[i].tee_rs);
	}
	civis_batch_free(ls->batch);
	civis_logq_free(ls->q);
	if (ls->bl_timer)
		civis_loop_cancel_timer(ls->loop, ls->bl_timer);
	if (ls->bl_fd >= 0)
		close(ls->bl_fd);
	free(ls->readbuf);
	free(ls);
}
