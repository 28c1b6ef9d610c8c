/* run_int.h: the civis_run handle, shared by run.c (life, outputs, JSON
 * values, state), run_logs.c (the run log) and run_watch.c (heartbeats,
 * cancel poll). Private to libcivis. */
#ifndef CIVIS_RUN_INT_H
#define CIVIS_RUN_INT_H

#include <stdint.h>
#include "civis/client.h"
#include "civis/http.h"
#include "civis/logbatch.h"
#include "civis/logqueue.h"
#include "civis/loop.h"
#include "civis/run.h"

#define RUN_MAX_INFLIGHT 16
#define RUN_PATH_MAX     160
#define RUN_NOTE_MAX     1024

/* One log request in flight: a queue chunk streamed as the request body. */
struct run_sending {
	civis_run *r;
	civis_logq_chunk *chunk;
	civis_http_req *req;
	int used;
};

/* A sealed batch body waiting for room in the queue. */
struct run_held {
	struct run_held *next;
	uint64_t first_ns, last_ns;
	uint32_t nlines;
	size_t len;
	char body[];
};

/* An optional call: off for good after a 404, 405 or 410. */
struct run_optional {
	const char *what;           /* "heartbeats" */
	int off;
};

struct civis_run {
	civis_run_opts o;
	civis_loop *loop;
	civis_client *client;
	char logs_path[RUN_PATH_MAX], hb_path[RUN_PATH_MAX], run_path[RUN_PATH_MAX];
	char outputs_path[RUN_PATH_MAX];
	int auth_dead;

	/* the run log (run_logs.c) */
	civis_batch *batch;
	civis_tsclock clock;
	civis_logq *q;
	struct run_sending send[RUN_MAX_INFLIGHT];
	unsigned inflight;
	civis_retry_policy log_retry;
	civis_timer_id tick;
	civis_timer_id resume;      /* sending paused after a failure */
	uint64_t batch_opened;      /* monotonic time of the batch's first message */
	int start_failed;           /* the last request could not be started (said once) */
	uint64_t spool_peak;
	civis_run_log_stats ls;
	int final;                  /* civis_run_log_final: no more holding back */
	int flush_wanted;           /* seal the open batch once a request slot is free */
	int batch_held;             /* this batch was held by the budget (counted once) */
	/* Memory only (no spool): sealed batches the queue refused for now
	 * (CIVIS_EFULL), oldest first, pushed again as acks free memory. The
	 * log stream stops reading while there are any (civis_run_log_full). */
	struct run_held *held, *held_tail;
	uint64_t held_lines;
	int memonly_said;           /* the note about it went out */
	size_t memonly_seal;        /* memory only: seal batches at this body size */

	/* heartbeats and the cancel poll (run_watch.c) */
	civis_run_watch_opts w;
	int watching;
	civis_timer_id hb_timer, poll_timer;
	civis_http_req *hb_req, *poll_req;
	civis_retry_policy hb_retry, poll_retry;
	int cancelled;
	int poll_warned;
	uint64_t rnd;
	civis_run_watch_stats ws;
	struct run_optional hb_opt, state_opt;

	/* outputs, JSON values and state PATCHes in flight (run.c) */
	unsigned calls;
	struct run_call *call_list;
};

/* say() with printf formatting; the text is cut to RUN_NOTE_MAX. */
void civis__run_say(civis_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A note in the run log, as "name: text", and on say(). */
void civis__run_note(civis_run *r, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The key was refused: say so once, stop sending. */
void civis__run_auth_rejected(civis_run *r);
/* The answer says the API has no such endpoint (404, 405, 410): turn the
 * optional call off, say so once. Returns 1 when it did (or was off). */
int  civis__run_optional_gone(civis_run *r, struct run_optional *opt, long http_code);

/* run_logs.c */
int  civis__run_logs_init(civis_run *r, char *err, size_t errlen);
void civis__run_logs_free(civis_run *r);
/* run_watch.c */
void civis__run_watch_free(civis_run *r);

#endif
