/* jobclient.h: the job API from inside the job: `civis-agent mask`,
 * `civis-agent output` and `civis-agent upload` send their work to the
 * running agent when CIVIS_AGENT_SOCKET is set (jobapi.h). */
#ifndef AGENT_JOBCLIENT_H
#define AGENT_JOBCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "jobapi_proto.h"

#define AGENT_JOBCLIENT_ENV "CIVIS_AGENT_SOCKET"

/* Send one request to the agent at `addr` (a path, or "@name" in the
 * abstract namespace) and wait for its reply, at most timeout_ms (0: as
 * long as the agent keeps the connection). Returns the agent's status
 * (CIVIS_OK, or its error with the reason in text), or CIVIS_ESYS /
 * CIVIS_ETIMEOUT / CIVIS_EPROTO with a one-line reason when the agent
 * could not be reached or answered nonsense. *id gets the object id the
 * agent reports, if any. */
int agent_jobclient_call(const char *addr, const agent_jobapi_req *req, int timeout_ms,
                         int64_t *id, char *text, size_t textlen);

#endif
