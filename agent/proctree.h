/* proctree.h: the agent's descendants, read from /proc.
 *
 * The agent is PID 1 or a child subreaper, so every process the command
 * left behind (a daemon that called setsid, a shell's background job) has
 * its ppid chain end at the agent: an orphan is reparented to it. A scan
 * reads /proc/<pid>/stat of every process once and keeps those whose chain
 * reaches root. The snapshot is not atomic; agent_proctree_signal()
 * re-checks each process's start time through a pidfd before it signals,
 * so a pid reused since the scan is never hit. */
#ifndef AGENT_PROCTREE_H
#define AGENT_PROCTREE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_PROCTREE_MAX 262144   /* processes read per scan, at most */

typedef struct agent_proc {
	pid_t pid;
	pid_t ppid;
	pid_t pgrp;
	char state;                 /* R, S, D, T (stopped), t (traced), Z, X, ... */
	uint64_t start;             /* start time in clock ticks since boot */
} agent_proc;

typedef struct agent_proctree {
	agent_proc *v;              /* root's descendants, parents before children */
	size_t n;
	int truncated;              /* more than AGENT_PROCTREE_MAX processes: some unseen */
} agent_proctree;

/* Scan proc_root ("/proc" when NULL) for the descendants of root (root
 * excluded, zombies included). t is cleared on entry. Returns CIVIS_OK,
 * CIVIS_ESYS when proc_root cannot be read, CIVIS_ENOMEM. */
int  agent_proctree_scan(agent_proctree *t, const char *proc_root, pid_t root);
void agent_proctree_dispose(agent_proctree *t);

/* Processes of t that run (not zombies, not dead). */
size_t agent_proctree_alive(const agent_proctree *t);

/* sig to every running process of t, and SIGCONT to those stopped (state
 * T) when cont is set, so a handler of sig can run. A process is signalled
 * only while its pid still names the one scanned (same start time); with
 * proc_root NULL, "/proc". Returns how many got sig. */
size_t agent_proctree_signal(const agent_proctree *t, const char *proc_root, int sig, int cont);

/* Parse the text of /proc/<pid>/stat (len bytes, need not be terminated):
 * "pid (comm) state ppid pgrp ... starttime(22nd field) ...". The command
 * name may hold spaces and parentheses. 0, or -1 when malformed. */
int  agent_proctree_parse_stat(const char *buf, size_t len, agent_proc *out);

/* The calling process has no child at all, not even a zombie: then it has
 * no descendant either (each has a chain of parents ending at one of its
 * children), and no scan is needed. */
int  agent_proctree_no_children(void);

/* Scan, then agent_proctree_signal(sig, cont) on root's descendants. */
int  agent_proctree_kill(const char *proc_root, pid_t root, int sig, int cont);

/* Scan, then SIGCONT to the stopped descendants of root in process group
 * pgrp (0: any) or with pid (0: any). */
int  agent_proctree_cont_stopped(const char *proc_root, pid_t root, pid_t pgrp, pid_t pid);

/* Scan: how many descendants of root run (*n), plus with own_zombies the
 * zombies that are root's own children (not reaped yet). */
int  agent_proctree_count(const char *proc_root, pid_t root, int own_zombies, size_t *n);

/* The three return CIVIS_OK, or the scan's error (nothing was done). */

/* 1 when proc_root's "self" is this process as getpid() sees it: /proc is
 * mounted for our PID namespace, so its pids are ours. */
int  agent_proctree_usable(const char *proc_root);

#endif
