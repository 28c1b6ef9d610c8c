/* logstream_int.h: what the log stream's files share (private to agent/).
 *
 * logstream.c  the coordinator: reading the pipes, handing each message to
 *              the run (civis_run_log), the flush tick, life and stats;
 * tee.c        the byte-exact copy of each pipe to the agent's stdout/stderr;
 * backlog.c    during a flood, raw reads kept in an unlinked file and made
 *              into lines in slices;
 * lines.c      masking, splitting into lines, partial-line flushes and the
 *              agent's own notes: every message leaves through
 *              agent_ls_emit(). */
#ifndef AGENT_LOGSTREAM_INT_H
#define AGENT_LOGSTREAM_INT_H

#include <stddef.h>
#include <stdint.h>

#include "civis/civis.h"
#include "civis/linebuf.h"
#include "civis/logbatch.h"
#include "civis/run.h"
#include "logstream.h"

#define READ_BUF      (256u << 10)  /* one read from a pipe at most */
#define READS_PER_EV  4             /* reads per readiness, so one stream can't starve the rest */
#define BACKLOG_MIN_READ (16u << 10) /* reads this big go through the backlog */
#define NOTE_MAX      2048
#define ROOM_POLL_NS  10000000ULL   /* run log full: look for room this often */

struct stream {
	agent_logstream *ls;
	int id;                     /* AGENT_STDOUT / AGENT_STDERR */
	int fd;                     /* -1 once at EOF or closed */
	int tee_fd;                 /* -1: no copy */
	civis_redact_stream *rs;    /* mask for the run log */
	civis_redact_stream *tee_rs;/* mask for the copy, with --redact-tee */
	civis_linebuf *lb;
	/* The tee's bytes its reader has not taken yet (tee.c): while there
	 * are any, the pipe is not read, so the command waits, as under cat. */
	char *tee_buf;
	size_t tee_off, tee_len, tee_cap;
	int tee_watch;              /* POLLOUT watch on tee_fd is on */
	int tee_own;                /* tee_fd is our own reopening: close it */
	int tee_saved_fl;           /* file status flags to restore, or -1 */
	uint64_t partial_since;     /* when a partial line or held bytes started waiting */
	uint64_t last_in;           /* monotonic time bytes last arrived from the pipe */
	uint64_t read_ns;           /* realtime of the read being processed */
	int finished;               /* its last line went out */
	const char *line_level;     /* the level of a line whose pieces go on */
};

struct agent_logstream {
	agent_logstream_opts o;
	civis_loop *loop;
	civis_run *run;             /* NULL: tee only */
	struct stream st[2];
	civis_timer_id tick;
	char *readbuf;
	/* The backlog: during a flood, reads are copied as they come (tee) and
	 * appended raw, with their read time, to an unlinked file; lines are
	 * made from it in slices between reads, so the command never waits on
	 * the line/JSON/redaction work. Empty: reads are processed at once. */
	int bl_fd;                  /* -1 until first needed */
	uint64_t bl_woff, bl_roff;
	uint64_t bl_peak;
	int bl_broken;              /* cannot write it: process inline */
	/* Raw output on disk is capped (at --spool-max): at the cap the pipes
	 * are not read until the backlog is down to half, so the command waits
	 * on line making, and nothing is dropped (a dropped stretch of raw
	 * bytes could also cut a secret and show its ends). */
	uint64_t bl_cap;
	int bl_full;                /* at the cap: the pipes are paused */
	uint64_t bl_full_since;     /* monotonic */
	uint64_t bl_full_times, bl_full_ns;
	int bl_said;                /* the closing note about the cap went out */
	civis_timer_id bl_timer;
	uint64_t bl_last_slice;     /* monotonic time of the last backlog slice */
	uint64_t last_read;         /* monotonic time of the last read with data */
	int tee_broken[2];
	/* The run log is full (memory only, no spool: civis_run_log_full):
	 * the pipes are not read, so the command waits, until acks free
	 * memory; this timer looks again. */
	civis_timer_id room_timer;
	int run_paused;             /* paused for it, until room_timer saw room */
	agent_logstream_stats stats;
};

/* logstream.c: read s's pipe or pause it, as its tee, the backlog and the
 * run log allow. */
void agent_ls_reading(struct stream *s);
/* s's pipe must not be read now: its copy is stalled, the backlog is at
 * its cap or the run log is full. */
int  agent_ls_paused(const struct stream *s);
/* The run log takes no more for now (memory only and full). */
int  agent_ls_run_full(const agent_logstream *ls);
/* logstream.c: the one way out of a finished (masked) message: told to
 * on_message, then handed to the run (civis_run_log). */
void agent_ls_emit(agent_logstream *ls, const char *level, const char *msg, size_t len,
                   uint64_t read_ns);

/* tee.c */
/* Copy s's output to fd from now on; see tee.c for when fd is made
 * non-blocking. */
void agent_tee_setup(struct stream *s, int fd);
#ifdef CIVIS_UNITTEST
void agent_tee__no_reopen(int on);
#endif
/* The copy has bytes its reader has not taken (s's pipe is paused). */
int  agent_tee_stalled(const struct stream *s);
/* Write what is left, waiting as long as the reader is there (the end of
 * the agent: nothing else to do), then undo agent_tee_setup. */
void agent_tee_free(struct stream *s);
/* Copy one read of s to its tee fd (masked with --redact-tee). */
void agent_tee_copy(struct stream *s, const char *data, size_t len);
/* An agent note for stderr while stderr's copy is stalled: queued behind
 * the command's bytes (1), so that it neither blocks nor jumps ahead;
 * 0: write it to stderr yourself. */
int  agent_tee_note(agent_logstream *ls, const char *text, size_t len);
/* The stream ended: what the tee's masker holds goes out. */
void agent_tee_end(struct stream *s);

/* backlog.c */
/* Append one read of s; -1 when it cannot (then process it inline). */
int  agent_backlog_append(struct stream *s, const char *data, size_t len);
/* Make lines from up to `budget` bytes of the backlog (UINT64_MAX: all). */
void agent_backlog_drain(agent_logstream *ls, uint64_t budget);
int  agent_backlog_empty(const agent_logstream *ls);
/* At its cap: the pipes must not be read (see bl_cap). */
int  agent_backlog_full(const agent_logstream *ls);
void agent_backlog_drain_before(struct stream *s, const char *data, size_t len);
/* The pipes are closed: say in the run log what the cap did, if anything. */
void agent_backlog_report(agent_logstream *ls);
void agent_backlog_free(agent_logstream *ls);

/* lines.c */
/* Mask and split data read from s (at s->read_ns) into messages. */
void agent_lines_feed(struct stream *s, const char *data, size_t len);
/* Push out held bytes and the partial line of s. */
void agent_lines_flush(struct stream *s);
/* End of s's text: everything held goes, as the last piece of its line
 * (once; nothing without the API). */
void agent_lines_finish(struct stream *s);

#endif
