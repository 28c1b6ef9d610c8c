/* test_jobapi.c: the job API's wire format, and the socket server against
 * real clients: replies, caps, garbage, stalls, a full house, pipelining,
 * other users, the abstract-namespace fallback, and the blocking client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "../../agent/jobapi.h"
#include "../../agent/jobapi_proto.h"
#include "../../agent/jobclient.h"

#define MS 1000000ULL

/* ------------------------------------------------------------ protocol */

static void
test_parse_ops(void **state)
{
	agent_jobapi_req r;
	char err[256];
	const char *l;

	(void)state;
	l = "{\"op\":\"mask\",\"value\":\"s3cretvalue\"}";
	assert_int_equal(agent_jobapi_parse_request(l, strlen(l), &r, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(r.op, AGENT_JOBAPI_MASK);
	assert_string_equal(r.value, "s3cretvalue");
	assert_int_equal(r.value_len, 11);
	agent_jobapi_req_dispose(&r);

	l = "{\"op\":\"upload\",\"path\":\"/tmp/a b.csv\",\"name\":\"x.csv\",\"gzip\":true}";
	assert_int_equal(agent_jobapi_parse_request(l, strlen(l), &r, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(r.op, AGENT_JOBAPI_UPLOAD);
	assert_string_equal(r.path, "/tmp/a b.csv");
	assert_string_equal(r.name, "x.csv");
	assert_int_equal(r.gzip, 1);
	agent_jobapi_req_dispose(&r);

	l = "{\"op\":\"output\",\"type\":\"table\",\"id\":42}";
	assert_int_equal(agent_jobapi_parse_request(l, strlen(l), &r, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(r.type, "Table");
	assert_int_equal(r.id, 42);
	agent_jobapi_req_dispose(&r);

	l = "{\"op\":\"json\",\"name\":\"m\",\"value\":{\"rows\": [1, 2]}}";
	assert_int_equal(agent_jobapi_parse_request(l, strlen(l), &r, err, sizeof(err)), CIVIS_OK);
	assert_string_equal(r.name, "m");
	assert_string_equal(r.value, "{\"rows\":[1,2]}");
	agent_jobapi_req_dispose(&r);
}

static void
expect_bad(const char *line, int status, const char *msg)
{
	agent_jobapi_req r;
	char err[256];

	assert_int_equal(agent_jobapi_parse_request(line, strlen(line), &r, err, sizeof(err)), status);
	assert_string_equal(err, msg);
	assert_null(r.value);
	assert_null(r.path);
	assert_null(r.name);
}

static void
test_parse_errors(void **state)
{
	(void)state;
	expect_bad("", CIVIS_EINVAL, "request is not a JSON object");
	expect_bad("[1]", CIVIS_EINVAL, "request is not a JSON object");
	expect_bad("{\"op\":1}", CIVIS_EINVAL, "request has no \"op\"");
	expect_bad("{\"op\":\"rm\"}", CIVIS_EINVAL, "unknown \"op\" (mask, upload, output, json)");
	expect_bad("{\"op\":\"mask\"}", CIVIS_EINVAL, "request has no \"value\"");
	expect_bad("{\"op\":\"mask\",\"value\":\"\"}", CIVIS_EINVAL, "\"value\" is empty");
	expect_bad("{\"op\":\"mask\",\"value\":7}", CIVIS_EINVAL, "\"value\" must be a string");
	expect_bad("{\"op\":\"upload\",\"path\":\"rel/x\"}", CIVIS_EINVAL, "\"path\" must be absolute");
	expect_bad("{\"op\":\"upload\",\"path\":\"/x\",\"gzip\":\"yes\"}", CIVIS_EINVAL,
	           "\"gzip\" must be true or false");
	expect_bad("{\"op\":\"output\",\"type\":\"Car\",\"id\":1}", CIVIS_EINVAL,
	           "\"type\" must be one of File, Table, Report, Project, Credential, JSONValue");
	expect_bad("{\"op\":\"output\",\"type\":\"File\",\"id\":-1}", CIVIS_EINVAL,
	           "\"id\" must be a positive integer");
	expect_bad("{\"op\":\"output\",\"type\":\"File\",\"id\":1.5}", CIVIS_EINVAL,
	           "\"id\" must be a positive integer");
	expect_bad("{\"op\":\"json\",\"name\":\"n\"}", CIVIS_EINVAL, "request has no \"value\"");
}

static void
test_parse_caps(void **state)
{
	size_t n = AGENT_JOBAPI_MAX_JSON + 64;
	char *big = malloc(n), err[256];
	agent_jobapi_req r;
	int k;

	(void)state;
	assert_non_null(big);
	k = snprintf(big, n, "{\"op\":\"json\",\"name\":\"n\",\"value\":\"");
	memset(big + k, 'a', AGENT_JOBAPI_MAX_JSON);
	memcpy(big + k + AGENT_JOBAPI_MAX_JSON, "\"}", 3);
	assert_int_equal(agent_jobapi_parse_request(big, strlen(big), &r, err, sizeof(err)),
	                 CIVIS_ETOOBIG);
	assert_string_equal(err, "the JSON value is 1000002 bytes; the API takes at most 1000000");
	free(big);
	assert_int_equal(agent_jobapi_parse_request("{}", AGENT_JOBAPI_MAX_REQUEST + 1, &r, err,
	                                            sizeof(err)), CIVIS_ETOOBIG);
}

static void
test_reply_roundtrip(void **state)
{
	char buf[AGENT_JOBAPI_MAX_REPLY], text[256];
	int64_t id;
	int st;
	size_t n;

	(void)state;
	n = agent_jobapi_format_reply(buf, sizeof(buf), CIVIS_OK, 77, "uploaded \"a\"\n");
	assert_string_equal(buf, "{\"ok\":true,\"id\":77,\"text\":\"uploaded \\\"a\\\"\\u000a\"}\n");
	assert_int_equal(agent_jobapi_parse_reply(buf, n - 1, &st, &id, text, sizeof(text)), CIVIS_OK);
	assert_int_equal(st, CIVIS_OK);
	assert_int_equal(id, 77);
	assert_string_equal(text, "uploaded \"a\"\n");
	n = agent_jobapi_format_reply(buf, sizeof(buf), CIVIS_ENOTFOUND, 0, "no such file");
	assert_int_equal(agent_jobapi_parse_reply(buf, n - 1, &st, &id, text, sizeof(text)), CIVIS_OK);
	assert_int_equal(st, CIVIS_ENOTFOUND);
	assert_string_equal(text, "no such file");
	assert_int_equal(agent_jobapi_parse_reply("nope", 4, &st, &id, text, sizeof(text)),
	                 CIVIS_EPROTO);
}

/* -------------------------------------------------------------- server */

struct srv {
	civis_loop *loop;
	agent_jobapi *j;
	char dir[64];
	int calls;
	char last_value[256];
	int async;                  /* answer output calls from a timer */
	uint64_t held[8];
	int nheld;
};

static void
handler(void *ud, uint64_t call_id, const agent_jobapi_req *req)
{
	struct srv *s = ud;

	s->calls++;
	if (req->value)
		snprintf(s->last_value, sizeof(s->last_value), "%s", req->value);
	if (req->op == AGENT_JOBAPI_OUTPUT && s->async && s->nheld < 8) {
		s->held[s->nheld++] = call_id;
		return;
	}
	agent_jobapi_answer(s->j, call_id, CIVIS_OK, req->op == AGENT_JOBAPI_OUTPUT ? req->id : 0,
	                    req->op == AGENT_JOBAPI_MASK ? "masked" : NULL);
}

static int
srv_setup(void **state)
{
	struct srv *s = calloc(1, sizeof(*s));
	char err[256];

	assert_non_null(s);
	snprintf(s->dir, sizeof(s->dir), "/tmp/test_jobapi.XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	assert_int_equal(civis_loop_new(&s->loop), CIVIS_OK);
	assert_int_equal(agent_jobapi_new(&s->j, s->dir, handler, s, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(agent_jobapi_attach(s->j, s->loop), CIVIS_OK);
	*state = s;
	return 0;
}

static int
srv_teardown(void **state)
{
	struct srv *s = *state;

	agent_jobapi_free(s->j);
	civis_loop_free(s->loop);
	rmdir(s->dir);
	free(s);
	return 0;
}

static void
spin(struct srv *s, uint64_t ms)
{
	uint64_t end = civis_now_ns() + ms * MS;

	while (civis_now_ns() < end)
		civis_loop_run_once(s->loop, 5 * MS);
}

static int
raw_connect(const char *addr)
{
	struct sockaddr_un sa;
	size_t n = strlen(addr);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, addr, n);
	if (addr[0] == '@')
		sa.sun_path[0] = '\0';
	assert_int_equal(connect(fd, (struct sockaddr *)&sa,
	                         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	                                     (addr[0] != '@'))), 0);
	return fd;
}

static void
send_all(struct srv *s, int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EAGAIN) {
			civis_loop_run_once(s->loop, 5 * MS);
			continue;
		}
		assert_true(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

/* Read one reply line, running the loop meanwhile. "" on EOF. */
static void
recv_line(struct srv *s, int fd, char *buf, size_t len, uint64_t ms)
{
	uint64_t end = civis_now_ns() + ms * MS;
	size_t got = 0;

	buf[0] = '\0';
	while (civis_now_ns() < end && got + 1 < len) {
		ssize_t n = recv(fd, buf + got, 1, 0);

		if (n == 1) {
			if (buf[got] == '\n') {
				buf[got] = '\0';
				return;
			}
			got++;
			continue;
		}
		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
		civis_loop_run_once(s->loop, 5 * MS);
	}
	buf[got] = '\0';
}

static int
at_eof(struct srv *s, int fd, uint64_t ms)
{
	uint64_t end = civis_now_ns() + ms * MS;
	char c;

	while (civis_now_ns() < end) {
		ssize_t n = recv(fd, &c, 1, 0);

		if (n == 0 || (n < 0 && errno != EAGAIN))
			return 1;
		civis_loop_run_once(s->loop, 5 * MS);
	}
	return 0;
}

static void
test_socket_place_and_modes(void **state)
{
	struct srv *s = *state;
	const char *p = agent_jobapi_path(s->j);
	struct stat st, dst;
	char dir[256];

	assert_int_equal(strncmp(p, s->dir, strlen(s->dir)), 0);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(dir, sizeof(dir), "%s", p);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(stat(dir, &dst), 0);
	assert_int_equal(dst.st_mode & 0777, 0700);
	agent_jobapi_stop_listening(s->j);
	assert_int_equal(lstat(p, &st), -1);
	assert_int_equal(stat(dir, &dst), -1);
}

static void
test_mask_and_garbage_on_one_connection(void **state)
{
	struct srv *s = *state;
	int fd = raw_connect(agent_jobapi_path(s->j));
	char line[512];
	static const char req[] = "{\"op\":\"mask\",\"value\":\"hunter2hunter2\"}\n";

	send_all(s, fd, req, sizeof(req) - 1);
	recv_line(s, fd, line, sizeof(line), 2000);
	assert_string_equal(line, "{\"ok\":true,\"text\":\"masked\"}");
	assert_string_equal(s->last_value, "hunter2hunter2");
	send_all(s, fd, "\x01\xff garbage\n", 11);
	recv_line(s, fd, line, sizeof(line), 2000);
	assert_string_equal(line,
	    "{\"ok\":false,\"status\":-2,\"error\":\"request is not a JSON object\"}");
	/* The connection still serves. */
	send_all(s, fd, "{\"op\":\"output\",\"type\":\"Report\",\"id\":9}\r\n", 41);
	recv_line(s, fd, line, sizeof(line), 2000);
	assert_string_equal(line, "{\"ok\":true,\"id\":9}");
	close(fd);
	assert_int_equal(s->calls, 2);
}

static void
test_oversized_request_is_refused_and_closed(void **state)
{
	struct srv *s = *state;
	int fd = raw_connect(agent_jobapi_path(s->j));
	size_t n = AGENT_JOBAPI_MAX_REQUEST + 4096;
	char *big = malloc(n), line[512];
	agent_jobapi_stats st;

	assert_non_null(big);
	memset(big, 'x', n);
	send_all(s, fd, big, n);
	recv_line(s, fd, line, sizeof(line), 5000);
	assert_string_equal(line,
	    "{\"ok\":false,\"status\":-9,\"error\":\"request over 2097152 bytes\"}");
	assert_true(at_eof(s, fd, 2000));
	agent_jobapi_stats_get(s->j, &st);
	assert_int_equal(st.bad, 1);
	assert_int_equal(s->calls, 0);
	free(big);
	close(fd);
}

static void
test_stalled_clients_are_dropped_and_others_served(void **state)
{
	struct srv *s = *state;
	int stalled[AGENT_JOBAPI_MAX_CLIENTS], fd;
	char line[512];
	agent_jobapi_stats st;

	agent__jobapi_set_idle_ns(s->j, 300 * MS);
	/* Fill every slot with clients that say nothing, one mid-request. */
	for (int i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++)
		stalled[i] = raw_connect(agent_jobapi_path(s->j));
	send_all(s, stalled[0], "{\"op\":\"ma", 9);
	spin(s, 50);
	/* A fifth waits in the backlog... */
	fd = raw_connect(agent_jobapi_path(s->j));
	send_all(s, fd, "{\"op\":\"output\",\"type\":\"File\",\"id\":5}\n", 38);
	spin(s, 100);
	assert_int_equal(s->calls, 0);
	/* ...and is served once the idle ones are swept out. */
	recv_line(s, fd, line, sizeof(line), 3000);
	assert_string_equal(line, "{\"ok\":true,\"id\":5}");
	for (int i = 0; i < AGENT_JOBAPI_MAX_CLIENTS; i++) {
		assert_true(at_eof(s, stalled[i], 2000));
		close(stalled[i]);
	}
	agent_jobapi_stats_get(s->j, &st);
	assert_int_equal(st.dropped, AGENT_JOBAPI_MAX_CLIENTS);
	close(fd);
}

static void
test_async_answer_and_client_gone(void **state)
{
	struct srv *s = *state;
	int a = raw_connect(agent_jobapi_path(s->j));
	int b = raw_connect(agent_jobapi_path(s->j));
	char line[512];

	s->async = 1;
	send_all(s, a, "{\"op\":\"output\",\"type\":\"Table\",\"id\":1}\n", 39);
	send_all(s, b, "{\"op\":\"output\",\"type\":\"Table\",\"id\":2}\n", 39);
	spin(s, 100);
	assert_int_equal(s->nheld, 2);
	assert_int_equal(agent_jobapi_pending(s->j), 2);
	close(a);                       /* leaves before its answer */
	spin(s, 50);
	agent_jobapi_answer(s->j, s->held[0], CIVIS_OK, 1, NULL);
	agent_jobapi_answer(s->j, s->held[1], CIVIS_EHTTP, 0, "the API answered 404");
	agent_jobapi_answer(s->j, s->held[1], CIVIS_OK, 0, NULL);   /* twice: ignored */
	recv_line(s, b, line, sizeof(line), 2000);
	assert_string_equal(line, "{\"ok\":false,\"status\":-6,\"error\":\"the API answered 404\"}");
	assert_int_equal(agent_jobapi_pending(s->j), 0);
	close(b);
}

static void
test_pipelined_requests_in_order(void **state)
{
	struct srv *s = *state;
	enum { N = 2000 };
	int fd = raw_connect(agent_jobapi_path(s->j));
	char *all = malloc(N * 64), line[512], want[64];
	size_t len = 0;

	assert_non_null(all);
	for (int i = 1; i <= N; i++)
		len += (size_t)sprintf(all + len, "{\"op\":\"output\",\"type\":\"File\",\"id\":%d}\n", i);
	send_all(s, fd, all, len);
	for (int i = 1; i <= N; i++) {
		recv_line(s, fd, line, sizeof(line), 5000);
		snprintf(want, sizeof(want), "{\"ok\":true,\"id\":%d}", i);
		assert_string_equal(line, want);
	}
	assert_int_equal(s->calls, N);
	free(all);
	close(fd);
}

static void
test_last_request_without_newline(void **state)
{
	struct srv *s = *state;
	int fd = raw_connect(agent_jobapi_path(s->j));
	char line[512];

	send_all(s, fd, "{\"op\":\"mask\",\"value\":\"abcdefgh\"}", 33);
	shutdown(fd, SHUT_WR);
	recv_line(s, fd, line, sizeof(line), 2000);
	assert_string_equal(line, "{\"ok\":true,\"text\":\"masked\"}");
	assert_true(at_eof(s, fd, 2000));
	close(fd);
}

static void
test_other_user_refused(void **state)
{
	struct srv *s = *state;
	pid_t pid;
	int st;

	if (geteuid() != 0) {
		print_message("skipped: needs root to connect as another uid\n");
		skip();
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		agent_jobapi_req r = { .op = AGENT_JOBAPI_MASK, .value = (char *)"abcdefgh" };
		char text[256];
		int64_t id;
		int rc;

		/* The socket is 0600 in a 0700 directory. */
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		rc = agent_jobclient_call(agent_jobapi_path(s->j), &r, 2000, &id, text, sizeof(text));
		_exit(rc == CIVIS_ESYS && strstr(text, "Permission denied") ? 0 : 11);
	}
	while (waitpid(pid, &st, WNOHANG) == 0)
		civis_loop_run_once(s->loop, 5 * MS);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(s->calls, 0);
}

/* The abstract namespace has no file permissions: SO_PEERCRED alone keeps
 * another user out, with a reply that says so. */
static void
test_other_user_refused_by_peer_credentials(void **state)
{
	civis_loop *loop;
	agent_jobapi *j;
	agent_jobapi_stats st;
	struct srv s2;
	char err[256];
	pid_t pid;
	int ws;

	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: needs root to connect as another uid\n");
		skip();
	}
	memset(&s2, 0, sizeof(s2));
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(agent_jobapi_new(&j, "/proc", handler, &s2, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(agent_jobapi_attach(j, loop), CIVIS_OK);
	s2.j = j;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		agent_jobapi_req r = { .op = AGENT_JOBAPI_MASK, .value = (char *)"abcdefgh" };
		char text[256];
		int64_t id;
		int rc;

		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		rc = agent_jobclient_call(agent_jobapi_path(j), &r, 5000, &id, text, sizeof(text));
		_exit(rc == CIVIS_EUNSAFE && strcmp(text, "refused: not the agent's user") == 0 ? 0 : 11);
	}
	while (waitpid(pid, &ws, WNOHANG) == 0)
		civis_loop_run_once(loop, 5 * MS);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	assert_int_equal(s2.calls, 0);
	agent_jobapi_stats_get(j, &st);
	assert_int_equal(st.refused, 1);
	agent_jobapi_free(j);
	civis_loop_free(loop);
}

static void
test_abstract_fallback_and_blocking_client(void **state)
{
	civis_loop *loop;
	agent_jobapi *j;
	struct srv s2;
	char err[256];
	pid_t pid;
	int st;

	(void)state;
	memset(&s2, 0, sizeof(s2));
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	/* /proc is not writable: no directory can be made, so the abstract
	 * namespace is used. */
	assert_int_equal(agent_jobapi_new(&j, "/proc", handler, &s2, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(agent_jobapi_attach(j, loop), CIVIS_OK);
	s2.j = j;
	s2.loop = loop;
	assert_int_equal(agent_jobapi_path(j)[0], '@');
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		agent_jobapi_req r = { .op = AGENT_JOBAPI_OUTPUT, .id = 31337 };
		char text[256];
		int64_t id = 0;
		int rc;

		snprintf(r.type, sizeof(r.type), "Project");
		rc = agent_jobclient_call(agent_jobapi_path(j), &r, 5000, &id, text, sizeof(text));
		_exit(rc == CIVIS_OK && id == 31337 ? 0 : 12);
	}
	while (waitpid(pid, &st, WNOHANG) == 0)
		civis_loop_run_once(loop, 5 * MS);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(s2.calls, 1);
	agent_jobapi_free(j);
	civis_loop_free(loop);
}

static void
test_client_errors(void **state)
{
	agent_jobapi_req r = { .op = AGENT_JOBAPI_MASK, .value = (char *)"abcdefgh" };
	char text[256];
	int64_t id;

	(void)state;
	assert_int_equal(agent_jobclient_call("/nonexistent/sock", &r, 1000, &id, text, sizeof(text)),
	                 CIVIS_ESYS);
	assert_string_equal(text, "cannot reach the agent at /nonexistent/sock: No such file or "
	                    "directory (is CIVIS_AGENT_SOCKET from another run?)");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ops),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_caps),
		cmocka_unit_test(test_reply_roundtrip),
		cmocka_unit_test(test_client_errors),
		cmocka_unit_test(test_abstract_fallback_and_blocking_client),
		cmocka_unit_test(test_other_user_refused_by_peer_credentials),
		cmocka_unit_test_setup_teardown(test_socket_place_and_modes, srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(test_mask_and_garbage_on_one_connection, srv_setup,
		                                srv_teardown),
		cmocka_unit_test_setup_teardown(test_oversized_request_is_refused_and_closed, srv_setup,
		                                srv_teardown),
		cmocka_unit_test_setup_teardown(test_stalled_clients_are_dropped_and_others_served,
		                                srv_setup, srv_teardown),
		cmocka_unit_test_setup_teardown(test_async_answer_and_client_gone, srv_setup,
		                                srv_teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_requests_in_order, srv_setup,
		                                srv_teardown),
		cmocka_unit_test_setup_teardown(test_last_request_without_newline, srv_setup,
		                                srv_teardown),
		cmocka_unit_test_setup_teardown(test_other_user_refused, srv_setup, srv_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
