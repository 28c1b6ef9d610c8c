/* linebuf.c: line splitting with CRLF, a per-piece cap and partial lines.
 *
 * Whole lines inside the fed data go to the callback straight from it
 * (memchr, no copy). Only the text of an unterminated line is copied into
 * buf; a trailing CR is remembered in cr_held rather than stored, so buf
 * holds line text only and never more than cap + 1 bytes. */
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/linebuf.h"

struct civis_linebuf {
	size_t cap;
	size_t len;     /* bytes of the current line held in buf */
	int cr_held;    /* the last feed ended with CR: text, unless an LF follows */
	int cont;       /* a piece of the current line was already handed over */
	char *buf;      /* cap + 1 bytes */
};

/* Length of the UTF-8 sequence a byte starts (2..4), or 1 for anything that
 * cannot start a multi-byte sequence. */
static size_t
lead_len(unsigned char c)
{
	if (c >= 0xC2 && c <= 0xDF)
		return 2;
	if (c >= 0xE0 && c <= 0xEF)
		return 3;
	if (c >= 0xF0 && c <= 0xF4)
		return 4;
	return 1;
}

/* Where to cut s (which has more than cap bytes) so that the piece holds at
 * most cap bytes and a UTF-8 character is not split: back to the lead byte
 * when s[cap] continues a sequence started at most 3 bytes before. */
static size_t
cut_point(const char *s, size_t cap)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t k;

	if ((u[cap] & 0xC0) != 0x80)
		return cap;
	for (k = 1; k <= 3; k++) {
		unsigned char c = u[cap - k];
		if ((c & 0xC0) == 0x80)
			continue;
		return lead_len(c) > k ? cap - k : cap;
	}
	return cap;
}

/* Bytes at the end of s[0..n) that are an incomplete UTF-8 sequence (0..3). */
static size_t
incomplete_tail(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t k;

	for (k = 1; k <= 3 && k <= n; k++) {
		unsigned char c = u[n - k];
		if ((c & 0xC0) == 0x80)
			continue;
		return lead_len(c) > k ? k : 0;
	}
	return 0;
}

static int
emit(civis_linebuf *lb, civis_line_fn fn, void *ud, const char *s, size_t n, int more)
{
	unsigned flags = (more ? CIVIS_LINE_CONTINUES : 0u) |
	                 (lb->cont ? CIVIS_LINE_CONTINUATION : 0u);

	lb->cont = more;
	return fn(ud, s, n, flags);
}

/* Append text of the current, still unterminated line; hand over a piece
 * whenever more than cap bytes are known. */
static int
push(civis_linebuf *lb, const char *s, size_t n, civis_line_fn fn, void *ud)
{
	int rc;

	/* Long text with nothing held: pieces straight from s. */
	while (lb->len == 0 && n > lb->cap) {
		size_t cut = cut_point(s, lb->cap);
		rc = emit(lb, fn, ud, s, cut, 1);
		if (rc != 0)
			return rc;
		s += cut;
		n -= cut;
	}
	while (n > 0) {
		size_t room = lb->cap + 1 - lb->len;
		size_t take = n < room ? n : room;

		memcpy(lb->buf + lb->len, s, take);
		lb->len += take;
		s += take;
		n -= take;
		if (lb->len > lb->cap) {
			size_t cut = cut_point(lb->buf, lb->cap);
			rc = emit(lb, fn, ud, lb->buf, cut, 1);
			memmove(lb->buf, lb->buf + cut, lb->len - cut);
			lb->len -= cut;
			if (rc != 0)
				return rc;
		}
	}
	return CIVIS_OK;
}

/* The current line ends with text s[0..n) (its CR already dropped). */
static int
end_line(civis_linebuf *lb, const char *s, size_t n, civis_line_fn fn, void *ud)
{
	int rc;

	if (lb->len == 0) {
		while (n > lb->cap) {
			size_t cut = cut_point(s, lb->cap);
			rc = emit(lb, fn, ud, s, cut, 1);
			if (rc != 0)
				return rc;
			s += cut;
			n -= cut;
		}
		return emit(lb, fn, ud, s, n, 0);
	}
	rc = push(lb, s, n, fn, ud);
	if (rc != 0)
		return rc;
	rc = emit(lb, fn, ud, lb->buf, lb->len, 0);
	lb->len = 0;
	return rc;
}

int
civis_linebuf_new(civis_linebuf **out, size_t cap)
{
	civis_linebuf *lb;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	if (cap == 0)
		cap = CIVIS_LINE_DEFAULT_CAP;
	if (cap < CIVIS_LINE_MIN_CAP || cap > CIVIS_LINE_MAX_CAP)
		return CIVIS_EINVAL;
	lb = calloc(1, sizeof(*lb));
	if (lb == NULL)
		return CIVIS_ENOMEM;
	lb->buf = malloc(cap + 1);
	if (lb->buf == NULL) {
		free(lb);
		return CIVIS_ENOMEM;
	}
	lb->cap = cap;
	*out = lb;
	return CIVIS_OK;
}

void
civis_linebuf_free(civis_linebuf *lb)
{
	if (lb == NULL)
		return;
	free(lb->buf);
	free(lb);
}

int
civis_linebuf_feed(civis_linebuf *lb, const char *data, size_t len,
                   civis_line_fn fn, void *ud)
{
	int rc;

	if (lb == NULL || fn == NULL || (data == NULL && len > 0))
		return CIVIS_EINVAL;
	if (len == 0)
		return CIVIS_OK;
	if (lb->cr_held) {
		lb->cr_held = 0;
		if (data[0] == '\n') {
			rc = end_line(lb, data, 0, fn, ud);
			data++;
			len--;
		} else {
			rc = push(lb, "\r", 1, fn, ud);
		}
		if (rc != 0)
			return rc;
	}
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t n, adv;

		if (nl == NULL)
			break;
		n = (size_t)(nl - data);
		adv = n + 1;
		if (n > 0 && data[n - 1] == '\r')
			n--;
		rc = end_line(lb, data, n, fn, ud);
		if (rc != 0)
			return rc;
		data += adv;
		len -= adv;
	}
	if (len > 0) {
		int cr = data[len - 1] == '\r';

		rc = push(lb, data, len - (size_t)cr, fn, ud);
		if (rc != 0)
			return rc;
		lb->cr_held = cr;
	}
	return CIVIS_OK;
}

int
civis_linebuf_flush(civis_linebuf *lb, civis_line_fn fn, void *ud)
{
	size_t hold, n;
	int rc;

	if (lb == NULL || fn == NULL)
		return CIVIS_EINVAL;
	/* With a CR held, the line's text is known to go on past any sequence. */
	hold = lb->cr_held ? 0 : incomplete_tail(lb->buf, lb->len);
	n = lb->len - hold;
	if (n == 0)
		return CIVIS_OK;
	rc = emit(lb, fn, ud, lb->buf, n, 1);
	memmove(lb->buf, lb->buf + n, hold);
	lb->len = hold;
	return rc;
}

int
civis_linebuf_finish(civis_linebuf *lb, civis_line_fn fn, void *ud)
{
	int rc;

	if (lb == NULL || fn == NULL)
		return CIVIS_EINVAL;
	if (lb->cr_held) {
		lb->cr_held = 0;
		rc = push(lb, "\r", 1, fn, ud);
		if (rc != 0) {
			lb->len = 0;
			lb->cont = 0;
			return rc;
		}
	}
	if (lb->len == 0 && !lb->cont)
		return CIVIS_OK;
	rc = emit(lb, fn, ud, lb->buf, lb->len, 0);
	lb->len = 0;
	return rc;
}

size_t
civis_linebuf_pending(const civis_linebuf *lb)
{
	return lb == NULL ? 0 : lb->len + (size_t)lb->cr_held;
}

size_t
civis_linebuf_cap(const civis_linebuf *lb)
{
	return lb == NULL ? 0 : lb->cap;
}
