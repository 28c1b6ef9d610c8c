/* jobcmd.h: `civis-agent mask` and `civis-agent output`, run from inside
 * a job. With CIVIS_AGENT_SOCKET set they hand their work to the running
 * agent (its redactor, its registration order, its rate budget, its exit
 * status); `output` also works on its own with the CIVIS_* variables. */
#ifndef AGENT_JOBCMD_H
#define AGENT_JOBCMD_H

#include <stdio.h>

/* Exit statuses, as for upload: done, failed, usage. */
enum { AGENT_JOBCMD_OK = 0, AGENT_JOBCMD_FAILED = 1, AGENT_JOBCMD_USAGE = 2 };

/* argv[0] is "mask": civis-agent mask VALUE | civis-agent mask - */
int agent_mask_cmd_main(int argc, char **argv);
/* argv[0] is "output": civis-agent output TYPE ID | civis-agent output json NAME JSON */
int agent_output_cmd_main(int argc, char **argv);

/* Without a socket: register an existing object, or create a JSON value
 * and register it, talking to the API directly. Returns an exit status;
 * prints "<id>\t<what>" on success. Implemented beside the run module. */
int agent_output_standalone(const char *type, long long id, const char *name,
                            const char *json, size_t json_len);

void agent_jobcmd_usage(FILE *f);

#endif
