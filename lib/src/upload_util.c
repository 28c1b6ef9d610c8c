/* upload_util.c: the upload's pure helpers: S3 error texts, sizes for
 * messages, and the check that a file did not change under an upload
 * (positional reads and the staging temporary file are lib/src/fileio.c's). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "upload_int.h"

/* Copy the text between <tag> and </tag> (first occurrence) with the five
 * XML entities decoded and control characters as spaces. 1 when found. */
static int
xml_text(const char *body, size_t len, const char *tag, char *buf, size_t buflen)
{
	char open[32], close[32];
	const char *p, *end, *q;
	size_t o = 0;
	int n1, n2;

	buf[0] = '\0';
	n1 = snprintf(open, sizeof(open), "<%s>", tag);
	n2 = snprintf(close, sizeof(close), "</%s>", tag);
	if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(open) || (size_t)n2 >= sizeof(close))
		return 0;
	p = memmem(body, len, open, (size_t)n1);
	if (p == NULL)
		return 0;
	p += n1;
	end = memmem(p, len - (size_t)(p - body), close, (size_t)n2);
	if (end == NULL)
		return 0;
	for (q = p; q < end && o + 1 < buflen; q++) {
		static const struct { const char *ent; char c; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' }
		};
		char c = *q;
		size_t i;

		if (c == '&') {
			for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
				size_t el = strlen(ents[i].ent);
				if ((size_t)(end - q) >= el && memcmp(q, ents[i].ent, el) == 0) {
					c = ents[i].c;
					q += el - 1;
					break;
				}
			}
		}
		if ((unsigned char)c < 0x20 || c == 0x7f)
			c = ' ';
		buf[o++] = c;
	}
	buf[o] = '\0';
	return 1;
}

/* "400 EntityTooSmall: Your proposed upload..." from an S3 error answer, or
 * the best one line of any other body. */
void
civis__upload_storage_error(long http_code, const char *body, size_t len,
                            char *buf, size_t buflen)
{
	char code[64], msg[256];
	int have_code, have_msg;

	if (buflen == 0)
		return;
	have_code = body != NULL && xml_text(body, len, "Code", code, sizeof(code));
	have_msg = body != NULL && xml_text(body, len, "Message", msg, sizeof(msg));
	if (have_code || have_msg) {
		(void)snprintf(buf, buflen, "%ld%s%s%s%s", http_code,
		               have_code ? " " : "", have_code ? code : "",
		               have_msg ? ": " : "", have_msg ? msg : "");
		return;
	}
	msg[0] = '\0';
	if (body != NULL && len > 0)
		civis_parse_error_text(body, len, msg, sizeof(msg));
	(void)snprintf(buf, buflen, "%ld%s%s", http_code, msg[0] ? ": " : "", msg);
}


void
civis__upload_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	if (vsnprintf(err, errlen, fmt, ap) < 0)
		err[0] = '\0';
	va_end(ap);
}

#define seterr civis__upload_seterr

void
civis__upload_human_size(uint64_t n, char *buf, size_t len)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)n;
	unsigned u = 0;

	if (n < 1024) {
		(void)snprintf(buf, len, "%llu B", (unsigned long long)n);
		return;
	}
	while (v >= 1024.0 && u < 6) {
		v /= 1024.0;
		u++;
	}
	(void)snprintf(buf, len, "%.1f %s", v, units[u]);
}

int
civis__upload_check_unchanged(const struct stat *before, int fd, const char *label,
                              char *err, size_t errlen)
{
	struct stat now;

	if (fstat(fd, &now) != 0) {
		seterr(err, errlen, "%s: %s", label, strerror(errno));
		return CIVIS_ESYS;
	}
	if (now.st_size != before->st_size) {
		seterr(err, errlen, "%s changed during upload (size %lld -> %lld)", label,
		       (long long)before->st_size, (long long)now.st_size);
		return CIVIS_EINVAL;
	}
	if (now.st_mtim.tv_sec != before->st_mtim.tv_sec ||
	    now.st_mtim.tv_nsec != before->st_mtim.tv_nsec) {
		seterr(err, errlen, "%s changed during upload (modified, size %lld)", label,
		       (long long)now.st_size);
		return CIVIS_EINVAL;
	}
	return CIVIS_OK;
}

/* Message for a read that came up short: the file shrank under us. */
int
civis__upload_short_read(const struct stat *before, int fd, const char *label, char *err, size_t errlen)
{
	int rc = civis__upload_check_unchanged(before, fd, label, err, errlen);

	if (rc == CIVIS_OK) {
		seterr(err, errlen, "%s changed during upload (read came up short of %lld bytes)",
		       label, (long long)before->st_size);
		rc = CIVIS_EINVAL;
	}
	return rc;
}


size_t
civis__upload_send_buffer(uint64_t len, unsigned inflight)
{
	size_t b;

	if (len < 4 * (64u << 10))
		return 0;
	b = CIVIS__UPLOAD_SEND_BUDGET / (inflight ? inflight : 1);
	if (b < CIVIS__UPLOAD_SEND_MIN)
		b = CIVIS__UPLOAD_SEND_MIN;
	if (b > CIVIS_HTTP_SEND_BUFFER_MAX)
		b = CIVIS_HTTP_SEND_BUFFER_MAX;
	if ((uint64_t)b > len)
		b = (size_t)len;
	b &= ~(size_t)((64u << 10) - 1);
	return b < (64u << 10) ? 0 : b;
}
