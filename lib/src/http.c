/* http.c: the transport of civis_http: one easy handle per try on the
 * loop's curl multi handle, its timeouts, the request body (in memory or
 * streamed through the caller's reader) and the capture of the answer.
 *
 * The multi handle keeps the connection cache (keep-alive across requests)
 * and a share object keeps DNS and TLS sessions. A finished try comes back
 * through the loop's completion hook (loop_internal.h); whether and when to
 * try again is the policy's (http_retry.c); a retry waits on a loop timer.
 * Messages never carry the key, a header or a URL's query. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_req.h"
#include "civis/civis.h"
#include "civis/tls.h"
#include "loop_internal.h"

#define set_error civis__http_req_error
#define req_finish civis__http_req_finish

#define DEFAULT_MAX_RESPONSE   (1u << 20)
#define DEFAULT_CONNECT_MS     10000L
#define DEFAULT_LOW_SPEED_S    30L
#define BODY_TEXT_MAX          200
#define HOST_TEXT_MAX          128
#define MAX_HEADERS            64

/* ------------------------------------------------------------ requests */

static void
req_free(civis_http_req *r)
{
	if (r == NULL)
		return;
	if (r->userpwd != NULL) {
		explicit_bzero(r->userpwd, strlen(r->userpwd));
		free(r->userpwd);
	}
	if (r->proxy != NULL) {
		explicit_bzero(r->proxy, strlen(r->proxy));
		free(r->proxy);
	}
	curl_slist_free_all(r->headers);
	free(r->url);
	free(r->what);
	free(r->path);
	free(r->resp);
	free(r);
}

static void
req_unlink(civis_http_req *r)
{
	civis_http *http = r->http;

	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		http->head = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	http->pending--;
}

void
civis__http_req_finish(civis_http_req *r, int status, long http_code)
{
	civis_http_result res;

	req_unlink(r);
	memset(&res, 0, sizeof(res));
	res.status = status;
	res.http_code = http_code;
	res.body = r->resp != NULL ? r->resp : "";
	res.body_len = r->resp != NULL ? r->resp_len : 0;
	res.etag = r->etag[0] != '\0' ? r->etag : NULL;
	res.attempts = r->attempts;
	res.ambiguous = r->ambiguous + r->rewinds;
	if (status == CIVIS_OK)
		r->error[0] = '\0';
	res.error = r->error;
	r->in_done = 1;
	r->done(r->done_ud, &res);
	req_free(r);
}

static void
append_error(civis_http_req *r, const char *text)
{
	size_t n = strlen(r->error);

	if (n < sizeof(r->error) - 1)
		(void)snprintf(r->error + n, sizeof(r->error) - n, "%s", text);
}

static void
retry_timer_cb(civis_loop *loop, void *ud)
{
	civis_http_req *r = ud;
	int rc;

	(void)loop;
	r->timer = 0;
	rc = civis__http_gate_try(r);
	if (rc != CIVIS_OK) {
		set_error(r, "could not start another try: %s", civis_strerror(rc));
		req_finish(r, rc, 0);
	}
}

/* ------------------------------------------------------------ outcome */

static int
curl_error_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
	case CURLE_QUIC_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_AGAIN:
		return 1;
	default:
		return 0;
	}
}

static int
curl_error_status(CURLcode cc)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return CIVIS_ETIMEOUT;
	case CURLE_OUT_OF_MEMORY:
		return CIVIS_ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_FUNCTION_ARGUMENT:
		return CIVIS_EINVAL;
	case CURLE_READ_ERROR:
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_SEND_FAIL_REWIND:
		return CIVIS_ESYS;
	default:
		return CIVIS_ENET;
	}
}

/* "HTTP 503 Service Unavailable: <the answer's text>" for an error status. */
static void
say_http_error(civis_http_req *r, long code)
{
	char text[BODY_TEXT_MAX + 1];
	const char *reason = civis__http_reason(code);

	text[0] = '\0';
	if (r->resp != NULL && r->resp_len > 0)
		(r->error_text != NULL ? r->error_text : civis_http_error_text_line)(
			r->resp, r->resp_len, text, sizeof(text));
	if (reason != NULL)
		set_error(r, "HTTP %ld %s%s%s", code, reason, text[0] ? ": " : "", text);
	else
		set_error(r, "HTTP %ld%s%s", code, text[0] ? ": " : "", text);
}

/* A try that went wrong, classified: *final (finish now) or a status and
 * whether the policy may try again. */
struct outcome {
	int status;
	long code;
	int final;
	int retry;
};

static struct outcome
classify(civis_http_req *r, CURLcode cc, long code, long request_size, const char *redirect_host)
{
	struct outcome o = { CIVIS_EHTTP, code, 1, 0 };

	if (cc == CURLE_OK && code >= 300 && code <= 399) {
		if (redirect_host[0] != '\0')
			set_error(r, "unexpected redirect to %s (not followed)", redirect_host);
		else
			set_error(r, "unexpected redirect (HTTP %ld, no Location; not followed)", code);
	} else if (cc == CURLE_OK) {
		say_http_error(r, code);
		o.status = code == 401 ? CIVIS_EAUTH : CIVIS_EHTTP;
		o.final = code == 401;
		o.retry = civis_http_status_retryable(code);
	} else if (r->body_rc != CIVIS_OK) {
		/* the reader failed: read_cb said where; another try would read
		 * the same bytes */
		o.status = r->body_rc;
		o.code = 0;
	} else if (r->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
		set_error(r, "answer larger than %zu bytes", r->max_response);
		o.status = CIVIS_ETOOBIG;
	} else {
		if (r->proxy_shown[0] != '\0')
			set_error(r, "%s (through the proxy %s)", curl_easy_strerror(cc), r->proxy_shown);
		else
			set_error(r, "%s", curl_easy_strerror(cc));
		o.status = curl_error_status(cc);
		o.retry = curl_error_retryable(cc);
		o.final = 0;
		o.code = 0;
		/* The server may have acted once the request went out and no
		 * answer came back; only a non-idempotent verb cares. */
		if (o.retry && request_size > 0 && !civis__http_req_idempotent(r) &&
		    cc != CURLE_COULDNT_CONNECT && cc != CURLE_COULDNT_RESOLVE_HOST &&
		    cc != CURLE_COULDNT_RESOLVE_PROXY) {
			r->ambiguous++;
			if (!r->policy.retry_ambiguous)
				o.retry = 0;
		}
	}
	return o;
}

/* Ask the policy for another try; 1 when one is scheduled. */
static int
schedule_retry(civis_http_req *r)
{
	civis_http *http = r->http;
	uint64_t now = civis_now_ns(), wait_ms, wait_ns;

	if (!civis__retry_next(&r->policy, r->attempts, (now - r->first_ns) / 1000000u,
	                       r->retry_after, (int64_t)time(NULL), civis__rng_next(&http->rng),
	                       &wait_ms))
		return 0;
	wait_ns = wait_ms > UINT64_MAX / 2000000u ? UINT64_MAX / 2 : wait_ms * 1000000u;
	return civis_loop_add_timer(http->loop, now + wait_ns, retry_timer_cb, r,
	                            &r->timer) == CIVIS_OK;
}

static void
on_transfer_done(void *ctx, CURL *easy, CURLcode cc)
{
	civis_http *http = ctx;
	civis_http_req *r = NULL;
	char *priv = NULL, *redirect = NULL;
	char host[HOST_TEXT_MAX + 1] = "";
	long code = 0, request_size = 0;
	struct outcome o;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
	r = (civis_http_req *)(void *)priv;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
	if (cc == CURLE_OK && code >= 300 && code <= 399 &&
	    curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK &&
	    redirect != NULL)
		civis__http_url_host(redirect, host, sizeof(host));
	curl_multi_remove_handle(http->multi, easy);
	curl_easy_cleanup(easy);
	if (r == NULL)
		return;
	r->easy = NULL;
	if (r->userpwd != NULL)
		civis__http_gate_answer(r, cc == CURLE_OK ? code : 0,
		                        cc == CURLE_OK || code > 0 || request_size > 0);
	if (cc == CURLE_OK && code >= 200 && code <= 299) {
		req_finish(r, CIVIS_OK, code);
		return;
	}
	o = classify(r, cc, code, request_size, host);
	if (!o.final || o.retry) {
		if (o.retry && schedule_retry(r))
			return;
		if (r->attempts > 1) {
			char tail[48];

			(void)snprintf(tail, sizeof(tail), " (after %u tries)", r->attempts);
			append_error(r, tail);
		}
	}
	req_finish(r, o.status, o.code);
}

/* ------------------------------------------------------------ the API */

static const char *
env_lookup(const char *name, void *ud)
{
	(void)ud;
	return getenv(name);
}

int
civis_http_new(civis_http **out, civis_loop *loop)
{
	civis_http *http;
	int rc;

	*out = NULL;
	http = calloc(1, sizeof(*http));
	if (http == NULL)
		return CIVIS_ENOMEM;
	http->loop = loop;
	http->multi = civis__loop_curl_multi(loop);
	if (http->multi == NULL) {
		free(http);
		/* no libcurl to load is not a lack of memory */
		return civis__dl_curl(NULL, 0) != CIVIS_OK ? CIVIS_ESYS : CIVIS_ENOMEM;
	}
	http->rng = civis__rng_seed();
	civis__http_gate_init(http);
	{
		/* chosen once: the environment may change later, our copy not */
		char buf[PATH_MAX];
		const char *ca = civis_tls_ca_file(buf, sizeof(buf));

		if (ca != NULL && strlen(ca) < sizeof(http->ca_file))
			memcpy(http->ca_file, ca, strlen(ca) + 1);
	}
	civis__proxy_env_read(&http->proxy_env, env_lookup, NULL);
	http->share = curl_share_init();
	if (http->share == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	if (curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	rc = civis__loop_set_curl_done(loop, on_transfer_done, http);
	if (rc != CIVIS_OK)
		goto out;
	*out = http;
	http = NULL;
out:
	if (http != NULL) {
		if (http->share != NULL)
			curl_share_cleanup(http->share);
		free(http);
	}
	return rc;
}

void
civis_http_free(civis_http *http)
{
	if (http == NULL)
		return;
	http->closing = 1;
	while (http->head != NULL)
		civis_http_cancel(http, http->head); /* NOLINT(clang-analyzer-unix.Malloc): cancel unlinks head before freeing it */
	civis__http_gate_free(http);
	civis__loop_set_curl_done(http->loop, NULL, NULL);
	curl_share_cleanup(http->share);
	free(http);
}

void
civis_http_cancel(civis_http *http, civis_http_req *req)
{
	if (req == NULL || req->in_done)
		return;
	if (req->easy != NULL) {
		curl_multi_remove_handle(http->multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
	}
	if (req->timer != 0) {
		civis_loop_cancel_timer(http->loop, req->timer);
		req->timer = 0;
	}
	civis__http_gate_remove(req);
	set_error(req, "canceled");
	req_finish(req, CIVIS_ECANCELED, 0);
}

int
civis_http_proxy_for(const civis_http *http, const char *url, char *buf, size_t len)
{
	char *full;
	int rc;

	if (buf == NULL || len == 0 || url == NULL)
		return CIVIS_EINVAL;
	buf[0] = '\0';
	full = calloc(1, CIVIS__PROXY_MAX);
	if (full == NULL)
		return CIVIS_ENOMEM;
	rc = civis__proxy_pick(&http->proxy_env, url, full, CIVIS__PROXY_MAX);
	if (rc == CIVIS_OK)
		civis__proxy_display(full, buf, len);
	explicit_bzero(full, CIVIS__PROXY_MAX);
	free(full);
	return rc;
}

unsigned
civis_http_pending(const civis_http *http)
{
	return http->pending;
}

static int
header_ok(const char *h)
{
	return strpbrk(h, "\r\n") == NULL;
}

static int
is_authorization(const char *h)
{
	return strncasecmp(h, "Authorization:", 14) == 0 ||
	       strncasecmp(h, "Authorization;", 14) == 0 ||
	       strncasecmp(h, "Proxy-Authorization:", 20) == 0;
}

static int
method_ok(const char *m)
{
	size_t i;

	for (i = 0; m[i] != '\0'; i++)
		if (i + 1 >= METHOD_MAX || m[i] < 'A' || m[i] > 'Z')
			return 0;
	return i > 0;
}

static int
add_header(struct curl_slist **list, const char *h)
{
	struct curl_slist *n = curl_slist_append(*list, h);

	if (n == NULL)
		return CIVIS_ENOMEM;
	*list = n;
	return CIVIS_OK;
}

/* A request without credentials (a presigned storage URL) goes only to
 * https://, or to http:// on a loopback host: the endpoint's rule. When not,
 * say why in r->error. */
static int
plain_url_ok(civis_http_req *r)
{
	char scheme[16], host[256];

	if (civis__http_url_target(r->url, scheme, sizeof(scheme), host, sizeof(host)) != CIVIS_OK)
		return 1;   /* libcurl refuses it with its own message */
	if (strcmp(scheme, "https") == 0 ||
	    (strcmp(scheme, "http") == 0 && civis__http_host_is_loopback(host)))
		return 1;
	civis__http_url_host(r->url, host, sizeof(host));
	set_error(r, "refused to send to %s://%s: a URL without the API key must use "
	          "https:// (http:// only to a loopback host)", scheme, host);
	return 0;
}

/* The refusal of plain_url_ok, reported like any failed request. */
static void
refuse_timer_cb(civis_loop *loop, void *ud)
{
	civis_http_req *r = ud;

	(void)loop;
	r->timer = 0;
	req_finish(r, CIVIS_EUNSAFE, 0);
}

/* A spec the transport can carry, or why not. */
static int
spec_check(const civis_http_spec *spec, const char *userpwd)
{
	size_t i;

	if (spec == NULL || spec->method == NULL || spec->url == NULL || spec->done == NULL ||
	    !method_ok(spec->method) ||
	    (spec->body != NULL && spec->body_read != NULL) ||
	    (spec->body == NULL && spec->body_len != 0) ||
	    (spec->body_read == NULL && spec->body_size != 0) ||
	    (spec->send_buffer != 0 && (spec->send_buffer < CIVIS_HTTP_SEND_BUFFER_MIN ||
	                                spec->send_buffer > CIVIS_HTTP_SEND_BUFFER_MAX)))
		return CIVIS_EINVAL;
	if (spec->content_type != NULL &&
	    (!header_ok(spec->content_type) || strlen(spec->content_type) > 200))
		return CIVIS_EINVAL;
	for (i = 0; spec->headers != NULL && spec->headers[i] != NULL; i++) {
		if (i >= MAX_HEADERS || !header_ok(spec->headers[i]))
			return CIVIS_EINVAL;
		if (userpwd == NULL && is_authorization(spec->headers[i]))
			return CIVIS_EUNSAFE;
	}
	return CIVIS_OK;
}

/* The request's own copies: URL, names for messages, credentials, headers. */
static int
req_copy(civis_http_req *r, const civis_http_spec *spec, const char *userpwd)
{
	const char *what = spec->what != NULL ? spec->what : "request";
	size_t i;
	int rc;

	(void)snprintf(r->method, sizeof(r->method), "%s", spec->method);
	r->url = strdup(spec->url);
	r->what = civis__http_dup_clean(what, strlen(what), 80);
	r->path = civis__http_url_path(spec->url);
	if (r->url == NULL || r->what == NULL || r->path == NULL)
		return CIVIS_ENOMEM;
	r->proxy = calloc(1, CIVIS__PROXY_MAX);
	if (r->proxy == NULL)
		return CIVIS_ENOMEM;
	rc = civis__proxy_pick(&r->http->proxy_env, spec->url, r->proxy, CIVIS__PROXY_MAX);
	if (rc != CIVIS_OK && rc != CIVIS_EINVAL)
		return rc;   /* a URL that does not parse fails its try, as before */
	civis__proxy_display(r->proxy, r->proxy_shown, sizeof(r->proxy_shown));
	if (userpwd != NULL) {
		r->userpwd = strdup(userpwd);
		if (r->userpwd == NULL)
			return CIVIS_ENOMEM;
	}
	for (i = 0; spec->headers != NULL && spec->headers[i] != NULL; i++) {
		rc = add_header(&r->headers, spec->headers[i]);
		if (rc != CIVIS_OK)
			return rc;
	}
	if (spec->content_type != NULL) {
		char ct[256];

		(void)snprintf(ct, sizeof(ct), "Content-Type: %s", spec->content_type);
		rc = add_header(&r->headers, ct);
		if (rc != CIVIS_OK)
			return rc;
	}
	return add_header(&r->headers, "Expect:");
}

/* The body, limits and callbacks, defaults filled in. */
static void
req_settings(civis_http_req *r, const civis_http_spec *spec)
{
	r->body = spec->body;
	r->body_len = spec->body != NULL ? spec->body_len : 0;
	r->body_read = spec->body_read;
	r->body_size = spec->body_read != NULL ? spec->body_size : 0;
	r->body_ud = spec->body_ud;
	r->send_buffer = spec->body_read != NULL ? spec->send_buffer : 0;
	r->max_response = spec->max_response != 0 ? spec->max_response : DEFAULT_MAX_RESPONSE;
	if (r->max_response > SIZE_MAX / 4)
		r->max_response = SIZE_MAX / 4;
	r->connect_timeout_ms = spec->connect_timeout_ms > 0 ? spec->connect_timeout_ms
	                                                     : DEFAULT_CONNECT_MS;
	r->low_speed_time_s = spec->low_speed_time_s > 0 ? spec->low_speed_time_s
	                                                 : DEFAULT_LOW_SPEED_S;
	r->timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : 0;
	if (spec->retry != NULL)
		r->policy = *spec->retry;
	else
		civis_retry_policy_default(&r->policy);
	r->done = spec->done;
	r->done_ud = spec->done_ud;
	r->error_text = spec->error_text;
	r->prio = spec->prio < CIVIS_HTTP_PRIO_LOW ? CIVIS_HTTP_PRIO_LOW
	        : spec->prio > CIVIS_HTTP_PRIO_FINAL ? CIVIS_HTTP_PRIO_FINAL : spec->prio;
}

static int
start(civis_http *http, const civis_http_spec *spec, const char *userpwd,
      civis_http_req **out)
{
	civis_http_req *r = NULL;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (http->closing)
		return CIVIS_ECANCELED;
	rc = spec_check(spec, userpwd);
	if (rc != CIVIS_OK)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return CIVIS_ENOMEM;
	r->http = http;
	rc = req_copy(r, spec, userpwd);
	if (rc != CIVIS_OK)
		goto out;
	req_settings(r, spec);
	if (userpwd == NULL && !plain_url_ok(r))
		rc = civis_loop_add_timer(http->loop, civis_now_ns(), refuse_timer_cb, r, &r->timer);
	else
		rc = civis__http_gate_try(r);
	if (rc != CIVIS_OK)
		goto out;
	r->next = http->head;
	if (http->head != NULL)
		http->head->prev = r;
	http->head = r;
	http->pending++;
	if (out != NULL)
		*out = r;
	r = NULL;
out:
	req_free(r);
	return rc;
}

int
civis_http_start(civis_http *http, const civis_http_spec *spec, civis_http_req **out)
{
	return start(http, spec, NULL, out);
}

int
civis__http_start_auth(civis_http *http, const civis_http_spec *spec,
                       const char *origin, const char *userpwd, civis_http_req **out)
{
	if (out != NULL)
		*out = NULL;
	if (spec == NULL || spec->url == NULL || origin == NULL || userpwd == NULL)
		return CIVIS_EINVAL;
	if (!civis__http_url_under_origin(spec->url, origin))
		return CIVIS_EUNSAFE;
	return start(http, spec, userpwd, out);
}
