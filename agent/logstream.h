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
	uint64_t flush_ns;          /* partial lines wait half of this */
	size_t line_max;
	const char *spool_dir;      /* where the flood backlog file goes */
	const civis_redact *redact; /* may be NULL */
	civis_run *run;             /* gets every message; NULL: tee only */
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
} agent_logstream_stats;

int  agent_logstream_new(agent_logstream **out, civis_loop *loop,
                         const agent_logstream_opts *o, char *err, size_t errlen);
void agent_logstream_free(agent_logstream *ls);

/* Read `fd` (non-blocking) as stream AGENT_STDOUT/AGENT_STDERR, copying to
 * tee_fd. The logstream closes fd at EOF or at agent_logstream_close_pipes. */
int  agent_logstream_add_pipe(agent_logstream *ls, int stream, int fd, int tee_fd);

/* The agent's own message: to stderr ("civis-agent: text") and, with the
 * API on, to the run log at `level`. Secrets are masked in both. */
void agent_logstream_note(agent_logstream *ls, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Only to the run log (for the summary line and notes already on stderr). */
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
