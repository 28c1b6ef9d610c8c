/* outputs_scan.c: the pure half of the output directory: which paths are
 * outputs (symlink rules, archives), the sorted scan, Civis names, and the
 * quoting of names in messages. No network, no loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs.h"

#define SCAN_MAX_DEPTH     256        /* PATH_MAX stops it first in practice */
#define SCAN_MAX_DIR_NAMES 1000000    /* names read from one directory */
#define SHOW_MAX           1024       /* a quoted name in a message, bytes */

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s[0] does not
 * start one (overlong forms, surrogates and > U+10FFFF are invalid). s is
 * NUL-terminated, so reading up to a NUL is safe. */
static size_t
utf8_seq(const unsigned char *s, uint32_t *cp)
{
	uint32_t c = s[0];
	size_t n, i;
	uint32_t min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2; c &= 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3; c &= 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4; c &= 0x07; min = 0x10000;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/* Code points that would let a name rewrite or hide part of a log line. */
static int
cp_is_dangerous(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) ||          /* C1 controls */
	       cp == 0x200e || cp == 0x200f ||         /* LRM, RLM */
	       cp == 0x2028 || cp == 0x2029 ||         /* line/paragraph separator */
	       (cp >= 0x202a && cp <= 0x202e) ||       /* bidi embeddings, overrides */
	       (cp >= 0x2066 && cp <= 0x2069) ||       /* bidi isolates */
	       cp == 0xfeff;                           /* BOM / ZWNBSP */
}

/* ---------------------------------------------------------------- quoting */

struct qout {
	char *buf;
	size_t used;
	size_t limit;     /* bytes usable for content */
	int full;
};

static void
qput(struct qout *q, const char *p, size_t n)
{
	if (q->full)
		return;
	if (n > q->limit - q->used) {
		q->full = 1;
		return;
	}
	memcpy(q->buf + q->used, p, n);
	q->used += n;
}

static void
qput_hex(struct qout *q, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t i, k = 0;

	for (i = 0; i < n && k + 4 <= sizeof(tmp); i++) {
		tmp[k++] = '\\';
		tmp[k++] = 'x';
		tmp[k++] = hex[p[i] >> 4];
		tmp[k++] = hex[p[i] & 15];
	}
	qput(q, tmp, k);
}

static int
needs_quotes(const char *s)
{
	return *s == '\0' || strpbrk(s, " :\"'") != NULL;
}

static size_t
quote_impl(char *buf, size_t len, const char *s, int may_quote)
{
	const unsigned char *p = (const unsigned char *)s;
	struct qout q;
	int quoted;
	size_t reserve;

	if (len == 0)
		return 0;
	buf[0] = '\0';
	if (s == NULL)
		return 0;
	quoted = may_quote && needs_quotes(s);
	reserve = 1 + 3 + (quoted ? 1 : 0);   /* NUL, "...", closing quote */
	if (len <= reserve + (quoted ? 1 : 0))
		return 0;
	q.buf = buf;
	q.used = 0;
	q.limit = len - reserve;
	q.full = 0;
	if (quoted)
		qput(&q, "\"", 1);
	while (*p != '\0' && !q.full) {
		uint32_t cp;
		size_t n = utf8_seq(p, &cp);

		if (n == 0) {
			qput_hex(&q, p, 1);
			p++;
			continue;
		}
		if (n == 1) {
			switch (cp) {
			case '\n': qput(&q, "\\n", 2); break;
			case '\r': qput(&q, "\\r", 2); break;
			case '\t': qput(&q, "\\t", 2); break;
			case '\\': qput(&q, "\\\\", 2); break;
			case '"':
				if (quoted)
					qput(&q, "\\\"", 2);
				else
					qput(&q, "\"", 1);
				break;
			default:
				if (cp < 0x20 || cp == 0x7f)
					qput_hex(&q, p, 1);
				else
					qput(&q, (const char *)p, 1);
			}
		} else if (cp_is_dangerous(cp)) {
			qput_hex(&q, p, n);
		} else {
			qput(&q, (const char *)p, n);
		}
		if (!q.full)
			p += n;
	}
	/* the reserve keeps room for the tail in every case */
	q.limit = len - 1;
	q.full = 0;
	if (*p != '\0')
		qput(&q, "...", 3);
	if (quoted)
		qput(&q, "\"", 1);
	buf[q.used] = '\0';
	return q.used;
}

size_t
agent_outputs_quote(char *buf, size_t len, const char *s)
{
	return quote_impl(buf, len, s, 1);
}

size_t
agent_outputs_escape(char *buf, size_t len, const char *s)
{
	return quote_impl(buf, len, s, 0);
}

/* ---------------------------------------------------------------- names */

int
agent_outputs_civis_name(char *buf, size_t len, const char *rel, const char *suffix)
{
	const unsigned char *p = (const unsigned char *)rel;
	size_t used = 0, slen = suffix != NULL ? strlen(suffix) : 0;

	if (len == 0)
		return CIVIS_ETOOBIG;
	buf[0] = '\0';
	while (*p != '\0') {
		uint32_t cp;
		size_t n = utf8_seq(p, &cp);
		const char *src = (const char *)p;

		if (n == 0) {
			/* U+FFFD for a byte that is not UTF-8: names are JSON strings.
			 * '/' stays: the name is the path relative to the directory. */
			src = "\xef\xbf\xbd";
			if (len - used <= 3)
				goto toobig;
			memcpy(buf + used, src, 3);
			used += 3;
			p++;
			continue;
		}
		if (len - used <= n)
			goto toobig;
		memcpy(buf + used, src, n);
		used += n;
		p += n;
	}
	if (len - used <= slen)
		goto toobig;
	if (slen > 0)
		memcpy(buf + used, suffix, slen);
	used += slen;
	buf[used] = '\0';
	return CIVIS_OK;
toobig:
	buf[0] = '\0';
	return CIVIS_ETOOBIG;
}

int
agent_outputs_check_archive(char *buf, size_t len, const char *name,
                            char *err, size_t errlen)
{
	size_t n;
	const char *c;

	if (len > 0)
		buf[0] = '\0';
	if (errlen > 0)
		err[0] = '\0';
	if (name == NULL || name[0] == '\0') {
		snprintf(err, errlen, "an archive name is empty");
		return CIVIS_EINVAL;
	}
	if (name[0] == '/') {
		snprintf(err, errlen, "an archive must be a sub-directory of the output "
		         "directory, given relative to it");
		return CIVIS_EINVAL;
	}
	n = strlen(name);
	while (n > 0 && name[n - 1] == '/')
		n--;
	if (n >= len || n >= PATH_MAX) {
		snprintf(err, errlen, "an archive name is too long");
		return CIVIS_EINVAL;
	}
	memcpy(buf, name, n);
	buf[n] = '\0';
	/* every component: not empty, not ".", not ".." */
	for (c = buf; ; ) {
		const char *slash = strchr(c, '/');
		size_t clen = slash != NULL ? (size_t)(slash - c) : strlen(c);

		if (clen == 0 || (clen == 1 && c[0] == '.') ||
		    (clen == 2 && c[0] == '.' && c[1] == '.')) {
			char q[SHOW_MAX];

			agent_outputs_quote(q, sizeof(q), name);
			snprintf(err, errlen, "archive %s: empty, '.' and '..' path components "
			         "are not allowed", q);
			buf[0] = '\0';
			return CIVIS_EINVAL;
		}
		if (slash == NULL)
			break;
		c = slash + 1;
	}
	return CIVIS_OK;
}

int
agent_outputs_check_size(uint64_t size, char *err, size_t errlen)
{
	if (size > CIVIS_UPLOAD_MAX_SIZE) {
		snprintf(err, errlen, "%llu bytes is over the 5 TiB a storage object can hold",
		         (unsigned long long)size);
		return CIVIS_ETOOBIG;
	}
	if (errlen > 0)
		err[0] = '\0';
	return CIVIS_OK;
}

/* ---------------------------------------------------------------- rules */

int
agent_outputs_in_archive(const agent_out_rules *r, const char *rel, int is_dir)
{
	size_t i;

	if (rel[0] == '\0')
		return 0;
	if (r->archive_dirs) {
		if (strchr(rel, '/') != NULL)
			return 1;
		if (is_dir)
			return 2;
	}
	for (i = 0; i < r->narchives; i++) {
		const char *a = r->archives[i];
		size_t n = strlen(a);

		if (strcmp(rel, a) == 0) {
			if (is_dir)
				return 2;
		} else if (strncmp(rel, a, n) == 0 && rel[n] == '/') {
			return 1;
		}
	}
	return 0;
}

static int
join(char *buf, size_t len, const char *a, const char *b)
{
	int n;

	if (b[0] == '\0')
		n = snprintf(buf, len, "%s", a);
	else if (a[0] == '\0')
		n = snprintf(buf, len, "%s", b);
	else if (strcmp(a, "/") == 0)
		n = snprintf(buf, len, "/%s", b);
	else
		n = snprintf(buf, len, "%s/%s", a, b);
	return n >= 0 && (size_t)n < len ? 0 : -1;
}

void
agent_outputs_show(char *buf, size_t len, const agent_out_rules *r, const char *rel)
{
	char raw[2 * PATH_MAX];

	if (join(raw, sizeof(raw), r->shown, rel) != 0) {
		/* cannot happen with rel < PATH_MAX; show the relative part */
		agent_outputs_quote(buf, len, rel);
		return;
	}
	agent_outputs_quote(buf, len, raw);
}

const char *
agent_outputs_type_text(mode_t m)
{
	if (S_ISFIFO(m))
		return "not a regular file (FIFO)";
	if (S_ISSOCK(m))
		return "not a regular file (socket)";
	if (S_ISCHR(m))
		return "not a regular file (character device)";
	if (S_ISBLK(m))
		return "not a regular file (block device)";
	return "not a regular file";
}

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
	char text[SHOW_MAX + 512];
	va_list ap;

	if (w->note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	w->note(w->ud, level, text);
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
