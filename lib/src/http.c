/* http.c: asynchronous HTTP on the loop's curl multi handle, with retries.
 *
 * Each try is a fresh easy handle added to the loop's multi handle; the
 * multi handle keeps the connection cache (keep-alive across requests) and a
 * share object keeps DNS and TLS sessions. A finished try comes back through
 * the loop's completion hook (loop_internal.h); a retry waits on a loop
 * timer. Messages never carry the key, a header or a URL's query. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "dl.h"
#include "civis/civis.h"
#include "civis/client.h"
#include "civis/tls.h"
#include "http_int.h"
#include "loop_internal.h"

#define DEFAULT_MAX_RESPONSE   (1u << 20)
#define DEFAULT_CONNECT_MS     10000L
#define DEFAULT_LOW_SPEED_S    30L
#define ERROR_TEXT_MAX         512
#define BODY_TEXT_MAX          200
#define PATH_TEXT_MAX          160
#define HOST_TEXT_MAX          128
#define ETAG_MAX               256
#define RETRY_AFTER_MAX        64
#define METHOD_MAX             16
#define MAX_HEADERS            64

struct civis_http {
	civis_loop *loop;
	CURLM *multi;
	CURLSH *share;
	civis_http_req *head;
	unsigned pending;
	uint64_t rng;
	int closing;
	char ca_file[PATH_MAX];     /* CURLOPT_CAINFO (tls.h), or "" for libcurl's */
};

struct civis_http_req {
	civis_http *http;
	civis_http_req *prev, *next;
	CURL *easy;                 /* the try in flight, or NULL */
	civis_timer_id timer;       /* the wait before the next try, or 0 */
	int in_done;

	char method[METHOD_MAX];
	char *url;
	char *what;
	char *path;                 /* for messages: no host, no query */
	const char *body;           /* in memory, or */
	size_t body_len;
	civis_http_read_fn body_read; /* streamed, or */
	uint64_t body_size;
	int (*body_fn)(void *ud, void *easy); /* the lib-internal hook (http_int.h) */
	void *body_ud;
	uint64_t body_pos;          /* next offset libcurl reads, per try */
	int body_rc;                /* the reader's failure in this try, or CIVIS_OK */
	unsigned rewinds;           /* libcurl resent a streamed body by itself */
	struct curl_slist *headers;
	char *userpwd;
	size_t max_response;
	long connect_timeout_ms;
	long low_speed_time_s;
	long timeout_ms;
	civis_retry_policy policy;
	civis_http_done_fn done;
	void *done_ud;

	/* the answer of the latest try */
	char *resp;
	size_t resp_len;
	size_t resp_cap;
	int too_big;
	char etag[ETAG_MAX];
	char retry_after[RETRY_AFTER_MAX];

	unsigned attempts;
	unsigned ambiguous;
	uint64_t first_ns;
	char error[ERROR_TEXT_MAX];
};

/* ---------------------------------------------------------- retry math */

void
civis_retry_policy_default(civis_retry_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->max_attempts = 10;
	p->base_ms = 500;
	p->cap_ms = 30000;
	p->deadline_ms = 0;
	p->max_retry_after_ms = 120000;
	p->retry_ambiguous = 1;
}

uint64_t
civis_retry_backoff_ms(const civis_retry_policy *p, unsigned attempt,
                       uint64_t retry_after_ms, uint64_t rnd)
{
	uint64_t cap = p->base_ms;
	uint64_t wait, floor_ms;
	unsigned i;

	for (i = 1; i < attempt && cap < p->cap_ms; i++)
		cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
	if (cap > p->cap_ms)
		cap = p->cap_ms;
	wait = cap == UINT64_MAX ? rnd : rnd % (cap + 1);
	floor_ms = retry_after_ms < p->max_retry_after_ms ? retry_after_ms
	                                                  : p->max_retry_after_ms;
	return wait > floor_ms ? wait : floor_ms;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int
parse_digits(const char *s, size_t n, unsigned *out)
{
	size_t i;
	unsigned v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", exactly; -1 otherwise. */
static int64_t
parse_imf_fixdate(const char *s, size_t n)
{
	static const char days[] = "MonTueWedThuFriSatSun";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	unsigned day, year, hh, mm, ss, mon = 0, i;
	int dow_ok = 0;

	if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
	    s[16] != ' ' || s[19] != ':' || s[22] != ':' || s[25] != ' ' ||
	    memcmp(s + 26, "GMT", 3) != 0)
		return -1;
	for (i = 0; i < 7; i++)
		if (memcmp(s, days + 3 * i, 3) == 0)
			dow_ok = 1;
	for (i = 0; i < 12; i++)
		if (memcmp(s + 8, months + 3 * i, 3) == 0)
			mon = i + 1;
	if (!dow_ok || mon == 0 ||
	    parse_digits(s + 5, 2, &day) || parse_digits(s + 12, 4, &year) ||
	    parse_digits(s + 17, 2, &hh) || parse_digits(s + 20, 2, &mm) ||
	    parse_digits(s + 23, 2, &ss))
		return -1;
	if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
}

uint64_t
civis_retry_after_parse_ms(const char *value, int64_t now_epoch)
{
	const char *s, *e;
	size_t n;
	int64_t when;

	if (value == NULL)
		return 0;
	s = value;
	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	n = (size_t)(e - s);
	if (n == 0)
		return 0;
	if (s[0] >= '0' && s[0] <= '9') {
		uint64_t secs = 0;
		size_t i;

		for (i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return 0;
			if (secs > UINT64_MAX / 10000)
				secs = UINT64_MAX / 10000;   /* saturate: clamped later */
			else
				secs = secs * 10 + (uint64_t)(s[i] - '0');
		}
		if (secs > UINT64_MAX / 1000)
			return UINT64_MAX / 1000 * 1000;
		return secs * 1000;
	}
	when = parse_imf_fixdate(s, n);
	if (when < 0 || when <= now_epoch)
		return 0;
	{
		/* when > now_epoch, so the unsigned difference is exact */
		uint64_t secs = (uint64_t)when - (uint64_t)now_epoch;

		return secs > UINT64_MAX / 1000 ? UINT64_MAX / 1000 * 1000 : secs * 1000;
	}
}

int
civis_http_status_retryable(long http_code)
{
	return http_code == 0 || http_code == 408 || http_code == 429 ||
	       (http_code >= 500 && http_code <= 599);
}

/* -------------------------------------------------------------- texts */

static const char *
reason_phrase(long code)
{
	switch (code) {
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 422: return "Unprocessable Content";
	case 423: return "Locked";
	case 425: return "Too Early";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	case 511: return "Network Authentication Required";
	}
	return NULL;
}

/* Copy at most cap bytes of s[0..n) into a new string, control characters
 * turned into '?'. */
static char *
dup_clean(const char *s, size_t n, size_t cap)
{
	char *d;
	size_t i;

	if (n > cap)
		n = cap;
	d = malloc(n + 1);
	if (d == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		d[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	d[n] = '\0';
	return d;
}

/* The path of an absolute URL, without scheme, host, user, query, fragment. */
static char *
url_path_for_messages(const char *url)
{
	const char *p = strstr(url, "://");
	size_t n;

	p = p != NULL ? p + 3 : url;
	p += strcspn(p, "/?#");
	if (*p != '/')
		return dup_clean("/", 1, 1);
	n = strcspn(p, "?#");
	return dup_clean(p, n, PATH_TEXT_MAX);
}

/* The host of a URL, lower-case, cleaned; "" when it has none. */
static void
url_host(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL;
	size_t i, o = 0;

	buf[0] = '\0';
	if (u == NULL)
		return;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		for (i = 0; host[i] != '\0' && o + 1 < len && i < HOST_TEXT_MAX; i++) {
			unsigned char c = (unsigned char)host[i];

			buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)tolower(c);
		}
		buf[o] = '\0';
	}
	curl_free(host);
	curl_url_cleanup(u);
}

static void
set_error(civis_http_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "<what>: <METHOD> <path>: " + the formatted detail, truncated to one line. */
static void
set_error(civis_http_req *r, const char *fmt, ...)
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

static void
append_error(civis_http_req *r, const char *text)
{
	size_t n = strlen(r->error);

	if (n < sizeof(r->error) - 1)
		(void)snprintf(r->error + n, sizeof(r->error) - n, "%s", text);
}

/* --------------------------------------------------------- randomness */

static uint64_t
rng_next(civis_http *http)
{
	uint64_t x = http->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	http->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t
rng_seed(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
		s = civis_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
	return s != 0 ? s : 0x9E3779B97F4A7C15ULL;
}

/* ---------------------------------------------------------- callbacks */

static int
method_is(const civis_http_req *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

static int
idempotent(const civis_http_req *r)
{
	return method_is(r, "GET") || method_is(r, "HEAD") || method_is(r, "PUT") ||
	       method_is(r, "DELETE");
}


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
	if ((uint64_t)offset < r->body_pos && !idempotent(r))
		r->rewinds++;
	r->body_pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

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

/* Report the outcome once, then free the request. */
static void
req_finish(civis_http_req *r, int status, long http_code)
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

static int
has_body(const civis_http_req *r)
{
	return r->body != NULL || r->body_read != NULL || r->body_fn != NULL;
}

static uint64_t
body_length(const civis_http_req *r)
{
	return r->body_read != NULL ? r->body_size : r->body_len;
}

static int
start_try(civis_http_req *r)
{
	civis_http *http = r->http;
	CURL *e;
	CURLcode c = CURLE_OK;
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
	r->body_pos = 0;
	r->body_rc = CIVIS_OK;

#define SET(opt, val) do { if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val); } while (0)
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

	if (method_is(r, "GET") && !has_body(r)) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (method_is(r, "HEAD")) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (method_is(r, "PUT")) {
		SET(CURLOPT_UPLOAD, 1L);
		if (r->body_fn == NULL) {
			SET(CURLOPT_READFUNCTION, read_cb);
			SET(CURLOPT_READDATA, (void *)r);
			SET(CURLOPT_SEEKFUNCTION, seek_cb);
			SET(CURLOPT_SEEKDATA, (void *)r);
			SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_length(r));
		}
	} else if (method_is(r, "DELETE") && !has_body(r)) {
		SET(CURLOPT_CUSTOMREQUEST, "DELETE");
	} else {
		/* POST, PATCH, a DELETE with a body, ...: a POST with another verb;
		 * no body still sends Content-Length: 0 */
		if (!method_is(r, "POST"))
			SET(CURLOPT_CUSTOMREQUEST, r->method);
		SET(CURLOPT_POST, 1L);
		if (r->body_read != NULL) {
			SET(CURLOPT_READFUNCTION, read_cb);
			SET(CURLOPT_READDATA, (void *)r);
			SET(CURLOPT_SEEKFUNCTION, seek_cb);
			SET(CURLOPT_SEEKDATA, (void *)r);
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_size);
		} else if (r->body_fn == NULL) {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
			SET(CURLOPT_POSTFIELDS, r->body != NULL ? r->body : "");
		}
	}
#undef SET
	if (c != CURLE_OK) {
		rc = c == CURLE_OUT_OF_MEMORY ? CIVIS_ENOMEM : CIVIS_EINVAL;
		goto out;
	}
	if (r->body_fn != NULL) {
		rc = r->body_fn(r->body_ud, e);
		if (rc != CIVIS_OK)
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

static void
retry_timer_cb(civis_loop *loop, void *ud)
{
	civis_http_req *r = ud;
	int rc;

	(void)loop;
	r->timer = 0;
	rc = start_try(r);
	if (rc != CIVIS_OK) {
		set_error(r, "could not start another try: %s", civis_strerror(rc));
		req_finish(r, rc, 0);
	}
}

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

/* A body text for "HTTP 503 ...: <text>": parsed, one line, short. */
static void
answer_text(const civis_http_req *r, char *buf, size_t len)
{
	buf[0] = '\0';
	if (r->resp != NULL && r->resp_len > 0)
		civis_parse_error_text(r->resp, r->resp_len, buf, len);
}

static void
on_transfer_done(void *ctx, CURL *easy, CURLcode cc)
{
	civis_http *http = ctx;
	civis_http_req *r = NULL;
	char *priv = NULL;
	char *redirect = NULL;
	char host[HOST_TEXT_MAX + 1] = "";
	long code = 0, request_size = 0;
	int status, retry = 0, maybe_acted = 0;
	char text[BODY_TEXT_MAX + 1];

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
	r = (civis_http_req *)(void *)priv;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
	if (cc == CURLE_OK && code >= 300 && code <= 399 &&
	    curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK &&
	    redirect != NULL)
		url_host(redirect, host, sizeof(host));
	curl_multi_remove_handle(http->multi, easy);
	curl_easy_cleanup(easy);
	if (r == NULL)
		return;
	r->easy = NULL;

	if (cc == CURLE_OK && code >= 200 && code <= 299) {
		req_finish(r, CIVIS_OK, code);
		return;
	}
	if (cc == CURLE_OK) {
		if (code >= 300 && code <= 399) {
			if (host[0] != '\0')
				set_error(r, "unexpected redirect to %s (not followed)", host);
			else
				set_error(r, "unexpected redirect (HTTP %ld, no Location; not followed)", code);
			req_finish(r, CIVIS_EHTTP, code);
			return;
		}
		answer_text(r, text, sizeof(text));
		if (reason_phrase(code) != NULL)
			set_error(r, "HTTP %ld %s%s%s", code, reason_phrase(code),
			          text[0] ? ": " : "", text);
		else
			set_error(r, "HTTP %ld%s%s", code, text[0] ? ": " : "", text);
		if (code == 401) {
			req_finish(r, CIVIS_EAUTH, code);
			return;
		}
		status = CIVIS_EHTTP;
		retry = civis_http_status_retryable(code);
	} else if (r->body_rc != CIVIS_OK) {
		/* the reader failed: set_error said where; another try would
		 * read the same bytes */
		req_finish(r, r->body_rc, 0);
		return;
	} else if (r->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
		set_error(r, "answer larger than %zu bytes", r->max_response);
		req_finish(r, CIVIS_ETOOBIG, code);
		return;
	} else {
		set_error(r, "%s", curl_easy_strerror(cc));
		status = curl_error_status(cc);
		retry = curl_error_retryable(cc);
		/* The server may have acted once the request went out and no
		 * answer came back; only a non-idempotent verb cares. */
		if (retry && request_size > 0 && !idempotent(r) &&
		    cc != CURLE_COULDNT_CONNECT && cc != CURLE_COULDNT_RESOLVE_HOST &&
		    cc != CURLE_COULDNT_RESOLVE_PROXY)
			maybe_acted = 1;
		code = 0;
	}
	if (maybe_acted) {
		r->ambiguous++;
		if (!r->policy.retry_ambiguous)
			retry = 0;
	}
	if (retry && (r->policy.max_attempts == 0 || r->attempts < r->policy.max_attempts)) {
		uint64_t ra = civis_retry_after_parse_ms(r->retry_after, (int64_t)time(NULL));
		uint64_t wait = civis_retry_backoff_ms(&r->policy, r->attempts, ra, rng_next(http));
		uint64_t now = civis_now_ns();
		uint64_t elapsed_ms = (now - r->first_ns) / 1000000u;

		if (r->policy.deadline_ms == 0 ||
		    (elapsed_ms < r->policy.deadline_ms &&
		     wait < r->policy.deadline_ms - elapsed_ms)) {
			uint64_t wait_ns = wait > UINT64_MAX / 2000000u ? UINT64_MAX / 2
			                                              : wait * 1000000u;

			if (civis_loop_add_timer(http->loop, now + wait_ns, retry_timer_cb, r,
			                         &r->timer) == CIVIS_OK)
				return;
		}
	}
	if (r->attempts > 1) {
		char tail[48];

		(void)snprintf(tail, sizeof(tail), " (after %u tries)", r->attempts);
		append_error(r, tail);
	}
	req_finish(r, status, code);
}

/* ------------------------------------------------------------ the API */

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
	http->rng = rng_seed();
	{
		/* chosen once: the environment may change later, our copy not */
		char buf[PATH_MAX];
		const char *ca = civis_tls_ca_file(buf, sizeof(buf));

		if (ca != NULL && strlen(ca) < sizeof(http->ca_file))
			memcpy(http->ca_file, ca, strlen(ca) + 1);
	}
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
	set_error(req, "canceled");
	req_finish(req, CIVIS_ECANCELED, 0);
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

static int
start(civis_http *http, const civis_http_spec *spec, const char *userpwd,
      civis_http_req **out)
{
	civis_http_req *r = NULL;
	size_t i;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (http->closing)
		return CIVIS_ECANCELED;
	if (spec == NULL || spec->method == NULL || spec->url == NULL || spec->done == NULL ||
	    !method_ok(spec->method) ||
	    (spec->body != NULL) + (spec->body_read != NULL) + (spec->body_fn != NULL) > 1 ||
	    (spec->body == NULL && spec->body_len != 0) ||
	    (spec->body_read == NULL && spec->body_size != 0))
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

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return CIVIS_ENOMEM;
	r->http = http;
	(void)snprintf(r->method, sizeof(r->method), "%s", spec->method);
	r->url = strdup(spec->url);
	r->what = dup_clean(spec->what != NULL ? spec->what : "request",
	                    strlen(spec->what != NULL ? spec->what : "request"), 80);
	r->path = url_path_for_messages(spec->url);
	if (r->url == NULL || r->what == NULL || r->path == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	if (userpwd != NULL) {
		r->userpwd = strdup(userpwd);
		if (r->userpwd == NULL) {
			rc = CIVIS_ENOMEM;
			goto out;
		}
	}
	for (i = 0; spec->headers != NULL && spec->headers[i] != NULL; i++) {
		rc = add_header(&r->headers, spec->headers[i]);
		if (rc != CIVIS_OK)
			goto out;
	}
	if (spec->content_type != NULL) {
		char ct[256];

		(void)snprintf(ct, sizeof(ct), "Content-Type: %s", spec->content_type);
		rc = add_header(&r->headers, ct);
		if (rc != CIVIS_OK)
			goto out;
	}
	rc = add_header(&r->headers, "Expect:");
	if (rc != CIVIS_OK)
		goto out;
	r->body = spec->body;
	r->body_len = spec->body != NULL ? spec->body_len : 0;
	r->body_read = spec->body_read;
	r->body_size = spec->body_read != NULL ? spec->body_size : 0;
	r->body_fn = spec->body_fn;
	r->body_ud = spec->body_ud;
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

	rc = start_try(r);
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

/* 1 when url is under origin: same scheme, host and port (default ports
 * made explicit), no user info, and a path that starts with origin's. */
static int
url_under_origin(const char *url, const char *origin)
{
	CURLU *u = curl_url(), *o = curl_url();
	char *us = NULL, *uh = NULL, *up = NULL, *upath = NULL, *uuser = NULL;
	char *os = NULL, *oh = NULL, *op = NULL, *opath = NULL;
	int ok = 0;

	if (u == NULL || o == NULL)
		goto out;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_set(o, CURLUPART_URL, origin, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_USER, &uuser, 0) != CURLUE_NO_USER)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &us, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &uh, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &up, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &upath, 0) != CURLUE_OK ||
	    curl_url_get(o, CURLUPART_SCHEME, &os, 0) != CURLUE_OK ||
	    curl_url_get(o, CURLUPART_HOST, &oh, 0) != CURLUE_OK ||
	    curl_url_get(o, CURLUPART_PORT, &op, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_get(o, CURLUPART_PATH, &opath, 0) != CURLUE_OK)
		goto out;
	ok = strcasecmp(us, os) == 0 && strcasecmp(uh, oh) == 0 && strcmp(up, op) == 0 &&
	     strncmp(upath, opath, strlen(opath)) == 0;
out:
	curl_free(us);
	curl_free(uh);
	curl_free(up);
	curl_free(upath);
	curl_free(uuser);
	curl_free(os);
	curl_free(oh);
	curl_free(op);
	curl_free(opath);
	curl_url_cleanup(u);
	curl_url_cleanup(o);
	return ok;
}

int
civis__http_start_auth(civis_http *http, const civis_http_spec *spec,
                      const char *origin, const char *userpwd, civis_http_req **out)
{
	if (out != NULL)
		*out = NULL;
	if (spec == NULL || spec->url == NULL || origin == NULL || userpwd == NULL)
		return CIVIS_EINVAL;
	if (!url_under_origin(spec->url, origin))
		return CIVIS_EUNSAFE;
	return start(http, spec, userpwd, out);
}
