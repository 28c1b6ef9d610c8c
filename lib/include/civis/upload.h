/* upload.h: put a file (or a directory, archived) into Civis Files.
 *
 * Up to the multipart threshold: POST /files/ then a multipart/form-data POST
 * to the presigned uploadUrl (every uploadFields entry first, the file last
 * as `file`, exact Content-Length, streamed from disk). Above it:
 * POST /files/multipart, parts of at least 5 MiB PUT in parallel with exact
 * lengths, each retried on its own, then POST /files/multipart/{id}/complete.
 * No credential ever goes to a presigned URL. Everything runs on the loop. */
#ifndef CIVIS_UPLOAD_H
#define CIVIS_UPLOAD_H

#include <stdint.h>
#include "civis/client.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CIVIS_UPLOAD_DEFAULT_THRESHOLD (50ULL << 20)   /* 50 MiB */
#define CIVIS_UPLOAD_MIN_PART          (5ULL << 20)    /* S3: 5 MiB */
#define CIVIS_UPLOAD_MAX_PARTS         10000
#define CIVIS_UPLOAD_MAX_SIZE          (5ULL << 40)    /* S3: 5 TiB */

typedef enum civis_upload_kind {
	CIVIS_UPLOAD_FILE  = 0,  /* the file as it is */
	CIVIS_UPLOAD_GZIP  = 1,  /* the file gzip-compressed (zlib), name gets .gz */
	CIVIS_UPLOAD_TARGZ = 2   /* a directory as one .tar.gz (libarchive) */
} civis_upload_kind;

typedef struct civis_upload civis_upload;

typedef struct civis_upload_opts {
	const char *path;         /* file, or directory for CIVIS_UPLOAD_TARGZ */
	const char *name;         /* Civis file name (as given; .gz/.tar.gz not added here) */
	civis_upload_kind kind;
	const char *expires_at;   /* NULL: the API's default; "never": null */
	uint64_t multipart_threshold; /* 0: CIVIS_UPLOAD_DEFAULT_THRESHOLD */
	unsigned concurrency;     /* parts in flight; 0: 4, or 2 per CPU (at most
	                             16) on 4 CPUs or more for 16 parts or more */
	const char *tmp_dir;      /* where compressed data is staged once; NULL: $TMPDIR or /tmp */
	/* progress: called at most every 5 s for uploads over 100 MiB */
	void (*progress)(void *ud, uint64_t done, uint64_t total, double bytes_per_s);
	/* done: exactly once (unless civis_upload_start fails). file_id > 0 on
	 * success; error is a one-line text otherwise. sha256_hex is the
	 * SHA-256 of the bytes uploaded (65 chars with NUL) or "" */
	void (*done)(void *ud, int status, int64_t file_id, const char *sha256_hex,
	             uint64_t bytes, const char *error);
	void *ud;
	/* Added by the upload engine: */
	civis_loop *loop;         /* the loop the client runs on (required) */
	/* warn: one line per directory entry left out of a .tar.gz (symlink
	 * leading outside, FIFO, socket, device, unreadable); may be NULL */
	void (*warn)(void *ud, const char *text);
	/* -1: open path. Else an open descriptor to read instead (a regular
	 * file; a directory for CIVIS_UPLOAD_TARGZ): the upload dup()s it, and
	 * path only names it in messages. 0 is a descriptor too: start from
	 * civis_upload_opts_init(), which sets -1. */
	int fd;
	/* 1: the caller has no use for the SHA-256: a file is not hashed (no
	 * pass over its bytes but the sending one) and done gets "" for it
	 * (a .gz or .tar.gz still gets the digest its staging took). */
	int skip_digest;
} civis_upload_opts;

/* Every field zero (the defaults) but fd, which is -1 (open path). */
void civis_upload_opts_init(civis_upload_opts *o);

/* Fails (and done is never called) only for bad options or no memory;
 * every later failure, a missing file included, comes through done, from
 * the loop. The handle is gone once done has run. */
int  civis_upload_start(civis_client *c, const civis_upload_opts *o, civis_upload **out);
/* Stop it; done runs with CIVIS_ECANCELED before this returns. */
void civis_upload_cancel(civis_upload *u);

/* Part size for a file of `size` bytes: max(sqrt(5 MiB * size), 5 MiB),
 * raised so that there are at most 10,000 parts. */
uint64_t civis_upload_part_size(uint64_t size);

#ifdef __cplusplus
}
#endif
#endif
