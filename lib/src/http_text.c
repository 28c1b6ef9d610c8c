/* http_text.c: what civis_http says about a request and its answer, and
 * the URL checks behind it: reason phrases, cleaned copies, a URL's path
 * and host for messages (never its query or user info), the origin check
 * that keeps the key on the API, and the generic one-line reader of an
 * error answer. Nothing here knows the Civis API. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dl.h"
#include "civis/civis.h"
#include "http_int.h"

#define PATH_TEXT_MAX 160
#define HOST_TEXT_MAX 128

const char *
civis__http_reason(long code)
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

char *
civis__http_dup_clean(const char *s, size_t n, size_t cap)
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

char *
civis__http_url_path(const char *url)
{
	const char *p = strstr(url, "://");
	size_t n;

	p = p != NULL ? p + 3 : url;
	p += strcspn(p, "/?#");
	if (*p != '/')
		return civis__http_dup_clean("/", 1, 1);
	n = strcspn(p, "?#");
	return civis__http_dup_clean(p, n, PATH_TEXT_MAX);
}

void
civis__http_url_host(const char *url, char *buf, size_t len)
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

int
civis__http_url_target(const char *url, char *scheme, size_t slen, char *host, size_t hlen)
{
	CURLU *u = curl_url();
	char *s = NULL, *h = NULL;
	int rc = CIVIS_EINVAL;
	size_t i;

	scheme[0] = host[0] = '\0';
	if (u == NULL)
		return CIVIS_ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &s, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK ||
	    strlen(s) >= slen || strlen(h) >= hlen)
		goto out;
	for (i = 0; s[i] != '\0'; i++)
		scheme[i] = (char)tolower((unsigned char)s[i]);
	scheme[i] = '\0';
	for (i = 0; h[i] != '\0'; i++)
		host[i] = (char)tolower((unsigned char)h[i]);
	host[i] = '\0';
	rc = CIVIS_OK;
out:
	if (rc != CIVIS_OK)
		scheme[0] = host[0] = '\0';
	curl_free(s);
	curl_free(h);
	curl_url_cleanup(u);
	return rc;
}

int
civis__http_host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	char tmp[64];
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (n > 2 && n < sizeof(tmp) && host[0] == '[' && host[n - 1] == ']') {
		memcpy(tmp, host + 1, n - 2);
		tmp[n - 2] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) == 1)
			return memcmp(&a6, &in6addr_loopback, sizeof(a6)) == 0;
	}
	return 0;
}

int
civis__http_url_under_origin(const char *url, const char *origin)
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

/* ---------------------------------------------------- one-line texts */

void
civis__text_clean_append(char *buf, size_t buflen, size_t *pos, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n && *pos + 1 < buflen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\t' || c == '\n' || c == '\r')
			c = ' ';
		if (c < 0x20 || c == 0x7f)
			continue;
		if (c >= 0xc0) {
			/* a lead byte: copy the whole sequence or nothing */
			size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
			size_t k;

			if (i + need > n || *pos + need + 1 > buflen)
				break;
			for (k = 1; k < need; k++)
				if (((unsigned char)s[i + k] & 0xc0) != 0x80)
					break;
			if (k < need)
				continue;   /* a broken sequence: drop the lead byte */
			memcpy(buf + *pos, s + i, need);
			*pos += need;
			i += need - 1;
			continue;
		}
		if (c >= 0x80)
			continue;   /* a stray continuation byte */
		buf[(*pos)++] = (char)c;
	}
	buf[*pos] = '\0';
}

void
civis__text_trim_end(char *buf, size_t *pos)
{
	while (*pos > 0 && buf[*pos - 1] == ' ')
		buf[--*pos] = '\0';
}

void
civis_http_error_text_line(const char *body, size_t len, char *buf, size_t buflen)
{
	size_t pos = 0, i = 0, end;

	if (buf == NULL || buflen == 0)
		return;
	buf[0] = '\0';
	if (body == NULL || len == 0)
		return;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' ||
	                   body[i] == '\n'))
		i++;
	end = i;
	while (end < len && body[end] != '\n' && body[end] != '\r')
		end++;
	civis__text_clean_append(buf, buflen, &pos, body + i, end - i);
	civis__text_trim_end(buf, &pos);
}
