/* test_client.c: configuration from the environment (every message, in
 * full) and the answer parsers on good and hostile input. The calls over
 * HTTP are in test_http.c, next to its scripted server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/client.h"

/* ------------------------------------------------------------- config */

static const char *
lookup(const char *name, void *ud)
{
	const char *const *kv = ud;

	for (; kv[0] != NULL; kv += 2)
		if (strcmp(kv[0], name) == 0)
			return kv[1];
	return NULL;
}

/* Parse kv (NULL-terminated name, value pairs); check rc and message. */
static void
expect_cfg(const char *const *kv, int want_rc, const char *want_err)
{
	civis_client_config cfg;
	char err[512];

	memset(err, 'Z', sizeof(err));
	assert_int_equal(civis_client_config_parse(&cfg, lookup, (void *)kv, err, sizeof(err)),
	                 want_rc);
	assert_string_equal(err, want_err);
	assert_null(cfg.endpoint);
	assert_null(cfg.api_key);
	assert_int_equal(cfg.job_id, 0);
	assert_int_equal(cfg.run_id, 0);
}

#define ALL3(job, run) "CIVIS_API_KEY", "key123", "CIVIS_JOB_ID", job, "CIVIS_RUN_ID", run

static void
test_config_none(void **state)
{
	const char *none[] = { "HOME", "/root", NULL };
	const char *empty[] = { "CIVIS_API_KEY", "", "CIVIS_JOB_ID", "", "CIVIS_RUN_ID", "",
	                        "CIVIS_API_ENDPOINT", "http://example.com", NULL };

	(void)state;
	expect_cfg(none, CIVIS_ENOTFOUND, "CIVIS_API_KEY, CIVIS_JOB_ID and CIVIS_RUN_ID are not set");
	/* set but empty counts as not set */
	expect_cfg(empty, CIVIS_ENOTFOUND, "CIVIS_API_KEY, CIVIS_JOB_ID and CIVIS_RUN_ID are not set");
}

static void
test_config_partial(void **state)
{
	const char *run_only[] = { "CIVIS_RUN_ID", "5", NULL };
	const char *no_key[] = { "CIVIS_JOB_ID", "4", "CIVIS_RUN_ID", "5", NULL };
	const char *key_only[] = { "CIVIS_API_KEY", "k", NULL };
	const char *no_run[] = { "CIVIS_API_KEY", "k", "CIVIS_JOB_ID", "x", NULL };
	const char *no_job[] = { "CIVIS_API_KEY", "k", "CIVIS_JOB_ID", "", "CIVIS_RUN_ID", "1", NULL };

	(void)state;
	expect_cfg(run_only, CIVIS_ECONFIG,
	           "CIVIS_RUN_ID is set but CIVIS_API_KEY and CIVIS_JOB_ID are not; set all three "
	           "of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none");
	expect_cfg(no_key, CIVIS_ECONFIG,
	           "CIVIS_JOB_ID and CIVIS_RUN_ID are set but CIVIS_API_KEY is not; set all three "
	           "of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none");
	expect_cfg(key_only, CIVIS_ECONFIG,
	           "CIVIS_API_KEY is set but CIVIS_JOB_ID and CIVIS_RUN_ID are not; set all three "
	           "of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none");
	expect_cfg(no_run, CIVIS_ECONFIG,
	           "CIVIS_API_KEY and CIVIS_JOB_ID are set but CIVIS_RUN_ID is not; set all three "
	           "of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none");
	expect_cfg(no_job, CIVIS_ECONFIG,
	           "CIVIS_API_KEY and CIVIS_RUN_ID are set but CIVIS_JOB_ID is not; set all three "
	           "of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, or none");
}

static void
test_config_ids(void **state)
{
	static const char *const bad[] = {
		"abc", "0", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "00000000000000000000",
		"9223372036854775808", "99999999999999999999999",
	};
	char want[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *kv1[] = { ALL3(bad[i], "1"), NULL };
		const char *kv2[] = { ALL3("1", bad[i]), NULL };

		snprintf(want, sizeof(want), "CIVIS_JOB_ID is not a positive integer: '%s'", bad[i]);
		expect_cfg(kv1, CIVIS_ECONFIG, want);
		snprintf(want, sizeof(want), "CIVIS_RUN_ID is not a positive integer: '%s'", bad[i]);
		expect_cfg(kv2, CIVIS_ECONFIG, want);
	}
	{
		/* control characters are shown as '?', long values cut with "..." */
		const char *kv[] = { ALL3("1\n2\x1b", "1"), NULL };
		const char *kv2[] = { ALL3("1", "1111111111222222222233333333334444444444"
		                                "555555555566666666667777777777888888888899999"), NULL };

		expect_cfg(kv, CIVIS_ECONFIG, "CIVIS_JOB_ID is not a positive integer: '1?2?'");
		expect_cfg(kv2, CIVIS_ECONFIG, "CIVIS_RUN_ID is not a positive integer: '"
		           "1111111111222222222233333333334444444444"
		           "5555555555666666666677777777778888888888...'");
	}
}

static void
test_config_key(void **state)
{
	const char *space[] = { "CIVIS_API_KEY", "ab cd", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2", NULL };
	const char *colon[] = { "CIVIS_API_KEY", "ab:cd", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2", NULL };
	const char *nl[] = { "CIVIS_API_KEY", "abcd\n", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2", NULL };
	const char *utf8[] = { "CIVIS_API_KEY", "ab\xc3\xa9", "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2", NULL };
	const char *msg = "CIVIS_API_KEY has a character that cannot be sent "
	                  "(space, control, non-ASCII or ':')";
	char *big = malloc(1026);

	(void)state;
	expect_cfg(space, CIVIS_ECONFIG, msg);
	expect_cfg(colon, CIVIS_ECONFIG, msg);
	expect_cfg(nl, CIVIS_ECONFIG, msg);
	expect_cfg(utf8, CIVIS_ECONFIG, msg);
	assert_non_null(big);
	memset(big, 'k', 1025);
	big[1025] = '\0';
	{
		const char *kv[] = { "CIVIS_API_KEY", big, "CIVIS_JOB_ID", "1", "CIVIS_RUN_ID", "2", NULL };

		expect_cfg(kv, CIVIS_ECONFIG, "CIVIS_API_KEY is longer than 1024 bytes");
	}
	free(big);
}

static void
test_config_endpoint_errors(void **state)
{
	static const struct {
		const char *value;
		const char *err;
	} cases[] = {
		{ "example.com", "CIVIS_API_ENDPOINT is not a valid URL: 'example.com'" },
		{ "https://", "CIVIS_API_ENDPOINT is not a valid URL: 'https://'" },
		{ "https://exa mple.com/", "CIVIS_API_ENDPOINT is not a valid URL: 'https://exa mple.com/'" },
		{ "https://host:99999/", "CIVIS_API_ENDPOINT is not a valid URL: 'https://host:99999/'" },
		{ "ftp://example.com/", "CIVIS_API_ENDPOINT must use https://: 'ftp://example.com/'" },
		{ "foo://example.com/", "CIVIS_API_ENDPOINT must use https://: 'foo://example.com/'" },
		{ "http://example.com/", "CIVIS_API_ENDPOINT must use https:// for a non-loopback "
		                          "host: 'http://example.com/'" },
		{ "http://example.com", "CIVIS_API_ENDPOINT must use https:// for a non-loopback "
		                         "host: 'http://example.com'" },
		{ "http://128.0.0.1:8080/", "CIVIS_API_ENDPOINT must use https:// for a non-loopback "
		                             "host: 'http://128.0.0.1:8080/'" },
		{ "http://127.0.0.1.nip.io/", "CIVIS_API_ENDPOINT must use https:// for a non-loopback "
		                               "host: 'http://127.0.0.1.nip.io/'" },
		{ "http://[::2]/", "CIVIS_API_ENDPOINT must use https:// for a non-loopback "
		                    "host: 'http://[::2]/'" },
		{ "http://localhost.example.com/", "CIVIS_API_ENDPOINT must use https:// for a "
		                                    "non-loopback host: 'http://localhost.example.com/'" },
		{ "https://user:pw@example.com/", "CIVIS_API_ENDPOINT must not contain a user name or password" },
		{ "https://user@example.com/", "CIVIS_API_ENDPOINT must not contain a user name or password" },
		{ "https://example.com/?a=b", "CIVIS_API_ENDPOINT must not contain a query or fragment" },
		{ "https://example.com/#x", "CIVIS_API_ENDPOINT must not contain a query or fragment" },
	};
	size_t i;
	char *big;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *kv[] = { ALL3("1", "2"), "CIVIS_API_ENDPOINT", cases[i].value, NULL };

		expect_cfg(kv, CIVIS_ECONFIG, cases[i].err);
	}
	big = malloc(2100);
	assert_non_null(big);
	memcpy(big, "https://e.com/", 14);
	memset(big + 14, 'a', 2100 - 15);
	big[2099] = '\0';
	{
		const char *kv[] = { ALL3("1", "2"), "CIVIS_API_ENDPOINT", big, NULL };

		expect_cfg(kv, CIVIS_ECONFIG, "CIVIS_API_ENDPOINT is longer than 2048 bytes");
	}
	free(big);
}

static void
expect_endpoint(const char *value, const char *want)
{
	const char *kv[] = { ALL3("17", "9223372036854775807"), "CIVIS_API_ENDPOINT", value, NULL };
	civis_client_config cfg;
	char err[256] = "untouched";

	assert_int_equal(civis_client_config_parse(&cfg, lookup, (void *)kv, err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(err, "");
	assert_string_equal(cfg.endpoint, want);
	assert_string_equal(cfg.api_key, "key123");
	assert_int_equal(cfg.job_id, 17);
	assert_true(cfg.run_id == INT64_MAX);
	civis_client_config_dispose(&cfg);
	assert_null(cfg.endpoint);
	assert_null(cfg.api_key);
}

static void
test_config_endpoint_ok(void **state)
{
	(void)state;
	expect_endpoint(NULL, "https://api.civisanalytics.com/");
	expect_endpoint("", "https://api.civisanalytics.com/");
	expect_endpoint("https://api.civisanalytics.com", "https://api.civisanalytics.com/");
	expect_endpoint("https://example.com/api", "https://example.com/api/");
	expect_endpoint("https://example.com:8443/api/", "https://example.com:8443/api/");
	expect_endpoint("http://localhost:3000", "http://localhost:3000/");
	expect_endpoint("http://LOCALHOST:3000/", "http://LOCALHOST:3000/");
	expect_endpoint("http://127.0.0.1:8080/", "http://127.0.0.1:8080/");
	expect_endpoint("http://127.9.8.7/", "http://127.9.8.7/");
	expect_endpoint("http://[::1]:9000", "http://[::1]:9000/");
	expect_endpoint("HTTPS://example.com/", "https://example.com/");
}

static const char *
env_like(const char *name, void *ud)
{
	(void)ud;
	if (strcmp(name, "CIVIS_API_KEY") == 0)
		return "secret-key-value";
	if (strcmp(name, "CIVIS_JOB_ID") == 0)
		return "12";
	if (strcmp(name, "CIVIS_RUN_ID") == 0)
		return "-3";
	return NULL;
}

static void
test_config_never_prints_key(void **state)
{
	civis_client_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(civis_client_config_parse(&cfg, env_like, NULL, err, sizeof(err)),
	                 CIVIS_ECONFIG);
	assert_string_equal(err, "CIVIS_RUN_ID is not a positive integer: '-3'");
	assert_null(strstr(err, "secret"));
	/* a tiny err buffer is fine */
	assert_int_equal(civis_client_config_parse(&cfg, env_like, NULL, err, 5), CIVIS_ECONFIG);
	assert_string_equal(err, "CIVI");
	assert_int_equal(civis_client_config_parse(&cfg, env_like, NULL, NULL, 0), CIVIS_ECONFIG);
}

static void
test_config_from_env(void **state)
{
	civis_client_config cfg;
	char err[256];

	(void)state;
	unsetenv("CIVIS_API_KEY");
	unsetenv("CIVIS_JOB_ID");
	unsetenv("CIVIS_RUN_ID");
	unsetenv("CIVIS_API_ENDPOINT");
	assert_int_equal(civis_client_config_from_env(&cfg, err, sizeof(err)), CIVIS_ENOTFOUND);
	setenv("CIVIS_API_KEY", "k", 1);
	setenv("CIVIS_JOB_ID", "3", 1);
	setenv("CIVIS_RUN_ID", "4", 1);
	assert_int_equal(civis_client_config_from_env(&cfg, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(cfg.endpoint, CIVIS_DEFAULT_ENDPOINT);
	assert_int_equal(cfg.job_id, 3);
	assert_int_equal(cfg.run_id, 4);
	civis_client_config_dispose(&cfg);
	civis_client_config_dispose(&cfg);   /* twice is harmless */
	unsetenv("CIVIS_API_KEY");
	unsetenv("CIVIS_JOB_ID");
	unsetenv("CIVIS_RUN_ID");
}

/* ------------------------------------------------------------ parsers */

static int
run_state(const char *json, civis_run_state *rs, char *err, size_t errlen)
{
	return civis_parse_run_state(json, strlen(json), rs, err, errlen);
}

static void
expect_run_error(const char *json, const char *want)
{
	civis_run_state rs;
	char err[256];

	assert_int_equal(run_state(json, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, want);
	assert_int_equal(rs.id, 0);
	assert_string_equal(rs.state, "");
	assert_int_equal(rs.is_cancel_requested, 0);
}

static void
test_parse_run_state(void **state)
{
	civis_run_state rs;
	char err[256];

	(void)state;
	assert_int_equal(run_state("{\"id\":42,\"containerId\":7,\"state\":\"running\","
	                           "\"isCancelRequested\":false,\"createdAt\":\"2026-01-01T00:00:00Z\","
	                           "\"startedAt\":null,\"finishedAt\":null,\"error\":null,"
	                           "\"maxMemoryUsage\":null,\"maxCpuUsage\":1.5}",
	                           &rs, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(rs.id, 42);
	assert_string_equal(rs.state, "running");
	assert_int_equal(rs.is_cancel_requested, 0);
	assert_int_equal(run_state(" {\"id\":1,\"state\":\"cancelled\",\"isCancelRequested\":true}\n",
	                           &rs, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(rs.state, "cancelled");
	assert_int_equal(rs.is_cancel_requested, 1);
	/* nulls and missing members are tolerated */
	assert_int_equal(run_state("{\"id\":9007199254740992,\"state\":null,\"isCancelRequested\":null}",
	                           &rs, err, sizeof(err)), CIVIS_OK);
	assert_true(rs.id == 9007199254740992LL);
	assert_string_equal(rs.state, "");
	assert_int_equal(rs.is_cancel_requested, 0);
	assert_int_equal(run_state("{\"id\":3}", &rs, err, sizeof(err)), CIVIS_OK);
	/* a brace inside a string does not count as nesting */
	assert_int_equal(run_state("{\"id\":3,\"error\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}",
	                           &rs, err, sizeof(err)), CIVIS_OK);

	expect_run_error("", "answer is empty");
	expect_run_error("{\"id\":1", "answer is not valid JSON");
	expect_run_error("{\"id\":1,}", "answer is not valid JSON");
	expect_run_error("{\"id\":1} x", "answer has data after the JSON value");
	expect_run_error("[{\"id\":1}]", "answer is not a JSON object");
	expect_run_error("\"id\"", "answer is not a JSON object");
	expect_run_error("{}", "answer has no id");
	expect_run_error("{\"id\":null}", "answer has no id");
	expect_run_error("{\"id\":-5}", "id is not a positive integer");
	expect_run_error("{\"id\":0}", "id is not a positive integer");
	expect_run_error("{\"id\":1.5}", "id is not a positive integer");
	expect_run_error("{\"id\":\"12\"}", "id is not a positive integer");
	expect_run_error("{\"id\":true}", "id is not a positive integer");
	expect_run_error("{\"id\":1e300}", "id is not a positive integer");
	expect_run_error("{\"id\":9007199254740994}", "id is not a positive integer");
	expect_run_error("{\"id\":9223372036854775807}", "id is not a positive integer");
	expect_run_error("{\"id\":1,\"state\":5}", "state is not a string");
	expect_run_error("{\"id\":1,\"state\":\"runningrunningrunning\"}", "state is longer than 15 bytes");
	expect_run_error("{\"id\":1,\"isCancelRequested\":\"yes\"}", "isCancelRequested is not a boolean");
	expect_run_error("{\"id\":1,\"isCancelRequested\":1}", "isCancelRequested is not a boolean");
}

static char *
nested(size_t depth, const char *inner)
{
	size_t n = strlen(inner), i;
	char *s = malloc(2 * depth + n + 16);

	assert_non_null(s);
	memcpy(s, "{\"id\":1,\"x\":", 12);
	for (i = 0; i < depth; i++)
		s[12 + i] = '[';
	memcpy(s + 12 + depth, inner, n);
	for (i = 0; i < depth; i++)
		s[12 + depth + n + i] = ']';
	s[12 + 2 * depth + n] = '}';
	s[12 + 2 * depth + n + 1] = '\0';
	return s;
}

static void
test_parse_limits(void **state)
{
	civis_run_state rs;
	char err[256];
	char *s, *big;

	(void)state;
	/* 63 arrays inside the object: 64 levels, fine; 64 arrays: too deep */
	s = nested(63, "1");
	assert_int_equal(run_state(s, &rs, err, sizeof(err)), CIVIS_OK);
	free(s);
	s = nested(64, "1");
	assert_int_equal(run_state(s, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "answer nests deeper than 64 levels");
	free(s);
	s = nested(100000, "");
	assert_int_equal(run_state(s, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "answer nests deeper than 64 levels");
	free(s);
	/* unbalanced, deep: refused before cJSON sees it */
	big = malloc(100001);
	assert_non_null(big);
	memset(big, '{', 100000);
	big[100000] = '\0';
	assert_int_equal(run_state(big, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "answer nests deeper than 64 levels");
	free(big);
	/* over the size cap: refused unread */
	big = calloc(1, CIVIS_RUN_STATE_MAX_BODY + 1);
	assert_non_null(big);
	assert_int_equal(civis_parse_run_state(big, CIVIS_RUN_STATE_MAX_BODY + 1, &rs, err, sizeof(err)),
	                 CIVIS_EPROTO);
	assert_string_equal(err, "answer is larger than 1048576 bytes");
	free(big);
	/* bytes after a NUL inside len are not ignored silently */
	assert_int_equal(civis_parse_run_state("{\"id\":1}\0xx", 11, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_int_equal(civis_parse_run_state("{\"id\":1}\0", 9, &rs, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis_parse_run_state(NULL, 0, &rs, err, sizeof(err)), CIVIS_EPROTO);
	assert_int_equal(civis_parse_run_state("{\"id\":1", 7, &rs, NULL, 0), CIVIS_EPROTO);
}

static void
test_parse_file_post(void **state)
{
	const char *good = "{\"id\":32,\"name\":\"my_file.csv.gzip\",\"createdAt\":\"2016-01-13T12:23:00.000Z\","
	                   "\"fileSize\":0,\"expiresAt\":null,\"description\":null,"
	                   "\"uploadUrl\":\"https://bucket.s3.amazonaws.com/\","
	                   "\"uploadFields\":{\"key\":\"files/32\",\"policy\":\"eyJ\",\"x-amz-signature\":\"abc\"},"
	                   "\"myPermissionLevel\":\"manage\"}";
	civis_file_post fp;
	char err[256];

	(void)state;
	assert_int_equal(civis_parse_file_post(good, strlen(good), &fp, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(fp.id, 32);
	assert_string_equal(fp.upload_url, "https://bucket.s3.amazonaws.com/");
	assert_int_equal(fp.nfields, 3);
	assert_string_equal(fp.field_names[0], "key");
	assert_string_equal(fp.field_values[0], "files/32");
	assert_string_equal(fp.field_names[2], "x-amz-signature");
	assert_string_equal(fp.field_values[2], "abc");
	civis_file_post_dispose(&fp);
	assert_null(fp.upload_url);
	assert_int_equal(fp.nfields, 0);
	civis_file_post_dispose(&fp);

	{
		const char *j = "{\"id\":1,\"uploadUrl\":\"http://127.0.0.1:9/u\",\"uploadFields\":null}";

		assert_int_equal(civis_parse_file_post(j, strlen(j), &fp, err, sizeof(err)), CIVIS_OK);
	}
	assert_int_equal(fp.nfields, 0);
	assert_null(fp.field_names);
	civis_file_post_dispose(&fp);

	{
		static const struct {
			const char *json;
			const char *err;
		} bad[] = {
			{ "{\"uploadUrl\":\"https://x/\"}", "answer has no id" },
			{ "{\"id\":-1,\"uploadUrl\":\"https://x/\"}", "id is not a positive integer" },
			{ "{\"id\":1}", "answer has no uploadUrl" },
			{ "{\"id\":1,\"uploadUrl\":null}", "answer has no uploadUrl" },
			{ "{\"id\":1,\"uploadUrl\":7}", "uploadUrl is not a string" },
			{ "{\"id\":1,\"uploadUrl\":\"file:///etc/passwd\"}", "uploadUrl is not an http(s) URL" },
			{ "{\"id\":1,\"uploadUrl\":\"presigned_url\"}", "uploadUrl is not an http(s) URL" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/ y\"}", "uploadUrl has a space or control character" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":[\"a\"]}",
			  "uploadFields is not an object" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":{\"a\":1}}",
			  "uploadFields value of 'a' is not a string" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":{\"a\":null}}",
			  "uploadFields value of 'a' is not a string" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":{\"\":\"v\"}}",
			  "uploadFields has an empty or overlong name" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":{\"a\\nb\":\"v\"}}",
			  "uploadFields has a name with a control character or quote" },
			{ "{\"id\":1,\"uploadUrl\":\"https://x/\",\"uploadFields\":{\"a\":\"v\"}",
			  "answer is not valid JSON" },
		};
		size_t i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			memset(&fp, 0x5a, sizeof(fp));
			assert_int_equal(civis_parse_file_post(bad[i].json, strlen(bad[i].json), &fp,
			                                       err, sizeof(err)), CIVIS_EPROTO);
			assert_string_equal(err, bad[i].err);
			assert_null(fp.upload_url);
			assert_int_equal(fp.nfields, 0);
		}
	}
}

static char *
fields_json(size_t nfields, size_t value_len)
{
	size_t cap = 64 + nfields * (value_len + 32), o, i;
	char *s = malloc(cap);

	assert_non_null(s);
	o = (size_t)snprintf(s, cap, "{\"id\":5,\"uploadUrl\":\"https://x/\",\"uploadFields\":{");
	for (i = 0; i < nfields; i++) {
		o += (size_t)snprintf(s + o, cap - o, "%s\"f%zu\":\"", i ? "," : "", i);
		memset(s + o, 'v', value_len);
		o += value_len;
		s[o++] = '"';
	}
	o += (size_t)snprintf(s + o, cap - o, "}}");
	return s;
}

static void
test_parse_file_post_caps(void **state)
{
	civis_file_post fp;
	char err[256];
	char *s;

	(void)state;
	s = fields_json(64, 10);
	assert_int_equal(civis_parse_file_post(s, strlen(s), &fp, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(fp.nfields, 64);
	assert_string_equal(fp.field_names[63], "f63");
	civis_file_post_dispose(&fp);
	free(s);
	s = fields_json(65, 10);
	assert_int_equal(civis_parse_file_post(s, strlen(s), &fp, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "uploadFields has more than 64 fields");
	free(s);
	s = fields_json(2, 65536);
	assert_int_equal(civis_parse_file_post(s, strlen(s), &fp, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(strlen(fp.field_values[1]), 65536);
	civis_file_post_dispose(&fp);
	free(s);
	s = fields_json(2, 65537);
	assert_int_equal(civis_parse_file_post(s, strlen(s), &fp, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "uploadFields value of 'f0' is longer than 65536 bytes");
	free(s);
}

static char *
urls_json(size_t n)
{
	size_t cap = 64 + n * 40, o, i;
	char *s = malloc(cap);

	assert_non_null(s);
	o = (size_t)snprintf(s, cap, "{\"id\":77,\"name\":\"big\",\"uploadUrls\":[");
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(s + o, cap - o, "%s\"https://s3/p%zu?sig=x\"", i ? "," : "", i + 1);
	snprintf(s + o, cap - o, "]}");
	return s;
}

static void
test_parse_multipart(void **state)
{
	civis_multipart_post mp;
	char err[256];
	char *s;

	(void)state;
	s = urls_json(3);
	assert_int_equal(civis_parse_multipart_post(s, strlen(s), &mp, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(mp.id, 77);
	assert_int_equal(mp.nurls, 3);
	assert_string_equal(mp.upload_urls[0], "https://s3/p1?sig=x");
	assert_string_equal(mp.upload_urls[2], "https://s3/p3?sig=x");
	civis_multipart_post_dispose(&mp);
	assert_int_equal(mp.nurls, 0);
	free(s);
	s = urls_json(10000);
	assert_int_equal(civis_parse_multipart_post(s, strlen(s), &mp, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(mp.nurls, 10000);
	assert_string_equal(mp.upload_urls[9999], "https://s3/p10000?sig=x");
	civis_multipart_post_dispose(&mp);
	free(s);
	s = urls_json(10001);
	assert_int_equal(civis_parse_multipart_post(s, strlen(s), &mp, err, sizeof(err)), CIVIS_EPROTO);
	assert_string_equal(err, "uploadUrls has more than 10000 entries");
	assert_null(mp.upload_urls);
	free(s);
	{
		static const struct {
			const char *json;
			const char *err;
		} bad[] = {
			{ "{\"id\":1,\"uploadUrls\":[]}", "uploadUrls is empty" },
			{ "{\"id\":1,\"uploadUrls\":null}", "answer has no uploadUrls" },
			{ "{\"id\":1}", "answer has no uploadUrls" },
			{ "{\"id\":1,\"uploadUrls\":\"https://x/\"}", "uploadUrls is not an array" },
			{ "{\"id\":1,\"uploadUrls\":[\"https://x/\",3]}", "uploadUrls entry is not a string" },
			{ "{\"id\":1,\"uploadUrls\":[\"https://x/\",\"ftp://y/\"]}",
			  "uploadUrls entry is not an http(s) URL" },
			{ "{\"id\":0,\"uploadUrls\":[\"https://x/\"]}", "id is not a positive integer" },
			{ "{\"id\":1,\"uploadUrls\":[\"https://x/\"", "answer is not valid JSON" },
		};
		size_t i;

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			assert_int_equal(civis_parse_multipart_post(bad[i].json, strlen(bad[i].json), &mp,
			                                            err, sizeof(err)), CIVIS_EPROTO);
			assert_string_equal(err, bad[i].err);
			assert_int_equal(mp.nurls, 0);
			assert_null(mp.upload_urls);
		}
	}
}

static void
expect_error_text(const char *body, size_t buflen, const char *want)
{
	char buf[256];

	assert_true(buflen <= sizeof(buf));
	memset(buf, 'Z', sizeof(buf));
	civis_parse_error_text(body, strlen(body), buf, buflen);
	assert_string_equal(buf, want);
}

static void
test_parse_error_text(void **state)
{
	(void)state;
	expect_error_text("{\"error\":\"not_found\",\"errorDescription\":\"The requested resource "
	                  "could not be found.\",\"code\":404}", 256,
	                  "not_found: The requested resource could not be found.");
	expect_error_text("{\"errorDescription\":\"only this\"}", 256, "only this");
	expect_error_text("{\"error\":\"only_that\",\"errorDescription\":null}", 256, "only_that");
	expect_error_text("{\"message\":\"prism says no\"}", 256, "prism says no");
	expect_error_text("{\"error\":\"a\\u0001b\\tc\\nd\"}", 256, "ab c d");
	expect_error_text("<html>\r\n<head><title>502 Bad Gateway</title></head>", 256, "<html>");
	expect_error_text("\n\n  upstream connect error\nsecond line", 256, "upstream connect error");
	expect_error_text("bell\x07 and esc\x1b[31m red", 256, "bell and esc[31m red");
	expect_error_text("", 256, "");
	expect_error_text("   \r\n", 256, "");
	expect_error_text("{\"error\":", 256, "{\"error\":");
	expect_error_text("{\"other\":1}", 256, "{\"other\":1}");
	expect_error_text("0123456789abcdef", 11, "0123456789");
	/* a cap inside a UTF-8 sequence drops the whole character */
	expect_error_text("ab\xc3\xa9\xc3\xa9", 6, "ab\xc3\xa9");
	expect_error_text("ab\xc3\xa9\xc3\xa9", 5, "ab\xc3\xa9");
	expect_error_text("ab\xc3\xa9\xc3\xa9", 4, "ab");
	expect_error_text("bad \xff\xc3 utf8 \x80", 256, "bad  utf8");
	expect_error_text("x", 1, "");
	civis_parse_error_text("x", 1, NULL, 0);
}

static void
test_run_path(void **state)
{
	civis_client_config cfg = { 0 };
	civis_loop *loop = NULL;
	civis_http *http = NULL;
	civis_client *c = NULL;
	char buf[64], small[20];

	(void)state;
	cfg.endpoint = (char *)"https://api.civisanalytics.com/";
	cfg.api_key = (char *)"k";
	cfg.job_id = 123;
	cfg.run_id = 456;
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	assert_int_equal(civis_client_new(&c, loop, http, &cfg), CIVIS_OK);
	assert_int_equal(civis_client_run_path(c, "", buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "scripts/containers/123/runs/456");
	assert_int_equal(civis_client_run_path(c, NULL, buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "scripts/containers/123/runs/456");
	assert_int_equal(civis_client_run_path(c, "/heartbeats", buf, sizeof(buf)), CIVIS_OK);
	assert_string_equal(buf, "scripts/containers/123/runs/456/heartbeats");
	assert_int_equal(civis_client_run_path(c, "/outputs", small, sizeof(small)), CIVIS_ETOOBIG);
	assert_string_equal(small, "");
	assert_int_equal(civis_client_get_config(c)->job_id, 123);
	assert_int_equal(civis_client_auth_rejected(c), 0);
	cfg.job_id = 0;
	{
		civis_client *c2 = NULL;

		assert_int_equal(civis_client_new(&c2, loop, http, &cfg), CIVIS_EINVAL);
		assert_null(c2);
	}
	civis_client_free(c);
	civis_client_free(NULL);
	civis_http_free(http);
	civis_loop_free(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_none),
		cmocka_unit_test(test_config_partial),
		cmocka_unit_test(test_config_ids),
		cmocka_unit_test(test_config_key),
		cmocka_unit_test(test_config_endpoint_errors),
		cmocka_unit_test(test_config_endpoint_ok),
		cmocka_unit_test(test_config_never_prints_key),
		cmocka_unit_test(test_config_from_env),
		cmocka_unit_test(test_parse_run_state),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_parse_file_post),
		cmocka_unit_test(test_parse_file_post_caps),
		cmocka_unit_test(test_parse_multipart),
		cmocka_unit_test(test_parse_error_text),
		cmocka_unit_test(test_run_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
