/* tee.c: the byte-exact copy of the command's output. See logstream_int.h. */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "logstream_int.h"

/* Write all of buf to fd, waiting if fd is non-blocking; stop copying to a
 * closed reader (EPIPE) without disturbing anything else. */
static void
tee_write(agent_logstream *ls, int id, int fd, const char *buf, size_t len)
{
	while (len > 0 && !ls->tee_broken[id]) {
		ssize_t n = write(fd, buf, len);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			(void)poll(&p, 1, 1000);
		} else {
			ls->tee_broken[id] = 1;
		}
	}
}

static int
tee_out(void *ud, const char *data, size_t len)
{
	struct stream *s = ud;

	tee_write(s->ls, s->id, s->tee_fd, data, len);
	return 0;
}

void
agent_tee_copy(struct stream *s, const char *data, size_t len)
{
	agent_logstream *ls = s->ls;

	if (!ls->o.tee || s->tee_fd < 0)
		return;
	if (s->tee_rs)
		(void)civis_redact_stream_feed(s->tee_rs, data, len, tee_out, s);
	else
		tee_write(ls, s->id, s->tee_fd, data, len);
}

void
agent_tee_end(struct stream *s)
{
	if (s->tee_rs)
		(void)civis_redact_stream_flush(s->tee_rs, tee_out, s);
}
