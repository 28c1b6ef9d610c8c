/* logstream.h: the command's output, copied through and streamed to the run log.
 *
 * Per stream: read -> tee (byte exact) -> redact -> split into lines ->
 * civis_run_log() (the run batches, queues and sends them: civis/run.h).
 * Reading never waits on the network. */
#ifndef AGENT_LOGSTREAM_H
#define AGENT_LOGSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "civis/client.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"

typedef struct agent_logstream agent_logstream;

enum { AGENT_STDOUT = 0, AGENT_STDERR = 1 };

typedef struct agent_logstream_opts {
	int tee;                    /* copy to tee_fd */
	int redact_tee;             /* mask secrets in the copy too */
	int verbose;
	const char *level[2];       /* run-log level of stdout, stderr lines */
	int detect_levels;          /* a line's own level word (civis/level.h) wins */
	uint64_t flush_ns;          /* a partial line goes once its stream was idle this long */
	size_t line_max;
	const char *spool_dir;      /* also where the flood backlog file goes */
	uint64_t backlog_max;       /* the flood backlog's cap (main: --spool-max); 0: 1 GiB */
	const civis_redact *redact; /* may be NULL */
	civis_run *run;             /* gets every message (civis_run_log); NULL: tee only */
	/* Told every message that goes to the run log, after masking, the
	 * agent's own notes included (with the API on; none in tee-only mode).
	 * msg is not NUL-terminated and valid only during the call. */
	void (*on_message)(void *ud, const char *level, const char *msg, size_t len);
	void *on_message_ud;
} agent_logstream_opts;

/* lines and bytes are the log stream's; the rest is the run's
 * (civis_run_log_stats), here for one place to read them. */
typedef struct agent_logstream_stats {
	uint64_t lines;             /* messages made from the command's output */
	uint64_t bytes;             /* bytes read from the command */
	uint64_t delivered;         /* messages the API acknowledged */
	uint64_t undelivered;       /* messages still queued or in flight */
	uint64_t dropped;           /* messages dropped (spool cap, rejected batches) */
	uint64_t requests;          /* log requests acknowledged */
	uint64_t ambiguous;         /* tries that may have been stored twice */
	uint64_t spool_bytes;       /* spool file's disk use at its largest */
	uint64_t mem_peak;          /* log queue memory at its largest */
	uint64_t backlog_peak;      /* raw output waiting in the backlog file, at its largest */
	uint64_t backlog_cap;       /* its cap (--spool-max) */
	uint64_t backlog_pauses;    /* times the cap paused reading (nothing is dropped) */
	uint64_t backlog_paused_ns; /* how long, in all */
} agent_logstream_stats;

int  agent_logstream_new(agent_logstream **out, civis_loop *loop,
                         const agent_logstream_opts *o, char *err, size_t errlen);
void agent_logstream_free(agent_logstream *ls);

/* Read `fd` (non-blocking) as stream AGENT_STDOUT/AGENT_STDERR, copying to
 * tee_fd. The logstream closes fd at EOF or at agent_logstream_close_pipes. */
int  agent_logstream_add_pipe(agent_logstream *ls, int stream, int fd, int tee_fd);

/* The agent's own message: to stderr ("civis-agent: text") and, with the
 * API on, to the run log at `level`. The whole formatted text (up to 1 MiB)
 * is masked first and only then cut to 2,047 bytes, so a secret crossing the
 * cut never shows its start: callers pass user strings whole (never cut
 * into a fixed buffer first). */
void agent_logstream_note(agent_logstream *ls, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same, only to the run log ("civis-agent: " is prepended). */
void agent_logstream_note_log_onlyf(agent_logstream *ls, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Only to the run log, text as it is (for the summary line and notes
 * already on stderr); masked, then cut, likewise. */
void agent_logstream_note_log_only(agent_logstream *ls, const char *level, const char *text);

/* Both pipes reached EOF (or were closed). */
int  agent_logstream_eof(const agent_logstream *ls);
/* Read what is left without blocking, then stop reading (drain deadline). */
void agent_logstream_close_pipes(agent_logstream *ls);
/* Emit partial lines and held-back bytes, seal the open batch: call once the
 * pipes are done, before waiting for delivery. */
void agent_logstream_finish(agent_logstream *ls);
/* Nothing left to deliver (or the API is off / rejected the key). */
int  agent_logstream_idle(const agent_logstream *ls);
void agent_logstream_stats_get(const agent_logstream *ls, agent_logstream_stats *st);

#endif
