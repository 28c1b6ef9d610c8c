/* upload_via_agent.c: `civis-agent upload PATH...` inside a command the
 * agent runs (CIVIS_AGENT_SOCKET set): each path goes to the running agent,
 * which uploads it with its own settings (its --expires-at too) and registers it with its other
 * outputs when the command exits (jobwork.h). One request at a time, in
 * argument order; "<file id>\t<name>" per path as it is uploaded. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "jobapi_proto.h"
#include "jobclient.h"
#include "outputs.h"
#include "upload_cmd.h"

int
agent_upload_via_agent(const char *addr, char **paths, int npaths, const char *name_opt,
                       int gzip)
{
	int failed = 0;

	for (int i = 0; i < npaths; i++) {
		agent_jobapi_req r = { .op = AGENT_JOBAPI_UPLOAD, .name = (char *)name_opt,
		                       .gzip = gzip };
		char text[AGENT_JOBAPI_MAX_REPLY], shown[1024], esc[2048];
		char *real = realpath(paths[i], NULL);
		int64_t id = 0;
		int rc;

		agent_outputs_quote(shown, sizeof(shown), paths[i]);
		if (real == NULL) {
			fprintf(stderr, "civis-agent: upload: %s: No such file or directory\n", shown);
			failed = 1;
			continue;
		}
		r.path = real;
		/* An upload takes as long as it takes: no timeout but the agent's. */
		rc = agent_jobclient_call(addr, &r, 0, &id, text, sizeof(text));
		free(real);
		if (rc != CIVIS_OK) {
			agent_outputs_escape_text(esc, sizeof(esc), text);
			fprintf(stderr, "civis-agent: upload: %s: %s\n", shown, esc);
			failed = 1;
			continue;
		}
		agent_outputs_escape(esc, sizeof(esc), text);
		printf("%lld\t%s\n", (long long)id, esc);
		fflush(stdout);
	}
	return failed ? AGENT_UPLOAD_FAILED : AGENT_UPLOAD_OK;
}
