/* test_logstream.c: the pipe -> tee + run-log pipeline, on a real loop.
 * The API side points at a port nothing listens on, so what is counted is
 * the pipeline's own work: lines made, kept undelivered, partial flushes. */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "../../agent/logstream.h"

#define MS 1000000ULL

struct fixture {
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_run *run;
	civis_redact *redact;
	agent_logstream *ls;
	int in[2];      /* the "command's" stdout */
	int tee[2];     /* where the copy goes */
};

static void
opts_default(agent_logstream_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->tee = 1;
	o->level[0] = "info";
	o->level[1] = "error";
	o->flush_ns = 200 * MS;
	o->line_max = 64u << 10;
}

static void
setup_common(struct fixture *f, int api)
{
	agent_logstream_opts o;
	char err[256];

	memset(f, 0, sizeof(*f));
	assert_int_equal(civis_loop_new(&f->loop), CIVIS_OK);
	assert_int_equal(pipe2(f->in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(f->tee, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(fcntl(f->in[0], F_SETFL, O_NONBLOCK), 0);
	opts_default(&o);
	if (api) {
		civis_client_config cfg = {
			.endpoint = (char *)"http://127.0.0.1:1/", .api_key = (char *)"unit-test-key-123",
			.job_id = 1, .run_id = 2,
		};

		assert_int_equal(civis_http_new(&f->http, f->loop), CIVIS_OK);
		civis_run_opts ro = { .flush_ns = 200 * MS, .batch_lines = 10000,
		                      .batch_bytes = 1u << 20, .mem_max = 4u << 20,
		                      .spool_max = 64u << 20 };

		assert_int_equal(civis_client_new(&f->client, f->loop, f->http, &cfg), CIVIS_OK);
		assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &ro, err, sizeof(err)),
		                 CIVIS_OK);
		assert_int_equal(civis_redact_new(&f->redact), CIVIS_OK);
		assert_int_equal(civis_redact_add(f->redact, "unit-test-key-123", 17), CIVIS_OK);
		o.run = f->run;
		o.redact = f->redact;
	}
	assert_int_equal(agent_logstream_new(&f->ls, f->loop, &o, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(agent_logstream_add_pipe(f->ls, AGENT_STDOUT, f->in[0], f->tee[1]), CIVIS_OK);
}

static int
setup_tee(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	setup_common(f, 0);
	*state = f;
	return 0;
}

static int
setup_api(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	setup_common(f, 1);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	agent_logstream_free(f->ls);   /* closes in[0] */
	civis_run_free(f->run);
	civis_client_free(f->client);
	civis_http_free(f->http);
	civis_loop_free(f->loop);
	civis_redact_free(f->redact);
	if (f->in[1] >= 0)
		close(f->in[1]);
	close(f->tee[0]);
	close(f->tee[1]);
	free(f);
	return 0;
}

static void
spin(struct fixture *f, uint64_t ns)
{
	uint64_t end = civis_now_ns() + ns;

	while (civis_now_ns() < end)
		(void)civis_loop_run_once(f->loop, 10 * MS);
}

static size_t
drain(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap && (n = read(fd, buf + got, cap - got)) > 0)
		got += (size_t)n;
	return got;
}

/* Bytes come out of the tee exactly as they went in: NULs, no newline. */
static void
test_tee_byte_exact(void **state)
{
	struct fixture *f = *state;
	char in[3000], out[4096];
	size_t got;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i * 7 + 3);
	in[10] = '\0';
	assert_int_equal(write(f->in[1], in, sizeof(in)), (ssize_t)sizeof(in));
	close(f->in[1]);
	f->in[1] = -1;
	for (int i = 0; i < 100 && !agent_logstream_eof(f->ls); i++)
		(void)civis_loop_run_once(f->loop, 10 * MS);
	assert_true(agent_logstream_eof(f->ls));
	got = drain(f->tee[0], out, sizeof(out));
	assert_int_equal(got, sizeof(in));
	assert_memory_equal(in, out, sizeof(in));
	assert_true(agent_logstream_idle(f->ls));   /* tee only: nothing to deliver */
}

/* Lines are counted and kept while the API is unreachable; a partial line
 * becomes a message once it has waited the flush interval. */
static void
test_lines_partial_and_undelivered(void **state)
{
	struct fixture *f = *state;
	agent_logstream_stats st;

	assert_int_equal(write(f->in[1], "one\ntwo\r\nthr", 13), 13);
	spin(f, 50 * MS);
	agent_logstream_stats_get(f->ls, &st);
	assert_int_equal((int)st.lines, 2);
	spin(f, 400 * MS);      /* > flush interval: "thr" goes out as a piece */
	agent_logstream_stats_get(f->ls, &st);
	assert_int_equal((int)st.lines, 3);
	assert_int_equal(write(f->in[1], "ee\n", 3), 3);
	close(f->in[1]);
	f->in[1] = -1;
	spin(f, 50 * MS);
	assert_true(agent_logstream_eof(f->ls));
	agent_logstream_finish(f->ls);
	agent_logstream_stats_get(f->ls, &st);
	assert_int_equal((int)st.lines, 4);       /* "ee" continues the flushed line */
	assert_int_equal((int)st.bytes, 16);
	assert_int_equal((int)st.delivered, 0);
	assert_int_equal((int)st.undelivered, 4);
	assert_false(agent_logstream_idle(f->ls));
}

/* The agent's own notes never carry a registered secret, on stderr either. */
static void
test_note_masks_secret(void **state)
{
	struct fixture *f = *state;
	int errpipe[2], saved;
	char buf[512];
	size_t got;
	agent_logstream_stats st;

	assert_int_equal(pipe2(errpipe, O_NONBLOCK), 0);
	saved = dup(2);
	dup2(errpipe[1], 2);
	agent_logstream_note(f->ls, "warn", "request to %s failed", "key=unit-test-key-123");
	dup2(saved, 2);
	close(saved);
	got = drain(errpipe[0], buf, sizeof(buf) - 1);
	buf[got] = '\0';
	close(errpipe[0]);
	close(errpipe[1]);
	assert_string_equal(buf, "civis-agent: request to key=[REDACTED] failed\n");
	agent_logstream_stats_get(f->ls, &st);
	assert_int_equal((int)st.undelivered, 1);   /* the note went to the run log too */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tee_byte_exact, setup_tee, teardown),
		cmocka_unit_test_setup_teardown(test_lines_partial_and_undelivered, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_note_masks_secret, setup_api, teardown),
	};
	return cmocka_run_group_tests_name("logstream", tests, NULL, NULL);
}
