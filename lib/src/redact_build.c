/* redact_build.c: the set of secrets and their encodings (see redact.h).
 *
 * A secret becomes patterns: its bytes, its JSON, URL and base64 forms,
 * each line of a multi-line value, overlapping pieces of a long one. The
 * patterns are kept once each (a hash set over their bytes) in one arena;
 * redact_match.c turns them into the match tables. */
#include "redact_int.h"

#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"

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

void *
civis__redact_malloc(size_t n)
{
	return ut_alloc_fails() ? NULL : malloc(n);
}

void *
civis__redact_calloc(size_t n, size_t size)
{
	return ut_alloc_fails() ? NULL : calloc(n, size);
}

void *
civis__redact_realloc(void *p, size_t n)
{
	return ut_alloc_fails() ? NULL : realloc(p, n);
}

char *
civis__redact_strndup(const char *s, size_t n)
{
	return ut_alloc_fails() ? NULL : strndup(s, n);
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
	r = civis__redact_calloc(1, sizeof(*r));
	if (!r)
		return CIVIS_ENOMEM;
	*out = r;
	return CIVIS_OK;
}

void
civis_redact_free(civis_redact *r)
{
	if (!r)
		return;
	civis__redact_free_tables(r);
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
	uint32_t *d = civis__redact_calloc(cap, sizeof(*d));

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
		a = civis__redact_realloc(r->arena, cap);
		if (!a)
			return CIVIS_ENOMEM;
		r->arena = a;
		r->arena_cap = cap;
	}
	if (r->npat == r->pat_cap) {
		size_t cap = r->pat_cap ? r->pat_cap * 2 : 64;
		struct pat *np = civis__redact_realloc(r->pats, cap * sizeof(*np));
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
	tmp = civis__redact_malloc(cap);
	shifted = civis__redact_malloc(n + 2);
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

int
civis_redact_add(civis_redact *r, const char *secret, size_t len)
{
	int rc, brc;

	if (!r || (!secret && len))
		return CIVIS_EINVAL;
	rc = add_secret(r, (const unsigned char *)secret, len);
	brc = civis__redact_build(r);
	return rc ? rc : brc;
}

int
civis_redact_add_secret(civis_redact *r, const char *value, size_t len)
{
	if (!r || !value || len < CIVIS_REDACT_MIN_LEN)
		return CIVIS_EINVAL;
	return civis_redact_add(r, value, len);
}

/* The default secret names (case-insensitive fnmatch globs), from what
 * real tools and the Civis platform put in the environment: anything that
 * says PASSWORD, SECRET or TOKEN (libpq PGPASSWORD, Civis credential
 * parameters NAME_PASSWORD, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
 * AZURE_CLIENT_SECRET, GH_TOKEN...), the common short forms (*_PASS,
 * *_PWD as MYSQL_PWD, *_PASSWD), API keys, private and access keys. */
static const char *const default_names[] = {
	"*PASSWORD*", "*SECRET*", "*TOKEN*", "*PASSWD*",
	"*_PASS", "*_PWD",
	"API_KEY", "APIKEY", "*_API_KEY", "*_APIKEY",
	"*PRIVATE_KEY", "*_ACCESS_KEY", "*_SSH_KEY",
};

/* Names the defaults would take but whose value is no secret: a path to
 * one (PGPASSFILE has no rule; PASSWORD_FILE, AWS_WEB_IDENTITY_TOKEN_FILE,
 * GOOGLE_APPLICATION_CREDENTIALS-like *_FILE/_PATH/_DIR do), and the
 * tokenizer switches of NLP libraries (TOKENIZERS_PARALLELISM). A --redact
 * glob still takes them. */
static const char *const default_not[] = {
	"*_FILE", "*_FILES", "*_PATH", "*_DIR", "*TOKENIZER*",
};

static int
glob_any(const char *name, const char *const *globs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (globs[i] && fnmatch(globs[i], name, FNM_CASEFOLD) == 0)
			return 1;
	return 0;
}

int
civis_redact_name_is_secret(const char *name, const char *const *patterns,
                            size_t n, int use_defaults)
{
	if (!name || !*name)
		return 0;
	if (strcmp(name, "CIVIS_API_KEY") == 0)
		return 1;
	if (patterns && glob_any(name, patterns, n))
		return 1;
	return use_defaults &&
	       glob_any(name, default_names, sizeof(default_names) / sizeof(default_names[0])) &&
	       !glob_any(name, default_not, sizeof(default_not) / sizeof(default_not[0]));
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
		name = civis__redact_strndup(e, (size_t)(eq - e));
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
	brc = civis__redact_build(r);
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

