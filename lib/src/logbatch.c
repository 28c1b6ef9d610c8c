/* logbatch.c: UTF-8 repair, JSON escaping, timestamps, log batch bodies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "civis/civis.h"
#include "civis/logbatch.h"

#define BATCH_PREFIX     "{\"messages\":["
#define BATCH_PREFIX_LEN (sizeof(BATCH_PREFIX) - 1)
#define BATCH_SUFFIX_LEN 2                    /* "]}" */
#define BATCH_MAX_BYTES  ((size_t)1 << 30)    /* sanity limit on max_bytes */
#define BATCH_FIRST_ALLOC ((size_t)16 * 1024)

static const char hexdig[] = "0123456789abcdef";

/* ------------------------------------------------------------ timestamps */

uint64_t
civis_clock_realtime_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
civis_tsclock_next(civis_tsclock *c, uint64_t now_ns)
{
	uint64_t v = now_ns;

	if (c == NULL)
		return now_ns;
	if (v <= c->last_ns)
		v = c->last_ns + 1;
	c->last_ns = v;
	return v;
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
 * civil_from_days; days >= 0 here, as epoch_ns is unsigned). */
static void
civil_from_days(uint64_t days, unsigned *y, unsigned *m, unsigned *d)
{
	uint64_t z = days + 719468;
	uint64_t era = z / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;

	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (unsigned)(yoe + era * 400) + (*m <= 2);
}

static void
put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* "YYYY-MM-DDTHH:MM:SS." of the last second formatted, per thread. */
static _Thread_local uint64_t ts_cache_sec = UINT64_MAX;
static _Thread_local char ts_cache[20];

int
civis_ts_format(uint64_t epoch_ns, char *buf, size_t len)
{
	uint64_t sec = epoch_ns / 1000000000u;
	unsigned ns = (unsigned)(epoch_ns % 1000000000u);

	if (buf == NULL || len < CIVIS_TS_LEN)
		return CIVIS_EINVAL;
	if (sec != ts_cache_sec) {
		unsigned y, mo, d, sod = (unsigned)(sec % 86400);

		civil_from_days(sec / 86400, &y, &mo, &d);
		put_digits(ts_cache, y, 4);       /* year <= 2554 for a uint64_t */
		ts_cache[4] = '-';
		put_digits(ts_cache + 5, mo, 2);
		ts_cache[7] = '-';
		put_digits(ts_cache + 8, d, 2);
		ts_cache[10] = 'T';
		put_digits(ts_cache + 11, sod / 3600, 2);
		ts_cache[13] = ':';
		put_digits(ts_cache + 14, sod / 60 % 60, 2);
		ts_cache[16] = ':';
		put_digits(ts_cache + 17, sod % 60, 2);
		ts_cache[19] = '.';
		ts_cache_sec = sec;
	}
	memcpy(buf, ts_cache, 20);
	put_digits(buf + 20, ns, 9);
	buf[29] = 'Z';
	buf[30] = '\0';
	return CIVIS_OK;
}

/* ------------------------------------------------------------ encoder */

size_t
civis_json_escape_bound(size_t len)
{
	return len > SIZE_MAX / 6 ? SIZE_MAX : len * 6;
}

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of 8 bytes is >= 0x80, < 0x20, '"' or '\\'. Each test is the
 * classic has-zero-byte trick: exact for "any", which is all we ask. */
static int
word_needs_care(uint64_t x)
{
	uint64_t q = x ^ (ONES * '"');
	uint64_t b = x ^ (ONES * '\\');
	uint64_t t = (x | ((x - ONES * 0x20) & ~x) |
	              ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS;

	return t != 0;
}

/* Length (2..4) of the valid UTF-8 character at s[0..n), s[0] >= 0x80; or 0
 * with *bad = the length of the maximal invalid subpart (1..3). */
static size_t
utf8_char(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need, k;

	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;             /* overlong */
		else if (c == 0xED)
			hi = 0x9F;             /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;             /* overlong */
		else if (c == 0xF4)
			hi = 0x8F;             /* above 10FFFF */
	} else {
		*bad = 1;
		return 0;
	}
	for (k = 1; k <= need; k++) {
		if (k >= n || s[k] < lo || s[k] > hi) {
			*bad = k;
			return 0;
		}
		lo = 0x80;
		hi = 0xBF;
	}
	return need + 1;
}

int
civis_json_escape_utf8(const char *in, size_t len, char *out, size_t outcap,
                       size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, o = 0;

	if (outlen == NULL)
		return CIVIS_EINVAL;
	*outlen = 0;
	if ((in == NULL && len > 0) || (out == NULL && outcap > 0))
		return CIVIS_EINVAL;
	while (i < len) {
		unsigned char c;

		if (len - i >= 8 && outcap - o >= 8) {
			uint64_t x;

			memcpy(&x, s + i, 8);
			if (!word_needs_care(x)) {
				memcpy(out + o, s + i, 8);
				i += 8;
				o += 8;
				continue;
			}
		}
		c = s[i];
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			if (o >= outcap)
				return CIVIS_ETOOBIG;
			out[o++] = (char)c;
			i++;
		} else if (c < 0x80) {
			char esc = 0;

			switch (c) {
			case '"':  esc = '"'; break;
			case '\\': esc = '\\'; break;
			case '\b': esc = 'b'; break;
			case '\t': esc = 't'; break;
			case '\n': esc = 'n'; break;
			case '\f': esc = 'f'; break;
			case '\r': esc = 'r'; break;
			default:   break;
			}
			if (esc != 0) {
				if (outcap - o < 2)
					return CIVIS_ETOOBIG;
				out[o++] = '\\';
				out[o++] = esc;
			} else {
				if (outcap - o < 6)
					return CIVIS_ETOOBIG;
				memcpy(out + o, "\\u00", 4); /* NOLINT(bugprone-not-null-terminated-result): JSON text, not a C string */
				out[o + 4] = hexdig[c >> 4];
				out[o + 5] = hexdig[c & 15];
				o += 6;
			}
			i++;
		} else {
			size_t bad = 0, n = utf8_char(s + i, len - i, &bad);

			if (n > 0) {
				if (outcap - o < n)
					return CIVIS_ETOOBIG;
				memcpy(out + o, s + i, n);
				o += n;
				i += n;
			} else {
				if (outcap - o < 3)
					return CIVIS_ETOOBIG;
				memcpy(out + o, "\xEF\xBF\xBD", 3); /* NOLINT(bugprone-not-null-terminated-result): JSON text */
				o += 3;
				i += bad;
			}
		}
	}
	*outlen = o;
	return CIVIS_OK;
}

/* ------------------------------------------------------------ batches */

struct civis_batch {
	char *buf;            /* prefix + entries, then room for "]}" and NUL */
	size_t len;           /* prefix + entries */
	size_t alloc;
	size_t max_messages;
	size_t max_bytes;
	size_t count;
	uint64_t first_ns;
	uint64_t last_ns;
};

int
civis_batch_new(civis_batch **out, size_t max_messages, size_t max_bytes)
{
	civis_batch *b;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	if (max_messages == 0)
		max_messages = CIVIS_BATCH_DEFAULT_MESSAGES;
	if (max_bytes == 0)
		max_bytes = CIVIS_BATCH_DEFAULT_BYTES;
	if (max_bytes < CIVIS_BATCH_FLOOR_BYTES || max_bytes > BATCH_MAX_BYTES)
		return CIVIS_EINVAL;
	b = calloc(1, sizeof(*b));
	if (b == NULL)
		return CIVIS_ENOMEM;
	b->alloc = BATCH_FIRST_ALLOC;
	b->buf = malloc(b->alloc);
	if (b->buf == NULL) {
		free(b);
		return CIVIS_ENOMEM;
	}
	b->max_messages = max_messages;
	b->max_bytes = max_bytes;
	civis_batch_reset(b);
	*out = b;
	return CIVIS_OK;
}

void
civis_batch_free(civis_batch *b)
{
	if (b == NULL)
		return;
	free(b->buf);
	free(b);
}

void
civis_batch_reset(civis_batch *b)
{
	if (b == NULL)
		return;
	memcpy(b->buf, BATCH_PREFIX, BATCH_PREFIX_LEN);
	b->len = BATCH_PREFIX_LEN;
	b->count = 0;
	b->first_ns = 0;
	b->last_ns = 0;
}

/* Make room for `need` bytes in all, growing by doubling up to the cap. */
static int
batch_reserve(civis_batch *b, size_t need)
{
	size_t cap = b->max_bytes + 3, n = b->alloc;
	char *p;

	if (need > cap)
		need = cap;
	if (need <= b->alloc)
		return CIVIS_OK;
	while (n < need)
		n = n > cap / 2 ? cap : n * 2;
	p = realloc(b->buf, n);
	if (p == NULL)
		return CIVIS_ENOMEM;
	b->buf = p;
	b->alloc = n;
	return CIVIS_OK;
}

static int
put(char *buf, size_t *o, size_t limit, const char *s, size_t n)
{
	if (limit - *o < n)
		return CIVIS_ETOOBIG;
	memcpy(buf + *o, s, n);
	*o += n;
	return CIVIS_OK;
}

#define PUT_LIT(lit) put(b->buf, &o, limit, lit, sizeof(lit) - 1)

int
civis_batch_add(civis_batch *b, const char *msg, size_t len, const char *level,
                uint64_t created_ns)
{
	char ts[CIVIS_TS_LEN];
	size_t llen, limit, worst, o, n;
	int rc;

	if (b == NULL || (msg == NULL && len > 0))
		return CIVIS_EINVAL;
	if (level == NULL)
		level = "info";
	llen = strnlen(level, CIVIS_BATCH_MAX_LEVEL + 1);
	if (llen > CIVIS_BATCH_MAX_LEVEL)
		return CIVIS_EINVAL;
	if (b->count >= b->max_messages)
		return CIVIS_ETOOBIG;
	rc = civis_ts_format(created_ns, ts, sizeof(ts));
	if (rc != CIVIS_OK)
		return rc;

	/* Entries must leave room for "]}"; alloc keeps 3 more for it + NUL. */
	limit = b->max_bytes - BATCH_SUFFIX_LEN;
	worst = civis_json_escape_bound(len);
	if (worst > limit)
		worst = limit;
	rc = batch_reserve(b, b->len + CIVIS_BATCH_OVERHEAD + 6 * CIVIS_BATCH_MAX_LEVEL + worst + 3);
	if (rc != CIVIS_OK)
		return rc;
	if (limit > b->alloc - 3)
		limit = b->alloc - 3;

	/* Written past len; len moves only when the whole entry fits. */
	o = b->len;
	if (b->count > 0)
		rc = PUT_LIT(",");
	if (rc == CIVIS_OK)
		rc = PUT_LIT("{\"message\":\"");
	if (rc == CIVIS_OK) {
		rc = civis_json_escape_utf8(msg, len, b->buf + o, limit - o, &n);
		o += rc == CIVIS_OK ? n : 0;
	}
	if (rc == CIVIS_OK)
		rc = PUT_LIT("\",\"level\":\"");
	if (rc == CIVIS_OK) {
		rc = civis_json_escape_utf8(level, llen, b->buf + o, limit - o, &n);
		o += rc == CIVIS_OK ? n : 0;
	}
	if (rc == CIVIS_OK)
		rc = PUT_LIT("\",\"createdAt\":\"");
	if (rc == CIVIS_OK)
		rc = put(b->buf, &o, limit, ts, CIVIS_TS_LEN - 1);
	if (rc == CIVIS_OK)
		rc = PUT_LIT("\"}");
	if (rc != CIVIS_OK)
		return b->count > 0 ? CIVIS_ETOOBIG : CIVIS_EINVAL;

	b->len = o;
	if (b->count == 0)
		b->first_ns = created_ns;
	b->last_ns = created_ns;
	b->count++;
	return CIVIS_OK;
}

const char *
civis_batch_body(civis_batch *b, size_t *len)
{
	if (len != NULL)
		*len = 0;
	if (b == NULL)
		return NULL;
	/* alloc >= len + 3 always: entries stop at max_bytes - 2. */
	b->buf[b->len] = ']';
	b->buf[b->len + 1] = '}';
	b->buf[b->len + 2] = '\0';
	if (len != NULL)
		*len = b->len + BATCH_SUFFIX_LEN;
	return b->buf;
}

size_t
civis_batch_count(const civis_batch *b)
{
	return b == NULL ? 0 : b->count;
}

uint64_t
civis_batch_first_ns(const civis_batch *b)
{
	return b == NULL ? 0 : b->first_ns;
}

uint64_t
civis_batch_last_ns(const civis_batch *b)
{
	return b == NULL ? 0 : b->last_ns;
}
