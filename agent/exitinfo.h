/* exitinfo.h: why the command ended, in words a person reads.
 *
 *  - The container's limits, from its cgroup: memory limit and peak, CPU
 *    quota (v2: memory.max, memory.peak, cpu.max; v1: memory.limit_in_bytes
 *    and hierarchical_memory_limit, memory.max_usage_in_bytes,
 *    cpu.cfs_quota_us / cpu.cfs_period_us), under --cgroup-root
 *    (/sys/fs/cgroup) at the path /proc/self/cgroup names, else at the
 *    root itself (a container's own cgroup namespace).
 *  - An OOM kill: the kernel's oom_kill count (v2 memory.events, v1
 *    memory.oom_control) read before the command starts and after it
 *    ended; without a count, a SIGKILL with the memory peak at the limit.
 *    Said with the platform's own words, which civis-python's
 *    ContainerFuture looks for at the start of an error line:
 *    "Process ran out of its allowed N MiB of memory and was killed."
 *  - The Kubernetes termination log (/dev/termination-log, only when it
 *    exists and is writable: never created): the last error lines of the
 *    run log and the summary, at most 4096 bytes.
 *
 * The last error lines come from agent_exitinfo_feed(), called for every
 * message of the run log (the log stream's on_message). */
#ifndef AGENT_EXITINFO_H
#define AGENT_EXITINFO_H

#include <stddef.h>
#include <stdint.h>

#define AGENT_EXITINFO_LINES    10      /* last error lines kept */
#define AGENT_EXITINFO_LINE_MAX 512     /* bytes kept of each */
#define AGENT_TERMLOG_MAX       4096    /* Kubernetes reads at most this much */

typedef struct agent_limits {
	int version;              /* cgroup 2 or 1; 0: no cgroup files found */
	uint64_t mem_max;         /* bytes; 0: no limit */
	uint64_t mem_peak;        /* bytes; 0: not known */
	int has_oom_count;        /* the kernel counts OOM kills here */
	uint64_t oom_kills;
	uint64_t cpu_quota_us;    /* 0: no quota */
	uint64_t cpu_period_us;
} agent_limits;

/* Read the limits under root ("/sys/fs/cgroup" when NULL) for the cgroup
 * that proc_cgroup ("/proc/self/cgroup" when NULL) names. Never fails: what
 * cannot be read stays 0. */
void agent_limits_read(const char *root, const char *proc_cgroup, agent_limits *out);

/* The path of controller ("memory", "cpu"; "" for the v2 line "0::") in
 * the text of /proc/self/cgroup, into out. 0, or -1 when absent. */
int  agent_cgroup_path(const char *text, const char *controller, char *out, size_t outlen);

typedef struct agent_exitinfo agent_exitinfo;

/* Once the command runs (right after the spawn: the command does not wait
 * for these reads): read the limits and the OOM count to compare with.
 * cgroup_root and termlog may be NULL (the defaults); termlog "" turns the
 * termination log off. CIVIS_OK or CIVIS_ENOMEM. */
int  agent_exitinfo_new(agent_exitinfo **out, const char *cgroup_root, const char *termlog);
void agent_exitinfo_free(agent_exitinfo *ei);

/* After the command ended (term_sig: the signal that killed it, 0 if
 * none; maxrss_kb its peak RSS): read the memory peak and the OOM count
 * again (the limits are those of the start) and decide. */
void agent_exitinfo_ended(agent_exitinfo *ei, int term_sig, long maxrss_kb);

/* The platform's OOM line ("Process ran out of its allowed 64 MiB of memory
 * and was killed."), or NULL when the command was not killed for memory. */
const char *agent_exitinfo_oom_line(const agent_exitinfo *ei);

/* OOM kills among the command's other processes (the command itself not
 * killed for memory): how many, 0 if none. */
uint64_t agent_exitinfo_other_oom_kills(const agent_exitinfo *ei);

/* "memory limit 64 MiB (peak 63.9 MiB), CPU quota 1.50 CPUs", the parts
 * that are set; "" when none. Returns the length. */
size_t agent_exitinfo_limits_text(const agent_exitinfo *ei, char *buf, size_t len);

/* One message of the run log (after masking); error and fatal ones are
 * kept, the last AGENT_EXITINFO_LINES of them. ud is the agent_exitinfo:
 * the log stream's on_message signature. */
void agent_exitinfo_feed(void *ud, const char *level, const char *msg, size_t len);

/* The termination log termlog (NULL: the default; "": off) would be
 * written at exit: it exists, is a regular file and opens for writing.
 * Asked before the command starts (no agent_exitinfo yet): where it
 * would not, nothing needs the command's output for it. */
int  agent_exitinfo_termlog_usable(const char *termlog);

/* Write the last error lines and then summary (one line; NULL: the one
 * given before) to the termination log, replacing what was there, when it
 * exists, is a regular file and is writable. 1 written, 0 not there or
 * off, -1 a write failed. */
int  agent_exitinfo_write_termlog(agent_exitinfo *ei, const char *summary);

#endif
