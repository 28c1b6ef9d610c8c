/* redact_match.c: streaming secret masking (see redact.h).
 *
 * Matching is Wu-Manber over the first CIVIS_REDACT_MIN_LEN (6) bytes of
 * every pattern: a window of 6 bytes slides over the text; a shift table
 * indexed by a hash of the window's last 3 bytes says how far the window may
 * jump without passing the start of any pattern prefix (up to 4 bytes). Where
 * the shift is 0, the window's 6 bytes are looked up in a hash table of the
 * distinct prefixes, and the patterns behind a hit (longest first) are
 * compared with memcmp. Every start position that begins a pattern prefix is
 * examined, so all occurrences are found, overlapping ones included.
 *
 * The output is defined on the whole stream: a byte is masked when some
 * occurrence covers it, and each maximal run of masked bytes (runs that touch
 * are one run) becomes one "[REDACTED]". Occurrences are found in order of
 * their start; `mask_end` is the furthest end of those seen, so the text up
 * to the next start is decided and can be emitted at once. A start whose
 * remaining bytes are a proper prefix of some pattern stops the scan: from
 * there on the bytes are held (the "tail") until more input or a flush
 * decides them. The next feed rescans the tail glued to the first bytes of
 * the new input in a small scratch buffer, then scans the input in place. */
#include "redact_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"

/* What emission needs to map stream offsets to bytes. */
struct fctx {
	civis_redact_stream *s;
	const unsigned char *tail;  /* the tail before this feed */
	uint64_t tail_abs;
	size_t tail_len;
	const unsigned char *in;    /* this feed's input, at stream offset base */
	uint64_t base;
	size_t len;
	civis_redact_out_fn out;
	void *ud;
};

/* ------------------------------------------------------------ tables */

void
civis__redact_free_tables(civis_redact *r)
{
	free(r->sorted);
	free(r->shift);
	free(r->slots);
	free(r->group);
	free(r->pair);
	r->pair = NULL;
	r->sorted = NULL;
	r->shift = NULL;
	r->slots = NULL;
	r->group = NULL;
	r->nbuilt = 0;
	r->maxlen = 0;
}

static const civis_redact *sort_ctx;

static int
cmp_bytes(const civis_redact *r, uint32_t a, uint32_t b)
{
	const struct pat *pa = &r->pats[a], *pb = &r->pats[b];
	size_t n = pa->len < pb->len ? pa->len : pb->len;
	int c = memcmp(r->arena + pa->off, r->arena + pb->off, n);

	if (c)
		return c;
	return pa->len < pb->len ? -1 : pa->len > pb->len;
}

static int
cmp_lex(const void *a, const void *b)
{
	return cmp_bytes(sort_ctx, *(const uint32_t *)a, *(const uint32_t *)b);
}

static int
cmp_len_desc(const void *a, const void *b)
{
	uint32_t la = sort_ctx->pats[*(const uint32_t *)a].len;
	uint32_t lb = sort_ctx->pats[*(const uint32_t *)b].len;

	return la > lb ? -1 : la < lb;
}

/* Build the match tables for every pattern registered. On failure the old
 * tables stay as they were. */
int
civis__redact_build(civis_redact *r)
{
	uint32_t *sorted = NULL, *group = NULL;
	uint8_t *shift = NULL, *pair = NULL;
	struct slot *slots = NULL;
	size_t n = r->npat, nslots = 16, maxlen = 0, tsize;
	unsigned tbits = 10;
	uint8_t first[32];
	int rc;

	if (!r->dirty)
		return CIVIS_OK;
	while (((size_t)1 << tbits) < n * (MINLEN - BLOCK + 1) * 8 && tbits < 18)
		tbits++;
	tsize = (size_t)1 << tbits;
	while (nslots < 2 * n)
		nslots *= 2;
	sorted = civis__redact_malloc((n ? n : 1) * sizeof(*sorted));
	group = civis__redact_malloc((n ? n : 1) * sizeof(*group));
	shift = civis__redact_malloc(tsize);
	slots = civis__redact_malloc(nslots * sizeof(*slots));
	pair = civis__redact_calloc(8192, 1);
	if (!sorted || !group || !shift || !slots || !pair) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		sorted[i] = (uint32_t)i;
	/* qsort has no context argument; the set is built by one thread */
	sort_ctx = r;
	qsort(sorted, n, sizeof(*sorted), cmp_lex);
	memset(first, 0, sizeof(first));
	memset(shift, MAXSHIFT, tsize);
	for (size_t i = 0; i < nslots; i++)
		slots[i].key = EMPTYKEY;
	for (size_t i = 0; i < n;) {
		const unsigned char *p = r->arena + r->pats[sorted[i]].off;
		uint64_t key = civis__redact_load6(p);
		size_t j = i, h;

		while (j < n && civis__redact_load6(r->arena + r->pats[sorted[j]].off) == key) {
			if (r->pats[sorted[j]].len > maxlen)
				maxlen = r->pats[sorted[j]].len;
			j++;
		}
		memcpy(group + i, sorted + i, (j - i) * sizeof(*group));
		qsort(group + i, j - i, sizeof(*group), cmp_len_desc);
		h = civis__redact_slot_hash(key, nslots - 1);
		while (slots[h].key != EMPTYKEY)
			h = (h + 1) & (nslots - 1);
		slots[h].key = key;
		slots[h].first = (uint32_t)i;
		slots[h].count = (uint32_t)(j - i);
		first[p[0] >> 3] |= (uint8_t)(1u << (p[0] & 7));
		pair[(p[0] << 5) | (p[1] >> 3)] |= (uint8_t)(1u << (p[1] & 7));
		for (size_t q = BLOCK - 1; q < MINLEN; q++) {
			uint32_t t = civis__redact_hash3(p + q + 1 - BLOCK, tbits);
			uint8_t d = (uint8_t)(MINLEN - 1 - q);
			if (shift[t] > d)
				shift[t] = d;
		}
		i = j;
	}
	sort_ctx = NULL;
	civis__redact_free_tables(r);
	r->sorted = sorted;
	r->group = group;
	r->shift = shift;
	r->slots = slots;
	r->pair = pair;
	r->slot_mask = nslots - 1;
	r->tbits = tbits;
	r->nbuilt = n;
	r->maxlen = maxlen;
	memcpy(r->first, first, sizeof(first));
	r->dirty = 0;
	sorted = NULL;
	group = NULL;
	shift = NULL;
	slots = NULL;
	pair = NULL;
	rc = CIVIS_OK;
out:
	free(sorted);
	free(group);
	free(shift);
	free(slots);
	free(pair);
	return rc;
}

/* ------------------------------------------------------------ matching */

/* Whether k (< MINLEN) bytes are a prefix of some pattern. */
static int
is_prefix(const civis_redact *r, const unsigned char *key, size_t k)
{
	size_t lo = 0, hi = r->nbuilt;

	if (!(r->first[key[0] >> 3] & (1u << (key[0] & 7))))
		return 0;
	if (k > 1 && !(r->pair[(key[0] << 5) | (key[1] >> 3)] & (1u << (key[1] & 7))))
		return 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct pat *p = &r->pats[r->sorted[mid]];
		if (memcmp(r->arena + p->off, key, k) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->nbuilt &&
	       memcmp(r->arena + r->pats[r->sorted[lo]].off, key, k) == 0;
}

static inline const struct slot *
find_prefix(const civis_redact *r, uint64_t key)
{
	size_t h = civis__redact_slot_hash(key, r->slot_mask);

	for (;;) {
		const struct slot *s = &r->slots[h];
		if (s->key == key)
			return s;
		if (s->key == EMPTYKEY)
			return NULL;
		h = (h + 1) & r->slot_mask;
	}
}

static int
emit_raw(struct fctx *c, uint64_t a, uint64_t b)
{
	int rc;

	if (a < c->base) {
		uint64_t to = b < c->base ? b : c->base;
		rc = c->out(c->ud, (const char *)c->tail + (a - c->tail_abs), (size_t)(to - a));
		if (rc)
			return rc;
		a = to;
	}
	if (a < b)
		return c->out(c->ud, (const char *)c->in + (a - c->base), (size_t)(b - a));
	return CIVIS_OK;
}

/* Pass out everything before stream offset x, masked by what is known. */
static int
emit_until(struct fctx *c, uint64_t x)
{
	civis_redact_stream *s = c->s;
	int rc;

	while (s->emit < x) {
		if (s->emit < s->mask_end) {
			if (!s->last_masked) {
				rc = c->out(c->ud, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN);
				if (rc)
					return rc;
				s->last_masked = 1;
			}
			s->emit = s->mask_end < x ? s->mask_end : x;
		} else {
			rc = emit_raw(c, s->emit, x);
			if (rc)
				return rc;
			s->last_masked = 0;
			s->emit = x;
		}
	}
	return CIVIS_OK;
}

/* Find the occurrences starting in buf[lo..hi) (buf[0] is at stream offset
 * abs0, buf ends at n), in order of start, and emit up to each. Stops at the
 * first start whose bytes up to n are a proper prefix of a pattern, setting
 * *partial to its stream offset, unless ignore_partial. */
static int
scan(const civis_redact *r, struct fctx *c, const unsigned char *buf, size_t n,
     size_t lo, size_t hi, uint64_t abs0, int ignore_partial, uint64_t *partial)
{
	const uint8_t *shift = r->shift;
	const unsigned tbits = r->tbits;
	size_t wend, i, iend, st;
	int rc;

	*partial = NONE;
	if (hi > n)
		hi = n;
	/* windows: starts with all MINLEN bytes present */
	wend = n >= MINLEN ? n - MINLEN + 1 : 0;
	if (wend > hi)
		wend = hi;
	iend = wend + MINLEN - 1;
	for (i = lo + MINLEN - 1; i < iend;) {
		const struct slot *sl;
		unsigned d = shift[civis__redact_hash3(buf + i - (BLOCK - 1), tbits)];

		if (d) {
			i += d;
			continue;
		}
		st = i - (MINLEN - 1);
		sl = find_prefix(r, civis__redact_load6(buf + st));
		for (uint32_t j = 0; sl && j < sl->count; j++) {
			const struct pat *p = &r->pats[r->group[sl->first + j]];
			const unsigned char *pb = r->arena + p->off;
			if (p->len <= n - st) {
				if (memcmp(buf + st + MINLEN, pb + MINLEN, p->len - MINLEN) == 0) {
					uint64_t ae = abs0 + st + p->len;
					rc = emit_until(c, abs0 + st);
					if (rc)
						return rc;
					if (ae > c->s->mask_end)
						c->s->mask_end = ae;
					break;
				}
			} else if (!ignore_partial &&
			           memcmp(buf + st + MINLEN, pb + MINLEN, n - st - MINLEN) == 0) {
				*partial = abs0 + st;
				return CIVIS_OK;
			}
		}
		i++;
	}
	if (ignore_partial)
		return CIVIS_OK;
	for (st = wend > lo ? wend : lo; st < hi; st++) {
		if (is_prefix(r, buf + st, n - st)) {
			*partial = abs0 + st;
			return CIVIS_OK;
		}
	}
	return CIVIS_OK;
}

/* ------------------------------------------------------------ streams */

static int
stream_reserve(civis_redact_stream *s)
{
	size_t need = s->r->maxlen ? s->r->maxlen - 1 : 0;
	unsigned char *t, *sc;

	if (s->tail_cap >= need && s->scratch_cap >= 2 * need)
		return CIVIS_OK;
	t = civis__redact_realloc(s->tail, need ? need : 1);
	if (!t)
		return CIVIS_ENOMEM;
	s->tail = t;
	s->tail_cap = need;
	sc = civis__redact_realloc(s->scratch, need ? 2 * need : 1);
	if (!sc)
		return CIVIS_ENOMEM;
	s->scratch = sc;
	s->scratch_cap = 2 * need;
	return CIVIS_OK;
}

int
civis_redact_stream_new(civis_redact_stream **out, const civis_redact *r)
{
	civis_redact_stream *s;

	if (!out)
		return CIVIS_EINVAL;
	*out = NULL;
	if (!r)
		return CIVIS_EINVAL;
	s = civis__redact_calloc(1, sizeof(*s));
	if (!s)
		return CIVIS_ENOMEM;
	s->r = r;
	if (stream_reserve(s)) {
		civis_redact_stream_free(s);
		return CIVIS_ENOMEM;
	}
	*out = s;
	return CIVIS_OK;
}

void
civis_redact_stream_free(civis_redact_stream *s)
{
	if (!s)
		return;
	free(s->tail);
	free(s->scratch);
	free(s);
}

size_t
civis_redact_stream_held(const civis_redact_stream *s)
{
	return s ? (size_t)(s->pos - s->emit) : 0;
}

int
civis_redact_stream_feed(civis_redact_stream *s, const char *in, size_t len,
                         civis_redact_out_fn out, void *ud)
{
	const civis_redact *r;
	struct fctx c;
	uint64_t partial = NONE, n, keep_from;
	int rc;

	if (!s || !out || (!in && len))
		return CIVIS_EINVAL;
	if (len == 0)
		return CIVIS_OK;
	r = s->r;
	if (r->nbuilt == 0 && s->tail_len == 0 && s->emit == s->pos) {
		s->pos += len;
		s->emit = s->pos;
		s->tail_abs = s->pos;
		s->last_masked = 0;
		return out(ud, in, len);
	}
	rc = stream_reserve(s);
	if (rc)
		return rc;
	c.s = s;
	c.tail = s->tail;
	c.tail_abs = s->tail_abs;
	c.tail_len = s->tail_len;
	c.in = (const unsigned char *)in;
	c.base = s->pos;
	c.len = len;
	c.out = out;
	c.ud = ud;
	n = s->pos + len;
	if (r->nbuilt && s->tail_len) {
		size_t k = len < s->tail_cap ? len : s->tail_cap;
		memcpy(s->scratch, s->tail, s->tail_len);
		memcpy(s->scratch + s->tail_len, in, k);
		rc = scan(r, &c, s->scratch, s->tail_len + k, 0, s->tail_len,
		          s->tail_abs, 0, &partial);
		if (rc)
			return rc;
	}
	if (r->nbuilt && partial == NONE) {
		rc = scan(r, &c, c.in, len, 0, len, c.base, 0, &partial);
		if (rc)
			return rc;
	}
	keep_from = partial == NONE ? n : partial;
	rc = emit_until(&c, keep_from);
	if (rc)
		return rc;
	/* the new tail: [keep_from, n), fewer than maxlen bytes */
	if (keep_from < c.base) {
		size_t off = (size_t)(keep_from - s->tail_abs), keep = s->tail_len - off;
		memmove(s->tail, s->tail + off, keep);
		memcpy(s->tail + keep, in, len);
		s->tail_len = keep + len;
	} else {
		size_t off = (size_t)(keep_from - c.base);
		memcpy(s->tail, in + off, len - off);
		s->tail_len = len - off;
	}
	s->tail_abs = keep_from;
	s->pos = n;
	return CIVIS_OK;
}

int
civis_redact_stream_flush(civis_redact_stream *s, civis_redact_out_fn out, void *ud)
{
	struct fctx c;
	uint64_t partial = NONE;
	int rc;

	if (!s || !out)
		return CIVIS_EINVAL;
	if (s->emit >= s->pos)
		return CIVIS_OK;
	c.s = s;
	c.tail = s->tail;
	c.tail_abs = s->tail_abs;
	c.tail_len = s->tail_len;
	c.in = NULL;
	c.base = s->pos;
	c.len = 0;
	c.out = out;
	c.ud = ud;
	if (s->r->nbuilt && s->tail_len) {
		/* Up to the first held byte that could begin a secret, the
		 * bytes are decided (masked where an occurrence covers them). */
		rc = scan(s->r, &c, s->tail, s->tail_len, 0, s->tail_len, s->tail_abs,
		          0, &partial);
		if (rc)
			return rc;
	}
	if (partial != NONE) {
		rc = emit_until(&c, partial);
		if (rc)
			return rc;
		/* From there on: masked, never raw. */
		if (s->mask_end < s->pos)
			s->mask_end = s->pos;
	}
	/* The tail stays: when the rest of the secret comes, the next feed
	 * rescans it, finds the occurrence and masks the rest, which touches
	 * the token just sent and so adds nothing. */
	return emit_until(&c, s->pos);
}

/* A bounded output: text is cut at cap, and a token either fits whole or
 * is left out. */
struct strbuf {
	char *buf;
	size_t cap;
	size_t len;
	int cut;
};

static int
strbuf_out(void *ud, const char *data, size_t len)
{
	struct strbuf *b = ud;
	size_t room = b->cap - b->len;

	if (b->cut)
		return CIVIS_OK;
	if (len > room) {
		b->cut = 1;
		if (len == CIVIS_REDACT_TOKEN_LEN &&
		    memcmp(data, CIVIS_REDACT_TOKEN, CIVIS_REDACT_TOKEN_LEN) == 0)
			return CIVIS_OK;
		len = room;
	}
	memmove(b->buf + b->len, data, len);
	b->len += len;
	return CIVIS_OK;
}

/* Mask in[0..n) whole into b. in must not overlap b's buffer. */
static int
mask_whole(const civis_redact *r, const char *in, size_t n, struct strbuf *b)
{
	civis_redact_stream s;
	struct fctx c;
	uint64_t partial;
	int rc = CIVIS_OK;

	memset(&s, 0, sizeof(s));
	s.r = r;
	c.s = &s;
	c.tail = NULL;
	c.tail_abs = 0;
	c.tail_len = 0;
	c.in = (const unsigned char *)in;
	c.base = 0;
	c.len = n;
	c.out = strbuf_out;
	c.ud = b;
	if (r->nbuilt)
		rc = scan(r, &c, c.in, n, 0, n, 0, 1, &partial);
	if (!rc)
		rc = emit_until(&c, n);
	return rc;
}

int
civis_redact_buf(const civis_redact *r, const char *in, size_t len, char *out,
                 size_t outcap, size_t *outlen)
{
	struct strbuf b;
	char *copy = NULL;
	int rc;

	if (outlen)
		*outlen = 0;
	if (!r || (!in && len) || (!out && outcap) || !outlen)
		return CIVIS_EINVAL;
	/* the output may be longer than the input: never write over unread input */
	if (len && outcap && (uintptr_t)in < (uintptr_t)out + outcap &&
	    (uintptr_t)out < (uintptr_t)in + len) {
		copy = civis__redact_malloc(len);
		if (!copy)
			return CIVIS_ENOMEM;
		memcpy(copy, in, len);
		in = copy;
	}
	b.buf = out;
	b.cap = outcap;
	b.len = 0;
	b.cut = 0;
	rc = mask_whole(r, in ? in : "", len, &b);
	*outlen = b.len;
	if (!rc && b.cut)
		rc = CIVIS_ETOOBIG;
	free(copy);
	return rc;
}

int
civis_redact_string(const civis_redact *r, const char *in, char *buf, size_t buflen)
{
	size_t n;
	int rc;

	if (!r || !in || !buf || buflen == 0)
		return CIVIS_EINVAL;
	rc = civis_redact_buf(r, in, strlen(in), buf, buflen - 1, &n);
	buf[n] = '\0';
	return rc;
}

#define FORMAT_MAX (1u << 20)

int
civis_redact_format(const civis_redact *r, char *buf, size_t buflen, const char *fmt, ...)
{
	char stackbuf[1024], *text = stackbuf;
	va_list ap;
	size_t n, outn;
	int len, rc;

	if (!buf || buflen == 0 || !fmt)
		return CIVIS_EINVAL;
	buf[0] = '\0';
	va_start(ap, fmt);
	len = vsnprintf(stackbuf, sizeof(stackbuf), fmt, ap);
	va_end(ap);
	if (len < 0)
		return CIVIS_EINVAL;
	n = (size_t)len;
	if (n >= sizeof(stackbuf)) {
		/* the whole text, however long it is, before masking */
		if (n >= FORMAT_MAX)
			return CIVIS_ETOOBIG;
		text = civis__redact_malloc(n + 1);
		if (!text)
			return CIVIS_ENOMEM;
		va_start(ap, fmt);
		len = vsnprintf(text, n + 1, fmt, ap);
		va_end(ap);
		if (len < 0 || (size_t)len != n) {
			free(text);
			return CIVIS_EINVAL;
		}
	}
	if (r) {
		rc = civis_redact_buf(r, text, n, buf, buflen - 1, &outn);
	} else {
		outn = n < buflen - 1 ? n : buflen - 1;
		memcpy(buf, text, outn);
		rc = outn < n ? CIVIS_ETOOBIG : CIVIS_OK;
	}
	buf[outn] = '\0';
	if (text != stackbuf)
		free(text);
	return rc;
}
