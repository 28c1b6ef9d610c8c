/* test_linebuf.c: line splitting, CRLF, caps, partial lines, UTF-8 cuts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/linebuf.h"

#define MAXP 8192

typedef struct piece {
	size_t off, len;
	unsigned flags;
	const char *ptr;     /* where the callback saw it */
} piece;

typedef struct sink {
	char *data;          /* all pieces, back to back */
	size_t used, size;
	piece p[MAXP];
	size_t n;
	size_t stop_at;      /* return 7 when piece number stop_at arrives (1-based) */
} sink;

static int
collect(void *ud, const char *line, size_t len, unsigned flags)
{
	sink *s = ud;

	assert_true(s->n < MAXP);
	assert_true(s->used + len <= s->size);
	assert_null(memchr(line, '\n', len));
	memcpy(s->data + s->used, line, len);
	s->p[s->n].off = s->used;
	s->p[s->n].len = len;
	s->p[s->n].flags = flags;
	s->p[s->n].ptr = line;
	s->used += len;
	s->n++;
	if (s->stop_at != 0 && s->n == s->stop_at)
		return 7;
	return 0;
}

static sink *
sink_new(void)
{
	sink *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	s->size = 1 << 20;
	s->data = malloc(s->size);
	assert_non_null(s->data);
	return s;
}

static void
sink_free(sink *s)
{
	free(s->data);
	free(s);
}

static void
expect_piece(const sink *s, size_t i, const char *text, size_t len, unsigned flags)
{
	assert_true(i < s->n);
	assert_int_equal(s->p[i].len, len);
	assert_memory_equal(s->data + s->p[i].off, text, len);
	assert_int_equal(s->p[i].flags, flags);
}

#define EXPECT(s, i, lit, fl) expect_piece((s), (i), (lit), sizeof(lit) - 1, (fl))

static void
feed(civis_linebuf *lb, sink *s, const char *lit, size_t len)
{
	assert_int_equal(civis_linebuf_feed(lb, lit, len, collect, s), CIVIS_OK);
}

#define FEED(lb, s, lit) feed((lb), (s), (lit), sizeof(lit) - 1)

/* Feed one byte at a time. */
static void
feed_bytes(civis_linebuf *lb, sink *s, const char *d, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		feed(lb, s, d + i, 1);
}

static int
valid_utf8(const unsigned char *u, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = u[i];
		size_t need, k;
		unsigned char lo = 0x80, hi = 0xBF;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			need = 1;
		else if (c >= 0xE0 && c <= 0xEF)
			need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
		else if (c >= 0xF0 && c <= 0xF4)
			need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
		else
			return 0;
		for (k = 1; k <= need; k++) {
			if (i + k >= n || u[i + k] < lo || u[i + k] > hi)
				return 0;
			lo = 0x80;
			hi = 0xBF;
		}
		i += need + 1;
	}
	return 1;
}

/* ------------------------------------------------------------------ tests */

static void
test_new_args(void **state)
{
	civis_linebuf *lb = (civis_linebuf *)1;

	(void)state;
	assert_int_equal(civis_linebuf_new(NULL, 0), CIVIS_EINVAL);
	assert_int_equal(civis_linebuf_new(&lb, 3), CIVIS_EINVAL);
	assert_null(lb);
	assert_int_equal(civis_linebuf_new(&lb, (size_t)CIVIS_LINE_MAX_CAP + 1), CIVIS_EINVAL);
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	assert_int_equal(civis_linebuf_cap(lb), CIVIS_LINE_DEFAULT_CAP);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	assert_int_equal(civis_linebuf_feed(lb, NULL, 1, collect, NULL), CIVIS_EINVAL);
	assert_int_equal(civis_linebuf_feed(lb, "x", 1, NULL, NULL), CIVIS_EINVAL);
	assert_int_equal(civis_linebuf_feed(lb, NULL, 0, collect, NULL), CIVIS_OK);
	civis_linebuf_free(lb);
	civis_linebuf_free(NULL);
}

static void
test_simple_lines_zero_copy(void **state)
{
	static const char data[] = "a\nbb\nccc\n";
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	feed(lb, s, data, sizeof(data) - 1);
	assert_int_equal(s->n, 3);
	EXPECT(s, 0, "a", 0);
	EXPECT(s, 1, "bb", 0);
	EXPECT(s, 2, "ccc", 0);
	/* whole lines come straight from the caller's data */
	assert_ptr_equal(s->p[0].ptr, data);
	assert_ptr_equal(s->p[1].ptr, data + 2);
	assert_ptr_equal(s->p[2].ptr, data + 5);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	assert_int_equal(s->n, 3);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_empty_and_consecutive_newlines(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	FEED(lb, s, "\n\n\nx\n\r\n");
	assert_int_equal(s->n, 5);
	EXPECT(s, 0, "", 0);
	EXPECT(s, 1, "", 0);
	EXPECT(s, 2, "", 0);
	EXPECT(s, 3, "x", 0);
	EXPECT(s, 4, "", 0);
	FEED(lb, s, "\n");
	EXPECT(s, 5, "", 0);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_crlf(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	FEED(lb, s, "a\r\nb\r\n");
	assert_int_equal(s->n, 2);
	EXPECT(s, 0, "a", 0);
	EXPECT(s, 1, "b", 0);

	/* CR and LF in different reads */
	FEED(lb, s, "cd\r");
	assert_int_equal(s->n, 2);
	assert_int_equal(civis_linebuf_pending(lb), 3);
	FEED(lb, s, "\ne\n");
	assert_int_equal(s->n, 4);
	EXPECT(s, 2, "cd", 0);
	EXPECT(s, 3, "e", 0);

	/* a line that is only CR LF, split */
	FEED(lb, s, "\r");
	FEED(lb, s, "\n");
	EXPECT(s, 4, "", 0);

	/* CR alone mid-line is text */
	FEED(lb, s, "a\rb\n");
	EXPECT(s, 5, "a\rb", 0);
	FEED(lb, s, "50%\r");
	FEED(lb, s, "100%\n");
	EXPECT(s, 6, "50%\r100%", 0);

	/* CR CR LF: one CR stays */
	FEED(lb, s, "x\r\r\n");
	EXPECT(s, 7, "x\r", 0);
	FEED(lb, s, "\r");
	FEED(lb, s, "\r");
	FEED(lb, s, "\n");
	EXPECT(s, 8, "\r", 0);
	assert_int_equal(s->n, 9);

	/* CR at the end of the stream is text */
	FEED(lb, s, "end\r");
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	EXPECT(s, 9, "end\r", 0);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_cap_exact_and_plus_one(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();
	int bytewise;

	(void)state;
	for (bytewise = 0; bytewise < 2; bytewise++) {
		s->n = s->used = 0;
		assert_int_equal(civis_linebuf_new(&lb, 8), CIVIS_OK);
		if (bytewise) {
			feed_bytes(lb, s, "12345678\n", 9);
			feed_bytes(lb, s, "12345678\r\n", 10);
			feed_bytes(lb, s, "123456789\n", 10);
			feed_bytes(lb, s, "12345678\rx\n", 11);
		} else {
			FEED(lb, s, "12345678\n");
			FEED(lb, s, "12345678\r\n");
			FEED(lb, s, "123456789\n");
			FEED(lb, s, "12345678\rx\n");
		}
		assert_int_equal(s->n, 6);
		EXPECT(s, 0, "12345678", 0);
		EXPECT(s, 1, "12345678", 0);
		EXPECT(s, 2, "12345678", CIVIS_LINE_CONTINUES);
		EXPECT(s, 3, "9", CIVIS_LINE_CONTINUATION);
		EXPECT(s, 4, "12345678", CIVIS_LINE_CONTINUES);
		EXPECT(s, 5, "\rx", CIVIS_LINE_CONTINUATION);
		civis_linebuf_free(lb);
	}
	sink_free(s);
}

static void
test_long_line_pieces(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();
	size_t split;
	static const char line[] = "aaaaaaaabbbbbbbbccccccccdd\n";

	(void)state;
	/* the same result for every split of the data into two feeds */
	for (split = 0; split <= sizeof(line) - 1; split++) {
		s->n = s->used = 0;
		assert_int_equal(civis_linebuf_new(&lb, 8), CIVIS_OK);
		feed(lb, s, line, split);
		feed(lb, s, line + split, sizeof(line) - 1 - split);
		assert_int_equal(s->n, 4);
		EXPECT(s, 0, "aaaaaaaa", CIVIS_LINE_CONTINUES);
		EXPECT(s, 1, "bbbbbbbb", CIVIS_LINE_CONTINUES | CIVIS_LINE_CONTINUATION);
		EXPECT(s, 2, "cccccccc", CIVIS_LINE_CONTINUES | CIVIS_LINE_CONTINUATION);
		EXPECT(s, 3, "dd", CIVIS_LINE_CONTINUATION);
		assert_true(civis_linebuf_pending(lb) == 0);
		civis_linebuf_free(lb);
	}
	/* a long line in one feed is cut straight from the data */
	s->n = s->used = 0;
	assert_int_equal(civis_linebuf_new(&lb, 8), CIVIS_OK);
	feed(lb, s, line, sizeof(line) - 1);
	assert_ptr_equal(s->p[1].ptr, line + 8);
	/* an unterminated long tail too: only the rest is held */
	FEED(lb, s, "xxxxxxxxyyyyyyyyzz");
	assert_int_equal(s->n, 6);
	EXPECT(s, 4, "xxxxxxxx", CIVIS_LINE_CONTINUES);
	EXPECT(s, 5, "yyyyyyyy", CIVIS_LINE_CONTINUES | CIVIS_LINE_CONTINUATION);
	assert_int_equal(civis_linebuf_pending(lb), 2);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_finish_and_flush(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	/* no final newline: held, then handed over at the end */
	FEED(lb, s, "abc");
	assert_int_equal(s->n, 0);
	assert_int_equal(civis_linebuf_pending(lb), 3);
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	EXPECT(s, 0, "abc", 0);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	/* finish with nothing held emits nothing */
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	assert_int_equal(s->n, 1);

	/* partial flush, then the rest of the line */
	FEED(lb, s, "abc");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	EXPECT(s, 1, "abc", CIVIS_LINE_CONTINUES);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);  /* nothing new */
	assert_int_equal(s->n, 2);
	FEED(lb, s, "def");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	EXPECT(s, 2, "def", CIVIS_LINE_CONTINUES | CIVIS_LINE_CONTINUATION);
	FEED(lb, s, "gh\nnext\n");
	EXPECT(s, 3, "gh", CIVIS_LINE_CONTINUATION);
	EXPECT(s, 4, "next", 0);

	/* flush right before the newline: a zero-length end marker */
	FEED(lb, s, "xy");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	EXPECT(s, 5, "xy", CIVIS_LINE_CONTINUES);
	FEED(lb, s, "\n");
	EXPECT(s, 6, "", CIVIS_LINE_CONTINUATION);

	/* flush, then the stream ends */
	FEED(lb, s, "zz");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	EXPECT(s, 7, "zz", CIVIS_LINE_CONTINUES);
	EXPECT(s, 8, "", CIVIS_LINE_CONTINUATION);

	/* flush with nothing held does nothing */
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	assert_int_equal(s->n, 9);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_flush_holds_cr(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	FEED(lb, s, "ab\r");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	EXPECT(s, 0, "ab", CIVIS_LINE_CONTINUES);
	assert_int_equal(civis_linebuf_pending(lb), 1);
	FEED(lb, s, "\n");
	EXPECT(s, 1, "", CIVIS_LINE_CONTINUATION);

	FEED(lb, s, "ab\r");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	FEED(lb, s, "c\n");
	EXPECT(s, 2, "ab", CIVIS_LINE_CONTINUES);
	EXPECT(s, 3, "\rc", CIVIS_LINE_CONTINUATION);

	/* only a CR held: flush has nothing to give */
	FEED(lb, s, "\r");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	assert_int_equal(s->n, 4);
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	EXPECT(s, 4, "\r", 0);
	civis_linebuf_free(lb);
	sink_free(s);
}

/* A character split across two feeds is whole in the line. */
static void
test_utf8_split_across_feeds(void **state)
{
	static const char *chars[] = { "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80" };
	civis_linebuf *lb;
	sink *s = sink_new();
	size_t c, k;

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 0), CIVIS_OK);
	for (c = 0; c < 3; c++) {
		size_t n = strlen(chars[c]);

		for (k = 1; k < n; k++) {
			char line[8];

			s->n = s->used = 0;
			line[0] = 'x';
			memcpy(line + 1, chars[c], n);
			line[n + 1] = '\n';
			feed(lb, s, line, 1 + k);
			feed(lb, s, line + 1 + k, n + 1 - k);
			assert_int_equal(s->n, 1);
			expect_piece(s, 0, line, n + 1, 0);

			/* with a flush in the middle, the partial sequence is held */
			s->n = s->used = 0;
			feed(lb, s, line, 1 + k);
			assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
			assert_int_equal(s->n, 1);
			expect_piece(s, 0, "x", 1, CIVIS_LINE_CONTINUES);
			assert_int_equal(civis_linebuf_pending(lb), k);
			/* and a second flush still holds it */
			assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
			assert_int_equal(s->n, 1);
			feed(lb, s, line + 1 + k, n + 1 - k);
			assert_int_equal(s->n, 2);
			expect_piece(s, 1, chars[c], n, CIVIS_LINE_CONTINUATION);
		}
	}
	/* an incomplete sequence at the end of the stream goes as it is */
	s->n = s->used = 0;
	FEED(lb, s, "\xE2\x82");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
	assert_int_equal(s->n, 0);
	assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
	EXPECT(s, 0, "\xE2\x82", 0);
	civis_linebuf_free(lb);
	sink_free(s);
}

/* A cap cut moves back so that no character is split. */
static void
test_utf8_cap_cut(void **state)
{
	static const char *chars[] = { "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80" };
	civis_linebuf *lb;
	sink *s = sink_new();
	size_t c, pre, mode;

	(void)state;
	for (mode = 0; mode < 3; mode++) {
		for (c = 0; c < 3; c++) {
			size_t n = strlen(chars[c]);

			for (pre = 0; pre <= 10; pre++) {
				char line[32];
				size_t len = 0, i, total = 0;

				memset(line, 'a', pre);
				len = pre;
				memcpy(line + len, chars[c], n);
				len += n;
				memcpy(line + len, "bcdefgh", 7);
				len += 7;
				line[len++] = '\n';

				s->n = s->used = 0;
				assert_int_equal(civis_linebuf_new(&lb, 8), CIVIS_OK);
				if (mode == 0)
					feed(lb, s, line, len);
				else if (mode == 1)
					feed_bytes(lb, s, line, len);
				else {
					feed(lb, s, line, pre + 1);
					feed(lb, s, line + pre + 1, len - pre - 1);
				}
				assert_true(s->n >= 2);
				for (i = 0; i < s->n; i++) {
					assert_true(s->p[i].len <= 8);
					if (i + 1 < s->n)  /* a cut moves back at most 3 */
						assert_true(s->p[i].len >= 5);
					assert_true(valid_utf8((const unsigned char *)s->data + s->p[i].off,
					                       s->p[i].len));
					total += s->p[i].len;
				}
				assert_int_equal(total, len - 1);
				assert_memory_equal(s->data, line, len - 1);
				civis_linebuf_free(lb);
			}
		}
	}
	/* specific: "abcdef" + EURO (bytes 6..8) with cap 8 */
	s->n = s->used = 0;
	assert_int_equal(civis_linebuf_new(&lb, 8), CIVIS_OK);
	FEED(lb, s, "abcdef\xE2\x82\xAC\n");
	EXPECT(s, 0, "abcdef", CIVIS_LINE_CONTINUES);
	EXPECT(s, 1, "\xE2\x82\xAC", CIVIS_LINE_CONTINUATION);
	/* 4-byte char at bytes 7..10 */
	FEED(lb, s, "abcdefg\xF0\x9F\x98\x80\n");
	EXPECT(s, 2, "abcdefg", CIVIS_LINE_CONTINUES);
	EXPECT(s, 3, "\xF0\x9F\x98\x80", CIVIS_LINE_CONTINUATION);
	/* invalid bytes are cut at the cap: stray continuation bytes */
	FEED(lb, s, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\n");
	EXPECT(s, 4, "\x80\x80\x80\x80\x80\x80\x80\x80", CIVIS_LINE_CONTINUES);
	EXPECT(s, 5, "\x80\x80", CIVIS_LINE_CONTINUATION);
	/* an ASCII byte before continuation bytes: no lead to move back to */
	FEED(lb, s, "abcdefgh\x80\n");
	EXPECT(s, 6, "abcdefgh", CIVIS_LINE_CONTINUES);
	EXPECT(s, 7, "\x80", CIVIS_LINE_CONTINUATION);
	civis_linebuf_free(lb);
	sink_free(s);
}

static void
test_callback_stop(void **state)
{
	civis_linebuf *lb;
	sink *s = sink_new();

	(void)state;
	assert_int_equal(civis_linebuf_new(&lb, 4), CIVIS_OK);
	s->stop_at = 2;
	assert_int_equal(civis_linebuf_feed(lb, "a\nb\nc\n", 6, collect, s), 7);
	assert_int_equal(s->n, 2);
	s->stop_at = 0;
	/* still usable */
	FEED(lb, s, "d\n");
	EXPECT(s, 2, "d", 0);
	/* a stop while cutting a long line */
	s->stop_at = 4;
	assert_int_equal(civis_linebuf_feed(lb, "123456789", 9, collect, s), 7);
	assert_int_equal(s->n, 4);
	s->stop_at = 5;
	FEED(lb, s, "xy");
	assert_int_equal(civis_linebuf_flush(lb, collect, s), 7);
	s->stop_at = 6;
	FEED(lb, s, "z\r");
	assert_int_equal(civis_linebuf_finish(lb, collect, s), 7);
	EXPECT(s, 5, "z\r", CIVIS_LINE_CONTINUATION);
	assert_int_equal(civis_linebuf_pending(lb), 0);
	civis_linebuf_free(lb);
	sink_free(s);
}

/* ------------------------------------------------- randomized property */

static uint64_t
rnd(uint64_t *st)
{
	uint64_t x = *st;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*st = x;
	return x;
}

static void
test_random_chunking(void **state)
{
	static const char *atoms[] = { "a", "bcd", "\r", "\n", "\r\n", "\xC3\xA9",
	                               "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\x80", "\xFF" };
	uint64_t st = 0x9E3779B97F4A7C15ULL;
	sink *s = sink_new();
	char *in = malloc(4096), *exp = malloc(8192), *got = malloc(8192);
	int round;

	(void)state;
	assert_non_null(in);
	assert_non_null(exp);
	assert_non_null(got);
	for (round = 0; round < 3000; round++) {
		civis_linebuf *lb;
		size_t cap = 4 + rnd(&st) % 13, len = 0, elen = 0, glen = 0, i, pos;
		int valid = (round % 2) == 0;

		while (len < 200 + rnd(&st) % 200) {
			const char *a = atoms[rnd(&st) % (valid ? 8 : 10)];
			size_t al = strlen(a);
			memcpy(in + len, a, al);
			len += al;
		}
		for (i = 0; i < len; i++) {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				continue;
			exp[elen++] = in[i];
		}
		if (len > 0 && in[len - 1] != '\n')
			exp[elen++] = '\n';

		s->n = s->used = 0;
		assert_int_equal(civis_linebuf_new(&lb, cap), CIVIS_OK);
		for (pos = 0; pos < len;) {
			size_t n = 1 + rnd(&st) % 40;
			if (n > len - pos)
				n = len - pos;
			feed(lb, s, in + pos, n);
			pos += n;
			assert_true(civis_linebuf_pending(lb) <= cap + 1);
			if (rnd(&st) % 4 == 0)
				assert_int_equal(civis_linebuf_flush(lb, collect, s), CIVIS_OK);
		}
		assert_int_equal(civis_linebuf_finish(lb, collect, s), CIVIS_OK);
		for (i = 0; i < s->n; i++) {
			const piece *p = &s->p[i];
			assert_true(p->len <= cap);
			if (valid)
				assert_true(valid_utf8((const unsigned char *)s->data + p->off, p->len));
			if (p->len == 0)
				assert_true(p->flags == 0 || p->flags == CIVIS_LINE_CONTINUATION);
			if (i > 0)
				assert_int_equal(!!(p->flags & CIVIS_LINE_CONTINUATION),
				                 !!(s->p[i - 1].flags & CIVIS_LINE_CONTINUES));
			memcpy(got + glen, s->data + p->off, p->len);
			glen += p->len;
			if (!(p->flags & CIVIS_LINE_CONTINUES))
				got[glen++] = '\n';
		}
		assert_int_equal(glen, elen);
		assert_memory_equal(got, exp, elen);
		civis_linebuf_free(lb);
	}
	free(in);
	free(exp);
	free(got);
	sink_free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_args),
		cmocka_unit_test(test_simple_lines_zero_copy),
		cmocka_unit_test(test_empty_and_consecutive_newlines),
		cmocka_unit_test(test_crlf),
		cmocka_unit_test(test_cap_exact_and_plus_one),
		cmocka_unit_test(test_long_line_pieces),
		cmocka_unit_test(test_finish_and_flush),
		cmocka_unit_test(test_flush_holds_cr),
		cmocka_unit_test(test_utf8_split_across_feeds),
		cmocka_unit_test(test_utf8_cap_cut),
		cmocka_unit_test(test_callback_stop),
		cmocka_unit_test(test_random_chunking),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
