/* backlog.c: a flood's raw reads, kept on disk and made into lines in
 * slices. See logstream_int.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logstream_int.h"

#define BL_QUIET_NS  2000000ULL   /* the pipes count as busy this long after a read */
#define BL_FLOOR_NS  50000000ULL  /* yet a slice at least this often */

struct bl_hdr {
	uint32_t len;
	uint32_t stream;
	uint64_t read_ns;
};

static int
bl_open(agent_logstream *ls)
{
	const char *dir = ls->o.spool_dir;
	char path[4096];
	int fd;

	if (!dir || !*dir)
		dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (snprintf(path, sizeof(path), "%s/civis-agent-backlog-XXXXXX", dir) >= (int)sizeof(path))
			return -1;
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			(void)unlink(path);
	}
	ls->bl_fd = fd;
	return fd;
}

/* All of len bytes at off, written (writing) or read; -1 on error or EOF. */
static int
all_at(int fd, char *buf, size_t len, uint64_t off, int writing)
{
	while (len > 0) {
		ssize_t n = writing ? pwrite(fd, buf, len, (off_t)off)
		                    : pread(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void
on_backlog(civis_loop *loop, void *ud);

static void
bl_schedule(agent_logstream *ls)
{
	if (!ls->bl_timer)
		(void)civis_loop_add_timer(ls->loop, civis_now_ns(), on_backlog, ls, &ls->bl_timer);
}

int
agent_backlog_append(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;
	struct bl_hdr h = { (uint32_t)len, (uint32_t)s->id, s->read_ns };

	if (ls->bl_broken || (ls->bl_fd < 0 && bl_open(ls) < 0))
		goto broken;
	if (all_at(ls->bl_fd, (char *)&h, sizeof(h), ls->bl_woff, 1) != 0 ||
	    all_at(ls->bl_fd, (char *)data, len, ls->bl_woff + sizeof(h), 1) != 0)
		goto broken;
	ls->bl_woff += sizeof(h) + len;
	if (ls->bl_woff - ls->bl_roff > ls->bl_peak)
		ls->bl_peak = ls->bl_woff - ls->bl_roff;
	bl_schedule(ls);
	return 0;
broken:
	if (!ls->bl_broken)
		fprintf(stderr, "civis-agent: cannot keep a log backlog file in %s (%s); lines are "
		        "made as the output is read, which may slow the command down\n",
		        ls->o.spool_dir ? ls->o.spool_dir : "$TMPDIR", strerror(errno));
	ls->bl_broken = 1;
	return -1;
}

void
agent_backlog_drain(agent_logstream *ls, uint64_t budget)
{
	while (ls->bl_roff < ls->bl_woff && budget > 0) {
		struct bl_hdr h;
		struct stream *s;

		if (all_at(ls->bl_fd, (char *)&h, sizeof(h), ls->bl_roff, 0) != 0 ||
		    h.len > READ_BUF || h.stream > 1 ||
		    all_at(ls->bl_fd, ls->readbuf, h.len, ls->bl_roff + sizeof(h), 0) != 0) {
			/* our own file, just written: only a failing disk gets here */
			fprintf(stderr, "civis-agent: the log backlog file cannot be read back (%s); "
			        "%llu bytes of output are not in the run log\n", strerror(errno),
			        (unsigned long long)(ls->bl_woff - ls->bl_roff));
			ls->bl_roff = ls->bl_woff;
			break;
		}
		ls->bl_roff += sizeof(h) + h.len;
		budget = h.len >= budget ? 0 : budget - h.len;
		s = &ls->st[h.stream];
		s->read_ns = h.read_ns;
		agent_lines_feed(s, ls->readbuf, h.len);
	}
	if (ls->bl_roff == ls->bl_woff && ls->bl_woff > 0) {
		/* caught up: give the space back and start over */
		if (ftruncate(ls->bl_fd, 0) == 0)
			ls->bl_roff = ls->bl_woff = 0;
		for (int i = 0; i < 2; i++)
			if (ls->st[i].fd < 0 && ls->st[i].lb)
				agent_lines_finish(&ls->st[i]);
	}
}

static void
on_backlog(civis_loop *loop, void *ud)
{
	agent_logstream *ls = ud;
	uint64_t now = civis_now_ns();

	ls->bl_timer = 0;
	/* While the command floods, the agent only reads, copies and appends:
	 * line work (and the requests it feeds) would take CPU from the command
	 * on a small machine. A slice now and then keeps the run log moving. */
	if (now - ls->last_read < BL_QUIET_NS && now - ls->bl_last_slice < BL_FLOOR_NS) {
		(void)civis_loop_add_timer(loop, now + BL_QUIET_NS, on_backlog, ls, &ls->bl_timer);
		return;
	}
	ls->bl_last_slice = now;
	/* one slice per loop turn: reads and transfers go on in between */
	agent_backlog_drain(ls, 256u << 10);
	if (ls->bl_roff < ls->bl_woff)
		bl_schedule(ls);
}

int
agent_backlog_empty(const agent_logstream *ls)
{
	return ls->bl_roff == ls->bl_woff;
}

void
agent_backlog_free(agent_logstream *ls)
{
	if (ls->bl_timer)
		civis_loop_cancel_timer(ls->loop, ls->bl_timer);
	ls->bl_timer = 0;
	if (ls->bl_fd >= 0)
		close(ls->bl_fd);
	ls->bl_fd = -1;
}
