/* summary.h: what the agent says once the command is done: the run summary
 * (how it ended, its resources, what streamed), what could not be finished,
 * and the -v footprint report. */
#ifndef AGENT_SUMMARY_H
#define AGENT_SUMMARY_H

#include <stdint.h>

#include "exitinfo.h"
#include "logstream.h"
#include "civis/run.h"
#include "supervise.h"

/* The one-line run summary: to the run log, and to stderr with verbose;
 * with the container's limits when set (ei may be NULL), and to the
 * termination log. A command killed for memory first gets the platform's
 * error line ("Process ran out of its allowed N MiB of memory and was
 * killed.", exactly, no prefix: civis-python looks for it) in the run log
 * and on stderr, and the summary ends with it. code is the command's exit
 * code (agent_sup_child_status); agent_exitinfo_ended() was called.
 * passthrough: the command wrote straight to the agent's stdout and
 * stderr, so nothing was streamed (and the summary says so). */
void agent_summary_note(agent_logstream *ls, const agent_sup *sup, agent_exitinfo *ei,
                        int code, int verbose, int passthrough);

/* Why the run log or the output lines are not complete, on stderr, never
 * silently. auth_rejected: the API key was rejected; stopped: a SIGTERM,
 * SIGINT or cancel cut the final flush short (grace_ns said how long it
 * had), else final_flush_ns ran out. */
void agent_summary_unfinished(const agent_logstream *ls, int auth_rejected, int stopped,
                              uint64_t grace_ns, uint64_t final_flush_ns);

/* -v: the agent's own footprint, delivery counts, the raw-output backlog
 * (when it was used), heartbeats and polls (run may be NULL), on stderr. */
void agent_summary_verbose(const agent_logstream *ls, const civis_run *run);

#endif
