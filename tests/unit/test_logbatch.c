/* test_logbatch.c: UTF-8 repair, JSON escaping, timestamps, batch bodies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <cJSON.h>

#include "civis/civis.h"
#include "civis/logbatch.h"

#define FFFD "\xEF\xBF\xBD"

/* Escape `in` and compare with `want` (both literals, may hold NULs). */
static void
check_escape(const char *in, size_t inlen, const char *want, size_t wantlen)
{
	char out[512];
	size_t n = 12345;

	assert_true(inlen * 6 <= sizeof(out));
	assert_int_equal(civis_json_escape_utf8(in, inlen, out, sizeof(out), &n), CIVIS_OK);
	if (n != wantlen || memcmp(out, want, n) != 0)
		fail_msg("escape of %zu bytes gave %zu bytes '%.*s', want '%.*s'",
		         inlen, n, (int)n, out, (int)wantlen, want);
	/* exactly the room needed is enough; one byte less is not */
	assert_int_equal(civis_json_escape_utf8(in, inlen, out, wantlen, &n), CIVIS_OK);
	assert_int_equal(n, wantlen);
	if (wantlen > 0)
		assert_int_equal(civis_json_escape_utf8(in, inlen, out, wantlen - 1, &n),
		                 CIVIS_ETOOBIG);
}

#define ESC(in, want) check_escape((in), sizeof(in) - 1, (want), sizeof(want) - 1)

static void
test_escape_ascii_and_controls(void **state)
{
	(void)state;
	ESC("", "");
	ESC("hello, world", "hello, world");
	ESC("say \"hi\"", "say \\\"hi\\\"");
	ESC("C:\\dir", "C:\\\\dir");
	ESC("a\bb\tc\nd\fe\rf", "a\\bb\\tc\\nd\\fe\\rf");
	ESC("\0", "\\u0000");
	ESC("x\0y", "x\\u0000y");
	ESC("\x01\x1f\x1b[0m", "\\u0001\\u001f\\u001b[0m");
	ESC("\x0b", "\\u000b");
	ESC("del\x7f/slash", "del\x7f/slash");      /* DEL and '/' stay raw */
	ESC("\xE2\x80\xA8", "\xE2\x80\xA8");         /* U+2028 stays raw */
}

static void
test_escape_every_c0(void **state)
{
	unsigned c;

	(void)state;
	for (c = 0; c < 0x20; c++) {
		char in[1] = { (char)c }, want[8];
		size_t wl;

		switch (c) {
		case '\b': memcpy(want, "\\b", 2); wl = 2; break;
		case '\t': memcpy(want, "\\t", 2); wl = 2; break;
		case '\n': memcpy(want, "\\n", 2); wl = 2; break;
		case '\f': memcpy(want, "\\f", 2); wl = 2; break;
		case '\r': memcpy(want, "\\r", 2); wl = 2; break;
		default:
			assert_int_equal(snprintf(want, sizeof(want), "\\u%04x", c), 6);
			wl = 6;
			break;
		}
		check_escape(in, 1, want, wl);
	}
}

static void
test_utf8_valid_passes(void **state)
{
	(void)state;
	ESC("\xC2\x80", "\xC2\x80");                 /* U+0080 */
	ESC("\xDF\xBF", "\xDF\xBF");                 /* U+07FF */
	ESC("\xE0\xA0\x80", "\xE0\xA0\x80");         /* U+0800 */
	ESC("\xED\x9F\xBF", "\xED\x9F\xBF");         /* U+D7FF */
	ESC("\xEE\x80\x80", "\xEE\x80\x80");         /* U+E000 */
	ESC("\xEF\xBF\xBF", "\xEF\xBF\xBF");         /* U+FFFF */
	ESC("\xF0\x90\x80\x80", "\xF0\x90\x80\x80"); /* U+10000 */
	ESC("\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"); /* U+10FFFF */
	ESC("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
	ESC(FFFD, FFFD);
}

static void
test_utf8_repair(void **state)
{
	(void)state;
	/* overlong forms */
	ESC("\xC0\x80", FFFD FFFD);
	ESC("\xC1\xBF", FFFD FFFD);
	ESC("\xE0\x80\x80", FFFD FFFD FFFD);
	ESC("\xE0\x9F\xBF", FFFD FFFD FFFD);
	ESC("\xF0\x8F\xBF\xBF", FFFD FFFD FFFD FFFD);
	/* surrogates */
	ESC("\xED\xA0\x80", FFFD FFFD FFFD);
	ESC("\xED\xBF\xBF", FFFD FFFD FFFD);
	/* above U+10FFFF */
	ESC("\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD);
	ESC("\xF5\x80\x80\x80", FFFD FFFD FFFD FFFD);
	/* truncated sequences: one U+FFFD for the maximal subpart */
	ESC("\xC3", FFFD);
	ESC("\xE2\x82", FFFD);
	ESC("\xF0\x9F\x98", FFFD);
	ESC("ab\xE2\x82", "ab" FFFD);
	ESC("\xE2\x82x", FFFD "x");
	ESC("\xF0\x9F\x98\n", FFFD "\\n");
	ESC("\xE2\x82\xF0\x9F\x98\x80", FFFD "\xF0\x9F\x98\x80");
	/* stray continuation bytes */
	ESC("\x80", FFFD);
	ESC("\x80\xBF", FFFD FFFD);
	ESC("a\x80" "b", "a" FFFD "b");
	/* bytes that never appear */
	ESC("\xFE", FFFD);
	ESC("\xFF", FFFD);
	ESC("\xFE\xFF", FFFD FFFD);
	ESC("\xF8\x88\x80\x80\x80", FFFD FFFD FFFD FFFD FFFD);
	/* The Unicode standard's example (Table 3-8 discussion) */
	ESC("a\xF1\x80\x80\xE1\x80\xC2" "b\x80" "c\x80\xBF" "d",
	    "a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d");
}

/* The 8-byte fast path and the byte path agree wherever the odd byte is. */
static void
test_escape_fast_path_positions(void **state)
{
	static const char *odd[] = { "\"", "\\", "\n", "\x01", "\xC3\xA9", "\x80", "\xE2\x82" };
	static const char *oddesc[] = { "\\\"", "\\\\", "\\n", "\\u0001", "\xC3\xA9", FFFD, FFFD };
	size_t k, pos;

	(void)state;
	for (k = 0; k < sizeof(odd) / sizeof(odd[0]); k++) {
		for (pos = 0; pos < 40; pos++) {
			char in[64], want[128];
			size_t ol = strlen(odd[k]), el = strlen(oddesc[k]), inlen, wl;

			memset(in, 'x', pos);
			memcpy(in + pos, odd[k], ol);
			memset(in + pos + ol, 'y', 17);
			inlen = pos + ol + 17;
			memset(want, 'x', pos);
			memcpy(want + pos, oddesc[k], el);
			memset(want + pos + el, 'y', 17);
			wl = pos + el + 17;
			check_escape(in, inlen, want, wl);
		}
	}
}

static void
test_escape_bound_and_args(void **state)
{
	char in[100], *out;
	size_t n, bound;

	(void)state;
	assert_int_equal(civis_json_escape_bound(0), 0);
	assert_int_equal(civis_json_escape_bound(10), 60);
	assert_true(civis_json_escape_bound(SIZE_MAX / 2) == SIZE_MAX);
	/* the bound is reached by NULs */
	memset(in, 0, sizeof(in));
	bound = civis_json_escape_bound(sizeof(in));
	out = malloc(bound);
	assert_non_null(out);
	assert_int_equal(civis_json_escape_utf8(in, sizeof(in), out, bound, &n), CIVIS_OK);
	assert_int_equal(n, bound);
	/* invalid bytes stay under it: one byte -> 3 */
	memset(in, 0xFF, sizeof(in));
	assert_int_equal(civis_json_escape_utf8(in, sizeof(in), out, bound, &n), CIVIS_OK);
	assert_int_equal(n, 300);
	assert_int_equal(civis_json_escape_utf8(in, 1, out, bound, NULL), CIVIS_EINVAL);
	assert_int_equal(civis_json_escape_utf8(NULL, 1, out, bound, &n), CIVIS_EINVAL);
	assert_int_equal(civis_json_escape_utf8(in, 1, NULL, 5, &n), CIVIS_EINVAL);
	assert_int_equal(civis_json_escape_utf8(NULL, 0, NULL, 0, &n), CIVIS_OK);
	assert_int_equal(n, 0);
	free(out);
}

/* ------------------------------------------------------------ timestamps */

static void
check_ts(uint64_t ns, const char *want)
{
	char buf[CIVIS_TS_LEN];

	assert_int_equal(civis_ts_format(ns, buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, want);
}

static void
test_ts_format(void **state)
{
	char buf[64];

	(void)state;
	check_ts(0, "1970-01-01T00:00:00.000000000Z");
	check_ts(1795798800123456789ULL, "2026-11-27T17:00:00.123456789Z");
	check_ts(1709210096000000001ULL, "2024-02-29T12:34:56.000000001Z");   /* leap day */
	check_ts(951782400999999999ULL, "2000-02-29T00:00:00.999999999Z");    /* 400-year leap */
	check_ts(4107542400000000000ULL, "2100-03-01T00:00:00.000000000Z");   /* 2100: no leap */
	check_ts(2147483648000000005ULL, "2038-01-19T03:14:08.000000005Z");   /* past int32 */
	check_ts(UINT64_MAX, "2554-07-21T23:34:33.709551615Z");
	/* same second twice (cache), then another, then back */
	check_ts(1795798800000000000ULL, "2026-11-27T17:00:00.000000000Z");
	check_ts(1795798800000000042ULL, "2026-11-27T17:00:00.000000042Z");
	check_ts(1795798801000000000ULL, "2026-11-27T17:00:01.000000000Z");
	check_ts(1795798800000000007ULL, "2026-11-27T17:00:00.000000007Z");
	assert_int_equal(civis_ts_format(0, buf, CIVIS_TS_LEN - 1), CIVIS_EINVAL);
	assert_int_equal(civis_ts_format(0, NULL, CIVIS_TS_LEN), CIVIS_EINVAL);
	assert_int_equal(strlen("2026-11-27T17:00:00.123456789Z") + 1, CIVIS_TS_LEN);
}

/* Cross-check the date arithmetic against gmtime_r over many seconds. */
static void
test_ts_against_gmtime(void **state)
{
	uint64_t st = 88172645463325252ULL;
	int i;

	(void)state;
	for (i = 0; i < 200000; i++) {
		uint64_t ns;
		time_t t;
		struct tm tm;
		char want[64], got[CIVIS_TS_LEN];

		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		ns = st;
		t = (time_t)(ns / 1000000000u);
		assert_non_null(gmtime_r(&t, &tm));
		assert_true(strftime(want, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 19);
		assert_int_equal(snprintf(want + 19, sizeof(want) - 19, ".%09uZ",
		                          (unsigned)(ns % 1000000000u)), 11);
		assert_int_equal(civis_ts_format(ns, got, sizeof(got)), CIVIS_OK);
		assert_string_equal(got, want);
	}
}

static void
test_tsclock(void **state)
{
	civis_tsclock c = { 0 };
	uint64_t now, a, b;
	int i;

	(void)state;
	assert_int_equal(civis_tsclock_next(&c, 100), 100);
	assert_int_equal(civis_tsclock_next(&c, 100), 101);   /* repeats */
	assert_int_equal(civis_tsclock_next(&c, 100), 102);
	assert_int_equal(civis_tsclock_next(&c, 50), 103);    /* backwards */
	assert_int_equal(civis_tsclock_next(&c, 103), 104);
	assert_int_equal(civis_tsclock_next(&c, 1000), 1000); /* forwards */
	assert_int_equal(c.last_ns, 1000);
	/* many calls within one real nanosecond stay strictly increasing */
	now = civis_clock_realtime_ns();
	assert_true(now / 1000000000u >= (uint64_t)time(NULL) - 2);
	assert_true(now / 1000000000u <= (uint64_t)time(NULL) + 2);
	a = civis_tsclock_next(&c, now);
	for (i = 0; i < 100000; i++) {
		b = civis_tsclock_next(&c, civis_clock_realtime_ns());
		assert_true(b > a);
		a = b;
	}
	for (i = 0; i < 1000; i++) {
		b = civis_tsclock_next(&c, now);
		assert_true(b > a);
		a = b;
	}
}

/* ------------------------------------------------------------ batches */

static cJSON *
parse_body(civis_batch *b, size_t want_count)
{
	size_t len = 0;
	const char *body = civis_batch_body(b, &len);
	cJSON *root, *msgs;

	assert_non_null(body);
	assert_int_equal(strlen(body), len);
	root = cJSON_ParseWithLength(body, len);
	assert_non_null(root);
	msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
	assert_true(cJSON_IsArray(msgs));
	assert_int_equal((size_t)cJSON_GetArraySize(msgs), want_count);
	return root;
}

static const char *
msg_field(cJSON *root, int i, const char *name)
{
	cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "messages"), i);
	cJSON *f = cJSON_GetObjectItemCaseSensitive(m, name);

	assert_true(cJSON_IsString(f));
	return f->valuestring;
}

static void
test_batch_new_args(void **state)
{
	civis_batch *b = (civis_batch *)1;
	size_t len;

	(void)state;
	assert_int_equal(civis_batch_new(NULL, 0, 0), CIVIS_EINVAL);
	assert_int_equal(civis_batch_new(&b, 0, CIVIS_BATCH_FLOOR_BYTES - 1), CIVIS_EINVAL);
	assert_null(b);
	assert_int_equal(civis_batch_new(&b, 0, ((size_t)1 << 30) + 1), CIVIS_EINVAL);
	assert_int_equal(CIVIS_BATCH_MIN_BYTES, 393398);
	assert_int_equal(civis_batch_new(&b, 0, 0), CIVIS_OK);
	assert_string_equal(civis_batch_body(b, &len), "{\"messages\":[]}");
	assert_int_equal(len, 15);
	assert_int_equal(civis_batch_count(b), 0);
	assert_int_equal(civis_batch_first_ns(b), 0);
	assert_int_equal(civis_batch_last_ns(b), 0);
	assert_int_equal(civis_batch_add(NULL, "x", 1, NULL, 1), CIVIS_EINVAL);
	assert_int_equal(civis_batch_add(b, NULL, 1, NULL, 1), CIVIS_EINVAL);
	assert_int_equal(civis_batch_add(b, "x", 1, "a-level-that-is-too-long", 1), CIVIS_EINVAL);
	assert_int_equal(civis_batch_count(b), 0);
	assert_null(civis_batch_body(NULL, &len));
	assert_int_equal(len, 0);
	civis_batch_free(b);
	civis_batch_free(NULL);
}

static void
test_batch_exact_body(void **state)
{
	civis_batch *b;
	size_t len;
	const char *body;

	(void)state;
	assert_int_equal(civis_batch_new(&b, 0, 0), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "hello \"world\"", 13, NULL, 1795798800123456789ULL),
	                 CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "", 0, "error", 1795798800123456790ULL), CIVIS_OK);
	body = civis_batch_body(b, &len);
	assert_string_equal(body,
		"{\"messages\":["
		"{\"message\":\"hello \\\"world\\\"\",\"level\":\"info\","
		"\"createdAt\":\"2026-11-27T17:00:00.123456789Z\"},"
		"{\"message\":\"\",\"level\":\"error\","
		"\"createdAt\":\"2026-11-27T17:00:00.123456790Z\"}]}");
	/* the documented overhead: 15 + 70 per entry + commas + texts */
	assert_int_equal(len, 15 + 70 + 15 + 4 + 1 + 70 + 0 + 5);
	assert_int_equal(civis_batch_count(b), 2);
	assert_int_equal(civis_batch_first_ns(b), 1795798800123456789ULL);
	assert_int_equal(civis_batch_last_ns(b), 1795798800123456790ULL);
	/* body() twice gives the same; reset keeps working */
	assert_string_equal(civis_batch_body(b, NULL), body);
	civis_batch_reset(b);
	assert_string_equal(civis_batch_body(b, &len), "{\"messages\":[]}");
	assert_int_equal(civis_batch_count(b), 0);
	assert_int_equal(civis_batch_first_ns(b), 0);
	assert_int_equal(civis_batch_add(b, "again", 5, "info", 5), CIVIS_OK);
	assert_int_equal(civis_batch_count(b), 1);
	civis_batch_free(b);
}

static void
test_batch_round_trip(void **state)
{
	static const char *texts[] = {
		"plain", "", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
		"quote \" backslash \\ slash /", "tab\there\r\nnewline\x01\x1f\x7f",
		"\xE2\x80\xA8\xE2\x80\xA9", "\xF4\x8F\xBF\xBF",
	};
	civis_batch *b;
	cJSON *root;
	size_t i, n = sizeof(texts) / sizeof(texts[0]);

	(void)state;
	assert_int_equal(civis_batch_new(&b, 0, 0), CIVIS_OK);
	for (i = 0; i < n; i++)
		assert_int_equal(civis_batch_add(b, texts[i], strlen(texts[i]),
		                                 i % 2 ? "error" : "info", 1000 + i), CIVIS_OK);
	/* invalid bytes come back as U+FFFD, a NUL as U+0000 */
	assert_int_equal(civis_batch_add(b, "a\xFF" "b\xC0\x80", 5, NULL, 2000), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "\0z", 2, NULL, 2001), CIVIS_OK);
	root = parse_body(b, n + 2);
	for (i = 0; i < n; i++) {
		assert_string_equal(msg_field(root, (int)i, "message"), texts[i]);
		assert_string_equal(msg_field(root, (int)i, "level"), i % 2 ? "error" : "info");
	}
	assert_string_equal(msg_field(root, 0, "createdAt"), "1970-01-01T00:00:00.000001000Z");
	assert_string_equal(msg_field(root, (int)n, "message"), "a" FFFD "b" FFFD FFFD);
	/* cJSON's string ends at the decoded NUL: the escape itself is checked */
	assert_non_null(strstr(civis_batch_body(b, NULL), "\"message\":\"\\u0000z\""));
	cJSON_Delete(root);
	civis_batch_free(b);
}

static void
test_batch_message_cap(void **state)
{
	civis_batch *b;
	char before[512];
	size_t len, len2;
	cJSON *root;

	(void)state;
	assert_int_equal(civis_batch_new(&b, 3, 0), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "one", 3, NULL, 1), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "two", 3, NULL, 2), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "three", 5, NULL, 3), CIVIS_OK);
	civis_batch_body(b, &len);
	assert_true(len < sizeof(before));
	memcpy(before, civis_batch_body(b, NULL), len + 1);
	assert_int_equal(civis_batch_add(b, "four", 4, NULL, 4), CIVIS_ETOOBIG);
	assert_int_equal(civis_batch_count(b), 3);
	assert_int_equal(civis_batch_last_ns(b), 3);
	assert_string_equal(civis_batch_body(b, &len2), before);
	assert_int_equal(len2, len);
	root = parse_body(b, 3);
	assert_string_equal(msg_field(root, 2, "message"), "three");
	cJSON_Delete(root);
	civis_batch_reset(b);
	assert_int_equal(civis_batch_add(b, "four", 4, NULL, 4), CIVIS_OK);
	assert_int_equal(civis_batch_first_ns(b), 4);
	civis_batch_free(b);
}

static void
test_batch_byte_cap(void **state)
{
	const size_t max = CIVIS_BATCH_MIN_BYTES;
	civis_batch *b;
	char *msg = malloc(max), *before = malloc(max + 1);
	size_t len, len2, room, k;
	cJSON *root;

	(void)state;
	assert_non_null(msg);
	assert_non_null(before);
	memset(msg, 'a', max);
	assert_int_equal(civis_batch_new(&b, 0, max), CIVIS_OK);
	/* five 64 KiB messages of plain text fit (~330 KB) */
	for (k = 0; k < 5; k++)
		assert_int_equal(civis_batch_add(b, msg, CIVIS_BATCH_MAX_MESSAGE, NULL, k + 1),
		                 CIVIS_OK);
	civis_batch_body(b, &len);
	/* an entry of exactly the room left fits: "," + 70 + "info" + text */
	room = max - len;
	assert_true(room > 75 + 1);
	memcpy(before, civis_batch_body(b, NULL), len + 1);
	assert_int_equal(civis_batch_add(b, msg, room - 75 + 1, NULL, 9), CIVIS_ETOOBIG);
	assert_int_equal(civis_batch_count(b), 5);
	assert_string_equal(civis_batch_body(b, &len2), before);
	assert_int_equal(len2, len);
	/* the same, over the cap only through escaping */
	msg[0] = '"';
	assert_int_equal(civis_batch_add(b, msg, room - 75, NULL, 9), CIVIS_ETOOBIG);
	msg[0] = 'a';
	assert_string_equal(civis_batch_body(b, NULL), before);
	assert_int_equal(civis_batch_add(b, msg, room - 75, NULL, 9), CIVIS_OK);
	civis_batch_body(b, &len);
	assert_int_equal(len, max);
	assert_int_equal(civis_batch_add(b, "", 0, NULL, 10), CIVIS_ETOOBIG);
	root = parse_body(b, 6);
	assert_int_equal(strlen(msg_field(root, 5, "message")), room - 75);
	cJSON_Delete(root);
	civis_batch_free(b);
	free(msg);
	free(before);
}

/* The worst 64 KiB message (all NULs, 6x) fits in an empty minimal batch;
 * anything that can never fit is EINVAL, not ETOOBIG. */
static void
test_batch_worst_case_fits(void **state)
{
	civis_batch *b;
	char *msg = calloc(1, 400000);
	size_t len;
	cJSON *root;

	(void)state;
	assert_non_null(msg);
	assert_int_equal(civis_batch_new(&b, 0, CIVIS_BATCH_MIN_BYTES), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, msg, CIVIS_BATCH_MAX_MESSAGE,
	                                 "\x01\x01\x01\x01\x01\x01\x01\x01"
	                                 "\x01\x01\x01\x01\x01\x01\x01\x01", 1), CIVIS_OK);
	civis_batch_body(b, &len);
	assert_true(len <= CIVIS_BATCH_MIN_BYTES);
	root = parse_body(b, 1);
	cJSON_Delete(root);
	/* a second one does not fit: ETOOBIG, batch intact */
	assert_int_equal(civis_batch_add(b, msg, CIVIS_BATCH_MAX_MESSAGE, NULL, 2), CIVIS_ETOOBIG);
	root = parse_body(b, 1);
	cJSON_Delete(root);
	civis_batch_reset(b);
	assert_int_equal(civis_batch_add(b, msg, 400000, NULL, 3), CIVIS_EINVAL);
	assert_int_equal(civis_batch_count(b), 0);
	root = parse_body(b, 0);
	cJSON_Delete(root);
	/* 64 KiB of 4-byte characters passes through unchanged */
	for (len = 0; len + 4 <= CIVIS_BATCH_MAX_MESSAGE; len += 4)
		memcpy(msg + len, "\xF0\x9F\x98\x80", 4);
	assert_int_equal(civis_batch_add(b, msg, len, NULL, 4), CIVIS_OK);
	root = parse_body(b, 1);
	assert_memory_equal(msg_field(root, 0, "message"), msg, len);
	cJSON_Delete(root);
	civis_batch_free(b);
	free(msg);
}

/* A small batch: the floor holds one empty message at the longest level;
 * BYTES_FOR(n) holds any n bytes; more can never fit: EINVAL. */
static void
test_batch_small(void **state)
{
	static const char lvl[] = "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01";
	char msg[64];
	civis_batch *b;
	size_t len;
	cJSON *root;

	(void)state;
	memset(msg, 0, sizeof(msg));
	assert_int_equal(civis_batch_new(&b, 0, CIVIS_BATCH_FLOOR_BYTES), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, "", 0, lvl, 1), CIVIS_OK);
	civis_batch_body(b, &len);
	assert_true(len <= CIVIS_BATCH_FLOOR_BYTES);
	assert_int_equal(civis_batch_add(b, "", 0, lvl, 2), CIVIS_ETOOBIG);
	civis_batch_reset(b);
	assert_int_equal(civis_batch_add(b, msg, 1, lvl, 3), CIVIS_EINVAL);
	assert_int_equal(civis_batch_count(b), 0);
	civis_batch_free(b);

	assert_int_equal(civis_batch_new(&b, 0, CIVIS_BATCH_BYTES_FOR(sizeof(msg))), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, msg, sizeof(msg), lvl, 1), CIVIS_OK);
	civis_batch_reset(b);
	assert_int_equal(civis_batch_add(b, "x", 1, NULL, 1), CIVIS_OK);
	assert_int_equal(civis_batch_add(b, msg, sizeof(msg), lvl, 2), CIVIS_ETOOBIG);
	root = parse_body(b, 1);
	cJSON_Delete(root);
	civis_batch_free(b);
}

/* Default batches fill up to 10,000 messages or 1 MiB, never more. */
static void
test_batch_defaults_fill(void **state)
{
	civis_batch *b;
	char line[100];
	size_t len, n = 0;
	cJSON *root;
	int rc;

	(void)state;
	memset(line, 'x', sizeof(line));
	assert_int_equal(civis_batch_new(&b, 0, 0), CIVIS_OK);
	while ((rc = civis_batch_add(b, line, sizeof(line), NULL, n + 1)) == CIVIS_OK)
		n++;
	assert_int_equal(rc, CIVIS_ETOOBIG);
	civis_batch_body(b, &len);
	assert_true(len <= CIVIS_BATCH_DEFAULT_BYTES);
	assert_true(n < CIVIS_BATCH_DEFAULT_MESSAGES);   /* 175 bytes each: the byte cap */
	assert_true(len + 175 + 1 > CIVIS_BATCH_DEFAULT_BYTES);
	root = parse_body(b, n);
	cJSON_Delete(root);
	civis_batch_reset(b);
	n = 0;
	while ((rc = civis_batch_add(b, "", 0, NULL, n + 1)) == CIVIS_OK)
		n++;
	assert_int_equal(n, CIVIS_BATCH_DEFAULT_MESSAGES);
	civis_batch_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_ascii_and_controls),
		cmocka_unit_test(test_escape_every_c0),
		cmocka_unit_test(test_utf8_valid_passes),
		cmocka_unit_test(test_utf8_repair),
		cmocka_unit_test(test_escape_fast_path_positions),
		cmocka_unit_test(test_escape_bound_and_args),
		cmocka_unit_test(test_ts_format),
		cmocka_unit_test(test_ts_against_gmtime),
		cmocka_unit_test(test_tsclock),
		cmocka_unit_test(test_batch_new_args),
		cmocka_unit_test(test_batch_exact_body),
		cmocka_unit_test(test_batch_round_trip),
		cmocka_unit_test(test_batch_message_cap),
		cmocka_unit_test(test_batch_byte_cap),
		cmocka_unit_test(test_batch_worst_case_fits),
		cmocka_unit_test(test_batch_small),
		cmocka_unit_test(test_batch_defaults_fill),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
