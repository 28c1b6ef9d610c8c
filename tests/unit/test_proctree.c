/* test_proctree.c: /proc/<pid>/stat parsing, the descendant scan over a
 * fake /proc and over the real one (a setsid'ed grandchild reparented to
 * us as a subreaper), SIGCONT for a stopped process, and the start-time
 * check that keeps a reused pid from being signalled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "../../agent/proctree.h"

/* A stat line with the given fields; the rest as the kernel writes them. */
static void
stat_line(char *buf, size_t len, int pid, const char *comm, char state, int ppid, int pgrp,
          unsigned long long start)
{
	snprintf(buf, len, "%d (%s) %c %d %d %d 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 %llu "
	         "12345 67 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
	         pid, comm, state, ppid, pgrp, pgrp, start);
}

static void
test_parse(void **state)
{
	char buf[512];
	agent_proc p;
	(void)state;

	stat_line(buf, sizeof(buf), 42, "sleep", 'S', 7, 40, 987654);
	assert_int_equal(agent_proctree_parse_stat(buf, strlen(buf), &p), 0);
	assert_int_equal(p.pid, 42);
	assert_int_equal(p.ppid, 7);
	assert_int_equal(p.pgrp, 40);
	assert_int_equal(p.state, 'S');
	assert_int_equal(p.start, 987654);

	/* A command name with spaces and parentheses: the last ')' ends it. */
	stat_line(buf, sizeof(buf), 43, "a) (b c) Z 1 2", 'T', 8, 43, 5);
	assert_int_equal(agent_proctree_parse_stat(buf, strlen(buf), &p), 0);
	assert_int_equal(p.pid, 43);
	assert_int_equal(p.ppid, 8);
	assert_int_equal(p.state, 'T');
	assert_int_equal(p.start, 5);

	/* Not terminated: only len bytes count. */
	stat_line(buf, sizeof(buf), 44, "x", 'Z', 1, 1, 77);
	memset(buf + strlen(buf), 'A', sizeof(buf) - strlen(buf));
	assert_int_equal(agent_proctree_parse_stat(buf, strlen("44 (x) Z 1 1 1 0 -1 4194304 100 0 0 0 "
	                                                        "1 2 0 0 20 0 1 0 77"), &p), 0);
	assert_int_equal(p.state, 'Z');
	assert_int_equal(p.start, 77);

	/* Malformed: cut before the start time, no parentheses, bad pid,
	 * bad ppid, empty. */
	stat_line(buf, sizeof(buf), 45, "y", 'S', 1, 1, 9);
	assert_int_equal(agent_proctree_parse_stat(buf, strlen("45 (y) S 1 1 1 0 -1"), &p), -1);
	assert_int_equal(agent_proctree_parse_stat("45 y S 1 1", 10, &p), -1);
	assert_int_equal(agent_proctree_parse_stat("x (y) S 1 1", 11, &p), -1);
	assert_int_equal(agent_proctree_parse_stat("-4 (y) S 1 1", 12, &p), -1);
	assert_int_equal(agent_proctree_parse_stat("4 (y) S -1 1 1 0 -1 4194304 100 0 0 0 1 2 0 "
	                                            "0 20 0 1 0 5", 53, &p), -1);
	assert_int_equal(agent_proctree_parse_stat("", 0, &p), -1);
	assert_int_equal(agent_proctree_parse_stat(NULL, 3, &p), -1);
}

static char fake[64];

static void
fake_proc(int pid, const char *comm, char state, int ppid, unsigned long long start)
{
	char dir[128], path[160], line[512];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/%d", fake, pid);
	(void)mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/stat", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	stat_line(line, sizeof(line), pid, comm, state, ppid, pid, start);
	fputs(line, f);
	fclose(f);
}

static void
rm_fake(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fake);
	assert_int_equal(system(cmd), 0);
}

/* root 50: 51 and 56 its children, 52 a child of 51, 54 a zombie child of
 * 52; 53 belongs to someone else, 55 is malformed, 50 itself and non-pid
 * entries are skipped. Parents come before children. */
static void
test_scan_fake(void **state)
{
	agent_proctree t;
	char path[128];
	FILE *f;
	(void)state;

	snprintf(fake, sizeof(fake), "/tmp/civis-proctree-XXXXXX");
	assert_non_null(mkdtemp(fake));
	fake_proc(50, "agent", 'S', 1, 1);
	fake_proc(51, "sh", 'S', 50, 2);
	fake_proc(52, "daemon", 'T', 51, 3);
	fake_proc(53, "other", 'S', 1, 4);
	fake_proc(54, "gone", 'Z', 52, 5);
	fake_proc(56, "sleep", 'R', 50, 6);
	snprintf(path, sizeof(path), "%s/55", fake);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/55/stat", fake);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("55 (broken", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/self", fake);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sys", fake);
	assert_int_equal(mkdir(path, 0755), 0);

	assert_int_equal(agent_proctree_scan(&t, fake, 50), CIVIS_OK);
	assert_int_equal(t.n, 4);
	assert_int_equal(t.truncated, 0);
	/* 51 and 56 (children of the root, any order), then 52, then 54. */
	assert_true((t.v[0].pid == 51 && t.v[1].pid == 56) || (t.v[0].pid == 56 && t.v[1].pid == 51));
	assert_int_equal(t.v[2].pid, 52);
	assert_int_equal(t.v[2].state, 'T');
	assert_int_equal(t.v[3].pid, 54);
	assert_int_equal(agent_proctree_alive(&t), 3);
	agent_proctree_dispose(&t);
	assert_null(t.v);
	assert_int_equal(t.n, 0);

	/* A leaf has no descendants; an unknown root neither. */
	assert_int_equal(agent_proctree_scan(&t, fake, 54), CIVIS_OK);
	assert_int_equal(t.n, 0);
	assert_int_equal(agent_proctree_alive(&t), 0);
	agent_proctree_dispose(&t);
	/* A fake /proc whose self is no link is not ours. */
	assert_int_equal(agent_proctree_usable(fake), 0);
	rm_fake();

	assert_int_equal(agent_proctree_scan(&t, "/nonexistent/proc", 1), CIVIS_ESYS);
	assert_int_equal(agent_proctree_scan(NULL, NULL, 1), CIVIS_EINVAL);
	agent_proctree_dispose(NULL);
}

static uint64_t
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* The scanned entry for pid in t, or NULL. */
static const agent_proc *
find(const agent_proctree *t, pid_t pid)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].pid == pid)
			return &t->v[i];
	return NULL;
}

/* A child forks a grandchild that calls setsid and exits: as a subreaper
 * we get the grandchild, and the scan of the real /proc finds it. */
static void
test_scan_real_setsid(void **state)
{
	agent_proctree t;
	int p[2], st;
	pid_t child, gc = 0;
	uint64_t end;
	(void)state;

	assert_int_equal(agent_proctree_usable(NULL), 1);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		if (fork() == 0) {
			pid_t me;

			(void)setsid();
			me = getpid();
			/* Said only once it has its own session. */
			if (write(p[1], &me, sizeof(me)) != (ssize_t)sizeof(me))
				_exit(1);
			for (;;)
				pause();
		}
		_exit(0);
	}
	assert_int_equal(read(p[0], &gc, sizeof(gc)), (ssize_t)sizeof(gc));
	close(p[0]);
	close(p[1]);
	assert_int_equal(waitpid(child, &st, 0), child);
	/* Reparented to us once its parent is gone. */
	end = ms_now() + 5000;
	for (;;) {
		const agent_proc *e;

		assert_int_equal(agent_proctree_scan(&t, NULL, getpid()), CIVIS_OK);
		e = find(&t, gc);
		if (e != NULL && e->ppid == getpid())
			break;
		agent_proctree_dispose(&t);
		assert_true(ms_now() < end);
		nap_ms(5);
	}
	assert_int_equal(find(&t, gc)->pgrp, gc);     /* its own session and group */
	assert_int_equal(agent_proctree_alive(&t), 1);
	assert_int_equal(agent_proctree_signal(&t, NULL, SIGTERM, 1), 1);
	assert_int_equal(waitpid(gc, &st, 0), gc);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	/* Gone: nothing to signal any more. */
	assert_int_equal(agent_proctree_signal(&t, NULL, SIGTERM, 1), 0);
	agent_proctree_dispose(&t);
	assert_int_equal(agent_proctree_signal(NULL, NULL, SIGTERM, 1), 0);
}

static void
on_term(int sig)
{
	(void)sig;
	_exit(7);
}

/* A stopped child with a SIGTERM handler: with cont it runs the handler at
 * once; without, it stays stopped. */
static void
test_stopped(void **state)
{
	agent_proctree t;
	int st, cont;
	(void)state;

	for (cont = 1; cont >= 0; cont--) {
		pid_t c = fork();

		assert_true(c >= 0);
		if (c == 0) {
			signal(SIGTERM, on_term);
			raise(SIGSTOP);
			_exit(1);
		}
		assert_int_equal(waitpid(c, &st, WUNTRACED), c);
		assert_true(WIFSTOPPED(st));
		assert_int_equal(agent_proctree_scan(&t, NULL, getpid()), CIVIS_OK);
		assert_non_null(find(&t, c));
		assert_int_equal(find(&t, c)->state, 'T');
		assert_int_equal(agent_proctree_signal(&t, NULL, SIGTERM, cont), (size_t)1);
		if (cont) {
			assert_int_equal(waitpid(c, &st, 0), c);
			assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 7);
		} else {
			nap_ms(50);
			assert_int_equal(waitpid(c, &st, WNOHANG), 0);
			assert_int_equal(kill(c, SIGKILL), 0);
			assert_int_equal(waitpid(c, &st, 0), c);
			assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		}
		agent_proctree_dispose(&t);
	}
}

/* The pid scanned now names another process (its start time differs):
 * it is left alone. A fake /proc stands in for the kernel's answer. */
static void
test_pid_reused(void **state)
{
	agent_proctree t;
	int st;
	pid_t c;
	(void)state;

	c = fork();
	assert_true(c >= 0);
	if (c == 0) {
		for (;;)
			pause();
	}
	snprintf(fake, sizeof(fake), "/tmp/civis-proctree-XXXXXX");
	assert_non_null(mkdtemp(fake));
	fake_proc((int)c, "victim", 'S', (int)getpid(), 111);
	assert_int_equal(agent_proctree_scan(&t, fake, getpid()), CIVIS_OK);
	assert_int_equal(t.n, 1);
	fake_proc((int)c, "victim", 'S', (int)getpid(), 222);
	assert_int_equal(agent_proctree_signal(&t, fake, SIGTERM, 1), 0);
	nap_ms(20);
	assert_int_equal(waitpid(c, &st, WNOHANG), 0);
	/* Same start time: signalled. */
	fake_proc((int)c, "victim", 'S', (int)getpid(), 111);
	assert_int_equal(agent_proctree_signal(&t, fake, SIGTERM, 1), 1);
	assert_int_equal(waitpid(c, &st, 0), c);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	agent_proctree_dispose(&t);
	rm_fake();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_scan_fake),
		cmocka_unit_test(test_scan_real_setsid),
		cmocka_unit_test(test_stopped),
		cmocka_unit_test(test_pid_reused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
