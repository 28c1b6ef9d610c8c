/* client.c: the Civis API client: configuration from the environment,
 * the request headers and auth, and the 401 latch.
 *
 * The key is sent only to URLs under the endpoint (civis__http_start_auth
 * checks the origin) and never appears in a message. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dl.h"
#include "civis/civis.h"
#include "civis/client.h"
#include "http_int.h"

#define MAX_KEY_LEN       1024u
#define MAX_ENDPOINT_LEN  2048u
#define MAX_PATH_LEN      4096u
#define QUOTE_MAX         80u
#define OWN_HEADERS       4u       /* User-Agent, job, run, Accept */
#define MAX_CALL_HEADERS  60u      /* the caller's extra headers */

struct call {
	civis_client *c;
	struct call *prev, *next;
	civis_http_req *req;
	civis_http_done_fn done;
	void *ud;
};

struct civis_client {
	civis_loop *loop;
	civis_http *http;
	civis_client_config cfg;
	char *userpwd;            /* "key:" */
	char ua[64];
	char job_hdr[48];
	char run_hdr[48];
	int auth_rejected;
	struct call *calls;
};

/* ------------------------------------------------------------- config */

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

/* A value for a message: control characters as '?', at most QUOTE_MAX
 * bytes, "..." when cut. */
static void
quote(const char *v, char *buf, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < QUOTE_MAX && v[i] != '\0' && o + 1 < len; i++) {
		unsigned char c = (unsigned char)v[i];

		buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (v[i] != '\0' && o + 4 < len) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
}

/* Set and non-empty, or NULL. */
static const char *
look(const char *(*lookup)(const char *, void *), void *ud, const char *name)
{
	const char *v = lookup(name, ud);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

static int
parse_positive_id(const char *name, const char *v, int64_t *out, char *err, size_t errlen)
{
	char q[QUOTE_MAX + 8];
	size_t i, n = strlen(v);
	long long x;
	char *end = NULL;

	for (i = 0; i < n; i++)
		if (v[i] < '0' || v[i] > '9')
			break;
	if (n > 0 && i == n && n <= 19) {
		errno = 0;
		x = strtoll(v, &end, 10);
		if (errno == 0 && end == v + n && x > 0) {
			*out = (int64_t)x;
			return CIVIS_OK;
		}
	}
	quote(v, q, sizeof(q));
	errf(err, errlen, "%s is not a positive integer: '%s'", name, q);
	return CIVIS_ECONFIG;
}

/* Validate and normalize CIVIS_API_ENDPOINT into *out (ends with '/'). */
static int
parse_endpoint(const char *v, char **out, char *err, size_t errlen)
{
	const char *name = "CIVIS_API_ENDPOINT";
	CURLU *u = NULL;
	char *withslash = NULL, *scheme = NULL, *host = NULL, *user = NULL, *pass = NULL;
	char *query = NULL, *frag = NULL, *full = NULL;
	char q[QUOTE_MAX + 8];
	size_t n = strlen(v);
	int rc = CIVIS_ECONFIG;

	*out = NULL;
	/* The URL parser is libcurl's, loaded here on first use (never reached
	 * without the CIVIS_* variables). Not ENOTFOUND: that means "not set". */
	if (civis__dl_curl(err, errlen) != CIVIS_OK)
		return CIVIS_ESYS;
	quote(v, q, sizeof(q));
	if (n > MAX_ENDPOINT_LEN) {
		errf(err, errlen, "%s is longer than %u bytes", name, MAX_ENDPOINT_LEN);
		goto out;
	}
	withslash = malloc(n + 2);
	u = curl_url();
	if (withslash == NULL || u == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	memcpy(withslash, v, n);
	if (n == 0 || v[n - 1] != '/')
		withslash[n++] = '/';
	withslash[n] = '\0';
	if (strpbrk(withslash, " \t\r\n") != NULL ||
	    curl_url_set(u, CURLUPART_URL, withslash, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
		errf(err, errlen, "%s is not a valid URL: '%s'", name, q);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_NO_USER ||
	    curl_url_get(u, CURLUPART_PASSWORD, &pass, 0) != CURLUE_NO_PASSWORD) {
		/* no quote: the value holds a credential */
		errf(err, errlen, "%s must not contain a user name or password", name);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_NO_QUERY ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) != CURLUE_NO_FRAGMENT) {
		errf(err, errlen, "%s must not contain a query or fragment", name);
		goto out;
	}
	if (strcasecmp(scheme, "https") != 0) {
		if (strcasecmp(scheme, "http") != 0)
			errf(err, errlen, "%s must use https://: '%s'", name, q);
		else if (!civis__http_host_is_loopback(host))
			errf(err, errlen, "%s must use https:// for a non-loopback host: '%s'",
			     name, q);
		else
			rc = CIVIS_OK;
		if (rc != CIVIS_OK)
			goto out;
	}
	if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
		errf(err, errlen, "%s is not a valid URL: '%s'", name, q);
		rc = CIVIS_ECONFIG;
		goto out;
	}
	n = strlen(full);
	if (n == 0 || full[n - 1] != '/') {
		errf(err, errlen, "%s is not a valid URL: '%s'", name, q);
		rc = CIVIS_ECONFIG;
		goto out;
	}
	*out = strdup(full);
	rc = *out != NULL ? CIVIS_OK : CIVIS_ENOMEM;
out:
	free(withslash);
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(pass);
	curl_free(query);
	curl_free(frag);
	curl_free(full);
	curl_url_cleanup(u);
	return rc;
}

static int
check_key(const char *key, char *err, size_t errlen)
{
	size_t i, n = strlen(key);

	if (n > MAX_KEY_LEN) {
		errf(err, errlen, "CIVIS_API_KEY is longer than %u bytes", MAX_KEY_LEN);
		return CIVIS_ECONFIG;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];

		if (c <= 0x20 || c >= 0x7f || c == ':') {
			errf(err, errlen, "CIVIS_API_KEY has a character that cannot be sent "
			     "(space, control, non-ASCII or ':')");
			return CIVIS_ECONFIG;
		}
	}
	return CIVIS_OK;
}

/* "A", "A and B" */
static void
join_names(const char *const *names, size_t n, char *buf, size_t len)
{
	if (n == 1)
		(void)snprintf(buf, len, "%s", names[0]);
	else if (n == 2)
		(void)snprintf(buf, len, "%s and %s", names[0], names[1]);
	else
		(void)snprintf(buf, len, "%s, %s and %s", names[0], names[1], names[2]);
}

void
civis_client_config_dispose(civis_client_config *cfg)
{
	if (cfg == NULL)
		return;
	if (cfg->api_key != NULL) {
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
		free(cfg->api_key);
	}
	free(cfg->endpoint);
	memset(cfg, 0, sizeof(*cfg));
}

int
civis_client_config_parse(civis_client_config *out,
                          const char *(*lookup)(const char *name, void *ud),
                          void *ud, char *err, size_t errlen)
{
	static const char *const names[3] = { "CIVIS_API_KEY", "CIVIS_JOB_ID", "CIVIS_RUN_ID" };
	const char *vals[3];
	const char *set[3], *unset[3];
	const char *endpoint;
	size_t nset = 0, nunset = 0, i;
	int rc;

	memset(out, 0, sizeof(*out));
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	for (i = 0; i < 3; i++) {
		vals[i] = look(lookup, ud, names[i]);
		if (vals[i] != NULL)
			set[nset++] = names[i];
		else
			unset[nunset++] = names[i];
	}
	if (nset == 0) {
		errf(err, errlen, "CIVIS_API_KEY, CIVIS_JOB_ID and CIVIS_RUN_ID are not set");
		return CIVIS_ENOTFOUND;
	}
	if (nunset > 0) {
		char a[96], b[96];

		join_names(set, nset, a, sizeof(a));
		join_names(unset, nunset, b, sizeof(b));
		errf(err, errlen, "%s %s set but %s %s not; set all three of CIVIS_API_KEY, "
		     "CIVIS_JOB_ID, CIVIS_RUN_ID, or none", a, nset > 1 ? "are" : "is",
		     b, nunset > 1 ? "are" : "is");
		return CIVIS_ECONFIG;
	}
	rc = check_key(vals[0], err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	rc = parse_positive_id("CIVIS_JOB_ID", vals[1], &out->job_id, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	rc = parse_positive_id("CIVIS_RUN_ID", vals[2], &out->run_id, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	endpoint = look(lookup, ud, "CIVIS_API_ENDPOINT");
	rc = parse_endpoint(endpoint != NULL ? endpoint : CIVIS_DEFAULT_ENDPOINT,
	                    &out->endpoint, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	out->api_key = strdup(vals[0]);
	if (out->api_key == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	rc = CIVIS_OK;
out:
	if (rc != CIVIS_OK) {
		civis_client_config_dispose(out);
		if (rc == CIVIS_ENOMEM)
			errf(err, errlen, "out of memory reading the CIVIS_* variables");
	}
	return rc;
}

static const char *
env_lookup(const char *name, void *ud)
{
	(void)ud;
	return getenv(name);
}

int
civis_client_config_from_env(civis_client_config *out, char *err, size_t errlen)
{
	return civis_client_config_parse(out, env_lookup, NULL, err, errlen);
}

/* ------------------------------------------------------------- client */

int
civis_client_new(civis_client **out, civis_loop *loop, civis_http *http,
                 const civis_client_config *cfg)
{
	civis_client *c;
	size_t klen;
	int rc;

	*out = NULL;
	if (loop == NULL || http == NULL || cfg == NULL || cfg->endpoint == NULL ||
	    cfg->api_key == NULL || cfg->job_id <= 0 || cfg->run_id <= 0)
		return CIVIS_EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return CIVIS_ENOMEM;
	c->loop = loop;
	c->http = http;
	c->cfg.job_id = cfg->job_id;
	c->cfg.run_id = cfg->run_id;
	c->cfg.endpoint = strdup(cfg->endpoint);
	c->cfg.api_key = strdup(cfg->api_key);
	klen = strlen(cfg->api_key);
	/* Zeroed: civis_client_free wipes strlen(userpwd) bytes, also when a
	 * strdup above failed before userpwd was filled in. */
	c->userpwd = calloc(1, klen + 2);
	if (c->cfg.endpoint == NULL || c->cfg.api_key == NULL || c->userpwd == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	memcpy(c->userpwd, cfg->api_key, klen);
	c->userpwd[klen] = ':';
	c->userpwd[klen + 1] = '\0';
	(void)snprintf(c->ua, sizeof(c->ua), "User-Agent: civis-agent/%s", civis_version());
	(void)snprintf(c->job_hdr, sizeof(c->job_hdr), "X-Civis-Job-ID: %lld",
	               (long long)cfg->job_id);
	(void)snprintf(c->run_hdr, sizeof(c->run_hdr), "X-Civis-Run-ID: %lld",
	               (long long)cfg->run_id);
	*out = c;
	c = NULL;
	rc = CIVIS_OK;
out:
	if (c != NULL)
		civis_client_free(c);
	return rc;
}

/* Cancels the calls in flight (their done runs with CIVIS_ECANCELED). */
void
civis_client_free(civis_client *c)
{
	if (c == NULL)
		return;
	while (c->calls != NULL)
		civis_http_cancel(c->http, c->calls->req);
	if (c->userpwd != NULL) {
		explicit_bzero(c->userpwd, strlen(c->userpwd));
		free(c->userpwd);
	}
	civis_client_config_dispose(&c->cfg);
	free(c);
}

int
civis_client_auth_rejected(const civis_client *c)
{
	return c->auth_rejected;
}

const civis_client_config *
civis_client_get_config(const civis_client *c)
{
	return &c->cfg;
}

civis_http *
civis_client_http(civis_client *c)
{
	return c->http;
}

int
civis_client_run_path(const civis_client *c, const char *suffix, char *buf, size_t len)
{
	int n;

	if (len == 0)
		return CIVIS_EINVAL;
	buf[0] = '\0';
	n = snprintf(buf, len, "scripts/containers/%lld/runs/%lld%s",
	             (long long)c->cfg.job_id, (long long)c->cfg.run_id,
	             suffix != NULL ? suffix : "");
	if (n < 0 || (size_t)n >= len) {
		buf[0] = '\0';
		return CIVIS_ETOOBIG;
	}
	return CIVIS_OK;
}

static void
call_unlink(struct call *k)
{
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		k->c->calls = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	k->prev = k->next = NULL;
}

static void
call_done(void *ud, const civis_http_result *res)
{
	struct call *k = ud;

	call_unlink(k);
	if (res->status == CIVIS_EAUTH)
		k->c->auth_rejected = 1;
	k->done(k->ud, res);
	free(k);
}

int
civis_client_call(civis_client *c, const civis_http_spec *spec, civis_http_req **out)
{
	civis_http_spec s;
	const char *hdrs[OWN_HEADERS + MAX_CALL_HEADERS + 1];
	struct call *k = NULL;
	const char *path;
	char *url = NULL;
	size_t elen, plen, nh = 0, i;
	int rc;

	if (out != NULL)
		*out = NULL;
	if (c->auth_rejected)
		return CIVIS_EAUTH;
	if (spec == NULL || spec->url == NULL || spec->done == NULL)
		return CIVIS_EINVAL;
	path = spec->url;
	/* a path under the endpoint, never another URL */
	if (strstr(path, "://") != NULL || strncmp(path, "//", 2) == 0 ||
	    strpbrk(path, " \t\r\n\\") != NULL)
		return CIVIS_EINVAL;
	while (*path == '/')
		path++;
	for (i = 0; spec->headers != NULL && spec->headers[i] != NULL; i++)
		if (i >= MAX_CALL_HEADERS)
			return CIVIS_EINVAL;
	plen = strlen(path);
	elen = strlen(c->cfg.endpoint);
	if (plen > MAX_PATH_LEN)
		return CIVIS_ETOOBIG;
	url = malloc(elen + plen + 1);
	k = calloc(1, sizeof(*k));
	if (url == NULL || k == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	memcpy(url, c->cfg.endpoint, elen);
	memcpy(url + elen, path, plen + 1);

	hdrs[nh++] = c->ua;
	hdrs[nh++] = c->job_hdr;
	hdrs[nh++] = c->run_hdr;
	hdrs[nh++] = "Accept: application/json";
	for (i = 0; spec->headers != NULL && spec->headers[i] != NULL; i++)
		hdrs[nh++] = spec->headers[i];
	hdrs[nh] = NULL;
	s = *spec;
	s.url = url;
	s.headers = hdrs;
	if (s.content_type == NULL && (s.body != NULL || s.body_read != NULL))
		s.content_type = "application/json";
	if (s.error_text == NULL)
		s.error_text = civis_parse_error_text;   /* {"error":..,"errorDescription":..} */
	s.done = call_done;
	s.done_ud = k;
	k->c = c;
	k->done = spec->done;
	k->ud = spec->done_ud;
	rc = civis__http_start_auth(c->http, &s, c->cfg.endpoint, c->userpwd, &k->req);
	if (rc != CIVIS_OK)
		goto out;
	k->next = c->calls;
	if (c->calls != NULL)
		c->calls->prev = k;
	c->calls = k;
	if (out != NULL)
		*out = k->req;
	k = NULL;
out:
	free(k);
	free(url);
	return rc;
}
