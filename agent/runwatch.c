/* runwatch.c: heartbeats and the cancel poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "civis/civis.h"
#include "runwatch.h"

struct agent_runwatch {
	agent_runwatch_opts o;
	civis_loop *loop;
	civis_client *client;
	civis_timer_id hb_timer, poll_timer;
	civis_http_req *hb_req, *poll_req;
	civis_retry_policy hb_retry, poll_retry;
	char hb_path[128], run_path[128];
	int cancelled;
	int poll_warned;
	uint64_t rnd;
	agent_runwatch_stats stats;
};

uint64_t
agent_runwatch_jitter(uint64_t interval_ns, uint64_t rnd)
{
	uint64_t span = interval_ns / 5;    /* +-10% */

	if (span == 0)
		return interval_ns;
	return interval_ns - interval_ns / 10 + rnd % span;
}

static uint64_t
next_rand(agent_runwatch *rw)
{
	/* xorshift64*: jitter needs no more than this */
	rw->rnd ^= rw->rnd >> 12;
	rw->rnd ^= rw->rnd << 25;
	rw->rnd ^= rw->rnd >> 27;
	return rw->rnd * 2685821657736338717ULL;
}

static void hb_fire(civis_loop *loop, void *ud);
static void poll_fire(civis_loop *loop, void *ud);

static void
hb_done(void *ud, const civis_http_result *res)
{
	agent_runwatch *rw = ud;

	rw->hb_req = NULL;
	if (res->status == CIVIS_ECANCELED)
		return;
	if (res->status == CIVIS_OK)
		rw->stats.heartbeats_ok++;
	else {
		rw->stats.heartbeats_failed++;
		if (rw->o.verbose || res->status != CIVIS_EAUTH)
			fprintf(stderr, "civis-agent: heartbeat failed: %s\n", res->error);
	}
}

static void
hb_fire(civis_loop *loop, void *ud)
{
	agent_runwatch *rw = ud;
	civis_http_spec spec;

	rw->hb_timer = 0;
	if (civis_client_auth_rejected(rw->client))
		return;
	if (!rw->hb_req) {
		memset(&spec, 0, sizeof(spec));
		spec.method = "POST";
		spec.url = rw->hb_path;
		spec.what = "heartbeat";
		spec.retry = &rw->hb_retry;
		spec.done = hb_done;
		spec.done_ud = rw;
		if (civis_client_call(rw->client, &spec, &rw->hb_req) != CIVIS_OK)
			rw->hb_req = NULL;
	}
	(void)civis_loop_add_timer(loop, civis_now_ns() +
	                           agent_runwatch_jitter(rw->o.heartbeat_ns, next_rand(rw)),
	                           hb_fire, rw, &rw->hb_timer);
}

static void
poll_done(void *ud, const civis_http_result *res)
{
	agent_runwatch *rw = ud;
	civis_run_state rs;
	char err[256];

	rw->poll_req = NULL;
	if (res->status == CIVIS_ECANCELED)
		return;
	if (res->status != CIVIS_OK) {
		rw->stats.polls_failed++;
		/* a poll that keeps failing means a cancel would go unseen: say
		 * so once, every time with -v */
		if (rw->o.verbose || !rw->poll_warned)
			fprintf(stderr, "civis-agent: cancel poll failed: %s%s\n", res->error,
			        rw->o.verbose ? "" : " (further failures are shown with -v)");
		rw->poll_warned = 1;
		return;
	}
	if (civis_parse_run_state(res->body, res->body_len, &rs, err, sizeof(err)) != CIVIS_OK) {
		rw->stats.polls_failed++;
		fprintf(stderr, "civis-agent: cancel poll: the API's answer was malformed: %s\n", err);
		return;
	}
	rw->stats.polls_ok++;
	if (!rw->cancelled && (rs.is_cancel_requested || strcmp(rs.state, "cancelled") == 0)) {
		rw->cancelled = 1;
		if (rw->poll_timer) {
			civis_loop_cancel_timer(rw->loop, rw->poll_timer);
			rw->poll_timer = 0;
		}
		rw->o.on_cancel(rw->o.ud, rs.is_cancel_requested ? "cancel requested"
		                                                  : "the run's state is cancelled");
	}
}

static void
poll_fire(civis_loop *loop, void *ud)
{
	agent_runwatch *rw = ud;
	civis_http_spec spec;

	rw->poll_timer = 0;
	if (rw->cancelled || civis_client_auth_rejected(rw->client))
		return;
	if (!rw->poll_req) {
		memset(&spec, 0, sizeof(spec));
		spec.method = "GET";
		spec.url = rw->run_path;
		spec.what = "cancel poll";
		spec.retry = &rw->poll_retry;
		spec.max_response = 64u << 10;
		spec.done = poll_done;
		spec.done_ud = rw;
		if (civis_client_call(rw->client, &spec, &rw->poll_req) != CIVIS_OK)
			rw->poll_req = NULL;
	}
	(void)civis_loop_add_timer(loop, civis_now_ns() +
	                           agent_runwatch_jitter(rw->o.cancel_poll_ns, next_rand(rw)),
	                           poll_fire, rw, &rw->poll_timer);
}

int
agent_runwatch_new(agent_runwatch **out, civis_loop *loop, civis_client *client,
                   const agent_runwatch_opts *o)
{
	agent_runwatch *rw;
	int rc;

	*out = NULL;
	rw = calloc(1, sizeof(*rw));
	if (!rw)
		return CIVIS_ENOMEM;
	rw->o = *o;
	rw->loop = loop;
	rw->client = client;
	if (getrandom(&rw->rnd, sizeof(rw->rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rw->rnd) || !rw->rnd)
		rw->rnd = civis_now_ns() | 1;
	if ((rc = civis_client_run_path(client, "/heartbeats", rw->hb_path, sizeof(rw->hb_path))) ||
	    (rc = civis_client_run_path(client, "", rw->run_path, sizeof(rw->run_path))))
		goto fail;
	/* A heartbeat is worth retrying only until the next one is due. */
	civis_retry_policy_default(&rw->hb_retry);
	rw->hb_retry.deadline_ms = o->heartbeat_ns / 1000000;
	civis_retry_policy_default(&rw->poll_retry);
	rw->poll_retry.deadline_ms = o->cancel_poll_ns / 1000000;
	hb_fire(loop, rw);
	rc = civis_loop_add_timer(loop, civis_now_ns() +
	                          agent_runwatch_jitter(o->cancel_poll_ns, next_rand(rw)),
	                          poll_fire, rw, &rw->poll_timer);
	if (rc != CIVIS_OK)
		goto fail;
	*out = rw;
	return CIVIS_OK;
fail:
	agent_runwatch_free(rw);
	return rc;
}

void
agent_runwatch_free(agent_runwatch *rw)
{
	if (!rw)
		return;
	if (rw->hb_timer)
		civis_loop_cancel_timer(rw->loop, rw->hb_timer);
	if (rw->poll_timer)
		civis_loop_cancel_timer(rw->loop, rw->poll_timer);
	if (rw->hb_req)
		civis_http_cancel(civis_client_http(rw->client), rw->hb_req);
	if (rw->poll_req)
		civis_http_cancel(civis_client_http(rw->client), rw->poll_req);
	free(rw);
}

void
agent_runwatch_stats_get(const agent_runwatch *rw, agent_runwatch_stats *st)
{
	*st = rw->stats;
}
