/* upload_stage.c: gzip a file or tar.gz a directory into an anonymous
 * temporary file, in bounded slices, hashing the staged bytes on the way. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dl.h"
#include "civis/civis.h"
#include "fileio.h"
#include "upload_int.h"

struct civis__stage {
	civis_upload_kind kind;
	char *path;
	int out_fd;
	uint64_t out_size;
	civis_sha256 sha;
	char sha_hex[CIVIS_SHA256_HEX_LEN];
	int finished;

	/* gzip */
	unsigned char *ibuf;     /* CIVIS__STAGE_BUF */
	unsigned char *obuf;     /* CIVIS__STAGE_BUF */
	int src_fd;
	struct stat src_st;
	uint64_t in_off;
	z_stream z;
	int z_init;

	/* tar.gz */
	civis__tar *tar;
};

#define seterr civis__upload_seterr
#define short_read civis__upload_short_read

static int
out_write(civis__stage *st, const void *buf, size_t len)
{
	const char *p = buf;

	civis__sha256_update(&st->sha, buf, len);
	while (len > 0) {
		ssize_t w = write(st->out_fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
		st->out_size += (uint64_t)w;
	}
	return 0;
}

/* ------------------------------------------------------------------ gzip */

static int
gzip_step(civis__stage *st, size_t budget, char *err, size_t errlen)
{
	size_t done = 0;

	while (!st->finished && (done < budget || done == 0)) {
		size_t r;
		int flush, zr;

		if (civis__pread_all(st->src_fd, st->ibuf, CIVIS__STAGE_BUF, st->in_off, &r) != 0) {
			seterr(err, errlen, "%s: %s", st->path, strerror(errno));
			return CIVIS_ESYS;
		}
		if (st->in_off + (uint64_t)r > (uint64_t)st->src_st.st_size)
			return short_read(&st->src_st, st->src_fd, st->path, err, errlen);
		flush = r == 0 ? Z_FINISH : Z_NO_FLUSH;
		if (r == 0) {
			int rc;
			if (st->in_off != (uint64_t)st->src_st.st_size)
				return short_read(&st->src_st, st->src_fd, st->path, err, errlen);
			rc = civis__upload_check_unchanged(&st->src_st, st->src_fd, st->path,
			                                   err, errlen);
			if (rc != CIVIS_OK)
				return rc;
		}
		st->z.next_in = st->ibuf;
		st->z.avail_in = (uInt)r;
		do {
			size_t have;
			st->z.next_out = st->obuf;
			st->z.avail_out = CIVIS__STAGE_BUF;
			zr = deflate(&st->z, flush);
			if (zr == Z_STREAM_ERROR) {
				seterr(err, errlen, "%s: compression failed", st->path);
				return CIVIS_EINVAL;
			}
			have = CIVIS__STAGE_BUF - st->z.avail_out;
			if (have > 0 && out_write(st, st->obuf, have) != 0) {
				seterr(err, errlen, "staging %s: %s", st->path, strerror(errno));
				return CIVIS_ESYS;
			}
		} while (st->z.avail_out == 0);
		st->in_off += (uint64_t)r;
		done += (size_t)r;
		if (flush == Z_FINISH) {
			if (zr != Z_STREAM_END) {
				seterr(err, errlen, "%s: compression did not finish", st->path);
				return CIVIS_EINVAL;
			}
			st->finished = 1;
		}
	}
	return st->finished ? 1 : 0;
}

/* ---------------------------------------------------------------- common */

static int
stage_write(void *ud, const void *buf, size_t len)
{
	return out_write(ud, buf, len);
}

static int
gzip_open(civis__stage *st, int src_fd, char *err, size_t errlen)
{
	st->ibuf = malloc(CIVIS__STAGE_BUF);
	st->obuf = malloc(CIVIS__STAGE_BUF);
	if (st->ibuf == NULL || st->obuf == NULL) {
		if (src_fd >= 0)
			(void)close(src_fd);
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	st->src_fd = src_fd >= 0 ? src_fd : open(st->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (st->src_fd < 0 || fstat(st->src_fd, &st->src_st) != 0) {
		seterr(err, errlen, "%s: %s", st->path, strerror(errno));
		return errno == ENOENT ? CIVIS_ENOTFOUND : CIVIS_ESYS;
	}
	if (!S_ISREG(st->src_st.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", st->path);
		return CIVIS_EINVAL;
	}
	/* windowBits 15 + 16: a gzip wrapper rather than zlib's. */
	if (deflateInit2(&st->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
	                 Z_DEFAULT_STRATEGY) != Z_OK) {
		seterr(err, errlen, "%s: cannot start compression", st->path);
		return CIVIS_ENOMEM;
	}
	st->z_init = 1;
	return CIVIS_OK;
}

int
civis__stage_new(civis__stage **out, civis_upload_kind kind, const char *path, int src_fd,
                 const char *tmp_dir, civis__warn_fn warn, void *warn_ud,
                 char *err, size_t errlen)
{
	civis__stage *st;
	int rc;

	*out = NULL;
	if (path == NULL || (kind != CIVIS_UPLOAD_GZIP && kind != CIVIS_UPLOAD_TARGZ)) {
		if (src_fd >= 0)
			(void)close(src_fd);
		seterr(err, errlen, "staging needs a path and a gzip or tar.gz kind");
		return CIVIS_EINVAL;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL || (st->path = strdup(path)) == NULL) {
		if (src_fd >= 0)
			(void)close(src_fd);
		free(st);
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	st->kind = kind;
	st->out_fd = st->src_fd = -1;
	/* without libcrypto the staged file has no digest: "" */
	(void)civis__sha256_init(&st->sha);
	/* in the order of the messages: the source, then the temporary file */
	if (kind == CIVIS_UPLOAD_GZIP) {
		rc = gzip_open(st, src_fd, err, errlen);
		if (rc == CIVIS_OK)
			rc = civis__tmpfile(tmp_dir, "civis-upload", 0, &st->out_fd, err, errlen);
	} else {
		rc = civis__tmpfile(tmp_dir, "civis-upload", 0, &st->out_fd, err, errlen);
		if (rc == CIVIS_OK)
			rc = civis__tar_new(&st->tar, src_fd, path, stage_write, st, warn, warn_ud,
			                    err, errlen);
		else if (src_fd >= 0)
			(void)close(src_fd);
	}
	if (rc != CIVIS_OK)
		goto out;
	*out = st;
	st = NULL;
out:
	civis__stage_free(st);
	return rc;
}

int
civis__stage_step(civis__stage *st, size_t budget, char *err, size_t errlen)
{
	int rc;

	if (st->finished)
		return 1;
	rc = st->kind == CIVIS_UPLOAD_GZIP ? gzip_step(st, budget, err, errlen)
	                                   : civis__tar_step(st->tar, budget, err, errlen);
	if (rc == 1) {
		unsigned char dig[CIVIS_SHA256_LEN];
		st->finished = 1;
		st->sha_hex[0] = '\0';
		if (st->sha.ctx != NULL) {
			civis__sha256_final(&st->sha, dig);
			civis__sha256_hex(dig, st->sha_hex);
		}
	}
	return rc;
}

int
civis__stage_take_fd(civis__stage *st, uint64_t *size, char sha_hex[CIVIS_SHA256_HEX_LEN])
{
	int fd;

	if (!st->finished || st->out_fd < 0)
		return -1;
	fd = st->out_fd;
	st->out_fd = -1;
	*size = st->out_size;
	memcpy(sha_hex, st->sha_hex, CIVIS_SHA256_HEX_LEN);
	return fd;
}

void
civis__stage_free(civis__stage *st)
{
	if (st == NULL)
		return;
	if (st->z_init)
		(void)deflateEnd(&st->z);
	civis__tar_free(st->tar);
	civis__sha256_dispose(&st->sha);
	if (st->src_fd >= 0)
		(void)close(st->src_fd);
	if (st->out_fd >= 0)
		(void)close(st->out_fd);
	free(st->path);
	free(st->ibuf);
	free(st->obuf);
	free(st);
}
