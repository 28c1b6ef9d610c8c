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
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "../../agent/logstream.h"
#include "../../agent/logstream_int.h"   /* agent_tee__no_reopen */

#define MS 1000000ULL

struct fixture {
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_run *run;
	civis_redact *redact;
	agent_logstream *ls;
	int in[2];      /* the "command's" stdout */
	int err[2];     /* its stderr */
	int err_added;  /* err[0] belongs to the logstream */
	int tee[2];     /* where the copy goes */
};

/* What on_message saw, one "level|text" line each, while there is room;
 * the agent's own notes (civis-agent: ...) also in notes. */
static char seen[8192], notes[8192];
static size_t seen_len, notes_len;

static void
record(char *buf, size_t cap, size_t *used, const char *level, const char *msg, size_t len)
{
	int n = snprintf(buf + *used, cap - *used, "%s|%.*s\n", level, (int)len, msg);

	if (n > 0 && (size_t)n < cap - *used)
		*used += (size_t)n;
	else
		buf[*used] = '\0';
}

static void
on_message(void *ud, const char *level, const char *msg, size_t len)
{
	(void)ud;
	record(seen, sizeof(seen), &seen_len, level, msg, len);
	if (len >= 13 && memcmp(msg, "civis-agent: ", 13) == 0)
		record(notes, sizeof(notes), &notes_len, level, msg, len);
}

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

static uint64_t spool_max_override;
static int detect_override;

static void
setup_common(struct fixture *f, int api)
{
	agent_logstream_opts o;
	char err[256];

	memset(f, 0, sizeof(*f));
	assert_int_equal(civis_loop_new(&f->loop), CIVIS_OK);
	assert_int_equal(pipe2(f->in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(f->err, O_CLOEXEC), 0);
	assert_int_equal(fcntl(f->err[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(pipe2(f->tee, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(fcntl(f->in[0], F_SETFL, O_NONBLOCK), 0);
	opts_default(&o);
	if (spool_max_override)
		o.backlog_max = spool_max_override;
	o.detect_levels = detect_override;
	if (api) {
		civis_client_config cfg = {
			.endpoint = (char *)"http://127.0.0.1:1/", .api_key = (char *)"unit-test-key-123",
			.job_id = 1, .run_id = 2,
		};

		assert_int_equal(civis_http_new(&f->http, f->loop), CIVIS_OK);
		civis_run_opts ro = { .flush_ns = 200 * MS, .batch_lines = 10000,
		                      .batch_bytes = 1u << 20, .mem_max = 4u << 20,
		                      .spool_max = 64u << 20 };

		if (spool_max_override)   /* the run's spool gets the same cap, as --spool-max gives both */
			ro.spool_max = spool_max_override;

		assert_int_equal(civis_client_new(&f->client, f->loop, f->http, &cfg), CIVIS_OK);
		assert_int_equal(civis_run_new(&f->run, f->loop, f->client, &ro, err, sizeof(err)),
		                 CIVIS_OK);
		assert_int_equal(civis_redact_new(&f->redact), CIVIS_OK);
		assert_int_equal(civis_redact_add(f->redact, "unit-test-key-123", 17), CIVIS_OK);
		o.run = f->run;
		o.redact = f->redact;
		o.on_message = on_message;
	}
	seen_len = notes_len = 0;
	seen[0] = notes[0] = '\0';
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
	close(f->err[1]);
	if (!f->err_added)
		close(f->err[0]);
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

static void
put(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
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
	for (int i = 0; i < 300 && !agent_logstream_eof(f->ls); i++)   /* slack for valgrind */
		(void)civis_loop_run_once(f->loop, 10 * MS);
	assert_true(agent_logstream_eof(f->ls));
	agent_logstream_finish(f->ls);
	agent_logstream_stats_get(f->ls, &st);
	assert_int_equal((int)st.lines, 4);       /* "ee" continues the flushed line */
	assert_int_equal((int)st.bytes, 16);
	assert_int_equal((int)st.delivered, 0);
	assert_int_equal((int)st.undelivered, 4);
	assert_false(agent_logstream_idle(f->ls));
}

/* A reader that takes nothing does not stop the loop: the pipe is no
 * longer read (the command would block on it), and once the reader comes
 * back the copy is byte exact. */
static void
test_tee_stalled_reader(void **state)
{
	struct fixture *f = *state;
	static char in[120000], out[120000];
	size_t got = 0;
	uint64_t t0;
	int avail = 0;

	assert_true(fcntl(f->tee[1], F_SETPIPE_SZ, 4096) > 0);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i * 131 + i / 7);
	assert_int_equal(write(f->in[1], in, 60000), 60000);
	t0 = civis_now_ns();
	spin(f, 100 * MS);
	assert_int_equal(write(f->in[1], in + 60000, 60000), 60000);
	spin(f, 100 * MS);
	assert_true(civis_now_ns() - t0 < 1000 * MS);   /* the loop went on */
	assert_int_equal(ioctl(f->in[0], FIONREAD, &avail), 0);
	assert_int_equal(avail, 60000);                   /* not read while stalled */
	assert_false(agent_logstream_idle(f->ls));       /* the copy is still owed */
	close(f->in[1]);
	f->in[1] = -1;
	for (int i = 0; i < 2000 && got < sizeof(out); i++) {
		ssize_t n;

		(void)civis_loop_run_once(f->loop, 5 * MS);
		while (got < sizeof(out) && (n = read(f->tee[0], out + got, sizeof(out) - got)) > 0)
			got += (size_t)n;
	}
	assert_int_equal(got, sizeof(in));
	assert_memory_equal(in, out, sizeof(in));
	spin(f, 20 * MS);
	assert_true(agent_logstream_eof(f->ls));
	assert_true(agent_logstream_idle(f->ls));
}

static int
setup_small_cap(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	spool_max_override = 200u << 10;
	setup_common(f, 1);
	spool_max_override = 0;
	*state = f;
	return 0;
}

/* A flood faster than line making fills the backlog to its cap: then the
 * pipe is not read (the writer waits) until it is down to half, the raw
 * bytes on disk stay near the cap, and every line still arrives. */
static void
test_backlog_cap_pauses_and_drops_nothing(void **state)
{
	struct fixture *f = *state;
	static char chunk[32768], sink[65536];
	agent_logstream_stats st;
	uint64_t lines = 0, end;
	int paused_seen = 0;

	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
	assert_int_equal(fcntl(f->in[1], F_SETFL, O_NONBLOCK), 0);
	end = civis_now_ns() + 1500 * MS;
	while (civis_now_ns() < end) {
		ssize_t n = write(f->in[1], chunk, sizeof(chunk));

		if (n > 0) {
			assert_int_equal(n % 64, 0);
			lines += (uint64_t)n / 64;
		} else {
			paused_seen = 1;     /* the pipe is full: nobody reads it */
		}
		(void)civis_loop_run_once(f->loop, 0);
		/* drain the tee so that only the cap can pause the pipe */
		while (read(f->tee[0], sink, sizeof(sink)) > 0)
			;
	}
	close(f->in[1]);
	f->in[1] = -1;
	for (int i = 0; i < 500 && !agent_logstream_eof(f->ls); i++) {
		(void)civis_loop_run_once(f->loop, 2 * MS);
		while (read(f->tee[0], sink, sizeof(sink)) > 0)
			;
	}
	agent_logstream_close_pipes(f->ls);
	agent_logstream_finish(f->ls);
	agent_logstream_stats_get(f->ls, &st);
	assert_true(paused_seen);
	assert_true(st.backlog_pauses >= 1);
	assert_int_equal(st.backlog_cap, 200u << 10);
	/* at most one readiness' reads over the cap */
	assert_true(st.backlog_peak <= (200u << 10) + 4 * ((64u << 10) + 16));
	assert_int_equal(st.lines, lines);
	assert_non_null(strstr(notes, "warn|civis-agent: the log backlog reached its cap of 204800 bytes"));
	assert_non_null(strstr(notes, "no output was dropped"));
}

static int
setup_detect(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	detect_override = 1;
	setup_common(f, 1);
	detect_override = 0;
	assert_int_equal(agent_logstream_add_pipe(f->ls, AGENT_STDERR, f->err[0], -1), CIVIS_OK);
	f->err_added = 1;
	*state = f;
	return 0;
}

/* With detect_levels, a line's own level word wins over its stream's; a
 * line cut into pieces by a flush keeps its first piece's level; notes keep
 * theirs. */
static void
test_detect_levels(void **state)
{
	struct fixture *f = *state;

	put(f->in[1], "ERROR - e\n{\"level\":\"debug\"}\n");
	spin(f, 20 * MS);
	put(f->err[1], "INFO:root:hello\nplain\n[WARNING] w\n");
	spin(f, 20 * MS);
	put(f->in[1], "DEBUG: ");
	spin(f, 400 * MS);       /* past the flush interval: "DEBUG: " goes alone */
	put(f->in[1], "rest\nINFORMATION\n");
	spin(f, 50 * MS);
	assert_string_equal(seen, "error|ERROR - e\n"
	                          "debug|{\"level\":\"debug\"}\n"
	                          "info|INFO:root:hello\n"
	                          "error|plain\n"
	                          "warn|[WARNING] w\n"
	                          "debug|DEBUG: \n"
	                          "debug|rest\n"
	                          "info|INFORMATION\n");
}

/* While stderr's copy is stalled, an agent note waits behind the command's
 * bytes instead of blocking the agent or jumping ahead of them. */
static void
test_note_queued_behind_stalled_stderr(void **state)
{
	struct fixture *f = *state;
	static char in[20000], out[40000];
	int tee2[2];
	size_t got = 0;
	uint64_t t0;

	assert_int_equal(pipe2(tee2, O_CLOEXEC | O_NONBLOCK), 0);
	assert_true(fcntl(tee2[1], F_SETPIPE_SZ, 4096) > 0);
	assert_int_equal(agent_logstream_add_pipe(f->ls, AGENT_STDERR, f->err[0], tee2[1]), CIVIS_OK);
	f->err_added = 1;
	memset(in, 'e', sizeof(in));
	in[sizeof(in) - 1] = '\n';
	assert_int_equal(write(f->err[1], in, sizeof(in)), (ssize_t)sizeof(in));
	spin(f, 50 * MS);
	t0 = civis_now_ns();
	agent_logstream_note(f->ls, "warn", "after the command's bytes");
	assert_true(civis_now_ns() - t0 < 100 * MS);      /* did not wait for the reader */
	for (int i = 0; i < 1000 && got < sizeof(in) + 39; i++) {
		ssize_t n;

		(void)civis_loop_run_once(f->loop, 2 * MS);
		while ((n = read(tee2[0], out + got, sizeof(out) - got)) > 0)
			got += (size_t)n;
	}
	assert_int_equal(got, sizeof(in) + 39);
	assert_memory_equal(out, in, sizeof(in));
	assert_memory_equal(out + sizeof(in), "civis-agent: after the command's bytes\n", 39);
	agent_logstream_free(f->ls);    /* before tee2 goes */
	f->ls = NULL;
	close(tee2[0]);
	close(tee2[1]);
}

/* The copy's pipe is shared with others: the agent's own reopened file
 * description is the non-blocking one, the shared one keeps its flags;
 * without /proc, O_NONBLOCK is set on the shared one and restored at the
 * end. */
static void
test_tee_nonblocking_private_or_restored(void **state)
{
	struct fixture *f = *state;
	agent_logstream_opts o;
	agent_logstream *ls;
	char err[256];
	int out[2], in2[2];

	assert_int_equal(pipe2(out, O_CLOEXEC), 0);          /* blocking, like a shell's */
	for (int fallback = 0; fallback < 2; fallback++) {
		assert_int_equal(pipe2(in2, O_CLOEXEC | O_NONBLOCK), 0);
		opts_default(&o);
		agent_tee__no_reopen(fallback);
		assert_int_equal(agent_logstream_new(&ls, f->loop, &o, err, sizeof(err)), CIVIS_OK);
		assert_int_equal(agent_logstream_add_pipe(ls, AGENT_STDOUT, in2[0], out[1]), CIVIS_OK);
		agent_tee__no_reopen(0);
		assert_int_equal(fcntl(out[1], F_GETFL) & O_NONBLOCK, fallback ? O_NONBLOCK : 0);
		put(in2[1], "x\n");
		spin(f, 20 * MS);
		agent_logstream_free(ls);                        /* closes in2[0] */
		close(in2[1]);
		assert_int_equal(fcntl(out[1], F_GETFL) & O_NONBLOCK, 0);
		assert_int_equal(read(out[0], err, sizeof(err)), 2);
	}
	close(out[0]);
	close(out[1]);
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

/* A partial line is flushed only when its stream was idle: bytes that
 * wait unread in the pipe have arrived, however late the agent comes to
 * read them (a loaded machine), so the line stays whole. */
static void
test_no_flush_while_pipe_holds_bytes(void **state)
{
	struct fixture *f = *state;
	struct timespec late = { 0, 400 * MS };

	assert_int_equal(write(f->in[1], "hal", 3), 3);
	spin(f, 50 * MS);
	assert_string_equal(seen, "");
	assert_int_equal(write(f->in[1], "f done\n", 7), 7);
	(void)nanosleep(&late, NULL);   /* > the 200 ms flush interval, the loop not run */
	spin(f, 50 * MS);
	assert_string_equal(seen, "info|half done\n");
}

/* M4: every message for the run log is told to on_message, masked, the
 * agent's notes included, and a partial line only once it is flushed. */
static void
test_on_message_masked(void **state)
{
	struct fixture *f = *state;
	int errpipe[2], saved;

	assert_int_equal(write(f->in[1], "a unit-test-key-123 b\nhalf", 27), 27);
	spin(f, 50 * MS);
	assert_string_equal(seen, "info|a [REDACTED] b\n");
	assert_int_equal(pipe2(errpipe, O_NONBLOCK), 0);
	saved = dup(2);
	dup2(errpipe[1], 2);
	agent_logstream_note(f->ls, "warn", "key %s", "unit-test-key-123");
	dup2(saved, 2);
	close(saved);
	close(errpipe[0]);
	close(errpipe[1]);
	close(f->in[1]);
	f->in[1] = -1;
	spin(f, 50 * MS);
	agent_logstream_finish(f->ls);
	assert_string_equal(seen, "info|a [REDACTED] b\n"
	                          "warn|civis-agent: key [REDACTED]\n"
	                          "info|half\n");
}

/* A note longer than its cut, with the key right at the cut: the whole
 * text is masked before it is cut, so not even the key's first bytes show,
 * on stderr or in the run log; the cut never splits a token or a UTF-8
 * character. */
static void
test_note_masked_before_cut(void **state)
{
	struct fixture *f = *state;
	static char pad[4000], buf[8192];
	int errpipe[2], saved;
	size_t got;

	assert_int_equal(pipe2(errpipe, O_NONBLOCK), 0);
	for (size_t cut = 2025; cut < 2040; cut++) {
		memset(pad, 'a', cut);
		pad[cut] = '\0';
		seen_len = 0;
		seen[0] = '\0';
		saved = dup(2);
		dup2(errpipe[1], 2);
		agent_logstream_note(f->ls, "warn", "%s%s tail", pad, "unit-test-key-123");
		agent_logstream_note_log_onlyf(f->ls, "info", "%s\xc3\xa9%s", pad, "unit-test-key-123");
		dup2(saved, 2);
		close(saved);
		got = drain(errpipe[0], buf, sizeof(buf) - 1);
		buf[got] = '\0';
		assert_null(strstr(buf, "unit"));
		assert_null(strstr(seen, "unit"));
		assert_true(got <= 2048);
		assert_memory_equal(buf, "civis-agent: aaa", 16);
		/* cut before the token, or the token whole */
		assert_true(strstr(buf, "[REDACTED] tail\n") != NULL || strchr(buf, '[') == NULL);
		assert_true(strstr(seen, "\xc3\xa9[REDACTED]") != NULL ||
		            strstr(seen, "\xc3\xa9\n") != NULL || strstr(seen, "a\n") != NULL);
		assert_null(strstr(seen, "a\xc3\n"));
	}
	/* short notes are whole */
	saved = dup(2);
	dup2(errpipe[1], 2);
	agent_logstream_note(f->ls, "warn", "x=%s y=%d", "unit-test-key-123", 7);
	dup2(saved, 2);
	close(saved);
	got = drain(errpipe[0], buf, sizeof(buf) - 1);
	buf[got] = '\0';
	assert_string_equal(buf, "civis-agent: x=[REDACTED] y=7\n");
	close(errpipe[0]);
	close(errpipe[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tee_byte_exact, setup_tee, teardown),
		cmocka_unit_test_setup_teardown(test_tee_stalled_reader, setup_tee, teardown),
		cmocka_unit_test_setup_teardown(test_tee_nonblocking_private_or_restored, setup_tee,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_lines_partial_and_undelivered, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_no_flush_while_pipe_holds_bytes, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_note_masks_secret, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_on_message_masked, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_note_masked_before_cut, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_note_queued_behind_stalled_stderr, setup_api, teardown),
		cmocka_unit_test_setup_teardown(test_detect_levels, setup_detect, teardown),
		cmocka_unit_test_setup_teardown(test_backlog_cap_pauses_and_drops_nothing,
		                                setup_small_cap, teardown),
	};
	return cmocka_run_group_tests_name("logstream", tests, NULL, NULL);
}
