/* logstream.c: the command's output -> tee + run log; the coordinator of
 * tee.c, backlog.c and lines.c (see logstream_int.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logstream_int.h"

/* ---------------------------------------------------------------- messages */

/* Every finished message goes through here: to the run, which batches,
 * queues and sends it. */
static void
add_message(agent_logstream *ls, const char *msg, size_t len, const char *level, uint64_t read_ns)
{
	(void)civis_run_log(ls->run, level, msg, len, read_ns);
}

void
agent_ls_emit(agent_logstream *ls, const char *level, const char *msg, size_t len, uint64_t read_ns)
{
	if (ls->o.on_message)
		ls->o.on_message(ls->o.on_message_ud, level, msg, len);
	add_message(ls, msg, len, level, read_ns);
}

/* ---------------------------------------------------------------- reading */

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
	if (agent_backlog_empty(ls))
		agent_lines_finish(s);
	agent_tee_end(s);
}

/* A few reads of s; none once its tee is stalled, unless `anyway` (the
 * drain at the end, which takes what is left in the pipe). */
static void
read_some(struct stream *s, int anyway)
{
	agent_logstream *ls = s->ls;
	int fd = s->fd;

	for (int i = 0; i < READS_PER_EV && s->fd == fd &&
	                (anyway || !agent_ls_paused(s)); i++) {
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
		s->last_in = ls->last_read;
		agent_tee_copy(s, ls->readbuf, (size_t)n);
		/* A big read means a flood: keep the raw bytes for later rather
		 * than make the command wait on the line work (a few lines, the
		 * usual case, are made at once). */
		if (ls->run && (!agent_backlog_empty(ls) || (size_t)n >= BACKLOG_MIN_READ)) {
			if (agent_backlog_append(s, ls->readbuf, (size_t)n) == 0)
				continue;
			/* The backlog file took no more (a full disk): what it
			 * holds is older than this read, so it becomes lines first. */
			if (!agent_backlog_empty(ls)) {
				agent_backlog_drain_before(s, ls->readbuf, (size_t)n);
				continue;
			}
		}
		agent_lines_feed(s, ls->readbuf, (size_t)n);
		if ((size_t)n < READ_BUF)
			return;
	}
}

int
agent_ls_paused(const struct stream *s)
{
	return agent_tee_stalled(s) || agent_backlog_full(s->ls) || agent_ls_run_full(s->ls);
}

int
agent_ls_run_full(const agent_logstream *ls)
{
	return ls->run != NULL && civis_run_log_full(ls->run);
}

static void on_room(civis_loop *loop, void *ud);

void
agent_ls_reading(struct stream *s)
{
	agent_logstream *ls = s->ls;

	if (s->fd >= 0)
		(void)civis_loop_set_io(ls->loop, s->fd, agent_ls_paused(s) ? 0 : POLLIN);
	/* Paused for the run log (memory only, full): acks free it, and
	 * nothing else would wake the pipes, so look again soon. */
	if (agent_ls_run_full(ls)) {
		ls->run_paused = 1;
		if (!ls->room_timer)
			(void)civis_loop_add_timer(ls->loop, civis_now_ns() + ROOM_POLL_NS, on_room, ls,
			                           &ls->room_timer);
	}
}

static void
on_room(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;

	(void)loop;
	ls->room_timer = 0;
	if (ls->run_paused && !agent_ls_run_full(ls)) {
		/* the pause was ours, not the command's: a partial line is
		 * not idle yet (the rest may be in the pipe) */
		ls->run_paused = 0;
		for (int i = 0; i < 2; i++)
			ls->st[i].last_in = civis_now_ns();
	}
	for (int i = 0; i < 2; i++)
		agent_ls_reading(&ls->st[i]);
}

static void
on_readable(civis_loop *loop, int fd, int revents, void *ud)
{
	struct stream *s = ud;

	(void)loop;
	(void)revents;
	if (s->fd == fd) {
		read_some(s, 0);
		if (agent_ls_run_full(s->ls))
			for (int i = 0; i < 2; i++)
				agent_ls_reading(&s->ls->st[i]);
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

		/* A partial line goes out once its stream has been idle (no
		 * bytes arrived) for the flush interval: a writer that is still
		 * writing (a block-buffered one, every 50 ms) keeps its lines
		 * whole and its secrets held. Never while the rest may already
		 * be here unread: in the backlog, or in a pipe paused for a
		 * stalled copy, the backlog's cap or a full run log. */
		if (s->partial_since && agent_backlog_empty(ls) && !agent_ls_paused(s) &&
		    !ls->run_paused && now - s->last_in >= ls->o.flush_ns)
			agent_lines_flush(s);
	}
	(void)civis_loop_add_timer(loop, now + (half ? half : 1), on_tick, ls, &ls->tick);
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
		ls->st[i].tee_saved_fl = -1;
	}
	ls->bl_fd = -1;
	ls->bl_cap = o->backlog_max ? o->backlog_max : 1ULL << 30;
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
	agent_tee_setup(s, tee_fd);
	return civis_loop_add_io(ls->loop, fd, POLLIN, on_readable, s);
}

int
agent_logstream_eof(const agent_logstream *ls)
{
	return ls->st[0].fd < 0 && ls->st[1].fd < 0 && agent_backlog_empty(ls);
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
			read_some(s, 1);
		}
		close_stream(s);
	}
	agent_backlog_drain(ls, UINT64_MAX);
	agent_backlog_report(ls);
}

void
agent_logstream_finish(agent_logstream *ls)
{
	if (!ls->run)
		return;
	agent_backlog_drain(ls, UINT64_MAX);
	for (int i = 0; i < 2; i++)
		agent_lines_flush(&ls->st[i]);
	civis_run_log_flush(ls->run);
}

int
agent_logstream_idle(const agent_logstream *ls)
{
	for (int i = 0; i < 2; i++)
		if (agent_tee_stalled(&ls->st[i]))
			return 0;      /* the copy is part of delivery too */
	return !ls->run || civis_run_log_idle(ls->run);
}

void
agent_logstream_stats_get(const agent_logstream *ls, agent_logstream_stats *st)
{
	*st = ls->stats;
	st->backlog_peak = ls->bl_peak;
	st->backlog_cap = ls->bl_cap;
	st->backlog_pauses = ls->bl_full_times;
	st->backlog_paused_ns = ls->bl_full_ns +
	                        (ls->bl_full ? civis_now_ns() - ls->bl_full_since : 0);
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
	if (ls->room_timer)
		civis_loop_cancel_timer(ls->loop, ls->room_timer);
	ls->room_timer = 0;
	ls->run = NULL;             /* closing now must not log more */
	for (int i = 0; i < 2; i++) {
		close_stream(&ls->st[i]);
		civis_linebuf_free(ls->st[i].lb);
		civis_redact_stream_free(ls->st[i].rs);
		civis_redact_stream_free(ls->st[i].tee_rs);
	}
	/* stderr first: with both on one shared description, stdout's flags
	 * are the ones from before the agent */
	for (int i = 1; i >= 0; i--)
		agent_tee_free(&ls->st[i]);
	agent_backlog_free(ls);
	free(ls->readbuf);
	free(ls);
}