/* upload_int.h: what upload.c and upload_stage.c share; private to libcivis.
 *
 * Staging turns a file (gzip) or a directory (tar.gz) into one anonymous
 * temporary file, a bounded slice per call, so the loop thread never blocks
 * for long; the SHA-256 of the staged bytes is computed as they are written. */
#ifndef CIVIS_UPLOAD_INT_H
#define CIVIS_UPLOAD_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "civis/upload.h"
#include "sha256.h"

#define CIVIS__STAGE_SLICE     (256u << 10) /* input bytes per loop turn: ~10 ms of deflate */
#define CIVIS__STAGE_BUF       (64u << 10) /* read and deflate buffers */
#define CIVIS__TAR_MAX_DEPTH   64
#define CIVIS__TAR_MAX_ENTRIES 200000      /* names in one directory */

typedef struct civis__stage civis__stage;
typedef void (*civis__warn_fn)(void *ud, const char *text);

/* Open the source and the temporary file. kind is CIVIS_UPLOAD_GZIP (path is
 * a regular file) or CIVIS_UPLOAD_TARGZ (path is a directory). tmp_dir NULL:
 * $TMPDIR or /tmp. warn (may be NULL) gets one line per skipped entry. */
int  civis__stage_new(civis__stage **out, civis_upload_kind kind, const char *path,
                      const char *tmp_dir, civis__warn_fn warn, void *warn_ud,
                      char *err, size_t errlen);
/* Stage about `budget` more input bytes. 1: finished, 0: call again,
 * negative: failed (err says why; the source changed gives CIVIS_EINVAL). */
int  civis__stage_step(civis__stage *st, size_t budget, char *err, size_t errlen);
/* After step returned 1: the staged file, positioned anywhere; the caller
 * owns the fd from now on. */
int  civis__stage_take_fd(civis__stage *st, uint64_t *size,
                          char sha_hex[CIVIS_SHA256_HEX_LEN]);
void civis__stage_free(civis__stage *st);

/* An anonymous read-write file in dir (O_TMPFILE, else mkstemp + unlink). */
int  civis__upload_tmpfile(const char *dir, int *fd_out, char *err, size_t errlen);
/* CIVIS_EINVAL with "<label> changed during upload (...)" when fd's size or
 * mtime is no longer what `before` recorded. */
int  civis__upload_check_unchanged(const struct stat *before, int fd, const char *label,
                                   char *err, size_t errlen);
/* "6.0 TiB", "512 B": for messages. */
void civis__upload_human_size(uint64_t n, char *buf, size_t len);
/* pread that retries EINTR and fills as much as the file has. */
ssize_t civis__upload_pread(int fd, void *buf, size_t len, uint64_t off);

#endif
