/* test_redact.c: the streaming secret redactor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/redact.h"
#include "../../lib/src/redact_int.h"

/* ------------------------------------------------------------ helpers */

struct sink {
	char *buf;
	size_t len, cap;
	size_t calls;
	const char *last_ptr;
	int fail_after;     /* > 0: the n-th call fails */
};

static int
sink_out(void *ud, const char *data, size_t len)
{
	struct sink *k = ud;

	k->calls++;
	k->last_ptr = data;
	if (k->fail_after > 0 && k->calls >= (size_t)k->fail_after)
		return CIVIS_ENOMEM;
	assert_true(len > 0);
	if (k->len + len + 1 > k->cap) {
		size_t cap = k->cap ? k->cap : 256;
		while (cap < k->len + len + 1)
			cap *= 2;
		k->buf = realloc(k->buf, cap);
		assert_non_null(k->buf);
		k->cap = cap;
	}
	memcpy(k->buf + k->len, data, len);
	k->len += len;
	k->buf[k->len] = '\0';
	return CIVIS_OK;
}

static void
sink_reset(struct sink *k)
{
	free(k->buf);
	memset(k, 0, sizeof(*k));
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t
rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static size_t
rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

static civis_redact *
set_of(const char *const *secrets, size_t n)
{
	civis_redact *r = NULL;

	assert_int_equal(civis_redact_new(&r), CIVIS_OK);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(civis_redact_add(r, secrets[i], strlen(secrets[i])), CIVIS_OK);
	return r;
}

/* Feed text cut at the given offsets (sorted, inside (0, n)), flush, and
 * return the output (the caller frees it). */
static char *
run_cuts(const civis_redact *r, const char *text, size_t n, const size_t *cuts,
         size_t ncuts)
{
	civis_redact_stream *s = NULL;
	struct sink k;
	size_t prev = 0;
	char *res;

	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : n;
		assert_int_equal(civis_redact_stream_feed(s, text + prev, end - prev,
		                                          sink_out, &k), CIVIS_OK);
		assert_true(civis_redact_stream_held(s) < civis_redact_max_len(r) ||
		            civis_redact_stream_held(s) == 0);
		prev = end;
	}
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_held(s), 0);
	civis_redact_stream_free(s);
	res = k.buf ? k.buf : strdup("");
	assert_non_null(res);
	return res;
}

static char *
run_whole(const civis_redact *r, const char *text)
{
	return run_cuts(r, text, strlen(text), NULL, 0);
}

static char *
run_random(const civis_redact *r, const char *text, size_t n)
{
	size_t cuts[64], nc = 0;

	for (size_t i = 1; i < n && nc < 64; i++)
		if (rnd_below(1 + n / 16) == 0)
			cuts[nc++] = i;
	return run_cuts(r, text, n, cuts, nc);
}

static void
expect_redacted(const civis_redact *r, const char *text, const char *want)
{
	char *got = run_whole(r, text);

	assert_string_equal(got, want);
	free(got);
}

/* The output by definition: mask every byte covered by an occurrence of
 * any registered pattern, and, as the final flush does, every byte from the
 * first one whose bytes to the end are a proper prefix of a pattern (the
 * start of a secret cut by the end of the stream); each run of masked bytes
 * becomes one token. */
static char *
reference(const civis_redact *r, const char *text, size_t n)
{
	unsigned char *mask = calloc(n + 1, 1);
	char *out = malloc(n * 10 + 1);
	size_t o = 0;

	assert_non_null(mask);
	assert_non_null(out);
	for (size_t i = 0; i < civis_redact_count(r); i++) {
		const char *p;
		size_t pl;
		assert_int_equal(civis__redact_pattern(r, i, &p, &pl), CIVIS_OK);
		for (size_t st = 0; st + pl <= n; st++)
			if (memcmp(text + st, p, pl) == 0)
				memset(mask + st, 1, pl);
		for (size_t st = n > pl ? n - pl + 1 : 0; st < n; st++)
			if (memcmp(text + st, p, n - st) == 0)
				memset(mask + st, 1, n - st);
	}
	for (size_t i = 0; i < n; i++) {
		if (!mask[i]) {
			out[o++] = text[i];
		} else if (i == 0 || !mask[i - 1]) {
			memcpy(out + o, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN);
			o += CIVIS_REDACT_TOKEN_LEN;
		}
	}
	out[o] = '\0';
	free(mask);
	return out;
}

static size_t
b64(const unsigned char *p, size_t n, char *dst, int url)
{
	const char *abc = url ?
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" :
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t rem = n - i;
		if (rem > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (rem > 2)
			v |= p[i + 2];
		dst[o++] = abc[v >> 18];
		dst[o++] = abc[(v >> 12) & 63];
		dst[o++] = rem > 1 ? abc[(v >> 6) & 63] : '=';
		dst[o++] = rem > 2 ? abc[v & 63] : '=';
	}
	dst[o] = '\0';
	return o;
}

/* ------------------------------------------------------------ tests */

static void
test_no_secrets_zero_copy(void **state)
{
	civis_redact *r = set_of(NULL, 0);
	civis_redact_stream *s = NULL;
	struct sink k;
	const char text[] = "hello world\nsecond line";

	(void)state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_count(r), 0);
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, text, sizeof(text) - 1, sink_out, &k),
	                 CIVIS_OK);
	assert_int_equal(k.calls, 1);
	assert_ptr_equal(k.last_ptr, text);
	assert_int_equal(civis_redact_stream_held(s), 0);
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_int_equal(k.calls, 1);
	assert_string_equal(k.buf, text);
	assert_int_equal(civis_redact_stream_feed(s, text, 0, sink_out, &k), CIVIS_OK);
	assert_int_equal(k.calls, 1);
	civis_redact_stream_free(s);
	sink_reset(&k);
	civis_redact_free(r);
}

static void
test_basic_and_min_len(void **state)
{
	const char *sec[] = { "s3cr3tvalue", "abcde", "fghijk" };
	civis_redact *r = set_of(sec, 3);

	(void)state;
	expect_redacted(r, "a s3cr3tvalue b", "a [REDACTED] b");
	/* 5 bytes: not masked; 6 bytes: masked */
	expect_redacted(r, "abcde fghijk", "abcde [REDACTED]");
	/* a near miss is unchanged; at the very end of the stream the start
	 * of a secret is masked (the final flush never releases it raw) */
	expect_redacted(r, "s3cr3tvalu\n", "s3cr3tvalu\n");
	expect_redacted(r, "s3cr3tvalu", "[REDACTED]");
	expect_redacted(r, "", "");
	civis_redact_free(r);

	r = set_of(NULL, 0);
	assert_int_equal(civis_redact_add(r, "12345", 5), CIVIS_OK);
	assert_int_equal(civis_redact_add(r, "", 0), CIVIS_OK);
	assert_int_equal(civis_redact_count(r), 0);
	assert_int_equal(civis_redact_add(r, NULL, 3), CIVIS_EINVAL);
	civis_redact_free(r);
}

static void
test_split_every_offset(void **state)
{
	const char *sec[] = { "Zq9sEcReTvAlUe42" };
	civis_redact *r = set_of(sec, 1);
	const char *text = "before Zq9sEcReTvAlUe42 after";
	size_t n = strlen(text);

	(void)state;
	for (size_t cut = 1; cut < n; cut++) {
		char *got = run_cuts(r, text, n, &cut, 1);
		assert_string_equal(got, "before [REDACTED] after");
		free(got);
	}
	/* and every pair of cuts */
	for (size_t a = 1; a < n; a++) {
		for (size_t b = a + 1; b < n; b++) {
			size_t cuts[2] = { a, b };
			char *got = run_cuts(r, text, n, cuts, 2);
			assert_string_equal(got, "before [REDACTED] after");
			free(got);
		}
	}
	civis_redact_free(r);
}

static void
test_one_byte_at_a_time(void **state)
{
	const char *sec[] = { "abcdefgh", "efghijkl", "Q1w2E3r4" };
	civis_redact *r = set_of(sec, 3);
	const char *text = "x abcdefghijkl y Q1w2E3r4Q1w2E3r4 z abcdefg\n";
	size_t n = strlen(text), cuts[64];
	char *got;

	(void)state;
	for (size_t i = 1; i < n; i++)
		cuts[i - 1] = i;
	got = run_cuts(r, text, n, cuts, n - 1);
	assert_string_equal(got, "x [REDACTED] y [REDACTED] z abcdefg\n");
	free(got);
	civis_redact_free(r);
}

static void
test_start_and_end_of_stream(void **state)
{
	const char *sec[] = { "TOPSECRET99" };
	civis_redact *r = set_of(sec, 1);
	civis_redact_stream *s = NULL;
	struct sink k;

	(void)state;
	expect_redacted(r, "TOPSECRET99 at start", "[REDACTED] at start");
	expect_redacted(r, "at end TOPSECRET99", "at end [REDACTED]");
	expect_redacted(r, "TOPSECRET99", "[REDACTED]");
	/* a complete secret at the end is not held: nothing longer starts so */
	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "end TOPSECRET99", 15, sink_out, &k),
	                 CIVIS_OK);
	assert_int_equal(civis_redact_stream_held(s), 0);
	assert_string_equal(k.buf, "end [REDACTED]");
	/* the same secret again right after: one token, merged */
	assert_int_equal(civis_redact_stream_feed(s, "TOPSECRET99", 11, sink_out, &k),
	                 CIVIS_OK);
	assert_string_equal(k.buf, "end [REDACTED]");
	assert_int_equal(civis_redact_stream_feed(s, "!", 1, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "end [REDACTED]!");
	civis_redact_stream_free(s);
	sink_reset(&k);
	civis_redact_free(r);
}

static void
test_overlap_adjacent_prefix(void **state)
{
	const char *sec[] = { "abcdefgh", "efghijkl", "mnopqrst", "uvwxyz01" };
	const char *sec2[] = { "abcdef", "abcdefghij" };
	civis_redact *r = set_of(sec, 4);

	(void)state;
	expect_redacted(r, "abcdefghijkl", "[REDACTED]");
	expect_redacted(r, "<abcdefghijkl>", "<[REDACTED]>");
	/* adjacent: touching occurrences are one */
	expect_redacted(r, "mnopqrstuvwxyz01", "[REDACTED]");
	expect_redacted(r, "mnopqrstmnopqrst", "[REDACTED]");
	expect_redacted(r, "abcdefghijklmnopqrstuvwxyz01", "[REDACTED]");
	/* one byte apart: two */
	expect_redacted(r, "mnopqrst-uvwxyz01", "[REDACTED]-[REDACTED]");
	civis_redact_free(r);

	r = set_of(sec2, 2);
	expect_redacted(r, "abcdefghij", "[REDACTED]");
	expect_redacted(r, "abcdefghijk", "[REDACTED]k");
	expect_redacted(r, "abcdefgh\n", "[REDACTED]gh\n");
	expect_redacted(r, "abcdefgh", "[REDACTED]");    /* "gh" may begin the long one */
	expect_redacted(r, "abcdeXabcdef", "abcdeX[REDACTED]");
	civis_redact_free(r);
}

static void
test_kmp_traps(void **state)
{
	const char *sec[] = { "aaaaaab", "abababac", "aabaabaaab" };
	civis_redact *r = set_of(sec, 3);
	const char *texts[] = {
		"aaaaaaaaaab\n", "aaaaaaaaaaa\n", "abababababac\n", "ababababab\n",
		"aabaabaabaabaaab\n", "aabaabaabaaba\n", "aaaaaabaaaaaab\n",
	};
	const char *want[] = {
		"aaaa[REDACTED]\n", "aaaaaaaaaaa\n", "abab[REDACTED]\n", "ababababab\n",
		"aabaab[REDACTED]\n", "aabaabaabaaba\n", "[REDACTED]\n",
	};

	(void)state;
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		size_t n = strlen(texts[t]), cuts[32];
		char *got;
		expect_redacted(r, texts[t], want[t]);
		for (size_t i = 1; i < n; i++)
			cuts[i - 1] = i;
		got = run_cuts(r, texts[t], n, cuts, n - 1);
		assert_string_equal(got, want[t]);
		free(got);
	}
	civis_redact_free(r);
}

static void
test_multiline(void **state)
{
	const char *key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEA\r\nshort\nZmFrZWtleWRhdGE=\n-----END KEY-----";
	civis_redact *r = set_of(&key, 1);
	char *text, *got;
	size_t n;

	(void)state;
	n = strlen(key) + 16;
	text = malloc(n);
	assert_non_null(text);
	assert_true(snprintf(text, n, "<%s>", key) > 0);
	expect_redacted(r, text, "<[REDACTED]>");
	free(text);
	/* line by line, as a per-line printer would show it */
	expect_redacted(r, "x MIIEowIBAAKCAQEA y", "x [REDACTED] y");
	expect_redacted(r, "x MIIEowIBAAKCAQEA\r\n", "x [REDACTED]\n");
	expect_redacted(r, "k=ZmFrZWtleWRhdGE=\n", "k=[REDACTED]\n");
	expect_redacted(r, "-----END KEY-----", "[REDACTED]");
	/* a line under 6 bytes is not masked on its own */
	expect_redacted(r, "short\n", "short\n");
	/* JSON-escaped whole */
	got = run_whole(r, "{\"k\":\"-----BEGIN KEY-----\\nMIIEowIBAAKCAQEA\\r\\nshort\\nZmFrZWtleWRhdGE=\\n-----END KEY-----\"}");
	assert_string_equal(got, "{\"k\":\"[REDACTED]\"}");
	free(got);
	civis_redact_free(r);
}

static void
test_json_and_url_forms(void **state)
{
	const char *sec[] = { "pa\"ss\\wo/rd\t1", "p@ss w/rd:1", "ctl\x01val" };
	civis_redact *r = set_of(sec, 3);

	(void)state;
	expect_redacted(r, "{\"v\":\"pa\\\"ss\\\\wo/rd\\t1\"}", "{\"v\":\"[REDACTED]\"}");
	expect_redacted(r, "{\"v\":\"pa\\\"ss\\\\wo\\/rd\\t1\"}", "{\"v\":\"[REDACTED]\"}");
	expect_redacted(r, "raw pa\"ss\\wo/rd\t1.", "raw [REDACTED].");
	expect_redacted(r, "u=p%40ss%20w%2Frd%3A1&", "u=[REDACTED]&");
	expect_redacted(r, "u=p%40ss%20w%2frd%3a1&", "u=[REDACTED]&");
	expect_redacted(r, "u=p%40ss+w%2Frd%3A1&", "u=[REDACTED]&");
	expect_redacted(r, "u=p%40ss+w%2frd%3a1&", "u=[REDACTED]&");
	expect_redacted(r, "\"ctl\\u0001val\"", "\"[REDACTED]\"");
	expect_redacted(r, "\"ctl\\u0001va\"", "\"ctl\\u0001va\"");
	civis_redact_free(r);
}

static void
test_base64_forms(void **state)
{
	const char *secret = "hunter2-is-my?password>";
	const char *prefixes[] = { "", "u", "us", "use", "user:", "someone:" };
	civis_redact *r = set_of(&secret, 1);
	unsigned char plain[128];
	char enc[256], text[300], det[256];
	size_t sl = strlen(secret);

	(void)state;
	for (int url = 0; url < 2; url++) {
		for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
			size_t pl = strlen(prefixes[p]), n, lo, hi;
			char *got;
			n = (size_t)snprintf((char *)plain, sizeof(plain), "%s%s@host", prefixes[p], secret);
			b64(plain, n, enc, url);
			assert_true(snprintf(text, sizeof(text), "Authorization: Basic %s\n", enc) > 0);
			got = run_whole(r, text);
			/* the characters that depend on the secret alone are gone */
			lo = (8 * pl + 5) / 6;
			hi = 8 * (pl + sl) / 6;
			memcpy(det, enc + lo, hi - lo);
			det[hi - lo] = '\0';
			assert_null(strstr(got, det));
			assert_non_null(strstr(got, CIVIS_REDACT_TOKEN));
			free(got);
		}
		/* standalone, padded and not: nothing of it is left */
		b64((const unsigned char *)secret, sl, enc, url);
		assert_true(snprintf(text, sizeof(text), "v=%s;", enc) > 0);
		expect_redacted(r, text, "v=[REDACTED];");
		enc[strcspn(enc, "=")] = '\0';
		assert_true(snprintf(text, sizeof(text), "v=%s;", enc) > 0);
		expect_redacted(r, text, "v=[REDACTED];");
	}
	civis_redact_free(r);
}

static void
test_flush_masks_held(void **state)
{
	const char *sec[] = { "abcdefgh" };
	civis_redact *r = set_of(sec, 1);
	civis_redact_stream *s = NULL;
	struct sink k;

	(void)state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "xx abcd", 7, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx ");
	assert_int_equal(civis_redact_stream_held(s), 4);
	/* the held start of a secret goes out masked, never raw */
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED]");
	assert_int_equal(civis_redact_stream_held(s), 0);
	/* flushing twice changes nothing */
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED]");
	/* the secret completes after the flush: its rest joins the token */
	assert_int_equal(civis_redact_stream_feed(s, "efgh yy", 7, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED] yy");
	/* held bytes that turn out not to be a secret come out unchanged
	 * when no flush fell in between */
	assert_int_equal(civis_redact_stream_feed(s, " abcdef", 7, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_held(s), 6);
	assert_int_equal(civis_redact_stream_feed(s, "Xg\n", 3, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_held(s), 0);
	assert_string_equal(k.buf, "xx [REDACTED] yy abcdefXg\n");
	/* with a flush in between, they were masked: the price of never
	 * showing a start; what follows is plain again */
	assert_int_equal(civis_redact_stream_feed(s, "q abc", 5, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "XYZ\n", 4, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED] yy abcdefXg\nq [REDACTED]XYZ\n");
	/* decided text before the held bytes is not masked by a flush */
	assert_int_equal(civis_redact_stream_feed(s, "plain ab", 8, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED] yy abcdefXg\nq [REDACTED]XYZ\nplain [REDACTED]");
	/* a secret cut in three by two flushes: still one token */
	assert_int_equal(civis_redact_stream_feed(s, "cde", 3, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "fgh!", 4, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED] yy abcdefXg\nq [REDACTED]XYZ\nplain [REDACTED]!");
	civis_redact_stream_free(s);
	sink_reset(&k);
	civis_redact_free(r);
}

static void
test_flush_inside_masked_run(void **state)
{
	const char *sec[] = { "abcdefgh", "efghijklmnop" };
	civis_redact *r = set_of(sec, 2);
	civis_redact_stream *s = NULL;
	struct sink k;

	(void)state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "xxabcdefghij", 12, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx[REDACTED]");
	assert_int_equal(civis_redact_stream_held(s), 6);
	/* completes: one token for the whole run */
	assert_int_equal(civis_redact_stream_feed(s, "klmnop.", 7, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx[REDACTED].");
	/* the same with a flush in between: still one token, and "ij" (the
	 * start of the second secret) does not show */
	assert_int_equal(civis_redact_stream_feed(s, "abcdefghij", 10, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_flush(s, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx[REDACTED].[REDACTED]");
	assert_int_equal(civis_redact_stream_feed(s, "klmnop", 6, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx[REDACTED].[REDACTED]");
	assert_int_equal(civis_redact_stream_feed(s, "-", 1, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx[REDACTED].[REDACTED]-");
	civis_redact_stream_free(s);
	sink_reset(&k);
	civis_redact_free(r);
}

/* ------------------------------------------------------------ flushes */

/* Feed text cut at the cuts with a flush at each cut, then a final flush.
 * msgs[i] is what came out between two flushes (a message of the log). */
#define MAXMSG 80
struct msgs {
	struct sink m[MAXMSG];
	size_t n;
};

static void
run_flushed(const civis_redact *r, const char *text, size_t n, const size_t *cuts,
            size_t ncuts, struct msgs *ms, struct sink *all)
{
	civis_redact_stream *s = NULL;
	size_t prev = 0;

	memset(ms, 0, sizeof(*ms));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : n;
		struct sink *m = &ms->m[ms->n];

		assert_true(ms->n < MAXMSG);
		assert_int_equal(civis_redact_stream_feed(s, text + prev, end - prev, sink_out, m),
		                 CIVIS_OK);
		assert_int_equal(civis_redact_stream_flush(s, sink_out, m), CIVIS_OK);
		assert_int_equal(civis_redact_stream_held(s), 0);
		if (m->len)
			assert_int_equal(sink_out(all, m->buf, m->len), CIVIS_OK);
		ms->n++;
		prev = end;
	}
	civis_redact_stream_free(s);
}

static void
msgs_free(struct msgs *ms)
{
	for (size_t i = 0; i < ms->n; i++)
		sink_reset(&ms->m[i]);
	ms->n = 0;
}

/* Strip the tokens from o[0..*ol) in place. */
static void
strip_tokens(char *o, size_t *ol)
{
	char *tok;

	while ((tok = memmem(o, *ol, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN))) {
		memmove(tok, tok + CIVIS_REDACT_TOKEN_LEN,
		        *ol - (size_t)(tok - o) - CIVIS_REDACT_TOKEN_LEN);
		*ol -= CIVIS_REDACT_TOKEN_LEN;
	}
}

/* Whether a[0..an) is a subsequence of b[0..bn). */
static int
subsequence(const char *a, size_t an, const char *b, size_t bn)
{
	size_t i = 0;

	for (size_t j = 0; j < bn && i < an; j++)
		if (a[i] == b[j])
			i++;
	return i == an;
}

/* Issue 12 point 1: a secret (and its encoded forms) split at every offset,
 * and at every pair of offsets, inside it, with a flush at each split: the
 * output is exactly the text around it and one token; not one byte of the
 * secret shows, in any message. A flush elsewhere may mask bytes that could
 * begin a secret (the price of never showing one), nothing more: the output
 * without its tokens is then a subsequence of the ideal one, and no 4 bytes
 * of the secret's form show. */
static void
test_flush_split_every_offset(void **state)
{
	const char *sec[] = { "Zq9sEcReTvAlUe42", "p@ss w/rd:Kx7!" };
	civis_redact *r = set_of(sec, 2);
	const char *texts[] = {
		"before Zq9sEcReTvAlUe42 after\n",
		"u=p%40ss%20w%2Frd%3AKx7%21&\n",
		"{\"v\":\"p@ss w\\/rd:Kx7!\"}\n",
		"b64=WnE5c0VjUmVUdkFsVWU0Mg== .\n",
	};
	const char *want[] = {
		"before [REDACTED] after\n",
		"u=[REDACTED]&\n",
		"{\"v\":\"[REDACTED]\"}\n",
		"b64=[REDACTED] .\n",
	};
	/* where the secret's form starts and ends in each text */
	const size_t from[] = { 7, 2, 6, 4 }, to[] = { 23, 26, 22, 28 };
	struct msgs ms;

	(void)state;
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		size_t n = strlen(texts[t]), wl = strlen(want[t]);
		char ideal[64];

		memcpy(ideal, want[t], wl);
		strip_tokens(ideal, &wl);
		for (size_t a = 1; a < n; a++) {
			for (size_t b = a; b < n; b++) {
				size_t cuts[2] = { a, b }, ol;
				struct sink all;
				int inside = a > from[t] && b < to[t];

				if (!inside && a != b)
					continue;
				memset(&all, 0, sizeof(all));
				run_flushed(r, texts[t], n, cuts, a == b ? 1 : 2, &ms, &all);
				if (inside)
					assert_string_equal(all.buf, want[t]);
				for (size_t m = 0; m < ms.n; m++)
					for (size_t st = from[t]; st + 4 <= to[t]; st++)
						assert_null(memmem(ms.m[m].buf ? ms.m[m].buf : "", ms.m[m].len,
						                   texts[t] + st, 4));
				ol = all.len;
				strip_tokens(all.buf, &ol);
				assert_true(subsequence(all.buf, ol, ideal, wl));
				msgs_free(&ms);
				sink_reset(&all);
			}
		}
	}
	civis_redact_free(r);
}

/* A writer killed in the middle of a secret: the end of the stream masks
 * the start it left. */
static void
test_end_of_stream_mid_secret(void **state)
{
	const char *sec[] = { "Zq9sEcReTvAlUe42" };
	civis_redact *r = set_of(sec, 1);
	char *got;

	(void)state;
	for (size_t k = 1; k < strlen(sec[0]); k++) {
		char text[64];

		assert_true(snprintf(text, sizeof(text), "x %.*s", (int)k, sec[0]) > 0);
		got = run_whole(r, text);
		assert_string_equal(got, "x [REDACTED]");
		free(got);
	}
	civis_redact_free(r);
}

/* Issue 12 point 1, randomized. Secrets: 8..40 bytes over an alphabet of
 * upper-case letters and digits without those of "[REDACTED]"; the text
 * around them: lower case, spaces, punctuation and newlines, so it shares
 * no byte with a secret. The text (secrets planted at random, whole or as a
 * prefix cut by the end) is fed in random pieces with a flush after some of
 * them, as idle flushes would fall. Property checked: no message (the
 * output between two flushes, or after the last) contains any substring of
 * length >= 4 of any secret (the substring being the whole secret when it
 * is shorter, which never happens here) - nor, as the text shares no byte
 * with the secrets, any run of 4 secret bytes at all; and the filler bytes
 * come out in order: removing the tokens from the output gives the
 * filler text with the secrets taken out, less at most the longest pattern's
 * length of bytes before each flush (held bytes that could begin a secret
 * go out masked). */
static void
test_flush_random(void **state)
{
	static const char sabc[] = "BFGHIJKLMNOPQSUVWXYZ0123456789";
	static const char tabc[] = "abcdefghijklmnopqrstuvwxyz .,:;\n";
	char text[1200], filler[1200];

	(void)state;
	for (int round = 0; round < 400; round++) {
		civis_redact *r = NULL;
		char sec[4][48];
		size_t nsec = 1 + rnd_below(4), n = 0, nf = 0, cuts[64], nc = 0;
		struct msgs ms;
		struct sink all;

		assert_int_equal(civis_redact_new(&r), CIVIS_OK);
		for (size_t i = 0; i < nsec; i++) {
			size_t sl = 8 + rnd_below(33);
			for (size_t j = 0; j < sl; j++)
				sec[i][j] = sabc[rnd_below(sizeof(sabc) - 1)];
			sec[i][sl] = '\0';
			assert_int_equal(civis_redact_add_secret(r, sec[i], sl), CIVIS_OK);
		}
		while (n < sizeof(text) - 2 * 48) {   /* room for a secret and a cut one */
			if (rnd_below(6) == 0) {
				size_t k = rnd_below(nsec), sl = strlen(sec[k]);
				memcpy(text + n, sec[k], sl);
				n += sl;
			} else {
				text[n++] = filler[nf++] = tabc[rnd_below(sizeof(tabc) - 1)];
			}
		}
		if (rnd_below(2)) {     /* the end cuts a secret */
			size_t k = rnd_below(nsec), sl = 1 + rnd_below(strlen(sec[k]) - 1);
			memcpy(text + n, sec[k], sl);
			n += sl;
		}
		for (size_t i = 1; i < n && nc < 64; i++)
			if (rnd_below(1 + n / 40) == 0)
				cuts[nc++] = i;
		memset(&all, 0, sizeof(all));
		run_flushed(r, text, n, cuts, nc, &ms, &all);
		for (size_t m = 0; m < ms.n; m++) {
			const char *b = ms.m[m].buf ? ms.m[m].buf : "";
			for (size_t i = 0; i < nsec; i++) {
				size_t sl = strlen(sec[i]), w = sl < 4 ? sl : 4;
				for (size_t st = 0; st + w <= sl; st++)
					assert_null(memmem(b, ms.m[m].len, sec[i] + st, w));
			}
		}
		/* the filler comes out in order; a flush may mask the few bytes
		 * before it that could begin a secret, never more than the
		 * longest pattern per flush */
		{
			size_t ol = all.len;

			strip_tokens(all.buf ? all.buf : (char *)"", &ol);
			assert_true(subsequence(all.buf ? all.buf : "", ol, filler, nf));
			assert_true(nf - ol <= (nc + 1) * civis_redact_max_len(r));
			if (nc == 0)
				assert_int_equal(ol, nf);
		}
		msgs_free(&ms);
		sink_reset(&all);
		civis_redact_free(r);
	}
}

/* ------------------------------------------------------------ at run time */

/* M5: a secret added while a stream runs is masked, in every form, in what
 * the stream is fed afterwards; what went out before stays as it was. */
static void
test_add_secret_runtime(void **state)
{
	const char *sec[] = { "first-secret-1" };
	civis_redact *r = set_of(sec, 1), *empty = set_of(NULL, 0);
	civis_redact_stream *s = NULL, *e = NULL;
	const char *late = "L4te:Secret/Val+ue";
	char enc[64], feedbuf[256], *got;
	struct sink k, ke;
	size_t count;

	(void)state;
	memset(&k, 0, sizeof(k));
	memset(&ke, 0, sizeof(ke));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_new(&e, empty), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "a L4te:Secret/Val+ue first-secret-1\n", 36,
	                                          sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "a L4te:Secret/Val+ue [REDACTED]\n");
	assert_int_equal(civis_redact_stream_feed(e, "a L4te:Secret/Val+ue\n", 21, sink_out, &ke),
	                 CIVIS_OK);
	/* refused: shorter than 6 bytes, NULL */
	count = civis_redact_count(r);
	assert_int_equal(civis_redact_add_secret(r, "12345", 5), CIVIS_EINVAL);
	assert_int_equal(civis_redact_add_secret(r, NULL, 8), CIVIS_EINVAL);
	assert_int_equal(civis_redact_add_secret(NULL, "123456", 6), CIVIS_EINVAL);
	assert_int_equal(civis_redact_count(r), count);
	assert_int_equal(civis_redact_add_secret(r, "123456", 6), CIVIS_OK);
	assert_true(civis_redact_count(r) > count);
	/* the late secret, longer than every pattern so far: the stream's held
	 * buffer grows at the next feed */
	assert_true(civis_redact_max_len(r) < 3 * strlen(late));
	assert_int_equal(civis_redact_add_secret(r, late, strlen(late)), CIVIS_OK);
	assert_int_equal(civis_redact_add_secret(empty, late, strlen(late)), CIVIS_OK);
	b64((const unsigned char *)late, strlen(late), enc, 0);
	assert_true(snprintf(feedbuf, sizeof(feedbuf),
	                     "raw %s json \"L4te:Secret\\/Val+ue\" url L4te%%3ASecret%%2FVal%%2Bue "
	                     "b64 %s six 123456\n", late, enc) > 0);
	/* fed one byte at a time: the held buffer must cope */
	for (size_t i = 0; feedbuf[i]; i++) {
		assert_int_equal(civis_redact_stream_feed(s, feedbuf + i, 1, sink_out, &k), CIVIS_OK);
		assert_int_equal(civis_redact_stream_feed(e, feedbuf + i, 1, sink_out, &ke),
		                 CIVIS_OK);
	}
	assert_string_equal(k.buf, "a L4te:Secret/Val+ue [REDACTED]\n"
	                    "raw [REDACTED] json \"[REDACTED]\" url [REDACTED] b64 [REDACTED] "
	                    "six [REDACTED]\n");
	assert_string_equal(ke.buf, "a L4te:Secret/Val+ue\n"
	                    "raw [REDACTED] json \"[REDACTED]\" url [REDACTED] b64 [REDACTED] "
	                    "six 123456\n");
	got = run_whole(r, "x L4te:Secret/Val+ue y\n");
	assert_string_equal(got, "x [REDACTED] y\n");
	free(got);
	civis_redact_stream_free(s);
	civis_redact_stream_free(e);
	sink_reset(&k);
	sink_reset(&ke);
	civis_redact_free(r);
	civis_redact_free(empty);
}

/* Bytes held when the secret is added are checked against it too. */
static void
test_add_secret_while_held(void **state)
{
	const char *sec[] = { "abcdefgh" };
	civis_redact *r = set_of(sec, 1);
	civis_redact_stream *s = NULL;
	struct sink k;

	(void)state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "xx abc", 6, sink_out, &k), CIVIS_OK);
	assert_int_equal(civis_redact_stream_held(s), 3);
	assert_int_equal(civis_redact_add_secret(r, "abcXYZ123", 9), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "XYZ123 yy\n", 10, sink_out, &k), CIVIS_OK);
	assert_string_equal(k.buf, "xx [REDACTED] yy\n");
	civis_redact_stream_free(s);
	sink_reset(&k);
	civis_redact_free(r);
}

/* ------------------------------------------------------------ mask, then cut */

/* Issue 12 point 2: the whole text is masked before it is cut, so a secret
 * that crosses the cut never shows its start, and a cut never splits a
 * token. */
static void
test_mask_then_cut(void **state)
{
	const char *sec[] = { "Zq9sEcReTvAlUe42" };
	civis_redact *r = set_of(sec, 1);
	char buf[64], big[4096], out[16];
	size_t outlen;
	int rc;

	(void)state;
	/* every buffer size: the start of the secret never shows */
	for (size_t len = 1; len <= 40; len++) {
		rc = civis_redact_format(r, buf, len, "cannot open '%s': %s", "/d/Zq9sEcReTvAlUe42.csv",
		                         "No such file");
		assert_int_equal(rc, len > 43 - 1 ? CIVIS_OK : CIVIS_ETOOBIG);
		assert_null(strstr(buf, "Zq"));
		assert_true(strlen(buf) < len);
		assert_int_equal(strncmp(buf, "cannot open '/d/[REDACTED].csv': No such file",
		                         strlen(buf)), 0);
		/* a token is whole or absent */
		if (strchr(buf, '['))
			assert_non_null(strstr(buf, CIVIS_REDACT_TOKEN));
	}
	assert_int_equal(civis_redact_format(r, buf, sizeof(buf), "k=%s!", sec[0]), CIVIS_OK);
	assert_string_equal(buf, "k=[REDACTED]!");
	/* longer than the stack buffer: the secret at the very end of it */
	memset(big, 'x', 2000);
	memcpy(big + 2000 - 8, sec[0], 16);
	big[2008] = '\0';
	assert_int_equal(civis_redact_format(r, buf, 12, "%s", big), CIVIS_ETOOBIG);
	assert_string_equal(buf, "xxxxxxxxxxx");
	{
		char *whole = malloc(4096);
		assert_non_null(whole);
		assert_int_equal(civis_redact_format(r, whole, 4096, "%s", big), CIVIS_OK);
		assert_int_equal(strlen(whole), 1992 + CIVIS_REDACT_TOKEN_LEN);
		assert_string_equal(whole + 1992, CIVIS_REDACT_TOKEN);
		free(whole);
	}
	/* no set: formatted and cut */
	assert_int_equal(civis_redact_format(NULL, buf, 6, "%s", sec[0]), CIVIS_ETOOBIG);
	assert_string_equal(buf, "Zq9sE");
	assert_int_equal(civis_redact_format(r, buf, 0, "x"), CIVIS_EINVAL);
	/* any bytes, NUL included; not terminated; in place */
	assert_int_equal(civis_redact_buf(r, "a\0Zq9sEcReTvAlUe42\0b", 20, out, sizeof(out), &outlen),
	                 CIVIS_OK);
	assert_int_equal(outlen, 14);
	assert_memory_equal(out, "a\0[REDACTED]\0b", 14);
	assert_int_equal(civis_redact_buf(r, "a\0Zq9sEcReTvAlUe42\0b", 20, out, 11, &outlen),
	                 CIVIS_ETOOBIG);
	assert_int_equal(outlen, 2);
	memcpy(big, "Zq9sEcReTvAlUe42 Zq9sEcReTvAlUe42", 33);
	assert_int_equal(civis_redact_buf(r, big, 33, big, sizeof(big), &outlen), CIVIS_OK);
	assert_memory_equal(big, "[REDACTED] [REDACTED]", outlen);
	assert_int_equal(civis_redact_buf(r, "x", 1, out, sizeof(out), NULL), CIVIS_EINVAL);
	assert_int_equal(civis_redact_buf(r, "", 0, out, 0, &outlen), CIVIS_OK);
	assert_int_equal(outlen, 0);
	civis_redact_free(r);
}

static void
test_plain_text_unchanged(void **state)
{
	const char *sec[] = { "Kx7Qm2Lp9Vz3", "zzzzzz", "hello world!" };
	civis_redact *r = set_of(sec, 3);
	char text[2000];

	(void)state;
	for (int round = 0; round < 200; round++) {
		size_t n = 1 + rnd_below(sizeof(text) - 1);
		char *got;
		for (size_t i = 0; i < n; i++) {
			/* near misses: the alphabet of the secrets, but never 'z'
			 * 6 in a row nor the rest completed */
			static const char abc[] = "Kx7Qm2Lp9V3hello wrd!\n";
			text[i] = abc[rnd_below(sizeof(abc) - 1)];
		}
		/* a line ends the output: nothing can be the start of a secret */
		text[n - 1] = '\n';
		got = run_random(r, text, n);
		assert_int_equal(strlen(got), n);
		assert_memory_equal(got, text, n);
		free(got);
	}
	civis_redact_free(r);
}

static void
test_against_reference(void **state)
{
	char text[600];

	(void)state;
	for (int round = 0; round < 300; round++) {
		civis_redact *r = NULL;
		char sec[6][24];
		size_t nsec = 1 + rnd_below(5), n = 0;
		static const char abc[] = "ab/+=\n";
		size_t nabc = 2 + rnd_below(sizeof(abc) - 2);
		char *want, *got;

		assert_int_equal(civis_redact_new(&r), CIVIS_OK);
		for (size_t i = 0; i < nsec; i++) {
			size_t sl = 6 + rnd_below(10);
			for (size_t j = 0; j < sl; j++)
				sec[i][j] = abc[rnd_below(nabc)];
			sec[i][sl] = '\0';
			assert_int_equal(civis_redact_add(r, sec[i], sl), CIVIS_OK);
		}
		while (n < sizeof(text) - 30) {
			if (rnd_below(4) == 0) {
				size_t k = rnd_below(nsec), sl = strlen(sec[k]);
				memcpy(text + n, sec[k], sl);
				n += sl;
			} else {
				text[n++] = abc[rnd_below(nabc)];
			}
		}
		want = reference(r, text, n);
		for (int t = 0; t < 4; t++) {
			got = run_random(r, text, n);
			assert_string_equal(got, want);
			free(got);
		}
		free(want);
		civis_redact_free(r);
	}
}

static void
test_long_secret_pieces(void **state)
{
	size_t n = 3 * CIVIS_REDACT_MAX_SECRET + 17;
	char *secret = malloc(n + 1), *text = malloc(n + 3), *got;
	civis_redact *r = set_of(NULL, 0);

	(void)state;
	assert_non_null(secret);
	assert_non_null(text);
	for (size_t i = 0; i < n; i++)
		secret[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[rnd_below(36)];
	secret[n] = '\0';
	assert_int_equal(civis_redact_add(r, secret, n), CIVIS_OK);
	assert_true(civis_redact_max_len(r) < 3 * CIVIS_REDACT_MAX_SECRET);
	text[0] = '<';
	memcpy(text + 1, secret, n);
	text[n + 1] = '>';
	text[n + 2] = '\0';
	got = run_random(r, text, n + 2);
	assert_string_equal(got, "<[REDACTED]>");
	free(got);
	free(secret);
	free(text);
	civis_redact_free(r);
}

static void
test_total_cap(void **state)
{
	civis_redact *r = set_of(NULL, 0);
	char buf[CIVIS_REDACT_MAX_SECRET];
	int rc = CIVIS_OK;

	(void)state;
	for (int i = 0; i < 1000 && rc == CIVIS_OK; i++) {
		for (size_t j = 0; j < sizeof(buf); j++)
			buf[j] = (char)(1 + rnd_below(255));
		rc = civis_redact_add(r, buf, sizeof(buf));
	}
	assert_int_equal(rc, CIVIS_ETOOBIG);
	assert_true(civis_redact_memory(r) < 3 * CIVIS_REDACT_MAX_TOTAL);
	/* what fitted is still masked */
	{
		const char *p;
		size_t pl;
		char *got;
		assert_int_equal(civis__redact_pattern(r, 0, &p, &pl), CIVIS_OK);
		got = run_cuts(r, p, pl, NULL, 0);
		assert_string_equal(got, "[REDACTED]");
		free(got);
	}
	civis_redact_free(r);
}

static void
test_name_patterns(void **state)
{
	const char *globs[] = { "MY_*", "EXACT", "[xy]VAR?" };

	(void)state;
	assert_true(civis_redact_name_is_secret("CIVIS_API_KEY", NULL, 0, 0));
	assert_true(civis_redact_name_is_secret("DB_PASSWORD", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("db_password", NULL, 0, 1));
	assert_false(civis_redact_name_is_secret("DB_PASSWORD", NULL, 0, 0));
	assert_true(civis_redact_name_is_secret("AWS_SECRET_ACCESS_KEY", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("GITHUB_TOKEN", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("X_SECRET", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("DEPLOY_SSH_KEY", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("TLS_PRIVATE_KEY", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("S3_SECRET_KEY", NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("OPENAI_API_KEY", NULL, 0, 1));
	/* issue 12 point 5: what real tools and Civis use */
	{
		static const char *const yes[] = {
			"PASSWORD", "PGPASSWORD", "MYSQL_PWD", "DB_PASS", "API_KEY", "APIKEY",
			"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET",
			"AZURE_CLIENT_CERTIFICATE_PASSWORD", "GOOGLE_API_KEY", "GH_TOKEN",
			"REDSHIFT_PASSWORD", "MY_DB_PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY",
			"LDAP_PASSWD", "snowflake_password", "X_APIKEY", "SLACK_TOKEN_V2",
			"CLIENT_SECRET_VALUE",
		};
		static const char *const no[] = {
			"PGPASSFILE", "PGUSER", "PWD", "OLDPWD", "AWS_ACCESS_KEY_ID", "PASS",
			"GOOGLE_APPLICATION_CREDENTIALS", "PASSWORD_FILE", "SECRETS_DIR",
			"AWS_WEB_IDENTITY_TOKEN_FILE", "TOKENIZERS_PARALLELISM", "TOKENIZER",
			"SSL_CERT_PATH", "MY_DB_USERNAME", "PASSAGE", "KEYBOARD", "SORT_KEY",
			"COMPASS", "HOME",
		};
		for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
			if (!civis_redact_name_is_secret(yes[i], NULL, 0, 1))
				fail_msg("%s should be a secret name", yes[i]);
			assert_false(civis_redact_name_is_secret(yes[i], NULL, 0, 0));
		}
		for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
			if (civis_redact_name_is_secret(no[i], NULL, 0, 1))
				fail_msg("%s should not be a secret name", no[i]);
	}
	/* a --redact glob takes a name the defaults leave */
	{
		const char *g[] = { "PGPASSFILE" };
		assert_true(civis_redact_name_is_secret("PGPASSFILE", g, 1, 1));
	}
	assert_false(civis_redact_name_is_secret("PATH", NULL, 0, 1));
	assert_false(civis_redact_name_is_secret("", NULL, 0, 1));
	assert_false(civis_redact_name_is_secret(NULL, NULL, 0, 1));
	assert_true(civis_redact_name_is_secret("MY_THING", globs, 3, 0));
	assert_true(civis_redact_name_is_secret("EXACT", globs, 3, 0));
	assert_false(civis_redact_name_is_secret("EXACTLY", globs, 3, 0));
	assert_true(civis_redact_name_is_secret("xVAR1", globs, 3, 0));
	assert_false(civis_redact_name_is_secret("zVAR1", globs, 3, 0));
	/* only the first n patterns count */
	assert_false(civis_redact_name_is_secret("EXACT", globs, 1, 0));
}

static void
test_add_env(void **state)
{
	char *envp[] = {
		"CIVIS_API_KEY=civiskey-0123456789",
		"DB_PASSWORD=hunter2hunter2",
		"SHORT_TOKEN=abc",
		"PATH=/usr/local/bin:/usr/bin",
		"MY_VALUE=custom-value-42",
		"NOEQUALS",
		"=nameless-value",
		NULL,
	};
	const char *globs[] = { "MY_*" };
	civis_redact *r = NULL;
	char *got;

	(void)state;
	assert_int_equal(civis_redact_new(&r), CIVIS_OK);
	assert_int_equal(civis_redact_add_env(r, envp, globs, 1, 1), CIVIS_OK);
	got = run_whole(r, "k=civiskey-0123456789 p=hunter2hunter2 t=abc v=custom-value-42 path=/usr/local/bin:/usr/bin n=nameless-value");
	assert_string_equal(got, "k=[REDACTED] p=[REDACTED] t=abc v=[REDACTED] path=/usr/local/bin:/usr/bin n=nameless-value");
	free(got);
	civis_redact_free(r);

	/* defaults off: the API key only */
	assert_int_equal(civis_redact_new(&r), CIVIS_OK);
	assert_int_equal(civis_redact_add_env(r, envp, NULL, 0, 0), CIVIS_OK);
	got = run_whole(r, "k=civiskey-0123456789 p=hunter2hunter2 v=custom-value-42");
	assert_string_equal(got, "k=[REDACTED] p=hunter2hunter2 v=custom-value-42");
	free(got);
	civis_redact_free(r);

	/* issue 12 point 5: each of these was streamed verbatim; now masked by
	 * default (and the 6-byte floor holds) */
	{
		char *env5[] = {
			"PGPASSWORD=pg-secret-1", "PASSWORD=plain-secret-2", "API_KEY=api-secret-3",
			"DB_PASS=db-secret-4", "MYSQL_PWD=my-secret-5", "PGPASSFILE=/home/u/.pgpass",
			"DB_PWD=12345", "AWS_ACCESS_KEY_ID=AKIAEXAMPLEID", NULL,
		};
		assert_int_equal(civis_redact_new(&r), CIVIS_OK);
		assert_int_equal(civis_redact_add_env(r, env5, NULL, 0, 1), CIVIS_OK);
		got = run_whole(r, "pg-secret-1 plain-secret-2 api-secret-3 db-secret-4 my-secret-5 "
		                   "/home/u/.pgpass 12345 AKIAEXAMPLEID\n");
		assert_string_equal(got, "[REDACTED] [REDACTED] [REDACTED] [REDACTED] [REDACTED] "
		                         "/home/u/.pgpass 12345 AKIAEXAMPLEID\n");
		free(got);
		civis_redact_free(r);
	}

	/* no environment at all */
	assert_int_equal(civis_redact_new(&r), CIVIS_OK);
	assert_int_equal(civis_redact_add_env(r, NULL, NULL, 0, 1), CIVIS_OK);
	assert_int_equal(civis_redact_count(r), 0);
	civis_redact_free(r);
}

static void
test_redact_string(void **state)
{
	const char *sec[] = { "civiskey-0123456789", "abcdef" };
	civis_redact *r = set_of(sec, 2);
	civis_redact *none = set_of(NULL, 0);
	char buf[64], small[12];

	(void)state;
	assert_int_equal(civis_redact_string(r, "POST failed: key civiskey-0123456789 rejected",
	                                     buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "POST failed: key [REDACTED] rejected");
	/* a secret at the very end, and a prefix of one: decided at once */
	assert_int_equal(civis_redact_string(r, "x abcdef", buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "x [REDACTED]");
	assert_int_equal(civis_redact_string(r, "x abcde", buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "x abcde");
	/* in place: the output is longer than the input here */
	assert_true(snprintf(buf, sizeof(buf), "abcdef!abcdef") > 0);
	assert_int_equal(civis_redact_string(r, buf, buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "[REDACTED]![REDACTED]");
	/* cut to fit */
	assert_int_equal(civis_redact_string(r, "abcdef and more text", small, sizeof(small)),
	                 CIVIS_ETOOBIG);
	assert_string_equal(small, "[REDACTED] ");
	assert_int_equal(civis_redact_string(none, "plain", small, sizeof(small)), CIVIS_OK);
	assert_string_equal(small, "plain");
	assert_int_equal(civis_redact_string(r, "x", small, 0), CIVIS_EINVAL);
	civis_redact_free(r);
	civis_redact_free(none);
}

static void
test_out_error_propagates(void **state)
{
	const char *sec[] = { "abcdefgh" };
	civis_redact *r = set_of(sec, 1);
	civis_redact *none = set_of(NULL, 0);
	civis_redact_stream *s = NULL;
	struct sink k;

	(void)state;
	memset(&k, 0, sizeof(k));
	k.fail_after = 1;
	assert_int_equal(civis_redact_stream_new(&s, r), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "x abcdefgh y", 12, sink_out, &k),
	                 CIVIS_ENOMEM);
	civis_redact_stream_free(s);
	sink_reset(&k);
	k.fail_after = 1;
	assert_int_equal(civis_redact_stream_new(&s, none), CIVIS_OK);
	assert_int_equal(civis_redact_stream_feed(s, "x", 1, sink_out, &k), CIVIS_ENOMEM);
	civis_redact_stream_free(s);
	sink_reset(&k);
	assert_int_equal(civis_redact_stream_new(NULL, r), CIVIS_EINVAL);
	assert_int_equal(civis_redact_stream_new(&s, NULL), CIVIS_EINVAL);
	assert_null(s);
	civis_redact_free(r);
	civis_redact_free(none);
}

static void
test_fifty_secrets_memory(void **state)
{
	civis_redact *r = set_of(NULL, 0);
	char sec[50][41];
	char *text, *got;
	size_t tl = 0, cap = 50 * 60 + 1;

	(void)state;
	text = malloc(cap);
	assert_non_null(text);
	for (int i = 0; i < 50; i++) {
		for (int j = 0; j < 40; j++)
			sec[i][j] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[rnd_below(62)];
		sec[i][40] = '\0';
		assert_int_equal(civis_redact_add(r, sec[i], 40), CIVIS_OK);
	}
	assert_true(civis_redact_count(r) >= 50 * 5);
	assert_true(civis_redact_memory(r) < 512 * 1024);
	for (int i = 0; i < 50; i++)
		tl += (size_t)snprintf(text + tl, cap - tl, "%d %s\n", i % 10, sec[i]);
	got = run_random(r, text, tl);
	for (int i = 0; i < 50; i++)
		assert_null(strstr(got, sec[i]));
	free(got);
	free(text);
	civis_redact_free(r);
}

/* Every allocation of a whole scenario fails in turn: each call reports
 * CIVIS_ENOMEM or works, nothing leaks or crashes (ASan, valgrind), and a
 * run where every call succeeded gives the right output. */
static void
test_alloc_failures(void **state)
{
	static const char secret[] = "first-line-secret\nsecond-line-secret";
	static const char text[] = "a first-line-secret b second-line-secret c hunter2hunter2 d";
	static const char want[] = "a [REDACTED] b [REDACTED] c [REDACTED] d";
	char *envp[] = { "DB_PASSWORD=hunter2hunter2", "PATH=/bin", NULL };
	int completed = 0;

	(void)state;
	for (int nth = 0; nth < 10000 && !completed; nth++) {
		civis_redact *r = NULL;
		civis_redact_stream *s = NULL;
		struct sink k;
		char buf[128];
		int rc, all_ok = 1;

		memset(&k, 0, sizeof(k));
		civis__redact_fail_alloc(nth);
		rc = civis_redact_new(&r);
		if (rc) {
			assert_int_equal(rc, CIVIS_ENOMEM);
			assert_null(r);
			goto next;
		}
		rc = civis_redact_add(r, secret, sizeof(secret) - 1);
		assert_true(rc == CIVIS_OK || rc == CIVIS_ENOMEM);
		all_ok &= rc == CIVIS_OK;
		rc = civis_redact_add_env(r, envp, NULL, 0, 1);
		assert_true(rc == CIVIS_OK || rc == CIVIS_ENOMEM);
		all_ok &= rc == CIVIS_OK;
		rc = civis_redact_stream_new(&s, r);
		if (rc) {
			assert_int_equal(rc, CIVIS_ENOMEM);
			assert_null(s);
			goto next;
		}
		for (size_t off = 0; off < sizeof(text) - 1 && rc == CIVIS_OK; off += 7) {
			size_t l = sizeof(text) - 1 - off < 7 ? sizeof(text) - 1 - off : 7;
			rc = civis_redact_stream_feed(s, text + off, l, sink_out, &k);
		}
		if (rc == CIVIS_OK)
			rc = civis_redact_stream_flush(s, sink_out, &k);
		assert_true(rc == CIVIS_OK || rc == CIVIS_ENOMEM);
		all_ok &= rc == CIVIS_OK;
		rc = civis_redact_string(r, text, buf, sizeof(buf));
		assert_true(rc == CIVIS_OK || rc == CIVIS_ENOMEM);
		all_ok &= rc == CIVIS_OK;
		if (all_ok) {
			assert_string_equal(k.buf, want);
			assert_string_equal(buf, want);
		}
	next:
		/* no failure was pending any more: the scenario ran to its end */
		completed = civis__redact_fail_alloc(-1) >= 0;
		if (completed)
			assert_true(all_ok && s != NULL);
		civis_redact_stream_free(s);
		civis_redact_free(r);
		sink_reset(&k);
	}
	assert_true(completed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_secrets_zero_copy),
		cmocka_unit_test(test_basic_and_min_len),
		cmocka_unit_test(test_split_every_offset),
		cmocka_unit_test(test_one_byte_at_a_time),
		cmocka_unit_test(test_start_and_end_of_stream),
		cmocka_unit_test(test_overlap_adjacent_prefix),
		cmocka_unit_test(test_kmp_traps),
		cmocka_unit_test(test_multiline),
		cmocka_unit_test(test_json_and_url_forms),
		cmocka_unit_test(test_base64_forms),
		cmocka_unit_test(test_flush_masks_held),
		cmocka_unit_test(test_flush_inside_masked_run),
		cmocka_unit_test(test_flush_split_every_offset),
		cmocka_unit_test(test_end_of_stream_mid_secret),
		cmocka_unit_test(test_flush_random),
		cmocka_unit_test(test_add_secret_runtime),
		cmocka_unit_test(test_add_secret_while_held),
		cmocka_unit_test(test_mask_then_cut),
		cmocka_unit_test(test_plain_text_unchanged),
		cmocka_unit_test(test_against_reference),
		cmocka_unit_test(test_long_secret_pieces),
		cmocka_unit_test(test_total_cap),
		cmocka_unit_test(test_name_patterns),
		cmocka_unit_test(test_add_env),
		cmocka_unit_test(test_redact_string),
		cmocka_unit_test(test_out_error_propagates),
		cmocka_unit_test(test_fifty_secrets_memory),
		cmocka_unit_test(test_alloc_failures),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
