/* outputs_name.c: the pure text half of the output directory: Civis names,
 * --archive values, the size limit, and the quoting of names in messages. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs_int.h"
/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s[0] does not
 * start one (overlong forms, surrogates and > U+10FFFF are invalid). s is
 * NUL-terminated, so reading up to a NUL is safe. */
static size_t
utf8_seq(const unsigned char *s, uint32_t *cp)
{
	uint32_t c = s[0];
	size_t n, i;
	uint32_t min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2; c &= 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3; c &= 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4; c &= 0x07; min = 0x10000;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/* Code points that would let a name rewrite or hide part of a log line. */
static int
cp_is_dangerous(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) ||          /* C1 controls */
	       cp == 0x200e || cp == 0x200f ||         /* LRM, RLM */
	       cp == 0x2028 || cp == 0x2029 ||         /* line/paragraph separator */
	       (cp >= 0x202a && cp <= 0x202e) ||       /* bidi embeddings, overrides */
	       (cp >= 0x2066 && cp <= 0x2069) ||       /* bidi isolates */
	       cp == 0xfeff;                           /* BOM / ZWNBSP */
}

/* ---------------------------------------------------------------- quoting */

struct qout {
	char *buf;
	size_t used;
	size_t limit;     /* bytes usable for content */
	int full;
};

static void
qput(struct qout *q, const char *p, size_t n)
{
	if (q->full)
		return;
	if (n > q->limit - q->used) {
		q->full = 1;
		return;
	}
	memcpy(q->buf + q->used, p, n);
	q->used += n;
}

static void
qput_hex(struct qout *q, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t i, k = 0;

	for (i = 0; i < n && k + 4 <= sizeof(tmp); i++) {
		tmp[k++] = '\\';
		tmp[k++] = 'x';
		tmp[k++] = hex[p[i] >> 4];
		tmp[k++] = hex[p[i] & 15];
	}
	qput(q, tmp, k);
}

static int
needs_quotes(const char *s)
{
	return *s == '\0' || strpbrk(s, " :\"'") != NULL;
}

/* may_quote: 1 quote when needed, 0 never, -1 a text (no quotes, and a
 * backslash stays one: the text's own escapes are left alone). */
static size_t
quote_impl(char *buf, size_t len, const char *s, int may_quote)
{
	const unsigned char *p = (const unsigned char *)s;
	struct qout q;
	int quoted;
	size_t reserve;

	if (len == 0)
		return 0;
	buf[0] = '\0';
	if (s == NULL)
		return 0;
	quoted = may_quote > 0 && needs_quotes(s);
	reserve = 1 + 3 + (quoted ? 1 : 0);   /* NUL, "...", closing quote */
	if (len <= reserve + (quoted ? 1 : 0))
		return 0;
	q.buf = buf;
	q.used = 0;
	q.limit = len - reserve;
	q.full = 0;
	if (quoted)
		qput(&q, "\"", 1);
	while (*p != '\0' && !q.full) {
		uint32_t cp;
		size_t n = utf8_seq(p, &cp);

		if (n == 0) {
			qput_hex(&q, p, 1);
			p++;
			continue;
		}
		if (n == 1) {
			switch (cp) {
			case '\n': qput(&q, "\\n", 2); break;
			case '\r': qput(&q, "\\r", 2); break;
			case '\t': qput(&q, "\\t", 2); break;
			case '\\':
				if (may_quote >= 0)
					qput(&q, "\\\\", 2);
				else
					qput(&q, "\\", 1);
				break;
			case '"':
				if (quoted)
					qput(&q, "\\\"", 2);
				else
					qput(&q, "\"", 1);
				break;
			default:
				if (cp < 0x20 || cp == 0x7f)
					qput_hex(&q, p, 1);
				else
					qput(&q, (const char *)p, 1);
			}
		} else if (cp_is_dangerous(cp)) {
			qput_hex(&q, p, n);
		} else {
			qput(&q, (const char *)p, n);
		}
		if (!q.full)
			p += n;
	}
	/* the reserve keeps room for the tail in every case */
	q.limit = len - 1;
	q.full = 0;
	if (*p != '\0')
		qput(&q, "...", 3);
	if (quoted)
		qput(&q, "\"", 1);
	buf[q.used] = '\0';
	return q.used;
}

size_t
agent_outputs_quote(char *buf, size_t len, const char *s)
{
	return quote_impl(buf, len, s, 1);
}

size_t
agent_outputs_escape(char *buf, size_t len, const char *s)
{
	return quote_impl(buf, len, s, 0);
}

size_t
agent_outputs_escape_text(char *buf, size_t len, const char *s)
{
	return quote_impl(buf, len, s, -1);
}

/* ---------------------------------------------------------------- names */

int
agent_outputs_name_has_secret(const civis_redact *r, const char *name)
{
	size_t n;
	char *masked;
	int has;

	if (r == NULL || civis_redact_count(r) == 0)
		return 0;
	n = strlen(name) + 1;
	/* "[REDACTED]" is at most 10 bytes per secret of at least 6: x2 + 16 holds it */
	masked = malloc(2 * n + 16);
	if (masked == NULL)
		return 1;
	has = civis_redact_string(r, name, masked, 2 * n + 16) != CIVIS_OK ||
	      strcmp(masked, name) != 0;
	free(masked);
	return has;
}

int
agent_outputs_civis_name(char *buf, size_t len, const char *rel, const char *suffix)
{
	const unsigned char *p = (const unsigned char *)rel;
	size_t used = 0, slen = suffix != NULL ? strlen(suffix) : 0;

	if (len == 0)
		return CIVIS_ETOOBIG;
	buf[0] = '\0';
	while (*p != '\0') {
		uint32_t cp;
		size_t n = utf8_seq(p, &cp);
		const char *src = (const char *)p;

		if (n == 0) {
			/* U+FFFD for a byte that is not UTF-8: names are JSON strings.
			 * '/' stays: the name is the path relative to the directory. */
			src = "\xef\xbf\xbd";
			if (len - used <= 3)
				goto toobig;
			memcpy(buf + used, src, 3);
			used += 3;
			p++;
			continue;
		}
		if (len - used <= n)
			goto toobig;
		memcpy(buf + used, src, n);
		used += n;
		p += n;
	}
	if (len - used <= slen)
		goto toobig;
	if (slen > 0)
		memcpy(buf + used, suffix, slen);
	used += slen;
	buf[used] = '\0';
	return CIVIS_OK;
toobig:
	buf[0] = '\0';
	return CIVIS_ETOOBIG;
}

int
agent_outputs_check_archive(char *buf, size_t len, const char *name,
                            char *err, size_t errlen)
{
	size_t n;
	const char *c;

	if (len > 0)
		buf[0] = '\0';
	if (errlen > 0)
		err[0] = '\0';
	if (name == NULL || name[0] == '\0') {
		snprintf(err, errlen, "an archive name is empty");
		return CIVIS_EINVAL;
	}
	if (name[0] == '/') {
		snprintf(err, errlen, "an archive must be a sub-directory of the output "
		         "directory, given relative to it");
		return CIVIS_EINVAL;
	}
	n = strlen(name);
	while (n > 0 && name[n - 1] == '/')
		n--;
	if (n >= len || n >= PATH_MAX) {
		snprintf(err, errlen, "an archive name is too long");
		return CIVIS_EINVAL;
	}
	memcpy(buf, name, n);
	buf[n] = '\0';
	/* every component: not empty, not ".", not ".." */
	for (c = buf; ; ) {
		const char *slash = strchr(c, '/');
		size_t clen = slash != NULL ? (size_t)(slash - c) : strlen(c);

		if (clen == 0 || (clen == 1 && c[0] == '.') ||
		    (clen == 2 && c[0] == '.' && c[1] == '.')) {
			char q[SHOW_MAX];

			agent_outputs_quote(q, sizeof(q), name);
			snprintf(err, errlen, "archive %s: empty, '.' and '..' path components "
			         "are not allowed", q);
			buf[0] = '\0';
			return CIVIS_EINVAL;
		}
		if (slash == NULL)
			break;
		c = slash + 1;
	}
	return CIVIS_OK;
}

int
agent_outputs_check_size(uint64_t size, char *err, size_t errlen)
{
	if (size > CIVIS_UPLOAD_MAX_SIZE) {
		snprintf(err, errlen, "%llu bytes is over the 5 TiB a storage object can hold",
		         (unsigned long long)size);
		return CIVIS_ETOOBIG;
	}
	if (errlen > 0)
		err[0] = '\0';
	return CIVIS_OK;
}

/* ---------------------------------------------------------------- rules */

int
agent_outputs_in_archive(const agent_out_rules *r, const char *rel, int is_dir)
{
	size_t i;

	if (rel[0] == '\0')
		return 0;
	if (r->archive_dirs) {
		if (strchr(rel, '/') != NULL)
			return 1;
		if (is_dir)
			return 2;
	}
	for (i = 0; i < r->narchives; i++) {
		const char *a = r->archives[i];
		size_t n = strlen(a);

		if (strcmp(rel, a) == 0) {
			if (is_dir)
				return 2;
		} else if (strncmp(rel, a, n) == 0 && rel[n] == '/') {
			return 1;
		}
	}
	return 0;
}

int
agent_outputs__join(char *buf, size_t len, const char *a, const char *b)
{
	int n;

	if (b[0] == '\0')
		n = snprintf(buf, len, "%s", a);
	else if (a[0] == '\0')
		n = snprintf(buf, len, "%s", b);
	else if (strcmp(a, "/") == 0)
		n = snprintf(buf, len, "/%s", b);
	else
		n = snprintf(buf, len, "%s/%s", a, b);
	return n >= 0 && (size_t)n < len ? 0 : -1;
}

void
agent_outputs_show(char *buf, size_t len, const agent_out_rules *r, const char *rel)
{
	char raw[2 * PATH_MAX];

	if (agent_outputs__join(raw, sizeof(raw), r->shown, rel) != 0) {
		/* cannot happen with rel < PATH_MAX; show the relative part */
		agent_outputs_quote(buf, len, rel);
		return;
	}
	agent_outputs_quote(buf, len, raw);
}

const char *
agent_outputs_type_text(mode_t m)
{
	if (S_ISFIFO(m))
		return "not a regular file (FIFO)";
	if (S_ISSOCK(m))
		return "not a regular file (socket)";
	if (S_ISCHR(m))
		return "not a regular file (character device)";
	if (S_ISBLK(m))
		return "not a regular file (block device)";
	return "not a regular file";
}

