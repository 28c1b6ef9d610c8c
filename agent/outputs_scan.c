/* outputs_scan.c: which paths are outputs (symlink rules, archives) and
 * the sorted scan of the tree. No network, no loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs_int.h"

#define SCAN_MAX_DEPTH     256        /* PATH_MAX stops it first in practice */
#define SCAN_MAX_DIR_NAMES 1000000    /* names read from one directory */
#define join agent_outputs__join

static void
fill_stat(agent_out_stat *st, const struct stat *sb)
{
	st->dev = sb->st_dev;
	st->ino = sb->st_ino;
	st->size = sb->st_size > 0 ? (uint64_t)sb->st_size : 0;
	st->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
	st->ctime_ns = (int64_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec;
}

/* Whether real (a realpath) is root itself (2), strictly inside it (1), or
 * elsewhere (0). */
static int
inside_root(const char *root, const char *real)
{
	size_t n = strlen(root);

	if (strcmp(root, real) == 0)
		return 2;
	if (strcmp(root, "/") == 0)
		return real[0] == '/' ? 1 : 0;
	return strncmp(root, real, n) == 0 && real[n] == '/';
}

agent_out_kind
agent_outputs_classify(const agent_out_rules *r, const char *rel, agent_out_stat *st,
                       char *reason, size_t rlen)
{
	char path[PATH_MAX];
	struct stat sb;
	char *real = NULL;
	agent_out_kind kind;

	memset(st, 0, sizeof(*st));
	if (rlen > 0)
		reason[0] = '\0';
	if (join(path, sizeof(path), r->root, rel) != 0) {
		snprintf(reason, rlen, "the path is longer than PATH_MAX (%d bytes)", PATH_MAX);
		return AGENT_OUT_ERROR;
	}
	if (lstat(path, &sb) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return AGENT_OUT_GONE;
		snprintf(reason, rlen, "%s", strerror(errno));
		return AGENT_OUT_ERROR;
	}
	if (S_ISREG(sb.st_mode)) {
		fill_stat(st, &sb);
		return AGENT_OUT_FILE;
	}
	if (S_ISDIR(sb.st_mode)) {
		fill_stat(st, &sb);
		return agent_outputs_in_archive(r, rel, 1) == 2 ? AGENT_OUT_ARCHIVE : AGENT_OUT_DIR;
	}
	if (!S_ISLNK(sb.st_mode)) {
		snprintf(reason, rlen, "%s", agent_outputs_type_text(sb.st_mode));
		return AGENT_OUT_SKIP;
	}
	/* a symlink: followed only when its final target is inside DIR */
	real = realpath(path, NULL);
	if (real == NULL) {
		if (errno == ELOOP)
			snprintf(reason, rlen, "symlink loop");
		else if (errno == ENOENT)
			snprintf(reason, rlen, "dangling symlink");
		else
			snprintf(reason, rlen, "cannot resolve the symlink: %s", strerror(errno));
		kind = errno == ENOMEM ? AGENT_OUT_ERROR : AGENT_OUT_SKIP;
		goto out;
	}
	if (inside_root(r->root, real) == 0) {
		snprintf(reason, rlen, "points outside the output directory");
		kind = AGENT_OUT_SKIP;
		goto out;
	}
	if (stat(real, &sb) != 0) {
		if (errno == ENOENT) {
			kind = AGENT_OUT_GONE;
		} else {
			snprintf(reason, rlen, "%s", strerror(errno));
			kind = AGENT_OUT_ERROR;
		}
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		/* its target is scanned under its own name; following would upload
		 * the same files twice, or loop */
		snprintf(reason, rlen, "symlink to a directory");
		kind = AGENT_OUT_SKIP;
	} else if (!S_ISREG(sb.st_mode)) {
		snprintf(reason, rlen, "%s", agent_outputs_type_text(sb.st_mode));
		kind = AGENT_OUT_SKIP;
	} else {
		fill_stat(st, &sb);
		kind = AGENT_OUT_FILE;
	}
out:
	free(real);
	return kind;
}

/* ---------------------------------------------------------------- open */

/* 1 when the kernel refused openat2 (ENOSYS): walk component by component. */
static int no_openat2;

#ifdef CIVIS_UNITTEST
/* Tests take the component-by-component walk on a kernel with openat2. */
void agent_outputs__set_no_openat2(int on);

void
agent_outputs__set_no_openat2(int on)
{
	no_openat2 = on;
}
#endif

/* Open rel beneath dirfd, following no symbolic link at any step (the last
 * one as O_NOFOLLOW does: ELOOP, or the link itself with O_PATH). -1 with
 * errno: ELOOP or EXDEV for a link on the way, ENOENT, ... */
#ifndef CIVIS_UNITTEST
static
#endif
int agent_outputs__open_beneath(int dirfd, const char *rel, int flags);

#ifndef CIVIS_UNITTEST
static
#endif
int
agent_outputs__open_beneath(int dirfd, const char *rel, int flags)
{
	char comp[PATH_MAX];
	const char *p = rel, *slash;
	int cur = dirfd, fd;

	flags |= O_NOFOLLOW | O_CLOEXEC;
#ifdef SYS_openat2
	if (!no_openat2) {
		struct open_how how;
		long r;

		memset(&how, 0, sizeof(how));
		how.flags = (uint64_t)flags;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
		/* EAGAIN: a rename raced the lookup (the kernel's own check) */
		for (int tries = 0; tries < 3; tries++) {
			r = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
			if (r >= 0 || errno != EAGAIN)
				break;
		}
		if (r >= 0)
			return (int)r;
		if (errno != ENOSYS && errno != EINVAL && errno != EPERM)
			return -1;
		/* ENOSYS: an old kernel; EPERM: a seccomp filter that does not
		 * know it; EINVAL: flags it refuses. The walk below does the same. */
		if (errno != EINVAL)
			no_openat2 = 1;
	}
#endif
	if (rel[0] == '/' || rel[0] == '\0') {
		errno = EXDEV;
		return -1;
	}
	for (;;) {
		size_t n;

		slash = strchr(p, '/');
		if (slash == NULL)
			break;
		n = (size_t)(slash - p);
		if (n == 0 || n >= sizeof(comp) || (n == 2 && p[0] == '.' && p[1] == '.')) {
			errno = n >= sizeof(comp) ? ENAMETOOLONG : EXDEV;
			goto fail;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		fd = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			struct stat sb;

			/* a symlink there says ENOTDIR through O_PATH: say ELOOP */
			if (errno == ENOTDIR && fstatat(cur, comp, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISLNK(sb.st_mode))
				errno = ELOOP;
			goto fail;
		}
		if (cur != dirfd)
			close(cur);
		cur = fd;
		p = slash + 1;
	}
	if (strcmp(p, "..") == 0 || p[0] == '\0') {
		errno = EXDEV;
		goto fail;
	}
	fd = openat(cur, p, flags);
	if (cur != dirfd) {
		int e = errno;
		close(cur);
		errno = e;
	}
	return fd;
fail:
	if (cur != dirfd) {
		int e = errno;
		close(cur);
		errno = e;
	}
	return -1;
}

/* The link rel (relative to root) resolved by its final target: its path
 * relative to root into buf, or a reason why it is not an output. */
static agent_out_kind
link_target(const agent_out_rules *r, const char *rel, char *buf, size_t len,
            char *reason, size_t rlen)
{
	char path[PATH_MAX];
	char *real;
	agent_out_kind kind = AGENT_OUT_FILE;
	size_t n = strlen(r->root);

	if (join(path, sizeof(path), r->root, rel) != 0) {
		snprintf(reason, rlen, "the path is longer than PATH_MAX (%d bytes)", PATH_MAX);
		return AGENT_OUT_ERROR;
	}
	real = realpath(path, NULL);
	if (real == NULL) {
		if (errno == ELOOP)
			snprintf(reason, rlen, "symlink loop");
		else if (errno == ENOENT)
			snprintf(reason, rlen, "dangling symlink");
		else
			snprintf(reason, rlen, "cannot resolve the symlink: %s", strerror(errno));
		return errno == ENOMEM ? AGENT_OUT_ERROR : AGENT_OUT_SKIP;
	}
	if (inside_root(r->root, real) != 1) {
		snprintf(reason, rlen, inside_root(r->root, real) == 2 ? "symlink to a directory"
		                                                        : "points outside the output directory");
		kind = AGENT_OUT_SKIP;
	} else if (snprintf(buf, len, "%s", real + (strcmp(r->root, "/") == 0 ? 1 : n + 1)) >=
	           (int)len) {
		snprintf(reason, rlen, "the path is longer than PATH_MAX (%d bytes)", PATH_MAX);
		kind = AGENT_OUT_ERROR;
	}
	free(real);
	return kind;
}

/* What the object open as O_PATH fd is, for an output of kind `want`. */
static agent_out_kind
kind_of(const agent_out_rules *r, const char *rel, const struct stat *sb, int via_link,
        char *reason, size_t rlen)
{
	if (S_ISREG(sb->st_mode))
		return AGENT_OUT_FILE;
	if (S_ISDIR(sb->st_mode)) {
		if (via_link) {
			snprintf(reason, rlen, "symlink to a directory");
			return AGENT_OUT_SKIP;
		}
		return agent_outputs_in_archive(r, rel, 1) == 2 ? AGENT_OUT_ARCHIVE : AGENT_OUT_DIR;
	}
	if (S_ISLNK(sb->st_mode)) {
		snprintf(reason, rlen, "the symlink changed while it was opened");
		return AGENT_OUT_SKIP;
	}
	snprintf(reason, rlen, "%s", agent_outputs_type_text(sb->st_mode));
	return AGENT_OUT_SKIP;
}

agent_out_kind
agent_outputs_open(const agent_out_rules *r, const char *rel, agent_out_stat *st, int *fdp,
                   char *reason, size_t rlen)
{
	char target[PATH_MAX];
	const char *at = rel;
	struct stat sb, sb2;
	agent_out_kind kind;
	int root, pfd = -1, fd = -1, via_link = 0;

	memset(st, 0, sizeof(*st));
	*fdp = -1;
	if (rlen > 0)
		reason[0] = '\0';
	root = open(r->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		snprintf(reason, rlen, "cannot open the output directory: %s", strerror(errno));
		return errno == ENOENT ? AGENT_OUT_GONE : AGENT_OUT_ERROR;
	}
	for (;;) {
		pfd = agent_outputs__open_beneath(root, at, O_PATH);
		if (pfd < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				kind = AGENT_OUT_GONE;
			else if (errno == ENAMETOOLONG) {
				snprintf(reason, rlen, "the path is longer than PATH_MAX (%d bytes)",
				         PATH_MAX);
				kind = AGENT_OUT_ERROR;
			} else if (errno == ELOOP || errno == EXDEV) {
				snprintf(reason, rlen, "a directory on its path is a symlink now "
				         "(not followed)");
				kind = AGENT_OUT_SKIP;
			} else {
				snprintf(reason, rlen, "%s", strerror(errno));
				kind = AGENT_OUT_ERROR;
			}
			goto out;
		}
		if (fstat(pfd, &sb) != 0) {
			snprintf(reason, rlen, "%s", strerror(errno));
			kind = AGENT_OUT_ERROR;
			goto out;
		}
		if (!S_ISLNK(sb.st_mode) || via_link)
			break;
		/* a symlink: followed only when its final target is inside DIR,
		 * and then opened by that path, beneath DIR, without links */
		kind = link_target(r, rel, target, sizeof(target), reason, rlen);
		if (kind != AGENT_OUT_FILE)
			goto out;
		close(pfd);       /* the loop opens the target next */
		at = target;
		via_link = 1;
	}
	kind = kind_of(r, rel, &sb, via_link, reason, rlen);
	if (kind != AGENT_OUT_FILE && kind != AGENT_OUT_ARCHIVE)
		goto out;
	/* the same object, now for reading (O_PATH first: no open of a FIFO
	 * or a device, whose open can block or have effects) */
	fd = agent_outputs__open_beneath(root, at, kind == AGENT_OUT_FILE
	                                 ? O_RDONLY | O_NONBLOCK | O_NOCTTY
	                                 : O_RDONLY | O_DIRECTORY);
	if (fd < 0 || fstat(fd, &sb2) != 0 || sb2.st_dev != sb.st_dev || sb2.st_ino != sb.st_ino) {
		if (fd < 0 && (errno == EACCES || errno == EPERM)) {
			snprintf(reason, rlen, "%s", strerror(errno));
			kind = AGENT_OUT_ERROR;
		} else {
			kind = AGENT_OUT_GONE;   /* replaced or removed meanwhile */
		}
		goto out;
	}
	fill_stat(st, &sb2);
	*fdp = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	if (pfd >= 0)
		close(pfd);
	close(root);
	return kind;
}

/* ---------------------------------------------------------------- scan */

struct walk {
	const agent_out_rules *r;
	agent_out_scan *s;
	agent_note_fn note;
	void *ud;
	size_t max_items;
	int capped;          /* the too-many note was given */
};

static void
wnote(struct walk *w, const char *level, const char *fmt, ...)
{
	char text[SHOW_MAX + 512], safe[2 * (SHOW_MAX + 512)];
	va_list ap;

	if (w->note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	agent_outputs_escape_text(safe, sizeof(safe), text);
	w->note(w->ud, level, safe);
}

static int
add_dir(agent_out_scan *s, const char *rel)
{
	char *copy;

	if (s->ndirs == s->capdirs) {
		size_t ncap = s->capdirs ? s->capdirs * 2 : 16;
		char **nd = realloc(s->dirs, ncap * sizeof(*nd));

		if (nd == NULL)
			return CIVIS_ENOMEM;
		s->dirs = nd;
		s->capdirs = ncap;
	}
	copy = strdup(rel);
	if (copy == NULL)
		return CIVIS_ENOMEM;
	s->dirs[s->ndirs++] = copy;
	return CIVIS_OK;
}

static int
add_item(struct walk *w, const char *rel, agent_out_kind kind, const agent_out_stat *st)
{
	agent_out_scan *s = w->s;
	agent_out_item *it;

	if (s->nitems >= w->max_items) {
		if (!w->capped) {
			w->capped = 1;
			s->failures++;
			wnote(w, "error", "more than %zu files in the output directory: "
			      "the rest are not uploaded", w->max_items);
		}
		return CIVIS_OK;
	}
	if (s->nitems == s->capitems) {
		size_t ncap = s->capitems ? s->capitems * 2 : 16;
		agent_out_item *ni = realloc(s->items, ncap * sizeof(*ni));

		if (ni == NULL)
			return CIVIS_ENOMEM;
		s->items = ni;
		s->capitems = ncap;
	}
	it = &s->items[s->nitems];
	it->rel = strdup(rel);
	if (it->rel == NULL)
		return CIVIS_ENOMEM;
	it->kind = kind;
	it->st = *st;
	s->nitems++;
	return CIVIS_OK;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
cmp_item(const void *a, const void *b)
{
	return strcmp(((const agent_out_item *)a)->rel, ((const agent_out_item *)b)->rel);
}

static int walk_dir(struct walk *w, const char *rel_dir, unsigned depth);

static int
walk_entry(struct walk *w, const char *rel, unsigned depth)
{
	char reason[256], shown[SHOW_MAX];
	agent_out_stat st;
	agent_out_kind k = agent_outputs_classify(w->r, rel, &st, reason, sizeof(reason));

	switch (k) {
	case AGENT_OUT_FILE:
	case AGENT_OUT_ARCHIVE:
		return add_item(w, rel, k, &st);
	case AGENT_OUT_DIR:
		return walk_dir(w, rel, depth + 1);
	case AGENT_OUT_SKIP:
		agent_outputs_show(shown, sizeof(shown), w->r, rel);
		wnote(w, "warn", "skipping %s: %s", shown, reason);
		return CIVIS_OK;
	case AGENT_OUT_ERROR:
		agent_outputs_show(shown, sizeof(shown), w->r, rel);
		wnote(w, "error", "cannot upload %s: %s", shown, reason);
		w->s->failures++;
		return CIVIS_OK;
	case AGENT_OUT_GONE:
		return CIVIS_OK;
	}
	return CIVIS_OK;
}

static int
walk_dir(struct walk *w, const char *rel_dir, unsigned depth)
{
	char path[PATH_MAX], shown[SHOW_MAX];
	char **names = NULL;
	size_t nnames = 0, cap = 0, i;
	DIR *d = NULL;
	struct dirent *de;
	int fd, rc = CIVIS_OK;

	if (depth > SCAN_MAX_DEPTH || join(path, sizeof(path), w->r->root, rel_dir) != 0) {
		agent_outputs_show(shown, sizeof(shown), w->r, rel_dir);
		wnote(w, "error", "cannot upload what is in %s: too deep", shown);
		w->s->failures++;
		return CIVIS_OK;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		if (e == ENOENT || e == ENOTDIR || e == ELOOP)
			return CIVIS_OK;   /* gone, or replaced, since we looked */
		agent_outputs_show(shown, sizeof(shown), w->r, rel_dir);
		wnote(w, "error", "cannot read the directory %s: %s", shown, strerror(e));
		w->s->failures++;
		return CIVIS_OK;
	}
	rc = add_dir(w->s, rel_dir);
	if (rc != CIVIS_OK)
		goto out;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (nnames >= SCAN_MAX_DIR_NAMES)
			break;
		if (nnames == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			char **nn = realloc(names, ncap * sizeof(*nn));

			if (nn == NULL) {
				rc = CIVIS_ENOMEM;
				goto out;
			}
			names = nn;
			cap = ncap;
		}
		names[nnames] = strdup(de->d_name);
		if (names[nnames] == NULL) {
			rc = CIVIS_ENOMEM;
			goto out;
		}
		nnames++;
	}
	closedir(d);
	d = NULL;
	if (nnames > 1)
		qsort(names, nnames, sizeof(*names), cmp_str);
	for (i = 0; i < nnames; i++) {
		char rel[PATH_MAX];

		if (join(rel, sizeof(rel), rel_dir, names[i]) != 0) {
			agent_outputs_show(shown, sizeof(shown), w->r, rel_dir);
			wnote(w, "error", "cannot upload a file in %s: the path is longer than "
			      "PATH_MAX (%d bytes)", shown, PATH_MAX);
			w->s->failures++;
			continue;
		}
		rc = walk_entry(w, rel, depth);
		if (rc != CIVIS_OK)
			goto out;
	}
out:
	if (d != NULL)
		closedir(d);
	for (i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	return rc;
}

int
agent_outputs_scan(agent_out_scan *out, const agent_out_rules *r, const char *sub,
                   agent_note_fn note, void *ud)
{
	struct walk w;
	int rc;

	memset(out, 0, sizeof(*out));
	w.r = r;
	w.s = out;
	w.note = note;
	w.ud = ud;
	w.max_items = r->max_items ? r->max_items : AGENT_OUTPUTS_MAX_FILES;
	w.capped = 0;
	if (sub == NULL || sub[0] == '\0')
		rc = walk_dir(&w, "", 0);
	else
		rc = walk_entry(&w, sub, 0);
	if (rc != CIVIS_OK) {
		agent_outputs_scan_dispose(out);
		return rc;
	}
	if (out->nitems > 1)
		qsort(out->items, out->nitems, sizeof(*out->items), cmp_item);
	return CIVIS_OK;
}

void
agent_outputs_scan_dispose(agent_out_scan *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->nitems; i++)
		free(s->items[i].rel);
	for (i = 0; i < s->ndirs; i++)
		free(s->dirs[i]);
	free(s->items);
	free(s->dirs);
	memset(s, 0, sizeof(*s));
}
