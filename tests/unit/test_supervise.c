/* test_supervise.c: exit status mapping, exec failure texts and codes,
 * spawning with pipes, signal forwarding, reaping, group kill, the kill of
 * every descendant (setsid too) and SIGCONT for a stopped command. The
 * scenario suite with the agent as PID 1 is tests/pid1/run.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "../../agent/supervise.h"

#define CAP 65536

static sigset_t test_mask;   /* the test program's own mask, at start */

/* agent_sup_free() leaves every signal blocked (the agent exits next);
 * the tests go on, so they restore their mask. */
static void
sup_free(agent_sup *sup)
{
	struct timespec zero = { 0, 0 };
	sigset_t all;

	agent_sup_free(sup);
	/* Drop what is still pending (SIGCHLD, our own SIGPIPE) first. */
	sigfillset(&all);
	while (sigtimedwait(&all, NULL, &zero) > 0)
		;
	assert_int_equal(sigprocmask(SIG_SETMASK, &test_mask, NULL), 0);
}

struct run {
	char out[CAP];
	size_t nout;
	char err[CAP];
	size_t nerr;
	unsigned events;
	int code;
};

static uint64_t
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
drain(int *fd, char *buf, size_t *n)
{
	for (;;) {
		char tmp[4096];
		ssize_t r = read(*fd, tmp, sizeof(tmp));
		size_t take;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			close(*fd);
			*fd = -1;
			return;
		}
		take = (size_t)r;
		if (take > CAP - 1 - *n)
			take = CAP - 1 - *n;
		memcpy(buf + *n, tmp, take);
		*n += take;
		buf[*n] = '\0';
	}
}

/* Poll the signalfd and both pipes until the command was reaped and, if
 * eof, the pipes are at EOF (else they are closed), at most 10 s. */
static void
run_until(agent_sup *sup, int ofd, int efd, struct run *r, int eof)
{
	uint64_t end = ms_now() + 10000;
	int exited = 0;

	for (;;) {
		struct pollfd p[3] = {
			{ agent_sup_signal_fd(sup), POLLIN, 0 },
			{ ofd, POLLIN, 0 },
			{ efd, POLLIN, 0 },
		};
		unsigned ev = 0;

		agent_sup_child_status(sup, &exited, &r->code);
		if (exited && !eof) {
			if (ofd >= 0)
				close(ofd);
			if (efd >= 0)
				close(efd);
			return;
		}
		if (exited && ofd < 0 && efd < 0)
			return;
		assert_true(ms_now() < end);
		assert_true(poll(p, 3, 100) >= 0);
		if (p[0].revents & POLLIN) {
			assert_int_equal(agent_sup_handle_signals(sup, &ev), CIVIS_OK);
			r->events |= ev;
		}
		if (ofd >= 0 && p[1].revents)
			drain(&ofd, r->out, &r->nout);
		if (efd >= 0 && p[2].revents)
			drain(&efd, r->err, &r->nerr);
	}
}

static void
run_to_exit(agent_sup *sup, int ofd, int efd, struct run *r)
{
	run_until(sup, ofd, efd, r, 1);
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Bounded wait until pid has a child of its own. */
static void
wait_has_child(pid_t pid)
{
	uint64_t end = ms_now() + 5000;
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	for (;;) {
		char buf[64] = "";
		FILE *f = fopen(path, "r");

		assert_non_null(f);
		if (fgets(buf, sizeof(buf), f) == NULL)
			buf[0] = '\0';
		fclose(f);
		if (buf[0] >= '1' && buf[0] <= '9')
			return;
		assert_true(ms_now() < end);
		nap_ms(5);
	}
}

/* Spawn argv, run it to the end; returns the spawn status. */
static int
run_cmd(const agent_sup_opts *o, char *const argv[], struct run *r,
        char *err, size_t errlen)
{
	agent_sup *sup = NULL;
	int ofd = -1, efd = -1, rc, exited = 0;

	memset(r, 0, sizeof(*r));
	assert_int_equal(agent_sup_init(&sup, o), CIVIS_OK);
	rc = agent_sup_spawn(sup, argv, &ofd, &efd, err, errlen);
	if (rc == CIVIS_OK) {
		assert_true(ofd >= 0 && efd >= 0);
		run_to_exit(sup, ofd, efd, r);
	} else {
		assert_int_equal(ofd, -1);
		assert_int_equal(efd, -1);
		agent_sup_child_status(sup, &exited, &r->code);
		assert_int_equal(exited, 1);
		/* The SIGCHLD of the failed exec is handled without harm. */
		assert_int_equal(agent_sup_handle_signals(sup, NULL), CIVIS_OK);
	}
	sup_free(sup);
	return rc;
}

static int
status_of(void (*fn)(void))
{
	int st;
	pid_t p = fork();

	assert_true(p >= 0);
	if (p == 0) {
		fn();
		_exit(99);
	}
	assert_int_equal(waitpid(p, &st, 0), p);
	return st;
}

static void exit0(void) { _exit(0); }
static void exit255(void) { _exit(255); }
static void exit42(void) { _exit(42); }
static void die_term(void) { signal(SIGTERM, SIG_DFL); raise(SIGTERM); }
static void die_kill(void) { raise(SIGKILL); }

static void
test_status_code(void **state)
{
	(void)state;
	assert_int_equal(agent_sup_status_code(status_of(exit0)), 0);
	assert_int_equal(agent_sup_status_code(status_of(exit42)), 42);
	assert_int_equal(agent_sup_status_code(status_of(exit255)), 255);
	assert_int_equal(agent_sup_status_code(status_of(die_term)), 143);
	assert_int_equal(agent_sup_status_code(status_of(die_kill)), 137);
}

static void
test_remap(void **state)
{
	const int remap[] = { 143, 1 };
	(void)state;
	assert_int_equal(agent_sup_remap_exit(143, remap, 2), 0);
	assert_int_equal(agent_sup_remap_exit(1, remap, 2), 0);
	assert_int_equal(agent_sup_remap_exit(2, remap, 2), 2);
	assert_int_equal(agent_sup_remap_exit(1, remap, 1), 1);
	assert_int_equal(agent_sup_remap_exit(7, NULL, 0), 7);
	assert_int_equal(agent_sup_remap_exit(0, remap, 2), 0);
}

static void
test_exec_codes_and_texts(void **state)
{
	char buf[512], small[16], longcmd[400];
	size_t n;
	(void)state;

	assert_int_equal(agent_sup_exec_exit_code(ENOENT), 127);
	assert_int_equal(agent_sup_exec_exit_code(EACCES), 126);
	assert_int_equal(agent_sup_exec_exit_code(ENOEXEC), 126);
	assert_int_equal(agent_sup_exec_exit_code(EISDIR), 126);

	n = agent_sup_exec_message(buf, sizeof(buf), "foo", ENOENT, 0);
	assert_string_equal(buf, "cannot run 'foo': No such file or directory");
	assert_int_equal(n, strlen(buf));
	agent_sup_exec_message(buf, sizeof(buf), "./x", EACCES, 0);
	assert_string_equal(buf, "cannot run './x': Permission denied");
	agent_sup_exec_message(buf, sizeof(buf), "/tmp", EACCES, 1);
	assert_string_equal(buf, "cannot run '/tmp': Is a directory");
	/* One line whatever the name holds. */
	agent_sup_exec_message(buf, sizeof(buf), "a\nb\tc\x7f", ENOENT, 0);
	assert_string_equal(buf, "cannot run 'a?b?c?': No such file or directory");
	memset(longcmd, 'x', sizeof(longcmd) - 1);
	longcmd[sizeof(longcmd) - 1] = '\0';
	agent_sup_exec_message(buf, sizeof(buf), longcmd, ENOENT, 0);
	assert_non_null(strstr(buf, "xxx...': No such file or directory"));
	assert_true(strlen(buf) < 260);
	/* Truncated to the buffer, still terminated. */
	n = agent_sup_exec_message(small, sizeof(small), "foo", ENOENT, 0);
	assert_int_equal(n, sizeof(small) - 1);
	assert_string_equal(small, "cannot run 'foo");
	assert_int_equal(agent_sup_exec_message(NULL, 0, "foo", ENOENT, 0), 0);
}

static void
test_true_false(void **state)
{
	char *t[] = { "true", NULL }, *f[] = { "/bin/false", NULL };
	char err[256];
	struct run r;
	(void)state;

	assert_int_equal(run_cmd(NULL, t, &r, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(r.code, 0);
	assert_string_equal(err, "");
	assert_true(r.events & AGENT_SUP_EV_CHILD_EXIT);
	assert_int_equal(run_cmd(NULL, f, &r, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(r.code, 1);
}

static void
test_missing_command(void **state)
{
	char *argv[] = { "civis-no-such-command-xyz", "arg", NULL };
	char err[256];
	struct run r;
	(void)state;

	assert_int_equal(run_cmd(NULL, argv, &r, err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_int_equal(r.code, 127);
	assert_string_equal(err, "cannot run 'civis-no-such-command-xyz': No such file or directory");
}

static void
test_not_executable(void **state)
{
	char dir[] = "/tmp/test_supervise.XXXXXX", file[128];
	char *d[] = { dir, NULL }, *f[] = { file, NULL };
	char err[256], want[256];
	struct run r;
	int fd;
	(void)state;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(run_cmd(NULL, d, &r, err, sizeof(err)), CIVIS_EINVAL);
	assert_int_equal(r.code, 126);
	snprintf(want, sizeof(want), "cannot run '%s': Is a directory", dir);
	assert_string_equal(err, want);

	snprintf(file, sizeof(file), "%s/plain", dir);
	fd = open(file, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
	close(fd);
	assert_int_equal(run_cmd(NULL, f, &r, err, sizeof(err)), CIVIS_EINVAL);
	assert_int_equal(r.code, 126);
	snprintf(want, sizeof(want), "cannot run '%s': Permission denied", file);
	assert_string_equal(err, want);
	unlink(file);
	rmdir(dir);
}

static void
test_pipes(void **state)
{
	char *argv[] = { "sh", "-c", "printf 'out\\0put'; printf err >&2; exit 7", NULL };
	agent_sup *sup = NULL;
	char err[256];
	struct run r;
	int ofd, efd, fl;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	assert_true(agent_sup_child_pid(sup) > 0);
	fl = fcntl(ofd, F_GETFL);
	assert_true(fl >= 0 && (fl & O_NONBLOCK));
	assert_true(fcntl(efd, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(ofd, F_GETPIPE_SZ) >= 1024 * 1024);
	/* A second command is refused. */
	{
		int o2, e2;
		assert_int_equal(agent_sup_spawn(sup, argv, &o2, &e2, err, sizeof(err)), CIVIS_EINVAL);
		assert_int_equal(o2, -1);
	}
	run_to_exit(sup, ofd, efd, &r);
	assert_int_equal(r.code, 7);
	assert_int_equal(r.nout, 7);
	assert_memory_equal(r.out, "out\0put", 7);
	assert_string_equal(r.err, "err");
	assert_int_equal(agent_sup_child_signal(sup), 0);
	sup_free(sup);
}

/* The whole of a small file, NUL-terminated, into buf. */
static void
slurp_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* inherit_output: no pipes; the command writes to our own fds 1 and 2
 * (two files here), the very same open files. */
static void
test_inherit_output(void **state)
{
	char outp[] = "/tmp/civis-sup-out-XXXXXX", errp[] = "/tmp/civis-sup-err-XXXXXX";
	char *argv[] = { "sh", "-c", "printf 'out\\0put'; printf err >&2; "
	                 "stat -L -c %i /proc/$$/fd/1 /proc/$$/fd/2 | cat >&2; exit 7", NULL };
	agent_sup_opts o = { .quiet = 1, .inherit_output = 1 };
	agent_sup *sup = NULL;
	char err[256], got[512], want[128];
	struct stat so, se;
	struct run r;
	int ofd = 0, efd = 0, fo, fe, save1, save2, rc;
	(void)state;

	fo = mkstemp(outp);
	fe = mkstemp(errp);
	assert_true(fo >= 0 && fe >= 0);
	assert_int_equal(fstat(fo, &so), 0);
	assert_int_equal(fstat(fe, &se), 0);
	fflush(stdout);
	fflush(stderr);
	save1 = dup(1);
	save2 = dup(2);
	assert_true(save1 >= 0 && save2 >= 0);
	assert_int_equal(dup2(fo, 1), 1);
	assert_int_equal(dup2(fe, 2), 2);
	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, &o), CIVIS_OK);
	rc = agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err));
	if (rc == CIVIS_OK)
		run_to_exit(sup, ofd, efd, &r);
	/* our own stdout and stderr back before anything is asserted */
	assert_int_equal(dup2(save1, 1), 1);
	assert_int_equal(dup2(save2, 2), 2);
	close(save1);
	close(save2);
	close(fo);
	close(fe);
	assert_int_equal(rc, CIVIS_OK);
	assert_int_equal(ofd, -1);
	assert_int_equal(efd, -1);
	assert_int_equal(r.code, 7);
	assert_int_equal(r.nout + r.nerr, 0);
	{
		FILE *f = fopen(outp, "rb");
		char b[16];

		assert_non_null(f);
		assert_int_equal(fread(b, 1, sizeof(b), f), 7);
		assert_memory_equal(b, "out\0put", 7);
		fclose(f);
	}
	slurp_file(errp, got, sizeof(got));
	snprintf(want, sizeof(want), "err%llu\n%llu\n", (unsigned long long)so.st_ino,
	         (unsigned long long)se.st_ino);
	assert_string_equal(got, want);
	unlink(outp);
	unlink(errp);
	sup_free(sup);
}

static void
test_usage(void **state)
{
	char *argv[] = { "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done", NULL };
	agent_sup *sup = NULL;
	agent_sup_usage u;
	char err[256];
	struct run r;
	int ofd, efd;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	agent_sup_child_usage(sup, &u);
	assert_int_equal(u.wall_ns, 0);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	run_to_exit(sup, ofd, efd, &r);
	agent_sup_child_usage(sup, &u);
	assert_int_equal(r.code, 0);
	assert_true(u.wall_ns > 0);
	assert_true(u.user_us + u.sys_us > 0);
	assert_true(u.maxrss_kb > 0);
	sup_free(sup);
}

/* Send sig to ourselves from another process (our own signals are never
 * forwarded: that is how a SIGPIPE of our own writes is told apart). */
static void
signal_me(int sig)
{
	pid_t me = getpid(), p = fork();

	assert_true(p >= 0);
	if (p == 0) {
		kill(me, sig);
		_exit(0);
	}
	assert_int_equal(waitpid(p, NULL, 0), p);
}

static void
test_forward_term(void **state)
{
	char *argv[] = { "sleep", "30", NULL };
	agent_sup *sup = NULL;
	char err[256];
	struct run r;
	int ofd, efd;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	signal_me(SIGTERM);
	run_to_exit(sup, ofd, efd, &r);
	assert_true(r.events & AGENT_SUP_EV_TERMINATE);
	assert_true(r.events & AGENT_SUP_EV_CHILD_EXIT);
	assert_int_equal(r.code, 143);
	assert_int_equal(agent_sup_child_signal(sup), SIGTERM);
	sup_free(sup);
}

static void
test_own_sigpipe_not_forwarded(void **state)
{
	char *argv[] = { "sleep", "30", NULL };
	agent_sup *sup = NULL;
	char err[256];
	struct run r;
	int ofd, efd, p[2], exited = 1;
	unsigned ev = 1;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	/* Blocked SIGPIPE: the write fails with EPIPE, the agent lives on. */
	assert_int_equal(write(p[1], "x", 1), -1);
	assert_int_equal(errno, EPIPE);
	close(p[1]);
	assert_int_equal(agent_sup_handle_signals(sup, &ev), CIVIS_OK);
	assert_int_equal(ev, 0);
	agent_sup_child_status(sup, &exited, NULL);
	assert_int_equal(exited, 0);
	assert_int_equal(agent_sup_group_alive(sup), 1);
	/* Cancellation path: SIGTERM to the group, so 143 and not 141. */
	assert_int_equal(agent_sup_terminate(sup), CIVIS_OK);
	run_to_exit(sup, ofd, efd, &r);
	assert_int_equal(r.code, 143);
	assert_int_equal(agent_sup_group_alive(sup), 0);
	/* A SIGPIPE of a last write, pending at free: still blocked after. */
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	assert_int_equal(write(p[1], "x", 1), -1);
	close(p[1]);
	agent_sup_free(sup);
	{
		sigset_t now, pend;
		assert_int_equal(sigprocmask(SIG_SETMASK, NULL, &now), 0);
		assert_int_equal(sigismember(&now, SIGPIPE), 1);
		assert_int_equal(sigismember(&now, SIGTERM), 1);
		assert_int_equal(sigpending(&pend), 0);
		assert_int_equal(sigismember(&pend, SIGPIPE), 1);
	}
	sup = NULL;
	sup_free(sup);   /* drains the SIGPIPE, restores our mask */
}

/* The "SigBlk:" and "SigIgn:" lines of a /proc status text. */
static void
sig_lines(const char *status, char *out, size_t len)
{
	const char *blk = strstr(status, "SigBlk:"), *ign = strstr(status, "SigIgn:");
	const char *e1, *e2;

	assert_non_null(blk);
	assert_non_null(ign);
	e1 = strchr(blk, '\n');
	e2 = strchr(ign, '\n');
	assert_non_null(e1);
	assert_non_null(e2);
	snprintf(out, len, "%.*s|%.*s", (int)(e1 - blk), blk, (int)(e2 - ign), ign);
}

static void
test_child_gets_start_mask(void **state)
{
	char *argv[] = { "cat", "/proc/self/status", NULL };
	char mine[CAP], want[256], got[256];
	struct sigaction ign, old_usr2, old_pipe;
	sigset_t usr1, old_mask;
	struct run r;
	char err[256];
	FILE *f;
	size_t n;
	(void)state;

	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	assert_int_equal(sigprocmask(SIG_BLOCK, &usr1, &old_mask), 0);
	assert_int_equal(sigaction(SIGUSR2, &ign, &old_usr2), 0);
	/* SIGPIPE default at start: the command must get it default too. */
	assert_int_equal(sigaction(SIGPIPE, NULL, &old_pipe), 0);

	f = fopen("/proc/self/status", "r");
	assert_non_null(f);
	n = fread(mine, 1, sizeof(mine) - 1, f);
	fclose(f);
	mine[n] = '\0';
	sig_lines(mine, want, sizeof(want));

	assert_int_equal(run_cmd(NULL, argv, &r, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(r.code, 0);
	sig_lines(r.out, got, sizeof(got));
	assert_string_equal(got, want);
	/* and what we set is in it (a CI shell may add SIGINT/SIGQUIT to the
	 * ignored set we started with: compare bits, not whole masks) */
	{
		const char *b = strstr(got, "SigBlk:\t"), *i = strstr(got, "SigIgn:\t");
		unsigned long long blk, ig;

		assert_non_null(b);
		assert_non_null(i);
		blk = strtoull(b + 8, NULL, 16);
		ig = strtoull(i + 8, NULL, 16);
		assert_true(blk & (1ULL << (SIGUSR1 - 1)));
		assert_true(ig & (1ULL << (SIGUSR2 - 1)));
		assert_false(ig & (1ULL << (SIGPIPE - 1)));
	}

	assert_int_equal(sigaction(SIGUSR2, &old_usr2, NULL), 0);
	assert_int_equal(sigprocmask(SIG_SETMASK, &old_mask, NULL), 0);
}

static void
test_group_kill_and_orphans(void **state)
{
	/* The shell backgrounds a sleeper, then is replaced by another. */
	char *argv[] = { "sh", "-c", "sleep 30 & exec sleep 30", NULL };
	agent_sup *sup = NULL;
	agent_sup_usage u;
	char err[256];
	struct run r;
	int ofd, efd;
	uint64_t end;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	wait_has_child(agent_sup_child_pid(sup));
	assert_int_equal(agent_sup_group_alive(sup), 1);
	assert_int_equal(agent_sup_kill_group(sup, SIGKILL), CIVIS_OK);
	run_to_exit(sup, ofd, efd, &r);
	assert_int_equal(r.code, 137);
	/* The backgrounded sleeper was the shell's child: we reap it as its
	 * subreaper, and then the group is gone. */
	end = ms_now() + 5000;
	while (agent_sup_group_alive(sup)) {
		struct pollfd p = { agent_sup_signal_fd(sup), POLLIN, 0 };
		assert_true(ms_now() < end);
		(void)poll(&p, 1, 50);
		assert_int_equal(agent_sup_handle_signals(sup, NULL), CIVIS_OK);
	}
	agent_sup_child_usage(sup, &u);
	assert_int_equal(u.orphans_reaped, 1);
	assert_int_equal(agent_sup_wait_group(sup, 0), 1);
	/* Harmless once the group is gone. */
	assert_int_equal(agent_sup_kill_group(sup, SIGTERM), CIVIS_OK);
	sup_free(sup);
}

static void
test_child_only(void **state)
{
	/* With signal_child_only, USR1 reaches the shell but not its
	 * background child, which must be killed with the group. */
	char *argv[] = { "sh", "-c", "trap 'exit 9' USR1; sleep 30 & wait; exit 1", NULL };
	agent_sup_opts o = { .signal_child_only = 1, .quiet = 1 };
	agent_sup *sup = NULL;
	char err[256];
	struct run r;
	int ofd, efd;
	uint64_t end;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, &o), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	/* Wait (bounded) until the shell has its trap: SigCgt shows USR1. */
	end = ms_now() + 5000;
	for (;;) {
		char path[64], buf[4096];
		FILE *f;
		size_t n;
		const char *cgt;

		snprintf(path, sizeof(path), "/proc/%d/status", (int)agent_sup_child_pid(sup));
		f = fopen(path, "r");
		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		cgt = strstr(buf, "SigCgt:");
		assert_non_null(cgt);
		if (strtoull(cgt + 7, NULL, 16) & (1ULL << (SIGUSR1 - 1)))
			break;
		assert_true(ms_now() < end);
		nap_ms(5);
	}
	wait_has_child(agent_sup_child_pid(sup));
	signal_me(SIGUSR1);
	/* The sleeper holds the pipes: do not wait for their EOF. */
	run_until(sup, ofd, efd, &r, 0);
	assert_int_equal(r.code, 9);
	/* The sleeper did not get USR1: the group is still there. */
	assert_int_equal(agent_sup_group_alive(sup), 1);
	assert_int_equal(agent_sup_kill_group(sup, SIGTERM), CIVIS_OK);
	end = ms_now() + 5000;
	while (agent_sup_group_alive(sup)) {
		struct pollfd p = { agent_sup_signal_fd(sup), POLLIN, 0 };
		assert_true(ms_now() < end);
		(void)poll(&p, 1, 50);
		assert_int_equal(agent_sup_handle_signals(sup, NULL), CIVIS_OK);
	}
	sup_free(sup);
}

static void
test_wait_group(void **state)
{
	/* The command exits at once, leaving a sleeper in its group. */
	char *argv[] = { "sh", "-c", "sleep 30 & exit 0", NULL };
	agent_sup *sup = NULL;
	agent_sup_usage u;
	char err[256];
	struct run r;
	int ofd, efd;
	uint64_t t0;
	(void)state;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	run_until(sup, ofd, efd, &r, 0);
	assert_int_equal(r.code, 0);
	assert_int_equal(agent_sup_group_alive(sup), 1);
	/* Nobody kills it: the wait times out, the sleeper lives on. */
	t0 = ms_now();
	assert_int_equal(agent_sup_wait_group(sup, 100000000ULL), 0);
	assert_true(ms_now() - t0 >= 100);
	assert_true(ms_now() - t0 < 2000);
	/* SIGKILL, then the wait returns once it is reaped, not a zombie:
	 * the group (whose id is the command's pid) is empty. */
	assert_int_equal(agent_sup_kill_group(sup, SIGKILL), CIVIS_OK);
	assert_int_equal(agent_sup_wait_group(sup, 5000000000ULL), 1);
	agent_sup_child_usage(sup, &u);
	assert_int_equal(u.orphans_reaped, 1);
	assert_int_equal(kill(-agent_sup_child_pid(sup), 0), -1);
	assert_int_equal(errno, ESRCH);
	sup_free(sup);
}

/* Bounded wait until pid is stopped (state T in /proc/<pid>/stat). */
static void
wait_stopped(pid_t pid)
{
	uint64_t end = ms_now() + 5000;
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (;;) {
		char buf[512];
		FILE *f = fopen(path, "r");
		size_t n;
		const char *rp;

		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		rp = strrchr(buf, ')');
		assert_non_null(rp);
		if (rp[1] == ' ' && rp[2] == 'T')
			return;
		assert_true(ms_now() < end);
		nap_ms(5);
	}
}

/* A daemon that called setsid is not in the command's group: the group is
 * gone, the daemon is not, and agent_sup_kill_rest() finds it anyway. */
static void
test_kill_rest_setsid(void **state)
{
	char mark[] = "/tmp/civis-sup-mark-XXXXXX", cmd[512];
	char *argv[] = { "sh", "-c", cmd, NULL };
	agent_sup *sup = NULL;
	agent_sup_usage u;
	char err[256];
	struct run r;
	int ofd, efd, fd;
	(void)state;

	fd = mkstemp(mark);
	assert_true(fd >= 0);
	close(fd);
	unlink(mark);
	snprintf(cmd, sizeof(cmd), "setsid sh -c ': > %s; exec sleep 30' & "
	         "i=0; while [ ! -e %s ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done; exit 4",
	         mark, mark);
	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_kill_rest(sup, SIGTERM), CIVIS_EINVAL);
	assert_int_equal(agent_sup_rest_alive(sup), 0);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	run_until(sup, ofd, efd, &r, 0);
	assert_int_equal(r.code, 4);
	assert_int_equal(access(mark, F_OK), 0);
	unlink(mark);
	assert_int_equal(agent_sup_group_alive(sup), 0);
	assert_int_equal(agent_sup_rest_alive(sup), 1);
	/* Not gone by itself. */
	assert_int_equal(agent_sup_wait_rest(sup, 50000000ULL), 0);
	assert_int_equal(agent_sup_kill_rest(sup, SIGTERM), CIVIS_OK);
	assert_int_equal(agent_sup_wait_rest(sup, 5000000000ULL), 1);
	assert_int_equal(agent_sup_rest_alive(sup), 0);
	agent_sup_child_usage(sup, &u);
	assert_int_equal(u.orphans_reaped, 1);
	sup_free(sup);
}

/* A command stopped by SIGTSTP gets SIGCONT after the SIGTERM of a cancel
 * and of a forwarded SIGTERM, so its handler runs at once. */
static void
stopped_then(int how)
{
	char *argv[] = { "sh", "-c", "trap 'exit 7' TERM; kill -TSTP $$; exit 1", NULL };
	agent_sup *sup = NULL;
	char err[256];
	struct run r;
	int ofd, efd;

	memset(&r, 0, sizeof(r));
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_int_equal(agent_sup_spawn(sup, argv, &ofd, &efd, err, sizeof(err)), CIVIS_OK);
	wait_stopped(agent_sup_child_pid(sup));
	if (how == 0)
		assert_int_equal(agent_sup_terminate(sup), CIVIS_OK);
	else if (how == 1)
		signal_me(SIGTERM);
	else
		assert_int_equal(agent_sup_kill_rest(sup, SIGTERM), CIVIS_OK);
	run_to_exit(sup, ofd, efd, &r);
	assert_int_equal(r.code, 7);
	sup_free(sup);
}

static void
test_terminate_stopped(void **state)
{
	(void)state;
	stopped_then(0);
}

static void
test_forward_term_stopped(void **state)
{
	(void)state;
	stopped_then(1);
}

static void
test_kill_rest_stopped(void **state)
{
	(void)state;
	stopped_then(2);
}

static void
test_bad_args(void **state)
{
	char *empty[] = { NULL };
	agent_sup *sup = NULL;
	char err[256];
	int o, e, exited, code;
	(void)state;

	assert_int_equal(agent_sup_init(NULL, NULL), CIVIS_EINVAL);
	assert_int_equal(agent_sup_init(&sup, NULL), CIVIS_OK);
	assert_true(agent_sup_signal_fd(sup) >= 0);
	assert_int_equal(agent_sup_group_alive(sup), 0);
	assert_int_equal(agent_sup_kill_group(sup, SIGTERM), CIVIS_EINVAL);
	assert_int_equal(agent_sup_spawn(sup, empty, &o, &e, err, sizeof(err)), CIVIS_EINVAL);
	assert_int_equal(o, -1);
	assert_int_equal(e, -1);
	agent_sup_child_status(sup, &exited, &code);
	assert_int_equal(exited, 1);
	assert_int_equal(code, 126);
	sup_free(sup);
	agent_sup_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_code),
		cmocka_unit_test(test_remap),
		cmocka_unit_test(test_exec_codes_and_texts),
		cmocka_unit_test(test_true_false),
		cmocka_unit_test(test_missing_command),
		cmocka_unit_test(test_not_executable),
		cmocka_unit_test(test_pipes),
		cmocka_unit_test(test_inherit_output),
		cmocka_unit_test(test_usage),
		cmocka_unit_test(test_forward_term),
		cmocka_unit_test(test_own_sigpipe_not_forwarded),
		cmocka_unit_test(test_child_gets_start_mask),
		cmocka_unit_test(test_group_kill_and_orphans),
		cmocka_unit_test(test_child_only),
		cmocka_unit_test(test_wait_group),
		cmocka_unit_test(test_kill_rest_setsid),
		cmocka_unit_test(test_terminate_stopped),
		cmocka_unit_test(test_forward_term_stopped),
		cmocka_unit_test(test_kill_rest_stopped),
		cmocka_unit_test(test_bad_args),
	};
	sigprocmask(SIG_SETMASK, NULL, &test_mask);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
