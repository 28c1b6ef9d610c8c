/* jobwork.c: the job API's requests and CIVIS_OUTPUT, made into masks,
 * uploads and run outputs (see jobwork.h for the promises). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "jobapi.h"
#include "jobwork.h"
#include "outputvars.h"
#include "upload_prep.h"

enum item_state { I_WAIT = 0, I_UPLOADING, I_READY, I_REGISTERING, I_DONE, I_FAILED };

struct item {
	agent_jobwork *w;
	enum item_state state;
	uint64_t call_id;           /* the upload request to answer, 0 none */
	char type[16];
	int64_t id;
	char *path;                 /* uploads */
	agent_upload_prep prep;
	civis_upload *u;
};

/* One callback in flight (upload, registration, JSON value). When the
 * work is freed first, w goes NULL and the callback only frees this. */
struct pend {
	agent_jobwork *w;
	size_t index;               /* the item (uploads, registrations) */
	uint64_t call_id;           /* JSON values: the request, 0 for CIVIS_OUTPUT */
	struct pend *next, *prev;
};

struct agent_jobwork {
	agent_jobwork_opts o;
	agent_jobapi *api;
	char api_err[512];
	char outfile[PATH_MAX];     /* CIVIS_OUTPUT, "" none */
	char out_err[256];
	civis_loop *loop;
	civis_client *client;
	civis_run *run;
	civis_redact *redact;
	agent_outputs *out;
	agent_note_fn note;
	void *ud;
	struct item *items;         /* in answer order, the CIVIS_OUTPUT value first */
	size_t n, cap;
	unsigned uploading;
	unsigned creating;          /* JSON values being created */
	unsigned registering;
	size_t next_upload, next_reg;
	int exited;
	int freeing;
	size_t first;               /* 1 + the CIVIS_OUTPUT value's item, 0 none */
	unsigned failed;
	struct pend *pending;
};

static struct pend *
pend_new(agent_jobwork *w, size_t index, uint64_t call_id)
{
	struct pend *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->w = w;
	p->index = index;
	p->call_id = call_id;
	p->next = w->pending;
	if (w->pending)
		w->pending->prev = p;
	w->pending = p;
	return p;
}

/* The callback came: forget p; returns its work, NULL when it was freed. */
static agent_jobwork *
pend_done(struct pend *p)
{
	agent_jobwork *w = p->w;

	if (w != NULL) {
		if (p->prev)
			p->prev->next = p->next;
		else
			w->pending = p->next;
		if (p->next)
			p->next->prev = p->prev;
	}
	free(p);
	return w;
}


static void
wnote(agent_jobwork *w, const char *level, const char *fmt, ...)
{
	char text[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
	va_end(ap);
	if (w->note != NULL)
		w->note(w->ud, level, text);
}

static void
fail(agent_jobwork *w, const char *fmt, const char *a, const char *b)
{
	w->failed++;
	wnote(w, "error", fmt, a, b);
}

/* A new object at the end of the order; NULL when over the cap. */
static struct item *
add_item(agent_jobwork *w, const char *type, int64_t id)
{
	struct item *it;

	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct item *p;

		if (w->n >= AGENT_JOBWORK_MAX_ITEMS || (p = realloc(w->items, cap * sizeof(*p))) == NULL)
			return NULL;
		w->items = p;
		w->cap = cap;
		/* Callbacks in flight know their item by index, not address. */
	}
	it = &w->items[w->n++];
	memset(it, 0, sizeof(*it));
	it->w = w;
	it->state = I_READY;
	snprintf(it->type, sizeof(it->type), "%s", type);
	it->id = id;
	return it;
}

static int
seen(const agent_jobwork *w, const char *type, int64_t id)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->items[i].id == id && strcmp(w->items[i].type, type) == 0 &&
		    w->items[i].state != I_FAILED)
			return 1;
	return 0;
}

/* ---- uploads ------------------------------------------------------------ */

static void pump(agent_jobwork *w);

static void
on_uploaded(void *ud, int status, int64_t file_id, const char *sha256_hex, uint64_t bytes,
            const char *error)
{
	struct pend *ctx = ud;
	size_t index = ctx->index;
	agent_jobwork *w = pend_done(ctx);
	struct item *it;
	char shown[1024];

	(void)sha256_hex;
	(void)bytes;
	if (w == NULL)
		return;
	it = &w->items[index];
	it->u = NULL;
	w->uploading--;
	agent_outputs_quote(shown, sizeof(shown), it->prep.name);
	if (status == CIVIS_OK && file_id > 0) {
		it->id = file_id;
		it->state = I_READY;
		wnote(w, "info", "uploaded %s as file %lld", shown, (long long)file_id);
		agent_jobapi_answer(w->api, it->call_id, CIVIS_OK, file_id, it->prep.name);
	} else {
		const char *why = error && *error ? error : status == CIVIS_OK ?
		                  "no file id in the answer" : civis_strerror(status);

		it->state = I_FAILED;
		fail(w, "cannot upload %s: %s", shown, why);
		agent_jobapi_answer(w->api, it->call_id, status == CIVIS_OK ? CIVIS_EPROTO : status, 0,
		                    why);
	}
	it->call_id = 0;
	pump(w);
}

static void
start_upload(agent_jobwork *w, size_t index)
{
	struct item *it = &w->items[index];
	struct pend *ctx;
	civis_upload_opts uo;
	char reason[512], shown[1024];
	int fd, rc;

	agent_outputs_quote(shown, sizeof(shown), it->prep.name);
	fd = agent_upload_prep_open(&it->prep, it->path, reason, sizeof(reason));
	ctx = fd >= 0 ? pend_new(w, index, 0) : NULL;
	if (ctx == NULL) {
		if (fd >= 0) {
			close(fd);
			snprintf(reason, sizeof(reason), "out of memory");
		}
		it->state = I_FAILED;
		fail(w, "cannot upload %s: %s", shown, reason);
		agent_jobapi_answer(w->api, it->call_id, CIVIS_ESYS, 0, reason);
		it->call_id = 0;
		return;
	}
	civis_upload_opts_init(&uo);
	uo.fd = fd;
	uo.path = it->path;
	uo.name = it->prep.name;
	uo.kind = it->prep.kind;
	uo.expires_at = w->o.expires_at;
	uo.multipart_threshold = w->o.multipart_threshold;
	uo.concurrency = w->o.concurrency;
	uo.tmp_dir = w->o.tmp_dir;
	uo.done = on_uploaded;
	uo.skip_digest = 1;      /* on_uploaded has no use for it */
	uo.ud = ctx;
	uo.loop = w->loop;
	it->state = I_UPLOADING;
	w->uploading++;
	rc = civis_upload_start(w->client, &uo, &it->u);
	close(fd);                  /* the upload has its own */
	if (rc != CIVIS_OK) {
		(void)pend_done(ctx);
		w->uploading--;
		it->u = NULL;
		it->state = I_FAILED;
		fail(w, "cannot upload %s: %s", shown, civis_strerror(rc));
		agent_jobapi_answer(w->api, it->call_id, rc, 0, civis_strerror(rc));
		it->call_id = 0;
	}
}

/* ---- registration -------------------------------------------------------- */

static void
on_registered(void *ud, int status, const char *error)
{
	struct pend *ctx = ud;
	size_t index = ctx->index;
	agent_jobwork *w = pend_done(ctx);
	struct item *it;
	char what[64];

	if (w == NULL)
		return;
	it = &w->items[index];
	w->registering--;
	snprintf(what, sizeof(what), "%s %lld", it->type, (long long)it->id);
	if (status == CIVIS_OK) {
		it->state = I_DONE;
	} else {
		it->state = I_FAILED;
		fail(w, "cannot register %s as an output of the run: %s", what,
		     error && *error ? error : civis_strerror(status));
	}
	pump(w);
}

static void
register_one(agent_jobwork *w, size_t i)
{
	struct item *it = &w->items[i];
	struct pend *ctx;
	char what[64];
	int rc;

	snprintf(what, sizeof(what), "%s %lld", it->type, (long long)it->id);
	ctx = pend_new(w, i, 0);
	if (ctx == NULL) {
		it->state = I_FAILED;
		fail(w, "cannot register %s as an output of the run: %s", what, "out of memory");
		return;
	}
	it->state = I_REGISTERING;
	w->registering++;
	rc = civis_run_register_output(w->run, it->type, it->id, on_registered, ctx);
	if (rc != CIVIS_OK) {
		(void)pend_done(ctx);
		w->registering--;
		it->state = I_FAILED;
		fail(w, "cannot register %s as an output of the run: %s", what, civis_strerror(rc));
	}
}

/* Registration waits for the command's exit and for the output directory:
 * its files come first, in their own order; then the CIVIS_OUTPUT value,
 * then the rest in answer order. */
static void
register_some(agent_jobwork *w)
{
	if (!w->exited || w->creating > 0 || w->uploading > 0 || w->next_upload < w->n ||
	    (w->out != NULL && !agent_outputs_idle(w->out)))
		return;
	if (w->first && w->items[w->first - 1].state == I_READY)
		register_one(w, w->first - 1);
	while (w->registering < AGENT_JOBWORK_REG && w->next_reg < w->n) {
		size_t i = w->next_reg++;

		if (w->items[i].state == I_READY)
			register_one(w, i);
	}
}

static void
pump(agent_jobwork *w)
{
	if (w->freeing)
		return;
	while (w->uploading < AGENT_JOBWORK_UPLOADS && w->next_upload < w->n) {
		size_t i = w->next_upload++;

		if (w->items[i].state == I_WAIT)
			start_upload(w, i);
	}
	register_some(w);
}

/* ---- JSON values ---------------------------------------------------------- */

static void
on_json_created(void *ud, int status, int64_t id, const char *error)
{
	struct pend *jc = ud;
	uint64_t call = jc->call_id;
	agent_jobwork *w = pend_done(jc);
	struct item *it = NULL;

	if (w == NULL)
		return;
	w->creating--;
	if (status == CIVIS_OK && id > 0)
		it = add_item(w, "JSONValue", id);
	if (it != NULL) {
		if (call != 0) {
			agent_jobapi_answer(w->api, call, CIVIS_OK, id, NULL);
		} else {
			w->first = w->n;
			wnote(w, "info", "the values in %s are JSON value %lld", AGENT_OUTPUT_ENV,
			      (long long)id);
		}
	} else {
		const char *why = status != CIVIS_OK ? (error && *error ? error : civis_strerror(status))
		                  : id > 0 ? "too many outputs" : "no id in the answer";

		if (call != 0)
			agent_jobapi_answer(w->api, call, status != CIVIS_OK ? status : CIVIS_ETOOBIG, 0, why);
		fail(w, "cannot create the JSON value %s: %s", call == 0 ? AGENT_OUTPUT_ENV : "asked for",
		     why);
	}
	pump(w);
}

static int
create_json(agent_jobwork *w, uint64_t call_id, const char *name, const char *json, size_t len,
            char *err, size_t errlen)
{
	struct pend *jc = pend_new(w, 0, call_id);
	int rc;

	if (jc == NULL) {
		snprintf(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	w->creating++;
	rc = civis_run_create_json_value(w->run, name, json, len, on_json_created, jc);
	if (rc != CIVIS_OK) {
		w->creating--;
		(void)pend_done(jc);
		snprintf(err, errlen, "%s", rc == CIVIS_ETOOBIG ?
		         "the JSON value is over the API's 1,000,000 bytes" : civis_strerror(rc));
	}
	return rc;
}

/* ---- the job API's requests ----------------------------------------------- */

static void
on_upload_request(agent_jobwork *w, uint64_t call_id, const agent_jobapi_req *req)
{
	struct item *it;
	agent_upload_prep prep;
	char reason[512];
	int rc;

	rc = agent_upload_prepare(&prep, req->path, req->name, req->gzip, w->redact, reason,
	                          sizeof(reason));
	if (rc != CIVIS_OK) {
		agent_jobapi_answer(w->api, call_id, rc, 0, reason);
		return;
	}
	it = add_item(w, "File", 0);
	if (it == NULL || (it->path = strdup(req->path)) == NULL) {
		if (it != NULL)
			w->n--;
		agent_upload_prep_dispose(&prep);
		agent_jobapi_answer(w->api, call_id, CIVIS_ETOOBIG, 0, "too many outputs");
		return;
	}
	it->prep = prep;
	it->state = I_WAIT;
	it->call_id = call_id;
	pump(w);
}

static void
on_call(void *ud, uint64_t call_id, const agent_jobapi_req *req)
{
	agent_jobwork *w = ud;
	char err[256];
	int rc;

	switch (req->op) {
	case AGENT_JOBAPI_MASK:
		rc = w->redact ? civis_redact_add_secret(w->redact, req->value, req->value_len)
		               : CIVIS_EINVAL;
		agent_jobapi_answer(w->api, call_id, rc, 0, rc == CIVIS_OK ? "masked" :
		                    rc == CIVIS_EINVAL ? "a secret to mask is at least 6 bytes" :
		                    civis_strerror(rc));
		return;
	case AGENT_JOBAPI_UPLOAD:
		on_upload_request(w, call_id, req);
		return;
	case AGENT_JOBAPI_OUTPUT:
		if (!seen(w, req->type, req->id) && add_item(w, req->type, req->id) == NULL) {
			agent_jobapi_answer(w->api, call_id, CIVIS_ETOOBIG, 0, "too many outputs");
			return;
		}
		agent_jobapi_answer(w->api, call_id, CIVIS_OK, req->id,
		                    "registered as an output when the command exits");
		pump(w);
		return;
	case AGENT_JOBAPI_JSON:
		if (create_json(w, call_id, req->name, req->value, req->value_len, err,
		                sizeof(err)) != CIVIS_OK)
			agent_jobapi_answer(w->api, call_id, CIVIS_EINVAL, 0, err);
		return;
	}
	agent_jobapi_answer(w->api, call_id, CIVIS_EINVAL, 0, "unknown request");
}

/* ---- lifecycle ------------------------------------------------------------- */

static const char *
tmp_base(const agent_jobwork_opts *o)
{
	const char *d = o->tmp_dir;

	if (d == NULL || *d == '\0')
		d = getenv("TMPDIR");
	return d != NULL && *d != '\0' ? d : "/tmp";
}

static void
make_outfile(agent_jobwork *w)
{
	int n = snprintf(w->outfile, sizeof(w->outfile), "%s/civis-output.XXXXXX", tmp_base(&w->o));
	int fd = n > 0 && (size_t)n < sizeof(w->outfile) ? mkostemp(w->outfile, O_CLOEXEC) : -1;

	if (fd < 0) {
		int e = errno;

		if (e == EROFS || e == EACCES || e == EPERM || e == ENOENT || e == ENOTDIR)
			snprintf(w->out_err, sizeof(w->out_err), "%s is not set: no writable directory "
			         "for its file (%s)", AGENT_OUTPUT_ENV, strerror(e));
		else
			snprintf(w->out_err, sizeof(w->out_err), "%s is not set: cannot create a file in "
			         "%s: %s", AGENT_OUTPUT_ENV, tmp_base(&w->o), strerror(e));
		w->outfile[0] = '\0';
		return;
	}
	close(fd);
	if (setenv(AGENT_OUTPUT_ENV, w->outfile, 1) != 0) {
		unlink(w->outfile);
		w->outfile[0] = '\0';
	}
}

int
agent_jobwork_new(agent_jobwork **out, const agent_jobwork_opts *o)
{
	agent_jobwork *w = calloc(1, sizeof(*w));
	char err[256];

	*out = NULL;
	if (w == NULL)
		return CIVIS_ENOMEM;
	w->o = *o;
	if (w->o.json_output_name == NULL || *w->o.json_output_name == '\0')
		w->o.json_output_name = "outputs";
	if (agent_jobapi_new(&w->api, w->o.tmp_dir, on_call, w, err, sizeof(err)) != CIVIS_OK) {
		snprintf(w->api_err, sizeof(w->api_err), "no job API (civis-agent mask, output, "
		         "upload go straight to the API): %s", err);
		w->api = NULL;
	} else if (setenv("CIVIS_AGENT_SOCKET", agent_jobapi_path(w->api), 1) != 0) {
		agent_jobapi_free(w->api);
		w->api = NULL;
	}
	make_outfile(w);
	*out = w;
	return CIVIS_OK;
}

void
agent_jobwork_attach(agent_jobwork *w, civis_loop *loop, civis_client *client, civis_run *run,
                     civis_redact *redact, agent_outputs *out, agent_note_fn note, void *ud)
{
	w->loop = loop;
	w->client = client;
	w->run = run;
	w->redact = redact;
	w->out = out;
	w->note = note;
	w->ud = ud;
	if (w->api_err[0] != '\0')
		wnote(w, "warn", "%s", w->api_err);
	if (w->out_err[0] != '\0')
		wnote(w, "warn", "%s", w->out_err);
	if (w->api != NULL && agent_jobapi_attach(w->api, loop) != CIVIS_OK) {
		wnote(w, "warn", "%s", "no job API: the event loop has no room for its socket");
		agent_jobapi_free(w->api);
		w->api = NULL;
		unsetenv("CIVIS_AGENT_SOCKET");
	}
}

static void
outvars_note(void *ud, const char *text)
{
	wnote(ud, "warn", "%s", text);
}

static void
read_outfile(agent_jobwork *w)
{
	agent_outputvars v;
	char err[512];
	int rc;

	if (w->outfile[0] == '\0')
		return;
	rc = agent_outputvars_read(&v, w->outfile, outvars_note, w, err, sizeof(err));
	if (rc == CIVIS_ENOTFOUND) {
		wnote(w, "warn", "%s: the file was removed; no values published", AGENT_OUTPUT_ENV);
	} else if (rc != CIVIS_OK && rc != CIVIS_EINVAL) {
		w->failed++;
		wnote(w, "error", "%s: %s; not published", AGENT_OUTPUT_ENV, err);
	} else if (v.json != NULL &&
	           create_json(w, 0, w->o.json_output_name, v.json, v.len, err, sizeof(err)) != CIVIS_OK) {
		w->failed++;
		wnote(w, "error", "%s: %s; not published", AGENT_OUTPUT_ENV, err);
	}
	agent_outputvars_dispose(&v);
}

void
agent_jobwork_command_exited(agent_jobwork *w)
{
	if (w->exited)
		return;
	w->exited = 1;
	agent_jobapi_stop_listening(w->api);
	read_outfile(w);
	pump(w);
}

int
agent_jobwork_poll(agent_jobwork *w)
{
	if (!w->exited)
		return 0;
	pump(w);
	return w->creating == 0 && w->uploading == 0 && w->registering == 0 &&
	       w->next_upload >= w->n && w->next_reg >= w->n;
}

unsigned
agent_jobwork_failed(const agent_jobwork *w)
{
	return w ? w->failed : 0;
}

void
agent_jobwork_report_unfinished(agent_jobwork *w)
{
	for (size_t i = 0; w && i < w->n; i++) {
		const struct item *it = &w->items[i];

		if (it->state == I_WAIT || it->state == I_UPLOADING)
			wnote(w, "error", "not uploaded (stopped first): %s", it->prep.name);
		else if (it->state == I_READY || it->state == I_REGISTERING)
			wnote(w, "error", "not registered (stopped first): %s %lld", it->type,
			      (long long)it->id);
	}
}

void
agent_jobwork_free(agent_jobwork *w)
{
	if (w == NULL)
		return;
	w->freeing = 1;
	for (size_t i = 0; i < w->n; i++)
		if (w->items[i].u != NULL)
			civis_upload_cancel(w->items[i].u);   /* its callback runs now */
	/* Registrations and JSON values still in the run: their callbacks,
	 * when the run is freed, find nothing to touch. */
	for (struct pend *p = w->pending; p != NULL; p = p->next)
		p->w = NULL;
	for (size_t i = 0; i < w->n; i++) {
		agent_upload_prep_dispose(&w->items[i].prep);
		free(w->items[i].path);
	}
	agent_jobapi_free(w->api);
	if (w->outfile[0] != '\0')
		unlink(w->outfile);
	free(w->items);
	free(w);
}
