/* fuzz_redact.c: libFuzzer target for the streaming redactor.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilib/include \
 *       tests/fuzz/fuzz_redact.c lib/src/redact_build.c lib/src/redact_match.c \
 *       lib/src/status.c -o build/fuzz_redact
 *   build/fuzz_redact -max_total_time=30 tests/fuzz/corpus/redact
 *
 * Input: byte 0 picks how many secrets (1..4); then per secret a length byte
 * (6..37 after mapping) and that many bytes, mapped onto an alphabet without
 * the characters of "[REDACTED]" (so a secret can never be formed out of a
 * token and the text around it); the rest is the text, where bytes 0x01..0x04
 * plant secret 1..4 and 0x05 marks a flush. The cut points come from a PRNG
 * seeded with the input.
 *
 * Checked: no secret occurs in the output, with or without flushes; without
 * flushes the output is the same for every chunking; with no secret
 * registered the output is the input; a flush leaves nothing held;
 * civis_redact_string agrees with a stream fed at once (up to what the
 * stream still held at the end: the final flush masks a possible start of a
 * secret there, a string leaves it); civis_redact_buf cut to any size gives
 * a prefix of the whole result that never ends inside a token. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/redact.h"

#define MAXSEC 4
#define MAXTEXT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct buf {
	char *p;
	size_t len, cap;
};

static int
buf_out(void *ud, const char *d, size_t n)
{
	struct buf *b = ud;

	if (n == 0)
		abort();
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			abort();
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = '\0';
	return CIVIS_OK;
}

static uint64_t
mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int
contains(const char *hay, size_t hn, const char *needle, size_t nn)
{
	return nn <= hn && memmem(hay, hn, needle, nn) != NULL;
}

/* Feed text in random pieces (with flushes where marked, if flushes). */
static size_t
run(const civis_redact *r, const char *text, size_t n, const uint8_t *flush_at,
    uint64_t seed, int flushes, struct buf *out)
{
	size_t before_end;

	civis_redact_stream *s = NULL;
	size_t off = 0;

	out->len = 0;
	if (civis_redact_stream_new(&s, r))
		abort();
	while (off < n) {
		size_t piece = 1 + (size_t)(mix(&seed) % 40);
		if (mix(&seed) % 8 == 0)
			piece = n - off;
		if (piece > n - off)
			piece = n - off;
		/* stop a piece at a flush mark */
		for (size_t i = off; i < off + piece; i++) {
			if (flush_at[i]) {
				piece = i - off + 1;
				break;
			}
		}
		if (civis_redact_stream_feed(s, text + off, piece, buf_out, out))
			abort();
		if (civis_redact_stream_held(s) >= civis_redact_max_len(r) &&
		    civis_redact_stream_held(s) != 0)
			abort();
		off += piece;
		if (flushes && flush_at[off - 1]) {
			if (civis_redact_stream_flush(s, buf_out, out))
				abort();
			if (civis_redact_stream_held(s) != 0)
				abort();
		}
	}
	before_end = civis_redact_stream_held(s) ? out->len : SIZE_MAX;
	if (civis_redact_stream_flush(s, buf_out, out))
		abort();
	if (civis_redact_stream_held(s) != 0)
		abort();
	civis_redact_stream_free(s);
	return before_end;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* no character of "[REDACTED]" */
	static const char abc[] = "abfghijklmnopqsuvwxyz0123456789/+=\n\r\"\\ %-_.~\t";
	char sec[MAXSEC][40];
	size_t slen[MAXSEC], nsec, pos = 1, n = 0;
	char *text = NULL;
	uint8_t *flush_at = NULL;
	civis_redact *r = NULL, *none = NULL;
	struct buf a = { 0 }, b = { 0 };
	uint64_t seed = 0x12345678;

	if (size < 2)
		return 0;
	nsec = 1 + data[0] % MAXSEC;
	for (size_t i = 0; i < nsec; i++) {
		size_t l = pos < size ? 6 + data[pos] % 32 : 6;
		pos++;
		for (size_t j = 0; j < l; j++) {
			uint8_t c = pos < size ? data[pos] : (uint8_t)(i + j);
			sec[i][j] = abc[c % (sizeof(abc) - 1)];
			pos++;
		}
		slen[i] = l;
	}
	for (size_t i = 0; i < size; i++)
		seed = seed * 31 + data[i];
	text = malloc(MAXTEXT + 64);
	flush_at = calloc(MAXTEXT + 64, 1);
	if (!text || !flush_at)
		abort();
	for (; pos < size && n < MAXTEXT; pos++) {
		uint8_t c = data[pos];
		if (c >= 1 && c <= MAXSEC) {
			size_t k = (c - 1u) % nsec;
			memcpy(text + n, sec[k], slen[k]);
			n += slen[k];
		} else if (c == 5 && n > 0) {
			flush_at[n - 1] = 1;
		} else {
			text[n++] = (char)c;
		}
	}
	if (civis_redact_new(&r) || civis_redact_new(&none))
		abort();
	for (size_t i = 0; i < nsec; i++)
		if (civis_redact_add(r, sec[i], slen[i]))
			abort();

	/* without flushes: the same output for any chunking, and no secret */
	run(r, text, n, flush_at, 0, 0, &a);
	run(r, text, n, flush_at, seed, 0, &b);
	if (a.len != b.len || (a.len && memcmp(a.p, b.p, a.len) != 0))
		abort();
	for (size_t i = 0; i < nsec; i++)
		if (contains(a.p ? a.p : "", a.len, sec[i], slen[i]))
			abort();
	/* with flushes: still no secret (a cut one shows its start only) */
	run(r, text, n, flush_at, seed ^ 0xabcdef, 1, &b);
	for (size_t i = 0; i < nsec; i++)
		if (contains(b.p ? b.p : "", b.len, sec[i], slen[i]))
			abort();
	/* nothing registered: unchanged */
	run(none, text, n, flush_at, seed, 1, &b);
	if (b.len != n || (n && memcmp(b.p, text, n) != 0))
		abort();
	/* the string helper matches a stream fed at once (up to the first NUL) */
	{
		size_t sl = strnlen(text, n), cap = sl * 10 + 16;
		char *in = malloc(sl + 1), *outs = malloc(cap);
		if (!in || !outs)
			abort();
		memcpy(in, text, sl);
		in[sl] = '\0';
		size_t held_at = run(r, in, sl, flush_at, 0, 0, &a), whole, cut;
		if (civis_redact_string(r, in, outs, cap) != CIVIS_OK)
			abort();
		whole = strlen(outs);
		if (held_at == SIZE_MAX) {
			if (whole != a.len || (a.len && memcmp(outs, a.p, a.len) != 0))
				abort();
		} else if (whole < held_at || (held_at && memcmp(outs, a.p, held_at) != 0)) {
			abort();
		}
		/* cut to every size up to the whole: a prefix, no token split */
		for (size_t c = 0; c <= whole && c < 64; c++) {
			char small[64];
			int rc = civis_redact_buf(r, in, sl, small, c, &cut);
			if ((rc != CIVIS_OK && rc != CIVIS_ETOOBIG) || cut > c ||
			    (rc == CIVIS_OK) != (c >= whole) || memcmp(small, outs, cut) != 0)
				abort();
			/* (a "[" in the text itself could look like a cut token) */
			if (!memchr(in, '[', sl) && cut < whole &&
			    memcmp(outs + cut, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN) != 0) {
				/* the cut is not before a token: it must not be inside one */
				for (size_t k = 1; k < CIVIS_REDACT_TOKEN_LEN && k <= cut; k++)
					if (memcmp(outs + cut - k, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN) == 0)
						abort();
			}
		}
		free(in);
		free(outs);
	}
	free(a.p);
	free(b.p);
	free(text);
	free(flush_at);
	civis_redact_free(r);
	civis_redact_free(none);
	return 0;
}
