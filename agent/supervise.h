/* supervise.h: the agent as PID 1 (or as a subreaper): spawn the command,
 * forward signals, reap every zombie, compute the exit status.
 *
 * Modelled on tini. All PID-1 logic lives in supervise.c and nowhere else.
 * The API is loop-agnostic: watch agent_sup_signal_fd() for POLLIN and call
 * agent_sup_handle_signals() when it is readable; the command's output comes
 * back as two non-blocking pipe read ends.
 *
 * Signals. agent_sup_init() blocks every signal but SIGKILL/SIGSTOP and reads
 * them from a signalfd. That includes SIGSEGV, SIGBUS, SIGFPE, SIGILL,
 * SIGABRT, SIGTRAP and SIGSYS: a real fault is forced on the process by the
 * kernel even when blocked (it unblocks it and kills), so blocking costs no
 * safety and lets a `kill -SEGV` aimed at the agent reach the command like
 * every other signal. SIGPIPE, SIGTTIN and SIGTTOU are blocked rather than
 * ignored: for the agent a blocked SIGPIPE is as harmless as an ignored one
 * (write() returns EPIPE) and a blocked SIGTTIN/SIGTTOU makes terminal I/O
 * from the background behave as if ignored, while a `kill` of them still
 * reaches the command. Signals the agent generates on itself (SIGPIPE or
 * SIGXFSZ from its own writes) are recognised by the sender pid and never
 * forwarded. Signals that were ignored when the agent started stay ignored,
 * in the agent (they are not forwarded) and in the command.
 *
 * Do not install signal handlers or change the signal mask elsewhere in the
 * agent, and create threads only after agent_sup_init() so they inherit the
 * blocked mask. One agent_sup per process. */
#ifndef AGENT_SUPERVISE_H
#define AGENT_SUPERVISE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct agent_sup agent_sup;

typedef struct agent_sup_opts {
	/* 0 (default): forwarded signals go to the command's process group,
	 * kill(-pgid, sig), so a shell's children get them too (tini -g,
	 * dumb-init). 1: forwarded signals go to the command's pid only
	 * (tini's default); after the command has exited they are dropped.
	 * Either way the command runs in its own process group, and
	 * agent_sup_terminate() and agent_sup_kill_group() address the group. */
	int signal_child_only;
	/* 1: do not print the subreaper warning (tests). */
	int quiet;
	/* 1: the command writes straight to the agent's own stdout and
	 * stderr (tini's way): no pipes, agent_sup_spawn() returns -1 for
	 * both. For when nothing in the agent needs the output. */
	int inherit_output;
} agent_sup_opts;

/* Bits reported by agent_sup_handle_signals(). */
enum {
	AGENT_SUP_EV_TERMINATE = 1 << 0, /* SIGTERM or SIGINT arrived (and was forwarded) */
	AGENT_SUP_EV_CHILD_EXIT = 1 << 1 /* the command exited during this call */
};

/* Resource usage of the command, for the run summary. */
typedef struct agent_sup_usage {
	uint64_t wall_ns;         /* spawn to reap (so far, while it runs) */
	uint64_t user_us;         /* CPU of the command and its waited-for children */
	uint64_t sys_us;
	long     maxrss_kb;       /* peak RSS (ru_maxrss), 0 while it runs */
	uint64_t orphans_reaped;  /* other processes reaped: the command's orphans */
} agent_sup_usage;

/* Record the signal mask and ignored set the agent was started with (for the
 * command), block every signal, open the signalfd, make sure fds 0-2 are
 * open (on /dev/null if they were closed) and, unless PID 1, become a child
 * subreaper (warns on stderr when that fails). o may be NULL (defaults).
 * Returns CIVIS_OK, CIVIS_ENOMEM or CIVIS_ESYS. */
int agent_sup_init(agent_sup **out, const agent_sup_opts *o);

/* Close the signalfd. Signals stay blocked (so a late one cannot change the
 * agent's exit status); the process is expected to exit. Does not touch the
 * command. NULL is fine. */
void agent_sup_free(agent_sup *sup);

/* The signalfd (non-blocking, close-on-exec): watch it for POLLIN. */
int agent_sup_signal_fd(const agent_sup *sup);

/* Start argv (argv[0] looked up in PATH like execvp) in its own process
 * group, stdin inherited, stdout and stderr on two pipes whose read ends
 * (non-blocking, close-on-exec, 1 MiB when allowed) are returned in
 * *stdout_fd and *stderr_fd; the caller reads and closes them. With
 * inherit_output, stdout and stderr are inherited too and both are -1.
 *
 * Returns CIVIS_OK once the command has been executed. On failure it returns
 * CIVIS_ENOTFOUND (command not found: exit code 127), CIVIS_EINVAL (found but
 * cannot be executed: 126) or CIVIS_ESYS/CIVIS_ENOMEM (pipe/fork failed:
 * 126), err holds one line without the "civis-agent: " prefix and without a
 * newline, e.g. "cannot run 'foo': No such file or directory", and
 * agent_sup_child_status() already reports the exit code to use. Only one
 * command per agent_sup. */
int agent_sup_spawn(agent_sup *sup, char *const argv[], int *stdout_fd,
                    int *stderr_fd, char *err, size_t errlen);

/* Read every pending signal. SIGCHLD: reap with wait4(-1, WNOHANG) until
 * nothing is left, recognising the command by pid inside that loop. Every
 * other signal is forwarded once (see signal_child_only); nothing is
 * forwarded before the command exists. *events (may be NULL) gets
 * AGENT_SUP_EV_* bits. Returns CIVIS_OK or CIVIS_ESYS. */
int agent_sup_handle_signals(agent_sup *sup, unsigned *events);

/* The command's pid (0 before spawn) and process group id. */
pid_t agent_sup_child_pid(const agent_sup *sup);

/* *exited = 1 once the command was reaped (or could not be run); then
 * *exit_code is what a shell would report: the status for a normal exit,
 * 128+N when killed by signal N, 127/126 when it could not be run. Either
 * out-param may be NULL. */
void agent_sup_child_status(const agent_sup *sup, int *exited, int *exit_code);

/* The signal that killed the command, 0 if none. */
int agent_sup_child_signal(const agent_sup *sup);

void agent_sup_child_usage(const agent_sup *sup, agent_sup_usage *out);

/* Send sig to the command's process group. CIVIS_OK also when the group is
 * already gone (ESRCH). */
int agent_sup_kill_group(agent_sup *sup, int sig);

/* 1 while any process of the command's group is alive, else 0. */
int agent_sup_group_alive(agent_sup *sup);

/* Cancellation: SIGTERM to the whole group, then SIGCONT to the members
 * that are stopped (SIGTSTP), so their handlers run (main.c sends SIGKILL
 * through agent_sup_kill_rest() after its grace period). A forwarded
 * SIGTERM or SIGINT (docker stop) does the same for its targets. */
int agent_sup_terminate(agent_sup *sup);

/* sig to every descendant of the agent, the command's group or not (a
 * daemon that called setsid, an orphan reparented to us), found through
 * /proc (proctree.h); after any sig but SIGKILL/SIGCONT the stopped ones
 * also get SIGCONT. Without a /proc of our PID namespace: kill(-1) as PID
 * 1, else the command's group. CIVIS_OK, CIVIS_EINVAL before spawn. */
int agent_sup_kill_rest(agent_sup *sup, int sig);

/* How many descendants of the agent still run (zombies not counted). 0
 * before spawn. */
size_t agent_sup_rest_alive(agent_sup *sup);

/* At exit, after the last SIGKILL: handle signals (reaping, forwarding) until
 * no process of the command's group is left, at most max_ns. Blocks. Returns
 * 1 when the group is gone (and every member reaped), 0 on timeout. Without
 * it a member killed just before exit becomes a zombie of the system's init
 * when the agent is not PID 1. */
int agent_sup_wait_group(agent_sup *sup, uint64_t max_ns);
/* The same until no descendant runs and every zombie child is reaped. */
int agent_sup_wait_rest(agent_sup *sup, uint64_t max_ns);

/* Shell exit code from a wait status: WEXITSTATUS, or 128+signal. */
int agent_sup_status_code(int wstatus);

/* --exit-code-remap: code if it is not in remap[0..n), else 0. */
int agent_sup_remap_exit(int code, const int *remap, size_t n);

/* Exit code for a failed exec: 127 for ENOENT, 126 otherwise. */
int agent_sup_exec_exit_code(int err);

/* The one-line exec failure text for cmd and errno err ("cannot run 'cmd':
 * No such file or directory"); is_dir says cmd names a directory. cmd is
 * capped and its control bytes shown as '?'. Returns the length written. */
size_t agent_sup_exec_message(char *buf, size_t len, const char *cmd, int err,
                              int is_dir);

/* Documented behaviour after the command has exited while processes it
 * started still run (a background job of a shell, a daemon that called
 * setsid, in the command's process group or not): main.c says how many,
 * calls agent_sup_kill_rest(sup, SIGTERM) right away (stopped ones get
 * SIGCONT too), keeps draining the pipes, and calls
 * agent_sup_kill_rest(sup, SIGKILL) after the grace period (--grace-period,
 * 10 s) if agent_sup_rest_alive() is still not 0, then agent_sup_wait_rest()
 * before exiting so the killed ones are reaped. The same whether the agent
 * is PID 1 or a subreaper. The agent's exit code stays the command's. */

#endif
