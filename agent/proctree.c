/* proctree.c: the agent's descendants from /proc. See proctree.h. */
#include "proctree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "civis/civis.h"

#define STAT_MAX 1024              /* bytes of /proc/<pid>/stat read: comm is at most 64 */

int
agent_proctree_parse_stat(const char *buf, size_t len, agent_proc *out)
{
	char s[STAT_MAX];
	const char *open, *close, *p;
	char *end;
	long long v;
	int field;

	if (buf == NULL || out == NULL || len == 0)
		return -1;
	memset(out, 0, sizeof(*out));
	if (len >= sizeof(s))
		len = sizeof(s) - 1;
	memcpy(s, buf, len);
	s[len] = '\0';
	open = strchr(s, '(');
	close = strrchr(s, ')');
	if (open == NULL || close == NULL || close < open)
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || v <= 0 || v > INT32_MAX || *end != ' ' || end + 1 != open)
		return -1;
	out->pid = (pid_t)v;
	/* After ") ": field 3 is the state, 4 ppid, 5 pgrp, ... 22 starttime. */
	p = close + 1;
	for (field = 3; field <= 22; field++) {
		if (*p != ' ')
			return -1;
		p++;
		if (field == 3) {
			if (*p == '\0' || *p == ' ')
				return -1;
			out->state = *p++;
			continue;
		}
		errno = 0;
		v = strtoll(p, &end, 10);
		if (errno != 0 || end == p)
			return -1;
		p = end;
		if (field == 4 && (v < 0 || v > INT32_MAX))
			return -1;
		if (field == 4)
			out->ppid = (pid_t)v;
		else if (field == 5)
			out->pgrp = (pid_t)v;
		else if (field == 22)
			out->start = v < 0 ? 0 : (uint64_t)v;
	}
	return 0;
}

/* Read and parse <dirfd>/<pid>/stat. 0, or -1 (gone, unreadable, malformed). */
static int
read_stat(int dirfd, pid_t pid, agent_proc *out)
{
	char path[32], buf[STAT_MAX];
	size_t got = 0;
	int fd, rc;

	if (snprintf(path, sizeof(path), "%d/stat", (int)pid) >= (int)sizeof(path))
		return -1;
	fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (got < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	rc = agent_proctree_parse_stat(buf, got, out);
	return rc == 0 && out->pid == pid ? 0 : -1;
}

static int
by_ppid(const void *a, const void *b)
{
	const agent_proc *x = a, *y = b;

	return (x->ppid > y->ppid) - (x->ppid < y->ppid);
}

/* Every process under dirfd into *all (sorted by ppid), at most the cap. */
static int
read_all(int dirfd, pid_t root, agent_proc **all, size_t *n, int *truncated)
{
	DIR *d;
	struct dirent *de;
	size_t cap = 0;
	int rc = CIVIS_OK;
	int dfd = dup(dirfd);

	*all = NULL;
	*n = 0;
	if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
		if (dfd >= 0)
			close(dfd);
		return CIVIS_ESYS;
	}
	while ((de = readdir(d)) != NULL) {
		char *end;
		long v;
		agent_proc p;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		v = strtol(de->d_name, &end, 10);
		if (*end != '\0' || v <= 0 || v > INT32_MAX || (pid_t)v == root)
			continue;
		if (read_stat(dirfd, (pid_t)v, &p) != 0)
			continue;          /* gone since readdir */
		if (*n == AGENT_PROCTREE_MAX) {
			*truncated = 1;
			break;
		}
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			agent_proc *nv = realloc(*all, ncap * sizeof(**all));

			if (nv == NULL) {
				rc = CIVIS_ENOMEM;
				break;
			}
			*all = nv;
			cap = ncap;
		}
		(*all)[(*n)++] = p;
	}
	closedir(d);
	if (rc == CIVIS_OK && *n > 1)
		qsort(*all, *n, sizeof(**all), by_ppid);
	return rc;
}

/* First index of all[0..n) (sorted by ppid) with ppid >= pp. */
static size_t
lower_bound(const agent_proc *all, size_t n, pid_t pp)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (all[mid].ppid < pp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
agent_proctree_scan(agent_proctree *t, const char *proc_root, pid_t root)
{
	agent_proc *all = NULL;
	size_t n = 0, head = 0;
	int dirfd, rc;

	if (t == NULL)
		return CIVIS_EINVAL;
	memset(t, 0, sizeof(*t));
	dirfd = open(proc_root ? proc_root : "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return CIVIS_ESYS;
	rc = read_all(dirfd, root, &all, &n, &t->truncated);
	close(dirfd);
	if (rc != CIVIS_OK || n == 0)
		goto out;
	t->v = calloc(n, sizeof(*t->v));
	if (t->v == NULL) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	/* Breadth first from root: t->v doubles as the queue. Each pid of the
	 * snapshot is there once and has one ppid, so nothing is taken twice
	 * (root itself was left out of the snapshot). */
	for (pid_t parent = root;;) {
		for (size_t i = lower_bound(all, n, parent); i < n && all[i].ppid == parent; i++)
			t->v[t->n++] = all[i];
		if (head == t->n)
			break;
		parent = t->v[head++].pid;
	}
out:
	free(all);
	if (rc != CIVIS_OK)
		agent_proctree_dispose(t);
	return rc;
}

void
agent_proctree_dispose(agent_proctree *t)
{
	if (t == NULL)
		return;
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static int
running(char state)
{
	return state != 'Z' && state != 'X' && state != 'x';
}

size_t
agent_proctree_alive(const agent_proctree *t)
{
	size_t i, k = 0;

	for (i = 0; t != NULL && i < t->n; i++)
		k += running(t->v[i].state);
	return k;
}

/* A pidfd for pid where the kernel has them (5.3), else -1 (kill by pid). */
static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static int
send_sig(int pfd, pid_t pid, int sig)
{
#ifdef SYS_pidfd_send_signal
	if (pfd >= 0)
		return syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0) == 0;
#endif
	(void)pfd;
	return kill(pid, sig) == 0;
}

/* sig to p if its pid still names the process scanned (same start time),
 * then SIGCONT if cont and it is stopped. With a pidfd the check and the
 * signals address one process. 1 when sig was sent. */
static int
signal_one(int dirfd, const agent_proc *p, int sig, int cont)
{
	agent_proc now;
	int ok = 0, pfd = open_pidfd(p->pid);

	if (pfd < 0 && errno == ESRCH)
		return 0;
	if (read_stat(dirfd, p->pid, &now) == 0 && now.start == p->start && running(now.state)) {
		ok = send_sig(pfd, p->pid, sig);
		if (ok && cont && now.state == 'T')
			(void)send_sig(pfd, p->pid, SIGCONT);
	}
	if (pfd >= 0)
		close(pfd);
	return ok;
}

size_t
agent_proctree_signal(const agent_proctree *t, const char *proc_root, int sig, int cont)
{
	size_t i, k = 0;
	int dirfd;

	if (t == NULL || t->n == 0)
		return 0;
	dirfd = open(proc_root ? proc_root : "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return 0;
	for (i = 0; i < t->n; i++)
		if (running(t->v[i].state))
			k += (size_t)signal_one(dirfd, &t->v[i], sig, cont);
	close(dirfd);
	return k;
}

int
agent_proctree_no_children(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno == ECHILD;
}

int
agent_proctree_kill(const char *proc_root, pid_t root, int sig, int cont)
{
	agent_proctree t;
	int rc = agent_proctree_scan(&t, proc_root, root);

	if (rc != CIVIS_OK)
		return rc;
	(void)agent_proctree_signal(&t, proc_root, sig, cont);
	agent_proctree_dispose(&t);
	return CIVIS_OK;
}

int
agent_proctree_cont_stopped(const char *proc_root, pid_t root, pid_t pgrp, pid_t pid)
{
	agent_proctree t;
	size_t i, k = 0;
	int rc = agent_proctree_scan(&t, proc_root, root);

	if (rc != CIVIS_OK)
		return rc;
	for (i = 0; i < t.n; i++)
		if ((pgrp == 0 || t.v[i].pgrp == pgrp) && (pid == 0 || t.v[i].pid == pid) &&
		    t.v[i].state == 'T')
			t.v[k++] = t.v[i];
	t.n = k;
	/* Signal 0 checks the process is still the one scanned; cont adds
	 * the SIGCONT. */
	(void)agent_proctree_signal(&t, proc_root, 0, 1);
	agent_proctree_dispose(&t);
	return CIVIS_OK;
}

int
agent_proctree_count(const char *proc_root, pid_t root, int own_zombies, size_t *n)
{
	agent_proctree t;
	size_t i;
	int rc = agent_proctree_scan(&t, proc_root, root);

	*n = 0;
	if (rc != CIVIS_OK)
		return rc;
	*n = agent_proctree_alive(&t);
	for (i = 0; own_zombies && i < t.n; i++)
		*n += t.v[i].state == 'Z' && t.v[i].ppid == root;
	agent_proctree_dispose(&t);
	return CIVIS_OK;
}

int
agent_proctree_usable(const char *proc_root)
{
	char path[4096], link[32];
	ssize_t n;
	int w = snprintf(path, sizeof(path), "%s/self", proc_root ? proc_root : "/proc");

	if (w < 0 || (size_t)w >= sizeof(path))
		return 0;
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	{
		char *end;
		long v = strtol(link, &end, 10);

		return end != link && *end == '\0' && v == (long)getpid();
	}
}
