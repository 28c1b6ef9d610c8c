/* run_logs.c: the run log. Messages -> JSON batch (civis_batch) -> log queue
 * (civis_logq: memory, then spool) -> POST .../logs, several in flight,
 * acknowledged or retried until delivered. See run.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "civis/civis.h"
#include "run_int.h"

static void pump(civis_run *r);

/* "1 MiB", "1.5 MiB", "512 KiB" */
static void
human_size(uint64_t n, char *buf, size_t len)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	uint64_t div = 1;
	unsigned u = 0;

	while (u < 4 && n >= div * 1024) {
		div *= 1024;
		u++;
	}
	if (n % div == 0)
		(void)snprintf(buf, len, "%llu %s", (unsigned long long)(n / div), units[u]);
	else
		(void)snprintf(buf, len, "%.1f %s", (double)n / (double)div, units[u]);
}

/* The queue has no spool (its directory is unusable): say so once, in the
 * run log too, and from now on seal batches at a quarter of the memory so
 * that several fit. */
static void
memory_only_note(civis_run *r)
{
	struct civis_logq_stats qs;
	char cap[32];

	if (r->memonly_said)
		return;
	civis_logq_stats(r->q, &qs);
	if (!qs.spool_gone)
		return;
	r->memonly_said = 1;
	r->memonly_seal = qs.mem_cap / 4;
	human_size(qs.mem_cap, cap, sizeof(cap));
	civis__run_note(r, "warn", "no writable directory for the log spool (%s: %s): the run log "
	                "is kept in memory only (--log-memory-max %s); the command waits when it "
	                "is full", civis_logq_dir(r->q), strerror(qs.spool_gone), cap);
}

/* Push one sealed body: CIVIS_OK (kept, or dropped and counted by the
 * queue: said here), or CIVIS_EFULL (not kept: hold it). */
static int
push_body(civis_run *r, const char *body, size_t len, uint32_t n, uint64_t first_ns,
          uint64_t last_ns)
{
	int rc = civis_logq_push(r->q, body, len, n, first_ns, last_ns);

	if (rc == CIVIS_EFULL)
		return rc;
	if (rc != CIVIS_OK)   /* counted by the queue; reported at the next tick */
		civis__run_say(r, "could not queue %u log lines: %s", n, civis_logq_last_error(r->q));
	return CIVIS_OK;
}

/* The held batches, oldest first, while the queue takes them. */
static void
push_held(civis_run *r)
{
	struct run_held *h;

	while ((h = r->held) != NULL &&
	       push_body(r, h->body, h->len, h->nlines, h->first_ns, h->last_ns) == CIVIS_OK) {
		r->held = h->next;
		if (r->held == NULL)
			r->held_tail = NULL;
		r->held_lines -= h->nlines;
		free(h);
	}
}

/* Keep a copy of the refused open batch, behind the ones held before it.
 * Without memory for it, it is dropped and counted: never silently. */
static void
hold(civis_run *r, const char *body, size_t len, uint32_t n)
{
	struct run_held *h;

	if (r->auth_dead) {
		/* nothing will be sent again: don't make the command wait */
		r->ls.dropped += n;
		return;
	}
	h = malloc(sizeof(*h) + len);
	if (h == NULL) {
		r->ls.dropped += n;
		civis__run_say(r, "out of memory: %u log lines dropped", n);
		return;
	}
	h->next = NULL;
	h->first_ns = civis_batch_first_ns(r->batch);
	h->last_ns = civis_batch_last_ns(r->batch);
	h->nlines = n;
	h->len = len;
	memcpy(h->body, body, len);
	if (r->held_tail)
		r->held_tail->next = h;
	else
		r->held = h;
	r->held_tail = h;
	r->held_lines += n;
}

/* The open batch goes to the queue (after the held ones, to keep order). */
static void
seal_only(civis_run *r)
{
	size_t len, n = civis_batch_count(r->batch);
	const char *body;

	r->flush_wanted = 0;
	push_held(r);
	if (n == 0)
		return;
	body = civis_batch_body(r->batch, &len);
	if (r->held != NULL ||
	    push_body(r, body, len, (uint32_t)n, civis_batch_first_ns(r->batch),
	              civis_batch_last_ns(r->batch)) == CIVIS_EFULL)
		hold(r, body, len, (uint32_t)n);
	civis_batch_reset(r->batch);
	r->batch_opened = 0;
	r->batch_held = 0;
	memory_only_note(r);
}

static void
seal(civis_run *r)
{
	seal_only(r);
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
	else if (r->memonly_seal) {
		size_t blen;

		(void)civis_batch_body(r->batch, &blen);
		if (blen >= r->memonly_seal)
			seal(r);
	}
	return CIVIS_OK;
}

void
civis_run_log_flush(civis_run *r)
{
	if (r == NULL || civis_batch_count(r->batch) == 0)
		return;
	/* With log requests in flight, the batch goes when they are done
	 * (pump), or at the next tick: what comes meanwhile shares its
	 * request (notes made one by one, after the command's exit). */
	r->flush_wanted = 1;
	if (r->inflight == 0)
		seal(r);
	else
		pump(r);
}

void
civis_run_log_final(civis_run *r)
{
	if (r == NULL)
		return;
	r->final = 1;
	civis_run_log_flush(r);
}

/* ---------------------------------------------------------------- bodies */

/* The request body: the chunk, read at any offset (http streams it, and
 * reads it from 0 again for a retry or a rewind). */
static int
body_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	struct run_sending *sd = ud;

	*got = 0;
	if (off > (uint64_t)civis_logq_chunk_len(sd->chunk))
		return CIVIS_EINVAL;
	return civis_logq_chunk_read(sd->r->q, sd->chunk, (size_t)off, buf, n, got);
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

	r->ls.ambiguous += res->ambiguous;
	sd->used = 0;
	sd->req = NULL;
	r->inflight--;
	if (res->status == CIVIS_OK) {
		civis_logq_ack(r->q, sd->chunk);
		r->ls.delivered += n;
		r->ls.requests++;
		push_held(r);       /* the ack freed memory */
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
	/* Every body is streamed (memory or spool alike); http counts
	 * libcurl's silent resends of it in res->ambiguous. */
	spec.body_size = civis_logq_chunk_len(c);
	spec.body_read = body_read;
	spec.body_ud = sd;
	spec.retry = &r->log_retry;
	spec.done = on_sent;
	spec.done_ud = sd;
	/* the final flush goes before everything else waiting for the budget */
	spec.prio = r->final ? CIVIS_HTTP_PRIO_FINAL : CIVIS_HTTP_PRIO_NORMAL;
	r->inflight++;
	return civis_client_call(r->client, &spec, &sd->req);
}

/* A budget is set (civis_http_set_budget) and half of it or more is used in
 * the window; *hold_ns is then how long a batch may wait (a tenth of the
 * window). */
static int
budget_tight(civis_run *r, uint64_t *hold_ns)
{
	civis_http *http = civis_client_http(r->client);
	civis_http_rate_stats st;

	civis_http_get_rate_stats(http, &st);
	*hold_ns = st.window_ms * 100000ULL;
	if (st.budget == 0 || st.budget >= st.limit)
		return 0;      /* no budget: only the 429 pause */
	return civis_http_budget_left(http, CIVIS_HTTP_PRIO_NORMAL) * 2 <= st.budget;
}

/* Whether the budget lets a log request start now (else the next tick
 * tries again): the run log leaves the last fifth of the budget to
 * heartbeats and cancel polls (LOW waits from nine tenths), so that a flood
 * cannot hide a cancel. After civis_run_log_final the run log is not held. */
static int
log_slot(civis_run *r)
{
	civis_http *http = civis_client_http(r->client);
	civis_http_rate_stats st;

	if (r->final)
		return 1;
	civis_http_get_rate_stats(http, &st);
	if (st.budget == 0 || st.budget >= st.limit)
		return 1;
	return civis_http_budget_left(http, CIVIS_HTTP_PRIO_NORMAL) > st.budget / 5;
}

/* Start as many log requests as the in-flight limit and the budget allow. */
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
		if (!sd || !log_slot(r))
			return;
		rc = civis_logq_take(r->q, &c);
		if (rc == CIVIS_EPROTO) {
			/* corrupt spool records were dropped (and counted): go on */
			civis__run_say(r, "%s", civis_logq_last_error(r->q));
			continue;
		}
		if (rc == CIVIS_OK && !c && r->flush_wanted && r->inflight == 0 &&
		    civis_batch_count(r->batch)) {
			seal_only(r);       /* a flush waited for the requests before it */
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

	if (r->batch_opened && now - r->batch_opened >= half) {
		uint64_t hold;

		/* Under a tight budget a batch waits longer (up to its caps,
		 * where civis_run_log seals it) rather than make more requests. */
		if (r->final || !budget_tight(r, &hold) || now - r->batch_opened >= hold)
			seal(r);
		else if (!r->batch_held && (r->batch_held = 1))
			r->ls.held++;
	}
	civis_logq_stats(r->q, &qs);
	if (qs.spool_disk > r->spool_peak)
		r->spool_peak = qs.spool_disk;
	if (!r->auth_dead && civis_client_auth_rejected(r->client))
		civis__run_auth_rejected(r);
	push_held(r);
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
	while (r->held) {
		struct run_held *h = r->held;

		r->held = h->next;
		free(h);
	}
	r->held_tail = NULL;
	r->held_lines = 0;
	civis_batch_free(r->batch);
	civis_logq_free(r->q);
	r->batch = NULL;
	r->q = NULL;
}

int
civis_run_log_full(const civis_run *r)
{
	return r != NULL && r->held != NULL && !r->auth_dead;
}

int
civis_run_log_idle(const civis_run *r)
{
	struct civis_logq_stats qs;

	if (r == NULL || r->auth_dead)
		return 1;
	if (r->inflight || r->held || civis_batch_count(r->batch))
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
	st->undelivered = qs.mem_lines + qs.disk_lines + qs.inflight_lines + r->held_lines +
	                  civis_batch_count(r->batch);
	st->spool_bytes = qs.spool_disk > r->spool_peak ? qs.spool_disk : r->spool_peak;
	st->dropped += qs.dropped_lines;
	st->mem_peak = qs.mem_peak;
}
