/* run_watch.c: heartbeats and the cancel poll of a run. See run.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "civis/civis.h"
#include "run_int.h"

uint64_t
civis_run_jitter(uint64_t interval_ns, uint64_t rnd)
{
	uint64_t span = interval_ns / 5;    /* +-10% */

	if (span == 0)
		return interval_ns;
	return interval_ns - interval_ns / 10 + rnd % span;
}

static uint64_t
next_rand(civis_run *r)
{
	/* xorshift64*: jitter needs no more than this */
	r->rnd ^= r->rnd >> 12;
	r->rnd ^= r->rnd << 25;
	r->rnd ^= r->rnd >> 27;
	return r->rnd * 2685821657736338717ULL;
}

static void hb_fire(civis_loop *loop, void *ud);

static void
hb_done(void *ud, const civis_http_result *res)
{
	civis_run *r = ud;

	r->hb_req = NULL;
	if (res->status == CIVIS_ECANCELED)
		return;
	if (res->status == CIVIS_OK) {
		r->ws.heartbeats_ok++;
		return;
	}
	r->ws.heartbeats_failed++;
	if (civis__run_optional_gone(r, &r->hb_opt, res->http_code)) {
		r->ws.heartbeats_off = 1;
		if (r->hb_timer)
			civis_loop_cancel_timer(r->loop, r->hb_timer);
		r->hb_timer = 0;
		return;
	}
	if (r->o.verbose || res->status != CIVIS_EAUTH)
		civis__run_say(r, "heartbeat failed: %s", res->error);
}

static void
hb_fire(civis_loop *loop, void *ud)
{
	civis_run *r = ud;
	civis_http_spec spec;

	r->hb_timer = 0;
	if (civis_client_auth_rejected(r->client) || r->hb_opt.off)
		return;
	if (!r->hb_req) {
		memset(&spec, 0, sizeof(spec));
		spec.method = "POST";
		spec.url = r->hb_path;
		spec.what = "heartbeat";
		spec.retry = &r->hb_retry;
		spec.done = hb_done;
		spec.done_ud = r;
		if (civis_client_call(r->client, &spec, &r->hb_req) != CIVIS_OK)
			r->hb_req = NULL;
	}
	/* hb_done may have run already and turned heartbeats off */
	if (r->hb_opt.off)
		return;
	(void)civis_loop_add_timer(loop, civis_now_ns() +
	                           civis_run_jitter(r->w.heartbeat_ns, next_rand(r)),
	                           hb_fire, r, &r->hb_timer);
}

static void
poll_done(void *ud, const civis_http_result *res)
{
	civis_run *r = ud;
	civis_run_state rs;
	char err[256];

	r->poll_req = NULL;
	if (res->status == CIVIS_ECANCELED)
		return;
	if (res->status != CIVIS_OK) {
		r->ws.polls_failed++;
		/* a poll that keeps failing means a cancel would go unseen: say
		 * so once, every time with -v */
		if (r->o.verbose || !r->poll_warned)
			civis__run_say(r, "cancel poll failed: %s%s", res->error,
			               r->o.verbose ? "" : " (further failures are shown with -v)");
		r->poll_warned = 1;
		return;
	}
	if (civis_parse_run_state(res->body, res->body_len, &rs, err, sizeof(err)) != CIVIS_OK) {
		r->ws.polls_failed++;
		civis__run_say(r, "cancel poll: the API's answer was malformed: %s", err);
		return;
	}
	r->ws.polls_ok++;
	if (!r->cancelled && (rs.is_cancel_requested || strcmp(rs.state, "cancelled") == 0)) {
		r->cancelled = 1;
		if (r->poll_timer) {
			civis_loop_cancel_timer(r->loop, r->poll_timer);
			r->poll_timer = 0;
		}
		if (r->w.on_cancel)
			r->w.on_cancel(r->w.ud, rs.is_cancel_requested ? "cancel requested"
			                                               : "the run's state is cancelled");
	}
}

static void
poll_fire(civis_loop *loop, void *ud)
{
	civis_run *r = ud;
	civis_http_spec spec;

	r->poll_timer = 0;
	if (r->cancelled || civis_client_auth_rejected(r->client))
		return;
	if (!r->poll_req) {
		memset(&spec, 0, sizeof(spec));
		spec.method = "GET";
		spec.url = r->run_path;
		spec.what = "cancel poll";
		spec.retry = &r->poll_retry;
		spec.max_response = 64u << 10;
		spec.done = poll_done;
		spec.done_ud = r;
		if (civis_client_call(r->client, &spec, &r->poll_req) != CIVIS_OK)
			r->poll_req = NULL;
	}
	if (r->cancelled)
		return;
	(void)civis_loop_add_timer(loop, civis_now_ns() +
	                           civis_run_jitter(r->w.cancel_poll_ns, next_rand(r)),
	                           poll_fire, r, &r->poll_timer);
}

int
civis_run_watch(civis_run *r, const civis_run_watch_opts *o)
{
	int rc;

	if (r == NULL || o == NULL || r->watching)
		return CIVIS_EINVAL;
	r->w = *o;
	r->watching = 1;
	if (getrandom(&r->rnd, sizeof(r->rnd), GRND_NONBLOCK) != (ssize_t)sizeof(r->rnd) || !r->rnd)
		r->rnd = civis_now_ns() | 1;
	/* A heartbeat is worth retrying only until the next one is due. */
	civis_retry_policy_default(&r->hb_retry);
	r->hb_retry.deadline_ms = o->heartbeat_ns / 1000000;
	civis_retry_policy_default(&r->poll_retry);
	r->poll_retry.deadline_ms = o->cancel_poll_ns / 1000000;
	if (o->heartbeat_ns)
		hb_fire(r->loop, r);
	if (!o->cancel_poll_ns)
		return CIVIS_OK;
	rc = civis_loop_add_timer(r->loop, civis_now_ns() +
	                          civis_run_jitter(o->cancel_poll_ns, next_rand(r)),
	                          poll_fire, r, &r->poll_timer);
	if (rc != CIVIS_OK)
		civis__run_watch_free(r);
	return rc;
}

void
civis__run_watch_free(civis_run *r)
{
	if (r->hb_timer)
		civis_loop_cancel_timer(r->loop, r->hb_timer);
	if (r->poll_timer)
		civis_loop_cancel_timer(r->loop, r->poll_timer);
	r->hb_timer = r->poll_timer = 0;
	if (r->hb_req)
		civis_http_cancel(civis_client_http(r->client), r->hb_req);
	if (r->poll_req)
		civis_http_cancel(civis_client_http(r->client), r->poll_req);
}

void
civis_run_watch_stats_get(const civis_run *r, civis_run_watch_stats *st)
{
	if (r == NULL) {
		memset(st, 0, sizeof(*st));
		return;
	}
	*st = r->ws;
}
