/* driver.c: the torture build's own exercise of the pure modules.
 *
 *   torture_driver SCENARIO     (linebuf logbatch logqueue redact client options)
 *
 * Unlike a cmocka test, which leaves a failed test by longjmp and so abandons
 * whatever it had allocated, each scenario here checks every call, and on a
 * failure frees everything and stops: with CIVIS_FAIL_ALLOC_AT=N, a leak that
 * LeakSanitizer reports is the library's. When every call succeeded, the
 * result is checked too (a failed allocation must not lose or corrupt data
 * behind a success).
 *
 * Exit: 0 everything succeeded and checked out; 1 a call failed cleanly
 * (expected under injection: its status is printed); 3 a wrong result after
 * success; 2 usage. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/linebuf.h"
#include "civis/logbatch.h"
#include "civis/logqueue.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "options.h"

#define SINK_CAP (64 * 1024)

struct sink {
	char buf[SINK_CAP];
	size_t len;
	unsigned pieces;
};

static int
fail(const char *what, int rc)
{
	fprintf(stderr, "torture_driver: %s: %d\n", what, rc);
	return 1;
}

static int
wrong(const char *what)
{
	fprintf(stderr, "torture_driver: WRONG RESULT: %s\n", what);
	return 3;
}

static int
sink_line(void *ud, const char *line, size_t len, unsigned flags)
{
	struct sink *s = ud;

	if (s->len + len + 1 > sizeof(s->buf))
		return CIVIS_ETOOBIG;
	memcpy(s->buf + s->len, line, len);
	s->len += len;
	if (!(flags & CIVIS_LINE_CONTINUES))
		s->buf[s->len++] = '\n';
	s->pieces++;
	return CIVIS_OK;
}

static int
sink_out(void *ud, const char *data, size_t len)
{
	struct sink *s = ud;

	if (s->len + len > sizeof(s->buf))
		return CIVIS_ETOOBIG;
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	return CIVIS_OK;
}

/* ------------------------------------------------------------ linebuf */

static int
scen_linebuf(void)
{
	static const char *const chunks[] = {
		"first line\nsecond", " line\r\nthird line is longer than the ",
		"cap of the buffer so it is split into pieces\n\xc3", "\xa9t\xc3\xa9\n",
		"no newline at the end",
	};
	static const char want[] =
		"first line\nsecond line\nthird line is longer than the cap of the buffer "
		"so it is split into pieces\n\xc3\xa9t\xc3\xa9\nno newline at the end\n";
	civis_linebuf *lb = NULL;
	struct sink *s = calloc(1, sizeof(*s));
	int rc;

	if (s == NULL)
		return fail("calloc", CIVIS_ENOMEM);
	rc = civis_linebuf_new(&lb, 16);
	if (rc != CIVIS_OK) {
		rc = fail("civis_linebuf_new", rc);
		goto out;
	}
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		rc = civis_linebuf_feed(lb, chunks[i], strlen(chunks[i]), sink_line, s);
		if (rc != CIVIS_OK) {
			rc = fail("civis_linebuf_feed", rc);
			goto out;
		}
	}
	rc = civis_linebuf_finish(lb, sink_line, s);
	if (rc != CIVIS_OK) {
		rc = fail("civis_linebuf_finish", rc);
		goto out;
	}
	if (s->len != strlen(want) || memcmp(s->buf, want, s->len) != 0) {
		rc = wrong("linebuf: the lines do not put the input back together");
		goto out;
	}
	rc = 0;
out:
	civis_linebuf_free(lb);
	free(s);
	return rc;
}

/* ------------------------------------------------------------ logbatch */

static int
scen_logbatch(void)
{
	civis_batch *b = NULL;
	civis_tsclock clk = { 0 };
	const char *body;
	size_t len = 0;
	char msg[200];
	int rc;

	rc = civis_batch_new(&b, 100, CIVIS_BATCH_DEFAULT_BYTES);
	if (rc != CIVIS_OK)
		return fail("civis_batch_new", rc);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 40; i++) {
			int n = snprintf(msg, sizeof(msg), "line %d of %d: \"quoted\" \t tab \xff\xfe bad "
			                 "utf-8 \xe2\x82 cut \xf0\x9f\x98\x80 ok", i, round);

			if (n < 0 || (size_t)n >= sizeof(msg)) {
				rc = wrong("snprintf");
				goto out;
			}
			rc = civis_batch_add(b, msg, (size_t)n, i % 2 ? "error" : "info",
			                     civis_tsclock_next(&clk, 1700000000000000000ULL));
			if (rc != CIVIS_OK) {
				rc = fail("civis_batch_add", rc);
				goto out;
			}
		}
		body = civis_batch_body(b, &len);
		if (body == NULL) {
			rc = fail("civis_batch_body", CIVIS_ENOMEM);
			goto out;
		}
		if (civis_batch_count(b) != 40 || len < 40 * 60 || body[0] != '{' ||
		    strstr(body, "\"line 39 of ") == NULL) {
			rc = wrong("logbatch: the body lacks messages");
			goto out;
		}
		civis_batch_reset(b);
	}
	rc = 0;
out:
	civis_batch_free(b);
	return rc;
}

/* ------------------------------------------------------------ logqueue */

static int
scen_logqueue(void)
{
	civis_logq *q = NULL;
	civis_logq_opts o = { .mem_cap = 8 * 1024, .spool_cap = 1 << 20, .spool_dir = NULL };
	civis_logq_chunk *c = NULL;
	struct civis_logq_stats st;
	char err[CIVIS_LOGQ_ERRLEN];
	char body[1000], back[1000];
	uint32_t pushed = 0, acked = 0;
	int rc;

	o.spool_dir = getenv("TMPDIR");
	rc = civis_logq_new(&q, &o, err, sizeof(err));
	if (rc != CIVIS_OK) {
		fprintf(stderr, "torture_driver: civis_logq_new: %s\n", err);
		return 1;
	}
	for (uint32_t i = 1; i <= 40; i++) {
		memset(body, 'a' + (int)(i % 26), sizeof(body));
		rc = civis_logq_push(q, body, sizeof(body), i, i, i);
		if (rc != CIVIS_OK) {
			/* A push that fails keeps nothing; the queue goes on. */
			fprintf(stderr, "torture_driver: push %u: %d %s\n", i, rc,
			        civis_logq_last_error(q));
			continue;
		}
		pushed++;
	}
	/* Take two, nack one (it comes back first), ack the rest in order. */
	for (int round = 0; round < 200; round++) {
		size_t got = 0;

		rc = civis_logq_take(q, &c);
		if (rc == CIVIS_ENOTFOUND)
			break;
		if (rc != CIVIS_OK) {
			rc = fail("civis_logq_take", rc);
			goto out;
		}
		rc = civis_logq_chunk_read(q, c, 0, back, sizeof(back), &got);
		if (rc != CIVIS_OK) {
			fprintf(stderr, "torture_driver: chunk_read: %d %s\n", rc,
			        civis_logq_last_error(q));
			civis_logq_nack(q, c);
			c = NULL;
			rc = 1;
			goto out;
		}
		if (got != sizeof(back) || civis_logq_chunk_len(c) != sizeof(back) ||
		    back[0] != 'a' + (int)(civis_logq_chunk_lines(c) % 26)) {
			civis_logq_ack(q, c);
			c = NULL;
			rc = wrong("logqueue: a chunk came back with other bytes");
			goto out;
		}
		if (round % 3 == 1) {
			civis_logq_nack(q, c);
		} else {
			civis_logq_ack(q, c);
			acked++;
		}
		c = NULL;
	}
	civis_logq_stats(q, &st);
	if (st.dropped_chunks == 0 && acked != pushed) {
		rc = wrong("logqueue: a pushed chunk was lost");
		goto out;
	}
	rc = pushed == 40 ? 0 : 1;
out:
	civis_logq_free(q);
	return rc;
}

/* ------------------------------------------------------------ redact */

static int
scen_redact(void)
{
	static const char *const secrets[] = {
		"hunter2-secret-value", "AKIAIOSFODNN7EXAMPLE", "p@ss w0rd/with+chars=",
	};
	char *envp[] = {
		"PATH=/usr/bin", "DB_PASSWORD=correct-horse-battery", "API_TOKEN=tok_0123456789abcdef",
		"HOME=/root", "MY_THING=not-a-secret-at-all", NULL,
	};
	const char *const pats[] = { "MY_*" };
	static const char *const feed[] = {
		"user hunter2-sec", "ret-value logged in with AKIAIOSFODNN7EXAMPLE and ",
		"correct-horse-battery; token tok_0123456789abcdef, url p%40ss%20w0rd%2F",
		"with%2Bchars%3D done\n",
	};
	civis_redact *r = NULL;
	civis_redact_stream *st = NULL;
	struct sink *s = calloc(1, sizeof(*s));
	char line[256];
	int rc;

	if (s == NULL)
		return fail("calloc", CIVIS_ENOMEM);
	rc = civis_redact_new(&r);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_new", rc);
		goto out;
	}
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		rc = civis_redact_add(r, secrets[i], strlen(secrets[i]));
		if (rc != CIVIS_OK) {
			rc = fail("civis_redact_add", rc);
			goto out;
		}
	}
	rc = civis_redact_add_env(r, envp, pats, 1, 1);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_add_env", rc);
		goto out;
	}
	rc = civis_redact_stream_new(&st, r);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_stream_new", rc);
		goto out;
	}
	for (size_t i = 0; i < sizeof(feed) / sizeof(feed[0]); i++) {
		rc = civis_redact_stream_feed(st, feed[i], strlen(feed[i]), sink_out, s);
		if (rc != CIVIS_OK) {
			rc = fail("civis_redact_stream_feed", rc);
			goto out;
		}
	}
	rc = civis_redact_stream_flush(st, sink_out, s);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_stream_flush", rc);
		goto out;
	}
	s->buf[s->len < sizeof(s->buf) ? s->len : sizeof(s->buf) - 1] = '\0';
	if (strstr(s->buf, "hunter2") || strstr(s->buf, "AKIA") || strstr(s->buf, "horse") ||
	    strstr(s->buf, "tok_0123") || strstr(s->buf, "not-a-secret") ||
	    strstr(s->buf, "w0rd%2F") || strstr(s->buf, " done\n") == NULL) {
		fprintf(stderr, "torture_driver: masked: %s", s->buf);
		rc = wrong("redact: a secret got through, or text was lost");
		goto out;
	}
	rc = civis_redact_string(r, "the DB_PASSWORD is correct-horse-battery", line, sizeof(line));
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_string", rc);
		goto out;
	}
	if (strstr(line, "horse") != NULL) {
		rc = wrong("redact: civis_redact_string left the secret");
		goto out;
	}
	/* a secret added while the stream runs, cut by a flush */
	rc = civis_redact_add_secret(r, "late-secret-42", 14);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_add_secret", rc);
		goto out;
	}
	s->len = 0;
	rc = civis_redact_stream_feed(st, "x late-sec", 10, sink_out, s);
	if (rc == CIVIS_OK)
		rc = civis_redact_stream_flush(st, sink_out, s);
	if (rc == CIVIS_OK)
		rc = civis_redact_stream_feed(st, "ret-42 y\n", 9, sink_out, s);
	if (rc != CIVIS_OK) {
		rc = fail("civis_redact_stream_feed/flush after add_secret", rc);
		goto out;
	}
	s->buf[s->len < sizeof(s->buf) ? s->len : sizeof(s->buf) - 1] = '\0';
	if (strstr(s->buf, "late") || strstr(s->buf, "ret-42") || strstr(s->buf, " y\n") == NULL) {
		fprintf(stderr, "torture_driver: masked: %s", s->buf);
		rc = wrong("redact: a secret added at run time got through a flush");
		goto out;
	}
	/* masked whole, then cut */
	rc = civis_redact_format(r, line, 20, "key %s and more", "late-secret-42");
	if (rc != CIVIS_ETOOBIG) {
		rc = rc == CIVIS_OK ? wrong("redact: civis_redact_format did not cut")
		                    : fail("civis_redact_format", rc);
		goto out;
	}
	if (strstr(line, "late") != NULL) {
		rc = wrong("redact: civis_redact_format showed the start of a secret");
		goto out;
	}
	rc = 0;
out:
	civis_redact_stream_free(st);
	civis_redact_free(r);
	free(s);
	return rc;
}

/* ------------------------------------------------------------ client */

static const char *
fake_env(const char *name, void *ud)
{
	(void)ud;
	if (strcmp(name, "CIVIS_API_ENDPOINT") == 0)
		return "http://127.0.0.1:9/api";
	if (strcmp(name, "CIVIS_API_KEY") == 0)
		return "torture-key-0123456789";
	if (strcmp(name, "CIVIS_JOB_ID") == 0)
		return "11";
	if (strcmp(name, "CIVIS_RUN_ID") == 0)
		return "22";
	return NULL;
}

static int
scen_client(void)
{
	static const char run[] =
		"{\"id\":22,\"state\":\"running\",\"isCancelRequested\":true,\"extra\":[1,2,{}]}";
	static const char fpost[] =
		"{\"id\":1001,\"uploadUrl\":\"http://127.0.0.1:9/b/\",\"uploadFields\":"
		"{\"key\":\"k/x\",\"policy\":\"cG9s\",\"x-amz-signature\":\"abc\",\"a\":\"b\"}}";
	static const char mpost[] =
		"{\"id\":1002,\"uploadUrls\":[\"http://h/1\",\"http://h/2\",\"http://h/3\"]}";
	static const char bad[] = "{\"id\":\"x\",\"uploadFields\":[1,2]}";
	civis_client_config cfg;
	civis_run_state rs;
	civis_file_post fp;
	civis_multipart_post mp;
	civis_loop *loop = NULL;
	civis_http *http = NULL;
	civis_client *c = NULL;
	char err[256], path[256];
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	memset(&fp, 0, sizeof(fp));
	memset(&mp, 0, sizeof(mp));
	rc = civis_client_config_parse(&cfg, fake_env, NULL, err, sizeof(err));
	if (rc != CIVIS_OK) {
		fprintf(stderr, "torture_driver: config: %d %s\n", rc, err);
		return 1;
	}
	rc = civis_parse_run_state(run, sizeof(run) - 1, &rs, err, sizeof(err));
	if (rc != CIVIS_OK) {
		rc = fail(err, rc);
		goto out;
	}
	if (rs.id != 22 || !rs.is_cancel_requested || strcmp(rs.state, "running") != 0) {
		rc = wrong("client: run state");
		goto out;
	}
	rc = civis_parse_file_post(fpost, sizeof(fpost) - 1, &fp, err, sizeof(err));
	if (rc != CIVIS_OK) {
		rc = fail(err, rc);
		goto out;
	}
	if (fp.id != 1001 || fp.nfields != 4 || strcmp(fp.field_names[3], "a") != 0 ||
	    strcmp(fp.field_values[0], "k/x") != 0) {
		rc = wrong("client: file post");
		goto out;
	}
	rc = civis_parse_multipart_post(mpost, sizeof(mpost) - 1, &mp, err, sizeof(err));
	if (rc != CIVIS_OK) {
		rc = fail(err, rc);
		goto out;
	}
	if (mp.id != 1002 || mp.nurls != 3 || strcmp(mp.upload_urls[2], "http://h/3") != 0) {
		rc = wrong("client: multipart post");
		goto out;
	}
	civis_file_post_dispose(&fp);
	rc = civis_parse_file_post(bad, sizeof(bad) - 1, &fp, err, sizeof(err));
	if (rc == CIVIS_OK) {
		rc = wrong("client: a malformed file post parsed");
		goto out;
	}
	civis_parse_error_text(bad, sizeof(bad) - 1, err, sizeof(err));
	rc = civis_loop_new(&loop);
	if (rc != CIVIS_OK) {
		rc = fail("civis_loop_new", rc);
		goto out;
	}
	rc = civis_http_new(&http, loop);
	if (rc != CIVIS_OK) {
		rc = fail("civis_http_new", rc);
		goto out;
	}
	rc = civis_client_new(&c, loop, http, &cfg);
	if (rc != CIVIS_OK) {
		rc = fail("civis_client_new", rc);
		goto out;
	}
	rc = civis_client_run_path(c, "/logs", path, sizeof(path));
	if (rc != CIVIS_OK || strstr(path, "containers/11/runs/22/logs") == NULL) {
		rc = wrong("client: run path");
		goto out;
	}
	rc = 0;
out:
	civis_client_free(c);
	civis_http_free(http);
	civis_loop_free(loop);
	civis_file_post_dispose(&fp);
	civis_multipart_post_dispose(&mp);
	civis_client_config_dispose(&cfg);
	return rc;
}

/* ------------------------------------------------------------ options */

static const char *
opts_env(const char *name, void *ud)
{
	(void)ud;
	if (strcmp(name, "CIVIS_AGENT_REDACT") == 0)
		return "FOO_*,BAR";
	if (strcmp(name, "CIVIS_AGENT_HEARTBEAT_INTERVAL") == 0)
		return "10s";
	if (strcmp(name, "CIVIS_AGENT_ARCHIVE") == 0)
		return "logs,data";
	return NULL;
}

static int
scen_options(void)
{
	char *argv[] = {
		"civis-agent", "-v", "--output-dir",
		"/tmp/out", "--expires-at", "never", "--log-line-max", "32K", "-e", "3",
		"--spool-dir", "/tmp", "--", "sh", "-c", "exit 0", NULL,
	};
	agent_opts o;
	char err[256];
	int rc;

	memset(&o, 0, sizeof(o));
	rc = agent_opts_parse(&o, (int)(sizeof(argv) / sizeof(argv[0])) - 1, argv, opts_env,
	                      NULL, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "torture_driver: options: %s\n", err);
		agent_opts_dispose(&o);
		return 1;
	}
	rc = (rc == AGENT_OPTS_RUN && o.argv != NULL && strcmp(o.argv[0], "sh") == 0) ? 0 :
	     wrong("options: the command");
	agent_opts_dispose(&o);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} scen[] = {
		{ "linebuf", scen_linebuf }, { "logbatch", scen_logbatch },
		{ "logqueue", scen_logqueue }, { "redact", scen_redact },
		{ "client", scen_client }, { "options", scen_options },
	};

	if (argc != 2) {
		fprintf(stderr, "usage: torture_driver SCENARIO\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(scen) / sizeof(scen[0]); i++)
		if (strcmp(argv[1], scen[i].name) == 0)
			return scen[i].fn();
	fprintf(stderr, "torture_driver: no scenario %s\n", argv[1]);
	return 2;
}
