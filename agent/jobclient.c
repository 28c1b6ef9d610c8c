/* jobclient.c: one request, one reply, over the job API socket. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "jobclient.h"

static int
connect_to(const char *addr, char *text, size_t textlen)
{
	struct sockaddr_un sa;
	size_t n = strlen(addr);
	socklen_t salen;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (n == 0 || n >= sizeof(sa.sun_path)) {
		snprintf(text, textlen, "%s is not a socket address (%zu bytes)",
		         AGENT_JOBCLIENT_ENV, n);
		return -1;
	}
	memcpy(sa.sun_path, addr, n);
	if (addr[0] == '@')
		sa.sun_path[0] = '\0';   /* abstract namespace */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (addr[0] != '@'));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(text, textlen, "socket: %s", strerror(errno));
		return -1;
	}
	while (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
		if (errno == EINTR)
			continue;
		snprintf(text, textlen, "cannot reach the agent at %s: %s (is %s from another run?)",
		         addr, strerror(errno), AGENT_JOBCLIENT_ENV);
		close(fd);
		return -1;
	}
	return fd;
}

/* Milliseconds left until deadline_ns, -1 for none. */
static int
left_ms(uint64_t deadline_ns)
{
	uint64_t now = civis_now_ns();

	if (deadline_ns == 0)
		return -1;
	if (now >= deadline_ns)
		return 0;
	return (int)((deadline_ns - now + 999999) / 1000000);
}

static int
wait_fd(int fd, short ev, uint64_t deadline_ns)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int r;

	do
		r = poll(&p, 1, left_ms(deadline_ns));
	while (r < 0 && errno == EINTR);
	return r;
}

int
agent_jobclient_call(const char *addr, const agent_jobapi_req *req, int timeout_ms,
                     int64_t *id, char *text, size_t textlen)
{
	char buf[AGENT_JOBAPI_MAX_REPLY + 1];
	uint64_t deadline = timeout_ms > 0 ? civis_now_ns() + (uint64_t)timeout_ms * 1000000ULL : 0;
	char *line = NULL;
	size_t len = 0, off = 0, got = 0;
	int fd = -1, rc, status, send_errno = 0;

	*id = 0;
	snprintf(text, textlen, "%s", "");
	rc = agent_jobapi_format_request(req, &line, &len);
	if (rc != CIVIS_OK) {
		snprintf(text, textlen, "cannot form the request: %s", civis_strerror(rc));
		return rc;
	}
	fd = connect_to(addr, text, textlen);
	if (fd < 0) {
		rc = CIVIS_ESYS;
		goto out;
	}
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLOUT, deadline) == 0) {
				snprintf(text, textlen, "the agent at %s did not take the request in time", addr);
				rc = CIVIS_ETIMEOUT;
				goto out;
			}
		} else if (errno == EPIPE || errno == ECONNRESET) {
			/* The agent closed at once: it may have said why (a refusal)
			 * before it did, so read that rather than the broken pipe. */
			send_errno = errno;
			break;
		} else {
			snprintf(text, textlen, "sending to the agent at %s: %s", addr, strerror(errno));
			rc = CIVIS_ESYS;
			goto out;
		}
	}
	for (;;) {
		ssize_t n;
		char *nl = memchr(buf, '\n', got);

		if (nl != NULL) {
			rc = agent_jobapi_parse_reply(buf, (size_t)(nl - buf), &status, id, text, textlen);
			rc = rc == CIVIS_OK ? status : CIVIS_EPROTO;
			goto out;
		}
		if (got >= AGENT_JOBAPI_MAX_REPLY) {
			snprintf(text, textlen, "the agent's reply is over %u bytes", AGENT_JOBAPI_MAX_REPLY);
			rc = CIVIS_EPROTO;
			goto out;
		}
		if (wait_fd(fd, POLLIN, deadline) == 0) {
			snprintf(text, textlen, "no reply from the agent at %s in %d ms", addr, timeout_ms);
			rc = CIVIS_ETIMEOUT;
			goto out;
		}
		n = recv(fd, buf + got, AGENT_JOBAPI_MAX_REPLY - got, MSG_DONTWAIT);
		if (n > 0) {
			got += (size_t)n;
		} else if (n == 0 || send_errno != 0) {
			if (send_errno != 0)
				snprintf(text, textlen, "sending to the agent at %s: %s", addr,
				         strerror(send_errno));
			else
				snprintf(text, textlen, "the agent at %s closed the connection without a "
				         "reply", addr);
			rc = n == 0 && send_errno == 0 ? CIVIS_EPROTO : CIVIS_ESYS;
			goto out;
		} else if (errno != EAGAIN && errno != EINTR) {
			snprintf(text, textlen, "reading from the agent at %s: %s", addr, strerror(errno));
			rc = CIVIS_ESYS;
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(line);
	return rc;
}
