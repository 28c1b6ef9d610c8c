/* upload.c: Civis Files uploads on the loop, one state machine per upload.
 *
 *   [stage: gzip / tar.gz into a temp file, 256 KiB of input per loop turn]
 *   -> POST files/            -> form POST to uploadUrl (fields, then file)
 *   -> POST files/multipart   -> PUT parts (`concurrency` in flight, each
 *                                retried by http.c) -> POST .../complete
 *   -> done() exactly once, then everything is freed.
 *
 * SHA-256 of the bytes sent: staged data is hashed as it is staged; a plain
 * file sent with one form POST is hashed in the read callback (the body is
 * read in order; a retry starts it over); a multipart upload reads its parts
 * in parallel, so a sequential pass over the same open fd hashes the file,
 * 1 MiB per loop turn, alongside the parts. The fd is fstat'ed before and
 * after: a size or mtime change, or a short read, fails the upload. */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl.h"
#include "civis/civis.h"
#include "civis/upload.h"
#include "sha256.h"
#include "upload_int.h"

#define UPLOAD_ERR_MAX      512
#define UPLOAD_MAX_RESPONSE (64u << 10)
#define SINGLE_POST_MAX     (5ULL << 30)      /* S3 POST Object limit */
#define PROGRESS_MIN_SIZE   (100ULL << 20)
#define PROGRESS_EVERY_NS   (5ULL * 1000000000ULL)
#define HASH_SLICE          (1u << 20)
#define HASH_BUF            (64u << 10)
#define DEFAULT_CONCURRENCY 4u
#define MAX_CONCURRENCY     64u

typedef enum upload_state {
	ST_STAGING,
	ST_CREATING,
	ST_SENDING,
	ST_COMPLETING,
	ST_FINISHED
} upload_state;

typedef struct upload_part {
	civis_upload *u;
	unsigned idx;
	uint64_t off, len;
	uint64_t pos;            /* bytes read in the current try */
	civis_http_req *req;
	int done;
} upload_part;

struct civis_upload {
	civis_client *client;
	civis_http *http;
	civis_loop *loop;
	char *path, *name, *expires, *filename;
	civis_upload_kind kind;
	uint64_t threshold;
	unsigned concurrency;
	void (*progress)(void *ud, uint64_t done, uint64_t total, double bytes_per_s);
	void (*done)(void *ud, int status, int64_t file_id, const char *sha256_hex,
	             uint64_t bytes, const char *error);
	void *ud;

	upload_state state;
	int finishing;
	civis__stage *stage;
	civis_timer_id stage_timer, fail_timer, progress_timer, hash_timer;
	int fail_status;

	int fd;
	struct stat st;          /* of fd when the upload began */
	int check_changes;       /* fd is the user's file, not our staged copy */
	uint64_t size;
	int short_read;          /* a read callback found the file shorter */
	int read_failed;         /* a read callback failed; err says why */
	uint64_t start_ns;

	civis_sha256 sha;
	int sha_ready;           /* sha_hex is final */
	int sha_broken;          /* a rewind we could not follow: no digest */
	uint64_t sha_off;
	char sha_hex[CIVIS_SHA256_HEX_LEN];
	unsigned char *hash_buf; /* HASH_BUF, multipart hash pass only */

	civis_http_req *api_req;
	char *api_body;
	int64_t file_id;

	civis_file_post fp;
	civis_http_req *form_req;
	curl_mime *mime;
	uint64_t form_off;

	civis_multipart_post mp;
	upload_part *parts;
	unsigned nparts, next_part, inflight, parts_done;
	uint64_t part_size, bytes_done;

	char err[UPLOAD_ERR_MAX];
};

static void finish(civis_upload *u, int status);
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

static void
fail(civis_upload *u, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(u->err, sizeof(u->err), fmt, ap) < 0)
		u->err[0] = '\0';
	va_end(ap);
	finish(u, status);
}

/* ------------------------------------------------------------ pure parts */

/* 64 x 64 -> 128 bit product, as (hi, lo). */
static void
mul_u64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
	uint64_t a0 = a & 0xffffffffu, a1 = a >> 32;
	uint64_t b0 = b & 0xffffffffu, b1 = b >> 32;
	uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
	uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);

	*lo = (mid << 32) | (p00 & 0xffffffffu);
	*hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/* Smallest r with r * r >= n, n = nhi * 2^64 + nlo. */
static uint64_t
ceil_sqrt_u128(uint64_t nhi, uint64_t nlo)
{
	uint64_t lo = 0, hi = (uint64_t)1 << 48; /* (2^48)^2 = 2^96 > any n here */

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2, shi, slo;
		mul_u64(mid, mid, &shi, &slo);
		if (shi > nhi || (shi == nhi && slo >= nlo))
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

uint64_t
civis_upload_part_size(uint64_t size)
{
	uint64_t nhi, nlo, ps, min_for_count;

	mul_u64(CIVIS_UPLOAD_MIN_PART, size, &nhi, &nlo);
	ps = ceil_sqrt_u128(nhi, nlo);
	if (ps < CIVIS_UPLOAD_MIN_PART)
		ps = CIVIS_UPLOAD_MIN_PART;
	min_for_count = size / CIVIS_UPLOAD_MAX_PARTS + (size % CIVIS_UPLOAD_MAX_PARTS != 0);
	if (ps < min_for_count)
		ps = min_for_count;
	return ps;
}

/* Copy the text between <tag> and </tag> (first occurrence) with the five
 * XML entities decoded and control characters as spaces. 1 when found. */
static int
xml_text(const char *body, size_t len, const char *tag, char *buf, size_t buflen)
{
	char open[32], close[32];
	const char *p, *end, *q;
	size_t o = 0;
	int n1, n2;

	buf[0] = '\0';
	n1 = snprintf(open, sizeof(open), "<%s>", tag);
	n2 = snprintf(close, sizeof(close), "</%s>", tag);
	if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(open) || (size_t)n2 >= sizeof(close))
		return 0;
	p = memmem(body, len, open, (size_t)n1);
	if (p == NULL)
		return 0;
	p += n1;
	end = memmem(p, len - (size_t)(p - body), close, (size_t)n2);
	if (end == NULL)
		return 0;
	for (q = p; q < end && o + 1 < buflen; q++) {
		static const struct { const char *ent; char c; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' }
		};
		char c = *q;
		size_t i;

		if (c == '&') {
			for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
				size_t el = strlen(ents[i].ent);
				if ((size_t)(end - q) >= el && memcmp(q, ents[i].ent, el) == 0) {
					c = ents[i].c;
					q += el - 1;
					break;
				}
			}
		}
		if ((unsigned char)c < 0x20 || c == 0x7f)
			c = ' ';
		buf[o++] = c;
	}
	buf[o] = '\0';
	return 1;
}

#ifndef CIVIS_UNITTEST
static
#endif
void civis__upload_storage_error(long http_code, const char *body, size_t len,
                                 char *buf, size_t buflen);

/* "400 EntityTooSmall: Your proposed upload..." from an S3 error answer, or
 * the best one line of any other body. */
#ifndef CIVIS_UNITTEST
static
#endif
void
civis__upload_storage_error(long http_code, const char *body, size_t len,
                            char *buf, size_t buflen)
{
	char code[64], msg[256];
	int have_code, have_msg;

	if (buflen == 0)
		return;
	have_code = body != NULL && xml_text(body, len, "Code", code, sizeof(code));
	have_msg = body != NULL && xml_text(body, len, "Message", msg, sizeof(msg));
	if (have_code || have_msg) {
		(void)snprintf(buf, buflen, "%ld%s%s%s%s", http_code,
		               have_code ? " " : "", have_code ? code : "",
		               have_msg ? ": " : "", have_msg ? msg : "");
		return;
	}
	msg[0] = '\0';
	if (body != NULL && len > 0)
		civis_parse_error_text(body, len, msg, sizeof(msg));
	(void)snprintf(buf, buflen, "%ld%s%s", http_code, msg[0] ? ": " : "", msg);
}

static const char *
base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s != NULL && s[1] != '\0' ? s + 1 : p;
}

/* ------------------------------------------------------------- hashing */

static void
sha_reset(civis_upload *u)
{
	if (u->sha_ready)
		return;
	civis__sha256_init(&u->sha);
	u->sha_off = 0;
	u->sha_broken = 0;
	if (u->size == 0) {
		/* no read will feed it: the digest of nothing */
		unsigned char dig[CIVIS_SHA256_LEN];
		civis__sha256_final(&u->sha, dig);
		civis__sha256_hex(dig, u->sha_hex);
		u->sha_ready = 1;
	}
}

/* Feed bytes read at `off`; only the next bytes in order count. */
static void
sha_feed(civis_upload *u, const void *buf, size_t n, uint64_t off)
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

/* Read for curl at `off`: a short read means the file shrank under us. */
static size_t
read_at(civis_upload *u, char *buf, size_t want, uint64_t off)
{
	ssize_t r;

	if (want == 0)
		return 0;
	r = civis__upload_pread(u->fd, buf, want, off);
	if (r < 0 || (size_t)r < want) {
		if (r < 0) {
			u_seterr(u, "%s: %s", u->path, strerror(errno));
			u->read_failed = 1;
		} else {
			u->short_read = 1;
		}
		return CURL_READFUNC_ABORT;
	}
	sha_feed(u, buf, (size_t)r, off);
	return (size_t)r;
}

/* ------------------------------------------------------- progress */

static uint64_t
bytes_sent(const civis_upload *u)
{
	uint64_t n = u->bytes_done;
	unsigned i;

	if (u->parts == NULL)
		return u->form_off;
	for (i = 0; i < u->nparts; i++)
		if (u->parts[i].req != NULL)
			n += u->parts[i].pos;
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

static void
progress_begin(civis_upload *u)
{
	u->start_ns = civis_now_ns();
	if (u->progress == NULL || u->size <= PROGRESS_MIN_SIZE)
		return;
	if (civis_loop_add_timer(u->loop, u->start_ns + PROGRESS_EVERY_NS, progress_tick, u,
	                         &u->progress_timer) != CIVIS_OK)
		u->progress_timer = 0;
}

/* ------------------------------------------------------------ finish */

static int
check_file(civis_upload *u)
{
	int rc;

	if (!u->check_changes)
		return CIVIS_OK;
	rc = civis__upload_check_unchanged(&u->st, u->fd, u->path, u->err, sizeof(u->err));
	return rc;
}

/* Message for a short read seen by a read callback. */
static void
fail_short_read(civis_upload *u)
{
	if (civis__upload_check_unchanged(&u->st, u->fd, u->path, u->err, sizeof(u->err)) ==
	    CIVIS_OK)
		u_seterr(u, "%s changed during upload (read came up short of %llu bytes)",
		         u->path, (unsigned long long)u->size);
	finish(u, CIVIS_EINVAL);
}

static void
free_upload(civis_upload *u)
{
	civis__stage_free(u->stage);
	if (u->mime != NULL)
		curl_mime_free(u->mime);
	if (u->fd >= 0)
		(void)close(u->fd);
	civis_file_post_dispose(&u->fp);
	civis_multipart_post_dispose(&u->mp);
	free(u->parts);
	free(u->hash_buf);
	free(u->api_body);
	free(u->path);
	free(u->name);
	free(u->expires);
	free(u->filename);
	free(u);
}

/* Stop everything in flight, report once, free. */
static void
finish(civis_upload *u, int status)
{
	unsigned i;
	int ok = status == CIVIS_OK;

	if (u->finishing)
		return;
	u->finishing = 1;
	u->state = ST_FINISHED;
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
	civis_loop_cancel_timer(u->loop, u->hash_timer);
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
static void
api_fail(civis_upload *u, const civis_http_result *res, const char *what)
{
	fail(u, res->status, "upload of %s: %s failed: %s", u->name, what,
	     res->error != NULL && res->error[0] ? res->error : civis_strerror(res->status));
}

/* --------------------------------------------------------- complete */

static void
on_complete(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;

	u->api_req = NULL;
	if (u->finishing)
		return;
	if (res->status != CIVIS_OK) {
		api_fail(u, res, "completing the multipart upload");
		return;
	}
	finish(u, CIVIS_OK);
}

static void
maybe_complete(civis_upload *u)
{
	char path[64];
	civis_http_spec spec;
	int rc;

	if (u->parts_done < u->nparts || !(u->sha_ready || u->sha_broken) ||
	    u->state != ST_SENDING)
		return;
	rc = check_file(u);
	if (rc != CIVIS_OK) {
		finish(u, rc);
		return;
	}
	u->state = ST_COMPLETING;
	(void)snprintf(path, sizeof(path), "files/multipart/%lld/complete",
	               (long long)u->file_id);
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = path;
	spec.what = "multipart complete";
	spec.max_response = UPLOAD_MAX_RESPONSE;
	spec.done = on_complete;
	spec.done_ud = u;
	rc = civis_client_call(u->client, &spec, &u->api_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot complete the multipart upload: %s", u->name,
		     civis_strerror(rc));
}

/* ------------------------------------------------------ hash pass */

static void
hash_tick(civis_loop *loop, void *ud)
{
	civis_upload *u = ud;
	size_t done = 0;

	u->hash_timer = 0;
	while (!u->sha_ready && done < HASH_SLICE) {
		uint64_t left = u->size - u->sha_off;
		size_t want = left < HASH_BUF ? (size_t)left : HASH_BUF;
		ssize_t r = civis__upload_pread(u->fd, u->hash_buf, want, u->sha_off);

		if (r < 0) {
			fail(u, CIVIS_ESYS, "%s: %s", u->path, strerror(errno));
			return;
		}
		if ((size_t)r < want) {
			fail_short_read(u);
			return;
		}
		sha_feed(u, u->hash_buf, (size_t)r, u->sha_off);
		done += (size_t)r;
	}
	if (!u->sha_ready) {
		if (civis_loop_add_timer(loop, civis_now_ns(), hash_tick, u, &u->hash_timer) !=
		    CIVIS_OK)
			fail(u, CIVIS_ENOMEM, "upload of %s: cannot schedule hashing", u->name);
		return;
	}
	maybe_complete(u);
}

/* ---------------------------------------------------------- parts */

static size_t
part_read(char *buf, size_t size, size_t nitems, void *ud)
{
	upload_part *p = ud;
	uint64_t left = p->len - p->pos;
	size_t want = size * nitems;
	size_t r;

	if (want > left)
		want = (size_t)left;
	r = read_at(p->u, buf, want, p->off + p->pos);
	if (r != CURL_READFUNC_ABORT)
		p->pos += r;
	return r;
}

static int
part_seek(void *ud, curl_off_t offset, int origin)
{
	upload_part *p = ud;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > p->len)
		return CURL_SEEKFUNC_CANTSEEK;
	p->pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int
part_body(void *ud, CURL *easy)
{
	upload_part *p = ud;

	p->pos = 0;
	if (curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_READFUNCTION, part_read) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_READDATA, (void *)p) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, part_seek) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_SEEKDATA, (void *)p) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)p->len) != CURLE_OK)
		return CIVIS_EINVAL;
	return CIVIS_OK;
}

static void launch_parts(civis_upload *u);

static void
on_part_done(void *ud, const civis_http_result *res)
{
	upload_part *p = ud;
	civis_upload *u = p->u;
	char text[UPLOAD_ERR_MAX / 2];

	p->req = NULL;
	u->inflight--;
	if (u->finishing)
		return;
	if (u->read_failed) {
		finish(u, CIVIS_ESYS);
		return;
	}
	if (u->short_read) {
		fail_short_read(u);
		return;
	}
	if (res->status != CIVIS_OK) {
		if (res->http_code > 0) {
			civis__upload_storage_error(res->http_code, res->body, res->body_len,
			                            text, sizeof(text));
			fail(u, res->status, "upload of %s: part %u of %u: storage answered %s%s",
			     u->name, p->idx + 1, u->nparts, text,
			     res->attempts > 1 ? " (after retries)" : "");
		} else {
			fail(u, res->status, "upload of %s: part %u of %u: %s", u->name, p->idx + 1,
			     u->nparts, res->error != NULL && res->error[0] ? res->error
			                                                   : civis_strerror(res->status));
		}
		return;
	}
	if (res->etag == NULL || res->etag[0] == '\0') {
		fail(u, CIVIS_EPROTO, "upload of %s: part %u of %u: storage answered %ld without an ETag",
		     u->name, p->idx + 1, u->nparts, res->http_code);
		return;
	}
	p->done = 1;
	u->parts_done++;
	u->bytes_done += p->len;
	launch_parts(u);
	if (!u->finishing)
		maybe_complete(u);
}

static void
launch_parts(civis_upload *u)
{
	while (!u->finishing && u->inflight < u->concurrency && u->next_part < u->nparts) {
		upload_part *p = &u->parts[u->next_part++];
		char what[48];
		civis_http_spec spec;
		int rc;

		(void)snprintf(what, sizeof(what), "part %u upload", p->idx + 1);
		memset(&spec, 0, sizeof(spec));
		spec.method = "PUT";
		spec.url = u->mp.upload_urls[p->idx];
		spec.what = what;
		spec.body_fn = part_body;
		spec.body_ud = p;
		spec.max_response = UPLOAD_MAX_RESPONSE;
		spec.done = on_part_done;
		spec.done_ud = p;
		rc = civis_http_start(u->http, &spec, &p->req);
		if (rc != CIVIS_OK) {
			fail(u, rc, "upload of %s: cannot start part %u: %s", u->name, p->idx + 1,
			     civis_strerror(rc));
			return;
		}
		u->inflight++;
	}
}

static void
begin_parts(civis_upload *u)
{
	unsigned i;

	u->parts = calloc(u->nparts, sizeof(*u->parts));
	if (u->parts == NULL) {
		fail(u, CIVIS_ENOMEM, "upload of %s: out of memory", u->name);
		return;
	}
	for (i = 0; i < u->nparts; i++) {
		upload_part *p = &u->parts[i];
		p->u = u;
		p->idx = i;
		p->off = (uint64_t)i * u->part_size;
		p->len = u->size - p->off < u->part_size ? u->size - p->off : u->part_size;
	}
	u->state = ST_SENDING;
	progress_begin(u);
	if (!u->sha_ready) {
		u->hash_buf = malloc(HASH_BUF);
		if (u->hash_buf == NULL) {
			fail(u, CIVIS_ENOMEM, "upload of %s: out of memory", u->name);
			return;
		}
		sha_reset(u);
		if (civis_loop_add_timer(u->loop, civis_now_ns(), hash_tick, u, &u->hash_timer) !=
		    CIVIS_OK) {
			fail(u, CIVIS_ENOMEM, "upload of %s: cannot schedule hashing", u->name);
			return;
		}
	}
	launch_parts(u);
}

/* --------------------------------------------------------- form POST */

static size_t
form_read(char *buf, size_t size, size_t nitems, void *ud)
{
	civis_upload *u = ud;
	uint64_t left = u->size - u->form_off;
	size_t want = size * nitems, r;

	if (want > left)
		want = (size_t)left;
	r = read_at(u, buf, want, u->form_off);
	if (r != CURL_READFUNC_ABORT)
		u->form_off += r;
	return r;
}

static int
form_seek(void *ud, curl_off_t offset, int origin)
{
	civis_upload *u = ud;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > u->size)
		return CURL_SEEKFUNC_CANTSEEK;
	u->form_off = (uint64_t)offset;
	if (offset == 0)
		sha_reset(u);
	else if ((uint64_t)offset != u->sha_off)
		u->sha_broken = !u->sha_ready;
	return CURL_SEEKFUNC_OK;
}

/* Attach the form to a try: every uploadFields entry in the answer's order,
 * then the file, last, as `file` with its exact size (so curl sends a
 * Content-Length and no chunked encoding). */
#ifndef CIVIS_UNITTEST
static
#endif
int civis__upload_form_body(void *ud, CURL *easy);

#ifndef CIVIS_UNITTEST
static
#endif
int
civis__upload_form_body(void *ud, CURL *easy)
{
	civis_upload *u = ud;
	curl_mime *mime;
	curl_mimepart *part;
	size_t i;

	if (u->mime != NULL) {
		curl_mime_free(u->mime);
		u->mime = NULL;
	}
	u->form_off = 0;
	sha_reset(u);
	mime = curl_mime_init(easy);
	if (mime == NULL)
		return CIVIS_ENOMEM;
	for (i = 0; i < u->fp.nfields; i++) {
		part = curl_mime_addpart(mime);
		if (part == NULL || curl_mime_name(part, u->fp.field_names[i]) != CURLE_OK ||
		    curl_mime_data(part, u->fp.field_values[i], CURL_ZERO_TERMINATED) != CURLE_OK)
			goto oom;
	}
	part = curl_mime_addpart(mime);
	if (part == NULL || curl_mime_name(part, "file") != CURLE_OK ||
	    curl_mime_filename(part, u->filename) != CURLE_OK ||
	    curl_mime_type(part, "application/octet-stream") != CURLE_OK ||
	    curl_mime_data_cb(part, (curl_off_t)u->size, form_read, form_seek, NULL, u) !=
	        CURLE_OK)
		goto oom;
	if (curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime) != CURLE_OK)
		goto oom;
	u->mime = mime;
	return CIVIS_OK;
oom:
	curl_mime_free(mime);
	return CIVIS_ENOMEM;
}

static void
on_form_done(void *ud, const civis_http_result *res)
{
	civis_upload *u = ud;
	char text[UPLOAD_ERR_MAX / 2];
	int rc;

	u->form_req = NULL;
	if (u->mime != NULL) {
		curl_mime_free(u->mime);
		u->mime = NULL;
	}
	if (u->finishing)
		return;
	if (u->read_failed) {
		finish(u, CIVIS_ESYS);
		return;
	}
	if (u->short_read) {
		fail_short_read(u);
		return;
	}
	if (res->status != CIVIS_OK) {
		if (res->http_code > 0) {
			civis__upload_storage_error(res->http_code, res->body, res->body_len,
			                            text, sizeof(text));
			fail(u, res->status, "upload of %s: storage answered %s", u->name, text);
		} else {
			fail(u, res->status, "upload of %s: %s", u->name,
			     res->error != NULL && res->error[0] ? res->error
			                                         : civis_strerror(res->status));
		}
		return;
	}
	rc = check_file(u);
	if (rc != CIVIS_OK) {
		finish(u, rc);
		return;
	}
	finish(u, CIVIS_OK);
}

static void
begin_form(civis_upload *u)
{
	civis_http_spec spec;
	int rc;

	u->state = ST_SENDING;
	progress_begin(u);
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.url = u->fp.upload_url;
	spec.what = "file upload";
	spec.body_fn = civis__upload_form_body;
	spec.body_ud = u;
	spec.max_response = UPLOAD_MAX_RESPONSE;
	spec.done = on_form_done;
	spec.done_ud = u;
	rc = civis_http_start(u->http, &spec, &u->form_req);
	if (rc != CIVIS_OK)
		fail(u, rc, "upload of %s: cannot start the upload: %s", u->name, civis_strerror(rc));
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
		api_fail(u, res, "creating the file");
		return;
	}
	if (u->parts == NULL && u->nparts == 0) {
		rc = civis_parse_file_post(res->body, res->body_len, &u->fp, perr, sizeof(perr));
		if (rc != CIVIS_OK) {
			fail(u, rc, "upload of %s: bad answer to POST files/: %s", u->name, perr);
			return;
		}
		u->file_id = u->fp.id;
		begin_form(u);
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
	begin_parts(u);
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
	u->state = ST_CREATING;
	if (u->size > u->threshold) {
		uint64_t n;
		u->part_size = civis_upload_part_size(u->size);
		n = u->size / u->part_size + (u->size % u->part_size != 0);
		u->nparts = (unsigned)n;
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
	spec.max_response = (size_t)u->nparts * 4096 + UPLOAD_MAX_RESPONSE;
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
	u->sha_ready = 1;
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
	if (u->concurrency > MAX_CONCURRENCY)
		u->concurrency = MAX_CONCURRENCY;
	u->progress = o->progress;
	u->done = o->done;
	u->ud = o->ud;

	if (o->kind == CIVIS_UPLOAD_FILE) {
		u->fd = open(o->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (u->fd < 0 || fstat(u->fd, &u->st) != 0) {
			int e = errno;
			u_seterr(u, "%s: %s", o->path, strerror(e));
			rc = fail_later(u, e == ENOENT ? CIVIS_ENOTFOUND : CIVIS_ESYS);
		} else if (!S_ISREG(u->st.st_mode)) {
			u_seterr(u, "%s: not a regular file", o->path);
			rc = fail_later(u, CIVIS_EINVAL);
		} else {
			u->size = (uint64_t)u->st.st_size;
			u->check_changes = 1;
			/* from the loop, so that done never runs inside start */
			rc = civis_loop_add_timer(u->loop, civis_now_ns(), begin_tick, u,
			                          &u->stage_timer);
		}
	} else {
		u->state = ST_STAGING;
		rc = civis__stage_new(&u->stage, o->kind, o->path, o->tmp_dir, o->warn, o->ud,
		                      u->err, sizeof(u->err));
		if (rc != CIVIS_OK)
			rc = fail_later(u, rc);
		else
			rc = civis_loop_add_timer(u->loop, civis_now_ns(), stage_tick, u,
			                          &u->stage_timer);
	}
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
	char text[UPLOAD_ERR_MAX];

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
	spec.max_response = UPLOAD_MAX_RESPONSE;
	spec.done = on_registered;
	spec.done_ud = r;
	rc = civis_client_call(c, &spec, NULL);
	if (rc != CIVIS_OK)
		free(r);
	return rc;
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

	/* a real upload's http has loaded libcurl by now; this bare one has not */
	if (civis__dl_curl(NULL, 0) != CIVIS_OK)
		return NULL;
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
