/* run.h: everything the agent does to one run of a container script.
 *
 * One civis_run per run, on the client's loop:
 * - the run log: civis_run_log() takes one finished message; the module
 *   batches them (civis_batch), queues the batches (civis_logq: memory, then
 *   spool), POSTs .../runs/{id}/logs with several requests in flight,
 *   acknowledges, retries until delivered, and counts;
 * - heartbeats (POST .../heartbeats) and the cancel poll (GET .../runs/{id});
 * - run outputs of any type (POST .../runs/{id}/outputs), JSON values
 *   (POST json_values/) and the run's state (PATCH .../runs/{id}).
 * Heartbeats and PATCH are optional calls: a 404, 405 or 410 turns that call
 * off for the rest of the run, said once (say() and the run log).
 *
 * The API budget (civis_http_set_budget on the client's http) is the
 * transport's; the run sets each call's priority on it (FINAL: outputs,
 * JSON values, state and, after civis_run_log_final, the run log; LOW:
 * heartbeats and cancel polls; NORMAL: the run log) and, when the budget is
 * tight, holds log batches longer (up to their caps) rather than making
 * more requests, leaving a fifth of the budget to heartbeats and polls so
 * that a flood cannot hide a cancel.
 *
 * The module writes nothing to stderr itself: what a person should see goes
 * to opts.say, one line without a newline. */
#ifndef CIVIS_RUN_H
#define CIVIS_RUN_H

#include <stddef.h>
#include <stdint.h>
#include "civis/client.h"
#include "civis/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct civis_run civis_run;

typedef struct civis_run_opts {
	/* log batches */
	uint64_t flush_ns;          /* an open batch is sealed after half of this; >= 10 ms */
	size_t batch_lines;         /* 0: CIVIS_BATCH_DEFAULT_MESSAGES */
	size_t batch_bytes;         /* 0: CIVIS_BATCH_DEFAULT_BYTES */
	size_t mem_max;             /* log queue memory cap */
	uint64_t spool_max;
	const char *spool_dir;
	unsigned max_inflight;      /* log requests at once; 0: 4, at most 16 */
	int verbose;                /* say every failed try, not only the first */
	/* Where the module's messages go ("cannot start a log request: ..."):
	 * one line, no prefix, no newline. NULL: nowhere. */
	void (*say)(void *ud, const char *text);
	void *say_ud;
	/* Prefix of the module's own notes in the run log ("civis-agent");
	 * NULL: "civis-agent". */
	const char *name;
} civis_run_opts;

/* The run is the client's (CIVIS_JOB_ID, CIVIS_RUN_ID). client and loop
 * must outlive the run. err gets one line on failure. */
int  civis_run_new(civis_run **out, civis_loop *loop, civis_client *client,
                   const civis_run_opts *o, char *err, size_t errlen);
/* Requests still in flight end here (their callbacks run with
 * CIVIS_ECANCELED); free the run before the client. */
void civis_run_free(civis_run *r);

/* ---- the run log */

/* One message (raw bytes, repaired to UTF-8 in the batch) at level
 * ("info", "error"...; NULL: "info"), read at read_ns (epoch; the batch
 * time is made strictly increasing). CIVIS_OK when kept; a message that
 * cannot be kept is counted as dropped. After the key was rejected
 * messages are still kept, and counted as undelivered, but never sent. */
int  civis_run_log(civis_run *r, const char *level, const char *msg, size_t len,
                   uint64_t read_ns);
/* Seal the open batch now (it goes to the queue and out; while log
 * requests are in flight, once they are done or at the next tick, so that
 * messages flushed one by one share requests). */
void civis_run_log_flush(civis_run *r);
/* The command is done: from now on the run log is sent at once, whatever
 * the budget (the final flush comes first). Flushes too. */
void civis_run_log_final(civis_run *r);
/* 1 while the run log takes no more for now: memory only (no writable
 * spool directory) and the queue is full. The caller should stop reading
 * what it logs and look again a little later (acks free the memory); what
 * it still logs is kept, over the cap, never dropped (but once the key
 * was rejected: then never full, and what does not fit is counted as
 * dropped, since nothing would free the memory). */
int  civis_run_log_full(const civis_run *r);
/* Nothing left to deliver (or the key was rejected). */
int  civis_run_log_idle(const civis_run *r);
/* 1 once the key was rejected (the module said so once). */
int  civis_run_auth_dead(const civis_run *r);

typedef struct civis_run_log_stats {
	uint64_t delivered;         /* messages the API acknowledged */
	uint64_t undelivered;       /* messages queued, in flight or in the open batch */
	uint64_t dropped;           /* messages dropped (queue caps, refused batches) */
	uint64_t requests;          /* log requests acknowledged */
	uint64_t ambiguous;         /* tries that may have been stored twice */
	uint64_t held;              /* times the budget held a batch back */
	uint64_t spool_bytes;       /* spool file's disk use at its largest */
	uint64_t mem_peak;          /* log queue memory at its largest */
} civis_run_log_stats;

void civis_run_log_stats_get(const civis_run *r, civis_run_log_stats *st);

/* ---- heartbeats and the cancel poll */

typedef struct civis_run_watch_opts {
	uint64_t heartbeat_ns;      /* POST .../heartbeats at once, then this often (+-10%); 0: none */
	uint64_t cancel_poll_ns;    /* GET .../runs/{id} this often (+-10%); 0: none */
	/* called once when the platform asks to cancel the run */
	void (*on_cancel)(void *ud, const char *why);
	void *ud;
} civis_run_watch_opts;

typedef struct civis_run_watch_stats {
	uint64_t heartbeats_ok;
	uint64_t heartbeats_failed;
	uint64_t polls_ok;
	uint64_t polls_failed;
	int heartbeats_off;         /* the API has no heartbeat endpoint */
} civis_run_watch_stats;

/* Start the timers (once); they stop at civis_run_free. */
int  civis_run_watch(civis_run *r, const civis_run_watch_opts *o);
void civis_run_watch_stats_get(const civis_run *r, civis_run_watch_stats *st);

/* Next due time: base interval with +-10% jitter from rnd. */
uint64_t civis_run_jitter(uint64_t interval_ns, uint64_t rnd);

/* ---- outputs, JSON values, state */

/* Register object_id of object_type ("File", "Table", "Report", "Project",
 * "Credential", "JSONValue") as an output of the run. done is called once
 * (not when this returns an error): status CIVIS_OK, or the failure with a
 * one-line error naming the object. */
int  civis_run_register_output(civis_run *r, const char *object_type, int64_t object_id,
                               void (*done)(void *ud, int status, const char *error),
                               void *ud);

/* Largest valueStr the API takes (bytes of the JSON text). */
#define CIVIS_JSON_VALUE_MAX 1000000u

/* Create a JSON value (POST json_values/ {"name":..,"valueStr":..}): the
 * value is len bytes of JSON text, sent as a string. done gets the new id.
 * CIVIS_ETOOBIG over CIVIS_JSON_VALUE_MAX, CIVIS_EINVAL when the name is
 * empty or over 255 bytes. */
int  civis_run_create_json_value(civis_run *r, const char *name, const char *value_json,
                                 size_t len,
                                 void (*done)(void *ud, int status, int64_t id,
                                              const char *error),
                                 void *ud);

/* PATCH .../runs/{id} with the run's progress (--report-state). */
typedef enum civis_run_mark {
	CIVIS_RUN_ACCEPTED,         /* bocceAcceptedAt: the agent started */
	CIVIS_RUN_STARTED,          /* bocceStartedAt: the command started */
	CIVIS_RUN_SUCCEEDED,        /* state: succeeded */
	CIVIS_RUN_FAILED            /* state: failed */
} civis_run_mark;

/* Send one mark at epoch_ns (for the two times). An optional call: after a
 * 404, 405 or 410 the module says once that the API takes no run state and
 * sends no more. Failures are said, never fatal. */
int  civis_run_report(civis_run *r, civis_run_mark mark, uint64_t epoch_ns);
/* Run-state PATCHes in flight (wait for them before exit). */
unsigned civis_run_pending(const civis_run *r);

#ifdef __cplusplus
}
#endif
#endif
