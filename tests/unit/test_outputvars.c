/* test_outputvars.c: the CIVIS_OUTPUT parser: both line forms, JSON or
 * string values, overrides, CRLF, malformed lines (named by number, never
 * by value), the 1,000,000-byte cap at its edge, many keys, and reading the
 * file (missing, FIFO, symlink, too big). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "civis/civis.h"
#include "../../agent/outputvars.h"

#define MAX_NOTES 64

static char *notes[MAX_NOTES];
static size_t nnotes;

static void
notes_clear(void)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		free(notes[i]);
	nnotes = 0;
}

static void
collect(void *ud, const char *text)
{
	(void)ud;
	assert_null(strchr(text, '\n'));
	if (nnotes < MAX_NOTES)
		notes[nnotes++] = strdup(text);
}

static int
has_note(const char *part)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		if (strstr(notes[i], part) != NULL)
			return 1;
	return 0;
}

/* Parse a NUL-terminated text; the result must be `want` (NULL: no object). */
static void
check(const char *text, int want_rc, const char *want)
{
	agent_outputvars v;
	char err[512];
	int rc;

	notes_clear();
	rc = agent_outputvars_parse(&v, text, strlen(text), collect, NULL, err, sizeof(err));
	assert_int_equal(rc, want_rc);
	if (want == NULL) {
		assert_null(v.json);
	} else {
		assert_non_null(v.json);
		assert_string_equal(v.json, want);
		assert_int_equal(v.len, strlen(want));
	}
	agent_outputvars_dispose(&v);
}

static void
test_key_value_lines(void **state)
{
	(void)state;
	check("a=1\nb=hello\nc=true\nd={\"x\": [1, 2], \"y\": null}\ne=\nf=null\n", CIVIS_OK,
	      "{\"a\":1,\"b\":\"hello\",\"c\":true,\"d\":{\"x\":[1,2],\"y\":null},\"e\":\"\",\"f\":null}");
	check("url=http://h/?a=b&c=d", CIVIS_OK, "{\"url\":\"http://h/?a=b&c=d\"}");
	check("a<b=1", CIVIS_OK, "{\"a<b\":1}");
	check("k=a<<b", CIVIS_OK, "{\"k\":\"a<<b\"}");
	check("last=no newline", CIVIS_OK, "{\"last\":\"no newline\"}");
	check(" sp = 10 ", CIVIS_OK, "{\" sp \":10}");      /* the key as written; JSON less spaces */
	check("s=\"quoted\"\nt=\"open", CIVIS_OK, "{\"s\":\"quoted\",\"t\":\"\\\"open\"}");
	check("u=caf\xc3\xa9 \xe2\x82\xac", CIVIS_OK, "{\"u\":\"caf\xc3\xa9 \xe2\x82\xac\"}");
}

static void
test_numbers_exact_or_strings(void **state)
{
	(void)state;
	check("big=12345678901234567890\nneg=-0.5e10\nz=0\nf=2.50\ninf=1e999", CIVIS_OK,
	      "{\"big\":12345678901234567890,\"neg\":-0.5e10,\"z\":0,\"f\":2.50,\"inf\":1e999}");
	/* cJSON takes these, JSON does not: strings */
	check("lead=01\ndot=1.\nplus=+1\nhex=0x10", CIVIS_OK,
	      "{\"lead\":\"01\",\"dot\":\"1.\",\"plus\":\"+1\",\"hex\":\"0x10\"}");
	check("n=[1, 2.0, 3e2]", CIVIS_OK, "{\"n\":[1,2,300]}");
}

static void
test_escaping_round_trips(void **state)
{
	agent_outputvars v;
	const char *text = "s=tab\there \"q\" back\\slash \x01\x1f\x7f end\n";
	cJSON *o;

	(void)state;
	assert_int_equal(agent_outputvars_parse(&v, text, strlen(text), NULL, NULL, NULL, 0), CIVIS_OK);
	assert_string_equal(v.json, "{\"s\":\"tab\\there \\\"q\\\" back\\\\slash \\u0001\\u001f\x7f end\"}");
	o = cJSON_Parse(v.json);
	assert_non_null(o);
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "s")->valuestring,
	                    "tab\there \"q\" back\\slash \x01\x1f\x7f end");
	cJSON_Delete(o);
	agent_outputvars_dispose(&v);
}

static void
test_heredoc(void **state)
{
	(void)state;
	check("msg<<EOF\nline one\nline two\nEOF\nafter=1\n", CIVIS_OK,
	      "{\"msg\":\"line one\\nline two\",\"after\":1}");
	check("obj<<END\n{\n  \"a\": 1,\n  \"b\": \"x=y\"\n}\nEND", CIVIS_OK, "{\"obj\":{\"a\":1,\"b\":\"x=y\"}}");
	check("e<<E\nE\n", CIVIS_OK, "{\"e\":\"\"}");
	check("keep<<X\n\n  \na=1\nX\n", CIVIS_OK, "{\"keep\":\"\\n  \\na=1\"}");   /* blank, = inside */
	check("d<<EOF\nEOF \nEOF\n", CIVIS_OK, "{\"d\":\"EOF \"}");         /* exactly the delimiter */
	check("k<<a=b\nv\na=b", CIVIS_OK, "{\"k\":\"v\"}");                 /* "<<" before "=" */
}

static void
test_crlf(void **state)
{
	(void)state;
	check("a=1\r\nb<<X\r\nq\r\nr\r\nX\r\nc=z\r\n", CIVIS_OK, "{\"a\":1,\"b\":\"q\\nr\",\"c\":\"z\"}");
}

static void
test_later_keys_override(void **state)
{
	(void)state;
	check("a=1\nb=2\na=3\nb<<E\nmulti\nE\n", CIVIS_OK, "{\"a\":3,\"b\":\"multi\"}");
}

static void
test_blank_and_empty(void **state)
{
	(void)state;
	check("", CIVIS_OK, NULL);
	check("\n  \n\t\n\r\n", CIVIS_OK, NULL);
}

static void
test_malformed_lines_named_not_shown(void **state)
{
	agent_outputvars v;
	const char *text = "good=1\nsecretvalue\n=alsosecret\nk<<\n<<x\nlast=2\n";
	char err[512];
	size_t i;

	(void)state;
	notes_clear();
	assert_int_equal(agent_outputvars_parse(&v, text, strlen(text), collect, NULL, err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_string_equal(v.json, "{\"good\":1,\"last\":2}");
	assert_int_equal(v.nkeys, 2);
	assert_int_equal(v.nbad, 4);
	assert_int_equal(nnotes, 4);
	assert_true(has_note("CIVIS_OUTPUT line 2: neither KEY=VALUE nor KEY<<DELIMITER"));
	assert_true(has_note("CIVIS_OUTPUT line 3: KEY=VALUE with an empty key"));
	assert_true(has_note("CIVIS_OUTPUT line 4: KEY<<DELIMITER with an empty key or delimiter"));
	assert_true(has_note("CIVIS_OUTPUT line 5: KEY<<DELIMITER with an empty key or delimiter"));
	assert_string_equal(err, notes[0]);
	for (i = 0; i < nnotes; i++) {
		assert_null(strstr(notes[i], "secret"));
	}
	agent_outputvars_dispose(&v);
	notes_clear();
}

static void
test_unclosed_heredoc(void **state)
{
	(void)state;
	check("a=1\nb<<EOF\nx\nc=2\n", CIVIS_EINVAL, "{\"a\":1}");
	assert_int_equal(nnotes, 1);
	assert_true(has_note("CIVIS_OUTPUT line 2: b<<EOF: no line EOF closes the value"));
	notes_clear();
}

static void
test_nul_and_bad_utf8(void **state)
{
	agent_outputvars v;
	static const char text[] = "a=x\0y\nb=\xff\nc=ok\nd=\xc0\xaf\ne=\xed\xa0\x80\n"
	                           "h<<E\nfine\nbad\xfe\nE\nz=1";

	(void)state;
	notes_clear();
	assert_int_equal(agent_outputvars_parse(&v, text, sizeof(text) - 1, collect, NULL, NULL, 0),
	                 CIVIS_EINVAL);
	assert_string_equal(v.json, "{\"c\":\"ok\",\"z\":1}");
	assert_int_equal(v.nbad, 5);
	assert_true(has_note("line 1: holds a NUL byte"));
	assert_true(has_note("line 2: is not UTF-8"));
	assert_true(has_note("line 4: is not UTF-8"));           /* an overlong '/' */
	assert_true(has_note("line 5: is not UTF-8"));           /* a surrogate */
	assert_true(has_note("line 8: is not UTF-8 (JSON carries only UTF-8), in the value of h "
	                     "(from line 6); the key is not set"));
	agent_outputvars_dispose(&v);
	notes_clear();
}

/* {"k":"vvv..."} is n + 8 bytes */
static char *
text_of_value(size_t n, const char *tail)
{
	char *t = malloc(n + 3 + strlen(tail) + 1);

	assert_non_null(t);
	memcpy(t, "k=", 2);
	memset(t + 2, 'v', n);
	memcpy(t + 2 + n, tail, strlen(tail) + 1);
	return t;
}

static void
test_cap_at_its_edge(void **state)
{
	agent_outputvars v;
	char err[512];
	char *t;

	(void)state;
	t = text_of_value(AGENT_OUTPUTVARS_MAX_JSON - 8, "\n");
	assert_int_equal(agent_outputvars_parse(&v, t, strlen(t), NULL, NULL, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(v.len, AGENT_OUTPUTVARS_MAX_JSON);
	assert_int_equal(strlen(v.json), AGENT_OUTPUTVARS_MAX_JSON);
	agent_outputvars_dispose(&v);
	free(t);

	t = text_of_value(AGENT_OUTPUTVARS_MAX_JSON - 7, "\n");
	assert_int_equal(agent_outputvars_parse(&v, t, strlen(t), NULL, NULL, err, sizeof(err)),
	                 CIVIS_ETOOBIG);
	assert_null(v.json);
	assert_non_null(strstr(err, "more than 1000000 bytes"));
	free(t);

	/* escaping counts: 200,000 tabs are 400,000 bytes of JSON, 6 such keys too many */
	t = malloc(6 * 200010 + 1);
	assert_non_null(t);
	t[0] = '\0';
	for (int i = 0; i < 6; i++) {
		size_t n = strlen(t);

		n += (size_t)snprintf(t + n, 16, "k%d=", i);
		memset(t + n, '\t', 200000);
		t[n + 200000] = '\n';
		t[n + 200001] = '\0';
	}
	assert_int_equal(agent_outputvars_parse(&v, t, strlen(t), NULL, NULL, err, sizeof(err)),
	                 CIVIS_ETOOBIG);
	free(t);

	/* a later line brings it back under */
	t = text_of_value(1200000, "\nk=small\n");
	assert_int_equal(agent_outputvars_parse(&v, t, strlen(t), NULL, NULL, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(v.json, "{\"k\":\"small\"}");
	agent_outputvars_dispose(&v);
	free(t);
}

static void
test_many_keys(void **state)
{
	agent_outputvars v;
	size_t cap = 100000 * 16, n = 0;    /* 50,000 keys: '"k49999":49999,' is 15 bytes */
	char *t = malloc(cap);
	cJSON *o;
	int i;

	(void)state;
	assert_non_null(t);
	for (i = 0; i < 50000; i++)
		n += (size_t)snprintf(t + n, cap - n, "k%d=%d\n", i, i);
	assert_int_equal(agent_outputvars_parse(&v, t, n, NULL, NULL, NULL, 0), CIVIS_OK);
	assert_int_equal(v.nkeys, 50000);
	o = cJSON_Parse(v.json);
	assert_non_null(o);
	assert_int_equal(cJSON_GetArraySize(o), 50000);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "k49999")->valueint, 49999);
	assert_string_equal(o->child->string, "k0");
	cJSON_Delete(o);
	agent_outputvars_dispose(&v);
	/* and many lines over few keys */
	for (n = 0, i = 0; i < 100000; i++)
		n += (size_t)snprintf(t + n, cap - n, "k%d=%d\n", i % 3, i);
	assert_int_equal(agent_outputvars_parse(&v, t, n, NULL, NULL, NULL, 0), CIVIS_OK);
	assert_string_equal(v.json, "{\"k0\":99999,\"k1\":99997,\"k2\":99998}");
	agent_outputvars_dispose(&v);
	free(t);
}

static void
test_deep_json_is_a_string(void **state)
{
	agent_outputvars v;
	char t[2 + 4000 + 1];
	cJSON *o;

	(void)state;
	memcpy(t, "d=", 2);
	memset(t + 2, '[', 2000);
	memset(t + 2002, ']', 2000);
	t[4002] = '\0';
	assert_int_equal(agent_outputvars_parse(&v, t, strlen(t), NULL, NULL, NULL, 0), CIVIS_OK);
	o = cJSON_Parse(v.json);
	assert_non_null(o);
	assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "d")));
	cJSON_Delete(o);
	agent_outputvars_dispose(&v);
}

static void
test_read_file(void **state)
{
	char dir[] = "/tmp/test-outputvars-XXXXXX", path[256], link[256], fifo[256], err[512];
	agent_outputvars v;
	FILE *fh;
	int rc;

	(void)state;
	assert_non_null(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/out", dir);
	(void)snprintf(link, sizeof(link), "%s/link", dir);
	(void)snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(agent_outputvars_read(&v, path, NULL, NULL, err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_non_null(strstr(err, "No such file"));
	fh = fopen(path, "w");
	assert_non_null(fh);
	fputs("rows=10\nname<<EOF\nmy\nreport\nEOF\n", fh);
	fclose(fh);
	assert_int_equal(agent_outputvars_read(&v, path, NULL, NULL, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(v.json, "{\"rows\":10,\"name\":\"my\\nreport\"}");
	agent_outputvars_dispose(&v);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(agent_outputvars_read(&v, link, NULL, NULL, err, sizeof(err)), CIVIS_EINVAL);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(agent_outputvars_read(&v, fifo, NULL, NULL, err, sizeof(err)), CIVIS_EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(truncate(path, (off_t)AGENT_OUTPUTVARS_MAX_FILE + 1), 0);
	rc = agent_outputvars_read(&v, path, NULL, NULL, err, sizeof(err));
	assert_int_equal(rc, CIVIS_ETOOBIG);
	assert_null(v.json);
	assert_int_equal(truncate(path, (off_t)AGENT_OUTPUTVARS_MAX_FILE), 0);
	rc = agent_outputvars_read(&v, path, NULL, NULL, err, sizeof(err));
	assert_int_equal(rc, CIVIS_EINVAL);    /* the NUL bytes of the extension: malformed */
	agent_outputvars_dispose(&v);
	unlink(link);
	unlink(fifo);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_value_lines),
		cmocka_unit_test(test_numbers_exact_or_strings),
		cmocka_unit_test(test_escaping_round_trips),
		cmocka_unit_test(test_heredoc),
		cmocka_unit_test(test_crlf),
		cmocka_unit_test(test_later_keys_override),
		cmocka_unit_test(test_blank_and_empty),
		cmocka_unit_test(test_malformed_lines_named_not_shown),
		cmocka_unit_test(test_unclosed_heredoc),
		cmocka_unit_test(test_nul_and_bad_utf8),
		cmocka_unit_test(test_cap_at_its_edge),
		cmocka_unit_test(test_many_keys),
		cmocka_unit_test(test_deep_json_is_a_string),
		cmocka_unit_test(test_read_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
