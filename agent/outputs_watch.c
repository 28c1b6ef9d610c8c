/* outputs_watch.c: inotify on the output directory and every
 * sub-directory while the command runs: a file closed after writing (or
 * moved in) is queued at once; an overflow or a moved directory rebuilds
 * the map of watches. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "outputs_int.h"

#define MAX_WD       (1 << 20)          /* inotify watch descriptors, at most */
#define WATCH_MASK   (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | \
                      IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | \
                      IN_EXCL_UNLINK)
#define READS_PER_WAKE 64

static void
watch_add(agent_outputs *o, const char *rel)
{
	char path[PATH_MAX], shown[SHOW_MAX];
	char *copy;
	int wd;

	if (o->ifd < 0)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", o->root, rel) >= (int)sizeof(path))
		return;
	if (o->nwatches >= AGENT_OUTPUTS_MAX_WATCHES) {
		errno = ENOSPC;
		wd = -1;
	} else {
		wd = inotify_add_watch(o->ifd, path, WATCH_MASK);
	}
	if (wd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return;
		if (!o->warned_watch) {
			o->warned_watch = 1;
			show(o, shown, sizeof(shown), rel);
			onote(o, "warn", "cannot watch %s (%s): files there are uploaded when the "
			      "command exits", shown, errno == ENOSPC
			      ? "inotify watch limit reached" : strerror(errno));
		}
		return;
	}
	if ((size_t)wd >= MAX_WD) {
		inotify_rm_watch(o->ifd, wd);
		return;
	}
	if ((size_t)wd >= o->nwdrel) {
		size_t ncap = o->nwdrel ? o->nwdrel : 64;
		char **nw;

		while (ncap <= (size_t)wd)
			ncap *= 2;
		nw = realloc(o->wdrel, ncap * sizeof(*nw));
		if (nw == NULL) {
			inotify_rm_watch(o->ifd, wd);
			return;
		}
		memset(nw + o->nwdrel, 0, (ncap - o->nwdrel) * sizeof(*nw));
		o->wdrel = nw;
		o->nwdrel = ncap;
	}
	copy = strdup(rel);
	if (copy == NULL) {
		inotify_rm_watch(o->ifd, wd);
		return;
	}
	if (o->wdrel[wd] == NULL)
		o->nwatches++;
	free(o->wdrel[wd]);          /* the same directory, seen again (renamed) */
	o->wdrel[wd] = copy;
}

/* Watch sub and every directory under it (silently: the final scan speaks). */
static void
watch_tree(agent_outputs *o, const char *sub)
{
	agent_out_scan s;
	size_t i;

	if (o->ifd < 0 || agent_outputs_scan(&s, &o->rules, sub, NULL, NULL) != CIVIS_OK)
		return;
	for (i = 0; i < s.ndirs; i++)
		watch_add(o, s.dirs[i]);
	agent_outputs_scan_dispose(&s);
}

/* After an overflow or a directory moved: map every directory again, drop
 * the watches of those no longer found under DIR. */
static void
watch_rebuild(agent_outputs *o)
{
	char **old = o->wdrel;
	size_t nold = o->nwdrel, i;

	o->rebuilds++;
	o->wdrel = NULL;
	o->nwdrel = 0;
	o->nwatches = 0;
	watch_tree(o, "");
	for (i = 0; i < nold; i++) {
		if (old[i] == NULL)
			continue;
		if (i >= o->nwdrel || o->wdrel[i] == NULL)
			inotify_rm_watch(o->ifd, (int)i);
		free(old[i]);
	}
	free(old);
}

static void
file_ready(agent_outputs *o, const char *rel)
{
	char reason[256], why[128];
	agent_out_stat st;
	struct ent *e;

	if (agent_outputs_in_archive(&o->rules, rel, 0) != 0)
		return;
	if (agent_outputs_classify(&o->rules, rel, &st, reason, sizeof(reason)) != AGENT_OUT_FILE)
		return;    /* the final scan says why, once */
	e = ent_find(o, rel, AGENT_OUT_FILE);
	if (e == NULL) {
		e = ent_new(o, rel, AGENT_OUT_FILE, why, sizeof(why));
		if (e == NULL)
			return;   /* the final scan reports it */
	}
	e->size_hint = st.size;
	switch (e->state) {
	case ST_NEW:
	case ST_FAILED:
		enqueue(o, e);
		pump(o);
		break;
	case ST_UPLOADING:
	case ST_DONE:
		e->dirty = 1;
		break;
	case ST_QUEUED:
		break;
	}
}

void
stop_watching(agent_outputs *o)
{
	size_t i;

	if (o->io_added) {
		civis_loop_del_io(o->loop, o->ifd);
		o->io_added = 0;
	}
	if (o->ifd >= 0) {
		close(o->ifd);
		o->ifd = -1;
	}
	for (i = 0; i < o->nwdrel; i++)
		free(o->wdrel[i]);
	free(o->wdrel);
	o->wdrel = NULL;
	o->nwdrel = 0;
	o->nwatches = 0;
}

static void
on_inotify(civis_loop *loop, int fd, int revents, void *ud)
{
	agent_outputs *o = ud;
	union {
		struct inotify_event ev;
		char buf[65536];
	} u;
	int rebuild = 0, reads;

	(void)loop;
	(void)revents;
	for (reads = 0; reads < READS_PER_WAKE && o->ifd >= 0; reads++) {
		ssize_t n = read(fd, u.buf, sizeof(u.buf));
		size_t off = 0;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				onote(o, "warn", "reading inotify events failed (%s): the rest is "
				      "uploaded when the command exits", strerror(errno));
				stop_watching(o);
			}
			break;
		}
		if (n == 0)
			break;
		while (off + sizeof(struct inotify_event) <= (size_t)n) {
			struct inotify_event ev;
			const char *name;
			const char *dir;
			char rel[PATH_MAX];
			size_t nlen;

			memcpy(&ev, u.buf + off, sizeof(ev));
			name = u.buf + off + sizeof(ev);
			if (ev.len > (size_t)n - off - sizeof(ev))
				break;
			off += sizeof(ev) + ev.len;
			if (ev.mask & IN_Q_OVERFLOW) {
				rebuild = 1;
				continue;
			}
			if (ev.wd < 0 || (size_t)ev.wd >= o->nwdrel || o->wdrel[ev.wd] == NULL)
				continue;
			dir = o->wdrel[ev.wd];
			if (ev.mask & IN_IGNORED) {
				free(o->wdrel[ev.wd]);
				o->wdrel[ev.wd] = NULL;
				o->nwatches--;
				continue;
			}
			if ((ev.mask & (IN_MOVE_SELF | IN_DELETE_SELF)) && dir[0] == '\0') {
				if (!o->warned_root) {
					o->warned_root = 1;
					onote(o, "warn", "the output directory was moved or removed: "
					      "what is in it at exit is uploaded then");
				}
				continue;
			}
			if (ev.mask & IN_MOVE_SELF) {
				rebuild = 1;   /* a sub-directory moved: its path changed */
				continue;
			}
			nlen = strnlen(name, ev.len);
			if (nlen == 0)
				continue;
			if (snprintf(rel, sizeof(rel), "%s%s%.*s", dir, dir[0] ? "/" : "",
			             (int)nlen, name) >= (int)sizeof(rel))
				continue;
			if (ev.mask & IN_ISDIR) {
				if (ev.mask & IN_MOVED_FROM)
					rebuild = 1;
				else if ((ev.mask & (IN_CREATE | IN_MOVED_TO)) &&
				         agent_outputs_in_archive(&o->rules, rel, 1) == 0)
					watch_tree(o, rel);
				continue;
			}
			if (ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
				file_ready(o, rel);
		}
	}
	if (rebuild && o->ifd >= 0)
		watch_rebuild(o);
}

void
start_watching(agent_outputs *o)
{
	o->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (o->ifd < 0) {
		onote(o, "warn", "cannot watch the output directory (%s): files are uploaded "
		      "when the command exits", strerror(errno));
	} else if (civis_loop_add_io(o->loop, o->ifd, POLLIN, on_inotify, o) != CIVIS_OK) {
		onote(o, "warn", "cannot watch the output directory (no room in the loop): "
		      "files are uploaded when the command exits");
		close(o->ifd);
		o->ifd = -1;
	} else {
		o->io_added = 1;
		watch_tree(o, "");
	}
}
