/* backlog.c: a flood's raw reads, kept on disk and made into lines in
 * slices. See logstream_int.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../lib/src/fileio.h"   /* the library's one temp file and pread/pwrite loops */
#include "logstream_int.h"

#define BL_QUIET_NS  2000000ULL   /* the pipes count as busy this long after a read */
#define BL_FLOOR_NS  50000000ULL  /* yet a slice at least this often */

struct bl_hdr {
	uint32_t len;
	uint32_t stream;
	uint64_t read_ns;
};

/* The file, made on first use; -1 with the reason in why. */
static int
bl_open(agent_logstream *ls, char *why, size_t whylen, int *unusable)
{
	int e;

	*unusable = 0;
	errno = 0;
	if (civis__tmpfile(ls->o.spool_dir, "civis-agent-backlog", 0, &ls->bl_fd, why,
	                   whylen) != CIVIS_OK) {
		e = errno;
		*unusable = e == EROFS || e == EACCES || e == EPERM || e == ENOENT || e == ENOTDIR;
		return -1;
	}
	return ls->bl_fd;
}

static void
on_backlog(civis_loop *loop, void *ud);

static void
bl_set_full(agent_logstream *ls, int full)
{
	uint64_t now = civis_now_ns();

	ls->bl_full = full;
	if (full) {
		if (ls->bl_full_times++ == 0)
			agent_logstream_note(ls, "warn", "the log backlog reached its cap of %llu bytes "
			                     "(--spool-max): the command's output is read only as fast as "
			                     "it is made into lines; nothing is dropped",
			                     (unsigned long long)ls->bl_cap);
		ls->bl_full_since = now;
	} else {
		ls->bl_full_ns += now - ls->bl_full_since;
	}
	for (int i = 0; i < 2; i++)
		agent_ls_reading(&ls->st[i]);
}

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
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)data, len } };
	char why[512];
	int unusable = 0;

	if (ls->bl_broken)
		return -1;
	if (ls->bl_fd < 0 && bl_open(ls, why, sizeof(why), &unusable) < 0)
		goto broken;
	if (civis__pwritev_all(ls->bl_fd, iov, 2, ls->bl_woff) != 0) {
		snprintf(why, sizeof(why), "cannot write it in %s: %s",
		         ls->o.spool_dir ? ls->o.spool_dir : "$TMPDIR", strerror(errno));
		goto broken;
	}
	ls->bl_woff += sizeof(h) + len;
	if (ls->bl_woff - ls->bl_roff > ls->bl_peak)
		ls->bl_peak = ls->bl_woff - ls->bl_roff;
	if (!ls->bl_full && ls->bl_woff - ls->bl_roff >= ls->bl_cap)
		bl_set_full(ls, 1);
	bl_schedule(ls);
	return 0;
broken:
	/* No writable directory (a read-only file system): nothing is wrong,
	 * so say it plainly; the run log's own note names the directory. */
	if (unusable)
		fprintf(stderr, "civis-agent: no disk for raw output: lines are made as the "
		        "output is read\n");
	else
		fprintf(stderr, "civis-agent: cannot keep a log backlog file (%s); lines are "
		        "made as the output is read, which may slow the command down\n", why);
	ls->bl_broken = 1;
	return -1;
}

void
agent_backlog_drain(agent_logstream *ls, uint64_t budget)
{
	while (ls->bl_roff < ls->bl_woff && budget > 0) {
		struct bl_hdr h;
		struct stream *s;
		size_t got = 0, got2 = 0;

		if (civis__pread_all(ls->bl_fd, &h, sizeof(h), ls->bl_roff, &got) != 0 ||
		    got != sizeof(h) || h.len > READ_BUF || h.stream > 1 ||
		    civis__pread_all(ls->bl_fd, ls->readbuf, h.len, ls->bl_roff + sizeof(h), &got2) != 0 ||
		    got2 != h.len) {
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
	if (ls->bl_full && ls->bl_woff - ls->bl_roff <= ls->bl_cap / 2)
		bl_set_full(ls, 0);
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
	/* The run log is full (memory only): its lines would only pile up. */
	if (agent_ls_run_full(ls)) {
		(void)civis_loop_add_timer(loop, now + ROOM_POLL_NS, on_backlog, ls, &ls->bl_timer);
		return;
	}
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

/* A read the backlog could not take while it still holds older bytes:
 * make lines of everything in it first, then of this read, so the run log
 * keeps the order the command wrote in. */
void
agent_backlog_drain_before(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;
	uint64_t read_ns = s->read_ns;
	char *copy = malloc(len);

	if (copy != NULL)
		memcpy(copy, data, len);   /* the drain reuses the read buffer */
	agent_backlog_drain(ls, UINT64_MAX);
	s->read_ns = read_ns;
	if (copy != NULL) {
		agent_lines_feed(s, copy, len);
		free(copy);
	} else {
		fprintf(stderr, "civis-agent: out of memory: %zu bytes of output are not in the "
		        "run log\n", len);
	}
}

int
agent_backlog_full(const agent_logstream *ls)
{
	return ls->bl_full;
}

void
agent_backlog_report(agent_logstream *ls)
{
	if (ls->bl_said || ls->bl_full_times == 0)
		return;
	ls->bl_said = 1;
	agent_logstream_note(ls, "info", "the log backlog cap (%llu bytes) paused reading the "
	                     "command's output %llu times, %.1f s in all; no output was dropped",
	                     (unsigned long long)ls->bl_cap, (unsigned long long)ls->bl_full_times,
	                     (double)ls->bl_full_ns / 1e9);
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
