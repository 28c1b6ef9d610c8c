/* http_proxy.c: which proxy a request goes through.
 *
 * The agent decides, not libcurl's own reading of the environment, so that
 * what -v reports is what is used and a plain-http endpoint never sends the
 * key through a proxy in clear: every try sets CURLOPT_PROXY to this
 * module's answer ("" = direct) and CURLOPT_NOPROXY so that libcurl does
 * not apply no_proxy a second time.
 *
 * The rules are libcurl's for https (lib/url.c detect_proxy, lib/noproxy.c):
 * https_proxy, else HTTPS_PROXY, else all_proxy, else ALL_PROXY (one that is
 * set but empty means direct and stops the search); no_proxy, else
 * NO_PROXY: "*" alone bypasses every host; otherwise a list separated by
 * commas or blanks of names (a leading dot ignored; a name matches itself
 * and its subdomains) and IP addresses, optionally as CIDR ("10.0.0.0/8",
 * "fd00::/8"; "/0" means the address alone), matched only against a host
 * given as an address.
 * http:// URLs (loopback only, by the endpoint and storage rules) never go
 * through a proxy: http_proxy and HTTP_PROXY are not read at all. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dl.h"
#include "civis/civis.h"
#include "http_int.h"

#define SCHEME_MAX 16
#define HOST_MAX   256

/* Copy the first variable of names[] that is set (even empty); *set says
 * whether one was. A value too long for the snapshot is dropped whole. */
static void
take(char *dst, size_t len, int *set, const char *const names[2],
     const char *(*lookup)(const char *name, void *ud), void *ud)
{
	int i;

	dst[0] = '\0';
	*set = 0;
	for (i = 0; i < 2; i++) {
		const char *v = lookup(names[i], ud);

		if (v == NULL)
			continue;
		*set = 1;
		if (strlen(v) < len)
			memcpy(dst, v, strlen(v) + 1);
		return;
	}
}

void
civis__proxy_env_read(civis__proxy_env *pe, const char *(*lookup)(const char *name, void *ud),
                      void *ud)
{
	static const char *const https_names[2] = { "https_proxy", "HTTPS_PROXY" };
	static const char *const all_names[2] = { "all_proxy", "ALL_PROXY" };
	static const char *const no_names[2] = { "no_proxy", "NO_PROXY" };
	int no_set;

	memset(pe, 0, sizeof(*pe));
	take(pe->https, sizeof(pe->https), &pe->https_set, https_names, lookup, ud);
	take(pe->all, sizeof(pe->all), &pe->all_set, all_names, lookup, ud);
	take(pe->no, sizeof(pe->no), &no_set, no_names, lookup, ud);
}

/* host (an address, brackets off) inside token addr[/bits]? -1: token is
 * not an address of host's family. */
static int
cidr_match(int family, const unsigned char *host, const char *token, size_t n)
{
	unsigned char net[16];
	char buf[64];
	const char *slash;
	size_t alen = family == AF_INET ? 4 : 16, i;
	unsigned long bits = alen * 8;

	if (n >= sizeof(buf))
		return -1;
	memcpy(buf, token, n);
	buf[n] = '\0';
	slash = strchr(buf, '/');
	if (slash != NULL) {
		char *end = NULL;

		bits = strtoul(slash + 1, &end, 10);
		if (end == slash + 1 || *end != '\0' || bits > alen * 8)
			return -1;
		if (bits == 0)
			bits = alen * 8;   /* libcurl: "/0" is the address itself */
		buf[slash - buf] = '\0';
	}
	if (inet_pton(family, buf, net) != 1)
		return -1;
	for (i = 0; i < alen && bits > 0; i++) {
		unsigned mask = bits >= 8 ? 0xffu : (0xffu << (8 - bits)) & 0xffu;

		if ((host[i] & mask) != (net[i] & mask))
			return 0;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return 1;
}

/* A name host against one no_proxy token (leading and trailing dots off). */
static int
name_match(const char *host, size_t hlen, const char *tok, size_t n)
{
	while (n > 0 && tok[0] == '.') {
		tok++;
		n--;
	}
	if (n > 0 && tok[n - 1] == '.')
		n--;
	if (n == 0 || n > hlen)
		return 0;
	if (n == hlen)
		return strncasecmp(host, tok, n) == 0;
	return host[hlen - n - 1] == '.' && strncasecmp(host + hlen - n, tok, n) == 0;
}

int
civis__noproxy_match(const char *list, const char *host)
{
	unsigned char addr[16];
	char h[HOST_MAX];
	size_t hlen = strlen(host);
	int family = 0;
	const char *p = list;

	if (list == NULL)
		return 0;
	while (*p == ' ' || *p == '\t')
		p++;
	if (p[0] == '*' && p[1 + strspn(p + 1, " \t")] == '\0')
		return 1;
	if (hlen >= sizeof(h))
		return 0;
	/* brackets off an IPv6 address, the trailing dot off a name */
	if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') {
		memcpy(h, host + 1, hlen - 2);
		hlen -= 2;
	} else {
		memcpy(h, host, hlen);
	}
	h[hlen] = '\0';
	if (inet_pton(AF_INET, h, addr) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, h, addr) == 1)
		family = AF_INET6;
	else if (hlen > 0 && h[hlen - 1] == '.')
		h[--hlen] = '\0';
	while (*p != '\0') {
		size_t n;

		p += strspn(p, ", \t");
		n = strcspn(p, ", \t");
		if (n == 0)
			break;
		if (family != 0 ? cidr_match(family, addr, p, n) == 1 : name_match(h, hlen, p, n))
			return 1;
		p += n;
	}
	return 0;
}

int
civis__proxy_pick(const civis__proxy_env *pe, const char *url, char *buf, size_t len)
{
	char scheme[SCHEME_MAX], host[HOST_MAX];
	const char *v;
	int rc;

	if (len == 0)
		return CIVIS_EINVAL;
	buf[0] = '\0';
	rc = civis__http_url_target(url, scheme, sizeof(scheme), host, sizeof(host));
	if (rc != CIVIS_OK)
		return rc;
	if (strcmp(scheme, "https") != 0)
		return CIVIS_OK;               /* plain http: never a proxy */
	if (pe->https_set)
		v = pe->https;
	else if (pe->all_set)
		v = pe->all;
	else
		return CIVIS_OK;
	if (v[0] == '\0' || civis__noproxy_match(pe->no, host))
		return CIVIS_OK;
	if (strlen(v) >= len)
		return CIVIS_ETOOBIG;
	memcpy(buf, v, strlen(v) + 1);
	return CIVIS_OK;
}

void
civis__proxy_display(const char *proxy, char *buf, size_t len)
{
	CURLU *u = NULL;
	char *s = NULL, *h = NULL, *port = NULL, *withscheme = NULL;
	size_t n = strlen(proxy);

	if (len == 0)
		return;
	buf[0] = '\0';
	if (n == 0)
		return;
	/* libcurl takes a proxy without a scheme as http:// */
	withscheme = malloc(n + 8);
	u = curl_url();
	if (withscheme == NULL || u == NULL)
		goto out;
	(void)snprintf(withscheme, n + 8, "%s%s", strstr(proxy, "://") ? "" : "http://", proxy);
	if (curl_url_set(u, CURLUPART_URL, withscheme, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &s, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK) {
		(void)snprintf(buf, len, "(a proxy setting that is not a URL)");
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		port = NULL;
	(void)snprintf(buf, len, "%s://%s%s%s", s, h, port != NULL ? ":" : "",
	               port != NULL ? port : "");
	for (n = 0; buf[n] != '\0'; n++)
		if ((unsigned char)buf[n] < 0x20 || buf[n] == 0x7f)
			buf[n] = '?';
out:
	curl_free(s);
	curl_free(h);
	curl_free(port);
	curl_url_cleanup(u);
	free(withscheme);
}
