/* upload_register.c: register an uploaded file as an output of the run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "upload_int.h"

/* ------------------------------------------------------ run outputs */

typedef struct register_call {
	void (*done)(void *ud, int status, const char *error);
	void *ud;
	int64_t file_id;
	char body[96];
} register_call;

static void
on_registered(void *ud, const civis_http_result *res)
{
	register_call *r = ud;
	char text[CIVIS__UPLOAD_ERR_MAX];

	if (res->status == CIVIS_OK) {
		r->done(r->ud, CIVIS_OK, "");
	} else {
		(void)snprintf(text, sizeof(text), "registering file %lld as a run output: %s",
		               (long long)r->file_id,
		               res->error != NULL && res->error[0] ? res->error
		                                                   : civis_strerror(res->status));
		r->done(r->ud, res->status, text);
	}
	free(r);
}

int
civis_client_register_output(civis_client *c, int64_t file_id,
                             void (*done)(void *ud, int status, const char *error),
                             void *ud)
{
	register_call *r;
	civis_http_spec spec;
	char path[160];
	int rc, n;

	if (c == NULL || file_id <= 0 || done == NULL)
		return CIVIS_EINVAL;
	rc = civis_client_run_path(c, "/outputs", path, sizeof(path));
	if (rc != CIVIS_OK)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return CIVIS_ENOMEM;
	r->done = done;
	r->ud = ud;
	r->file_id = file_id;
	n = snprintf(r->body, sizeof(r->body), "{\"objectType\":\"File\",\"objectId\":%lld}",
	             (long long)file_id);
	if (n < 0 || (size_t)n >= sizeof(r->body)) {
		free(r);
		return CIVIS_EINVAL;
	}
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = path;
	spec.what = "output registration";
	spec.body = r->body;
	spec.body_len = (size_t)n;
	spec.max_response = CIVIS__UPLOAD_MAX_RESPONSE;
	spec.done = on_registered;
	spec.done_ud = r;
	rc = civis_client_call(c, &spec, NULL);
	if (rc != CIVIS_OK)
		free(r);
	return rc;
}

