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

static void pump(agent_logstream *ls);

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
	                (anyway || (!agent_tee_stalled(s) && !agent_backlog_full(ls))); i++) {
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
		if (ls->client && (!agent_backlog_empty(ls) || (size_t)n >= BACKLOG_MIN_READ) &&
		    agent_backlog_append(s, ls->readbuf, (size_t)n) == 0)
			continue;
		agent_lines_feed(s, ls->readbuf, (size_t)n);
		if ((size_t)n < READ_BUF)
			return;
	}
}

void
agent_ls_reading(struct stream *s)
{
	if (s->fd >= 0)
		(void)civis_loop_set_io(s->ls->loop, s->fd,
		                        agent_tee_stalled(s) || agent_backlog_full(s->ls) ? 0 : POLLIN);
}

static void
on_readable(civis_loop *loop, int fd, int revents, void *ud)
{
	struct stream *s = ud;

	(void)loop;
	(void)revents;
	if (s->fd == fd)
		read_some(s, 0);
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

static size_t
body_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct sending *sd = ud;
	size_t got = 0;

	if (civis_logq_chunk_read(sd->ls->q, sd->chunk, sd->off, buf, size * nitems, &got) != CIVIS_OK)
		return CURL_READFUNC_ABORT;
	sd->off += got;
	return got;
}

/* libcurl rewinds the body when it sends the request again by itself: on a
 * reused connection that died before any answer, it retries on a fresh one
 * without telling anyone. The server may have stored the first copy, so a
 * rewind after bytes went out is a possible duplicate like any ambiguous
 * failure, and is counted as one. */
static int
body_seek(void *ud, curl_off_t offset, int origin)
{
	struct sending *sd = ud;

	if (origin != SEEK_SET || offset < 0 ||
	    (uint64_t)offset > (uint64_t)civis_logq_chunk_len(sd->chunk))
		return CURL_SEEKFUNC_FAIL;
	if ((size_t)offset < sd->off)
		sd->rewinds++;
	sd->off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int
body_setup(void *ud, CURL *easy)
{
	struct sending *sd = ud;

	sd->off = 0;
	if (curl_easy_setopt(easy, CURLOPT_POST, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_READFUNCTION, body_read) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_READDATA, sd) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, body_seek) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_SEEKDATA, sd) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
	                     (curl_off_t)civis_logq_chunk_len(sd->chunk)) != CURLE_OK)
		return CIVIS_EINVAL;
	return CIVIS_OK;
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
		/* Every body is streamed by body_setup (memory or spool alike),
		 * which sets its own length, so that libcurl's silent resends
		 * are seen (body_seek); spec.body_len stays 0 without spec.body
		 * (http says EINVAL otherwise). */
		spec.body_fn = body_setup;
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

		/* A partial line goes out once its stream has been idle (no
		 * bytes arrived) for the flush interval: a writer that is still
		 * writing (a block-buffered one, every 50 ms) keeps its lines
		 * whole and its secrets held. Never while the rest may already
		 * be here unread: in the backlog, or in a pipe paused for a
		 * stalled copy. */
		if (s->partial_since && agent_backlog_empty(ls) && !agent_tee_stalled(s) &&
		    now - s->last_in >= ls->o.flush_ns)
			agent_lines_flush(s);
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
		agent_ls_emit(ls, "warn", ls->note, strlen(ls->note), civis_clock_realtime_ns());
	}
	pump(ls);
	(void)civis_loop_add_timer(loop, now + (half ? half : 1), on_tick, ls, &ls->tick);
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
		ls->st[i].tee_saved_fl = -1;
	}
	ls->bl_fd = -1;
	ls->bl_cap = o->spool_max ? o->spool_max : 1ULL << 30;
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
	if (!ls->client)
		return;
	agent_backlog_drain(ls, UINT64_MAX);
	for (int i = 0; i < 2; i++)
		agent_lines_flush(&ls->st[i]);
	seal(ls);
}

int
agent_logstream_idle(const agent_logstream *ls)
{
	struct civis_logq_stats qs;

	for (int i = 0; i < 2; i++)
		if (agent_tee_stalled(&ls->st[i]))
			return 0;      /* the copy is part of delivery too */
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
	st->backlog_peak = ls->bl_peak;
	st->backlog_cap = ls->bl_cap;
	st->backlog_pauses = ls->bl_full_times;
	st->backlog_paused_ns = ls->bl_full_ns +
	                        (ls->bl_full ? civis_now_ns() - ls->bl_full_since : 0);
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
	/* stderr first: with both on one shared description, stdout's flags
	 * are the ones from before the agent */
	for (int i = 1; i >= 0; i--)
		agent_tee_free(&ls->st[i]);
	civis_batch_free(ls->batch);
	civis_logq_free(ls->q);
	agent_backlog_free(ls);
	free(ls->readbuf);
	free(ls);
}