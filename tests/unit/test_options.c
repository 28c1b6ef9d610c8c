/* test_options.c: command line + environment parsing, every message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "../../agent/options.h"

/* A fake environment: NAME=VALUE pairs. */
static const char *fake_env[16];

static const char *
fake_getenv(const char *name, void *ud)
{
	size_t n = strlen(name);

	(void)ud;
	for (int i = 0; fake_env[i]; i++)
		if (strncmp(fake_env[i], name, n) == 0 && fake_env[i][n] == '=')
			return fake_env[i] + n + 1;
	return NULL;
}

static int
parse(agent_opts *o, char *err, size_t errlen, ...)
{
	static char *argv[32];
	int argc = 0;
	va_list ap;

	va_start(ap, errlen);
	argv[argc++] = (char *)"civis-agent";
	for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return agent_opts_parse(o, argc, argv, fake_getenv, NULL, err, errlen);
}

static void
test_defaults(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "sh", "-c", "exit 4", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.argc, 3);
	assert_string_equal(o.argv[0], "sh");
	assert_string_equal(o.argv[1], "-c");
	assert_null(o.argv[3]);
	assert_int_equal(o.tee, 1);
	assert_string_equal(o.stdout_level, "info");
	assert_string_equal(o.stderr_level, "error");
	assert_true(o.flush_ns == 1000000000ULL);
	assert_true(o.final_flush_ns == 30000000000ULL);
	assert_true(o.heartbeat_ns == 30000000000ULL);
	assert_true(o.cancel_poll_ns == 5000000000ULL);
	assert_true(o.grace_ns == 10000000000ULL);
	assert_true(o.line_max == 65536);
	assert_int_equal(o.default_redact, 1);
	agent_opts_dispose(&o);
}

/* Options stop at the first non-option word: the command's own flags stay its own. */
static void
test_stops_at_command(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "-v", "ls", "-l", "--no-tee", (char *)NULL),
	                 AGENT_OPTS_RUN);
	assert_int_equal(o.verbose, 1);
	assert_int_equal(o.tee, 1);
	assert_string_equal(o.argv[0], "ls");
	assert_string_equal(o.argv[2], "--no-tee");
	agent_opts_dispose(&o);
	assert_int_equal(parse(&o, err, sizeof(err), "--no-tee", "--", "-x", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.tee, 0);
	assert_string_equal(o.argv[0], "-x");
	agent_opts_dispose(&o);
}

static void
test_help_version(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	assert_int_equal(parse(&o, err, sizeof(err), "--help", (char *)NULL), AGENT_OPTS_HELP);
	assert_int_equal(parse(&o, err, sizeof(err), "-V", (char *)NULL), AGENT_OPTS_VERSION);
}

static void
check_err(const char *want, const char *a1, const char *a2, const char *a3)
{
	agent_opts o;
	char err[256];

	assert_int_equal(parse(&o, err, sizeof(err), a1, a2, a3, (char *)NULL), -1);
	assert_string_equal(err, want);
	agent_opts_dispose(&o);
}

static void
test_errors(void **state)
{
	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	check_err("no command given", NULL, NULL, NULL);
	check_err("no command given", "-v", NULL, NULL);
	check_err("unknown option '--bogus'", "--bogus", "true", NULL);
	check_err("unknown option '-x'", "-x", "true", NULL);
	check_err("option '--grace-period' needs a value", "--grace-period", NULL, NULL);
	check_err("--grace-period: 'soon' is not a duration (e.g. 500ms, 30s, 2m)",
	          "--grace-period", "soon", "true");
	check_err("--log-flush-interval: '1ms' is too short (at least 10ms)",
	          "--log-flush-interval", "1ms", "true");
	check_err("--stderr-level: 'loud' is not a level (unknown, fatal, error, warn, info, debug)",
	          "--stderr-level", "loud", "true");
	check_err("--exit-code-remap: '256' is not an exit status (0-255)", "-e", "256", "true");
	check_err("--exit-code-remap: '-1' is not an exit status (0-255)", "-e", "-1", "true");
	check_err("--log-line-max: 'big' is not a size (e.g. 65536, 64K, 1M)",
	          "--log-line-max", "big", "true");
	check_err("--log-line-max: '2M' is out of range (16 to 1M)", "--log-line-max", "2M", "true");
	check_err("--log-batch-lines: '0' is not a number from 1 to 100000",
	          "--log-batch-lines", "0", "true");
	check_err("--upload-concurrency: '65' is not a number from 1 to 64",
	          "--upload-concurrency", "65", "true");
	check_err("--multipart-threshold: '1M' is too small (at least 5M, the S3 part minimum)",
	          "--multipart-threshold", "1M", "true");
	check_err("--expires-at: 'tomorrow' is not an RFC 3339 time (2027-01-31T00:00:00Z) or 'never'",
	          "--expires-at", "tomorrow", "true");
	check_err("--archive: 'a/b' must name a sub-directory of the output directory, without '/'",
	          "--archive", "a/b", "true");
	check_err("--output-dir needs a directory", "--output-dir", "", "true");
	/* fuzz_options: a control byte in an echoed word kept the message one line */
	check_err("unknown option '--?x'", "--\nx", "true", NULL);
	check_err("--grace-period: '1?s' is not a duration (e.g. 500ms, 30s, 2m)",
	          "--grace-period", "1\ts", "true");
	check_err("--log-batch-bytes must hold one line of --log-line-max bytes: raise it or "
	          "lower --log-line-max", "--log-line-max=1M", "true", NULL);
}

static void
test_env_and_precedence(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	fake_env[0] = "CIVIS_AGENT_HEARTBEAT_INTERVAL=250ms";
	fake_env[1] = "CIVIS_AGENT_GRACE_PERIOD=3";
	fake_env[2] = "CIVIS_AGENT_EXIT_CODE_REMAP=143,130";
	fake_env[3] = "CIVIS_AGENT_NO_TEE=1";
	fake_env[4] = "CIVIS_AGENT_REDACT=MY_*,OTHER";
	fake_env[5] = "CIVIS_AGENT_GZIP=false";
	assert_int_equal(parse(&o, err, sizeof(err), "--grace-period", "1m", "true", (char *)NULL),
	                 AGENT_OPTS_RUN);
	assert_true(o.heartbeat_ns == 250000000ULL);
	assert_true(o.grace_ns == 60000000000ULL);   /* the command line wins */
	assert_int_equal(o.remap[143], 1);
	assert_int_equal(o.remap[130], 1);
	assert_int_equal(o.remap[0], 0);
	assert_int_equal(o.tee, 0);
	assert_int_equal(o.gzip, 0);
	assert_int_equal((int)o.nredact, 2);
	assert_string_equal(o.redact[0], "MY_*");
	assert_string_equal(o.redact[1], "OTHER");
	agent_opts_dispose(&o);

	memset(fake_env, 0, sizeof(fake_env));
	fake_env[0] = "CIVIS_AGENT_CANCEL_POLL_INTERVAL=often";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), -1);
	assert_string_equal(err, "CIVIS_AGENT_CANCEL_POLL_INTERVAL: 'often' is not a duration "
	                         "(e.g. 500ms, 30s, 2m)");
	agent_opts_dispose(&o);
	memset(fake_env, 0, sizeof(fake_env));
}

/* Where the exit reasons are read and written: --cgroup-root and
 * --termination-log, their twins, '' turning the termination log off. */
static void
test_exit_reason_paths(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_null(o.cgroup_root);
	assert_null(o.termination_log);
	agent_opts_dispose(&o);
	assert_int_equal(parse(&o, err, sizeof(err), "--cgroup-root", "/tmp/cg", "--termination-log",
	                       "", "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_string_equal(o.cgroup_root, "/tmp/cg");
	assert_string_equal(o.termination_log, "");
	agent_opts_dispose(&o);
	fake_env[0] = "CIVIS_AGENT_CGROUP_ROOT=/env/cg";
	fake_env[1] = "CIVIS_AGENT_TERMINATION_LOG=/env/tl";
	assert_int_equal(parse(&o, err, sizeof(err), "--termination-log", "/cli/tl", "true",
	                       (char *)NULL), AGENT_OPTS_RUN);
	assert_string_equal(o.cgroup_root, "/env/cg");
	assert_string_equal(o.termination_log, "/cli/tl");
	agent_opts_dispose(&o);
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "--cgroup-root", "", "true", (char *)NULL), -1);
	assert_string_equal(err, "--cgroup-root needs a directory");
	agent_opts_dispose(&o);
}

/* Level detection is on unless --no-detect-levels or its twin says
 * otherwise (a false-ish value leaves it on); --report-state is off unless
 * asked for. */
static void
test_detect_levels_and_report_state(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.detect_levels, 1);
	assert_int_equal(o.report_state, 0);
	agent_opts_dispose(&o);
	assert_int_equal(parse(&o, err, sizeof(err), "--no-detect-levels", "--report-state", "true",
	                       (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.detect_levels, 0);
	assert_int_equal(o.report_state, 1);
	agent_opts_dispose(&o);

	fake_env[0] = "CIVIS_AGENT_NO_DETECT_LEVELS=1";
	fake_env[1] = "CIVIS_AGENT_REPORT_STATE=yes";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.detect_levels, 0);
	assert_int_equal(o.report_state, 1);
	agent_opts_dispose(&o);

	fake_env[0] = "CIVIS_AGENT_NO_DETECT_LEVELS=false";
	fake_env[1] = "CIVIS_AGENT_REPORT_STATE=0";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.detect_levels, 1);
	assert_int_equal(o.report_state, 0);
	agent_opts_dispose(&o);

	fake_env[0] = "CIVIS_AGENT_NO_DETECT_LEVELS=";
	fake_env[1] = "CIVIS_AGENT_REPORT_STATE=off";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.detect_levels, 1);
	assert_int_equal(o.report_state, 0);
	agent_opts_dispose(&o);
	memset(fake_env, 0, sizeof(fake_env));
}

static void
check_budget(const char *v, unsigned pct, unsigned limit, uint64_t window_ns)
{
	agent_opts o;
	char err[256];

	assert_int_equal(parse(&o, err, sizeof(err), "--api-budget", v, "true", (char *)NULL),
	                 AGENT_OPTS_RUN);
	assert_int_equal(o.api_budget_pct, pct);
	assert_int_equal(o.api_rate_limit, limit);
	assert_true(o.api_rate_window_ns == window_ns);
	agent_opts_dispose(&o);
}

#define BUDGET_MSG(src, v) src ": '" v "' is not a share of the rate limit (a percentage " \
	"from 1 to 100, or off; e.g. 20%, or 20%:1000/5m)"

/* --api-budget: PCT or PCT%, off or 0, and :LIMIT/WINDOW; its twin; every
 * wrong form refused with the same message. */
static void
test_api_budget(void **state)
{
	agent_opts o;
	char err[256];

	(void)state;
	memset(fake_env, 0, sizeof(fake_env));
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.api_budget_pct, 20);
	assert_int_equal(o.api_rate_limit, 0);
	assert_true(o.api_rate_window_ns == 0);
	agent_opts_dispose(&o);
	check_budget("35", 35, 0, 0);
	check_budget("35%", 35, 0, 0);
	check_budget("1", 1, 0, 0);
	check_budget("100%", 100, 0, 0);
	check_budget("off", 0, 0, 0);
	check_budget("OFF", 0, 0, 0);
	check_budget("0", 0, 0, 0);
	check_budget("20%:100/30s", 20, 100, 30000000000ULL);
	check_budget("50:1000000/1s", 50, 1000000, 1000000000ULL);

	check_err(BUDGET_MSG("--api-budget", "101"), "--api-budget", "101", "true");
	check_err(BUDGET_MSG("--api-budget", ""), "--api-budget", "", "true");
	check_err(BUDGET_MSG("--api-budget", "%"), "--api-budget", "%", "true");
	check_err(BUDGET_MSG("--api-budget", "lots"), "--api-budget", "lots", "true");
	check_err(BUDGET_MSG("--api-budget", "-5"), "--api-budget", "-5", "true");
	check_err(BUDGET_MSG("--api-budget", "123456789"), "--api-budget", "123456789", "true");
	check_err(BUDGET_MSG("--api-budget", "20%:100"), "--api-budget", "20%:100", "true");
	check_err(BUDGET_MSG("--api-budget", "20%:0/30s"), "--api-budget", "20%:0/30s", "true");
	check_err(BUDGET_MSG("--api-budget", "20%:1000001/5m"), "--api-budget", "20%:1000001/5m",
	          "true");
	check_err(BUDGET_MSG("--api-budget", "20%:100/500ms"), "--api-budget", "20%:100/500ms",
	          "true");
	check_err(BUDGET_MSG("--api-budget", "20%:100/soon"), "--api-budget", "20%:100/soon", "true");

	fake_env[0] = "CIVIS_AGENT_API_BUDGET=50%:200/1m";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), AGENT_OPTS_RUN);
	assert_int_equal(o.api_budget_pct, 50);
	assert_int_equal(o.api_rate_limit, 200);
	assert_true(o.api_rate_window_ns == 60000000000ULL);
	agent_opts_dispose(&o);
	assert_int_equal(parse(&o, err, sizeof(err), "--api-budget", "10", "true", (char *)NULL),
	                 AGENT_OPTS_RUN);
	assert_int_equal(o.api_budget_pct, 10);   /* the command line wins */
	assert_int_equal(o.api_rate_limit, 0);
	agent_opts_dispose(&o);
	fake_env[0] = "CIVIS_AGENT_API_BUDGET=half";
	assert_int_equal(parse(&o, err, sizeof(err), "true", (char *)NULL), -1);
	assert_string_equal(err, BUDGET_MSG("CIVIS_AGENT_API_BUDGET", "half"));
	agent_opts_dispose(&o);
	memset(fake_env, 0, sizeof(fake_env));
}

static void
test_units(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(agent_parse_duration("1.5", &v), CIVIS_OK);
	assert_true(v == 1500000000ULL);
	assert_int_equal(agent_parse_duration("250ms", &v), CIVIS_OK);
	assert_true(v == 250000000ULL);
	assert_int_equal(agent_parse_duration("2m", &v), CIVIS_OK);
	assert_true(v == 120000000000ULL);
	assert_int_equal(agent_parse_duration("-1", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_duration("1x", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_duration("", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_duration("1e300", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_size("64K", &v), CIVIS_OK);
	assert_true(v == 65536);
	assert_int_equal(agent_parse_size("1MiB", &v), CIVIS_OK);
	assert_true(v == 1048576);
	assert_int_equal(agent_parse_size("99999999999999999999", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_size("20000000T", &v), CIVIS_EINVAL);
	assert_int_equal(agent_parse_size("1Q", &v), CIVIS_EINVAL);
	assert_int_equal(agent_check_expires_at("never"), CIVIS_OK);
	assert_int_equal(agent_check_expires_at("2027-01-31T00:00:00Z"), CIVIS_OK);
	assert_int_equal(agent_check_expires_at("2027-01-31T00:00:00.123+02:00"), CIVIS_OK);
	assert_int_equal(agent_check_expires_at("2027-13-31T00:00:00Z"), CIVIS_EINVAL);
	assert_int_equal(agent_check_expires_at("2027-01-31 00:00:00Z"), CIVIS_EINVAL);
	assert_int_equal(agent_check_expires_at("2027-01-31T00:00:00"), CIVIS_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_stops_at_command),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_env_and_precedence),
		cmocka_unit_test(test_exit_reason_paths),
		cmocka_unit_test(test_detect_levels_and_report_state),
		cmocka_unit_test(test_api_budget),
		cmocka_unit_test(test_units),
	};
	return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
