/* upload_form.c: up to the threshold, one multipart/form-data POST to the
 * presigned uploadUrl, built here and streamed through the http module's
 * body_read with its exact size: every uploadFields entry in the answer's
 * order, then the file, last, as `file` (S3's POST Object ignores or
 * rejects fields after the file). The file is hashed as the body is read
 * (in order; a retry reads from 0 again). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "civis/civis.h"
#include "upload_int.h"

#define finish civis__upload_finish
#define fail   civis__upload_fail

#define FORM_HEAD_MAX (1u << 20)  /* the fields and the file's part header */

typedef struct form_buf {
	char *p;
	size_t len, cap;
	int oom;
} form_buf;

static void
put(form_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 1024;
		char *np;

		while (ncap < b->len + n + 1)
			ncap *= 2;
		if (ncap > FORM_HEAD_MAX || (np = realloc(b->p, ncap)) == NULL) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
puts_(form_buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* A name or filename inside a quoted header parameter: '"', CR and LF
 * percent-encoded, as browsers and libcurl do (RFC 7578, WHATWG). */
static void
put_quoted(form_buf *b, const char *s)
{
	put(b, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			puts_(b, "%22");
		else if (*s == '\r')
			puts_(b, "%0D");
		else if (*s == '\n')
			puts_(b, "%0A");
		else
			put(b, s, 1);
	}
	put(b, "\"", 1);
}

/* A boundary of 24 dashes and 32 random hex digits, as libcurl makes them:
 * the chance that a file holds it is nil. */
static int
make_boundary(char *buf, size_t len)
{
	unsigned char rnd[16];
	size_t i, got = 0;

	while (got < sizeof(rnd)) {
		ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return CIVIS_ESYS;
		}
		got += (size_t)r;
	}
	if (len < 24 + 2 * sizeof(rnd) + 1)
		return CIVIS_EINVAL;
	memset(buf, '-', 24);
	for (i = 0; i < sizeof(rnd); i++)
		(void)snprintf(buf + 24 + 2 * i, 3, "%02x", rnd[i]);
	return CIVIS_OK;
}

void
civis__upload_form_dispose(civis_upload *u)
{
	free(u->form_head);
	u->form_head = NULL;
	u->form_head_len = 0;
}

/* The fields and the file's part header into u->form_head, the closing
 * boundary into u->form_tail, the Content-Type into u->form_type. */
#ifndef CIVIS_UNITTEST
static
#endif
int civis__upload_form_build(civis_upload *u);

#ifndef CIVIS_UNITTEST
static
#endif
int
civis__upload_form_build(civis_upload *u)
{
	char boundary[64];
	form_buf b = { NULL, 0, 0, 0 };
	size_t i;
	int n, rc;

	civis__upload_form_dispose(u);
	rc = make_boundary(boundary, sizeof(boundary));
	if (rc != CIVIS_OK)
		return rc;
	for (i = 0; i < u->fp.nfields; i++) {
		puts_(&b, "--");
		puts_(&b, boundary);
		puts_(&b, "\r\nContent-Disposition: form-data; name=");
		put_quoted(&b, u->fp.field_names[i]);
		puts_(&b, "\r\n\r\n");
		puts_(&b, u->fp.field_values[i]);
		puts_(&b, "\r\n");
	}
	puts_(&b, "--");
	puts_(&b, boundary);
	puts_(&b, "\r\nContent-Disposition: form-data; name=\"file\"; filename=");
	put_quoted(&b, u->filename);
	puts_(&b, "\r\nContent-Type: application/octet-stream\r\n\r\n");
	if (b.oom) {
		free(b.p);
		return CIVIS_ENOMEM;
	}
	n = snprintf(u->form_tail, sizeof(u->form_tail), "\r\n--%s--\r\n", boundary);
	if (n < 0 || (size_t)n >= sizeof(u->form_tail) ||
	    snprintf(u->form_type, sizeof(u->form_type), "multipart/form-data; boundary=%s",
	             boundary) >= (int)sizeof(u->form_type)) {
		free(b.p);
		return CIVIS_EINVAL;
	}
	u->form_head = b.p;
	u->form_head_len = b.len;
	u->form_tail_len = (size_t)n;
	u->form.u = u;
	u->form.off = 0;
	u->form.len = u->size;
	u->form.pos = 0;
	u->form.whole = 1;
	civis__upload_sha_reset(u);
	return CIVIS_OK;
}

/* body_read for the form: head, then the file, then the tail. */
#ifndef CIVIS_UNITTEST
static
#endif
int civis__upload_form_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got);

#ifndef CIVIS_UNITTEST
static
#endif
int
civis__upload_form_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	civis_upload *u = ud;
	uint64_t head = u->form_head_len, file_end = head + u->size;

	*got = 0;
	if (off < head) {
		size_t k = head - off < n ? (size_t)(head - off) : n;
		memcpy(buf, u->form_head + off, k);
		*got = k;
		return CIVIS_OK;
	}
	if (off < file_end)
		return civis__upload_body_read(&u->form, off - head, buf, n, got);
	if (off < file_end + u->form_tail_len) {
		size_t t = (size_t)(off - file_end), k = u->form_tail_len - t < n
		                                         ? u->form_tail_len - t : n;
		memcpy(buf, u->form_tail + t, k);
		*got = k;
	}
	return CIVIS_OK;
}

static void
on_form_done(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;
	char text[CIVIS__UPLOAD_ERR_MAX / 2];
	int rc;

	u->form_req = NULL;
	if (u->finishing || civis__upload_fail_read(u))
		return;
	if (res->status != CIVIS_OK) {
		if (res->http_code > 0) {
			civis__upload_storage_error(res->http_code, res->body, res->body_len,
			                            text, sizeof(text));
			fail(u, res->status, "upload of %s: storage answered %s", u->name, text);
		} else {
			fail(u, res->status, "upload of %s: %s", u->name,
			     res->error != NULL && res->error[0] ? res->error
			                                         : civis_strerror(res->status));
		}
		return;
	}
	rc = civis__upload_check_file(u);
	if (rc != CIVIS_OK) {
		finish(u, rc);
		return;
	}
	finish(u, CIVIS_OK);
}

void
civis__upload_begin_form(civis_upload *u)
{
	civis_http_spec spec;
	int rc;

	u->state = CIVIS__ST_SENDING;
	civis__upload_progress_begin(u);
	rc = civis__upload_form_build(u);
	if (rc != CIVIS_OK) {
		fail(u, rc, "upload of %s: cannot build the form: %s", u->name, civis_strerror(rc));
		return;
	}
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = u->fp.upload_url;
	spec.what = "file upload";
	spec.content_type = u->form_type;
	spec.body_size = u->form_head_len + u->size + u->form_tail_len;
	spec.body_read = civis__upload_form_read;
	spec.body_ud = u;
	spec.send_buffer = civis__upload_send_buffer(spec.body_size, 1);
	spec.max_response = CIVIS__UPLOAD_MAX_RESPONSE;
	spec.done = on_form_done;
	spec.done_ud = u;
	rc = civis_http_start(u->http, &spec, &u->form_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot start the upload: %s", u->name, civis_strerror(rc));
}
