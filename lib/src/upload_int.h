/* upload_int.h: what the upload modules share; private to libcivis.
 *
 *   upload.c            the state machine's core: start, create the file,
 *                       the one body reader, hashing, progress, finish
 *   upload_form.c       up to the threshold: one form POST
 *   upload_multipart.c  above it: parts in parallel, then complete
 *   upload_hash.c       the digest of a file sent in parts (helper thread)
 *   upload_stage.c      gzip into a temporary file (tar.gz: upload_tar.c)
 *   upload_util.c       S3 error texts, sizes, the file-changed check
 *   (temporary files and positional reads: fileio.h)
 *
 * Staging turns a file (gzip) or a directory (tar.gz) into one anonymous
 * temporary file, a bounded slice per call, so the loop thread never blocks
 * for long; the SHA-256 of the staged bytes is computed as they are written. */
#ifndef CIVIS_UPLOAD_INT_H
#define CIVIS_UPLOAD_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "civis/client.h"
#include "civis/upload.h"
#include "sha256.h"

#define CIVIS__STAGE_SLICE     (256u << 10) /* input bytes per loop turn: ~10 ms of deflate */
#define CIVIS__STAGE_BUF       (64u << 10) /* read and deflate buffers */
#define CIVIS__TAR_MAX_DEPTH   64
#define CIVIS__TAR_MAX_ENTRIES 200000      /* names in one directory */
#define CIVIS__UPLOAD_ERR_MAX  512
#define CIVIS__UPLOAD_MAX_RESPONSE (64u << 10)
/* Send buffers of one upload's requests in flight, in all, and the least
 * one request gets: bodies of at least 4 of libcurl's 64 KiB buffers go
 * in bigger reads and sends. Measured (1 GiB in 15 parts, 4 in flight,
 * docs/BENCHMARKS.md): 0.73 s of the agent's CPU with 64 KiB, 0.43 s with
 * 256 KiB, no less with 512 KiB or 2 MiB. */
#define CIVIS__UPLOAD_SEND_BUDGET (2u << 20)
#define CIVIS__UPLOAD_SEND_MIN    (256u << 10)

typedef enum civis__upload_state {
	CIVIS__ST_STAGING,
	CIVIS__ST_CREATING,
	CIVIS__ST_SENDING,
	CIVIS__ST_COMPLETING,
	CIVIS__ST_FINISHED
} civis__upload_state;

/* A slice of the upload's fd sent as one request body: the form's file
 * (the whole file, hashed on the way) or one part. */
typedef struct civis__upload_body {
	civis_upload *u;
	uint64_t off, len;       /* where in the file */
	uint64_t pos;            /* bytes read in the current try (progress) */
	int whole;               /* the whole file, read in order: hashed */
} civis__upload_body;

typedef struct civis__upload_part {
	civis__upload_body body;
	unsigned idx;
	civis_http_req *req;
	int done;
} civis__upload_part;

typedef struct civis__stage civis__stage;
typedef struct civis__upload_hasher civis__upload_hasher;

struct civis_upload {
	civis_client *client;
	civis_http *http;
	civis_loop *loop;
	char *path, *name, *expires, *filename;
	civis_upload_kind kind;
	uint64_t threshold;
	unsigned concurrency;
	int auto_concurrency;    /* concurrency was not given */
	void (*progress)(void *ud, uint64_t done, uint64_t total, double bytes_per_s);
	void (*done)(void *ud, int status, int64_t file_id, const char *sha256_hex,
	             uint64_t bytes, const char *error);
	void *ud;

	civis__upload_state state;
	int finishing;
	civis__stage *stage;
	civis_timer_id stage_timer, fail_timer, progress_timer;
	int fail_status;

	int fd;
	struct stat st;          /* of fd when the upload began */
	int check_changes;       /* fd is the user's file, not our staged copy */
	uint64_t size;
	int short_read;          /* a body read found the file shorter */
	int read_failed;         /* a body read failed; err says why */
	uint64_t start_ns;

	civis_sha256 sha;
	int sha_ready;           /* sha_hex is final */
	int sha_broken;          /* a rewind we could not follow, or no_digest: no digest */
	int no_digest;           /* opts.skip_digest: never hash the file */
	uint64_t sha_off;
	char sha_hex[CIVIS_SHA256_HEX_LEN];
	civis__upload_hasher *hasher; /* multipart: the hashing thread */

	civis_http_req *api_req;
	char *api_body;
	int64_t file_id;

	/* form POST (upload_form.c) */
	civis_file_post fp;
	civis_http_req *form_req;
	civis__upload_body form; /* the file inside the form */
	char *form_head;         /* the fields and the file's part header */
	size_t form_head_len;
	char form_tail[80];      /* the closing boundary */
	size_t form_tail_len;
	char form_type[96];      /* multipart/form-data; boundary=... */

	/* multipart (upload_multipart.c) */
	civis_multipart_post mp;
	civis__upload_part *parts;
	unsigned nparts, next_part, inflight, parts_done;
	uint64_t part_size, bytes_done;

	char err[CIVIS__UPLOAD_ERR_MAX];
};

/* ---- upload.c: the core, for the form and multipart modules */

/* err = the formatted text, then done(status), free. */
void civis__upload_fail(civis_upload *u, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Stop everything in flight, report once, free. */
void civis__upload_finish(civis_upload *u, int status);
/* "upload of NAME: WHAT failed: <error>" for a failed API call. */
void civis__upload_api_fail(civis_upload *u, const civis_http_result *res, const char *what);
/* The user's file is still what it was when the upload began. */
int  civis__upload_check_file(civis_upload *u);
/* Fail with the message for a read that came up short. */
void civis__upload_fail_short_read(civis_upload *u);
/* After a body's request ended: fail for a read error or short read (1),
 * else 0. */
int  civis__upload_fail_read(civis_upload *u);
void civis__upload_progress_begin(civis_upload *u);
/* The send_buffer for one of `inflight` requests sending `len` body bytes:
 * 0 (libcurl's 64 KiB) for small bodies, else budget / inflight within
 * CIVIS__UPLOAD_SEND_MIN..CIVIS_HTTP_SEND_BUFFER_MAX and the body's
 * length, a multiple of 64 KiB. */
size_t civis__upload_send_buffer(uint64_t len, unsigned inflight);
void civis__upload_sha_reset(civis_upload *u);
/* Feed bytes read at `off`; only the next bytes in order count. */
void civis__upload_sha_feed(civis_upload *u, const void *buf, size_t n, uint64_t off);
/* The one body reader: n bytes at `off` of body ud (a civis__upload_body),
 * clipped to its length, into buf; *got what was read. A short read or a
 * read error marks the upload and fails. */
int  civis__upload_body_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got);

/* ---- upload_hash.c: a multipart file's digest on a helper thread; when
 * it ends, sha_ready (or sha_broken: no libcrypto) and maybe_complete. */
int  civis__upload_hash_start(civis_upload *u);
/* Stop and join it (the upload is ending). */
void civis__upload_hash_stop(civis_upload *u);
/* Complete the multipart upload once every part and the digest are in. */
void civis__upload_maybe_complete(civis_upload *u);

/* ---- upload_form.c / upload_multipart.c */
void civis__upload_begin_form(civis_upload *u);
void civis__upload_begin_parts(civis_upload *u);
/* The form's buffers are no longer needed. */
void civis__upload_form_dispose(civis_upload *u);

/* ---- upload_util.c */
void civis__upload_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "400 EntityTooSmall: Your proposed upload..." from an S3 error answer, or
 * the best one line of any other body. */
void civis__upload_storage_error(long http_code, const char *body, size_t len,
                                 char *buf, size_t buflen);
/* Message for a read that came up short: the file shrank under us. */
int  civis__upload_short_read(const struct stat *before, int fd, const char *label,
                              char *err, size_t errlen);

/* ---- upload_stage.c, upload_tar.c */
typedef void (*civis__warn_fn)(void *ud, const char *text);
/* 0, or -1 with errno */
typedef int (*civis__stage_write_fn)(void *ud, const void *buf, size_t len);

/* Open the source and the temporary file. kind is CIVIS_UPLOAD_GZIP (path is
 * a regular file) or CIVIS_UPLOAD_TARGZ (path is a directory). src_fd >= 0:
 * the source already open (taken, closed on failure too), path only names
 * it. tmp_dir NULL: $TMPDIR or /tmp. warn (may be NULL) gets one line per
 * skipped entry. */
int  civis__stage_new(civis__stage **out, civis_upload_kind kind, const char *path,
                      int src_fd, const char *tmp_dir, civis__warn_fn warn, void *warn_ud,
                      char *err, size_t errlen);
/* Stage about `budget` more input bytes. 1: finished, 0: call again,
 * negative: failed (err says why; the source changed gives CIVIS_EINVAL). */
int  civis__stage_step(civis__stage *st, size_t budget, char *err, size_t errlen);
/* After step returned 1: the staged file, positioned anywhere; the caller
 * owns the fd from now on. */
int  civis__stage_take_fd(civis__stage *st, uint64_t *size,
                          char sha_hex[CIVIS_SHA256_HEX_LEN]);
void civis__stage_free(civis__stage *st);

typedef struct civis__tar civis__tar;
/* A .tar.gz of the directory dfd (taken; -1: open path) written through w. */
int  civis__tar_new(civis__tar **out, int dfd, const char *path, civis__stage_write_fn w,
                    void *wud, civis__warn_fn warn, void *warn_ud, char *err, size_t errlen);
/* 1: the archive is complete, 0: call again, negative: failed. */
int  civis__tar_step(civis__tar *t, size_t budget, char *err, size_t errlen);
void civis__tar_free(civis__tar *t);

/* CIVIS_EINVAL with "<label> changed during upload (...)" when fd's size or
 * mtime is no longer what `before` recorded. */
int  civis__upload_check_unchanged(const struct stat *before, int fd, const char *label,
                                   char *err, size_t errlen);
/* "6.0 TiB", "512 B": for messages. */
void civis__upload_human_size(uint64_t n, char *buf, size_t len);

#endif
