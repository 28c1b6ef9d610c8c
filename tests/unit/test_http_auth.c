/* test_http_auth.c: where the key goes and what may hold a call: the key
 * only to the origin, never through a proxy in clear, presigned URLs
 * https-only but on loopback, the API budget and the 429 pause, and
 * civis_client_call's headers and 401 latch, against the scripted server
 * (http_testserver.h). */
#include "http_testserver.h"

static const struct step steps_two_ok[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_auth_only_to_origin(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	civis_http_spec s;
	char origin[64], other[64], url[96];
	static const char *const smuggled[] = { "authorization: Bearer x", NULL };
	civis_http_req *req = (civis_http_req *)&g3;

	(void)state;
	server_start(steps_two_ok, 3);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/api/", S.port);
	snprintf(other, sizeof(other), "http://127.0.0.1:%d/", S.port + 1 == 65536 ? 1 : S.port + 1);

	/* under the origin: carries the key */
	s = spec_for("GET", "/api/runs", &g1);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic azE6\r\n"));

	/* a presigned upload: no credentials at all */
	s = spec_for("PUT", "/bucket/part?X-Amz-Signature=s", &g2);
	s.body = "0123456789";
	s.body_len = 10;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_null(strcasestr(S.reqs[1], "\r\nAuthorization:"));
	assert_non_null(strstr(S.reqs[1], "PUT /bucket/part?X-Amz-Signature=s HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 10\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\n0123456789"));
	assert_null(strcasestr(S.reqs[1], "\r\nExpect:"));
	assert_null(strcasestr(S.reqs[1], "\r\nTransfer-Encoding:"));

	/* and an Authorization header smuggled into a plain request is refused */
	s.headers = smuggled;
	assert_int_equal(civis_http_start(F.http, &s, &req), CIVIS_EUNSAFE);
	assert_null(req);

	/* refused: another port, outside the path, another scheme, user info */
	s = spec_for("GET", "/api/runs", &g3);
	snprintf(url, sizeof(url), "%sapi/x", other);
	s.url = url;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/other", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://u:p@127.0.0.1:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	snprintf(url, sizeof(url), "http://127.0.0.1.evil.com:%d/api/x", S.port);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	s.url = "not a url";
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k1:", NULL), CIVIS_EUNSAFE);
	assert_int_equal(g3.called, 0);
	assert_int_equal(server_nreqs(), 2);

	/* default ports are normalized: :443 and nothing are the same origin;
	 * cancel before anything can go out */
	s.url = "https://api.example.invalid/v1/x";
	req = NULL;
	assert_int_equal(civis__http_start_auth(F.http, &s, "https://API.example.invalid:443/v1/",
	                                       "k1:", &req), CIVIS_OK);
	assert_non_null(req);
	civis_http_cancel(F.http, req);
	assert_int_equal(g3.called, 1);
	assert_int_equal(g3.status, CIVIS_ECANCELED);
	assert_string_equal(g3.error, "test: GET /v1/x: canceled");
	assert_int_equal(civis_http_pending(F.http), 0);
}

static void
test_free_cancels_in_flight(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_stall, 1);
	s = spec_for("GET", "/stall", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	/* and one waiting on its retry timer */
	s = spec_for("GET", "/", &g2);
	s.url = "http://127.0.0.1:1/";
	F.fast.base_ms = 60000;
	F.fast.cap_ms = 60000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	/* the first is stalled at the server, the second waits to retry */
	{
		uint64_t end = civis_now_ns() + 300 * MS;

		while (civis_now_ns() < end)
			assert_int_equal(civis_loop_run_once(F.loop, 50 * MS), CIVIS_OK);
	}
	assert_int_equal(server_nreqs(), 1);
	assert_int_equal(g1.called + g2.called, 0);
	assert_int_equal(civis_http_pending(F.http), 2);
	civis_http_free(F.http);
	F.http = NULL;
	assert_int_equal(g1.called, 1);
	assert_int_equal(g1.status, CIVIS_ECANCELED);
	assert_int_equal(g2.called, 1);
	assert_int_equal(g2.status, CIVIS_ECANCELED);
	assert_string_equal(g2.error, "test: GET /: canceled");
}

/* ---------------------------------------------------------- proxies */

static const char *const proxy_vars[] = {
	"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
	"no_proxy", "NO_PROXY", NULL
};

/* A new civis_http that reads every proxy variable as `value` (NULL: unset). */
static void
http_with_proxy_env(const char *value)
{
	size_t i;

	civis_http_free(F.http);
	for (i = 0; proxy_vars[i] != NULL; i++) {
		if (value != NULL && strstr(proxy_vars[i], "no_") == NULL &&
		    strstr(proxy_vars[i], "NO_") == NULL)
			setenv(proxy_vars[i], value, 1);
		else
			unsetenv(proxy_vars[i]);
	}
	assert_int_equal(civis_http_new(&F.http, F.loop), CIVIS_OK);
}

/* Every proxy variable names a recording server (here the scripted one),
 * yet a plain-http loopback request with the key goes direct: the request
 * line is origin-form, never "GET http://..." to a proxy. */
static void
test_plain_http_ignores_proxy_env(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char origin[64], proxy[64], shown[160];

	(void)state;
	server_start(steps_two_ok, 3);
	snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", S.port);
	http_with_proxy_env(proxy);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_proxy_for(F.http, origin, shown, sizeof(shown)), CIVIS_OK);
	assert_string_equal(shown, "");
	s = spec_for("GET", "/direct", &g);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k3y:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	http_with_proxy_env(NULL);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "GET /direct HTTP/1.1\r\n"));
	assert_null(strstr(S.reqs[0], "http://"));
	assert_null(strcasestr(S.reqs[0], "\r\nProxy-"));
}

static const struct step steps_connect_403[] = {
	{ ANSWER_CLOSE, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n" },
};

/* https goes through HTTPS_PROXY as a CONNECT tunnel: the proxy sees the
 * host and port and its own credentials, never the key (that stays inside
 * TLS); a failure names the proxy, without its credentials. */
static void
test_https_through_proxy_tunnel(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char proxy[64], want[160], shown[160];

	(void)state;
	server_start(steps_connect_403, 1);
	snprintf(proxy, sizeof(proxy), "http://alice:pw@127.0.0.1:%d", S.port);
	http_with_proxy_env(proxy);
	assert_int_equal(civis_http_proxy_for(F.http, "https://api.example.invalid/", shown,
	                                      sizeof(shown)), CIVIS_OK);
	snprintf(want, sizeof(want), "http://127.0.0.1:%d", S.port);
	assert_string_equal(shown, want);
	F.fast.max_attempts = 1;
	s = spec_for("GET", "/x", &g);
	s.url = "https://api.example.invalid/v1/x";
	assert_int_equal(civis__http_start_auth(F.http, &s, "https://api.example.invalid/v1/",
	                                       "sekrit:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	http_with_proxy_env(NULL);
	assert_int_equal(g.status, CIVIS_ENET);
	/* libcurl's words for a refused CONNECT vary by version; ours do not */
	assert_true(strncmp(g.error, "test: GET /v1/x: ", 17) == 0);
	snprintf(want, sizeof(want), " (through the proxy http://127.0.0.1:%d)", S.port);
	assert_true(strlen(g.error) > strlen(want));
	assert_string_equal(g.error + strlen(g.error) - strlen(want), want);
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "CONNECT api.example.invalid:443 HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n"));
	assert_null(strstr(S.reqs[0], "c2Vrcml0Og"));   /* base64 of "sekrit:" */
	assert_null(strstr(S.reqs[0], "sekrit"));
	assert_null(strstr(g.error, "alice"));
}

/* A request without the key (a presigned storage URL) must be https://,
 * or http:// to a loopback host, the endpoint's rule: otherwise it fails
 * before anything is sent, with one line saying why. */
static void
test_presigned_url_must_be_https(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;
	civis_http_req *req = NULL;

	(void)state;
	server_start(NULL, 0);
	s = spec_for("PUT", "/", &g1);
	s.url = "http://Storage.Example.invalid/bucket/key?X-Amz-Signature=zz";
	s.body = "data";
	s.body_len = 4;
	assert_int_equal(civis_http_start(F.http, &s, &req), CIVIS_OK);
	assert_non_null(req);
	assert_int_equal(g1.called, 0);             /* never from inside start */
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_EUNSAFE);
	assert_int_equal(g1.attempts, 0);
	assert_string_equal(g1.error, "test: PUT /bucket/key: refused to send to "
	                    "http://storage.example.invalid: a URL without the API key must use "
	                    "https:// (http:// only to a loopback host)");
	s = spec_for("POST", "/", &g2);
	s.url = "ftp://127.0.0.1/upload";
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_EUNSAFE);
	assert_non_null(strstr(g2.error, "refused to send to ftp://127.0.0.1: "));
	assert_int_equal(server_nreqs(), 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* ---------------------------------------------------------- the budget */

static const struct step steps_four_ok_rl[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 3\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 2\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 1\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nX-RateLimit-Limit: 4\r\nX-RateLimit-Remaining: 0\r\n"
	          "Content-Length: 0\r\n\r\n" },
};

static void
run_until_all(struct got *const *gs, size_t n, uint64_t max_ns)
{
	uint64_t end = civis_now_ns() + max_ns;
	size_t i, done;

	do {
		assert_int_equal(civis_loop_run_once(F.loop, 20 * MS), CIVIS_OK);
		for (i = 0, done = 0; i < n; i++)
			done += gs[i]->called;
	} while (done < n && civis_now_ns() < end);
	for (i = 0; i < n; i++)
		assert_int_equal(gs[i]->called, 1);
}

/* A budget of 2 tries per 1.2 s window (50% of a limit of 4): two NORMAL
 * calls go, the third waits for the window, a FINAL one started last goes
 * at once; the X-RateLimit headers are read from every answer. */
static void
test_budget_holds_normal_not_final(void **state)
{
	struct got g[4] = { { 0 } };
	struct got *gs[4] = { &g[0], &g[1], &g[2], &g[3] };
	civis_http_rate_stats st;
	civis_http_spec s;
	char origin[64];
	uint64_t t0;
	int i;

	(void)state;
	server_start(steps_four_ok_rl, 4);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_set_budget(F.http, 50, 4, 1200), CIVIS_OK);
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_NORMAL), 2);
	t0 = civis_now_ns();
	for (i = 0; i < 4; i++) {
		s = spec_for("GET", "/api/x", &g[i]);
		s.prio = i == 3 ? CIVIS_HTTP_PRIO_FINAL : CIVIS_HTTP_PRIO_NORMAL;
		assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	}
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_NORMAL), 0);
	civis_http_get_rate_stats(F.http, &st);
	assert_int_equal(st.waiting, 1);
	assert_int_equal(st.used, 3);
	run_until_all(gs, 4, 5000 * MS);
	for (i = 0; i < 4; i++)
		assert_int_equal(g[i].status, CIVIS_OK);
	/* the held one went once the window had moved on: about 1.2 s */
	assert_true(g[2].at - t0 >= 1000 * MS);
	assert_true(g[0].at - t0 < 900 * MS);
	assert_true(g[1].at - t0 < 900 * MS);
	assert_true(g[3].at - t0 < 900 * MS);   /* FINAL did not wait */
	civis_http_get_rate_stats(F.http, &st);
	assert_int_equal(st.tries, 4);
	assert_int_equal(st.held, 1);
	assert_int_equal(st.max_in_window, 3);
	assert_int_equal(st.limit, 4);
	assert_int_equal(st.limit_from_api, 1);
	assert_int_equal(st.remaining, 0);
	assert_int_equal(st.http_429, 0);
	/* a storage request (no key) never counts */
	assert_int_equal(server_nreqs(), 4);
}

static const struct step steps_429_then_ok[] = {
	{ ANSWER, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nX-RateLimit-Limit: 50\r\n"
	          "X-RateLimit-Remaining: 0\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

/* A 429 on one call holds every authenticated call until its Retry-After,
 * not only the one that got it; a storage request goes on. */
static void
test_429_pauses_every_authenticated_call(void **state)
{
	struct got ga = { 0 }, gb = { 0 }, gc = { 0 };
	struct got *gs[3] = { &ga, &gb, &gc };
	civis_http_rate_stats st;
	civis_http_spec s;
	char origin[64];
	uint64_t t429, end;

	(void)state;
	server_start(steps_429_then_ok, 4);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	assert_int_equal(civis_http_set_budget(F.http, 100, 0, 0), CIVIS_OK);
	s = spec_for("POST", "/api/logs", &ga);
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	end = civis_now_ns() + 5000 * MS;
	do {
		assert_int_equal(civis_loop_run_once(F.loop, 5 * MS), CIVIS_OK);
		civis_http_get_rate_stats(F.http, &st);
	} while (st.http_429 == 0 && civis_now_ns() < end);
	assert_int_equal(st.http_429, 1);
	t429 = civis_now_ns();
	assert_int_equal(civis_http_budget_left(F.http, CIVIS_HTTP_PRIO_FINAL), 0);
	s = spec_for("GET", "/api/heartbeat", &gb);
	s.prio = CIVIS_HTTP_PRIO_FINAL;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "k:", NULL), CIVIS_OK);
	s = spec_for("PUT", "/bucket/part", &gc);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until_all(gs, 3, 5000 * MS);
	assert_int_equal(ga.status, CIVIS_OK);
	assert_int_equal(ga.attempts, 2);
	assert_int_equal(gb.status, CIVIS_OK);
	assert_int_equal(gc.status, CIVIS_OK);
	assert_true(gc.at - t429 < 700 * MS);    /* storage: not held */
	assert_true(gb.at - t429 >= 900 * MS);   /* held until Retry-After */
	civis_http_get_rate_stats(F.http, &st);
	assert_true(st.paused_ms >= 1000 && st.paused_ms <= 1100);
	assert_true(st.held >= 1);
	assert_int_equal(st.limit, 50);
	assert_int_equal(st.tries, 3);
}

/* ------------------------------------------------------ client over HTTP */

static const char *
cfg_lookup(const char *name, void *ud)
{
	const char *const *kv = ud;

	for (; kv[0] != NULL; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

static const struct step steps_client[] = {
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nnot authorized" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_client_call_headers_and_401_latch(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	civis_client_config cfg;
	civis_client *c = NULL;
	civis_http_spec s;
	char endpoint[64], err[256], path[128];
	civis_http_req *req = NULL;

	(void)state;
	server_start(steps_client, 3);
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", S.port);
	{
		const char *kv[] = { "CIVIS_API_KEY", "abcKEY123", "CIVIS_JOB_ID", "17",
		                     "CIVIS_RUN_ID", "42", "CIVIS_API_ENDPOINT", endpoint, NULL };

		assert_int_equal(civis_client_config_parse(&cfg, cfg_lookup, kv, err, sizeof(err)),
		                 CIVIS_OK);
	}
	assert_int_equal(civis_client_new(&c, F.loop, F.http, &cfg), CIVIS_OK);
	civis_client_config_dispose(&cfg);
	assert_ptr_equal(civis_client_http(c), F.http);
	assert_int_equal(civis_client_run_path(c, "/logs", path, sizeof(path)), CIVIS_OK);
	assert_string_equal(path, "scripts/containers/17/runs/42/logs");

	memset(&s, 0, sizeof(s));
	s.method = "POST";
	s.url = path;
	s.what = "log batch";
	s.body = "{\"messages\":[]}";
	s.body_len = strlen(s.body);
	s.retry = &F.fast;
	s.done = on_done;
	s.done_ud = &g1;
	assert_int_equal(civis_client_call(c, &s, &req), CIVIS_OK);
	assert_non_null(req);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[0], "POST /scripts/containers/17/runs/42/logs HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic YWJjS0VZMTIzOg==\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nUser-Agent: civis-agent/"));
	assert_non_null(strstr(S.reqs[0], "\r\nX-Civis-Job-ID: 17\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nX-Civis-Run-ID: 42\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nAccept: application/json\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strstr(S.reqs[0], "\r\nContent-Length: 15\r\n"));

	/* a GET has no Content-Type; a 401 latches */
	assert_int_equal(civis_client_run_path(c, "", path, sizeof(path)), CIVIS_OK);
	s.method = "GET";
	s.url = path;
	s.what = "run state";
	s.body = NULL;
	s.body_len = 0;
	s.done_ud = &g2;
	assert_int_equal(civis_client_auth_rejected(c), 0);
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_EAUTH);
	assert_string_equal(g2.error, "run state: GET /scripts/containers/17/runs/42: "
	                    "HTTP 401 Unauthorized: not authorized");
	assert_null(strcasestr(S.reqs[1], "\r\nContent-Type:"));
	assert_int_equal(civis_client_auth_rejected(c), 1);

	/* after it: refused at once, nothing sent, done not called */
	s.done_ud = &g3;
	assert_int_equal(civis_client_call(c, &s, &req), CIVIS_EAUTH);
	assert_null(req);
	assert_int_equal(g3.called, 0);
	assert_int_equal(server_nreqs(), 2);
	civis_client_free(c);
}

static void
test_client_refuses_other_urls(void **state)
{
	struct got g = { 0 };
	civis_client_config cfg;
	civis_client *c = NULL;
	civis_http_spec s;
	char err[256];
	const char *kv[] = { "CIVIS_API_KEY", "k", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2",
	                     "CIVIS_API_ENDPOINT", "https://api.example.invalid/", NULL };

	(void)state;
	server_start(steps_stall, 1);
	assert_int_equal(civis_client_config_parse(&cfg, cfg_lookup, (void *)kv, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(civis_client_new(&c, F.loop, F.http, &cfg), CIVIS_OK);
	assert_string_equal(civis_client_get_config(c)->endpoint, "https://api.example.invalid/");
	memset(&s, 0, sizeof(s));
	s.method = "GET";
	s.done = on_done;
	s.done_ud = &g;
	s.url = "https://evil.example.com/x";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	s.url = "//evil.example.com/x";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	s.url = "files/\r\nX: y";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_EINVAL);
	/* a call in flight is canceled by civis_client_free */
	s.url = "/files/1";
	assert_int_equal(civis_client_call(c, &s, NULL), CIVIS_OK);
	civis_client_free(c);
	assert_int_equal(g.called, 1);
	assert_int_equal(g.status, CIVIS_ECANCELED);
	assert_string_equal(g.error, "request: GET /files/1: canceled");
	civis_client_config_dispose(&cfg);
}



int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_auth_only_to_origin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_cancels_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_holds_normal_not_final, setup, teardown),
		cmocka_unit_test_setup_teardown(test_429_pauses_every_authenticated_call, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plain_http_ignores_proxy_env, setup, teardown),
		cmocka_unit_test_setup_teardown(test_https_through_proxy_tunnel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presigned_url_must_be_https, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_call_headers_and_401_latch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_refuses_other_urls, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
