/* run.c: one run of a container script: its life, what it says, and the
 * one-off calls on it (outputs, JSON values, state). The run log is in
 * run_logs.c, heartbeats and the cancel poll in run_watch.c. See run.h. */
#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "run_int.h"

#define CALL_MAX_RESPONSE (64u << 10)
#define CALL_ERR_MAX      512

/* ---------------------------------------------------------------- saying */

void
civis__run_say(civis_run *r, const char *fmt, ...)
{
	char text[RUN_NOTE_MAX];
	va_list ap;

	if (!r->o.say)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	r->o.say(r->o.say_ud, text);
}

void
civis__run_note(civis_run *r, const char *level, const char *fmt, ...)
{
	char text[RUN_NOTE_MAX], line[RUN_NOTE_MAX + 64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (r->o.say)
		r->o.say(r->o.say_ud, text);
	if (r->auth_dead)
		return;
	n = snprintf(line, sizeof(line), "%s: %s", r->o.name ? r->o.name : "civis-agent", text);
	if (n > 0)
		(void)civis_run_log(r, level, line, (size_t)n < sizeof(line) ? (size_t)n
		                                                           : sizeof(line) - 1,
		                    civis_clock_realtime_ns());
}

/* The key was refused (by a log request, or by any other call: the client
 * latches a 401): stop sending and say so once, whoever met it first. */
void
civis__run_auth_rejected(civis_run *r)
{
	if (r->auth_dead)
		return;
	r->auth_dead = 1;
	civis__run_say(r, "API key rejected (HTTP 401): no more API calls; "
	               "the command keeps running. Check CIVIS_API_KEY.");
}

int
civis__run_optional_gone(civis_run *r, struct run_optional *opt, long http_code)
{
	if (opt->off)
		return 1;
	if (http_code != 404 && http_code != 405 && http_code != 410)
		return 0;
	opt->off = 1;
	civis__run_note(r, "warn", "the API has no endpoint for %s here (HTTP %ld): no more "
	                "%s for this run", opt->what, http_code, opt->what);
	return 1;
}

int
civis_run_auth_dead(const civis_run *r)
{
	return r == NULL || r->auth_dead ||
	       (r->client != NULL && civis_client_auth_rejected(r->client));
}

/* ---------------------------------------------------------------- calls */

enum call_kind { CALL_OUTPUT, CALL_JSON_VALUE, CALL_STATE };

struct run_call {
	struct run_call *next, **prevp;
	civis_run *r;
	civis_http_req *req;
	enum call_kind kind;
	void (*done)(void *ud, int status, const char *error);
	void (*done_id)(void *ud, int status, int64_t id, const char *error);
	void *ud;
	char what[96];              /* "file 12", "JSON value \"outputs\"" */
	char *body;
	char path[RUN_PATH_MAX];
};

static void
call_unlink(struct run_call *c)
{
	if (c->prevp) {
		*c->prevp = c->next;
		if (c->next)
			c->next->prevp = c->prevp;
		c->prevp = NULL;
		c->r->calls--;
	}
}

static void
call_free(struct run_call *c)
{
	call_unlink(c);
	free(c->body);
	free(c);
}

/* The id of a created object ({"id": N, ...}); 0 when absent. */
static int64_t
answer_id(const char *body, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(body, len), *id;
	int64_t v = 0;

	id = cJSON_GetObjectItemCaseSensitive(j, "id");
	if (cJSON_IsNumber(id) && id->valuedouble >= 1 && id->valuedouble < 9007199254740992.0)
		v = (int64_t)id->valuedouble;
	cJSON_Delete(j);
	return v;
}

static void
on_call_done(void *ud, const civis_http_result *res)
{
	struct run_call *c = ud;
	civis_run *r = c->r;
	char text[CALL_ERR_MAX];
	int status = res->status;
	int64_t id = 0;
	const char *detail = res->error != NULL && res->error[0] ? res->error
	                                                         : civis_strerror(res->status);

	c->req = NULL;
	call_unlink(c);
	if (status == CIVIS_EAUTH)
		civis__run_auth_rejected(r);
	if (c->kind == CALL_JSON_VALUE && status == CIVIS_OK) {
		id = answer_id(res->body, res->body_len);
		if (id <= 0) {
			status = CIVIS_EPROTO;
			detail = "the answer has no id";
		}
	}
	if (c->kind == CALL_STATE) {
		if (status != CIVIS_OK && status != CIVIS_ECANCELED &&
		    !civis__run_optional_gone(r, &r->state_opt, res->http_code))
			civis__run_say(r, "reporting the run's state (%s) failed: %s", c->what, detail);
	} else if (status == CIVIS_OK) {
		if (c->done)
			c->done(c->ud, CIVIS_OK, "");
		else
			c->done_id(c->ud, CIVIS_OK, id, "");
	} else {
		(void)snprintf(text, sizeof(text), c->kind == CALL_OUTPUT
		               ? "registering %s as a run output: %s" : "creating %s: %s",
		               c->what, detail);
		if (c->done)
			c->done(c->ud, status, text);
		else
			c->done_id(c->ud, status, 0, text);
	}
	call_free(c);
}

/* Start c (POST or PATCH of its body to its path); on failure c is freed. */
static int
call_start(civis_run *r, struct run_call *c, const char *method)
{
	civis_http_spec spec;
	int rc;

	c->r = r;
	memset(&spec, 0, sizeof(spec));
	spec.method = method;
	spec.url = c->path;
	spec.what = c->kind == CALL_OUTPUT ? "output registration"
	          : c->kind == CALL_JSON_VALUE ? "JSON value" : "run state";
	spec.body = c->body;
	spec.body_len = strlen(c->body);
	spec.max_response = CALL_MAX_RESPONSE;
	spec.done = on_call_done;
	spec.done_ud = c;
	spec.prio = CIVIS_HTTP_PRIO_FINAL;     /* never held back by the budget */
	rc = civis_client_call(r->client, &spec, &c->req);
	if (rc != CIVIS_OK) {
		if (rc == CIVIS_EAUTH)
			civis__run_auth_rejected(r);
		call_free(c);
		return rc;
	}
	c->next = r->call_list;
	if (c->next)
		c->next->prevp = &c->next;
	c->prevp = &r->call_list;
	r->call_list = c;
	r->calls++;
	return CIVIS_OK;
}

static const char *const output_types[] = {
	"File", "Table", "Report", "Project", "Credential", "JSONValue",
};

int
civis_run_register_output(civis_run *r, const char *object_type, int64_t object_id,
                          void (*done)(void *ud, int status, const char *error), void *ud)
{
	struct run_call *c;
	size_t i;
	int n;

	if (r == NULL || object_type == NULL || object_id <= 0 || done == NULL)
		return CIVIS_EINVAL;
	for (i = 0; i < sizeof(output_types) / sizeof(output_types[0]); i++)
		if (strcmp(object_type, output_types[i]) == 0)
			break;
	if (i == sizeof(output_types) / sizeof(output_types[0]))
		return CIVIS_EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return CIVIS_ENOMEM;
	c->kind = CALL_OUTPUT;
	c->done = done;
	c->ud = ud;
	(void)snprintf(c->path, sizeof(c->path), "%s", r->outputs_path);
	(void)snprintf(c->what, sizeof(c->what), "%s %lld",
	               i == 0 ? "file" : object_type, (long long)object_id);
	c->body = malloc(96);
	n = c->body ? snprintf(c->body, 96, "{\"objectType\":\"%s\",\"objectId\":%lld}",
	                       object_type, (long long)object_id) : -1;
	if (n < 0 || n >= 96) {
		call_free(c);
		return CIVIS_ENOMEM;
	}
	return call_start(r, c, "POST");
}

int
civis_run_create_json_value(civis_run *r, const char *name, const char *value_json, size_t len,
                            void (*done)(void *ud, int status, int64_t id, const char *error),
                            void *ud)
{
	struct run_call *c = NULL;
	cJSON *obj = NULL, *check = NULL;
	char *value = NULL;
	int rc = CIVIS_ENOMEM;
	size_t nlen;

	if (r == NULL || name == NULL || value_json == NULL || done == NULL)
		return CIVIS_EINVAL;
	nlen = strnlen(name, 256);
	if (nlen == 0 || nlen > 255)
		return CIVIS_EINVAL;
	if (len > CIVIS_JSON_VALUE_MAX)
		return CIVIS_ETOOBIG;
	check = cJSON_ParseWithLength(value_json, len);
	if (check == NULL) {
		rc = CIVIS_EINVAL;
		goto out;
	}
	if ((value = malloc(len + 1)) == NULL || (c = calloc(1, sizeof(*c))) == NULL)
		goto out;
	memcpy(value, value_json, len);
	value[len] = '\0';
	if ((obj = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(obj, "name", name) == NULL ||
	    cJSON_AddStringToObject(obj, "valueStr", value) == NULL ||
	    (c->body = cJSON_PrintUnformatted(obj)) == NULL)
		goto out;
	c->kind = CALL_JSON_VALUE;
	c->done_id = done;
	c->ud = ud;
	(void)snprintf(c->path, sizeof(c->path), "json_values/");
	(void)snprintf(c->what, sizeof(c->what), "JSON value \"%.64s\"", name);
	rc = call_start(r, c, "POST");
	c = NULL;                   /* started, or freed by call_start */
out:
	if (c)
		call_free(c);
	cJSON_Delete(check);
	cJSON_Delete(obj);
	free(value);
	return rc;
}

int
civis_run_report(civis_run *r, civis_run_mark mark, uint64_t epoch_ns)
{
	static const char *const what[] = { "accepted", "started", "succeeded", "failed" };
	char ts[CIVIS_TS_LEN];
	struct run_call *c;
	int n = -1;

	if (r == NULL || (unsigned)mark > CIVIS_RUN_FAILED)
		return CIVIS_EINVAL;
	if (r->state_opt.off)
		return CIVIS_ENOTFOUND;
	if (civis_ts_format(epoch_ns, ts, sizeof(ts)) != CIVIS_OK)
		return CIVIS_EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->body = malloc(96)) == NULL) {
		free(c);
		return CIVIS_ENOMEM;
	}
	c->kind = CALL_STATE;
	(void)snprintf(c->path, sizeof(c->path), "%s", r->run_path);
	(void)snprintf(c->what, sizeof(c->what), "%s", what[mark]);
	if (mark == CIVIS_RUN_ACCEPTED)
		n = snprintf(c->body, 96, "{\"bocceAcceptedAt\":\"%s\"}", ts);
	else if (mark == CIVIS_RUN_STARTED)
		n = snprintf(c->body, 96, "{\"bocceStartedAt\":\"%s\"}", ts);
	else
		n = snprintf(c->body, 96, "{\"state\":\"%s\"}", what[mark]);
	if (n < 0 || n >= 96) {
		call_free(c);
		return CIVIS_EINVAL;
	}
	return call_start(r, c, "PATCH");
}

unsigned
civis_run_pending(const civis_run *r)
{
	return r ? r->calls : 0;
}

/* ---------------------------------------------------------------- life */

int
civis_run_new(civis_run **out, civis_loop *loop, civis_client *client, const civis_run_opts *o,
              char *err, size_t errlen)
{
	civis_run *r;
	int rc;

	*out = NULL;
	if (loop == NULL || client == NULL || o == NULL) {
		(void)snprintf(err, errlen, "cannot set up the run: no loop or client");
		return CIVIS_EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		(void)snprintf(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	r->o = *o;
	r->loop = loop;
	r->client = client;
	r->hb_opt.what = "heartbeats";
	r->state_opt.what = "run state reports";
	if ((rc = civis_client_run_path(client, "/logs", r->logs_path, sizeof(r->logs_path))) ||
	    (rc = civis_client_run_path(client, "/heartbeats", r->hb_path, sizeof(r->hb_path))) ||
	    (rc = civis_client_run_path(client, "/outputs", r->outputs_path,
	                                sizeof(r->outputs_path))) ||
	    (rc = civis_client_run_path(client, "", r->run_path, sizeof(r->run_path)))) {
		(void)snprintf(err, errlen, "cannot set up the run: %s", civis_strerror(rc));
		free(r);
		return rc;
	}
	if ((rc = civis__run_logs_init(r, err, errlen)) != CIVIS_OK) {
		civis_run_free(r);
		return rc;
	}
	*out = r;
	return CIVIS_OK;
}

void
civis_run_free(civis_run *r)
{
	if (r == NULL)
		return;
	civis__run_watch_free(r);
	civis__run_logs_free(r);
	while (r->call_list) {
		struct run_call *c = r->call_list;

		if (c->req) /* NOLINT(clang-analyzer-unix.Malloc): c is the live head; call_free unlinked the one before */
			civis_http_cancel(civis_client_http(r->client), c->req);  /* frees c */
		else
			call_free(c);
	}
	free(r);
}
