/* run_logs.c: the run log. Messages -> JSON batch (civis_batch) -> log queue
 * (civis_logq: memory, then spool) -> POST .../logs, several in flight,
 * acknowledged or retried until delivered. See run.h. */
#include "dl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "run_int.h"

static void pump(civis_run *r);

static void
seal(civis_run *r)
{
	size_t len, n = civis_batch_count(r->batch);
	const char *body;
	int rc;

	if (n == 0)
		return;
	body = civis_batch_body(r->batch, &len);
	rc = civis_logq_push(r->q, body, len, (uint32_t)n, civis_batch_first_ns(r->batch),
	                     civis_batch_last_ns(r->batch));
	if (rc != CIVIS_OK)   /* counted by the queue; reported at the next tick */
		civis__run_say(r, "could not queue %zu log lines: %s", n, civis_logq_last_error(r->q));
	civis_batch_reset(r->batch);
	r->batch_opened = 0;
	pump(r);
}

int
civis_run_log(civis_run *r, const char *level, const char *msg, size_t len, uint64_t read_ns)
{
	uint64_t ts;
	int rc;

	if (r == NULL || (msg == NULL && len > 0))
		return CIVIS_EINVAL;
	/* After a rejected key the message is still kept (and counted as
	 * undelivered at the end): nothing is sent. */
	ts = civis_tsclock_next(&r->clock, read_ns);
	rc = civis_batch_add(r->batch, msg ? msg : "", len, level, ts);
	if (rc == CIVIS_ETOOBIG) {
		seal(r);
		rc = civis_batch_add(r->batch, msg ? msg : "", len, level, ts);
	}
	if (rc != CIVIS_OK) {
		r->ls.dropped++;
		return rc;
	}
	if (r->batch_opened == 0)
		r->batch_opened = civis_now_ns();
	if (civis_batch_count(r->batch) >= r->o.batch_lines)
		seal(r);
	return CIVIS_OK;
}

void
civis_run_log_flush(civis_run *r)
{
	if (r != NULL)
		seal(r);
}

/* ---------------------------------------------------------------- bodies */

static size_t
body_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct run_sending *sd = ud;
	size_t got = 0;

	if (civis_logq_chunk_read(sd->r->q, sd->chunk, sd->off, buf, size * nitems, &got) != CIVIS_OK)
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
	struct run_sending *sd = ud;

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
	struct run_sending *sd = ud;

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

/* ---------------------------------------------------------------- sending */

static void
on_resume(civis_loop *loop, void *ud)
{
	civis_run *r = ud;

	(void)loop;
	r->resume = 0;
	pump(r);
}

static void
on_sent(void *ud, const civis_http_result *res)
{
	struct run_sending *sd = ud;
	civis_run *r = sd->r;
	uint32_t n = civis_logq_chunk_lines(sd->chunk);

	r->ls.ambiguous += res->ambiguous + sd->rewinds;
	sd->used = 0;
	sd->req = NULL;
	r->inflight--;
	if (res->status == CIVIS_OK) {
		civis_logq_ack(r->q, sd->chunk);
		r->ls.delivered += n;
		r->ls.requests++;
	} else if (res->status == CIVIS_ECANCELED) {
		civis_logq_nack(r->q, sd->chunk);
		return;
	} else if (res->status == CIVIS_EAUTH) {
		civis_logq_nack(r->q, sd->chunk);
		civis__run_auth_rejected(r);
		return;
	} else if (res->http_code >= 400 && res->http_code < 500 && res->http_code != 408 &&
	           res->http_code != 429) {
		/* The API refuses this batch for good: say so, don't retry forever. */
		civis_logq_ack(r->q, sd->chunk);
		r->ls.dropped += n;
		civis__run_say(r, "the run log refused %u lines: %s", n, res->error);
	} else {
		/* Retries ran out: keep the lines and try again a little later. */
		civis_logq_nack(r->q, sd->chunk);
		if (r->o.verbose)
			civis__run_say(r, "log batch not delivered yet: %s", res->error);
		if (!r->resume)
			(void)civis_loop_add_timer(r->loop, civis_now_ns() + 2000000000ULL, on_resume,
			                           r, &r->resume);
		return;
	}
	pump(r);
}

/* Start one log request for chunk c in the free slot sd. */
static int
start_one(civis_run *r, struct run_sending *sd, civis_logq_chunk *c)
{
	civis_http_spec spec;

	memset(sd, 0, sizeof(*sd));
	sd->r = r;
	sd->chunk = c;
	sd->used = 1;
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = r->logs_path;
	spec.what = "log batch";
	spec.content_type = "application/json";
	/* Every body is streamed by body_setup (memory or spool alike), which
	 * sets its own length, so that libcurl's silent resends are seen
	 * (body_seek); spec.body_len stays 0 without spec.body (http says
	 * EINVAL otherwise). */
	spec.body_fn = body_setup;
	spec.body_ud = sd;
	spec.retry = &r->log_retry;
	spec.done = on_sent;
	spec.done_ud = sd;
	r->inflight++;
	return civis_client_call(r->client, &spec, &sd->req);
}

/* Start as many log requests as the in-flight limit allows. */
static void
pump(civis_run *r)
{
	unsigned max = r->o.max_inflight;

	if (r->auth_dead || r->resume)
		return;
	while (r->inflight < max) {
		struct run_sending *sd = NULL;
		civis_logq_chunk *c = NULL;
		int rc;

		for (unsigned i = 0; i < max; i++)
			if (!r->send[i].used) {
				sd = &r->send[i];
				break;
			}
		if (!sd)
			return;
		rc = civis_logq_take(r->q, &c);
		if (rc == CIVIS_EPROTO) {
			/* corrupt spool records were dropped (and counted): go on */
			civis__run_say(r, "%s", civis_logq_last_error(r->q));
			continue;
		}
		if (rc != CIVIS_OK || !c)
			return;
		rc = start_one(r, sd, c);
		if (rc != CIVIS_OK) {
			r->inflight--;
			sd->used = 0;
			civis_logq_nack(r->q, c);
			if (rc == CIVIS_EAUTH) {
				civis__run_auth_rejected(r);
			} else if (!r->start_failed) {
				/* Never silent: the next tick tries again. */
				r->start_failed = 1;
				civis__run_say(r, "cannot start a log request: %s", civis_strerror(rc));
			}
			return;
		}
		r->start_failed = 0;
	}
}

/* ---------------------------------------------------------------- timer */

static void
on_tick(civis_loop *loop, void *ud)
{
	civis_run *r = ud;
	uint64_t now = civis_now_ns(), half = r->o.flush_ns / 2;
	uint64_t dropped;
	struct civis_logq_stats qs;

	if (r->batch_opened && now - r->batch_opened >= half)
		seal(r);
	civis_logq_stats(r->q, &qs);
	if (qs.spool_disk > r->spool_peak)
		r->spool_peak = qs.spool_disk;
	if (!r->auth_dead && civis_client_auth_rejected(r->client))
		civis__run_auth_rejected(r);
	dropped = civis_logq_take_dropped(r->q);
	if (dropped)
		civis__run_note(r, "warn", "%llu log lines were dropped: %s",
		                (unsigned long long)dropped, civis_logq_last_error(r->q));
	pump(r);
	(void)civis_loop_add_timer(loop, now + (half ? half : 1), on_tick, r, &r->tick);
}

/* ---------------------------------------------------------------- life */

int
civis__run_logs_init(civis_run *r, char *err, size_t errlen)
{
	civis_logq_opts qo;
	int rc;

	if (r->o.max_inflight == 0)
		r->o.max_inflight = 4;
	if (r->o.max_inflight > RUN_MAX_INFLIGHT)
		r->o.max_inflight = RUN_MAX_INFLIGHT;
	if (r->o.flush_ns < 10000000ULL)
		r->o.flush_ns = 10000000ULL;
	if (r->o.batch_lines == 0)
		r->o.batch_lines = CIVIS_BATCH_DEFAULT_MESSAGES;
	if ((rc = civis_batch_new(&r->batch, r->o.batch_lines, r->o.batch_bytes)) != CIVIS_OK) {
		(void)snprintf(err, errlen, "cannot set up the run log: %s", civis_strerror(rc));
		return rc;
	}
	memset(&qo, 0, sizeof(qo));
	qo.mem_cap = r->o.mem_max;
	qo.spool_cap = r->o.spool_max;
	qo.spool_dir = r->o.spool_dir;
	if ((rc = civis_logq_new(&r->q, &qo, err, errlen)) != CIVIS_OK)
		return rc;
	civis_retry_policy_default(&r->log_retry);
	r->log_retry.max_attempts = 0;       /* until delivered; the caller bounds the wait */
	r->log_retry.base_ms = 250;
	r->log_retry.cap_ms = 5000;
	r->log_retry.retry_ambiguous = 1;
	rc = civis_loop_add_timer(r->loop, civis_now_ns() + r->o.flush_ns / 2, on_tick, r, &r->tick);
	if (rc != CIVIS_OK)
		(void)snprintf(err, errlen, "cannot set up the run log: %s", civis_strerror(rc));
	return rc;
}

void
civis__run_logs_free(civis_run *r)
{
	/* Requests still in flight end here, with CIVIS_ECANCELED. */
	for (unsigned i = 0; i < RUN_MAX_INFLIGHT; i++)
		if (r->send[i].used && r->send[i].req)
			civis_http_cancel(civis_client_http(r->client), r->send[i].req);
	if (r->tick)
		civis_loop_cancel_timer(r->loop, r->tick);
	if (r->resume)
		civis_loop_cancel_timer(r->loop, r->resume);
	r->tick = r->resume = 0;
	civis_batch_free(r->batch);
	civis_logq_free(r->q);
	r->batch = NULL;
	r->q = NULL;
}

int
civis_run_log_idle(const civis_run *r)
{
	struct civis_logq_stats qs;

	if (r == NULL || r->auth_dead)
		return 1;
	if (r->inflight || civis_batch_count(r->batch))
		return 0;
	civis_logq_stats(r->q, &qs);
	return qs.mem_chunks + qs.disk_chunks + qs.inflight_chunks == 0;
}

void
civis_run_log_stats_get(const civis_run *r, civis_run_log_stats *st)
{
	struct civis_logq_stats qs;

	memset(st, 0, sizeof(*st));
	if (r == NULL)
		return;
	*st = r->ls;
	civis_logq_stats(r->q, &qs);
	st->undelivered = qs.mem_lines + qs.disk_lines + qs.inflight_lines +
	                  civis_batch_count(r->batch);
	st->spool_bytes = qs.spool_disk > r->spool_peak ? qs.spool_disk : r->spool_peak;
	st->dropped += qs.dropped_lines;
	st->mem_peak = qs.mem_peak;
}
