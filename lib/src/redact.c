/* redact.c: streaming secret masking (see redact.h).
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
#include "civis/redact.h"

#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"

#define MINLEN   CIVIS_REDACT_MIN_LEN   /* Wu-Manber window: every pattern is at least this long */
#define BLOCK    3                      /* bytes hashed for the shift table */
#define MAXSHIFT (MINLEN - BLOCK + 1)
#define NONE     UINT64_MAX
#define EMPTYKEY UINT64_MAX             /* prefixes are 48-bit, never this */

struct pat {
	uint32_t off;   /* into arena */
	uint32_t len;
};

struct slot {
	uint64_t key;   /* the 6-byte prefix, EMPTYKEY when free */
	uint32_t first; /* into group[] */
	uint32_t count;
};

struct civis_redact {
	unsigned char *arena;   /* pattern bytes, back to back */
	size_t arena_len, arena_cap;
	struct pat *pats;       /* distinct patterns in order of registration */
	size_t npat, pat_cap;
	uint32_t *dedup;        /* open addressing: index + 1, 0 = free */
	size_t dedup_cap;       /* power of two */
	int dirty;              /* patterns added since the tables were built */

	/* match tables, built from pats[0..nbuilt) */
	size_t nbuilt;
	uint32_t *sorted;       /* pattern indices, bytes in lexicographic order */
	size_t maxlen;
	uint8_t first[32];      /* bitmap of first bytes */
	uint8_t *pair;          /* bitmap of first two bytes, 8 KiB */
	unsigned tbits;
	uint8_t *shift;         /* 1 << tbits entries */
	struct slot *slots;
	size_t slot_mask;
	uint32_t *group;        /* per prefix: pattern indices, longest first */
};

struct civis_redact_stream {
	const civis_redact *r;
	uint64_t pos;           /* bytes fed */
	uint64_t emit;          /* bytes decided and passed to out */
	uint64_t mask_end;      /* bytes before this offset are covered by an occurrence seen */
	int last_masked;        /* the last byte passed out was masked (its token is out) */
	uint64_t tail_abs;      /* stream offset of tail[0]; tail_abs <= emit <= pos */
	size_t tail_len;        /* tail holds [tail_abs, pos) */
	unsigned char *tail;
	size_t tail_cap;
	unsigned char *scratch; /* tail + the first bytes of the next input */
	size_t scratch_cap;
};

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

/* ------------------------------------------------------------ allocation */

#ifdef CIVIS_UNITTEST
static int ut_fail_alloc = -1;  /* allocations left before one fails; -1 never */

int
civis__redact_fail_alloc(int n)
{
	int left = ut_fail_alloc;

	ut_fail_alloc = n;
	return left;
}

static int
ut_alloc_fails(void)
{
	return ut_fail_alloc >= 0 && ut_fail_alloc-- == 0;
}
#else
static int
ut_alloc_fails(void)
{
	return 0;
}
#endif

static void *
r_malloc(size_t n)
{
	return ut_alloc_fails() ? NULL : malloc(n);
}

static void *
r_calloc(size_t n, size_t size)
{
	return ut_alloc_fails() ? NULL : calloc(n, size);
}

static void *
r_realloc(void *p, size_t n)
{
	return ut_alloc_fails() ? NULL : realloc(p, n);
}

static char *
r_strndup(const char *s, size_t n)
{
	return ut_alloc_fails() ? NULL : strndup(s, n);
}

/* ------------------------------------------------------------ hashing */

static inline uint32_t
hash3(const unsigned char *p, unsigned tbits)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
	return (v * 0x9E3779B1u) >> (32 - tbits);
}

static inline uint64_t
load6(const unsigned char *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40;
}

static inline size_t
slot_hash(uint64_t key, size_t mask)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;
}

static uint64_t
bytes_hash(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* ------------------------------------------------------------ the set */

int
civis_redact_new(civis_redact **out)
{
	civis_redact *r;

	if (!out)
		return CIVIS_EINVAL;
	*out = NULL;
	r = r_calloc(1, sizeof(*r));
	if (!r)
		return CIVIS_ENOMEM;
	*out = r;
	return CIVIS_OK;
}

static void
free_tables(civis_redact *r)
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

void
civis_redact_free(civis_redact *r)
{
	if (!r)
		return;
	free_tables(r);
	free(r->arena);
	free(r->pats);
	free(r->dedup);
	free(r);
}

size_t
civis_redact_count(const civis_redact *r)
{
	return r ? r->nbuilt : 0;
}

size_t
civis_redact_max_len(const civis_redact *r)
{
	return r ? r->maxlen : 0;
}

size_t
civis_redact_memory(const civis_redact *r)
{
	size_t m;

	if (!r)
		return 0;
	m = sizeof(*r) + r->arena_cap + r->pat_cap * sizeof(struct pat) +
	    r->dedup_cap * sizeof(uint32_t);
	if (r->sorted)
		m += r->nbuilt * sizeof(uint32_t) * 2 + ((size_t)1 << r->tbits) + 8192 +
		     (r->slot_mask + 1) * sizeof(struct slot);
	return m;
}

static int
dedup_grow(civis_redact *r)
{
	size_t cap = r->dedup_cap ? r->dedup_cap * 2 : 64;
	uint32_t *d = r_calloc(cap, sizeof(*d));

	if (!d)
		return CIVIS_ENOMEM;
	for (size_t i = 0; i < r->npat; i++) {
		const struct pat *p = &r->pats[i];
		size_t h = (size_t)bytes_hash(r->arena + p->off, p->len) & (cap - 1);
		while (d[h])
			h = (h + 1) & (cap - 1);
		d[h] = (uint32_t)i + 1;
	}
	free(r->dedup);
	r->dedup = d;
	r->dedup_cap = cap;
	return CIVIS_OK;
}

/* Register one pattern as it is (no encodings), once. */
static int
add_pattern(civis_redact *r, const unsigned char *p, size_t len)
{
	size_t h;
	int rc;

	if (len < MINLEN)
		return CIVIS_OK;
	if (len > CIVIS_REDACT_MAX_TOTAL - r->arena_len)
		return CIVIS_ETOOBIG;
	if ((r->npat + 1) * 2 > r->dedup_cap) {
		rc = dedup_grow(r);
		if (rc)
			return rc;
	}
	h = (size_t)bytes_hash(p, len) & (r->dedup_cap - 1);
	while (r->dedup[h]) {
		const struct pat *q = &r->pats[r->dedup[h] - 1];
		if (q->len == len && memcmp(r->arena + q->off, p, len) == 0)
			return CIVIS_OK;
		h = (h + 1) & (r->dedup_cap - 1);
	}
	if (r->arena_len + len > r->arena_cap) {
		size_t cap = r->arena_cap ? r->arena_cap : 1024;
		unsigned char *a;
		while (cap < r->arena_len + len)
			cap *= 2;
		a = r_realloc(r->arena, cap);
		if (!a)
			return CIVIS_ENOMEM;
		r->arena = a;
		r->arena_cap = cap;
	}
	if (r->npat == r->pat_cap) {
		size_t cap = r->pat_cap ? r->pat_cap * 2 : 64;
		struct pat *np = r_realloc(r->pats, cap * sizeof(*np));
		if (!np)
			return CIVIS_ENOMEM;
		r->pats = np;
		r->pat_cap = cap;
	}
	memcpy(r->arena + r->arena_len, p, len);
	r->pats[r->npat].off = (uint32_t)r->arena_len;
	r->pats[r->npat].len = (uint32_t)len;
	r->arena_len += len;
	r->dedup[h] = (uint32_t)r->npat + 1;
	r->npat++;
	r->dirty = 1;
	return CIVIS_OK;
}

/* ------------------------------------------------------------ encodings */

static const char HEX_LO[] = "0123456789abcdef";
static const char HEX_UP[] = "0123456789ABCDEF";
static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* JSON string escaping; dst holds at least 6 * n bytes. */
static size_t
json_escape(const unsigned char *p, size_t n, unsigned char *dst, int slash, int upper)
{
	const char *hex = upper ? HEX_UP : HEX_LO;
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		char e = 0;
		switch (c) {
		case '"':  e = '"'; break;
		case '\\': e = '\\'; break;
		case '\n': e = 'n'; break;
		case '\r': e = 'r'; break;
		case '\t': e = 't'; break;
		case '\b': e = 'b'; break;
		case '\f': e = 'f'; break;
		case '/':  e = slash ? '/' : 0; break;
		default:   break;
		}
		if (e) {
			dst[o++] = '\\';
			dst[o++] = (unsigned char)e;
		} else if (c < 0x20) {
			dst[o++] = '\\';
			dst[o++] = 'u';
			dst[o++] = '0';
			dst[o++] = '0';
			dst[o++] = (unsigned char)hex[c >> 4];
			dst[o++] = (unsigned char)hex[c & 15];
		} else {
			dst[o++] = c;
		}
	}
	return o;
}

/* RFC 3986 percent-encoding; dst holds at least 3 * n bytes. */
static size_t
url_encode(const unsigned char *p, size_t n, unsigned char *dst, int upper, int plus)
{
	const char *hex = upper ? HEX_UP : HEX_LO;
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~') {
			dst[o++] = c;
		} else if (c == ' ' && plus) {
			dst[o++] = '+';
		} else {
			dst[o++] = '%';
			dst[o++] = (unsigned char)hex[c >> 4];
			dst[o++] = (unsigned char)hex[c & 15];
		}
	}
	return o;
}

/* Base64 of p[0..n); dst holds at least 4 * (n / 3 + 1) bytes. */
static size_t
base64(const unsigned char *p, size_t n, unsigned char *dst, const char *abc, int pad)
{
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		dst[o++] = (unsigned char)abc[v >> 18];
		dst[o++] = (unsigned char)abc[(v >> 12) & 63];
		dst[o++] = (unsigned char)abc[(v >> 6) & 63];
		dst[o++] = (unsigned char)abc[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		dst[o++] = (unsigned char)abc[v >> 18];
		dst[o++] = (unsigned char)abc[(v >> 12) & 63];
		if (pad) {
			dst[o++] = '=';
			dst[o++] = '=';
		}
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		dst[o++] = (unsigned char)abc[v >> 18];
		dst[o++] = (unsigned char)abc[(v >> 12) & 63];
		dst[o++] = (unsigned char)abc[(v >> 6) & 63];
		if (pad)
			dst[o++] = '=';
	}
	return o;
}

/* Register p[0..n) (n <= CIVIS_REDACT_MAX_SECRET) and its encodings. */
static int
add_forms(civis_redact *r, const unsigned char *p, size_t n)
{
	static const char *const abcs[2] = { B64_STD, B64_URL };
	unsigned char *tmp = NULL, *shifted = NULL;
	size_t cap = 6 * n + 16, len;
	int rc;

	rc = add_pattern(r, p, n);
	if (rc)
		goto out;
	tmp = r_malloc(cap);
	shifted = r_malloc(n + 2);
	if (!tmp || !shifted) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	for (int v = 0; v < 3; v++) {
		len = json_escape(p, n, tmp, v == 1, v == 2);
		rc = add_pattern(r, tmp, len);
		if (rc)
			goto out;
	}
	for (int v = 0; v < 4; v++) {
		len = url_encode(p, n, tmp, v & 1, v >> 1);
		rc = add_pattern(r, tmp, len);
		if (rc)
			goto out;
	}
	for (int a = 0; a < 2; a++) {
		for (int pad = 0; pad < 2; pad++) {
			len = base64(p, n, tmp, abcs[a], pad);
			rc = add_pattern(r, tmp, len);
			if (rc)
				goto out;
		}
		/* The secret at byte k of a 3-byte group: characters
		 * ceil(8k/6) .. floor(8(k+n)/6) - 1 depend on the secret only. */
		for (size_t k = 0; k < 3; k++) {
			size_t lo = (8 * k + 5) / 6, hi = 8 * (k + n) / 6;
			memset(shifted, 0, k);
			memcpy(shifted + k, p, n);
			base64(shifted, k + n, tmp, abcs[a], 0);
			if (hi > lo) {
				rc = add_pattern(r, tmp + lo, hi - lo);
				if (rc)
					goto out;
			}
		}
	}
	rc = CIVIS_OK;
out:
	free(tmp);
	free(shifted);
	return rc;
}

/* A value, split into touching pieces when it is long. */
static int
add_value(civis_redact *r, const unsigned char *p, size_t n)
{
	size_t off;
	int rc;

	if (n < MINLEN)
		return CIVIS_OK;
	if (n <= CIVIS_REDACT_MAX_SECRET)
		return add_forms(r, p, n);
	for (off = 0;; off += CIVIS_REDACT_PIECE) {
		int last = off + CIVIS_REDACT_PIECE >= n;
		if (last)
			off = n - CIVIS_REDACT_PIECE;
		rc = add_forms(r, p + off, CIVIS_REDACT_PIECE);
		if (rc || last)
			return rc;
	}
}

/* The value whole, then each of its lines (with and without a '\r'). */
static int
add_secret(civis_redact *r, const unsigned char *p, size_t n)
{
	const unsigned char *line = p, *end = p + n, *nl;
	int rc;

	if (n < MINLEN)
		return CIVIS_OK;
	rc = add_value(r, p, n);
	if (rc || !memchr(p, '\n', n))
		return rc;
	while (line < end) {
		size_t ll;
		nl = memchr(line, '\n', (size_t)(end - line));
		ll = nl ? (size_t)(nl - line) : (size_t)(end - line);
		rc = add_value(r, line, ll);
		if (rc)
			return rc;
		if (ll > 0 && line[ll - 1] == '\r') {
			rc = add_value(r, line, ll - 1);
			if (rc)
				return rc;
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	return CIVIS_OK;
}

/* ------------------------------------------------------------ tables */

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
static int
build(civis_redact *r)
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
	sorted = r_malloc((n ? n : 1) * sizeof(*sorted));
	group = r_malloc((n ? n : 1) * sizeof(*group));
	shift = r_malloc(tsize);
	slots = r_malloc(nslots * sizeof(*slots));
	pair = r_calloc(8192, 1);
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
		uint64_t key = load6(p);
		size_t j = i, h;

		while (j < n && load6(r->arena + r->pats[sorted[j]].off) == key) {
			if (r->pats[sorted[j]].len > maxlen)
				maxlen = r->pats[sorted[j]].len;
			j++;
		}
		memcpy(group + i, sorted + i, (j - i) * sizeof(*group));
		qsort(group + i, j - i, sizeof(*group), cmp_len_desc);
		h = slot_hash(key, nslots - 1);
		while (slots[h].key != EMPTYKEY)
			h = (h + 1) & (nslots - 1);
		slots[h].key = key;
		slots[h].first = (uint32_t)i;
		slots[h].count = (uint32_t)(j - i);
		first[p[0] >> 3] |= (uint8_t)(1u << (p[0] & 7));
		pair[(p[0] << 5) | (p[1] >> 3)] |= (uint8_t)(1u << (p[1] & 7));
		for (size_t q = BLOCK - 1; q < MINLEN; q++) {
			uint32_t t = hash3(p + q + 1 - BLOCK, tbits);
			uint8_t d = (uint8_t)(MINLEN - 1 - q);
			if (shift[t] > d)
				shift[t] = d;
		}
		i = j;
	}
	sort_ctx = NULL;
	free_tables(r);
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

int
civis_redact_add(civis_redact *r, const char *secret, size_t len)
{
	int rc, brc;

	if (!r || (!secret && len))
		return CIVIS_EINVAL;
	rc = add_secret(r, (const unsigned char *)secret, len);
	brc = build(r);
	return rc ? rc : brc;
}

int
civis_redact_name_is_secret(const char *name, const char *const *patterns,
                            size_t n, int use_defaults)
{
	static const char *const defaults[] = {
		"*_PASSWORD", "*_SECRET", "*_TOKEN", "*_PRIVATE_KEY",
		"*_ACCESS_KEY", "*_SECRET_KEY", "*_API_KEY", "*_SSH_KEY",
	};

	if (!name || !*name)
		return 0;
	if (strcmp(name, "CIVIS_API_KEY") == 0)
		return 1;
	for (size_t i = 0; patterns && i < n; i++)
		if (patterns[i] && fnmatch(patterns[i], name, FNM_CASEFOLD) == 0)
			return 1;
	if (use_defaults)
		for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
			if (fnmatch(defaults[i], name, FNM_CASEFOLD) == 0)
				return 1;
	return 0;
}

int
civis_redact_add_env(civis_redact *r, char *const *envp,
                     const char *const *patterns, size_t npatterns,
                     int use_defaults)
{
	int rc = CIVIS_OK, brc;

	if (!r)
		return CIVIS_EINVAL;
	for (size_t i = 0; envp && envp[i]; i++) {
		const char *e = envp[i], *eq = strchr(e, '=');
		char *name;
		int secret, arc;

		if (!eq || eq == e)
			continue;
		name = r_strndup(e, (size_t)(eq - e));
		if (!name) {
			rc = CIVIS_ENOMEM;
			break;
		}
		secret = civis_redact_name_is_secret(name, patterns, npatterns, use_defaults);
		free(name);
		if (!secret)
			continue;
		arc = add_secret(r, (const unsigned char *)eq + 1, strlen(eq + 1));
		if (arc && !rc)
			rc = arc;
		if (arc == CIVIS_ENOMEM)
			break;
	}
	brc = build(r);
	return rc ? rc : brc;
}

#ifdef CIVIS_UNITTEST
int
civis__redact_pattern(const civis_redact *r, size_t i, const char **p, size_t *len)
{
	if (!r || i >= r->nbuilt || !p || !len)
		return CIVIS_EINVAL;
	*p = (const char *)r->arena + r->pats[r->sorted[i]].off;
	*len = r->pats[r->sorted[i]].len;
	return CIVIS_OK;
}
#endif

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
	size_t h = slot_hash(key, r->slot_mask);

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
		unsigned d = shift[hash3(buf + i - (BLOCK - 1), tbits)];

		if (d) {
			i += d;
			continue;
		}
		st = i - (MINLEN - 1);
		sl = find_prefix(r, load6(buf + st));
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
	t = r_realloc(s->tail, need ? need : 1);
	if (!t)
		return CIVIS_ENOMEM;
	s->tail = t;
	s->tail_cap = need;
	sc = r_realloc(s->scratch, need ? 2 * need : 1);
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
	s = r_calloc(1, sizeof(*s));
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
	uint64_t partial;
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
		rc = scan(s->r, &c, s->tail, s->tail_len, 0, s->tail_len, s->tail_abs,
		          1, &partial);
		if (rc)
			return rc;
	}
	/* the tail stays: a secret cut here still has its rest masked */
	return emit_until(&c, s->pos);
}

struct strbuf {
	char *buf;
	size_t cap;     /* bytes usable, the NUL excluded */
	size_t len;
	int cut;
};

static int
strbuf_out(void *ud, const char *data, size_t len)
{
	struct strbuf *b = ud;
	size_t room = b->cap - b->len;

	if (len > room) {
		len = room;
		b->cut = 1;
	}
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return CIVIS_OK;
}

int
civis_redact_string(const civis_redact *r, const char *in, char *buf, size_t buflen)
{
	civis_redact_stream s;
	struct strbuf b;
	struct fctx c;
	char *copy = NULL;
	size_t n;
	uint64_t partial;
	int rc;

	if (!r || !in || !buf || buflen == 0)
		return CIVIS_EINVAL;
	n = strlen(in);
	/* the output may be longer than the input: never write over unread input */
	if ((uintptr_t)in < (uintptr_t)buf + buflen &&
	    (uintptr_t)buf < (uintptr_t)in + n + 1) {
		copy = r_strndup(in, n);
		if (!copy)
			return CIVIS_ENOMEM;
		in = copy;
	}
	memset(&s, 0, sizeof(s));
	s.r = r;
	b.buf = buf;
	b.cap = buflen - 1;
	b.len = 0;
	b.cut = 0;
	c.s = &s;
	c.tail = NULL;
	c.tail_abs = 0;
	c.tail_len = 0;
	c.in = (const unsigned char *)in;
	c.base = 0;
	c.len = n;
	c.out = strbuf_out;
	c.ud = &b;
	rc = CIVIS_OK;
	if (r->nbuilt)
		rc = scan(r, &c, c.in, n, 0, n, 0, 1, &partial);
	if (!rc)
		rc = emit_until(&c, n);
	buf[b.len] = '\0';
	if (!rc && b.cut)
		rc = CIVIS_ETOOBIG;
	free(copy);
	return rc;
}
