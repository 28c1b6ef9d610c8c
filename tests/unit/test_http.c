/* test_http.c: retry math, status classification, and how civis_http
 * takes answers (retries, Retry-After, cuts, redirects, caps, stalls, the
 * deadline, keep-alive) against the scripted HTTP server on 127.0.0.1
 * (http_testserver.h): every test states what the server answers and
 * checks what it saw. test_http_body.c and test_http_auth.c hold the rest. */
#include "http_testserver.h"

/* ------------------------------------------------------------ retry math */

static void
test_policy_default(void **state)
{
	civis_retry_policy p;

	(void)state;
	memset(&p, 0xff, sizeof(p));
	civis_retry_policy_default(&p);
	assert_int_equal(p.max_attempts, 10);
	assert_int_equal(p.base_ms, 500);
	assert_int_equal(p.cap_ms, 30000);
	assert_int_equal(p.deadline_ms, 0);
	assert_int_equal(p.max_retry_after_ms, 120000);
	assert_int_equal(p.retry_ambiguous, 1);
}

static uint64_t
xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
test_backoff_bounds(void **state)
{
	civis_retry_policy p;
	uint64_t s = 0x1234567887654321ull;
	unsigned attempt;
	int i;

	(void)state;
	civis_retry_policy_default(&p);
	for (attempt = 1; attempt <= 40; attempt++) {
		uint64_t cap = attempt >= 8 ? 30000 : 500ull << (attempt - 1);
		uint64_t lo = UINT64_MAX, hi = 0, sum = 0;

		if (cap > 30000)
			cap = 30000;
		for (i = 0; i < 2000; i++) {
			uint64_t w = civis_retry_backoff_ms(&p, attempt, 0, xorshift(&s));

			assert_true(w <= cap);
			if (w < lo)
				lo = w;
			if (w > hi)
				hi = w;
			sum += w;
		}
		/* full jitter: spread over the whole [0, cap] */
		assert_true(lo < cap / 10 + 1);
		assert_true(hi > cap - cap / 10 - 1);
		assert_true(sum / 2000 > cap / 3 && sum / 2000 < cap * 2 / 3);
	}
	/* extreme random values and attempt numbers stay in bounds */
	assert_true(civis_retry_backoff_ms(&p, 1, 0, UINT64_MAX) <= 500);
	assert_true(civis_retry_backoff_ms(&p, 0, 0, UINT64_MAX) <= 500);
	assert_true(civis_retry_backoff_ms(&p, UINT32_MAX, 0, UINT64_MAX) <= 30000);
	p.base_ms = UINT64_MAX / 3;
	p.cap_ms = UINT64_MAX;
	assert_true(civis_retry_backoff_ms(&p, 70, 0, 12345) == 12345);
	p.base_ms = 0;
	p.cap_ms = 0;
	assert_int_equal(civis_retry_backoff_ms(&p, 3, 0, 999), 0);
}

static void
test_backoff_retry_after(void **state)
{
	civis_retry_policy p;
	uint64_t s = 42;
	int i;

	(void)state;
	civis_retry_policy_default(&p);
	for (i = 0; i < 1000; i++) {
		/* Retry-After is a floor, even above the cap */
		uint64_t w = civis_retry_backoff_ms(&p, 1, 45000, xorshift(&s));

		assert_int_equal(w, 45000);
		w = civis_retry_backoff_ms(&p, 10, 2000, xorshift(&s));
		assert_true(w >= 2000 && w <= 30000);
	}
	/* a huge Retry-After is clamped to max_retry_after_ms */
	assert_int_equal(civis_retry_backoff_ms(&p, 1, UINT64_MAX, 0), 120000);
	assert_int_equal(civis_retry_backoff_ms(&p, 1, 86400000, 7), 120000);
	p.max_retry_after_ms = 0;
	assert_true(civis_retry_backoff_ms(&p, 1, 86400000, 7) <= 500);
}

static void
test_retry_after_parse(void **state)
{
	/* 1994-11-06 08:49:37 UTC */
	const int64_t then = 784111777;

	(void)state;
	assert_int_equal(civis_retry_after_parse_ms("1", 0), 1000);
	assert_int_equal(civis_retry_after_parse_ms("120", 0), 120000);
	assert_int_equal(civis_retry_after_parse_ms("  7 \r\n", 0), 7000);
	assert_int_equal(civis_retry_after_parse_ms("0", 0), 0);
	assert_true(civis_retry_after_parse_ms("99999999999999999999999999", 0) >= 1000ull * 1000000000ull);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then - 30), 30000);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 GMT", then + 5), 0);
	assert_int_equal(civis_retry_after_parse_ms("Thu, 01 Jan 1970 00:01:00 GMT", 0), 60000);
	assert_int_equal(civis_retry_after_parse_ms("Tue, 29 Feb 2028 12:00:00 GMT", 1835438400 - 1), 1000);
	/* garbage, other date formats, negatives: 0 */
	assert_int_equal(civis_retry_after_parse_ms(NULL, 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("soon", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("-5", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("5s", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("1.5", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sunday, 06-Nov-94 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun Nov  6 08:49:37 1994", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:37 UTC", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Foo 1994 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 36 Nov 1994 08:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 28:49:37 GMT", 0), 0);
	assert_int_equal(civis_retry_after_parse_ms("Sun, 06 Nov 1994 08:49:3x GMT", 0), 0);
}

static void
test_status_retryable(void **state)
{
	long code;

	(void)state;
	for (code = 0; code < 1000; code++) {
		int want = code == 0 || code == 408 || code == 429 || (code >= 500 && code <= 599);

		assert_int_equal(civis_http_status_retryable(code), want);
	}
	assert_int_equal(civis_http_status_retryable(-1), 0);
}

static const struct step steps_503_200[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Length: 11\r\n\r\n{\"id\": 12}\n" },
};

static void
test_retry_503_then_200(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_200, 2);
	s = spec_for("GET", "/thing?token=abc", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	assert_int_equal(civis_http_pending(F.http), 1);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 200);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_string_equal(g.body, "{\"id\": 12}\n");
	assert_int_equal(g.body_len, 11);
	assert_string_equal(g.etag, "\"abc\"");
	assert_string_equal(g.error, "");
	assert_int_equal(civis_http_pending(F.http), 0);
	assert_int_equal(server_nreqs(), 2);
	assert_non_null(strstr(S.reqs[0], "GET /thing?token=abc HTTP/1.1\r\n"));
	assert_null(strcasestr(S.reqs[0], "\r\nAuthorization:"));
	/* keep-alive: the retry went over the same connection */
	assert_int_equal(S.req_conn[0], S.req_conn[1]);
	assert_int_equal(S.accepts, 1);
}

static const struct step steps_503x3[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy" },
	{ ANSWER, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
	          "Content-Length: 61\r\n\r\n{\"error\":\"busy\",\"errorDescription\":\"try later\\nplease\",\"x\":1}" },
};

static void
test_retry_gives_up(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503x3, 3);
	s = spec_for("GET", "/a/b?secret=1", &g);
	s.error_text = civis_parse_error_text;   /* what civis_client_call installs */
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 503);
	assert_int_equal(g.attempts, 3);
	assert_string_equal(g.error, "test: GET /a/b: HTTP 503 Service Unavailable: "
	                    "busy: try later please (after 3 tries)");
}

static const struct step steps_429[] = {
	{ ANSWER, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
};

static void
test_retry_after_respected(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start;

	(void)state;
	server_start(steps_429, 2);
	s = spec_for("POST", "/logs", &g);
	s.body = "{\"messages\":[]}";
	s.body_len = strlen(s.body);
	s.content_type = "application/json";
	start = civis_now_ns();
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_true(civis_now_ns() - start >= 1000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 204);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.body_len, 0);
	assert_string_equal(g.body, "");
	assert_non_null(strstr(S.reqs[1], "POST /logs HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 15\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\n{\"messages\":[]}"));
	assert_null(strcasestr(S.reqs[1], "\r\nExpect:"));
}

static const struct step steps_cut_200[] = {
	{ CUT, NULL },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" },
};

static void
test_cut_ambiguous_not_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	F.fast.retry_ambiguous = 0;
	s = spec_for("POST", "/files/", &g);
	s.body = "{}";
	s.body_len = 2;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ENET);
	assert_int_equal(g.http_code, 0);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.error, "test: POST /files/: Server returned nothing (no headers, no data)");
}

static void
test_cut_ambiguous_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	s = spec_for("POST", "/files/", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.body, "ok");
	/* a POST without a body still says Content-Length: 0 */
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 0\r\n"));
}

static void
test_cut_get_is_not_ambiguous(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_cut_200, 2);
	F.fast.retry_ambiguous = 0;
	s = spec_for("GET", "/runs/1", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
}

static const struct step steps_redirect[] = {
	{ ANSWER, "HTTP/1.1 302 Found\r\nLocation: https://Evil.Example.com/x?sig=SECRET\r\n"
	          "Content-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_redirect_not_followed(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_redirect, 2);
	s = spec_for("GET", "/r?q=SECRET", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 302);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /r: unexpected redirect to evil.example.com (not followed)");
	assert_int_equal(server_nreqs(), 1);
}

static const struct step steps_huge_length[] = {
	{ ANSWER_CLOSE, "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\nxxxx" },
};

static void
test_huge_content_length(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_huge_length, 1);
	s = spec_for("GET", "/big", &g);
	s.max_response = 1000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ETOOBIG);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /big: answer larger than 1000 bytes");
}

static const struct step steps_endless[] = {
	{ ENDLESS, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" },
};

static void
test_endless_body(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_endless, 1);
	s = spec_for("GET", "/endless", &g);
	s.max_response = 100000;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ETOOBIG);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /endless: answer larger than 100000 bytes");
}

static void
test_stall_cut_by_low_speed(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start = civis_now_ns();

	(void)state;
	server_start(steps_stall, 1);
	F.fast.max_attempts = 1;
	s = spec_for("POST", "/stall", &g);
	s.low_speed_time_s = 1;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 10000 * MS);
	print_message("low-speed cut after %.2f s\n", (double)(civis_now_ns() - start) / 1e9);
	/* the 2 bytes received keep the average at >= 1 B/s for ~2 s, then
	 * 1 s under the limit cuts it: seconds, not minutes */
	assert_true(civis_now_ns() - start < 6000 * MS);
	assert_int_equal(g.status, CIVIS_ETIMEOUT);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(g.ambiguous, 1);
	assert_string_equal(g.error, "test: POST /stall: Timeout was reached");
}

static void
test_connection_refused(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	char url[64];
	int fd;

	(void)state;
	server_start(NULL, 0);
	/* a port with nothing listening */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x?y=z", ntohs(a.sin_port));
	close(fd);
	s = spec_for("POST", "/", &g);
	s.url = url;
	F.fast.max_attempts = 2;
	F.fast.retry_ambiguous = 0;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ENET);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_string_equal(g.error, "test: POST /x: Couldn't connect to server (after 2 tries)");
}

static const struct step steps_401[] = {
	{ ANSWER, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"api\"\r\n"
	          "Content-Length: 55\r\n\r\n{\"error\":\"unauthorized\",\"errorDescription\":\"bad key\"}\n\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
};

static void
test_401_not_retried(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	char origin[64];

	(void)state;
	server_start(steps_401, 2);
	snprintf(origin, sizeof(origin), "http://127.0.0.1:%d/", S.port);
	s = spec_for("GET", "/me", &g);
	s.error_text = civis_parse_error_text;
	assert_int_equal(civis__http_start_auth(F.http, &s, origin, "sekrit:", NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_EAUTH);
	assert_int_equal(g.http_code, 401);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: GET /me: HTTP 401 Unauthorized: unauthorized: bad key");
	assert_null(strstr(g.error, "sekrit"));
	/* sent once, preemptively, as Basic "sekrit:" */
	assert_int_equal(server_nreqs(), 1);
	assert_non_null(strstr(S.reqs[0], "\r\nAuthorization: Basic c2Vrcml0Og==\r\n"));
}

#define N503 40
static struct step steps_503_forever[N503];

static void
test_deadline(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	uint64_t start, took;
	char want[128];
	int i;

	(void)state;
	for (i = 0; i < N503; i++) {
		steps_503_forever[i].act = ANSWER;
		steps_503_forever[i].bytes = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
	}
	server_start(steps_503_forever, N503);
	/* unlimited attempts, waits of 0..100 ms, 350 ms in all: it stops
	 * when the next wait would end past the deadline, not after it */
	F.fast.max_attempts = 0;
	F.fast.base_ms = 100;
	F.fast.cap_ms = 100;
	F.fast.deadline_ms = 350;
	s = spec_for("GET", "/x", &g);
	start = civis_now_ns();
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	took = civis_now_ns() - start;
	print_message("deadline 350 ms: gave up after %.0f ms, %u tries\n", (double)took / 1e6,
	              g.attempts);
	assert_int_equal(g.status, CIVIS_EHTTP);
	assert_int_equal(g.http_code, 503);
	assert_true(g.attempts >= 2 && g.attempts < N503);
	assert_true(took < 450 * MS);
	snprintf(want, sizeof(want), "test: GET /x: HTTP 503 Service Unavailable (after %u tries)",
	         g.attempts);
	assert_string_equal(g.error, want);
}

#define MANY 500
static struct step steps_many[MANY];

static void
test_keepalive_throughput(void **state)
{
	static struct got g[MANY];
	civis_http_spec s;
	uint64_t start, end;
	int i;

	(void)state;
	memset(g, 0, sizeof(g));
	for (i = 0; i < MANY; i++) {
		steps_many[i].act = ANSWER;
		steps_many[i].bytes = "HTTP/1.1 204 No Content\r\n\r\n";
	}
	server_start(steps_many, MANY);
	start = civis_now_ns();
	/* one after the other, like log batches: each reuses the connection */
	for (i = 0; i < MANY; i++) {
		s = spec_for("POST", "/logs", &g[i]);
		s.body = "{\"messages\":[{\"message\":\"x\",\"level\":\"info\"}]}";
		s.body_len = strlen(s.body);
		assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
		run_until(&g[i], 5000 * MS);
		assert_int_equal(g[i].status, CIVIS_OK);
	}
	end = civis_now_ns();
	print_message("http: %d sequential POSTs in %.1f ms (%.0f us each), %d connection(s)\n",
	              MANY, (double)(end - start) / 1e6, (double)(end - start) / 1e3 / MANY,
	              S.accepts);
	assert_int_equal(server_nreqs(), MAX_REQS);   /* the recorder keeps the first few */
	assert_int_equal(S.accepts, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_default),
		cmocka_unit_test(test_backoff_bounds),
		cmocka_unit_test(test_backoff_retry_after),
		cmocka_unit_test(test_retry_after_parse),
		cmocka_unit_test(test_status_retryable),
		cmocka_unit_test_setup_teardown(test_retry_503_then_200, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_gives_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_after_respected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_ambiguous_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_ambiguous_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_get_is_not_ambiguous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirect_not_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_content_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_endless_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall_cut_by_low_speed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_401_not_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive_throughput, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
