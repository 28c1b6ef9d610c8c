/* upload.c: Civis Files uploads on the loop, one state machine per upload:
 * its core (start, create the file, the one body reader, hashing, progress,
 * finish). The form POST is in upload_form.c, multipart in
 * upload_multipart.c, staging in upload_stage.c and upload_tar.c.
 *
 *   [stage: gzip / tar.gz into a temp file, 256 KiB of input per loop turn]
 *   -> POST files/            -> form POST to uploadUrl (fields, then file)
 *   -> POST files/multipart   -> PUT parts (`concurrency` in flight, each
 *                                retried by http.c) -> POST .../complete
 *   -> done() exactly once, then everything is freed.
 *
 * SHA-256 of the bytes sent: staged data is hashed as it is staged; a plain
 * file sent with one form POST is hashed as its body is read (in order; a
 * retry starts it over); a multipart upload hashes in a pass of its own on
 * a helper thread (upload_hash.c). The fd is fstat'ed before and after: a size or mtime
 * change, or a short read, fails the upload. */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "sha256.h"
#include "fileio.h"
#include "upload_int.h"

#define SINGLE_POST_MAX     (5ULL << 30)      /* S3 POST Object limit */
#define PROGRESS_MIN_SIZE   (100ULL << 20)
#define PROGRESS_EVERY_NS   (5ULL * 1000000000ULL)
#define DEFAULT_CONCURRENCY 4u
#define MAX_CONCURRENCY     64u

#define finish civis__upload_finish
#define fail   civis__upload_fail

static void begin_create(civis_upload *u);

static void
u_seterr(civis_upload *u, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(u->err, sizeof(u->err), fmt, ap) < 0)
		u->err[0] = '\0';
	va_end(ap);
}

void
civis__upload_fail(civis_upload *u, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(u->err, sizeof(u->err), fmt, ap) < 0)
		u->err[0] = '\0';
	va_end(ap);
	finish(u, status);
}

static const char *
base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s != NULL && s[1] != '\0' ? s + 1 : p;
}

/* ------------------------------------------------------------- hashing */

void
civis__upload_sha_reset(civis_upload *u)
{
	if (u->sha_ready || u->no_digest)
		return;
	civis__sha256_dispose(&u->sha);
	u->sha_off = 0;
	/* without libcrypto the upload goes on without a digest */
	u->sha_broken = civis__sha256_init(&u->sha) != CIVIS_OK;
	if (u->sha_broken)
		return;
	if (u->size == 0) {
		/* no read will feed it: the digest of nothing */
		unsigned char dig[CIVIS_SHA256_LEN];
		civis__sha256_final(&u->sha, dig);
		civis__sha256_hex(dig, u->sha_hex);
		u->sha_ready = 1;
	}
}


void
civis__upload_sha_feed(civis_upload *u, const void *buf, size_t n, uint64_t off)
{
	if (u->sha_ready || u->sha_broken || off != u->sha_off)
		return;
	civis__sha256_update(&u->sha, buf, n);
	u->sha_off += n;
	if (u->sha_off == u->size) {
		unsigned char dig[CIVIS_SHA256_LEN];
		civis__sha256_final(&u->sha, dig);
		civis__sha256_hex(dig, u->sha_hex);
		u->sha_ready = 1;
	}
}

/* ----------------------------------------------------------- reading */

int
civis__upload_body_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got)
{
	civis__upload_body *b = ud;
	civis_upload *u = b->u;
	size_t r;

	*got = 0;
	if (off >= b->len)
		return CIVIS_OK;
	if (n > b->len - off)
		n = (size_t)(b->len - off);
	if (b->whole && !u->sha_ready) {
		/* a retry reads from 0 again; a jump elsewhere leaves no digest */
		if (off == 0 && (u->sha_off != 0 || u->sha_broken))
			civis__upload_sha_reset(u);
		else if (off != u->sha_off)
			u->sha_broken = 1;
	}
	if (civis__pread_all(u->fd, buf, n, b->off + off, &r) != 0) {
		u_seterr(u, "%s: %s", u->path, strerror(errno));
		u->read_failed = 1;
		return CIVIS_ESYS;
	}
	if (r < n) {
		u->short_read = 1;
		return CIVIS_EINVAL;
	}
	if (b->whole)
		civis__upload_sha_feed(u, buf, n, b->off + off);
	b->pos = off + n;
	*got = n;
	return CIVIS_OK;
}

/* ------------------------------------------------------- progress */

static uint64_t
bytes_sent(const civis_upload *u)
{
	uint64_t n = u->bytes_done;
	unsigned i;

	if (u->parts == NULL)
		return u->form.pos;
	for (i = 0; i < u->nparts; i++)
		if (u->parts[i].req != NULL)
			n += u->parts[i].body.pos;
	return n;
}

static void
progress_tick(civis_loop *loop, void *ud)
{
	civis_upload *u = ud;
	uint64_t now = civis_now_ns(), sent = bytes_sent(u);
	double secs = (double)(now - u->start_ns) / 1e9;

	u->progress_timer = 0;
	if (u->progress != NULL)
		u->progress(u->ud, sent, u->size, secs > 0 ? (double)sent / secs : 0.0);
	if (civis_loop_add_timer(loop, now + PROGRESS_EVERY_NS, progress_tick, u,
	                         &u->progress_timer) != CIVIS_OK)
		u->progress_timer = 0;
}


void
civis__upload_progress_begin(civis_upload *u)
{
	u->start_ns = civis_now_ns();
	if (u->progress == NULL || u->size <= PROGRESS_MIN_SIZE)
		return;
	if (civis_loop_add_timer(u->loop, u->start_ns + PROGRESS_EVERY_NS, progress_tick, u,
	                         &u->progress_timer) != CIVIS_OK)
		u->progress_timer = 0;
}

/* ------------------------------------------------------------ finish */

int
civis__upload_check_file(civis_upload *u)
{
	if (!u->check_changes)
		return CIVIS_OK;
	return civis__upload_check_unchanged(&u->st, u->fd, u->path, u->err, sizeof(u->err));
}

void
civis__upload_fail_short_read(civis_upload *u)
{
	if (civis__upload_check_unchanged(&u->st, u->fd, u->path, u->err, sizeof(u->err)) ==
	    CIVIS_OK)
		u_seterr(u, "%s changed during upload (read came up short of %llu bytes)",
		         u->path, (unsigned long long)u->size);
	finish(u, CIVIS_EINVAL);
}

int
civis__upload_fail_read(civis_upload *u)
{
	if (u->read_failed) {
		finish(u, CIVIS_ESYS);
		return 1;
	}
	if (u->short_read) {
		civis__upload_fail_short_read(u);
		return 1;
	}
	return 0;
}

static void
free_upload(civis_upload *u)
{
	civis__stage_free(u->stage);
	civis__upload_form_dispose(u);
	if (u->fd >= 0)
		(void)close(u->fd);
	civis_file_post_dispose(&u->fp);
	civis_multipart_post_dispose(&u->mp);
	free(u->parts);
	civis__sha256_dispose(&u->sha);
	free(u->api_body);
	free(u->path);
	free(u->name);
	free(u->expires);
	free(u->filename);
	free(u);
}

/* Stop everything in flight, report once, free. */
void
civis__upload_finish(civis_upload *u, int status)
{
	unsigned i;
	int ok = status == CIVIS_OK;

	if (u->finishing)
		return;
	u->finishing = 1;
	u->state = CIVIS__ST_FINISHED;
	if (u->api_req != NULL)
		civis_http_cancel(u->http, u->api_req);
	if (u->form_req != NULL)
		civis_http_cancel(u->http, u->form_req);
	for (i = 0; u->parts != NULL && i < u->nparts; i++)
		if (u->parts[i].req != NULL)
			civis_http_cancel(u->http, u->parts[i].req);
	civis_loop_cancel_timer(u->loop, u->stage_timer);
	civis_loop_cancel_timer(u->loop, u->fail_timer);
	civis_loop_cancel_timer(u->loop, u->progress_timer);
	civis__upload_hash_stop(u);
	if (ok)
		u->err[0] = '\0';
	else if (u->err[0] == '\0')
		u_seterr(u, "upload of %s: %s", u->name, civis_strerror(status));
	u->done(u->ud, status, ok ? u->file_id : 0, ok && u->sha_ready ? u->sha_hex : "",
	        ok ? u->size : bytes_sent(u), u->err);
	free_upload(u);
}

static void
fail_timer_cb(civis_loop *loop, void *ud)
{
	civis_upload *u = ud;

	(void)loop;
	u->fail_timer = 0;
	finish(u, u->fail_status);
}

/* Report a failure found inside civis_upload_start from the loop, so that
 * done still runs exactly once and never before start returns. */
static int
fail_later(civis_upload *u, int status)
{
	u->fail_status = status;
	return civis_loop_add_timer(u->loop, civis_now_ns(), fail_timer_cb, u, &u->fail_timer);
}

/* Text of a failed API call for messages. */
void
civis__upload_api_fail(civis_upload *u, const civis_http_result *res, const char *what)
{
	fail(u, res->status, "upload of %s: %s failed: %s", u->name, what,
	     res->error != NULL && res->error[0] ? res->error : civis_strerror(res->status));
}

/* ------------------------------------------------------ create file */

static void
on_created(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;
	char perr[256];
	int rc;

	u->api_req = NULL;
	if (u->finishing)
		return;
	if (res->status != CIVIS_OK) {
		civis__upload_api_fail(u, res, "creating the file");
		return;
	}
	if (u->parts == NULL && u->nparts == 0) {
		rc = civis_parse_file_post(res->body, res->body_len, &u->fp, perr, sizeof(perr));
		if (rc != CIVIS_OK) {
			fail(u, rc, "upload of %s: bad answer to POST files/: %s", u->name, perr);
			return;
		}
		u->file_id = u->fp.id;
		civis__upload_begin_form(u);
		return;
	}
	rc = civis_parse_multipart_post(res->body, res->body_len, &u->mp, perr, sizeof(perr));
	if (rc != CIVIS_OK) {
		fail(u, rc, "upload of %s: bad answer to POST files/multipart: %s", u->name, perr);
		return;
	}
	if (u->mp.nurls != u->nparts) {
		fail(u, CIVIS_EPROTO, "upload of %s: asked for %u part URLs, got %zu", u->name,
		     u->nparts, u->mp.nurls);
		return;
	}
	u->file_id = u->mp.id;
	civis__upload_begin_parts(u);
}

#ifndef CIVIS_UNITTEST
static
#endif
char *civis__upload_create_body(const char *name, const char *expires, unsigned nparts);

/* {"name":..,"numParts":N (multipart only),"expiresAt":.. | null (never)} */
#ifndef CIVIS_UNITTEST
static
#endif
char *
civis__upload_create_body(const char *name, const char *expires, unsigned nparts)
{
	cJSON *o = cJSON_CreateObject();
	char num[24];
	char *s = NULL;

	if (o == NULL || cJSON_AddStringToObject(o, "name", name) == NULL)
		goto out;
	if (nparts > 0) {
		(void)snprintf(num, sizeof(num), "%u", nparts);
		if (cJSON_AddRawToObject(o, "numParts", num) == NULL)
			goto out;
	}
	if (expires != NULL) {
		if (strcmp(expires, "never") == 0) {
			if (cJSON_AddNullToObject(o, "expiresAt") == NULL)
				goto out;
		} else if (cJSON_AddStringToObject(o, "expiresAt", expires) == NULL) {
			goto out;
		}
	}
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

static void
begin_create(civis_upload *u)
{
	civis_http_spec spec;
	char human[32];
	int rc;

	if (u->size > CIVIS_UPLOAD_MAX_SIZE) {
		civis__upload_human_size(u->size, human, sizeof(human));
		fail(u, CIVIS_ETOOBIG, "%s: %s is over the 5 TiB limit of Civis Files", u->name, human);
		return;
	}
	u->state = CIVIS__ST_CREATING;
	if (u->size > u->threshold) {
		uint64_t n;
		u->part_size = civis_upload_part_size(u->size);
		n = u->size / u->part_size + (u->size % u->part_size != 0);
		u->nparts = (unsigned)n;
		if (u->auto_concurrency) {
			/* civis-python's 4, more when there are cores to send
			 * them and parts enough to share */
			long nc = sysconf(_SC_NPROCESSORS_ONLN);
			if (nc >= 4 && u->nparts >= 16)
				u->concurrency = nc * 2 < 16 ? (unsigned)(nc * 2) : 16;
		}
	}
	u->api_body = civis__upload_create_body(u->name, u->expires, u->nparts);
	if (u->api_body == NULL) {
		fail(u, CIVIS_ENOMEM, "upload of %s: out of memory", u->name);
		return;
	}
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = u->nparts > 0 ? "files/multipart" : "files/";
	spec.what = u->nparts > 0 ? "multipart file creation" : "file creation";
	spec.body = u->api_body;
	spec.body_len = strlen(u->api_body);
	spec.max_response = (size_t)u->nparts * 4096 + CIVIS__UPLOAD_MAX_RESPONSE;
	spec.done = on_created;
	spec.done_ud = u;
	rc = civis_client_call(u->client, &spec, &u->api_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot create the file: %s", u->name, civis_strerror(rc));
}

/* ----------------------------------------------------------- staging */

static void
stage_tick(civis_loop *loop, void *ud)
{
	civis_upload *u = ud;
	int rc;

	u->stage_timer = 0;
	rc = civis__stage_step(u->stage, CIVIS__STAGE_SLICE, u->err, sizeof(u->err));
	if (rc < 0) {
		finish(u, rc);
		return;
	}
	if (rc == 0) {
		if (civis_loop_add_timer(loop, civis_now_ns(), stage_tick, u, &u->stage_timer) !=
		    CIVIS_OK)
			fail(u, CIVIS_ENOMEM, "upload of %s: cannot schedule staging", u->name);
		return;
	}
	u->fd = civis__stage_take_fd(u->stage, &u->size, u->sha_hex);
	civis__stage_free(u->stage);
	u->stage = NULL;
	if (u->fd < 0 || fstat(u->fd, &u->st) != 0) {
		fail(u, CIVIS_ESYS, "upload of %s: staged data lost", u->name);
		return;
	}
	u->sha_ready = u->sha_hex[0] != '\0';
	u->sha_broken = !u->sha_ready;
	u->check_changes = 0;
	begin_create(u);
}

static void
begin_tick(civis_loop *loop, void *ud)
{
	civis_upload *u = ud;

	(void)loop;
	u->stage_timer = 0;
	begin_create(u);
}

/* ----------------------------------------------------------- the API */

static char *
dup_opt(const char *s, int *oom)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*oom = 1;
	return d;
}

/* The file or directory, opened here or dup()ed from o->fd; a failure to
 * open it is reported from the loop. */
static int
open_source(civis_upload *u, const civis_upload_opts *o)
{
	int src = -1, rc;

	if (o->fd >= 0) {
		src = fcntl(o->fd, F_DUPFD_CLOEXEC, 0);
		if (src < 0) {
			u_seterr(u, "%s: %s", o->path, strerror(errno));
			return fail_later(u, CIVIS_ESYS);
		}
	}
	if (o->kind != CIVIS_UPLOAD_FILE) {
		u->state = CIVIS__ST_STAGING;
		rc = civis__stage_new(&u->stage, o->kind, o->path, src, o->tmp_dir, o->warn, o->ud,
		                      u->err, sizeof(u->err));
		if (rc != CIVIS_OK)
			return fail_later(u, rc);
		return civis_loop_add_timer(u->loop, civis_now_ns(), stage_tick, u, &u->stage_timer);
	}
	u->fd = src >= 0 ? src : open(o->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (u->fd < 0 || fstat(u->fd, &u->st) != 0) {
		int e = errno;
		u_seterr(u, "%s: %s", o->path, strerror(e));
		return fail_later(u, e == ENOENT ? CIVIS_ENOTFOUND : CIVIS_ESYS);
	}
	if (!S_ISREG(u->st.st_mode)) {
		u_seterr(u, "%s: not a regular file", o->path);
		return fail_later(u, CIVIS_EINVAL);
	}
	u->size = (uint64_t)u->st.st_size;
	u->check_changes = 1;
	/* from the loop, so that done never runs inside start */
	return civis_loop_add_timer(u->loop, civis_now_ns(), begin_tick, u, &u->stage_timer);
}

void
civis_upload_opts_init(civis_upload_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->fd = -1;
}

int
civis_upload_start(civis_client *c, const civis_upload_opts *o, civis_upload **out)
{
	civis_upload *u;
	int rc, oom = 0;

	if (out != NULL)
		*out = NULL;
	if (c == NULL || o == NULL || o->loop == NULL || o->path == NULL || o->path[0] == '\0' ||
	    o->name == NULL || o->name[0] == '\0' || o->done == NULL ||
	    (o->kind != CIVIS_UPLOAD_FILE && o->kind != CIVIS_UPLOAD_GZIP &&
	     o->kind != CIVIS_UPLOAD_TARGZ))
		return CIVIS_EINVAL;
	u = calloc(1, sizeof(*u));
	if (u == NULL)
		return CIVIS_ENOMEM;
	u->client = c;
	u->http = civis_client_http(c);
	u->loop = o->loop;
	u->fd = -1;
	u->kind = o->kind;
	u->path = dup_opt(o->path, &oom);
	u->name = dup_opt(o->name, &oom);
	u->expires = dup_opt(o->expires_at, &oom);
	u->filename = dup_opt(base_name(o->name), &oom);
	if (oom) {
		rc = CIVIS_ENOMEM;
		goto out;
	}
	u->threshold = o->multipart_threshold ? o->multipart_threshold
	                                      : CIVIS_UPLOAD_DEFAULT_THRESHOLD;
	if (u->threshold > SINGLE_POST_MAX)
		u->threshold = SINGLE_POST_MAX;
	u->concurrency = o->concurrency ? o->concurrency : DEFAULT_CONCURRENCY;
	u->auto_concurrency = o->concurrency == 0;
	if (u->concurrency > MAX_CONCURRENCY)
		u->concurrency = MAX_CONCURRENCY;
	u->no_digest = o->skip_digest != 0;
	u->sha_broken = u->no_digest;
	u->progress = o->progress;
	u->done = o->done;
	u->ud = o->ud;

	rc = open_source(u, o);
out:
	if (rc != CIVIS_OK) {
		/* done is not called when start fails; nothing is in flight yet. */
		civis_loop_cancel_timer(u->loop, u->fail_timer);
		free_upload(u);
		return rc;
	}
	if (out != NULL)
		*out = u;
	return CIVIS_OK;
}

void
civis_upload_cancel(civis_upload *u)
{
	if (u == NULL || u->finishing)
		return;
	u_seterr(u, "upload of %s canceled", u->name);
	finish(u, CIVIS_ECANCELED);
}

#ifdef CIVIS_UNITTEST
/* A bare upload that only knows a form and a file: for testing the form. */
civis_upload *civis__upload_test_form_new(const civis_file_post *fp, int fd, uint64_t size,
                                          const char *filename);
void civis__upload_test_form_free(civis_upload *u, char sha_hex[CIVIS_SHA256_HEX_LEN]);

civis_upload *
civis__upload_test_form_new(const civis_file_post *fp, int fd, uint64_t size,
                            const char *filename)
{
	civis_upload *u;

	u = calloc(1, sizeof(*u));
	if (u == NULL)
		return NULL;
	u->fd = fd;
	u->size = size;
	u->fp = *fp;
	u->filename = strdup(filename);
	u->name = strdup(filename);
	u->path = strdup(filename);
	return u;
}

void
civis__upload_test_form_free(civis_upload *u, char sha_hex[CIVIS_SHA256_HEX_LEN])
{
	memcpy(sha_hex, u->sha_ready ? u->sha_hex : "", u->sha_ready ? CIVIS_SHA256_HEX_LEN : 1);
	memset(&u->fp, 0, sizeof(u->fp)); /* the caller's */
	u->fd = -1;
	free_upload(u);
}
#endif
