/* outputs.c: the output directory while the command runs and after: inotify,
 * the upload queue (at most AGENT_OUTPUTS_MAX_INFLIGHT at once), the final
 * scan, and registration in name order. The rules are in outputs.h; the
 * pure parts (scan, names, quoting) in outputs_scan.c. */
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
#include "outputs.h"

#define SHOW_MAX     1024
#define NOTE_MAX     (SHOW_MAX * 2 + 512)
#define MAX_WD       (1 << 20)          /* inotify watch descriptors, at most */
#define WATCH_MASK   (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | \
                      IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | \
                      IN_EXCL_UNLINK)
#define READS_PER_WAKE 64

enum ent_state { ST_NEW = 0, ST_QUEUED, ST_UPLOADING, ST_DONE, ST_FAILED };

struct ent {
	struct agent_outputs *o;
	char *rel;                  /* relative to DIR, raw bytes */
	char *name;                 /* Civis name */
	agent_out_kind kind;        /* AGENT_OUT_FILE or AGENT_OUT_ARCHIVE */
	enum ent_state state;
	int dirty;                  /* changed since its latest upload started */
	int present;                /* found by the final scan */
	int canceling;              /* we cancel it: the done that follows is ours */
	int registered;
	unsigned exit_tries;        /* uploads started after the command exited */
	agent_out_stat start;       /* when its latest upload started */
	civis_upload *u;
	int have;                   /* an upload succeeded: */
	int64_t file_id;
	char sha[65];
	uint64_t bytes;
	char err[256];              /* why the latest attempt failed */
	struct ent *hnext;          /* hash chain */
	struct ent *qnext;          /* upload queue */
	struct ent *anext;          /* every entry, in creation order */
};

struct reg_token {                  /* outlives the outputs while in flight */
	struct agent_outputs *o;
};

struct agent_outputs {
	civis_loop *loop;
	civis_client *client;
	agent_note_fn note;
	void *ud;
	char *root;
	char *shown;
	char **archives;
	size_t narchives;
	int gzip;
	char *expires_at;
	char *tmp_dir;
	uint64_t threshold;
	unsigned concurrency;
	agent_out_rules rules;

	struct ent **tab;
	size_t tabsize, nents;
	struct ent *all_head, *all_tail;
	struct ent *qhead, *qtail;
	unsigned inflight;
	int pumping;

	int ifd;
	int io_added;
	char **wdrel;               /* watch descriptor -> directory rel */
	size_t nwdrel;
	size_t nwatches;
	int warned_watch;
	int warned_root;
	unsigned rebuilds;          /* watch maps rebuilt (overflow, moves) */

	int exiting;
	int freeing;
	struct ent **regs;
	size_t nregs, reg_i;
	int reg_started, reg_inflight, reg_finished, in_reg_next;
	struct reg_token *reg_tok;

	unsigned failed;
};

/* ---------------------------------------------------------------- engine */

struct hooks {
	int  (*upload_start)(civis_client *c, const civis_upload_opts *o, civis_upload **out);
	void (*upload_cancel)(civis_upload *u);
	int  (*register_output)(civis_client *c, int64_t file_id,
	                        void (*done)(void *ud, int status, const char *error), void *ud);
};

static struct hooks engine = {
	civis_upload_start, civis_upload_cancel, civis_client_register_output
};

#ifdef CIVIS_UNITTEST
void
agent_outputs__set_hooks(const agent_outputs_hooks *h)
{
	if (h == NULL) {
		engine.upload_start = civis_upload_start;
		engine.upload_cancel = civis_upload_cancel;
		engine.register_output = civis_client_register_output;
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

static void
onote(agent_outputs *o, const char *level, const char *fmt, ...)
{
	char text[NOTE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	o->note(o->ud, level, text);
}

static void
show(const agent_outputs *o, char *buf, size_t len, const char *rel)
{
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

static struct ent *
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
static struct ent *
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

static void
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

static struct ent *
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

static int
stat_differs(const agent_out_stat *a, const agent_out_stat *b)
{
	return a->dev != b->dev || a->ino != b->ino || a->size != b->size ||
	       a->mtime_ns != b->mtime_ns;
}

/* ---------------------------------------------------------------- uploads */

static void pump(agent_outputs *o);
static void maybe_register(agent_outputs *o);

static void
fail(agent_outputs *o, struct ent *e, const char *reason, int quiet_during_run)
{
	char shown[SHOW_MAX];

	snprintf(e->err, sizeof(e->err), "%s", reason);
	e->state = ST_FAILED;
	show(o, shown, sizeof(shown), e->rel);
	if (o->exiting)
		onote(o, "error", "cannot upload %s: %s", shown, reason);
	else if (!quiet_during_run)
		onote(o, "warn", "upload of %s failed: %s; trying again when the command exits",
		      shown, reason);
}

static void
on_progress(void *ud, uint64_t done, uint64_t total, double bytes_per_s)
{
	struct ent *e = ud;
	char shown[SHOW_MAX];

	show(e->o, shown, sizeof(shown), e->rel);
	onote(e->o, "info", "uploading %s: %llu of %llu MiB (%.1f MiB/s)", shown,
	      (unsigned long long)(done >> 20), (unsigned long long)(total >> 20),
	      bytes_per_s / 1048576.0);
}

/* The engine left an entry out of a .tar.gz; text names it. */
static void
on_archive_warn(void *ud, const char *text)
{
	struct ent *e = ud;
	char shown[SHOW_MAX];

	show(e->o, shown, sizeof(shown), e->rel);
	onote(e->o, "warn", "archive of %s: %s", shown, text);
}

static void
on_upload_done(void *ud, int status, int64_t file_id, const char *sha256_hex,
               uint64_t bytes, const char *error)
{
	struct ent *e = ud;
	agent_outputs *o = e->o;
	char shown[SHOW_MAX], reason[256];
	agent_out_stat now;
	agent_out_kind k;

	e->u = NULL;
	if (o->inflight > 0)
		o->inflight--;
	if (o->freeing || e->canceling) {
		e->canceling = 0;
		e->state = ST_FAILED;
		snprintf(e->err, sizeof(e->err), "canceled");
		if (!o->freeing)
			pump(o);
		return;
	}
	show(o, shown, sizeof(shown), e->rel);
	k = e->kind == AGENT_OUT_FILE
	    ? agent_outputs_classify(&o->rules, e->rel, &now, reason, sizeof(reason))
	    : AGENT_OUT_ARCHIVE;
	if (status == CIVIS_OK && file_id > 0) {
		e->state = ST_DONE;
		e->have = 1;
		e->file_id = file_id;
		snprintf(e->sha, sizeof(e->sha), "%s", sha256_hex != NULL ? sha256_hex : "");
		e->bytes = bytes;
		onote(o, "info", "uploaded %s as file %lld (%llu bytes)", shown,
		      (long long)file_id, (unsigned long long)bytes);
		if (k == AGENT_OUT_FILE && stat_differs(&now, &e->start))
			e->dirty = 1;
		if (o->exiting && e->present && e->dirty) {
			if (e->exit_tries < AGENT_OUTPUTS_EXIT_TRIES) {
				enqueue(o, e);
			} else {
				onote(o, "warn", "%s kept changing while it was uploaded: "
				      "registering the copy uploaded last", shown);
				e->dirty = 0;
			}
		}
	} else if (k == AGENT_OUT_GONE) {
		e->state = ST_FAILED;
		snprintf(e->err, sizeof(e->err), "vanished during its upload");
		onote(o, "warn", "%s vanished during its upload", shown);
		if (o->exiting)
			e->present = 0;
	} else {
		char why[512];

		if (status == CIVIS_OK)
			snprintf(why, sizeof(why), "no file id in the answer");
		else
			snprintf(why, sizeof(why), "%s", error != NULL && error[0] != '\0'
			         ? error : civis_strerror(status));
		fail(o, e, why, 0);
	}
	pump(o);
}

/* Start e's upload; when it cannot start, e ends FAILED (or not present). */
static void
start_upload(agent_outputs *o, struct ent *e)
{
	char path[PATH_MAX], reason[256], shown[SHOW_MAX];
	agent_out_stat st;
	agent_out_kind k;
	civis_upload_opts uo;
	civis_upload *u = NULL;
	int rc, fd;

	if (o->exiting && !e->present) {
		e->state = ST_FAILED;
		return;
	}
	k = agent_outputs_classify(&o->rules, e->rel, &st, reason, sizeof(reason));
	show(o, shown, sizeof(shown), e->rel);
	if (k == AGENT_OUT_GONE) {
		e->state = ST_FAILED;
		snprintf(e->err, sizeof(e->err), "vanished before its upload");
		onote(o, "warn", "skipping %s: it vanished before its upload", shown);
		if (o->exiting)
			e->present = 0;
		return;
	}
	if (k != e->kind) {
		if (k == AGENT_OUT_ERROR) {
			fail(o, e, reason, 1);
			return;
		}
		e->state = ST_FAILED;
		if (o->exiting) {
			e->present = 0;
			onote(o, "warn", "skipping %s: %s", shown,
			      reason[0] != '\0' ? reason : "replaced by something else");
		}
		return;
	}
	if (e->kind == AGENT_OUT_FILE) {
		if (!o->gzip && agent_outputs_check_size(st.size, reason, sizeof(reason)) != CIVIS_OK) {
			fail(o, e, reason, 1);
			return;
		}
		if (snprintf(path, sizeof(path), "%s/%s", strcmp(o->root, "/") == 0 ? "" : o->root,
		             e->rel) >= (int)sizeof(path)) {
			fail(o, e, "the path is longer than PATH_MAX", 1);
			return;
		}
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT) {
				e->state = ST_FAILED;
				onote(o, "warn", "skipping %s: it vanished before its upload", shown);
				if (o->exiting)
					e->present = 0;
				return;
			}
			fail(o, e, strerror(errno), 1);
			return;
		}
		close(fd);
	} else if (snprintf(path, sizeof(path), "%s/%s", strcmp(o->root, "/") == 0 ? "" : o->root,
	                    e->rel) >= (int)sizeof(path)) {
		fail(o, e, "the path is longer than PATH_MAX", 1);
		return;
	}
	e->start = st;
	e->dirty = 0;
	if (o->exiting)
		e->exit_tries++;
	memset(&uo, 0, sizeof(uo));
	uo.fd = -1;
	uo.path = path;
	uo.name = e->name;
	uo.kind = e->kind == AGENT_OUT_ARCHIVE ? CIVIS_UPLOAD_TARGZ
	        : o->gzip ? CIVIS_UPLOAD_GZIP : CIVIS_UPLOAD_FILE;
	uo.expires_at = o->expires_at;
	uo.multipart_threshold = o->threshold;
	uo.concurrency = o->concurrency;
	uo.tmp_dir = o->tmp_dir;
	uo.progress = on_progress;
	uo.done = on_upload_done;
	uo.ud = e;
	uo.loop = o->loop;
	uo.warn = on_archive_warn;
	e->state = ST_UPLOADING;
	o->inflight++;
	rc = engine.upload_start(o->client, &uo, &u);
	if (rc != CIVIS_OK) {
		o->inflight--;
		fail(o, e, civis_strerror(rc), 0);
		return;
	}
	/* done may have run already (then u is gone) */
	if (e->state == ST_UPLOADING && e->u == NULL)
		e->u = u;
}

static void
pump(agent_outputs *o)
{
	if (o->pumping || o->freeing)
		return;
	o->pumping = 1;
	while (o->inflight < AGENT_OUTPUTS_MAX_INFLIGHT && o->qhead != NULL) {
		struct ent *e = dequeue(o);

		if (e->state == ST_QUEUED)
			start_upload(o, e);
	}
	o->pumping = 0;
	maybe_register(o);
}

/* ---------------------------------------------------------------- registration */

static int
cmp_reg(const void *a, const void *b)
{
	const struct ent *x = *(struct ent *const *)a, *y = *(struct ent *const *)b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->sha, y->sha);
}

static void reg_next(agent_outputs *o);

static void
on_registered(void *ud, int status, const char *error)
{
	struct reg_token *tok = ud;
	agent_outputs *o = tok->o;
	struct ent *e;

	free(tok);
	if (o == NULL)
		return;   /* the outputs were freed meanwhile */
	o->reg_tok = NULL;
	o->reg_inflight = 0;
	e = o->regs[o->reg_i++];
	if (status == CIVIS_OK) {
		e->registered = 1;
	} else {
		char shown[SHOW_MAX];

		show(o, shown, sizeof(shown), e->rel);
		onote(o, "error", "cannot register %s (file %lld) as an output of the run: %s",
		      shown, (long long)e->file_id,
		      error != NULL && error[0] != '\0' ? error : civis_strerror(status));
		o->failed++;
	}
	if (!o->in_reg_next)
		reg_next(o);
}

/* One registration at a time, in order; the callback may run inside the
 * call (then the loop here goes on) or later (then it calls us). */
static void
reg_next(agent_outputs *o)
{
	o->in_reg_next = 1;
	while (!o->reg_inflight && o->reg_i < o->nregs && !o->freeing) {
		struct ent *e = o->regs[o->reg_i];
		struct reg_token *tok = malloc(sizeof(*tok));
		int rc;

		if (tok == NULL) {
			rc = CIVIS_ENOMEM;
		} else {
			tok->o = o;
			o->reg_tok = tok;
			o->reg_inflight = 1;
			rc = engine.register_output(o->client, e->file_id, on_registered, tok);
		}
		if (rc != CIVIS_OK) {
			char shown[SHOW_MAX];

			if (tok != NULL) {
				free(tok);
				o->reg_tok = NULL;
				o->reg_inflight = 0;
			}
			show(o, shown, sizeof(shown), e->rel);
			onote(o, "error", "cannot register %s (file %lld) as an output of the run: %s",
			      shown, (long long)e->file_id, civis_strerror(rc));
			o->failed++;
			o->reg_i++;
		}
	}
	o->in_reg_next = 0;
	if (!o->reg_inflight && o->reg_i >= o->nregs)
		o->reg_finished = 1;
}

static void
maybe_register(agent_outputs *o)
{
	struct ent *e;
	size_t n = 0, i, k;

	if (!o->exiting || o->reg_started || o->inflight > 0 || o->qhead != NULL || o->freeing)
		return;
	o->reg_started = 1;
	for (e = o->all_head; e != NULL; e = e->anext)
		if (e->present)
			n++;
	if (n > 0) {
		o->regs = calloc(n, sizeof(struct ent *));
		if (o->regs == NULL) {
			onote(o, "error", "cannot register the outputs: out of memory");
			o->failed += (unsigned)n;
			o->reg_finished = 1;
			return;
		}
	}
	for (e = o->all_head; e != NULL; e = e->anext) {
		if (!e->present)
			continue;
		if (e->state == ST_DONE && e->have) {
			o->regs[o->nregs++] = e;
		} else {
			/* fail() said why at level error when it happened after exit */
			if (e->err[0] == '\0') {
				char shown[SHOW_MAX];

				show(o, shown, sizeof(shown), e->rel);
				onote(o, "error", "cannot upload %s", shown);
			}
			o->failed++;
		}
	}
	if (o->nregs > 1)
		qsort(o->regs, o->nregs, sizeof(struct ent *), cmp_reg);
	/* a (name, SHA-256) pair once */
	for (i = 0, k = 0; i < o->nregs; i++) {
		if (k > 0 && cmp_reg(&o->regs[k - 1], &o->regs[i]) == 0 && o->regs[i]->sha[0] != '\0') {
			char shown[SHOW_MAX], first[SHOW_MAX];

			show(o, shown, sizeof(shown), o->regs[i]->rel);
			show(o, first, sizeof(first), o->regs[k - 1]->rel);
			onote(o, "info", "%s has the same name and content as %s: registered once",
			      shown, first);
			continue;
		}
		o->regs[k++] = o->regs[i];
	}
	o->nregs = k;
	reg_next(o);
}

/* ---------------------------------------------------------------- inotify */

static void
watch_add(agent_outputs *o, const char *rel)
{
	char path[PATH_MAX], shown[SHOW_MAX];
	char *copy;
	int wd;

	if (o->ifd < 0)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", o->root, rel) >= (int)sizeof(path))
		return;
	if (o->nwatches >= AGENT_OUTPUTS_MAX_WATCHES) {
		errno = ENOSPC;
		wd = -1;
	} else {
		wd = inotify_add_watch(o->ifd, path, WATCH_MASK);
	}
	if (wd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return;
		if (!o->warned_watch) {
			o->warned_watch = 1;
			show(o, shown, sizeof(shown), rel);
			onote(o, "warn", "cannot watch %s (%s): files there are uploaded when the "
			      "command exits", shown, errno == ENOSPC
			      ? "inotify watch limit reached" : strerror(errno));
		}
		return;
	}
	if ((size_t)wd >= MAX_WD) {
		inotify_rm_watch(o->ifd, wd);
		return;
	}
	if ((size_t)wd >= o->nwdrel) {
		size_t ncap = o->nwdrel ? o->nwdrel : 64;
		char **nw;

		while (ncap <= (size_t)wd)
			ncap *= 2;
		nw = realloc(o->wdrel, ncap * sizeof(*nw));
		if (nw == NULL) {
			inotify_rm_watch(o->ifd, wd);
			return;
		}
		memset(nw + o->nwdrel, 0, (ncap - o->nwdrel) * sizeof(*nw));
		o->wdrel = nw;
		o->nwdrel = ncap;
	}
	copy = strdup(rel);
	if (copy == NULL) {
		inotify_rm_watch(o->ifd, wd);
		return;
	}
	if (o->wdrel[wd] == NULL)
		o->nwatches++;
	free(o->wdrel[wd]);          /* the same directory, seen again (renamed) */
	o->wdrel[wd] = copy;
}

/* Watch sub and every directory under it (silently: the final scan speaks). */
static void
watch_tree(agent_outputs *o, const char *sub)
{
	agent_out_scan s;
	size_t i;

	if (o->ifd < 0 || agent_outputs_scan(&s, &o->rules, sub, NULL, NULL) != CIVIS_OK)
		return;
	for (i = 0; i < s.ndirs; i++)
		watch_add(o, s.dirs[i]);
	agent_outputs_scan_dispose(&s);
}

/* After an overflow or a directory moved: map every directory again, drop
 * the watches of those no longer found under DIR. */
static void
watch_rebuild(agent_outputs *o)
{
	char **old = o->wdrel;
	size_t nold = o->nwdrel, i;

	o->rebuilds++;
	o->wdrel = NULL;
	o->nwdrel = 0;
	o->nwatches = 0;
	watch_tree(o, "");
	for (i = 0; i < nold; i++) {
		if (old[i] == NULL)
			continue;
		if (i >= o->nwdrel || o->wdrel[i] == NULL)
			inotify_rm_watch(o->ifd, (int)i);
		free(old[i]);
	}
	free(old);
}

static void
file_ready(agent_outputs *o, const char *rel)
{
	char reason[256], why[128];
	agent_out_stat st;
	struct ent *e;

	if (agent_outputs_in_archive(&o->rules, rel, 0) != 0)
		return;
	if (agent_outputs_classify(&o->rules, rel, &st, reason, sizeof(reason)) != AGENT_OUT_FILE)
		return;    /* the final scan says why, once */
	e = ent_find(o, rel, AGENT_OUT_FILE);
	if (e == NULL) {
		e = ent_new(o, rel, AGENT_OUT_FILE, why, sizeof(why));
		if (e == NULL)
			return;   /* the final scan reports it */
	}
	switch (e->state) {
	case ST_NEW:
	case ST_FAILED:
		enqueue(o, e);
		pump(o);
		break;
	case ST_UPLOADING:
	case ST_DONE:
		e->dirty = 1;
		break;
	case ST_QUEUED:
		break;
	}
}

static void
stop_watching(agent_outputs *o)
{
	size_t i;

	if (o->io_added) {
		civis_loop_del_io(o->loop, o->ifd);
		o->io_added = 0;
	}
	if (o->ifd >= 0) {
		close(o->ifd);
		o->ifd = -1;
	}
	for (i = 0; i < o->nwdrel; i++)
		free(o->wdrel[i]);
	free(o->wdrel);
	o->wdrel = NULL;
	o->nwdrel = 0;
	o->nwatches = 0;
}

static void
on_inotify(civis_loop *loop, int fd, int revents, void *ud)
{
	agent_outputs *o = ud;
	union {
		struct inotify_event ev;
		char buf[65536];
	} u;
	int rebuild = 0, reads;

	(void)loop;
	(void)revents;
	for (reads = 0; reads < READS_PER_WAKE && o->ifd >= 0; reads++) {
		ssize_t n = read(fd, u.buf, sizeof(u.buf));
		size_t off = 0;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				onote(o, "warn", "reading inotify events failed (%s): the rest is "
				      "uploaded when the command exits", strerror(errno));
				stop_watching(o);
			}
			break;
		}
		if (n == 0)
			break;
		while (off + sizeof(struct inotify_event) <= (size_t)n) {
			struct inotify_event ev;
			const char *name;
			const char *dir;
			char rel[PATH_MAX];
			size_t nlen;

			memcpy(&ev, u.buf + off, sizeof(ev));
			name = u.buf + off + sizeof(ev);
			if (ev.len > (size_t)n - off - sizeof(ev))
				break;
			off += sizeof(ev) + ev.len;
			if (ev.mask & IN_Q_OVERFLOW) {
				rebuild = 1;
				continue;
			}
			if (ev.wd < 0 || (size_t)ev.wd >= o->nwdrel || o->wdrel[ev.wd] == NULL)
				continue;
			dir = o->wdrel[ev.wd];
			if (ev.mask & IN_IGNORED) {
				free(o->wdrel[ev.wd]);
				o->wdrel[ev.wd] = NULL;
				o->nwatches--;
				continue;
			}
			if ((ev.mask & (IN_MOVE_SELF | IN_DELETE_SELF)) && dir[0] == '\0') {
				if (!o->warned_root) {
					o->warned_root = 1;
					onote(o, "warn", "the output directory was moved or removed: "
					      "what is in it at exit is uploaded then");
				}
				continue;
			}
			if (ev.mask & IN_MOVE_SELF) {
				rebuild = 1;   /* a sub-directory moved: its path changed */
				continue;
			}
			nlen = strnlen(name, ev.len);
			if (nlen == 0)
				continue;
			if (snprintf(rel, sizeof(rel), "%s%s%.*s", dir, dir[0] ? "/" : "",
			             (int)nlen, name) >= (int)sizeof(rel))
				continue;
			if (ev.mask & IN_ISDIR) {
				if (ev.mask & IN_MOVED_FROM)
					rebuild = 1;
				else if ((ev.mask & (IN_CREATE | IN_MOVED_TO)) &&
				         agent_outputs_in_archive(&o->rules, rel, 1) == 0)
					watch_tree(o, rel);
				continue;
			}
			if (ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
				file_ready(o, rel);
		}
	}
	if (rebuild && o->ifd >= 0)
		watch_rebuild(o);
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
	    opts->dir[0] == '\0' || opts->note == NULL) {
		snprintf(err, errlen, "outputs: missing loop, client, directory or note");
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

	o->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (o->ifd < 0) {
		onote(o, "warn", "cannot watch the output directory (%s): files are uploaded "
		      "when the command exits", strerror(errno));
	} else if (civis_loop_add_io(loop, o->ifd, POLLIN, on_inotify, o) != CIVIS_OK) {
		onote(o, "warn", "cannot watch the output directory (no room in the loop): "
		      "files are uploaded when the command exits");
		close(o->ifd);
		o->ifd = -1;
	} else {
		o->io_added = 1;
		watch_tree(o, "");
	}
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
	if (o->reg_tok != NULL)
		o->reg_tok->o = NULL;    /* its callback frees it */
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
