/* http_try.c: one try of a civis_http request, the transport proper: a
 * fresh easy handle with its timeouts, TLS and redirect rules, the request
 * body (in memory, or streamed through the caller's reader at an offset),
 * the proxy, and the capture of the answer (body capped, ETag,
 * Retry-After, X-RateLimit-*). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_req.h"
#include "civis/civis.h"

#define method_is civis__http_req_method_is
#define set_error civis__http_req_error

void
civis__http_req_error(civis_http_req *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(r->error, sizeof(r->error), "%s: %s %s: ", r->what, r->method, r->path);
	if (n < 0 || (size_t)n >= sizeof(r->error))
		return;
	va_start(ap, fmt);
	(void)vsnprintf(r->error + n, sizeof(r->error) - (size_t)n, fmt, ap);
	va_end(ap);
}


int
civis__http_req_method_is(const civis_http_req *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

int
civis__http_req_idempotent(const civis_http_req *r)
{
	return civis__http_req_method_is(r, "GET") || civis__http_req_method_is(r, "HEAD") ||
	       civis__http_req_method_is(r, "PUT") || civis__http_req_method_is(r, "DELETE");
}

/* ---------------------------------------------------------- callbacks */

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
	civis_http_req *r = ud;
	size_t n = size * nmemb;

	if (r->too_big || n > r->max_response - r->resp_len) {
		r->too_big = 1;
		return 0;   /* CURLE_WRITE_ERROR ends the try */
	}
	if (r->resp_len + n + 1 > r->resp_cap) {
		size_t cap = r->resp_cap ? r->resp_cap : 4096;
		char *p;

		while (cap < r->resp_len + n + 1)
			cap *= 2;
		if (cap > r->max_response + 1)
			cap = r->max_response + 1;
		p = realloc(r->resp, cap);
		if (p == NULL)
			return 0;
		r->resp = p;
		r->resp_cap = cap;
	}
	memcpy(r->resp + r->resp_len, data, n);
	r->resp_len += n;
	r->resp[r->resp_len] = '\0';
	return n;
}

/* Copy a header's value (trimmed) if it fits in buf; otherwise leave "". */
static void
header_value(const char *v, size_t n, char *buf, size_t len)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' ||
	                 v[n - 1] == '\n'))
		n--;
	buf[0] = '\0';
	if (n >= len)
		return;
	memcpy(buf, v, n);
	buf[n] = '\0';
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
	civis_http_req *r = ud;
	size_t n = size * nmemb;

	if (n >= 5 && strncasecmp(data, "HTTP/", 5) == 0) {
		/* a new answer (after a 100 Continue, say): forget the last one's */
		r->etag[0] = '\0';
		r->retry_after[0] = '\0';
		r->rl_limit[0] = '\0';
		r->rl_remaining[0] = '\0';
	} else if (n >= 18 && strncasecmp(data, "X-RateLimit-Limit:", 18) == 0) {
		header_value(data + 18, n - 18, r->rl_limit, sizeof(r->rl_limit));
	} else if (n >= 22 && strncasecmp(data, "X-RateLimit-Remaining:", 22) == 0) {
		header_value(data + 22, n - 22, r->rl_remaining, sizeof(r->rl_remaining));
	} else if (n >= 5 && strncasecmp(data, "ETag:", 5) == 0) {
		header_value(data + 5, n - 5, r->etag, sizeof(r->etag));
	} else if (n >= 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		header_value(data + 12, n - 12, r->retry_after, sizeof(r->retry_after));
	}
	return n;
}

static size_t
read_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
	civis_http_req *r = ud;
	size_t n = size * nmemb;
	size_t got = 0;
	int rc;

	if (r->body_read == NULL) {
		size_t left = r->body_len - (size_t)r->body_pos;

		if (n > left)
			n = left;
		if (n > 0)
			memcpy(buf, r->body + r->body_pos, n);
		r->body_pos += n;
		return n;
	}
	if (r->body_pos >= r->body_size)
		return 0;
	if (n > r->body_size - r->body_pos)
		n = (size_t)(r->body_size - r->body_pos);
	rc = r->body_read(r->body_ud, r->body_pos, buf, n, &got);
	if (rc == CIVIS_OK && got > n) {
		set_error(r, "the request body's reader gave %zu bytes for %zu at byte %llu",
		          got, n, (unsigned long long)r->body_pos);
		r->body_rc = CIVIS_EINVAL;
		return CURL_READFUNC_ABORT;
	}
	if (rc == CIVIS_OK && got == 0) {
		set_error(r, "the request body ended at byte %llu of %llu",
		          (unsigned long long)r->body_pos, (unsigned long long)r->body_size);
		r->body_rc = CIVIS_ESYS;
		return CURL_READFUNC_ABORT;
	}
	if (rc != CIVIS_OK) {
		set_error(r, "cannot read the request body at byte %llu of %llu: %s",
		          (unsigned long long)r->body_pos, (unsigned long long)r->body_size,
		          civis_strerror(rc));
		r->body_rc = rc;
		return CURL_READFUNC_ABORT;
	}
	r->body_pos += got;
	return got;
}

/* libcurl rewinds the body when it sends the request again by itself: on a
 * reused connection that died before any answer, it retries on a fresh one
 * without telling anyone. The server may have acted on the first copy, so
 * for a verb that is not idempotent a rewind after bytes went out counts as
 * an ambiguous try. */
static int
seek_cb(void *ud, curl_off_t offset, int origin)
{
	civis_http_req *r = ud;
	uint64_t size = r->body_read != NULL ? r->body_size : r->body_len;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > size)
		return CURL_SEEKFUNC_FAIL;
	if ((uint64_t)offset < r->body_pos && !civis__http_req_idempotent(r))
		r->rewinds++;
	r->body_pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

/* ------------------------------------------------------------- a try */

static int
has_body(const civis_http_req *r)
{
	return r->body != NULL || r->body_read != NULL;
}

#define SET(opt, val) do { if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val); } while (0)

/* What every try sets: target, timeouts, TLS, answer capture, headers, auth. */
static CURLcode
set_common(civis_http_req *r, CURL *e)
{
	civis_http *http = r->http;
	CURLcode c = CURLE_OK;

	SET(CURLOPT_URL, r->url);
	SET(CURLOPT_PRIVATE, (void *)r);
	SET(CURLOPT_SHARE, http->share);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, r->low_speed_time_s);
	if (r->timeout_ms > 0)
		SET(CURLOPT_TIMEOUT_MS, r->timeout_ms);
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (http->ca_file[0] != '\0')
		SET(CURLOPT_CAINFO, http->ca_file);
	/* our choice (http_proxy.c), not libcurl's reading of the environment */
	SET(CURLOPT_PROXY, r->proxy);
	SET(CURLOPT_NOPROXY, r->proxy[0] != '\0' ? "" : "*");
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_response);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, (void *)r);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, (void *)r);
	SET(CURLOPT_HTTPHEADER, r->headers);
	if (r->userpwd != NULL) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SET(CURLOPT_USERPWD, r->userpwd);
		SET(CURLOPT_UNRESTRICTED_AUTH, 0L);
	}
	return c;
}

/* The verb and the body: exact lengths, never chunked. */
static CURLcode
set_method(civis_http_req *r, CURL *e)
{
	CURLcode c = CURLE_OK;

	if (method_is(r, "GET") && !has_body(r)) {
		SET(CURLOPT_HTTPGET, 1L);
		return c;
	}
	if (method_is(r, "HEAD")) {
		SET(CURLOPT_NOBODY, 1L);
		return c;
	}
	if (method_is(r, "DELETE") && !has_body(r)) {
		SET(CURLOPT_CUSTOMREQUEST, "DELETE");
		return c;
	}
	if (method_is(r, "PUT")) {
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_INFILESIZE_LARGE,
		    (curl_off_t)(r->body_read != NULL ? r->body_size : r->body_len));
	} else {
		/* POST, PATCH, a DELETE with a body, ...: a POST with another verb;
		 * no body still sends Content-Length: 0 */
		if (!method_is(r, "POST"))
			SET(CURLOPT_CUSTOMREQUEST, r->method);
		SET(CURLOPT_POST, 1L);
		if (r->body_read != NULL) {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_size);
		} else if (r->body_len > 0) {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		} else {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
			SET(CURLOPT_POSTFIELDS, "");
		}
	}
	/* Every body goes through read_cb, even one in memory: libcurl's
	 * silent resend on a fresh connection then rewinds it (seek_cb), and
	 * that is how a POST the server may have stored twice gets counted
	 * (with CURLOPT_POSTFIELDS libcurl resends from our buffer unseen). */
	if (r->body_read != NULL || method_is(r, "PUT") || r->body_len > 0) {
		SET(CURLOPT_READFUNCTION, read_cb);
		SET(CURLOPT_READDATA, (void *)r);
		SET(CURLOPT_SEEKFUNCTION, seek_cb);
		SET(CURLOPT_SEEKDATA, (void *)r);
	}
	if (r->send_buffer != 0)
		SET(CURLOPT_UPLOAD_BUFFERSIZE, (long)r->send_buffer);
	return c;
}
#undef SET

int
civis__http_try_start(civis_http_req *r)
{
	civis_http *http = r->http;
	CURL *e;
	CURLcode c;
	int rc = CIVIS_OK;

	e = curl_easy_init();
	if (e == NULL)
		return CIVIS_ENOMEM;
	r->resp_len = 0;
	if (r->resp != NULL)
		r->resp[0] = '\0';
	r->too_big = 0;
	r->etag[0] = '\0';
	r->retry_after[0] = '\0';
	r->rl_limit[0] = '\0';
	r->rl_remaining[0] = '\0';
	r->body_pos = 0;
	r->body_rc = CIVIS_OK;
	c = set_common(r, e);
	if (c == CURLE_OK)
		c = set_method(r, e);
	if (c != CURLE_OK) {
		rc = c == CURLE_OUT_OF_MEMORY ? CIVIS_ENOMEM : CIVIS_EINVAL;
		goto out;
	}
	if (curl_multi_add_handle(http->multi, e) != CURLM_OK) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	r->easy = e;
	e = NULL;
	r->attempts++;
	if (r->attempts == 1)
		r->first_ns = civis_now_ns();
out:
	if (e != NULL)
		curl_easy_cleanup(e);
	return rc;
}
