/* upload_form.c: up to the threshold, one multipart/form-data POST to the
 * presigned uploadUrl: every uploadFields entry in the answer's order, then
 * the file, last, as `file`, with an exact Content-Length. The file is
 * hashed as the body is read (in order; a retry starts it over). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl.h"
#include "civis/civis.h"
#include "upload_int.h"

/* Attach the form to a try: every uploadFields entry in the answer's order,
 * then the file, last, as `file` with its exact size (so curl sends a
 * Content-Length and no chunked encoding). */
#define finish civis__upload_finish
#define fail   civis__upload_fail

#ifndef CIVIS_UNITTEST
static
#endif
int civis__upload_form_body(void *ud, CURL *easy);

void
civis__upload_form_dispose(civis_upload *u)
{
	if (u->mime != NULL) {
		curl_mime_free(u->mime);
		u->mime = NULL;
	}
}

#ifndef CIVIS_UNITTEST
static
#endif
int
civis__upload_form_body(void *ud, CURL *easy)
{
	civis_upload *u = ud;
	curl_mime *mime;
	curl_mimepart *part;
	size_t i;

	civis__upload_form_dispose(u);
	u->form.u = u;
	u->form.off = 0;
	u->form.len = u->size;
	u->form.pos = 0;
	u->form.whole = 1;
	civis__upload_sha_reset(u);
	mime = curl_mime_init(easy);
	if (mime == NULL)
		return CIVIS_ENOMEM;
	for (i = 0; i < u->fp.nfields; i++) {
		part = curl_mime_addpart(mime);
		if (part == NULL || curl_mime_name(part, u->fp.field_names[i]) != CURLE_OK ||
		    curl_mime_data(part, u->fp.field_values[i], CURL_ZERO_TERMINATED) != CURLE_OK)
			goto oom;
	}
	part = curl_mime_addpart(mime);
	if (part == NULL || curl_mime_name(part, "file") != CURLE_OK ||
	    curl_mime_filename(part, u->filename) != CURLE_OK ||
	    curl_mime_type(part, "application/octet-stream") != CURLE_OK ||
	    curl_mime_data_cb(part, (curl_off_t)u->size, civis__upload_curl_read,
	                      civis__upload_curl_seek, NULL, &u->form) !=
	        CURLE_OK)
		goto oom;
	if (curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime) != CURLE_OK)
		goto oom;
	u->mime = mime;
	return CIVIS_OK;
oom:
	curl_mime_free(mime);
	return CIVIS_ENOMEM;
}

static void
on_form_done(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;
	char text[CIVIS__UPLOAD_ERR_MAX / 2];
	int rc;

	u->form_req = NULL;
	civis__upload_form_dispose(u);
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
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = u->fp.upload_url;
	spec.what = "file upload";
	spec.body_fn = civis__upload_form_body;
	spec.body_ud = u;
	spec.max_response = CIVIS__UPLOAD_MAX_RESPONSE;
	spec.done = on_form_done;
	spec.done_ud = u;
	rc = civis_http_start(u->http, &spec, &u->form_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot start the upload: %s", u->name, civis_strerror(rc));
}

