/* jobwork.h: the work a job hands the running agent, joined to its queue.
 *
 * - The job API (jobapi.h): the socket's path goes into the command's
 *   environment as CIVIS_AGENT_SOCKET. `mask` adds a secret to the
 *   redactor at once; `upload` uploads a file (a directory as .tar.gz)
 *   now, at most AGENT_JOBWORK_UPLOADS at a time, and answers with its
 *   file id; `json` creates a JSON value now and answers with its id;
 *   `output` takes an existing object's type and id. Everything is
 *   registered as an output of the run when the command has exited.
 * - CIVIS_OUTPUT: an empty file (mode 0600, beside the spool) whose path
 *   goes into the environment. At exit its KEY=VALUE lines
 *   (outputvars.h) become ONE JSON value named --json-output-name,
 *   registered like the rest (civis-python's run_template returns it).
 *
 * Registration order: after the output directory's files (outputs.h) are
 * all registered: the CIVIS_OUTPUT value first, then the job API's objects
 * in the order their requests were answered, a few in flight at once; each
 * (type, id) once. Any failure (an upload, a JSON value, a registration, a
 * CIVIS_OUTPUT over the API's 1,000,000 bytes) is said at level error and
 * counted: the agent then exits 3 if the command exited 0. */
#ifndef AGENT_JOBWORK_H
#define AGENT_JOBWORK_H

#include <stddef.h>
#include "civis/client.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "outputs.h"

#define AGENT_JOBWORK_UPLOADS   4      /* job API uploads at once */
#define AGENT_JOBWORK_REG       8      /* registrations in flight at once */
#define AGENT_JOBWORK_MAX_ITEMS 10000  /* objects one run may hand over */
#define AGENT_OUTPUT_ENV        "CIVIS_OUTPUT"

typedef struct agent_jobwork agent_jobwork;

typedef struct agent_jobwork_opts {
	const char *tmp_dir;          /* socket and CIVIS_OUTPUT; NULL: $TMPDIR or /tmp */
	const char *json_output_name; /* NULL: "outputs" */
	const char *expires_at;       /* uploads, as --expires-at */
	uint64_t multipart_threshold;
	unsigned concurrency;
} agent_jobwork_opts;

/* Before the command starts: the socket and the CIVIS_OUTPUT file, both
 * exported with setenv. What cannot be made is said through
 * agent_jobwork_attach's note (read-only file systems): never fatal. */
int  agent_jobwork_new(agent_jobwork **out, const agent_jobwork_opts *o);
/* Once the loop, the run and the rest exist: serve. out may be NULL (no
 * --output-dir). note: one line, no newline, never NULL. */
void agent_jobwork_attach(agent_jobwork *w, civis_loop *loop, civis_client *client,
                          civis_run *run, civis_redact *redact, agent_outputs *out,
                          agent_note_fn note, void *ud);
/* The command exited: stop taking requests, read CIVIS_OUTPUT. */
void agent_jobwork_command_exited(agent_jobwork *w);
/* Call on every loop turn after that: registers once the output directory
 * is done. 1 when everything is finished. */
int  agent_jobwork_poll(agent_jobwork *w);
unsigned agent_jobwork_failed(const agent_jobwork *w);
/* On a forced stop: one note per object not registered. */
void agent_jobwork_report_unfinished(agent_jobwork *w);
void agent_jobwork_free(agent_jobwork *w);

#endif
