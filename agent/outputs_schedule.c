/* outputs_schedule.c: start queued uploads (at most
 * AGENT_OUTPUTS_MAX_INFLIGHT at once) and take their outcome: re-queue a
 * file that changed meanwhile, note what vanished or failed. */
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

/* Open e for its upload: classified from the object itself, opened
 * beneath DIR without following a symlink (agent_outputs_open). -1 when it
 * is not to be uploaded (e is then FAILED, or not present). */
static int
open_entry(agent_outputs *o, struct ent *e, agent_out_stat *st, int *fd, const char *shown)
{
	char reason[256];
	agent_out_kind k = agent_outputs_open(&o->rules, e->rel, st, fd, reason, sizeof(reason));

	if (k == AGENT_OUT_GONE) {
		e->state = ST_FAILED;
		snprintf(e->err, sizeof(e->err), "vanished before its upload");
		onote(o, "warn", "skipping %s: it vanished before its upload", shown);
		if (o->exiting)
			e->present = 0;
		return -1;
	}
	if (k != e->kind) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		if (k == AGENT_OUT_ERROR) {
			fail(o, e, reason, 1);
			return -1;
		}
		e->state = ST_FAILED;
		if (o->exiting) {
			e->present = 0;
			onote(o, "warn", "skipping %s: %s", shown,
			      reason[0] != '\0' ? reason : "replaced by something else");
		}
		return -1;
	}
	if (e->kind == AGENT_OUT_FILE && !o->gzip &&
	    agent_outputs_check_size(st->size, reason, sizeof(reason)) != CIVIS_OK) {
		close(*fd);
		*fd = -1;
		fail(o, e, reason, 1);
		return -1;
	}
	return 0;
}

/* Start e's upload; when it cannot start, e ends FAILED (or not present). */
static void
start_upload(agent_outputs *o, struct ent *e)
{
	char path[PATH_MAX], shown[SHOW_MAX];
	agent_out_stat st;
	civis_upload_opts uo;
	civis_upload *u = NULL;
	int rc, fd = -1;

	if (o->exiting && !e->present) {
		e->state = ST_FAILED;
		return;
	}
	show(o, shown, sizeof(shown), e->rel);
	if (open_entry(o, e, &st, &fd, shown) != 0)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", strcmp(o->root, "/") == 0 ? "" : o->root,
	             e->rel) >= (int)sizeof(path)) {
		close(fd);
		fail(o, e, "the path is longer than PATH_MAX", 1);
		return;
	}
	e->start = st;
	e->dirty = 0;
	if (o->exiting)
		e->exit_tries++;
	civis_upload_opts_init(&uo);
	uo.fd = fd;
	uo.path = path;           /* for messages only: the upload reads fd */
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
	close(fd);                /* the upload dup()ed it */
	if (rc != CIVIS_OK) {
		o->inflight--;
		fail(o, e, civis_strerror(rc), 0);
		return;
	}
	/* done may have run already (then u is gone) */
	if (e->state == ST_UPLOADING && e->u == NULL)
		e->u = u;
}

void
pump(agent_outputs *o)
{
	if (o->pumping || o->freeing)
		return;
	o->pumping = 1;
	/* in queue order: up to AGENT_OUTPUTS_MAX_INFLIGHT files, more while
	 * the next is small (its requests, not its bytes, take the time) */
	while (o->qhead != NULL && o->inflight < AGENT_OUTPUTS_SMALL_INFLIGHT) {
		struct ent *e = o->qhead;

		if (e->state == ST_QUEUED && o->inflight >= AGENT_OUTPUTS_MAX_INFLIGHT &&
		    !(e->kind == AGENT_OUT_FILE && e->size_hint <= AGENT_OUTPUTS_SMALL_FILE))
			break;
		(void)dequeue(o);
		if (e->state == ST_QUEUED)
			start_upload(o, e);
	}
	o->pumping = 0;
	maybe_register(o);
}
