/* outputvars.c: the CIVIS_OUTPUT file into one JSON object text (see
 * outputvars.h for the format and its rules). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "civis/civis.h"
#include "outputvars.h"

/* Values are kept serialized; the total (the object's exact length) may pass
 * the API's cap while lines still override values, but not by this much. */
#define WORK_MAX   (8 * (size_t)AGENT_OUTPUTVARS_MAX_JSON)
#define SHOW_MAX   64           /* a key or delimiter quoted in a message */

struct entry {
	char *key;                  /* raw bytes, NUL-terminated */
	size_t klen;
	char *val;                  /* serialized JSON; NULL: over the cap (vlen says how big) */
	size_t vlen;
	size_t size;                /* this entry's share of the object: "key":value */
};

struct table {
	struct entry *e;
	size_t n, cap;
	size_t *idx;                /* open addressing into e; SIZE_MAX is empty */
	size_t icap;                /* a power of two, at least 2 * n */
	size_t total;               /* the sum of the entries' sizes */
};

/* ---------------------------------------------------------------- JSON text */

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when it is not
 * one (overlong forms, surrogates and > U+10FFFF are invalid). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t c = s[0], min;
	size_t len, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2; c &= 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3; c &= 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4; c &= 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return len;
}

static int
utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k;

	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8_seq(p + i, n - i);
		if (k == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* The length of s[0..n) as the inside of a JSON string. */
static size_t
esc_len(const char *s, size_t n)
{
	size_t i, len = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
			len += 2;
		else if (c < 0x20)
			len += 6;
		else
			len++;
	}
	return len;
}

/* Write s[0..n) quoted as a JSON string at dst (2 + esc_len bytes); the end. */
static char *
esc_put(char *dst, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	*dst++ = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e = 0;

		switch (c) {
		case '"': e = '"'; break;
		case '\\': e = '\\'; break;
		case '\b': e = 'b'; break;
		case '\f': e = 'f'; break;
		case '\n': e = 'n'; break;
		case '\r': e = 'r'; break;
		case '\t': e = 't'; break;
		default: break;
		}
		if (e) {
			*dst++ = '\\';
			*dst++ = e;
		} else if (c < 0x20) {
			dst[0] = '\\';
			dst[1] = 'u';
			dst[2] = '0';
			dst[3] = '0';
			dst[4] = hex[c >> 4];
			dst[5] = hex[c & 15];
			dst += 6;
		} else {
			*dst++ = (char)c;
		}
	}
	*dst++ = '"';
	return dst;
}

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Whether s[0..n) is a number by JSON's own grammar (cJSON takes more). */
static int
json_number(const char *s, size_t n)
{
	size_t i = 0;

	if (i < n && s[i] == '-')
		i++;
	if (i < n && s[i] == '0') {
		i++;
	} else if (i < n && s[i] >= '1' && s[i] <= '9') {
		while (i < n && is_digit(s[i]))
			i++;
	} else {
		return 0;
	}
	if (i < n && s[i] == '.') {
		if (++i >= n || !is_digit(s[i]))
			return 0;
		while (i < n && is_digit(s[i]))
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= n || !is_digit(s[i]))
			return 0;
		while (i < n && is_digit(s[i]))
			i++;
	}
	return i == n;
}

static int
is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static char *
dup_n(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* The JSON text of one value (see outputvars.h): *out malloc'd, or NULL with
 * *outlen set when it is over the API's cap anyway. */
static int
value_json(const char *v, size_t n, char **out, size_t *outlen)
{
	const char *t = v, *end = NULL;
	size_t tn = n, len;
	cJSON *item = NULL;
	char *p;

	*out = NULL;
	while (tn > 0 && is_json_space(t[0])) {
		t++;
		tn--;
	}
	while (tn > 0 && is_json_space(t[tn - 1]))
		tn--;
	if (tn > 0 && tn <= AGENT_OUTPUTVARS_MAX_JSON)
		item = cJSON_ParseWithLengthOpts(t, tn, &end, 0);
	if (item != NULL && end == t + tn) {
		if (!cJSON_IsNumber(item)) {
			char *printed = cJSON_PrintUnformatted(item);

			cJSON_Delete(item);
			if (printed == NULL)
				return CIVIS_ENOMEM;
			*outlen = strlen(printed);
			*out = dup_n(printed, *outlen);
			cJSON_free(printed);
			return *out != NULL ? CIVIS_OK : CIVIS_ENOMEM;
		}
		if (json_number(t, tn)) {
			cJSON_Delete(item);
			*outlen = tn;
			*out = dup_n(t, tn);
			return *out != NULL ? CIVIS_OK : CIVIS_ENOMEM;
		}
	}
	cJSON_Delete(item);
	len = esc_len(v, n) + 2;
	*outlen = len;
	if (len > AGENT_OUTPUTVARS_MAX_JSON)
		return CIVIS_OK;
	p = malloc(len + 1);
	if (p == NULL)
		return CIVIS_ENOMEM;
	*esc_put(p, v, n) = '\0';
	*out = p;
	return CIVIS_OK;
}

/* ---------------------------------------------------------------- the keys */

static size_t
hash_key(const char *k, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
	return (size_t)h;
}

/* The slot of key in t->idx: where it is, or the empty slot where it goes. */
static size_t
slot_of(const struct table *t, const char *k, size_t n)
{
	size_t i = hash_key(k, n) & (t->icap - 1);

	while (t->idx[i] != SIZE_MAX) {
		const struct entry *e = &t->e[t->idx[i]];

		if (e->klen == n && memcmp(e->key, k, n) == 0)
			break;
		i = (i + 1) & (t->icap - 1);
	}
	return i;
}

static int
table_grow(struct table *t)
{
	size_t i, ncap;

	if (t->n == t->cap) {
		struct entry *e;

		ncap = t->cap ? 2 * t->cap : 16;
		e = realloc(t->e, ncap * sizeof(*e));
		if (e == NULL)
			return CIVIS_ENOMEM;
		t->e = e;
		t->cap = ncap;
	}
	if (2 * (t->n + 1) > t->icap) {
		size_t *idx;

		ncap = t->icap ? 2 * t->icap : 32;
		idx = malloc(ncap * sizeof(*idx));
		if (idx == NULL)
			return CIVIS_ENOMEM;
		free(t->idx);
		t->idx = idx;
		t->icap = ncap;
		for (i = 0; i < ncap; i++)
			idx[i] = SIZE_MAX;
		for (i = 0; i < t->n; i++)
			idx[slot_of(t, t->e[i].key, t->e[i].klen)] = i;
	}
	return CIVIS_OK;
}

/* Set key to the serialized value (val is taken over, also on failure). */
static int
table_set(struct table *t, const char *k, size_t kn, char *val, size_t vlen)
{
	struct entry *e;
	size_t s, size;
	int rc;

	rc = t->icap ? CIVIS_OK : table_grow(t);
	if (rc != CIVIS_OK)
		goto fail;
	s = slot_of(t, k, kn);
	if (t->idx[s] == SIZE_MAX) {
		rc = table_grow(t);
		if (rc != CIVIS_OK)
			goto fail;
		s = slot_of(t, k, kn);
		e = &t->e[t->n];
		e->key = dup_n(k, kn);
		if (e->key == NULL) {
			rc = CIVIS_ENOMEM;
			goto fail;
		}
		e->klen = kn;
		e->val = NULL;
		e->size = 0;
		t->idx[s] = t->n++;
	}
	e = &t->e[t->idx[s]];
	size = esc_len(k, kn) + 3 + vlen;
	t->total = t->total - e->size + size;
	free(e->val);
	e->val = val;
	e->vlen = vlen;
	e->size = size;
	return t->total > WORK_MAX ? CIVIS_ETOOBIG : CIVIS_OK;
fail:
	free(val);
	return rc;
}

static void
table_free(struct table *t)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		free(t->e[i].key);
		free(t->e[i].val);
	}
	free(t->e);
	free(t->idx);
	memset(t, 0, sizeof(*t));
}

/* The object's text: "{" "key":value "," ... "}", in first-set order. */
static int
table_json(const struct table *t, agent_outputvars *out)
{
	size_t i, len;
	char *p, *w;

	if (t->n == 0)
		return CIVIS_OK;
	len = 2 + t->total + (t->n - 1);
	if (len > AGENT_OUTPUTVARS_MAX_JSON)
		return CIVIS_ETOOBIG;
	for (i = 0; i < t->n; i++)
		if (t->e[i].val == NULL)
			return CIVIS_ETOOBIG;
	p = malloc(len + 1);
	if (p == NULL)
		return CIVIS_ENOMEM;
	w = p;
	*w++ = '{';
	for (i = 0; i < t->n; i++) {
		if (i > 0)
			*w++ = ',';
		w = esc_put(w, t->e[i].key, t->e[i].klen);
		*w++ = ':';
		memcpy(w, t->e[i].val, t->e[i].vlen);
		w += t->e[i].vlen;
	}
	*w++ = '}';
	*w = '\0';
	out->json = p;
	out->len = (size_t)(w - p);
	out->nkeys = t->n;
	return CIVIS_OK;
}

/* ---------------------------------------------------------------- lines */

struct parser {
	const char *text, *end;
	const char *pos;            /* the next line's start */
	size_t lineno;              /* of the last line taken */
	struct table t;
	agent_outputvars *out;
	agent_outputvars_note_fn note;
	void *ud;
	char *err;
	size_t errlen;
};

/* The next line [*s, *e) without its "\n" or "\r\n"; 0 at the end. */
static int
next_line(struct parser *p, const char **s, const char **e)
{
	const char *nl;

	if (p->pos >= p->end)
		return 0;
	*s = p->pos;
	nl = memchr(p->pos, '\n', (size_t)(p->end - p->pos));
	*e = nl != NULL ? nl : p->end;
	p->pos = nl != NULL ? nl + 1 : p->end;
	if (*e > *s && (*e)[-1] == '\r')
		(*e)--;
	p->lineno++;
	return 1;
}

/* A key or delimiter for a message: printable ASCII, else '?', cut short. */
static void
show(char *dst, size_t cap, const char *s, size_t n)
{
	size_t i, m = n < SHOW_MAX ? n : SHOW_MAX;

	for (i = 0; i < m && i + 4 < cap; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (m < n && i + 4 <= cap) {
		memcpy(dst + i, "...", 3);
		i += 3;
	}
	dst[i] = '\0';
}

static void
bad(struct parser *p, size_t line, const char *what)
{
	char msg[512];

	(void)snprintf(msg, sizeof(msg), "CIVIS_OUTPUT line %zu: %s", line, what);
	if (p->out->nbad++ == 0 && p->errlen > 0)
		(void)snprintf(p->err, p->errlen, "%s", msg);
	if (p->note != NULL)
		p->note(p->ud, msg);
}

/* Why line [s, e) cannot be part of a value, or NULL when it can. */
static const char *
line_fault(const char *s, const char *e)
{
	if (memchr(s, '\0', (size_t)(e - s)) != NULL)
		return "holds a NUL byte";
	if (!utf8_valid(s, (size_t)(e - s)))
		return "is not UTF-8 (JSON carries only UTF-8)";
	return NULL;
}

static int
set_value(struct parser *p, const char *k, size_t kn, const char *v, size_t vn)
{
	char *val;
	size_t vlen;
	int rc = value_json(v, vn, &val, &vlen);

	if (rc != CIVIS_OK)
		return rc;
	return table_set(&p->t, k, kn, val, vlen);
}

/* KEY<<DELIM: its lines up to DELIM, joined with '\n'. */
static int
heredoc(struct parser *p, const char *k, size_t kn, const char *d, size_t dn)
{
	size_t first = p->lineno, cap = 0, len = 0, faulty = 0, nlines = 0;
	const char *s, *e, *f;
	char *buf = NULL, msg[320], ks[SHOW_MAX + 4], ds[SHOW_MAX + 4];
	int rc = CIVIS_OK;

	show(ks, sizeof(ks), k, kn);
	show(ds, sizeof(ds), d, dn);
	for (;;) {
		if (!next_line(p, &s, &e)) {
			(void)snprintf(msg, sizeof(msg), "%s<<%s: no line %s closes the value before "
			               "the end of the file; the key is not set", ks, ds, ds);
			bad(p, first, msg);
			goto out;
		}
		if ((size_t)(e - s) == dn && memcmp(s, d, dn) == 0)
			break;
		f = line_fault(s, e);
		if (f != NULL && faulty++ == 0) {
			(void)snprintf(msg, sizeof(msg), "%s, in the value of %s (from line %zu); the key "
			               "is not set", f, ks, first);
			bad(p, p->lineno, msg);
		}
		if (buf == NULL || len + (size_t)(e - s) + 1 > cap) {
			size_t ncap = 2 * (len + (size_t)(e - s) + 1);
			char *nb = realloc(buf, ncap);

			if (nb == NULL) {
				rc = CIVIS_ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		if (nlines++ > 0)
			buf[len++] = '\n';
		memcpy(buf + len, s, (size_t)(e - s));
		len += (size_t)(e - s);
	}
	if (faulty == 0)
		rc = set_value(p, k, kn, buf != NULL ? buf : "", len);
out:
	free(buf);
	return rc;
}

/* One line that is neither empty nor inside a heredoc. */
static int
one_line(struct parser *p, const char *s, const char *e)
{
	const char *eq, *hd, *f;
	size_t i, n = (size_t)(e - s);

	for (i = 0; i < n && (s[i] == ' ' || s[i] == '\t'); i++)
		;
	if (i == n)
		return CIVIS_OK;                          /* blank */
	f = line_fault(s, e);
	if (f != NULL) {
		char msg[128];

		(void)snprintf(msg, sizeof(msg), "%s; the line is skipped", f);
		bad(p, p->lineno, msg);
		return CIVIS_OK;
	}
	eq = memchr(s, '=', n);
	hd = NULL;
	for (i = 0; i + 1 < n; i++) {
		if (s[i] == '<' && s[i + 1] == '<') {
			hd = s + i;
			break;
		}
	}
	if (eq != NULL && (hd == NULL || eq < hd)) {
		if (eq == s) {
			bad(p, p->lineno, "KEY=VALUE with an empty key; the line is skipped");
			return CIVIS_OK;
		}
		return set_value(p, s, (size_t)(eq - s), eq + 1, (size_t)(e - eq - 1));
	}
	if (hd != NULL) {
		if (hd == s || hd + 2 == e) {
			bad(p, p->lineno, "KEY<<DELIMITER with an empty key or delimiter; the line is skipped");
			return CIVIS_OK;
		}
		return heredoc(p, s, (size_t)(hd - s), hd + 2, (size_t)(e - hd - 2));
	}
	bad(p, p->lineno, "neither KEY=VALUE nor KEY<<DELIMITER; the line is skipped");
	return CIVIS_OK;
}

int
agent_outputvars_parse(agent_outputvars *out, const char *text, size_t len,
                       agent_outputvars_note_fn note, void *ud, char *err, size_t errlen)
{
	struct parser p;
	const char *s, *e;
	int rc = CIVIS_OK;

	memset(out, 0, sizeof(*out));
	if (errlen > 0)
		err[0] = '\0';
	memset(&p, 0, sizeof(p));
	p.text = p.pos = text;
	p.end = text + len;
	p.out = out;
	p.note = note;
	p.ud = ud;
	p.err = err;
	p.errlen = errlen;
	while (rc == CIVIS_OK && next_line(&p, &s, &e))
		rc = one_line(&p, s, e);
	if (rc == CIVIS_OK)
		rc = table_json(&p.t, out);
	if (rc == CIVIS_ETOOBIG && errlen > 0)
		(void)snprintf(err, errlen, "CIVIS_OUTPUT: the values make a JSON object of more than "
		               "%d bytes, the API's limit for a JSON value; write less, or upload big "
		               "results as files", AGENT_OUTPUTVARS_MAX_JSON);
	else if (rc == CIVIS_ENOMEM && errlen > 0)
		(void)snprintf(err, errlen, "CIVIS_OUTPUT: out of memory");
	table_free(&p.t);
	if (rc != CIVIS_OK) {
		size_t nbad = out->nbad;

		agent_outputvars_dispose(out);
		out->nbad = nbad;
		return rc;
	}
	return out->nbad > 0 ? CIVIS_EINVAL : CIVIS_OK;
}

int
agent_outputvars_read(agent_outputvars *out, const char *path,
                      agent_outputvars_note_fn note, void *ud, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		int e = errno;

		(void)snprintf(err, errlen, "CIVIS_OUTPUT %s: %s", path, strerror(e));
		return e == ENOENT ? CIVIS_ENOTFOUND : e == ELOOP ? CIVIS_EINVAL : CIVIS_ESYS;
	}
	if (fstat(fd, &st) != 0) {
		rc = CIVIS_ESYS;
		(void)snprintf(err, errlen, "CIVIS_OUTPUT %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = CIVIS_EINVAL;
		(void)snprintf(err, errlen, "CIVIS_OUTPUT %s: not a regular file; nothing read", path);
		goto out;
	}
	buf = malloc(AGENT_OUTPUTVARS_MAX_FILE + 1);
	if (buf == NULL) {
		rc = CIVIS_ENOMEM;
		(void)snprintf(err, errlen, "CIVIS_OUTPUT: out of memory");
		goto out;
	}
	while (len <= AGENT_OUTPUTVARS_MAX_FILE) {
		ssize_t r = read(fd, buf + len, AGENT_OUTPUTVARS_MAX_FILE + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = CIVIS_ESYS;
			(void)snprintf(err, errlen, "CIVIS_OUTPUT %s: read: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > AGENT_OUTPUTVARS_MAX_FILE) {
		rc = CIVIS_ETOOBIG;
		(void)snprintf(err, errlen, "CIVIS_OUTPUT %s: over %u bytes; a JSON value holds at most "
		               "%d: write less, or upload big results as files", path,
		               AGENT_OUTPUTVARS_MAX_FILE, AGENT_OUTPUTVARS_MAX_JSON);
		goto out;
	}
	rc = agent_outputvars_parse(out, buf, len, note, ud, err, errlen);
out:
	free(buf);
	(void)close(fd);
	return rc;
}

void
agent_outputvars_dispose(agent_outputvars *v)
{
	free(v->json);
	memset(v, 0, sizeof(*v));
}
