/* fileio.c: anonymous temporary files and positional read/write loops. */
#include "fileio.h"
#include "civis/civis.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
put_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	if (vsnprintf(err, errlen, fmt, ap) < 0)
		err[0] = '\0';
	va_end(ap);
}

int
civis__tmpfile(const char *dir, const char *prefix, unsigned flags, int *fd_out,
               char *err, size_t errlen)
{
	char tmpl[PATH_MAX];
	int fd = -1, n;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (fd_out == NULL)
		return CIVIS_EINVAL;
	*fd_out = -1;
	if (prefix == NULL || prefix[0] == '\0' || strchr(prefix, '/') != NULL) {
		put_err(err, errlen, "temporary file: bad name prefix");
		return CIVIS_EINVAL;
	}
	if (dir == NULL || dir[0] == '\0') {
		dir = getenv("TMPDIR");
		if (dir == NULL || dir[0] == '\0')
			dir = "/tmp";
	}
	if (!(flags & CIVIS__TMPFILE_NO_OTMPFILE))
		fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0) {
		*fd_out = fd;
		return CIVIS_OK;
	}
	/* Filesystems without O_TMPFILE say EOPNOTSUPP/EISDIR/EINVAL; a
	 * missing or read-only directory fails mkstemp the same way, so its
	 * errno is the one reported. */
	n = snprintf(tmpl, sizeof tmpl, "%s/%s-XXXXXX", dir, prefix);
	if (n < 0 || (size_t)n >= sizeof tmpl) {
		put_err(err, errlen, "temporary directory name too long: %.64s...", dir);
		return CIVIS_ECONFIG;
	}
	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0) {
		put_err(err, errlen, "cannot create a file in %s: %s", dir, strerror(errno));
		return CIVIS_ESYS;
	}
	if (unlink(tmpl) != 0) {
		put_err(err, errlen, "cannot unlink %s: %s", tmpl, strerror(errno));
		(void)close(fd);
		return CIVIS_ESYS;
	}
	/* mkostemp already uses 0600; this holds whatever the libc does. */
	if (fchmod(fd, 0600) != 0) {
		put_err(err, errlen, "chmod 0600 of a new file in %s: %s", dir, strerror(errno));
		(void)close(fd);
		return CIVIS_ESYS;
	}
	*fd_out = fd;
	return CIVIS_OK;
}

int
civis__pread_all(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
	size_t done = 0;

	*got = 0;
	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off) {
		errno = EOVERFLOW;
		return -1;
	}
	while (done < n) {
		ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			*got = done;
			return -1;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	*got = done;
	return 0;
}

int
civis__pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off)
{
	uint64_t total = 0;
	int i;

	for (i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	if (off > (uint64_t)INT64_MAX || total > (uint64_t)INT64_MAX - off) {
		errno = EOVERFLOW;
		return -1;
	}
	while (cnt > 0 && iov->iov_len == 0) {
		iov++;
		cnt--;
	}
	while (cnt > 0) {
		ssize_t w = pwritev(fd, iov, cnt, (off_t)off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = ENOSPC;
			return -1;
		}
		off += (uint64_t)w;
		while (cnt > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

int
civis__pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	struct iovec iov;

	iov.iov_base = (void *)(uintptr_t)buf;
	iov.iov_len = n;
	return civis__pwritev_all(fd, &iov, 1, off);
}
