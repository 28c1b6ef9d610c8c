/* fuzz_jobapi.c: the job API against arbitrary clients. The input is what
 * one client sends, cut into writes at the 0xff bytes it contains (so a
 * run can pipeline, stall mid-request or stop without a newline); the
 * server runs on a real loop and socket. Also fed to the request and reply
 * parsers directly. Must never crash, leak, hang or answer with a line that
 * is not a reply; every valid request gets exactly one answer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "jobapi.h"
#include "jobapi_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static civis_loop *loop;
static agent_jobapi *api;
static unsigned calls;
static uint64_t held[64];
static unsigned nheld;

static void
handler(void *ud, uint64_t call_id, const agent_jobapi_req *req)
{
	(void)ud;
	calls++;
	if (req->op == AGENT_JOBAPI_MASK && req->value_len == 0)
		abort();                    /* the parser promised a value */
	/* Every other call is answered later, at the end of the run. */
	if (call_id % 2 || nheld == 64)
		agent_jobapi_answer(api, call_id, CIVIS_OK, req->id, req->name);
	else
		held[nheld++] = call_id;
}

static void
check_replies(const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		char text[256];
		int64_t id;
		int st;

		if (nl == NULL)
			break;
		if (agent_jobapi_parse_reply(p, (size_t)(nl - p), &st, &id, text, sizeof(text)) !=
		    CIVIS_OK)
			abort();
		p = nl + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	agent_jobapi_req req;
	char err[256], rbuf[65536];
	struct sockaddr_un sa;
	size_t off = 0, got = 0;
	int fd;

	if (size > (1u << 16))
		return 0;
	if (agent_jobapi_parse_request((const char *)data, size, &req, err, sizeof(err)) == CIVIS_OK)
		agent_jobapi_req_dispose(&req);
	{
		char text[64];
		int64_t id;
		int st;

		(void)agent_jobapi_parse_reply((const char *)data, size, &st, &id, text, sizeof(text));
	}
	if (loop == NULL) {
		if (civis_loop_new(&loop) != CIVIS_OK ||
		    agent_jobapi_new(&api, NULL, handler, NULL, err, sizeof(err)) != CIVIS_OK ||
		    agent_jobapi_attach(api, loop) != CIVIS_OK)
			abort();
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strncpy(sa.sun_path, agent_jobapi_path(api), sizeof(sa.sun_path) - 1);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		abort();
	while (off < size) {
		const uint8_t *cut = memchr(data + off, 0xff, size - off);
		size_t n = cut ? (size_t)(cut - (data + off)) : size - off;

		if (n > 0 && send(fd, data + off, n, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
			break;
		off += n + (cut != NULL);
		civis_loop_run_once(loop, 0);
	}
	for (int i = 0; i < 20; i++) {
		ssize_t n;

		if (i == 10) {
			while (nheld > 0)
				agent_jobapi_answer(api, held[--nheld], CIVIS_EHTTP, 0, "later");
		}

		civis_loop_run_once(loop, 0);
		n = recv(fd, rbuf + got, sizeof(rbuf) - 1 - got, MSG_DONTWAIT);
		if (n > 0)
			got += (size_t)n;
	}
	check_replies(rbuf, got);
	close(fd);
	for (int i = 0; i < 3; i++)
		civis_loop_run_once(loop, 0);
	while (nheld > 0)
		agent_jobapi_answer(api, held[--nheld], CIVIS_OK, 0, NULL);
	return 0;
}
