/* client_parse.c: bounded parsers of the Civis API answers an agent reads.
 *
 * Every answer is untrusted: its size is capped before parsing, its nesting
 * is checked by a cheap bracket scan before cJSON sees it, every string and
 * array is capped, and ids must be exact positive integers. Messages never
 * quote a URL (a presigned URL is a credential). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cJSON.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "http_int.h"

#define MAX_NESTING       64
#define MAX_ERROR_JSON    (64u << 10)
#define MAX_URL_LEN       (16u << 10)
#define MAX_FIELD_NAME    1024u
#define MAX_FIELD_VALUE   (64u << 10)
#define MAX_FIELDS        64u
#define MAX_UPLOAD_URLS   10000u
/* 2^53: above it a JSON number (a double in cJSON) is no longer exact */
#define MAX_EXACT_ID      9007199254740992.0

static void
errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* 0 when some bracket outside a string nests deeper than max. */
static int
nesting_ok(const char *s, size_t n, unsigned max)
{
	unsigned depth = 0;
	int in_str = 0, esc = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (in_str) {
			if (esc)
				esc = 0;
			else if (c == '\\')
				esc = 1;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return 0;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return 1;
}

/* Parse one JSON object from body[0..len), capped; NULL with err set. */
static cJSON *
parse_object(const char *body, size_t len, size_t cap, char *err, size_t errlen)
{
	cJSON *root;
	const char *end = NULL;
	size_t i;

	if (body == NULL || len == 0) {
		errf(err, errlen, "answer is empty");
		return NULL;
	}
	if (len > cap) {
		errf(err, errlen, "answer is larger than %zu bytes", cap);
		return NULL;
	}
	if (!nesting_ok(body, len, MAX_NESTING)) {
		errf(err, errlen, "answer nests deeper than %u levels", MAX_NESTING);
		return NULL;
	}
	root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (root == NULL) {
		errf(err, errlen, "answer is not valid JSON");
		return NULL;
	}
	for (i = (size_t)(end - body); i < len; i++) {
		if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' &&
		    body[i] != '\n' && body[i] != '\0') {
			errf(err, errlen, "answer has data after the JSON value");
			cJSON_Delete(root);
			return NULL;
		}
	}
	if (!cJSON_IsObject(root)) {
		errf(err, errlen, "answer is not a JSON object");
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

static int
get_id(const cJSON *obj, int64_t *out, char *err, size_t errlen)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
	double d;

	if (id == NULL || cJSON_IsNull(id)) {
		errf(err, errlen, "answer has no id");
		return CIVIS_EPROTO;
	}
	d = id->valuedouble;
	if (!cJSON_IsNumber(id) || !(d >= 1.0 && d <= MAX_EXACT_ID) ||
	    (double)(int64_t)d != d) {
		errf(err, errlen, "id is not a positive integer");
		return CIVIS_EPROTO;
	}
	*out = (int64_t)d;
	return CIVIS_OK;
}

static int
is_http_url(const char *s)
{
	return strncasecmp(s, "https://", 8) == 0 || strncasecmp(s, "http://", 7) == 0;
}

/* A presigned URL: a string, http(s), capped, no control characters. */
static int
check_url(const cJSON *v, const char *name, char *err, size_t errlen)
{
	size_t n, i;

	if (!cJSON_IsString(v) || v->valuestring == NULL) {
		errf(err, errlen, "%s is not a string", name);
		return CIVIS_EPROTO;
	}
	n = strlen(v->valuestring);
	if (n > MAX_URL_LEN) {
		errf(err, errlen, "%s is longer than %u bytes", name, MAX_URL_LEN);
		return CIVIS_EPROTO;
	}
	if (!is_http_url(v->valuestring)) {
		errf(err, errlen, "%s is not an http(s) URL", name);
		return CIVIS_EPROTO;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v->valuestring[i];

		if (c <= 0x20 || c == 0x7f) {
			errf(err, errlen, "%s has a space or control character", name);
			return CIVIS_EPROTO;
		}
	}
	return CIVIS_OK;
}

int
civis_parse_run_state(const char *body, size_t len, civis_run_state *out,
                      char *err, size_t errlen)
{
	cJSON *root;
	const cJSON *v;
	int rc;

	memset(out, 0, sizeof(*out));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	root = parse_object(body, len, CIVIS_RUN_STATE_MAX_BODY, err, errlen);
	if (root == NULL)
		return CIVIS_EPROTO;
	rc = get_id(root, &out->id, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	v = cJSON_GetObjectItemCaseSensitive(root, "state");
	if (v != NULL && !cJSON_IsNull(v)) {
		size_t n, i;

		if (!cJSON_IsString(v) || v->valuestring == NULL) {
			errf(err, errlen, "state is not a string");
			rc = CIVIS_EPROTO;
			goto out;
		}
		n = strlen(v->valuestring);
		if (n >= sizeof(out->state)) {
			errf(err, errlen, "state is longer than %zu bytes", sizeof(out->state) - 1);
			rc = CIVIS_EPROTO;
			goto out;
		}
		for (i = 0; i < n; i++) {
			unsigned char c = (unsigned char)v->valuestring[i];

			out->state[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
		}
		out->state[n] = '\0';
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "isCancelRequested");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsBool(v)) {
			errf(err, errlen, "isCancelRequested is not a boolean");
			rc = CIVIS_EPROTO;
			goto out;
		}
		out->is_cancel_requested = cJSON_IsTrue(v) ? 1 : 0;
	}
	rc = CIVIS_OK;
out:
	cJSON_Delete(root);
	if (rc != CIVIS_OK)
		memset(out, 0, sizeof(*out));
	return rc;
}

void
civis_file_post_dispose(civis_file_post *fp)
{
	size_t i;

	if (fp == NULL)
		return;
	for (i = 0; i < fp->nfields; i++) {
		if (fp->field_names != NULL)
			free(fp->field_names[i]);
		if (fp->field_values != NULL)
			free(fp->field_values[i]);
	}
	free(fp->field_names);
	free(fp->field_values);
	free(fp->upload_url);
	memset(fp, 0, sizeof(*fp));
}

int
civis_parse_file_post(const char *body, size_t len, civis_file_post *out,
                      char *err, size_t errlen)
{
	cJSON *root;
	const cJSON *v, *f;
	size_t n = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	root = parse_object(body, len, CIVIS_FILE_POST_MAX_BODY, err, errlen);
	if (root == NULL)
		return CIVIS_EPROTO;
	rc = get_id(root, &out->id, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	v = cJSON_GetObjectItemCaseSensitive(root, "uploadUrl");
	if (v == NULL || cJSON_IsNull(v)) {
		errf(err, errlen, "answer has no uploadUrl");
		rc = CIVIS_EPROTO;
		goto out;
	}
	rc = check_url(v, "uploadUrl", err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	out->upload_url = strdup(v->valuestring);
	if (out->upload_url == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}

	v = cJSON_GetObjectItemCaseSensitive(root, "uploadFields");
	if (v != NULL && !cJSON_IsNull(v)) {
		if (!cJSON_IsObject(v)) {
			errf(err, errlen, "uploadFields is not an object");
			rc = CIVIS_EPROTO;
			goto out;
		}
		cJSON_ArrayForEach(f, v) {
			if (++n > MAX_FIELDS) {
				errf(err, errlen, "uploadFields has more than %u fields", MAX_FIELDS);
				rc = CIVIS_EPROTO;
				goto out;
			}
		}
	}
	if (n > 0) {
		out->field_names = calloc(n, sizeof(char *));
		out->field_values = calloc(n, sizeof(char *));
		if (out->field_names == NULL || out->field_values == NULL) {
			rc = CIVIS_ENOMEM;
			goto out;
		}
		cJSON_ArrayForEach(f, v) {
			size_t i, nl;

			if (f->string == NULL || (nl = strlen(f->string)) == 0 ||
			    nl > MAX_FIELD_NAME) {
				errf(err, errlen, "uploadFields has an empty or overlong name");
				rc = CIVIS_EPROTO;
				goto out;
			}
			for (i = 0; i < nl; i++) {
				unsigned char c = (unsigned char)f->string[i];

				if (c < 0x20 || c == 0x7f || c == '"') {
					errf(err, errlen, "uploadFields has a name with a control character or quote");
					rc = CIVIS_EPROTO;
					goto out;
				}
			}
			if (!cJSON_IsString(f) || f->valuestring == NULL) {
				errf(err, errlen, "uploadFields value of '%.64s' is not a string", f->string);
				rc = CIVIS_EPROTO;
				goto out;
			}
			if (strlen(f->valuestring) > MAX_FIELD_VALUE) {
				errf(err, errlen, "uploadFields value of '%.64s' is longer than %u bytes",
				     f->string, MAX_FIELD_VALUE);
				rc = CIVIS_EPROTO;
				goto out;
			}
			out->field_names[out->nfields] = strdup(f->string);
			out->field_values[out->nfields] = strdup(f->valuestring);
			out->nfields++;
			if (out->field_names[out->nfields - 1] == NULL ||
			    out->field_values[out->nfields - 1] == NULL) {
				rc = CIVIS_ENOMEM;
				goto out;
			}
		}
	}
	rc = CIVIS_OK;
out:
	cJSON_Delete(root);
	if (rc != CIVIS_OK)
		civis_file_post_dispose(out);
	return rc;
}

void
civis_multipart_post_dispose(civis_multipart_post *mp)
{
	size_t i;

	if (mp == NULL)
		return;
	for (i = 0; i < mp->nurls && mp->upload_urls != NULL; i++)
		free(mp->upload_urls[i]);
	free(mp->upload_urls);
	memset(mp, 0, sizeof(*mp));
}

int
civis_parse_multipart_post(const char *body, size_t len, civis_multipart_post *out,
                           char *err, size_t errlen)
{
	cJSON *root;
	const cJSON *v, *u;
	size_t n = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	root = parse_object(body, len, CIVIS_MULTIPART_POST_MAX_BODY, err, errlen);
	if (root == NULL)
		return CIVIS_EPROTO;
	rc = get_id(root, &out->id, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	v = cJSON_GetObjectItemCaseSensitive(root, "uploadUrls");
	if (v == NULL || cJSON_IsNull(v)) {
		errf(err, errlen, "answer has no uploadUrls");
		rc = CIVIS_EPROTO;
		goto out;
	}
	if (!cJSON_IsArray(v)) {
		errf(err, errlen, "uploadUrls is not an array");
		rc = CIVIS_EPROTO;
		goto out;
	}
	cJSON_ArrayForEach(u, v) {
		if (++n > MAX_UPLOAD_URLS) {
			errf(err, errlen, "uploadUrls has more than %u entries", MAX_UPLOAD_URLS);
			rc = CIVIS_EPROTO;
			goto out;
		}
	}
	if (n == 0) {
		errf(err, errlen, "uploadUrls is empty");
		rc = CIVIS_EPROTO;
		goto out;
	}
	out->upload_urls = calloc(n, sizeof(char *));
	if (out->upload_urls == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(u, v) {
		rc = check_url(u, "uploadUrls entry", err, errlen);
		if (rc != CIVIS_OK)
			goto out;
		out->upload_urls[out->nurls] = strdup(u->valuestring);
		if (out->upload_urls[out->nurls] == NULL) {
			rc = CIVIS_ENOMEM;
			goto out;
		}
		out->nurls++;
	}
	rc = CIVIS_OK;
out:
	cJSON_Delete(root);
	if (rc != CIVIS_OK)
		civis_multipart_post_dispose(out);
	return rc;
}

void
civis_parse_error_text(const char *body, size_t len, char *buf, size_t buflen)
{
	size_t pos = 0, i = 0;

	if (buf == NULL || buflen == 0)
		return;
	buf[0] = '\0';
	if (body == NULL || len == 0)
		return;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' ||
	                   body[i] == '\n'))
		i++;
	if (i < len && body[i] == '{' && len <= MAX_ERROR_JSON &&
	    nesting_ok(body, len, MAX_NESTING)) {
		cJSON *root = cJSON_ParseWithLength(body, len);
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "errorDescription");
		const char *es = cJSON_IsString(e) ? e->valuestring : NULL;
		const char *ds = cJSON_IsString(d) ? d->valuestring : NULL;

		if (es == NULL && ds == NULL) {
			const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");

			ds = cJSON_IsString(m) ? m->valuestring : NULL;
		}
		if (es != NULL && es[0] != '\0')
			civis__text_clean_append(buf, buflen, &pos, es, strlen(es));
		if (ds != NULL && ds[0] != '\0') {
			if (pos > 0)
				civis__text_clean_append(buf, buflen, &pos, ": ", 2);
			civis__text_clean_append(buf, buflen, &pos, ds, strlen(ds));
		}
		cJSON_Delete(root);
		civis__text_trim_end(buf, &pos);
		if (pos > 0)
			return;
	}
	/* not a Civis error object: its first line */
	civis_http_error_text_line(body, len, buf, buflen);
}
