/* options.h: the command line and its CIVIS_AGENT_* environment twins. */
#ifndef AGENT_OPTIONS_H
#define AGENT_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AGENT_MAX_LIST 64          /* --redact, --archive, -e: at most this many */

enum { AGENT_OPTS_RUN = 0, AGENT_OPTS_HELP = 1, AGENT_OPTS_VERSION = 2 };

typedef struct agent_opts {
	int verbose;
	int tee;                   /* copy the command's output to our stdout/stderr */
	int signal_child_only;     /* forward signals to the command, not its group */
	uint64_t grace_ns;
	/* logs */
	char stdout_level[8];
	char stderr_level[8];
	int detect_levels;         /* a line's own level word wins (--no-detect-levels) */
	uint64_t flush_ns;
	uint64_t final_flush_ns;
	uint64_t line_max;
	uint64_t batch_lines;
	uint64_t batch_bytes;
	uint64_t log_mem_max;
	uint64_t spool_max;
	const char *spool_dir;     /* NULL: $TMPDIR or /tmp */
	/* heartbeats, cancellation */
	uint64_t heartbeat_ns;
	uint64_t cancel_poll_ns;
	unsigned api_budget_pct;   /* share of the API rate limit, 1-100; 0: no budget */
	unsigned api_rate_limit;   /* --api-budget PCT:LIMIT/WINDOW; 0: the API's (1,000) */
	uint64_t api_rate_window_ns; /* 0: 5 minutes */
	int report_state;          /* PATCH the run's state (--report-state) */
	/* exit status */
	unsigned char remap[256];  /* remap[n] = 1: status n becomes 0 */
	const char *cgroup_root;   /* NULL: /sys/fs/cgroup */
	const char *termination_log; /* NULL: /dev/termination-log; "": off */
	/* redaction */
	const char *redact[AGENT_MAX_LIST];
	size_t nredact;
	int default_redact;
	int redact_tee;
	/* outputs */
	const char *output_dir;
	const char *archives[AGENT_MAX_LIST];
	size_t narchives;
	int archive_dirs;
	int gzip;
	const char *expires_at;
	const char *json_output_name; /* CIVIS_OUTPUT's JSON value; NULL: "outputs" */
	uint64_t multipart_threshold;
	uint64_t upload_concurrency;
	/* the command */
	char **argv;
	int argc;
	/* strings split from environment lists live here */
	char *owned[4];
} agent_opts;

typedef const char *(*agent_getenv_fn)(const char *name, void *ud);

/* Parse argv (argv[0] is the program) and the environment (through get,
 * getenv when NULL). Options stop at the first non-option word. Returns
 * AGENT_OPTS_RUN, AGENT_OPTS_HELP, AGENT_OPTS_VERSION, or -1 with a one-line
 * message in err. On success o->argv is the command (NULL-terminated). */
int  agent_opts_parse(agent_opts *o, int argc, char **argv, agent_getenv_fn get,
                      void *ud, char *err, size_t errlen);
void agent_opts_dispose(agent_opts *o);
void agent_opts_usage(FILE *f);

/* "1.5", "250ms", "30s", "2m", "1h" -> nanoseconds. */
int  agent_parse_duration(const char *s, uint64_t *out_ns);
/* "1048576", "64K", "1M", "1G", "1KiB"... (binary units) -> bytes. */
int  agent_parse_size(const char *s, uint64_t *out);
/* RFC 3339 with a Z or +hh:mm offset, or "never". */
int  agent_check_expires_at(const char *s);

#endif
