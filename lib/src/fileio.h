/* fileio.h (private): the library's one anonymous temporary file and its
 * positional read/write loops.
 *
 * civis__tmpfile makes a file that has no name from the start (O_TMPFILE),
 * or, where the filesystem lacks it, a mkstemp name that is unlinked at once;
 * either way mode 0600, close-on-exec, nothing left behind on any exit.
 * The loops retry EINTR and short transfers. */
#ifndef CIVIS_FILEIO_H
#define CIVIS_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* civis__tmpfile flags */
#define CIVIS__TMPFILE_NO_OTMPFILE 1u   /* skip O_TMPFILE (tests of the fallback) */

/* An anonymous read-write file in dir (NULL or "": $TMPDIR, else /tmp);
 * prefix names the short-lived mkstemp name ("civis-logq" gives
 * dir/civis-logq-XXXXXX). CIVIS_OK with *fd set, else *fd = -1 and a one-line
 * text naming the directory in err: CIVIS_ESYS (cannot create, unlink or
 * chmod: the text has strerror), CIVIS_ECONFIG (directory name too long),
 * CIVIS_EINVAL (bad arguments). */
int civis__tmpfile(const char *dir, const char *prefix, unsigned flags, int *fd,
                   char *err, size_t errlen);

/* Read up to n bytes at off into buf; *got < n only at end of file.
 * 0, or -1 with errno (*got then says how much was read before the error;
 * EOVERFLOW when off + n passes the largest file offset). */
int civis__pread_all(int fd, void *buf, size_t n, uint64_t off, size_t *got);

/* Write all n bytes at off. 0, or -1 with errno (ENOSPC for a write that
 * makes no progress; what was written before the error stays written). */
int civis__pwrite_all(int fd, const void *buf, size_t n, uint64_t off);

/* The same for cnt iovecs, which it consumes (iov is modified). */
int civis__pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off);

#endif
