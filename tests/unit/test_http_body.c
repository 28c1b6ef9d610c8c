/* test_http_body.c: what civis_http sends: spec checks, verbs and exact
 * lengths, streamed bodies (a retry re-reads from 0, short reads, a
 * reader's failure, a body that ends early, libcurl's silent resend) and
 * the text of an error answer, against the scripted server
 * (http_testserver.h). */
#include "http_testserver.h"

static const struct step steps_two_400[] = {
	{ ANSWER, "HTTP/1.1 400 Bad Request\r\nContent-Length: 52\r\n\r\n"
	          "\r\n  {\"error\":\"bad\"} first\tline \x01\r\nsecond line\r\nthird" },
	{ ANSWER, "HTTP/1.1 422 Unprocessable Content\r\nContent-Length: 5\r\n\r\nabcde" },
};

static void
count_reader(const char *body, size_t len, char *buf, size_t buflen)
{
	snprintf(buf, buflen, "%zu bytes starting with %c", len, len > 0 ? body[0] : '-');
}

/* The transport knows no API: without a reader the text of an error answer
 * is its first non-blank line, cleaned; a reader in the spec (the client's
 * Civis parser, say) replaces that. */
static void
test_error_text_reader(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 };
	civis_http_spec s;

	(void)state;
	server_start(steps_two_400, 2);
	s = spec_for("POST", "/files/", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_EHTTP);
	assert_int_equal(g1.attempts, 1);
	assert_string_equal(g1.error, "test: POST /files/: HTTP 400 Bad Request: "
	                    "{\"error\":\"bad\"} first line");
	s = spec_for("POST", "/files/", &g2);
	s.error_text = count_reader;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_string_equal(g2.error, "test: POST /files/: HTTP 422 Unprocessable Content: "
	                    "5 bytes starting with a");
}

/* A streamed body: at most `piece` bytes per read (3 by default, to make
 * curl come back for more), failing with `fail_rc` at offset `fail_at` when
 * that is set, or ending early there when fail_rc is CIVIS_OK. */
struct stream {
	const char *data;
	size_t len;
	int starts;                 /* reads at offset 0: one per try */
	int calls;
	size_t fail_at;             /* 0: never */
	int fail_rc;
	uint64_t max_off;
};

static int
stream_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	struct stream *st = ud;
	size_t k = n;

	st->calls++;
	if (off == 0)
		st->starts++;
	assert_true(off <= st->len);
	if (off > st->max_off)
		st->max_off = off;
	if (st->fail_at != 0 && off >= st->fail_at) {
		*got = 0;
		return st->fail_rc;
	}
	if (k > 3)
		k = 3;
	if (k > st->len - off)
		k = st->len - (size_t)off;
	memcpy(buf, st->data + off, k);
	*got = k;
	return CIVIS_OK;
}

static void
test_bad_specs(void **state)
{
	struct got g = { 0 };
	civis_http_spec s;
	static const char *const folded[] = { "X-A: 1\nX-B: 2", NULL };
	static const char *many[70];
	static struct stream st = { .data = "abc", .len = 3 };
	int i;

	(void)state;
	server_start(NULL, 0);
	s = spec_for("get", "/", &g);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.done = NULL;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("POST", "/", &g);
	s.body_len = 3;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.content_type = "text/plain\r\nX-Evil: 1";
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("GET", "/", &g);
	s.headers = folded;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	/* more than 64 extra headers */
	for (i = 0; i < 69; i++)
		many[i] = "X-Many: 1";
	many[69] = NULL;
	s.headers = many;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	/* one body only; a size needs a reader */
	s = spec_for("POST", "/", &g);
	s.body = "abc";
	s.body_len = 3;
	s.body_read = stream_read;
	s.body_size = 3;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s = spec_for("POST", "/", &g);
	s.body_size = 3;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	/* a send buffer libcurl cannot have */
	s = spec_for("PUT", "/", &g);
	s.body_read = stream_read;
	s.body_size = 3;
	s.body_ud = &st;
	s.send_buffer = CIVIS_HTTP_SEND_BUFFER_MIN - 1;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	s.send_buffer = CIVIS_HTTP_SEND_BUFFER_MAX + 1;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_EINVAL);
	assert_int_equal(st.calls, 0);
	assert_int_equal(g.called, 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* A reader that gives all it is asked for and notes the biggest ask. */
struct sized {
	size_t len;
	size_t max_n;
	int calls;
};

static int
sized_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	struct sized *sz = ud;

	sz->calls++;
	if (n > sz->max_n)
		sz->max_n = n;
	if (n > sz->len - off)
		n = sz->len - (size_t)off;
	memset(buf, 'x', n);
	*got = n;
	return CIVIS_OK;
}

/* How much a streamed body is read at a time: libcurl's 64 KiB without a
 * send_buffer, the send_buffer with one. (The scripted server takes 64 KiB
 * and then stops reading, so each request is cancelled once the reader has
 * been asked.) */
static void
test_send_buffer_sets_read_size(void **state)
{
	static const size_t bufs[] = { 0, 256u << 10, CIVIS_HTTP_SEND_BUFFER_MAX };
	size_t i;

	(void)state;
	server_start(NULL, 0);
	for (i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
		struct got g = { 0 };
		struct sized sz = { .len = 8u << 20 };
		civis_http_spec s = spec_for("PUT", "/bucket/part", &g);
		civis_http_req *req = NULL;
		uint64_t end = civis_now_ns() + 5000 * MS;

		s.body_read = sized_read;
		s.body_size = sz.len;
		s.body_ud = &sz;
		s.send_buffer = bufs[i];
		assert_int_equal(civis_http_start(F.http, &s, &req), CIVIS_OK);
		while (sz.calls < 2 && !g.called && civis_now_ns() < end)
			assert_int_equal(civis_loop_run_once(F.loop, 100 * MS), CIVIS_OK);
		assert_int_equal(g.called, 0);
		assert_true(sz.calls >= 1);
		assert_int_equal(sz.max_n, bufs[i] != 0 ? bufs[i] : (size_t)64 << 10);
		civis_http_cancel(F.http, req);
		assert_int_equal(g.called, 1);
		assert_int_equal(g.status, CIVIS_ECANCELED);
	}
}

static const struct step steps_methods[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 200 OK\r\nETag: \"part-1\"\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 204 No Content\r\n\r\n" },
};

static void
test_streamed_body_and_methods(void **state)
{
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	struct stream st = { .data = "part one of the file", .len = 20 };
	civis_http_spec s;

	(void)state;
	server_start(steps_methods, 4);
	/* a streamed PUT starts over on the retry, with an exact length */
	s = spec_for("PUT", "/bucket/key?partNumber=1&X-Amz-Signature=zz", &g1);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	assert_int_equal(g1.attempts, 2);
	assert_int_equal(st.starts, 2);
	assert_string_equal(g1.etag, "\"part-1\"");
	assert_non_null(strstr(S.reqs[1], "PUT /bucket/key?partNumber=1&X-Amz-Signature=zz HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 20\r\n"));
	assert_non_null(strstr(S.reqs[1], "\r\n\r\npart one of the file"));
	assert_null(strcasestr(S.reqs[1], "\r\nTransfer-Encoding:"));

	s = spec_for("PATCH", "/runs/1", &g2);
	s.body = "{\"state\":\"running\"}";
	s.body_len = strlen(s.body);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g2, 5000 * MS);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_non_null(strstr(S.reqs[2], "PATCH /runs/1 HTTP/1.1\r\n"));
	assert_non_null(strstr(S.reqs[2], "\r\n\r\n{\"state\":\"running\"}"));

	s = spec_for("DELETE", "/files/9", &g3);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g3, 5000 * MS);
	assert_int_equal(g3.status, CIVIS_OK);
	assert_int_equal(g3.http_code, 204);
	assert_non_null(strstr(S.reqs[3], "DELETE /files/9 HTTP/1.1\r\n"));
}

static const struct step steps_503_then_ok[] = {
	{ ANSWER, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n" },
	{ ANSWER, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" },
};

/* A streamed POST that gets a 503 is read again from offset 0 for the
 * retry, in short reads, and both tries carry the whole body with its
 * exact length. */
static void
test_streamed_post_retry_rereads(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "{\"messages\":[\"a\",\"b\"]}", .len = 22 };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("POST", "/logs", &g);
	s.content_type = "application/json";
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_OK);
	assert_int_equal(g.http_code, 201);
	assert_int_equal(g.attempts, 2);
	assert_int_equal(g.ambiguous, 0);
	assert_int_equal(st.starts, 2);
	/* 22 bytes, 3 at a time: 8 reads per try */
	assert_int_equal(st.calls, 16);
	assert_int_equal(server_nreqs(), 2);
	for (int i = 0; i < 2; i++) {
		assert_non_null(strstr(S.reqs[i], "POST /logs HTTP/1.1\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\nContent-Length: 22\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\nContent-Type: application/json\r\n"));
		assert_non_null(strstr(S.reqs[i], "\r\n\r\n{\"messages\":[\"a\",\"b\"]}"));
		assert_null(strcasestr(S.reqs[i], "\r\nTransfer-Encoding:"));
	}
}

/* The reader fails at byte 9: the try ends at once, is not retried, and
 * the error is one line naming where; the server never saw a whole request. */
static void
test_streamed_read_error(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "0123456789abcdefghij", .len = 20, .fail_at = 9, .fail_rc = CIVIS_ESYS };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("POST", "/logs?x=secret", &g);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ESYS);
	assert_int_equal(g.http_code, 0);
	assert_int_equal(g.attempts, 1);
	assert_int_equal(st.starts, 1);
	assert_string_equal(g.error, "test: POST /logs: cannot read the request body at "
	                    "byte 9 of 20: system call failed");
	assert_null(strchr(g.error, '\n'));
	assert_int_equal(server_nreqs(), 0);
	assert_int_equal(civis_http_pending(F.http), 0);
}

/* The reader says "no more" before body_size: a clean failure too. */
static void
test_streamed_body_ends_early(void **state)
{
	struct got g = { 0 };
	struct stream st = { .data = "0123456789abcdefghij", .len = 20, .fail_at = 12, .fail_rc = CIVIS_OK };
	civis_http_spec s;

	(void)state;
	server_start(steps_503_then_ok, 2);
	s = spec_for("PUT", "/bucket/part", &g);
	s.body_read = stream_read;
	s.body_size = st.len;
	s.body_ud = &st;
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g, 5000 * MS);
	assert_int_equal(g.status, CIVIS_ESYS);
	assert_int_equal(g.attempts, 1);
	assert_string_equal(g.error, "test: PUT /bucket/part: the request body ended at "
	                    "byte 12 of 20");
	assert_int_equal(server_nreqs(), 0);
}

static const struct step steps_ok_cut_ok[] = {
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" },
	{ CUT, NULL },
	{ ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" },
};

/* A GET that leaves a connection to reuse, then POST /logs on it with the
 * body streamed from st, or in memory when st is NULL; the server cuts the
 * connection at the POST. g2 gets the POST's outcome. */
static void
post_on_cut_connection(struct stream *st, struct got *g2)
{
	struct got g1 = { 0 };
	civis_http_spec s;

	server_start(steps_ok_cut_ok, 3);
	s = spec_for("GET", "/warm", &g1);
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(&g1, 5000 * MS);
	assert_int_equal(g1.status, CIVIS_OK);
	s = spec_for("POST", "/logs", g2);
	if (st != NULL) {
		s.body_read = stream_read;
		s.body_size = st->len;
		s.body_ud = st;
	} else {
		s.body = "{\"messages\":[]}";
		s.body_len = strlen(s.body);
	}
	assert_int_equal(civis_http_start(F.http, &s, NULL), CIVIS_OK);
	run_until(g2, 5000 * MS);
}

/* A reused connection dies before any answer: libcurl resends the body on
 * a fresh one by itself (one try for us), rewinding the reader to 0. The
 * server may have stored the first copy, so the POST counts as ambiguous. */
static void
test_streamed_silent_resend_is_ambiguous(void **state)
{
	struct got g2 = { 0 };
	struct stream st = { .data = "{\"messages\":[]}", .len = 15 };

	(void)state;
	post_on_cut_connection(&st, &g2);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_string_equal(g2.body, "ok");
	assert_int_equal(server_nreqs(), 3);
	assert_non_null(strstr(S.reqs[2], "\r\n\r\n{\"messages\":[]}"));
	assert_int_equal(st.starts, 2);
	if (g2.attempts == 1) {
		assert_int_equal(g2.ambiguous, 1);   /* the silent resend */
	} else {
		/* a libcurl that does not resend by itself: our retry */
		assert_int_equal(g2.attempts, 2);
		assert_int_equal(g2.ambiguous, 1);
	}
}

/* The same with the body in memory (a log batch): libcurl's resend must
 * still be seen (it was not while the body went as CURLOPT_POSTFIELDS, and
 * the bench's outage figure found 6,026 lines stored twice with 0 possible
 * duplicates counted). */
static void
test_memory_silent_resend_is_ambiguous(void **state)
{
	struct got g2 = { 0 };

	(void)state;
	post_on_cut_connection(NULL, &g2);
	assert_int_equal(g2.status, CIVIS_OK);
	assert_string_equal(g2.body, "ok");
	assert_int_equal(server_nreqs(), 3);
	assert_non_null(strstr(S.reqs[1], "\r\nContent-Length: 15\r\n"));
	assert_non_null(strstr(S.reqs[2], "\r\nContent-Length: 15\r\n"));
	assert_non_null(strstr(S.reqs[2], "\r\n\r\n{\"messages\":[]}"));
	assert_null(strcasestr(S.reqs[2], "\r\nTransfer-Encoding:"));
	assert_int_equal(g2.ambiguous, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_error_text_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_specs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_body_and_methods, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_buffer_sets_read_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_post_retry_rereads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_read_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_body_ends_early, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streamed_silent_resend_is_ambiguous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_silent_resend_is_ambiguous, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
