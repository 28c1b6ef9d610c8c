/* upload_cmd.h: `civis-agent upload [OPTIONS] PATH...`, run from inside a
 * job: upload files (a directory as NAME.tar.gz) to Civis Files now and
 * register them as outputs of the running run. */
#ifndef AGENT_UPLOAD_CMD_H
#define AGENT_UPLOAD_CMD_H

#include <stdio.h>

/* Exit statuses: every path uploaded (and registered), some failed, usage. */
enum { AGENT_UPLOAD_OK = 0, AGENT_UPLOAD_FAILED = 1, AGENT_UPLOAD_USAGE = 2 };

/* argv[0] is "upload". Prints "<file id>\t<name>" per path on stdout, in
 * the order of the arguments (names escaped: \n, \t, \\, \xNN); each
 * failure as "civis-agent: upload: <path>: <reason>" on stderr. */
int  agent_upload_cmd_main(int argc, char **argv);
/* With CIVIS_AGENT_SOCKET set: hand the paths to the running agent at addr,
 * which uploads them with its own settings. */
int  agent_upload_via_agent(const char *addr, char **paths, int npaths, const char *name_opt,
                            int gzip);
void agent_upload_cmd_usage(FILE *f);

#endif
