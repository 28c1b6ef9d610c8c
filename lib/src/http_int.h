/* http_int.h: libcivis-internal parts of civis_http (not installed): what
 * client.c and the http*.c files use of each other. */
#ifndef CIVIS_HTTP_INT_H
#define CIVIS_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>
#include "civis/http.h"

/* Start a request that carries `userpwd` ("key:") as Basic auth plus the
 * extra headers; refused with CIVIS_EUNSAFE unless spec->url is under
 * `origin` (scheme://host:port/path of the API). Used by client.c. */
int civis__http_start_auth(civis_http *http, const civis_http_spec *spec,
                           const char *origin, const char *userpwd,
                           civis_http_req **out);


/* ---- http_retry.c: the policy, as pure functions */

/* After a failed try: 1 and *wait_ms when the policy allows another one
 * (`attempts` made so far, `elapsed_ms` since the first, the Retry-After
 * header's value or "", `rnd` a uniform 64-bit value); else 0: the wait
 * would pass max_attempts or end past the deadline. */
int civis__retry_next(const civis_retry_policy *p, unsigned attempts, uint64_t elapsed_ms,
                      const char *retry_after, int64_t now_epoch, uint64_t rnd,
                      uint64_t *wait_ms);
/* xorshift64*: fast, not for secrets; the seed from getrandom(). */
uint64_t civis__rng_next(uint64_t *state);
uint64_t civis__rng_seed(void);

/* ---- http_text.c: texts and URL parts for messages, the origin check */

/* "Service Unavailable" for 503, NULL for a code it does not name. */
const char *civis__http_reason(long code);
/* A new string of at most cap bytes of s[0..n), control characters as '?'. */
char *civis__http_dup_clean(const char *s, size_t n, size_t cap);
/* The path of an absolute URL, without scheme, host, user, query, fragment. */
char *civis__http_url_path(const char *url);
/* The host of a URL, lower-case, cleaned; "" when it has none. */
void civis__http_url_host(const char *url, char *buf, size_t len);
/* 1 when url is under origin: same scheme, host and port (default ports
 * made explicit), no user info, and a path that starts with origin's. */
int civis__http_url_under_origin(const char *url, const char *origin);
/* The scheme and host of an absolute URL, lower-case (an IPv6 host keeps
 * its brackets). CIVIS_EINVAL when it does not parse or does not fit. */
int civis__http_url_target(const char *url, char *scheme, size_t slen, char *host, size_t hlen);
/* localhost, 127.0.0.0/8 or [::1]. */
int civis__http_host_is_loopback(const char *host);
/* Append s[0..n) to buf (of buflen, *pos used, kept NUL-terminated): tabs
 * and line ends as spaces, other control characters dropped, never
 * splitting a UTF-8 sequence. */
void civis__text_clean_append(char *buf, size_t buflen, size_t *pos, const char *s, size_t n);
/* Drop trailing spaces. */
void civis__text_trim_end(char *buf, size_t *pos);


/* ---- http_proxy.c: which proxy a request goes through */

#define CIVIS__PROXY_MAX 2048

/* The proxy variables as they were when read (a value that does not fit
 * is dropped). */
typedef struct civis__proxy_env {
	char https[CIVIS__PROXY_MAX]; /* https_proxy, else HTTPS_PROXY */
	char all[CIVIS__PROXY_MAX];   /* all_proxy, else ALL_PROXY */
	char no[CIVIS__PROXY_MAX];    /* no_proxy, else NO_PROXY */
	int https_set, all_set;       /* set, perhaps empty (empty = direct) */
} civis__proxy_env;

void civis__proxy_env_read(civis__proxy_env *pe,
                           const char *(*lookup)(const char *name, void *ud), void *ud);
/* The proxy for url, as set (credentials and all, for CURLOPT_PROXY) into
 * buf, "" for direct. CIVIS_EINVAL for a URL that does not parse. */
int  civis__proxy_pick(const civis__proxy_env *pe, const char *url, char *buf, size_t len);
/* 1 when host (a name, an IPv4 address or a bracketed IPv6 one) is in the
 * no_proxy list. */
int  civis__noproxy_match(const char *list, const char *host);
/* "scheme://host[:port]" of a proxy setting, without its credentials. */
void civis__proxy_display(const char *proxy, char *buf, size_t len);

#endif
