/* runwatch.h: heartbeats and the cancel poll, on timers of the loop. */
#ifndef AGENT_RUNWATCH_H
#define AGENT_RUNWATCH_H

#include <stdint.h>
#include "civis/client.h"
#include "civis/loop.h"

typedef struct agent_runwatch agent_runwatch;

typedef struct agent_runwatch_opts {
	uint64_t heartbeat_ns;      /* POST .../heartbeats at once, then this often (+-10%) */
	uint64_t cancel_poll_ns;    /* GET .../runs/{id} this often (+-10%) */
	/* called once when the platform asks to cancel the run; why: "cancel requested" */
	void (*on_cancel)(void *ud, const char *why);
	void *ud;
	int verbose;
} agent_runwatch_opts;

typedef struct agent_runwatch_stats {
	uint64_t heartbeats_ok;
	uint64_t heartbeats_failed;
	uint64_t polls_ok;
	uint64_t polls_failed;
} agent_runwatch_stats;

int  agent_runwatch_new(agent_runwatch **out, civis_loop *loop, civis_client *client,
                        const agent_runwatch_opts *o);
/* Stop the timers; requests in flight are cancelled. */
void agent_runwatch_free(agent_runwatch *rw);
void agent_runwatch_stats_get(const agent_runwatch *rw, agent_runwatch_stats *st);

/* Next due time: base interval with +-10% jitter from rnd. */
uint64_t agent_runwatch_jitter(uint64_t interval_ns, uint64_t rnd);

#endif
