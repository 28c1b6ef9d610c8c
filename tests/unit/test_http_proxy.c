/* test_http_proxy.c: which proxy a request goes through (http_proxy.c):
 * the variables read and their order, no_proxy matching (names, suffixes,
 * addresses, CIDR), plain http never proxied, credentials never shown, and
 * civis_http_proxy_for reading the environment at civis_http_new. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "../../lib/src/dl.h"
#include "../../lib/src/http_int.h"

static const char *const *vars;   /* name, value, name, value, ..., NULL */

static const char *
lookup(const char *name, void *ud)
{
	size_t i;

	(void)ud;
	for (i = 0; vars[i] != NULL; i += 2)
		if (strcmp(vars[i], name) == 0)
			return vars[i + 1];
	return NULL;
}

static const char *
pick(const char *const *env, const char *url)
{
	static char buf[CIVIS__PROXY_MAX];
	civis__proxy_env pe;

	vars = env;
	civis__proxy_env_read(&pe, lookup, NULL);
	assert_int_equal(civis__proxy_pick(&pe, url, buf, sizeof(buf)), CIVIS_OK);
	return buf;
}

static int
setup(void **state)
{
	(void)state;
	assert_int_equal(civis__dl_curl(NULL, 0), CIVIS_OK);   /* the URL parser */
	return 0;
}

static void
test_order_of_variables(void **state)
{
	static const char *const lower_first[] = { "https_proxy", "http://lower:1",
		"HTTPS_PROXY", "http://upper:2", "ALL_PROXY", "http://all:3", NULL };
	static const char *const upper[] = { "HTTPS_PROXY", "http://upper:2",
		"all_proxy", "http://all:3", NULL };
	static const char *const all_only[] = { "ALL_PROXY", "socks5h://all:1080",
		"http_proxy", "http://plain:8080", NULL };
	static const char *const empty_stops[] = { "https_proxy", "", "ALL_PROXY",
		"http://all:3", NULL };
	static const char *const http_only[] = { "http_proxy", "http://plain:8080",
		"HTTP_PROXY", "http://plain:8080", NULL };
	static const char *const none[] = { NULL };

	(void)state;
	assert_string_equal(pick(lower_first, "https://api.example.com/x"), "http://lower:1");
	assert_string_equal(pick(upper, "https://api.example.com/x"), "http://upper:2");
	assert_string_equal(pick(all_only, "https://api.example.com/x"), "socks5h://all:1080");
	/* set but empty: direct, and the search stops there (libcurl's rule) */
	assert_string_equal(pick(empty_stops, "https://api.example.com/x"), "");
	/* http_proxy is for http://, which never goes through a proxy */
	assert_string_equal(pick(http_only, "https://api.example.com/x"), "");
	assert_string_equal(pick(none, "https://api.example.com/x"), "");
}

static void
test_plain_http_never_proxied(void **state)
{
	static const char *const all[] = { "http_proxy", "http://p:1", "HTTP_PROXY", "http://p:1",
		"https_proxy", "http://p:1", "ALL_PROXY", "http://p:1", "all_proxy", "http://p:1",
		NULL };

	(void)state;
	assert_string_equal(pick(all, "http://127.0.0.1:8080/scripts/"), "");
	assert_string_equal(pick(all, "http://localhost/"), "");
	assert_string_equal(pick(all, "http://[::1]:9/"), "");
	assert_string_equal(pick(all, "HTTP://127.0.0.1/"), "");
	assert_string_equal(pick(all, "https://127.0.0.1/"), "http://p:1");
}

static void
test_no_proxy(void **state)
{
	static const char *const star[] = { "https_proxy", "http://p:1", "NO_PROXY", " * ", NULL };
	static const char *const lower_wins[] = { "https_proxy", "http://p:1",
		"no_proxy", "other.com", "NO_PROXY", "*", NULL };
	static const char *const list[] = { "HTTPS_PROXY", "http://p:1",
		"no_proxy", "localhost, .internal.corp,civisanalytics.com  example.org.,"
		"10.0.0.0/8,192.168.1.7,fd00::/8", NULL };

	(void)state;
	assert_string_equal(pick(star, "https://anything.example/"), "");
	assert_string_equal(pick(lower_wins, "https://anything.example/"), "http://p:1");
	assert_string_equal(pick(lower_wins, "https://other.com/"), "");
	/* names: the name itself and its subdomains, not a longer name */
	assert_string_equal(pick(list, "https://civisanalytics.com/"), "");
	assert_string_equal(pick(list, "https://api.civisanalytics.com/"), "");
	assert_string_equal(pick(list, "https://API.CivisAnalytics.com./"), "");
	assert_string_equal(pick(list, "https://evilcivisanalytics.com/"), "http://p:1");
	assert_string_equal(pick(list, "https://civisanalytics.com.evil.net/"), "http://p:1");
	assert_string_equal(pick(list, "https://s3.internal.corp/"), "");
	assert_string_equal(pick(list, "https://internal.corp/"), "");
	assert_string_equal(pick(list, "https://www.example.org/"), "");
	/* addresses: exact or CIDR, IPv4 and IPv6 */
	assert_string_equal(pick(list, "https://10.200.3.4/"), "");
	assert_string_equal(pick(list, "https://11.0.0.1/"), "http://p:1");
	assert_string_equal(pick(list, "https://192.168.1.7/"), "");
	assert_string_equal(pick(list, "https://192.168.1.8/"), "http://p:1");
	assert_string_equal(pick(list, "https://[fd12::1]/"), "");
	assert_string_equal(pick(list, "https://[fe80::1]/"), "http://p:1");

	assert_int_equal(civis__noproxy_match("", "a.com"), 0);
	assert_int_equal(civis__noproxy_match(NULL, "a.com"), 0);
	assert_int_equal(civis__noproxy_match("*.com", "a.com"), 0);   /* not a glob */
	assert_int_equal(civis__noproxy_match("a.com,*", "b.com"), 0); /* "*" only alone */
	assert_int_equal(civis__noproxy_match("10.0.0.0/33", "10.0.0.1"), 0);
	/* libcurl reads "/0" as the address alone */
	assert_int_equal(civis__noproxy_match("10.0.0.1/0", "99.1.1.1"), 0);
	assert_int_equal(civis__noproxy_match("10.0.0.1/0", "10.0.0.1"), 1);
	assert_int_equal(civis__noproxy_match("127.0.0.1", "localhost"), 0);
}

static void
test_display_hides_credentials(void **state)
{
	char buf[160];

	(void)state;
	civis__proxy_display("http://user:s3cret@proxy.corp:3128", buf, sizeof(buf));
	assert_string_equal(buf, "http://proxy.corp:3128");
	civis__proxy_display("proxy.corp:8080", buf, sizeof(buf));
	assert_string_equal(buf, "http://proxy.corp:8080");
	civis__proxy_display("socks5h://u@socks.corp", buf, sizeof(buf));
	assert_string_equal(buf, "socks5h://socks.corp");
	civis__proxy_display("", buf, sizeof(buf));
	assert_string_equal(buf, "");
	civis__proxy_display("http://[bad", buf, sizeof(buf));
	assert_string_equal(buf, "(a proxy setting that is not a URL)");
}

/* civis_http_proxy_for: the environment as it was at civis_http_new. */
static void
test_proxy_for_reads_env_once(void **state)
{
	civis_loop *loop;
	civis_http *http;
	char buf[160];

	(void)state;
	unsetenv("https_proxy");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	unsetenv("no_proxy");
	setenv("HTTPS_PROXY", "http://alice:pw@proxy.corp:3128", 1);
	setenv("NO_PROXY", "storage.internal", 1);
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	setenv("HTTPS_PROXY", "http://later:1", 1);
	assert_int_equal(civis_http_proxy_for(http, "https://api.civisanalytics.com/", buf,
	                                      sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "http://proxy.corp:3128");
	assert_int_equal(civis_http_proxy_for(http, "https://storage.internal/b?sig=x", buf,
	                                      sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "");
	assert_int_equal(civis_http_proxy_for(http, "http://127.0.0.1:5/", buf, sizeof(buf)),
	                 CIVIS_OK);
	assert_string_equal(buf, "");
	assert_int_equal(civis_http_proxy_for(http, "not a url", buf, sizeof(buf)), CIVIS_EINVAL);
	assert_string_equal(buf, "");
	civis_http_free(http);
	civis_loop_free(loop);
	unsetenv("HTTPS_PROXY");
	unsetenv("NO_PROXY");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_of_variables),
		cmocka_unit_test(test_plain_http_never_proxied),
		cmocka_unit_test(test_no_proxy),
		cmocka_unit_test(test_display_hides_credentials),
		cmocka_unit_test(test_proxy_for_reads_env_once),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
