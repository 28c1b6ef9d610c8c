/* outputs_int.h: what the output-directory modules share; private to agent/.
 *
 *   outputs.c           lifecycle (new, command exited, idle, free), the
 *                       entry table and the upload queue
 *   outputs_watch.c     inotify while the command runs
 *   outputs_schedule.c  starting uploads (at most AGENT_OUTPUTS_MAX_INFLIGHT)
 *                       and their outcome
 *   outputs_register.c  registration once everything is uploaded
 *   outputs_scan.c      classify a path (and open it), walk the tree
 *   outputs_name.c      Civis names, --archive values, quoting for messages */
#ifndef AGENT_OUTPUTS_INT_H
#define AGENT_OUTPUTS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "civis/upload.h"
#include "outputs.h"

#define SHOW_MAX     1024
#define NOTE_MAX     (SHOW_MAX * 2 + 512)

enum ent_state { ST_NEW = 0, ST_QUEUED, ST_UPLOADING, ST_DONE, ST_FAILED };

struct ent {
	struct agent_outputs *o;
	char *rel;                  /* relative to DIR, raw bytes */
	char *name;                 /* Civis name */
	agent_out_kind kind;        /* AGENT_OUT_FILE or AGENT_OUT_ARCHIVE */
	enum ent_state state;
	int dirty;                  /* changed since its latest upload started */
	int present;                /* found by the final scan */
	int canceling;              /* we cancel it: the done that follows is ours */
	int registered;
	unsigned exit_tries;        /* uploads started after the command exited */
	agent_out_stat start;       /* when its latest upload started */
	uint64_t size_hint;         /* its size when last seen (UINT64_MAX: unknown) */
	civis_upload *u;
	int have;                   /* an upload succeeded: */
	int64_t file_id;
	char sha[65];
	uint64_t bytes;
	char err[256];              /* why the latest attempt failed */
	struct ent *hnext;          /* hash chain */
	struct ent *qnext;          /* upload queue */
	struct ent *anext;          /* every entry, in creation order */
};

struct reg_token {                  /* outlives the outputs while in flight */
	struct agent_outputs *o;        /* NULL once the outputs are freed */
	size_t idx;                     /* into regs */
	struct reg_token *next, **prevp;
};

struct agent_outputs {
	civis_loop *loop;
	civis_client *client;
	civis_run *run;
	const civis_redact *redact;
	agent_note_fn note;
	void *ud;
	char *root;
	char *shown;
	char **archives;
	size_t narchives;
	int gzip;
	char *expires_at;
	char *tmp_dir;
	uint64_t threshold;
	unsigned concurrency;
	agent_out_rules rules;

	struct ent **tab;
	size_t tabsize, nents;
	struct ent *all_head, *all_tail;
	struct ent *qhead, *qtail;
	unsigned inflight;
	int pumping;

	int ifd;
	int io_added;
	char **wdrel;               /* watch descriptor -> directory rel */
	size_t nwdrel;
	size_t nwatches;
	int warned_watch;
	int warned_root;
	unsigned rebuilds;          /* watch maps rebuilt (overflow, moves) */

	int exiting;
	int freeing;
	struct ent **regs;
	size_t nregs, reg_i;
	int reg_started, reg_finished, in_reg_next;
	unsigned reg_inflight;
	struct reg_token *reg_toks;     /* in flight */

	unsigned failed;
};

/* The upload engine (tests replace it). */
struct agent_outputs_engine {
	int  (*upload_start)(civis_client *c, const civis_upload_opts *o, civis_upload **out);
	void (*upload_cancel)(civis_upload *u);
	int  (*register_output)(civis_run *r, const char *object_type, int64_t object_id,
	                        void (*done)(void *ud, int status, const char *error), void *ud);
};
extern struct agent_outputs_engine agent_outputs__engine;

/* The modules call each other by the short names they had in one file. */
#define engine         agent_outputs__engine
#define onote          agent_outputs__note
#define show           agent_outputs__show
#define ent_find       agent_outputs__find
#define ent_new        agent_outputs__ent_new
#define enqueue        agent_outputs__enqueue
#define dequeue        agent_outputs__dequeue
#define stat_differs   agent_outputs__stat_differs
#define pump           agent_outputs__pump
#define maybe_register agent_outputs__maybe_register
#define start_watching agent_outputs__watch_start
#define stop_watching  agent_outputs__watch_stop

/* outputs.c */
void agent_outputs__note(agent_outputs *o, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "DIR/rel" quoted, for messages */
void agent_outputs__show(const agent_outputs *o, char *buf, size_t len, const char *rel);
struct ent *agent_outputs__find(const agent_outputs *o, const char *rel, agent_out_kind kind);
/* A new entry for rel; NULL (with a reason in why) when it cannot be one. */
struct ent *agent_outputs__ent_new(agent_outputs *o, const char *rel, agent_out_kind kind,
                                   char *why, size_t wlen);
void agent_outputs__enqueue(agent_outputs *o, struct ent *e);
struct ent *agent_outputs__dequeue(agent_outputs *o);
int  agent_outputs__stat_differs(const agent_out_stat *a, const agent_out_stat *b);

/* outputs_name.c: a, "/", b into buf (no slash around an empty part); -1
 * when it does not fit */
int  agent_outputs__join(char *buf, size_t len, const char *a, const char *b);

/* outputs_schedule.c: start what is queued, as far as the limit allows */
void agent_outputs__pump(agent_outputs *o);

/* outputs_register.c: once the command exited and nothing is in flight */
void agent_outputs__maybe_register(agent_outputs *o);

/* outputs_watch.c */
/* inotify on DIR and its sub-directories; a note when it cannot */
void agent_outputs__watch_start(agent_outputs *o);
void agent_outputs__watch_stop(agent_outputs *o);

#endif
