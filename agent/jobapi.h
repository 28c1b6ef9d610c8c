/* jobapi.h: the job API, a Unix socket the command's processes use to hand
 * work to the running agent (anchors: the Buildkite agent's job API socket,
 * GitHub's ::add-mask::).
 *
 * The socket lives in a fresh mode-0700 directory under the given one
 * (else, on a read-only file system, in the abstract namespace, written
 * "@name"), is mode 0600, and takes only peers of the agent's own uid or
 * root (SO_PEERCRED). Its path is what CIVIS_AGENT_SOCKET is set to.
 *
 * Each connection sends one request line at a time (jobapi_proto.h) and
 * gets one reply line. Nothing a client does can block the agent: every
 * descriptor is non-blocking and waited on by the loop, every message has
 * a cap, at most AGENT_JOBAPI_MAX_CLIENTS are served at once, and a client
 * that sends nothing, or does not read its reply, for AGENT_JOBAPI_IDLE_NS
 * is dropped. */
#ifndef AGENT_JOBAPI_H
#define AGENT_JOBAPI_H

#include <stddef.h>
#include <stdint.h>
#include "civis/loop.h"
#include "jobapi_proto.h"

#define AGENT_JOBAPI_MAX_CLIENTS 4
#define AGENT_JOBAPI_IDLE_NS     (30ULL * 1000000000ULL)

typedef struct agent_jobapi agent_jobapi;

/* Called for each valid request; req is valid only during the call. The
 * handler answers it exactly once, now or later, with agent_jobapi_answer
 * and the same call id. */
typedef void (*agent_jobapi_call_fn)(void *ud, uint64_t call_id, const agent_jobapi_req *req);

typedef struct agent_jobapi_stats {
	uint64_t accepted;     /* connections served */
	uint64_t refused;      /* connections of another uid */
	uint64_t requests;     /* valid requests handed to the handler */
	uint64_t bad;          /* malformed or oversized requests */
	uint64_t dropped;      /* clients dropped for idling */
} agent_jobapi_stats;

/* Listen under dir (NULL: $TMPDIR, else /tmp). The socket exists from
 * here on (so its path can go into the command's environment before the
 * command starts); connections wait in its backlog until attach. */
int  agent_jobapi_new(agent_jobapi **out, const char *dir, agent_jobapi_call_fn fn, void *ud,
                      char *err, size_t errlen);
/* Serve on loop from now on. Once. */
int  agent_jobapi_attach(agent_jobapi *j, civis_loop *loop);
/* The address to export as CIVIS_AGENT_SOCKET. */
const char *agent_jobapi_path(const agent_jobapi *j);
/* Answer a call: status CIVIS_OK with an optional object id and text, or
 * an error status with its one-line text. An id that is no longer pending
 * (its client left, or it was answered) is ignored. */
void agent_jobapi_answer(agent_jobapi *j, uint64_t call_id, int status, int64_t id,
                         const char *text);
/* Calls handed out and not answered yet. */
unsigned agent_jobapi_pending(const agent_jobapi *j);
/* Stop taking connections (and remove the socket); served clients stay. */
void agent_jobapi_stop_listening(agent_jobapi *j);
void agent_jobapi_stats_get(const agent_jobapi *j, agent_jobapi_stats *st);
/* Close everything and remove the socket and its directory. Pending calls
 * are dropped unanswered; nothing may answer on j after this. */
void agent_jobapi_free(agent_jobapi *j);

#ifdef CIVIS_UNITTEST
void agent__jobapi_set_idle_ns(agent_jobapi *j, uint64_t ns);
#endif

#endif
