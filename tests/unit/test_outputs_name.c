/* test_outputs_name.c: outputs_name.c: quoting of names in messages, Civis
 * names, --archive values and the size limit, archive membership. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/upload.h"
#include "../../agent/outputs.h"

#include "outputs_testutil.h"

/* ---------------------------------------------------------------- quoting */

static void
test_quote_plain_and_escapes(void **state)
{
	char b[256];

	(void)state;
	agent_outputs_quote(b, sizeof(b), "out/a.csv");
	assert_string_equal(b, "out/a.csv");
	agent_outputs_quote(b, sizeof(b), "out/new\nline");
	assert_string_equal(b, "out/new\\nline");
	agent_outputs_quote(b, sizeof(b), "tab\there\r");
	assert_string_equal(b, "tab\\there\\r");
	agent_outputs_quote(b, sizeof(b), "back\\slash");
	assert_string_equal(b, "back\\\\slash");
	agent_outputs_quote(b, sizeof(b), "bad\xff\xfe");
	assert_string_equal(b, "bad\\xff\\xfe");
	agent_outputs_quote(b, sizeof(b), "bell\a\x7f");
	assert_string_equal(b, "bell\\x07\\x7f");
	/* valid UTF-8 stays, an overlong or a surrogate does not */
	agent_outputs_quote(b, sizeof(b), "caf\xc3\xa9");
	assert_string_equal(b, "caf\xc3\xa9");
	agent_outputs_quote(b, sizeof(b), "x\xc0\xaf");
	assert_string_equal(b, "x\\xc0\\xaf");
	agent_outputs_quote(b, sizeof(b), "s\xed\xa0\x80");
	assert_string_equal(b, "s\\xed\\xa0\\x80");
	/* a right-to-left override could disguise the name */
	agent_outputs_quote(b, sizeof(b), "a\xe2\x80\xae" "b");
	assert_string_equal(b, "a\\xe2\\x80\\xaeb");
	/* C1 control */
	agent_outputs_quote(b, sizeof(b), "c\xc2\x85");
	assert_string_equal(b, "c\\xc2\\x85");
}

static void
test_quote_quotes_when_needed(void **state)
{
	char b[256];

	(void)state;
	agent_outputs_quote(b, sizeof(b), "out/my file.txt");
	assert_string_equal(b, "\"out/my file.txt\"");
	agent_outputs_quote(b, sizeof(b), "a:b");
	assert_string_equal(b, "\"a:b\"");
	agent_outputs_quote(b, sizeof(b), "say \"hi\"");
	assert_string_equal(b, "\"say \\\"hi\\\"\"");
	agent_outputs_quote(b, sizeof(b), "");
	assert_string_equal(b, "\"\"");
}

static void
test_quote_truncates_at_boundaries(void **state)
{
	char b[12], big[5000];
	size_t n, len;

	(void)state;
	n = agent_outputs_quote(b, sizeof(b), "abcdefghijklmnop");
	assert_int_equal(n, strlen(b));
	assert_true(n < sizeof(b));
	assert_string_equal(b, "abcdefgh...");
	/* an escape is never cut in half */
	agent_outputs_quote(b, sizeof(b), "ab\xff\xff\xff");
	assert_string_equal(b, "ab\\xff...");
	/* nor a UTF-8 sequence */
	agent_outputs_quote(b, sizeof(b), "abcdef\xc3\xa9\xc3\xa9");
	assert_string_equal(b, "abcdef\xc3\xa9...");
	agent_outputs_quote(b, sizeof(b), "a b c d e f g h");
	assert_string_equal(b, "\"a b c ...\"");
	/* every size, every input: NUL-terminated, within the buffer */
	memset(big, '\n', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (len = 0; len < 40; len++) {
		char small[40];

		memset(small, 'Z', sizeof(small));
		n = agent_outputs_quote(small, len, big);
		if (len > 0) {
			assert_true(n < len);
			assert_int_equal(strlen(small), n);
		}
	}
}

/* ---------------------------------------------------------------- names */

static void
test_civis_name(void **state)
{
	char b[64];

	(void)state;
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "sub/a.csv", NULL), CIVIS_OK);
	assert_string_equal(b, "sub/a.csv");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a/b%2Fc%", NULL), CIVIS_OK);
	assert_string_equal(b, "a/b%2Fc%");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a/b", ".tar.gz"), CIVIS_OK);
	assert_string_equal(b, "a/b.tar.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a.csv", ".gz"), CIVIS_OK);
	assert_string_equal(b, "a.csv.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "logs", ".tar.gz"), CIVIS_OK);
	assert_string_equal(b, "logs.tar.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "bad\xff.txt", NULL), CIVIS_OK);
	assert_string_equal(b, "bad\xef\xbf\xbd.txt");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "new\nline \xc3\xa9", NULL),
	                 CIVIS_OK);
	assert_string_equal(b, "new\nline \xc3\xa9");
	assert_int_equal(agent_outputs_civis_name(b, 8, "12345678", NULL), CIVIS_ETOOBIG);
	assert_string_equal(b, "");
	assert_int_equal(agent_outputs_civis_name(b, 9, "12345678", NULL), CIVIS_OK);
	assert_int_equal(agent_outputs_civis_name(b, 9, "1234567", ".gz"), CIVIS_ETOOBIG);
	assert_int_equal(agent_outputs_civis_name(b, 5, "\xff", NULL), CIVIS_OK);
	assert_int_equal(agent_outputs_civis_name(b, 3, "\xff", NULL), CIVIS_ETOOBIG);
}

static void
test_check_archive_and_size(void **state)
{
	char b[PATH_MAX], err[256];

	(void)state;
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "logs/", err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(b, "logs");
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a/b", err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(b, "a/b");
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "/abs", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_non_null(strstr(err, "relative"));
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a/../b", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "./a", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a//b", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "..", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "/", err, sizeof(err)),
	                 CIVIS_EINVAL);

	assert_int_equal(agent_outputs_check_size(0, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(agent_outputs_check_size(CIVIS_UPLOAD_MAX_SIZE, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(agent_outputs_check_size(CIVIS_UPLOAD_MAX_SIZE + 1, err, sizeof(err)),
	                 CIVIS_ETOOBIG);
	assert_non_null(strstr(err, "5 TiB"));
}

static void
test_in_archive(void **state)
{
	const char *arch[] = { "logs", "a/b" };
	agent_out_rules r;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.archives = arch;
	r.narchives = 2;
	assert_int_equal(agent_outputs_in_archive(&r, "logs", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "logs", 0), 0);   /* a file so named */
	assert_int_equal(agent_outputs_in_archive(&r, "logs/x", 0), 1);
	assert_int_equal(agent_outputs_in_archive(&r, "logs2/x", 0), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "logsx", 1), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "a", 1), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "a/b", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "a/b/c/d", 0), 1);
	assert_int_equal(agent_outputs_in_archive(&r, "", 1), 0);
	r.narchives = 0;
	r.archive_dirs = 1;
	assert_int_equal(agent_outputs_in_archive(&r, "top.csv", 0), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "sub", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "sub/x", 0), 1);
}


/* A whole message: control bytes escaped, backslashes and quotes left. */
static void
test_escape_text(void **state)
{
	char b[256];
	(void)state;

	agent_outputs_escape_text(b, sizeof(b),
	                          "upload of evil\ncivis-agent: OK\x1b[2J: \"x\\n\" \xff \xe2\x80\xae.");
	assert_string_equal(b, "upload of evil\\ncivis-agent: OK\\x1b[2J: \"x\\n\" \\xff "
	                       "\\xe2\\x80\\xae.");
	/* idempotent on what quote made */
	agent_outputs_quote(b, sizeof(b), "a\nb c");
	assert_string_equal(b, "\"a\\nb c\"");
	{
		char c[256];
		agent_outputs_escape_text(c, sizeof(c), b);
		assert_string_equal(c, b);
	}
}

static void
test_name_has_secret(void **state)
{
	civis_redact *r;
	(void)state;

	assert_int_equal(agent_outputs_name_has_secret(NULL, "x"), 0);
	assert_int_equal(civis_redact_new(&r), CIVIS_OK);
	assert_int_equal(agent_outputs_name_has_secret(r, "Sup3rS3cretValue.csv"), 0);
	assert_int_equal(civis_redact_add(r, "Sup3rS3cretValue", 16), CIVIS_OK);
	assert_int_equal(agent_outputs_name_has_secret(r, "a-Sup3rS3cretValue.csv"), 1);
	assert_int_equal(agent_outputs_name_has_secret(r, "sub%2FSup3rS3cretValue"), 1);
	assert_int_equal(agent_outputs_name_has_secret(r, "a-Sup3rS3cret.csv"), 0);
	civis_redact_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_text),
		cmocka_unit_test(test_name_has_secret),
		cmocka_unit_test(test_quote_plain_and_escapes),
		cmocka_unit_test(test_quote_quotes_when_needed),
		cmocka_unit_test(test_quote_truncates_at_boundaries),
		cmocka_unit_test(test_civis_name),
		cmocka_unit_test(test_check_archive_and_size),
		cmocka_unit_test(test_in_archive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
