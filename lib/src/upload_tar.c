/* upload_tar.c: a directory as one .tar.gz (libarchive, pax, gzip), walked
 * through directory descriptors in name order, one bounded slice per call;
 * the archive's bytes go to the caller's writer. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl.h"
#include "civis/civis.h"
#include "fileio.h"
#include "upload_int.h"

typedef struct stage_frame {
	int dfd;
	char **names;
	size_t n, i;
	size_t rel_len;          /* length of the directory's relative path */
	dev_t dev;
	ino_t ino;
} stage_frame;

struct civis__tar {
	char *path;
	civis__stage_write_fn write;
	void *write_ud;
	civis__warn_fn warn;
	void *warn_ud;
	unsigned char *ibuf;     /* CIVIS__STAGE_BUF */
	int finished;
	int write_errno;         /* from the archive write callback */
	struct archive *a;
	int a_open;
	char rel[PATH_MAX];
	stage_frame frames[CIVIS__TAR_MAX_DEPTH];
	size_t depth;
	int cur_fd;
	struct stat cur_st;
	uint64_t cur_off;
};

#define seterr civis__upload_seterr
#define short_read civis__upload_short_read

static void
stage_warn(civis__tar *st, const char *fmt, ...)
{
	char line[PATH_MAX + 128];
	va_list ap;

	if (st->warn == NULL)
		return;
	va_start(ap, fmt);
	if (vsnprintf(line, sizeof(line), fmt, ap) < 0)
		line[0] = '\0';
	va_end(ap);
	st->warn(st->warn_ud, line);
}

static la_ssize_t
tar_write_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
	civis__tar *st = ud;

	if (st->write(st->write_ud, buf, len) != 0) {
		st->write_errno = errno;
		archive_set_error(a, errno, "write to staging file failed");
		return -1;
	}
	return (la_ssize_t)len;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
frame_dispose(stage_frame *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		free(f->names[i]);
	free(f->names);
	f->names = NULL;
	f->n = f->i = 0;
	if (f->dfd >= 0)
		(void)close(f->dfd);
	f->dfd = -1;
}

/* Push the directory open as dfd (taken) with relative path st->rel. */
static int
frame_push(civis__tar *st, int dfd, const struct stat *sb, char *err, size_t errlen)
{
	stage_frame *f;
	DIR *d;
	struct dirent *de;
	size_t cap = 0;
	int dup_fd, rc = CIVIS_OK;

	if (st->depth >= CIVIS__TAR_MAX_DEPTH) {
		(void)close(dfd);
		stage_warn(st, "skipped %s: directories nested deeper than %d", st->rel,
		           CIVIS__TAR_MAX_DEPTH);
		return CIVIS_OK;
	}
	f = &st->frames[st->depth];
	memset(f, 0, sizeof(*f));
	f->dfd = dfd;
	f->rel_len = strlen(st->rel);
	f->dev = sb->st_dev;
	f->ino = sb->st_ino;
	dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	if (dup_fd < 0 || (d = fdopendir(dup_fd)) == NULL) {
		seterr(err, errlen, "%s/%s: %s", st->path, st->rel, strerror(errno));
		if (dup_fd >= 0)
			(void)close(dup_fd);
		frame_dispose(f);
		return CIVIS_ESYS;
	}
	rewinddir(d);
	for (;;) {
		char *copy;
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0) {
				seterr(err, errlen, "%s/%s: %s", st->path, st->rel, strerror(errno));
				rc = CIVIS_ESYS;
				goto out;
			}
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (f->n >= CIVIS__TAR_MAX_ENTRIES) {
			seterr(err, errlen, "%s/%s: more than %d entries in one directory",
			       st->path, st->rel, CIVIS__TAR_MAX_ENTRIES);
			rc = CIVIS_ETOOBIG;
			goto out;
		}
		if (f->n == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			char **nn = realloc(f->names, ncap * sizeof(*nn));
			if (nn == NULL) {
				rc = CIVIS_ENOMEM;
				goto out;
			}
			f->names = nn;
			cap = ncap;
		}
		copy = strdup(de->d_name);
		if (copy == NULL) {
			rc = CIVIS_ENOMEM;
			goto out;
		}
		f->names[f->n++] = copy;
	}
	if (f->n > 1)
		qsort(f->names, f->n, sizeof(*f->names), name_cmp);
	st->depth++;
out:
	(void)closedir(d);
	if (rc == CIVIS_ENOMEM)
		seterr(err, errlen, "out of memory listing %s/%s", st->path, st->rel);
	if (rc != CIVIS_OK)
		frame_dispose(f);
	return rc;
}

static void
frame_pop(civis__tar *st)
{
	stage_frame *f = &st->frames[st->depth - 1];

	st->rel[f->rel_len] = '\0';
	frame_dispose(f);
	st->depth--;
}

static int
tar_header(civis__tar *st, const struct stat *sb, int type, const char *link,
           char *err, size_t errlen)
{
	struct archive_entry *e = archive_entry_new2(st->a);
	int ar;

	if (e == NULL) {
		seterr(err, errlen, "out of memory archiving %s", st->rel);
		return CIVIS_ENOMEM;
	}
	archive_entry_set_pathname(e, st->rel);
	archive_entry_set_filetype(e, (unsigned)type);
	archive_entry_set_perm(e, sb->st_mode & 07777);
	archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)sb->st_size : 0);
	archive_entry_set_mtime(e, sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec);
	archive_entry_set_uid(e, sb->st_uid);
	archive_entry_set_gid(e, sb->st_gid);
	if (link != NULL)
		archive_entry_set_symlink(e, link);
	ar = archive_write_header(st->a, e);
	archive_entry_free(e);
	if (ar < ARCHIVE_WARN) {
		seterr(err, errlen, "archiving %s/%s: %s", st->path, st->rel,
		       archive_error_string(st->a) ? archive_error_string(st->a) : "failed");
		return st->write_errno ? CIVIS_ESYS : CIVIS_EINVAL;
	}
	return CIVIS_OK;
}

/* Whether a directory (dev, ino) is already being walked: a symlink loop. */
static int
on_stack(const civis__tar *st, const struct stat *sb)
{
	size_t i;

	for (i = 0; i < st->depth; i++)
		if (st->frames[i].dev == sb->st_dev && st->frames[i].ino == sb->st_ino)
			return 1;
	return 0;
}

/* Store the symlink st->rel as a symlink: its target is only text here,
 * never followed, wherever it points. */
static int
tar_symlink(civis__tar *st, int dfd, const char *name, const struct stat *sb,
            char *err, size_t errlen)
{
	char target[PATH_MAX];
	ssize_t n = readlinkat(dfd, name, target, sizeof(target) - 1);
	int rc;

	if (n < 0) {
		stage_warn(st, "skipped %s: %s", st->rel, strerror(errno));
		return CIVIS_OK;
	}
	target[n] = '\0';
	rc = tar_header(st, sb, AE_IFLNK, target, err, errlen);
	if (rc == CIVIS_OK && archive_write_finish_entry(st->a) < ARCHIVE_WARN) {
		seterr(err, errlen, "archiving %s: %s", st->path,
		       archive_error_string(st->a) ? archive_error_string(st->a) : "failed");
		return st->write_errno ? CIVIS_ESYS : CIVIS_EINVAL;
	}
	return rc;
}

/* Take the next name of the innermost directory: header, then either a
 * new frame (directory) or st->cur_fd (regular file). */
static int
tar_next(civis__tar *st, char *err, size_t errlen)
{
	stage_frame *f = &st->frames[st->depth - 1];
	const char *name = f->names[f->i++];
	struct stat sb;
	size_t nl = strlen(name);
	int fd = -1, rc;

	if (f->rel_len + (f->rel_len ? 1 : 0) + nl >= sizeof(st->rel)) {
		stage_warn(st, "skipped %.200s/%.200s...: path too long", st->rel, name);
		return CIVIS_OK;
	}
	if (f->rel_len > 0)
		st->rel[f->rel_len] = '/';
	memcpy(st->rel + f->rel_len + (f->rel_len ? 1 : 0), name, nl + 1);

	if (fstatat(f->dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
		stage_warn(st, "skipped %s: %s", st->rel, strerror(errno));
		goto next;
	}
	if (S_ISLNK(sb.st_mode)) {
		rc = tar_symlink(st, f->dfd, name, &sb, err, errlen);
		st->rel[f->rel_len] = '\0';
		return rc;
	}
	if (S_ISDIR(sb.st_mode) || S_ISREG(sb.st_mode)) {
		int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
		fd = openat(f->dfd, name, S_ISDIR(sb.st_mode) ? flags | O_DIRECTORY : flags);
		if (fd < 0) {
			stage_warn(st, "skipped %s: %s", st->rel, strerror(errno));
			goto next;
		}
		if (fstat(fd, &sb) != 0) {
			seterr(err, errlen, "%s/%s: %s", st->path, st->rel, strerror(errno));
			(void)close(fd);
			return CIVIS_ESYS;
		}
	}
	if (fd >= 0 && S_ISDIR(sb.st_mode)) {
		if (on_stack(st, &sb)) {
			(void)close(fd);
			stage_warn(st, "skipped %s: directory loop", st->rel);
			goto next;
		}
		rc = tar_header(st, &sb, AE_IFDIR, NULL, err, errlen);
		if (rc != CIVIS_OK) {
			(void)close(fd);
			return rc;
		}
		return frame_push(st, fd, &sb, err, errlen);
	}
	if (fd >= 0 && S_ISREG(sb.st_mode)) {
		rc = tar_header(st, &sb, AE_IFREG, NULL, err, errlen);
		if (rc != CIVIS_OK) {
			(void)close(fd);
			return rc;
		}
		st->cur_fd = fd;
		st->cur_st = sb;
		st->cur_off = 0;
		return CIVIS_OK;
	}
	if (fd >= 0)
		(void)close(fd);
	stage_warn(st, "skipped %s: not a regular file or directory", st->rel);
next:
	st->rel[f->rel_len] = '\0';
	return CIVIS_OK;
}

/* Copy a bounded slice of the current file into the archive. */
static int
tar_copy(civis__tar *st, size_t *done, char *err, size_t errlen)
{
	uint64_t left = (uint64_t)st->cur_st.st_size - st->cur_off;
	size_t want = left < CIVIS__STAGE_BUF ? (size_t)left : CIVIS__STAGE_BUF;
	size_t r;
	int rc;

	if (want == 0) {
		rc = civis__upload_check_unchanged(&st->cur_st, st->cur_fd, st->rel, err, errlen);
		(void)close(st->cur_fd);
		st->cur_fd = -1;
		st->rel[st->frames[st->depth - 1].rel_len] = '\0';
		if (rc != CIVIS_OK)
			return rc;
		if (archive_write_finish_entry(st->a) < ARCHIVE_WARN) {
			seterr(err, errlen, "archiving %s: %s", st->path,
			       archive_error_string(st->a) ? archive_error_string(st->a) : "failed");
			return st->write_errno ? CIVIS_ESYS : CIVIS_EINVAL;
		}
		*done += 512;
		return CIVIS_OK;
	}
	if (civis__pread_all(st->cur_fd, st->ibuf, want, st->cur_off, &r) != 0) {
		seterr(err, errlen, "%s/%s: %s", st->path, st->rel, strerror(errno));
		return CIVIS_ESYS;
	}
	if (r < want)
		return short_read(&st->cur_st, st->cur_fd, st->rel, err, errlen);
	if (archive_write_data(st->a, st->ibuf, r) != (la_ssize_t)r) {
		seterr(err, errlen, "archiving %s/%s: %s", st->path, st->rel,
		       archive_error_string(st->a) ? archive_error_string(st->a) : "failed");
		return st->write_errno ? CIVIS_ESYS : CIVIS_EINVAL;
	}
	st->cur_off += (uint64_t)r;
	*done += (size_t)r;
	return CIVIS_OK;
}

static int
tar_step(civis__tar *st, size_t budget, char *err, size_t errlen)
{
	size_t done = 0;
	int rc;

	while (!st->finished && (done < budget || done == 0)) {
		if (st->cur_fd >= 0) {
			rc = tar_copy(st, &done, err, errlen);
		} else if (st->depth == 0) {
			st->a_open = 0;
			if (archive_write_close(st->a) != ARCHIVE_OK) {
				seterr(err, errlen, "archiving %s: %s", st->path,
				       archive_error_string(st->a) ? archive_error_string(st->a)
				                                   : "failed");
				return st->write_errno ? CIVIS_ESYS : CIVIS_EINVAL;
			}
			st->finished = 1;
			rc = CIVIS_OK;
		} else if (st->frames[st->depth - 1].i == st->frames[st->depth - 1].n) {
			frame_pop(st);
			done += 64;
			rc = CIVIS_OK;
		} else {
			rc = tar_next(st, err, errlen);
			done += 512;
		}
		if (rc != CIVIS_OK)
			return rc;
	}
	return st->finished ? 1 : 0;
}

static int
tar_open(civis__tar *st, int dfd, char *err, size_t errlen)
{
	struct stat sb;

	if (dfd < 0)
		dfd = open(st->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		seterr(err, errlen, "%s: %s", st->path, strerror(errno));
		return errno == ENOENT ? CIVIS_ENOTFOUND : CIVIS_ESYS;
	}
	if (fstat(dfd, &sb) != 0) {
		seterr(err, errlen, "%s: %s", st->path, strerror(errno));
		(void)close(dfd);
		return CIVIS_ESYS;
	}
	if (!S_ISDIR(sb.st_mode)) {
		seterr(err, errlen, "%s: %s", st->path, strerror(ENOTDIR));
		(void)close(dfd);
		return CIVIS_ESYS;
	}
	/* libarchive is dlopen'ed on the first directory, not linked */
	if (civis__dl_archive(err, errlen) != CIVIS_OK) {
		(void)close(dfd);
		return CIVIS_ESYS;
	}
	st->a = archive_write_new();
	if (st->a == NULL) {
		(void)close(dfd);
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	/* no padding of the last block to 10 KiB: a gzip stream needs none */
	if (archive_write_set_format_pax_restricted(st->a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(st->a, 1) != ARCHIVE_OK ||
	    archive_write_add_filter_gzip(st->a) != ARCHIVE_OK ||
	    archive_write_open(st->a, st, NULL, tar_write_cb, NULL) != ARCHIVE_OK) {
		seterr(err, errlen, "archiving %s: %s", st->path,
		       archive_error_string(st->a) ? archive_error_string(st->a) : "setup failed");
		(void)close(dfd);
		return CIVIS_EINVAL;
	}
	st->a_open = 1;
	st->rel[0] = '\0';
	return frame_push(st, dfd, &sb, err, errlen);
}

int
civis__tar_new(civis__tar **out, int dfd, const char *path, civis__stage_write_fn w,
               void *wud, civis__warn_fn warn, void *warn_ud, char *err, size_t errlen)
{
	civis__tar *st;
	int rc;

	*out = NULL;
	st = calloc(1, sizeof(*st));
	if (st == NULL || (st->path = strdup(path)) == NULL ||
	    (st->ibuf = malloc(CIVIS__STAGE_BUF)) == NULL) {
		if (dfd >= 0)
			(void)close(dfd);
		civis__tar_free(st);
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	st->cur_fd = -1;
	st->write = w;
	st->write_ud = wud;
	st->warn = warn;
	st->warn_ud = warn_ud;
	rc = tar_open(st, dfd, err, errlen);
	if (rc != CIVIS_OK) {
		civis__tar_free(st);
		return rc;
	}
	*out = st;
	return CIVIS_OK;
}

int
civis__tar_step(civis__tar *st, size_t budget, char *err, size_t errlen)
{
	return st->finished ? 1 : tar_step(st, budget, err, errlen);
}

void
civis__tar_free(civis__tar *st)
{
	if (st == NULL)
		return;
	if (st->a != NULL) {
		/* archive_write_free closes an open archive, which would write
		 * its trailer: harmless, the staging file is dropped. */
		(void)archive_write_free(st->a);
	}
	while (st->depth > 0)
		frame_pop(st);
	if (st->cur_fd >= 0)
		(void)close(st->cur_fd);
	free(st->path);
	free(st->ibuf);
	free(st);
}
