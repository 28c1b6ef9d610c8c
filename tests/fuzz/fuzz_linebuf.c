/* fuzz_linebuf.c: random chunkings and flushes through linebuf.
 *
 * Input: byte 0 picks the cap (4..67), byte 1 seeds the chunking; the rest
 * is the stream. Checked: no piece above the cap or holding '\n'; flags
 * chain (CONTINUATION exactly after CONTINUES); the pieces, each followed by
 * '\n' unless CONTINUES, give back the stream with CRLF turned into LF (plus
 * a final '\n' when the stream had none); for valid UTF-8 every piece is
 * valid UTF-8 (no character cut in two). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/linebuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct out {
	char *buf;
	size_t len, size, cap;
	unsigned last_flags;
	int any;
	int valid;
} out;

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

static int
valid_utf8(const unsigned char *u, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = u[i], lo = 0x80, hi = 0xBF;
		size_t need, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			lo = c == 0xE0 ? 0xA0 : 0x80;
			hi = c == 0xED ? 0x9F : 0xBF;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			lo = c == 0xF0 ? 0x90 : 0x80;
			hi = c == 0xF4 ? 0x8F : 0xBF;
		} else {
			return 0;
		}
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

static int
on_piece(void *ud, const char *line, size_t len, unsigned flags)
{
	out *o = ud;

	CHECK(len <= o->cap);
	CHECK(memchr(line, '\n', len) == NULL);
	CHECK((flags & ~3u) == 0);
	CHECK(!!(flags & CIVIS_LINE_CONTINUATION) ==
	      (o->any && (o->last_flags & CIVIS_LINE_CONTINUES)));
	if (len == 0)
		CHECK(flags == 0 || flags == CIVIS_LINE_CONTINUATION);
	if (o->valid)
		CHECK(valid_utf8((const unsigned char *)line, len));
	CHECK(o->len + len + 1 <= o->size);
	memcpy(o->buf + o->len, line, len);
	o->len += len;
	if (!(flags & CIVIS_LINE_CONTINUES))
		o->buf[o->len++] = '\n';
	o->last_flags = flags;
	o->any = 1;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	civis_linebuf *lb = NULL;
	out o;
	const char *in;
	char *want;
	size_t len, pos, wl = 0, i;
	uint32_t st;

	if (size < 2)
		return 0;
	memset(&o, 0, sizeof(o));
	o.cap = 4 + data[0] % 64;
	st = 0x9E3779B9u ^ data[1];
	in = (const char *)data + 2;
	len = size - 2;
	o.valid = valid_utf8((const unsigned char *)in, len);
	o.size = 2 * len + 2;
	o.buf = malloc(o.size);
	want = malloc(len + 1);
	CHECK(o.buf != NULL && want != NULL);
	CHECK(civis_linebuf_new(&lb, o.cap) == CIVIS_OK);

	for (pos = 0; pos < len;) {
		size_t n;

		st ^= st << 13;
		st ^= st >> 17;
		st ^= st << 5;
		n = 1 + st % 97;
		if (n > len - pos)
			n = len - pos;
		CHECK(civis_linebuf_feed(lb, in + pos, n, on_piece, &o) == CIVIS_OK);
		pos += n;
		CHECK(civis_linebuf_pending(lb) <= o.cap + 1);
		if ((st >> 8) % 4 == 0)
			CHECK(civis_linebuf_flush(lb, on_piece, &o) == CIVIS_OK);
	}
	CHECK(civis_linebuf_finish(lb, on_piece, &o) == CIVIS_OK);
	CHECK(civis_linebuf_pending(lb) == 0);

	for (i = 0; i < len; i++) {
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
			continue;
		want[wl++] = in[i];
	}
	if (len > 0 && in[len - 1] != '\n')
		want[wl++] = '\n';
	CHECK(o.len == wl);
	CHECK(memcmp(o.buf, want, wl) == 0);

	civis_linebuf_free(lb);
	free(o.buf);
	free(want);
	return 0;
}
