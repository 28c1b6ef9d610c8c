/* test_level.c: civis_level_detect on every form level.h lists, and on the
 * near misses that must stay no level. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "civis/level.h"

static const char *
lv(const char *line)
{
	const char *n = civis_level_name(civis_level_detect(line, strlen(line)));

	return n ? n : "none";
}

#define IS(want, line) assert_string_equal(lv(line), want)

static void
test_python_default(void **state)
{
	(void)state;
	IS("debug", "DEBUG:root:starting");
	IS("info", "INFO:root:hello");
	IS("warn", "WARNING:urllib3.connectionpool:Retrying (Retry(total=4))");
	IS("error", "ERROR:__main__:failed");
	IS("fatal", "CRITICAL:app:giving up");
}

static void
test_words_and_mapping(void **state)
{
	(void)state;
	IS("debug", "TRACE: x");
	IS("debug", "TRC x");
	IS("debug", "DBG x");
	IS("info", "INF x");
	IS("info", "NOTICE: x");
	IS("warn", "WARN x");
	IS("warn", "WRN x");
	IS("error", "ERR x");
	IS("error", "SEVERE: x");
	IS("fatal", "FATAL x");
	IS("fatal", "FTL x");
	IS("fatal", "CRIT x");
	IS("fatal", "PANIC: x");
	IS("fatal", "EMERG: x");
	IS("warn", "warning: unused variable 'x'");      /* compilers */
	IS("fatal", "fatal: not a git repository");     /* git */
	IS("error", "Error: file not found");
}

static void
test_bracket_dash_colon_forms(void **state)
{
	(void)state;
	IS("info", "[INFO] started");
	IS("info", "[info] started");
	IS("warn", "[ WARN ] disk almost full");
	IS("info", "[INFO ] padded");
	IS("error", "ERROR - it broke");
	IS("error", "error - it broke");
	IS("info", "Info | loguru style");
	IS("info", "info: lower case colon");
	IS("warn", "WARNING");                        /* the whole line */
	IS("info", "   INFO: indented");
	IS("info", "INFO -");
}

static void
test_after_timestamp(void **state)
{
	(void)state;
	IS("info", "2024-01-02 03:04:05,123 INFO mymodule: started");
	IS("warn", "2024-01-02 03:04:05,123 - WARNING - careful");
	IS("error", "2024-01-02T03:04:05.123456Z ERROR boom");
	IS("error", "2024-01-02T03:04:05+00:00 error: boom");
	IS("warn", "2024-01-02T03:04:05-0500 WARN x");
	IS("info", "[2024-01-02 03:04:05] [INFO] x");
	IS("info", "[2024-01-02 03:04:05] INFO: x");
	IS("debug", "2024-01-02 03:04:05.678 | DEBUG    | app:main:12 - x");
	IS("info", "03:04:05 INFO x");
	IS("info", "03:04:05.123 [info] x");
	IS("info", "2024-01-02\tINFO\tzap");
	IS("info", "2024-01-02 03:04 INFO short time");
}

static void
test_json(void **state)
{
	(void)state;
	IS("info", "{\"level\":\"info\",\"msg\":\"x\"}");
	IS("warn", "{\"time\": \"2024-01-02\", \"levelname\": \"WARNING\", \"message\": \"x\"}");
	IS("error", "{\"severity\":\"ERROR\",\"message\":\"x\"}");
	IS("fatal", "{\"msg\":\"a, b {c} [d]\",\"nested\":{\"level\":\"debug\"},\"Level\":\"CRITICAL\"}");
	IS("info", "{\"level\":30,\"msg\":\"pino\"}");
	IS("debug", "{\"level\":10}");
	IS("error", "{\"level\":50,\"msg\":\"x\"}");
	IS("fatal", "{\"level\":60}");
	IS("warn", "{\"a\":[1,2,{\"b\":\"}\"}],\"level\":\"warn\"}");
	IS("warn", "{ \"level\" : \"warn\" }");
}

static void
test_near_misses(void **state)
{
	(void)state;
	IS("none", "INFORMATION: x");
	IS("none", "ERRORS: 3");
	IS("none", "[info");
	IS("none", "[info x");
	IS("none", "info x");                          /* lower case needs a delimiter */
	IS("none", "Error loading the file");
	IS("none", "INFO1 x");
	IS("none", "INFO,x");
	IS("none", "warnings: 2");
	IS("none", "");
	IS("none", "just text");
	IS("none", "2024-01-02 03:04:05 something INFO");
	IS("none", "x INFO: not at the start");
	IS("none", "[2024-01-02 03:04:05 INFO x");     /* timestamp bracket not closed */
	IS("none", "{\"msg\":\"level\",\"lvl\":\"info\"}");
	IS("none", "{\"nested\":{\"level\":\"info\"}}");
	IS("none", "{\"level\":\"verbose\"}");
	IS("none", "{\"level\":3}");
	IS("none", "{\"level\":\"in\\u0066o\"}");    /* escaped: not read */
	IS("none", "{\"severity\":40}");             /* numbers only for level */
	IS("none", "{\"level\":\"info");              /* cut */
	IS("none", "{level:info}");
}

/* Only the first CIVIS_LEVEL_SCAN bytes of a text line count, and only
 * CIVIS_LEVEL_JSON_SCAN of a JSON line; nothing is read past len. */
static void
test_bounds(void **state)
{
	static char big[CIVIS_LEVEL_JSON_SCAN + 200];
	char *exact;

	(void)state;
	memset(big, ' ', CIVIS_LEVEL_SCAN);
	memcpy(big + CIVIS_LEVEL_SCAN, "INFO: x", 7);
	assert_int_equal(civis_level_detect(big, CIVIS_LEVEL_SCAN + 7), CIVIS_LEVEL_NONE);
	memcpy(big + CIVIS_LEVEL_SCAN - 8, "INFO: x ", 8);
	assert_int_equal(civis_level_detect(big, CIVIS_LEVEL_SCAN + 7), CIVIS_LEVEL_INFO);

	memset(big, 0, sizeof(big));
	memcpy(big, "{\"pad\":\"", 8);
	memset(big + 8, 'a', CIVIS_LEVEL_JSON_SCAN);
	memcpy(big + 8 + CIVIS_LEVEL_JSON_SCAN, "\",\"level\":\"info\"}", 17);
	assert_int_equal(civis_level_detect(big, strlen(big)), CIVIS_LEVEL_NONE);

	/* exactly len bytes, no NUL after them: ASan/valgrind catch a read past */
	exact = malloc(4);
	assert_non_null(exact);
	memcpy(exact, "INFO", 4);
	assert_int_equal(civis_level_detect(exact, 4), CIVIS_LEVEL_INFO);
	assert_int_equal(civis_level_detect(exact, 3), CIVIS_LEVEL_INFO);   /* "INF" */
	assert_int_equal(civis_level_detect(exact, 2), CIVIS_LEVEL_NONE);
	memcpy(exact, "{\"le", 4);
	assert_int_equal(civis_level_detect(exact, 4), CIVIS_LEVEL_NONE);
	free(exact);
	assert_int_equal(civis_level_detect(NULL, 0), CIVIS_LEVEL_NONE);
	assert_null(civis_level_name(CIVIS_LEVEL_NONE));
	assert_null(civis_level_name((civis_level)99));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_python_default),
		cmocka_unit_test(test_words_and_mapping),
		cmocka_unit_test(test_bracket_dash_colon_forms),
		cmocka_unit_test(test_after_timestamp),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_near_misses),
		cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests_name("level", tests, NULL, NULL);
}
