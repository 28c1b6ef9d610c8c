/* supervise.c: PID 1 / subreaper: spawn, signal forwarding, reaping, exit
 * status. See supervise.h for the contract and the signal policy. */
#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "proctree.h"

#define SUP_PIPE_SIZE   (1024 * 1024)
#define SUP_CMD_SHOWN   200        /* bytes of the command name in messages */
#define SUP_SIGBATCH    16         /* siginfos read per read(2) */

/* What the child tells the parent through the close-on-exec pipe when it
 * does not reach exec. */
enum { STAGE_DUP = 1, STAGE_EXEC = 2 };
struct exec_report {
	int stage;
	int err;
};

struct agent_sup {
	agent_sup_opts opts;
	sigset_t start_mask;      /* the mask the agent was started with */
	sigset_t start_ignored;   /* signals ignored at start */
	int sigfd;
	pid_t self;
	pid_t child;              /* 0 before spawn */
	pid_t pgid;
	int exited;               /* reaped, or could not be run */
	int exit_code;
	int term_sig;
	int group_gone;           /* kill(-pgid, 0) said ESRCH once */
	int proc_ok;              /* /proc is for our PID namespace: descendants can be found */
	struct rusage ru;
	uint64_t t_start_ns;
	uint64_t t_end_ns;
	uint64_t orphans;
};

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Signals a process can never block or catch. */
static int
sig_uncatchable(int sig)
{
	return sig == SIGKILL || sig == SIGSTOP;
}

int
agent_sup_status_code(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 255;
}

int
agent_sup_remap_exit(int code, const int *remap, size_t n)
{
	size_t i;

	for (i = 0; remap != NULL && i < n; i++)
		if (remap[i] == code)
			return 0;
	return code;
}

int
agent_sup_exec_exit_code(int err)
{
	return err == ENOENT ? 127 : 126;
}

size_t
agent_sup_exec_message(char *buf, size_t len, const char *cmd, int err,
                       int is_dir)
{
	char shown[SUP_CMD_SHOWN + 4];
	size_t i, n = 0;
	int w;

	if (buf == NULL || len == 0)
		return 0;
	if (cmd == NULL)
		cmd = "";
	for (i = 0; cmd[i] != '\0' && n < SUP_CMD_SHOWN; i++) {
		unsigned char c = (unsigned char)cmd[i];
		shown[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (cmd[i] != '\0') {
		shown[n++] = '.';
		shown[n++] = '.';
		shown[n++] = '.';
	}
	shown[n] = '\0';
	w = snprintf(buf, len, "cannot run '%s': %s", shown,
	             is_dir ? strerror(EISDIR) : strerror(err));
	if (w < 0) {
		buf[0] = '\0';
		return 0;
	}
	return (size_t)w >= len ? len - 1 : (size_t)w;
}

/* Reopen any of fds 0-2 that is closed on /dev/null, so that pipes created
 * later never land on them. */
static int
ensure_std_fds(void)
{
	int fd;

	for (fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (nfd < 0)
			return -1;
		if (nfd != fd) {
			/* Lower fds are open, so open() returns fd itself. */
			close(nfd);
			return -1;
		}
	}
	return 0;
}

int
agent_sup_init(agent_sup **out, const agent_sup_opts *o)
{
	agent_sup *sup;
	sigset_t all;
	int sig, rc;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	sup = calloc(1, sizeof(*sup));
	if (sup == NULL)
		return CIVIS_ENOMEM;
	sup->sigfd = -1;
	if (o != NULL)
		sup->opts = *o;
	sup->self = getpid();
	sup->proc_ok = agent_proctree_usable(NULL);
	sigemptyset(&sup->start_ignored);

	if (ensure_std_fds() != 0) {
		rc = CIVIS_ESYS;
		goto out;
	}
	/* glibc's sigfillset leaves out its two internal real-time signals. */
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	if (sigprocmask(SIG_BLOCK, &all, &sup->start_mask) != 0) {
		rc = CIVIS_ESYS;
		goto out;
	}
	for (sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sig_uncatchable(sig) || sigaction(sig, NULL, &sa) != 0)
			continue;
		if (sa.sa_handler == SIG_IGN)
			sigaddset(&sup->start_ignored, sig);
	}
	sup->sigfd = signalfd(-1, &all, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sup->sigfd < 0) {
		sigprocmask(SIG_SETMASK, &sup->start_mask, NULL);
		rc = CIVIS_ESYS;
		goto out;
	}
	if (sup->self != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 &&
	    !sup->opts.quiet)
		fputs("civis-agent: warning: not PID 1 and cannot become a "
		      "subreaper; orphans will not be reaped\n", stderr);
	*out = sup;
	sup = NULL;
	rc = CIVIS_OK;
out:
	free(sup);
	return rc;
}

void
agent_sup_free(agent_sup *sup)
{
	if (sup == NULL)
		return;
	if (sup->sigfd >= 0)
		close(sup->sigfd);
	/* Signals stay blocked: one pending now (a late SIGTERM, a SIGPIPE of
	 * our last tee write) must not kill the agent and change its exit
	 * status on the way out. */
	free(sup);
}

int
agent_sup_signal_fd(const agent_sup *sup)
{
	return sup != NULL ? sup->sigfd : -1;
}

pid_t
agent_sup_child_pid(const agent_sup *sup)
{
	return sup != NULL ? sup->child : 0;
}

void
agent_sup_child_status(const agent_sup *sup, int *exited, int *exit_code)
{
	if (exited != NULL)
		*exited = sup != NULL && sup->exited;
	if (exit_code != NULL)
		*exit_code = (sup != NULL && sup->exited) ? sup->exit_code : 0;
}

int
agent_sup_child_signal(const agent_sup *sup)
{
	return sup != NULL ? sup->term_sig : 0;
}

void
agent_sup_child_usage(const agent_sup *sup, agent_sup_usage *out)
{
	uint64_t end;

	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (sup == NULL)
		return;
	out->orphans_reaped = sup->orphans;
	if (sup->t_start_ns == 0)
		return;
	end = sup->t_end_ns != 0 ? sup->t_end_ns : mono_ns();
	out->wall_ns = end > sup->t_start_ns ? end - sup->t_start_ns : 0;
	out->user_us = (uint64_t)sup->ru.ru_utime.tv_sec * 1000000ULL +
	               (uint64_t)sup->ru.ru_utime.tv_usec;
	out->sys_us = (uint64_t)sup->ru.ru_stime.tv_sec * 1000000ULL +
	              (uint64_t)sup->ru.ru_stime.tv_usec;
	out->maxrss_kb = sup->ru.ru_maxrss;
}

/* Record that the command could not be run. */
static void
set_failed(agent_sup *sup, int code)
{
	sup->exited = 1;
	sup->exit_code = code;
	sup->term_sig = 0;
}

/* In the forked child, up to exec: async-signal-safe calls only. */
static void
child_exec(const agent_sup *sup, char *const argv[], int out_w, int err_w,
           int report_w, int tty)
{
	struct exec_report rep;
	int sig;
	ssize_t w;

	/* Everything ignored at start stays ignored, the rest back to default
	 * (SIGPIPE included, whatever a library did to it). */
	for (sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sig_uncatchable(sig))
			continue;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = sigismember(&sup->start_ignored, sig) == 1 ?
		                SIG_IGN : SIG_DFL;
		sigemptyset(&sa.sa_mask);
		(void)sigaction(sig, &sa, NULL);
	}
	(void)setpgid(0, 0);
	/* Still blocked here, so SIGTTOU cannot stop us from the background. */
	if (tty)
		(void)tcsetpgrp(STDIN_FILENO, getpid());

	rep.stage = STAGE_DUP;
	/* out_w < 0: inherit_output, fds 1 and 2 are the agent's own */
	if (out_w >= 0 && (dup2(out_w, STDOUT_FILENO) < 0 || dup2(err_w, STDERR_FILENO) < 0))
		goto fail;
	(void)sigprocmask(SIG_SETMASK, &sup->start_mask, NULL);
	execvp(argv[0], argv);
	rep.stage = STAGE_EXEC;
fail:
	rep.err = errno;
	do {
		w = write(report_w, &rep, sizeof(rep));
	} while (w < 0 && errno == EINTR);
	_exit(rep.stage == STAGE_EXEC ? agent_sup_exec_exit_code(rep.err) : 126);
}

static void
close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Read end non-blocking, both ends as large as the system allows us. */
static void
tune_pipe(int rfd)
{
	int fl = fcntl(rfd, F_GETFL);

	if (fl >= 0)
		(void)fcntl(rfd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(rfd, F_SETPIPE_SZ, SUP_PIPE_SIZE);
}

/* The child reported (through the close-on-exec pipe) that it did not
 * reach exec: reap it now, so that the SIGCHLD left in the signalfd finds
 * nothing (ECHILD), and say why. Returns the spawn status. */
static int
not_executed(agent_sup *sup, pid_t pid, const char *cmd, const struct exec_report *r,
             char *err, size_t errlen)
{
	int st;

	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	sup->t_end_ns = mono_ns();
	if (r->stage == STAGE_EXEC) {
		struct stat sb;
		int is_dir = r->err == EACCES && strchr(cmd, '/') != NULL &&
		             stat(cmd, &sb) == 0 && S_ISDIR(sb.st_mode);
		if (err != NULL)
			agent_sup_exec_message(err, errlen, cmd, r->err, is_dir);
		set_failed(sup, agent_sup_exec_exit_code(r->err));
		return r->err == ENOENT ? CIVIS_ENOTFOUND : CIVIS_EINVAL;
	}
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "cannot run '%.*s': dup2: %s",
		         SUP_CMD_SHOWN, cmd, strerror(r->err));
	set_failed(sup, 126);
	return CIVIS_ESYS;
}

int
agent_sup_spawn(agent_sup *sup, char *const argv[], int *stdout_fd,
                int *stderr_fd, char *err, size_t errlen)
{
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, rep[2] = { -1, -1 };
	struct exec_report r;
	size_t got = 0;
	int rc, tty, e;
	pid_t pid;

	if (stdout_fd != NULL)
		*stdout_fd = -1;
	if (stderr_fd != NULL)
		*stderr_fd = -1;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (sup == NULL || argv == NULL || argv[0] == NULL || stdout_fd == NULL ||
	    stderr_fd == NULL || sup->child != 0 || sup->exited) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "cannot run the command: bad arguments");
		if (sup != NULL && !sup->exited && sup->child == 0)
			set_failed(sup, 126);
		return CIVIS_EINVAL;
	}
	if ((!sup->opts.inherit_output &&
	     (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0)) ||
	    pipe2(rep, O_CLOEXEC) != 0) {
		e = errno;
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "cannot run '%.*s': pipe: %s",
			         SUP_CMD_SHOWN, argv[0], strerror(e));
		set_failed(sup, 126);
		rc = CIVIS_ESYS;
		goto out;
	}
	if (!sup->opts.inherit_output) {
		tune_pipe(outp[0]);
		tune_pipe(errp[0]);
	}
	tty = isatty(STDIN_FILENO);

	sup->t_start_ns = mono_ns();
	pid = fork();
	if (pid < 0) {
		e = errno;
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "cannot run '%.*s': fork: %s",
			         SUP_CMD_SHOWN, argv[0], strerror(e));
		set_failed(sup, 126);
		rc = e == ENOMEM ? CIVIS_ENOMEM : CIVIS_ESYS;
		goto out;
	}
	if (pid == 0)
		child_exec(sup, argv, outp[1], errp[1], rep[1], tty);

	/* Whichever of us runs first, the group exists before we signal it. */
	(void)setpgid(pid, pid);
	sup->child = pid;
	sup->pgid = pid;
	close_fd(&outp[1]);
	close_fd(&errp[1]);
	close_fd(&rep[1]);

	/* EOF: exec succeeded (the pipe is close-on-exec). */
	while (got < sizeof(r)) {
		ssize_t n = read(rep[0], (char *)&r + got, sizeof(r) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < sizeof(r)) {
		*stdout_fd = outp[0];
		*stderr_fd = errp[0];
		outp[0] = errp[0] = -1;
		rc = CIVIS_OK;
		goto out;
	}

	rc = not_executed(sup, pid, argv[0], &r, err, errlen);
out:
	close_fd(&outp[0]);
	close_fd(&outp[1]);
	close_fd(&errp[0]);
	close_fd(&errp[1]);
	close_fd(&rep[0]);
	close_fd(&rep[1]);
	return rc;
}

/* wait4(-1) until nothing is left to reap; the command is recognised by pid
 * here, never from the siginfo (standard signals coalesce). */
static int
reap_all(agent_sup *sup, unsigned *events)
{
	for (;;) {
		struct rusage ru;
		int st;
		pid_t p = wait4(-1, &st, WNOHANG, &ru);

		if (p == 0)
			return CIVIS_OK;
		if (p < 0) {
			if (errno == EINTR)
				continue;
			return errno == ECHILD ? CIVIS_OK : CIVIS_ESYS;
		}
		if (p != sup->child || sup->child == 0 || sup->exited) {
			sup->orphans++;
			continue;
		}
		sup->exited = 1;
		sup->exit_code = agent_sup_status_code(st);
		sup->term_sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
		sup->ru = ru;
		sup->t_end_ns = mono_ns();
		*events |= AGENT_SUP_EV_CHILD_EXIT;
	}
}

/* SIGCONT to the stopped descendants in group pgrp (0: any) or with pid
 * (0: any). Without a usable /proc: SIGCONT to the group or pid as such
 * (harmless to a running process). */
static void
cont_stopped(agent_sup *sup, pid_t pgrp, pid_t pid)
{
	if (sup->proc_ok && agent_proctree_cont_stopped(NULL, sup->self, pgrp, pid) == CIVIS_OK)
		return;
	if (pid > 0)
		(void)kill(pid, SIGCONT);
	else if (pgrp > 0)
		(void)kill(-pgrp, SIGCONT);
}

/* Forward one signal: to the group, or to the command alone. A stopped
 * target of SIGTERM or SIGINT (docker stop) gets SIGCONT after it. */
static void
forward(agent_sup *sup, int sig)
{
	int cont = sig == SIGTERM || sig == SIGINT;

	if (sup->child == 0)
		return;
	if (sup->opts.signal_child_only) {
		if (!sup->exited && kill(sup->child, sig) == 0 && cont)
			cont_stopped(sup, 0, sup->child);
		return;
	}
	if (sup->group_gone)
		return;
	if (kill(-sup->pgid, sig) != 0) {
		if (errno == ESRCH)
			sup->group_gone = 1;
		return;
	}
	if (cont)
		cont_stopped(sup, sup->pgid, 0);
}

int
agent_sup_handle_signals(agent_sup *sup, unsigned *events)
{
	struct signalfd_siginfo si[SUP_SIGBATCH];
	unsigned ev = 0;
	int rc = CIVIS_OK;

	if (events != NULL)
		*events = 0;
	if (sup == NULL || sup->sigfd < 0)
		return CIVIS_EINVAL;
	for (;;) {
		ssize_t n = read(sup->sigfd, si, sizeof(si));
		size_t i, cnt;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				rc = CIVIS_ESYS;
			break;
		}
		if (n == 0)
			break;
		cnt = (size_t)n / sizeof(si[0]);
		for (i = 0; i < cnt; i++) {
			int sig = (int)si[i].ssi_signo;

			if (sig == SIGCHLD)
				continue;   /* only "go check": reaped below */
			/* Our own SIGPIPE/SIGXFSZ: not the command's business. */
			if ((pid_t)si[i].ssi_pid == sup->self &&
			    si[i].ssi_code == SI_USER)
				continue;
			if (sig == SIGTERM || sig == SIGINT)
				ev |= AGENT_SUP_EV_TERMINATE;
			forward(sup, sig);
		}
		if ((size_t)n < sizeof(si))
			break;
	}
	/* Reap on every call, SIGCHLD read or not: cheap, and nothing is lost
	 * if a SIGCHLD was consumed before the command was known. */
	if (reap_all(sup, &ev) != CIVIS_OK)
		rc = CIVIS_ESYS;
	if (events != NULL)
		*events = ev;
	return rc;
}

int
agent_sup_kill_group(agent_sup *sup, int sig)
{
	if (sup == NULL || sup->pgid <= 0)
		return CIVIS_EINVAL;
	if (sup->group_gone)
		return CIVIS_OK;
	if (kill(-sup->pgid, sig) != 0) {
		if (errno == ESRCH) {
			sup->group_gone = 1;
			return CIVIS_OK;
		}
		return CIVIS_ESYS;
	}
	return CIVIS_OK;
}

int
agent_sup_group_alive(agent_sup *sup)
{
	if (sup == NULL || sup->pgid <= 0 || sup->group_gone)
		return 0;
	if (kill(-sup->pgid, 0) == 0 || errno == EPERM)
		return 1;
	if (errno == ESRCH)
		sup->group_gone = 1;
	return 0;
}

int
agent_sup_terminate(agent_sup *sup)
{
	int rc = agent_sup_kill_group(sup, SIGTERM);

	if (rc == CIVIS_OK && !sup->group_gone)
		cont_stopped(sup, sup->pgid, 0);
	return rc;
}

int
agent_sup_kill_rest(agent_sup *sup, int sig)
{
	int cont = sig != SIGKILL && sig != SIGCONT;

	if (sup == NULL || sup->child == 0)
		return CIVIS_EINVAL;
	if (agent_proctree_no_children())
		return CIVIS_OK;
	if (sup->proc_ok && agent_proctree_kill(NULL, sup->self, sig, cont) == CIVIS_OK)
		return CIVIS_OK;
	/* No /proc of ours: as PID 1, everything in the namespace but us is
	 * ours; else the command's group is all we can name. */
	if (sup->self == 1) {
		if (kill(-1, sig) != 0 && errno != ESRCH)
			return CIVIS_ESYS;
		if (cont)
			(void)kill(-1, SIGCONT);
		return CIVIS_OK;
	}
	if (agent_sup_kill_group(sup, sig) != CIVIS_OK)
		return CIVIS_ESYS;
	if (cont)
		(void)agent_sup_kill_group(sup, SIGCONT);
	return CIVIS_OK;
}

/* Running descendants; with own_zombies also the zombies we still have to
 * reap (they are gone only once reaped). */
static size_t
rest_count(agent_sup *sup, int own_zombies)
{
	size_t n;

	if (sup == NULL || sup->child == 0 || agent_proctree_no_children())
		return 0;
	if (sup->proc_ok && agent_proctree_count(NULL, sup->self, own_zombies, &n) == CIVIS_OK)
		return n;
	return (size_t)agent_sup_group_alive(sup);
}

size_t
agent_sup_rest_alive(agent_sup *sup)
{
	return rest_count(sup, 0);
}

/* agent_sup_wait_group() and agent_sup_wait_rest(). */
static int
wait_for(agent_sup *sup, uint64_t max_ns, int rest)
{
	uint64_t end = mono_ns() + max_ns;

	if (sup == NULL)
		return 1;
	for (;;) {
		struct pollfd p = { sup->sigfd, POLLIN, 0 };
		uint64_t now;
		int ms;

		(void)agent_sup_handle_signals(sup, NULL);
		if (rest ? rest_count(sup, 1) == 0 : !agent_sup_group_alive(sup))
			return 1;
		now = mono_ns();
		if (now >= end)
			return 0;
		/* Wake on the next SIGCHLD, and poll now and then regardless. */
		ms = (int)((end - now) / 1000000ULL) + 1;
		(void)poll(&p, 1, ms < 20 ? ms : 20);
	}
}

int
agent_sup_wait_group(agent_sup *sup, uint64_t max_ns)
{
	return wait_for(sup, max_ns, 0);
}

int
agent_sup_wait_rest(agent_sup *sup, uint64_t max_ns)
{
	return wait_for(sup, max_ns, 1);
}
