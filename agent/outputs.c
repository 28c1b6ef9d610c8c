/* outputs.c: the output directory while the command runs and after: its
 * lifecycle, the entry table and the upload queue. The rules are in
 * outputs.h; the modules in outputs_int.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs_int.h"

struct agent_outputs_engine agent_outputs__engine = {
	civis_upload_start, civis_upload_cancel, civis_run_register_output
};

#ifdef CIVIS_UNITTEST
void
agent_outputs__set_hooks(const agent_outputs_hooks *h)
{
	if (h == NULL) {
		engine.upload_start = civis_upload_start;
		engine.upload_cancel = civis_upload_cancel;
		engine.register_output = civis_run_register_output;
		return;
	}
	engine.upload_start = h->upload_start;
	engine.upload_cancel = h->upload_cancel;
	engine.register_output = h->register_output;
}

unsigned
agent_outputs__inflight(const agent_outputs *o)
{
	return o->inflight;
}

int
agent_outputs__watching(const agent_outputs *o)
{
	return o->ifd >= 0 ? (int)o->nwatches : -1;
}

unsigned
agent_outputs__rebuilds(const agent_outputs *o)
{
	return o->rebuilds;
}
#endif

/* ---------------------------------------------------------------- notes */

void
onote(agent_outputs *o, const char *level, const char *fmt, ...)
{
	char text[NOTE_MAX], safe[NOTE_MAX * 2];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	agent_outputs_escape_text(safe, sizeof(safe), text);
	o->note(o->ud, level, safe);
}

void
show(const agent_outputs *o, char *buf, size_t len, const char *rel)
{
	char masked[PATH_MAX + 64];

	/* masked before it is quoted and cut: no piece of a secret shows */
	if (o->redact != NULL && civis_redact_string(o->redact, rel, masked, sizeof(masked)) ==
	    CIVIS_OK && strcmp(masked, rel) != 0) {
		agent_outputs_show(buf, len, &o->rules, masked);
		return;
	}
	agent_outputs_show(buf, len, &o->rules, rel);
}

/* ---------------------------------------------------------------- entries */

static size_t
hash_str(const char *s, agent_out_kind kind)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

struct ent *
ent_find(const agent_outputs *o, const char *rel, agent_out_kind kind)
{
	struct ent *e;

	if (o->tabsize == 0)
		return NULL;
	for (e = o->tab[hash_str(rel, kind) & (o->tabsize - 1)]; e != NULL; e = e->hnext)
		if (e->kind == kind && strcmp(e->rel, rel) == 0)
			return e;
	return NULL;
}

static int
tab_grow(agent_outputs *o)
{
	size_t nsize = o->tabsize ? o->tabsize * 2 : 256, i;
	struct ent **nt = calloc(nsize, sizeof(struct ent *));

	if (nt == NULL)
		return CIVIS_ENOMEM;
	for (i = 0; i < o->tabsize; i++) {
		struct ent *e = o->tab[i], *next;

		for (; e != NULL; e = next) {
			size_t b = hash_str(e->rel, e->kind) & (nsize - 1);

			next = e->hnext;
			e->hnext = nt[b];
			nt[b] = e;
		}
	}
	free(o->tab);
	o->tab = nt;
	o->tabsize = nsize;
	return CIVIS_OK;
}

/* A new entry for rel; NULL (with a reason in why) when it cannot be one. */
struct ent *
ent_new(agent_outputs *o, const char *rel, agent_out_kind kind, char *why, size_t wlen)
{
	char name[AGENT_OUTPUTS_NAME_MAX];
	const char *suffix = kind == AGENT_OUT_ARCHIVE ? ".tar.gz" : o->gzip ? ".gz" : NULL;
	struct ent *e;
	size_t b;

	why[0] = '\0';
	if (o->nents >= AGENT_OUTPUTS_MAX_FILES) {
		snprintf(why, wlen, "more than %d outputs", AGENT_OUTPUTS_MAX_FILES);
		return NULL;
	}
	if (agent_outputs_civis_name(name, sizeof(name), rel, suffix) != CIVIS_OK) {
		snprintf(why, wlen, "the name is too long");
		return NULL;
	}
	if (agent_outputs_name_has_secret(o->redact, name)) {
		snprintf(why, wlen, "%s", AGENT_OUTPUTS_SECRET_NAME);
		return NULL;
	}
	if (o->nents >= o->tabsize && tab_grow(o) != CIVIS_OK) {
		snprintf(why, wlen, "out of memory");
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL || (e->rel = strdup(rel)) == NULL || (e->name = strdup(name)) == NULL) {
		if (e != NULL) {
			free(e->rel);
			free(e);
		}
		snprintf(why, wlen, "out of memory");
		return NULL;
	}
	e->o = o;
	e->kind = kind;
	e->size_hint = UINT64_MAX;
	b = hash_str(rel, kind) & (o->tabsize - 1);
	e->hnext = o->tab[b];
	o->tab[b] = e;
	if (o->all_tail != NULL)
		o->all_tail->anext = e;
	else
		o->all_head = e;
	o->all_tail = e;
	o->nents++;
	return e;
}

void
enqueue(agent_outputs *o, struct ent *e)
{
	e->state = ST_QUEUED;
	e->qnext = NULL;
	if (o->qtail != NULL)
		o->qtail->qnext = e;
	else
		o->qhead = e;
	o->qtail = e;
}

struct ent *
dequeue(agent_outputs *o)
{
	struct ent *e = o->qhead;

	if (e != NULL) {
		o->qhead = e->qnext;
		if (o->qhead == NULL)
			o->qtail = NULL;
		e->qnext = NULL;
	}
	return e;
}

int
stat_differs(const agent_out_stat *a, const agent_out_stat *b)
{
	return a->dev != b->dev || a->ino != b->ino || a->size != b->size ||
	       a->mtime_ns != b->mtime_ns;
}

/* ---------------------------------------------------------------- public */

int
agent_outputs_mkdir(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	size_t n = strlen(dir), i;
	struct stat sb;

	if (n == 0 || n >= sizeof(path)) {
		snprintf(err, errlen, "the output directory path is empty or too long");
		return CIVIS_EINVAL;
	}
	memcpy(path, dir, n + 1);
	for (i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		path[i] = '\0';
		if (mkdir(path, 0777) != 0 && errno != EEXIST &&
		    !(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) {
			char q[SHOW_MAX];

			agent_outputs_quote(q, sizeof(q), path);
			snprintf(err, errlen, "cannot create the output directory %s: %s", q,
			         strerror(errno));
			return CIVIS_ESYS;
		}
		if (i < n)
			path[i] = '/';
	}
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		char q[SHOW_MAX];

		agent_outputs_quote(q, sizeof(q), dir);
		snprintf(err, errlen, "the output directory %s is not a directory", q);
		return CIVIS_EINVAL;
	}
	return CIVIS_OK;
}

int
agent_outputs_new(agent_outputs **out, civis_loop *loop, civis_client *client,
                  const agent_outputs_opts *opts, char *err, size_t errlen)
{
	agent_outputs *o = NULL;
	size_t i, n;
	int rc;

	*out = NULL;
	if (errlen > 0)
		err[0] = '\0';
	if (loop == NULL || client == NULL || opts == NULL || opts->dir == NULL ||
	    opts->dir[0] == '\0' || opts->note == NULL || opts->run == NULL) {
		snprintf(err, errlen, "outputs: missing loop, client, run, directory or note");
		return CIVIS_EINVAL;
	}
	o = calloc(1, sizeof(*o));
	if (o == NULL) {
		rc = CIVIS_ENOMEM;
		goto nomem;
	}
	o->ifd = -1;
	o->loop = loop;
	o->client = client;
	o->run = opts->run;
	o->redact = opts->redact;
	o->note = opts->note;
	o->ud = opts->ud;
	o->gzip = opts->gzip;
	o->threshold = opts->multipart_threshold;
	o->concurrency = opts->concurrency;
	if (opts->narchives > 0) {
		o->archives = calloc(opts->narchives, sizeof(*o->archives));
		if (o->archives == NULL) {
			rc = CIVIS_ENOMEM;
			goto nomem;
		}
	}
	for (i = 0; i < opts->narchives; i++) {
		char buf[PATH_MAX];

		rc = agent_outputs_check_archive(buf, sizeof(buf), opts->archives[i], err, errlen);
		if (rc != CIVIS_OK)
			goto out;
		o->archives[o->narchives] = strdup(buf);
		if (o->archives[o->narchives] == NULL) {
			rc = CIVIS_ENOMEM;
			goto nomem;
		}
		o->narchives++;
	}
	if ((opts->expires_at != NULL && (o->expires_at = strdup(opts->expires_at)) == NULL) ||
	    (opts->tmp_dir != NULL && (o->tmp_dir = strdup(opts->tmp_dir)) == NULL) ||
	    (o->shown = strdup(opts->dir)) == NULL) {
		rc = CIVIS_ENOMEM;
		goto nomem;
	}
	n = strlen(o->shown);
	while (n > 1 && o->shown[n - 1] == '/')
		o->shown[--n] = '\0';
	rc = agent_outputs_mkdir(o->shown, err, errlen);
	if (rc != CIVIS_OK)
		goto out;
	o->root = realpath(o->shown, NULL);
	if (o->root == NULL) {
		char q[SHOW_MAX];

		agent_outputs_quote(q, sizeof(q), o->shown);
		snprintf(err, errlen, "cannot resolve the output directory %s: %s", q,
		         strerror(errno));
		rc = CIVIS_ESYS;
		goto out;
	}
	o->rules.root = o->root;
	o->rules.shown = o->shown;
	o->rules.archives = (const char *const *)o->archives;
	o->rules.narchives = o->narchives;
	o->rules.archive_dirs = opts->archive_dirs;
	o->rules.max_items = AGENT_OUTPUTS_MAX_FILES;

	start_watching(o);
	*out = o;
	return CIVIS_OK;
nomem:
	snprintf(err, errlen, "outputs: out of memory");
out:
	agent_outputs_free(o);
	return rc;
}

void
agent_outputs_command_exited(agent_outputs *o)
{
	agent_out_scan s;
	struct ent *e;
	size_t i;
	int rc;

	if (o == NULL || o->exiting)
		return;
	/* what happens in DIR from now on is seen by the scan below */
	stop_watching(o);
	o->exiting = 1;
	rc = agent_outputs_scan(&s, &o->rules, "", o->note, o->ud);
	if (rc != CIVIS_OK) {
		onote(o, "error", "cannot scan the output directory: %s", civis_strerror(rc));
		o->failed++;
		memset(&s, 0, sizeof(s));
	}
	o->failed += s.failures;
	for (i = 0; i < s.nitems; i++) {
		const agent_out_item *it = &s.items[i];
		char why[128];

		e = ent_find(o, it->rel, it->kind);
		if (e == NULL) {
			e = ent_new(o, it->rel, it->kind, why, sizeof(why));
			if (e == NULL) {
				char shown[SHOW_MAX];

				show(o, shown, sizeof(shown), it->rel);
				onote(o, "error", "cannot upload %s: %s", shown, why);
				o->failed++;
				continue;
			}
		}
		e->present = 1;
		e->size_hint = it->st.size;
		switch (e->state) {
		case ST_NEW:
		case ST_FAILED:
			e->err[0] = '\0';
			enqueue(o, e);
			break;
		case ST_DONE:
			if (e->dirty || stat_differs(&it->st, &e->start))
				enqueue(o, e);
			break;
		case ST_QUEUED:
		case ST_UPLOADING:
			break;
		}
	}
	for (i = 0; i < o->narchives; i++) {
		e = ent_find(o, o->archives[i], AGENT_OUT_ARCHIVE);
		if (e == NULL || !e->present) {
			char shown[SHOW_MAX];

			show(o, shown, sizeof(shown), o->archives[i]);
			onote(o, "error", "cannot archive %s: no such directory", shown);
			o->failed++;
		}
	}
	/* what was uploaded or queued during the run but is gone now */
	for (e = o->all_head; e != NULL; e = e->anext) {
		char shown[SHOW_MAX];

		if (e->present)
			continue;
		show(o, shown, sizeof(shown), e->rel);
		if (e->state == ST_UPLOADING && e->u != NULL) {
			onote(o, "warn", "%s was removed before the command exited: not uploaded",
			      shown);
			e->canceling = 1;
			engine.upload_cancel(e->u);
		} else if (e->state == ST_QUEUED) {
			onote(o, "warn", "%s was removed before the command exited: not uploaded",
			      shown);
			e->state = ST_FAILED;
		} else if (e->state == ST_DONE) {
			onote(o, "warn", "%s was removed before the command exited: not registered",
			      shown);
		}
	}
	agent_outputs_scan_dispose(&s);
	/* the queue was filled in name order: uploads at exit start in that order */
	pump(o);
}

int
agent_outputs_idle(const agent_outputs *o)
{
	if (o == NULL)
		return 1;
	if (o->inflight > 0 || o->qhead != NULL || o->reg_inflight)
		return 0;
	return !o->exiting || o->reg_finished;
}

unsigned
agent_outputs_failed(const agent_outputs *o)
{
	return o != NULL ? o->failed : 0;
}

void
agent_outputs_report_unfinished(agent_outputs *o)
{
	struct ent *e;
	char shown[SHOW_MAX];

	if (o == NULL)
		return;
	for (e = o->all_head; e != NULL; e = e->anext) {
		if (o->exiting && !e->present)
			continue;
		show(o, shown, sizeof(shown), e->rel);
		if (e->state == ST_QUEUED || e->state == ST_UPLOADING)
			onote(o, "error", "output %s: upload not finished", shown);
		else if (e->state == ST_DONE && !e->registered)
			onote(o, "error", "output %s: uploaded as file %lld but not registered",
			      shown, (long long)e->file_id);
		else if (e->state == ST_NEW || (e->state == ST_FAILED && !o->exiting))
			onote(o, "error", "output %s: not uploaded", shown);
	}
}

void
agent_outputs_free(agent_outputs *o)
{
	struct ent *e, *next;
	size_t i;

	if (o == NULL)
		return;
	o->freeing = 1;
	for (e = o->all_head; e != NULL; e = e->anext) {
		if (e->state == ST_UPLOADING && e->u != NULL) {
			civis_upload *u = e->u;

			e->canceling = 1;
			engine.upload_cancel(u);
		}
	}
	while (o->reg_toks != NULL) {
		struct reg_token *t = o->reg_toks;

		o->reg_toks = t->next;
		t->o = NULL;             /* its callback frees it */
	}
	stop_watching(o);
	for (e = o->all_head; e != NULL; e = next) {
		next = e->anext;
		free(e->rel);
		free(e->name);
		free(e);
	}
	for (i = 0; i < o->narchives; i++)
		free(o->archives[i]);
	free(o->archives);
	free(o->tab);
	free(o->regs);
	free(o->root);
	free(o->shown);
	free(o->expires_at);
	free(o->tmp_dir);
	free(o);
}
