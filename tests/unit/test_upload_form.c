/* test_upload_form.c: upload_form.c: the multipart/form-data body on the
 * wire (a one-shot local HTTP server records the raw request; its bytes are
 * compared whole), and the body read at odd sizes and again from 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "civis/civis.h"
#include "civis/upload.h"
#include "../../lib/src/sha256.h"
#include "../../lib/src/upload_int.h"
#include "upload_fixture.h"

/* Internals reached under CIVIS_UNITTEST (lib/src/upload.c). */
void civis__upload_storage_error(long http_code, const char *body, size_t len,
                                 char *buf, size_t buflen);
char *civis__upload_create_body(const char *name, const char *expires, unsigned nparts);
int civis__upload_form_build(civis_upload *u);
int civis__upload_form_read(void *ud, uint64_t off, char *buf, size_t n, size_t *got);
civis_upload *civis__upload_test_form_new(const civis_file_post *fp, int fd, uint64_t size,
                                          const char *filename);
void civis__upload_test_form_free(civis_upload *u, char sha_hex[CIVIS_SHA256_HEX_LEN]);

/* ------------------------------------------------------- form on the wire */

/* Child: accept one connection, record the raw request, answer 204. */
static void
serve_once(int lfd, const char *record)
{
	static char req[4 << 20];
	size_t len = 0;
	long clen = -1;
	int c = accept(lfd, NULL, NULL);
	FILE *f;

	if (c < 0)
		_exit(2);
	for (;;) {
		ssize_t r;
		char *hend = memmem(req, len, "\r\n\r\n", 4);
		if (hend != NULL && clen < 0) {
			char *cl = memmem(req, (size_t)(hend - req), "Content-Length: ", 16);
			clen = cl != NULL ? strtol(cl + 16, NULL, 10) : 0;
		}
		if (hend != NULL && (size_t)(hend + 4 - req) + (size_t)clen <= len)
			break;
		if (len == sizeof(req))
			_exit(3);
		r = read(c, req + len, sizeof(req) - len);
		if (r <= 0)
			_exit(4);
		len += (size_t)r;
	}
	f = fopen(record, "wb");
	if (f == NULL || fwrite(req, 1, len, f) != len || fclose(f) != 0)
		_exit(5);
	if (write(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 46) != 46)
		_exit(6);
	(void)close(c);
	_exit(0);
}

typedef struct http_outcome {
	int calls;
	int status;
	long http_code;
} http_outcome;

static void
on_http_done(void *ud, const civis_http_result *res)
{
	http_outcome *o = ud;

	o->calls++;
	o->status = res->status;
	o->http_code = res->http_code;
}

/* POST u's form to url through the http module, as upload_form.c does;
 * the server answers 204. */
static void
send_form(civis_upload *u, const char *url, size_t dlen)
{
	civis_loop *loop;
	civis_http *http;
	civis_http_spec spec;
	http_outcome ho;
	int i;

	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	assert_int_equal(civis__upload_form_build(u), CIVIS_OK);
	memset(&spec, 0, sizeof(spec));
	memset(&ho, 0, sizeof(ho));
	spec.method = "POST";
	spec.url = url;
	spec.what = "file upload";
	spec.content_type = u->form_type;
	spec.body_size = u->form_head_len + dlen + u->form_tail_len;
	spec.body_read = civis__upload_form_read;
	spec.body_ud = u;
	spec.done = on_http_done;
	spec.done_ud = &ho;
	assert_int_equal(civis_http_start(http, &spec, NULL), CIVIS_OK);
	for (i = 0; i < 1000 && ho.calls == 0; i++)
		assert_int_equal(civis_loop_run_once(loop, 10000000), CIVIS_OK);
	assert_int_equal(ho.calls, 1);
	assert_int_equal(ho.status, CIVIS_OK);
	assert_int_equal(ho.http_code, 204);
	civis_http_free(http);
	civis_loop_free(loop);
}

/* A child that serves one request (serve_once) on a loopback port: its
 * URL into url; the child's pid. */
static pid_t
start_server(const char *record, char *url, size_t ulen)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	pid_t pid;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(lfd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	(void)snprintf(url, ulen, "http://127.0.0.1:%u/bucket", ntohs(sa.sin_port));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		serve_once(lfd, record);
	(void)close(lfd);
	return pid;
}

/* The request's body is exactly the fields in order, then the file as
 * `file`, then the closing boundary, with the boundary its header names. */
static void
check_exact_body(const char *raw, size_t rawlen, const char *body, char **names,
                 char **values, const unsigned char *data, size_t dlen)
{
	static char want[4 << 20];
	const char *ct = memmem(raw, (size_t)(body - raw), "boundary=", 9);
	char bnd[80];
	size_t bl = 0, wl = 0;
	int k;

	assert_non_null(ct);
	ct += 9;
	while (ct[bl] != '\r' && bl + 1 < sizeof(bnd)) {
		bnd[bl] = ct[bl];
		bl++;
	}
	bnd[bl] = '\0';
	assert_int_equal(bl, 56);
	for (k = 0; k < 4; k++)
		wl += (size_t)snprintf(want + wl, sizeof(want) - wl,
		                       "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n",
		                       bnd, names[k], values[k]);
	wl += (size_t)snprintf(want + wl, sizeof(want) - wl,
	                       "--%s\r\nContent-Disposition: form-data; name=\"file\"; "
	                       "filename=\"out.csv\"\r\nContent-Type: application/octet-stream"
	                       "\r\n\r\n", bnd);
	memcpy(want + wl, data, dlen);
	wl += dlen;
	wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "\r\n--%s--\r\n", bnd);
	assert_int_equal(rawlen - (size_t)(body - raw), wl);
	assert_memory_equal(body, want, wl);
}

static void
test_form_on_the_wire(void **state)
{
	char *names[] = { "key", "policy", "x-amz-signature", "Content-Type" };
	char *values[] = { "uploads/${filename}", "eyJleHBp", "abc123", "text/csv" };
	civis_file_post fp;
	unsigned char data[300000];
	char path[512], record[512], url[64], sha[CIVIS_SHA256_HEX_LEN], want_sha[CIVIS_SHA256_HEX_LEN];
	civis_upload *u;
	pid_t pid;
	int fd, st;
	FILE *f;
	static char raw[4 << 20];
	size_t rawlen;
	char *body, *p_key, *p_policy, *p_sig, *p_ct, *p_file, *cl;
	(void)state;

	fill(data, sizeof(data), 7);
	write_file("out.csv", data, sizeof(data));
	tpath(path, sizeof(path), "out.csv");
	tpath(record, sizeof(record), "request.raw");
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);

	pid = start_server(record, url, sizeof(url));

	memset(&fp, 0, sizeof(fp));
	fp.id = 5;
	fp.upload_url = url;
	fp.nfields = 4;
	fp.field_names = names;
	fp.field_values = values;
	u = civis__upload_test_form_new(&fp, fd, sizeof(data), "out.csv");
	assert_non_null(u);
	send_form(u, url, sizeof(data));
	civis__upload_test_form_free(u, sha);
	(void)close(fd);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	f = fopen(record, "rb");
	assert_non_null(f);
	rawlen = fread(raw, 1, sizeof(raw), f);
	(void)fclose(f);
	body = memmem(raw, rawlen, "\r\n\r\n", 4);
	assert_non_null(body);
	body += 4;
	/* exact Content-Length, no chunking, no credentials */
	cl = memmem(raw, (size_t)(body - raw), "Content-Length: ", 16);
	assert_non_null(cl);
	assert_int_equal(strtol(cl + 16, NULL, 10), (long)(rawlen - (size_t)(body - raw)));
	assert_null(memmem(raw, (size_t)(body - raw), "Transfer-Encoding", 17));
	assert_null(memmem(raw, (size_t)(body - raw), "Authorization", 13));
	assert_non_null(memmem(raw, (size_t)(body - raw), "multipart/form-data; boundary=", 30));
	/* the fields in the answer's order, the file last */
	p_key = memmem(body, rawlen, "name=\"key\"\r\n\r\nuploads/${filename}\r\n", 35);
	p_policy = memmem(body, rawlen, "name=\"policy\"\r\n\r\neyJleHBp\r\n", 27);
	p_sig = memmem(body, rawlen, "name=\"x-amz-signature\"\r\n\r\nabc123\r\n", 34);
	p_ct = memmem(body, rawlen, "name=\"Content-Type\"\r\n\r\ntext/csv\r\n", 33);
	p_file = memmem(body, rawlen, "name=\"file\"; filename=\"out.csv\"", 31);
	assert_non_null(p_key);
	assert_non_null(p_policy);
	assert_non_null(p_sig);
	assert_non_null(p_ct);
	assert_non_null(p_file);
	assert_true(p_key < p_policy && p_policy < p_sig && p_sig < p_ct && p_ct < p_file);
	/* the file's bytes, whole, after its part header */
	{
		char *start = memmem(p_file, rawlen - (size_t)(p_file - raw), "\r\n\r\n", 4);
		assert_non_null(start);
		start += 4;
		assert_memory_equal(start, data, sizeof(data));
		assert_true(memcmp(start + sizeof(data), "\r\n--", 4) == 0);
	}
	/* the whole body, byte for byte, with the boundary of its Content-Type */
	check_exact_body(raw, rawlen, body, names, values, data, sizeof(data));
	/* the digest of what was read on the way */
	sha_hex_of(data, sizeof(data), want_sha);
	assert_string_equal(sha, want_sha);
}

/* A bare upload of `data` (written to tmpdir/name, opened into *fd) with
 * one form field, key=k; the form is not built yet. */
static civis_upload *
one_field_form(const char *name, const unsigned char *data, size_t len, int *fd)
{
	static char *names[] = { "key" };
	static char *values[] = { "k" };
	civis_file_post fp;
	char path[512];
	civis_upload *u;

	write_file(name, data, len);
	tpath(path, sizeof(path), name);
	*fd = open(path, O_RDONLY);
	assert_true(*fd >= 0);
	memset(&fp, 0, sizeof(fp));
	fp.nfields = 1;
	fp.field_names = names;
	fp.field_values = values;
	u = civis__upload_test_form_new(&fp, *fd, len, name);
	assert_non_null(u);
	return u;
}

/* The form read at odd sizes, then again from 0 (a retry): the same bytes
 * both times and the digest of the file, once. */
static void
test_form_read_retry(void **state)
{
	unsigned char data[70001];
	static char a[80000], b[80000];
	char sha[CIVIS_SHA256_HEX_LEN], want_sha[CIVIS_SHA256_HEX_LEN];
	civis_upload *u;
	uint64_t total, off;
	size_t got, step;
	int fd, pass;
	(void)state;

	fill(data, sizeof(data), 3);
	u = one_field_form("r.bin", data, sizeof(data), &fd);
	assert_int_equal(civis__upload_form_build(u), CIVIS_OK);
	total = u->form_head_len + sizeof(data) + u->form_tail_len;
	assert_true(total < sizeof(a));
	for (pass = 0; pass < 2; pass++) {
		char *out = pass == 0 ? a : b;

		step = pass == 0 ? 777 : 4096;
		for (off = 0; off < total; off += got) {
			assert_int_equal(civis__upload_form_read(u, off, out + off, step, &got), CIVIS_OK);
			assert_true(got > 0);
		}
		assert_int_equal(civis__upload_form_read(u, total, out, step, &got), CIVIS_OK);
		assert_int_equal(got, 0);
	}
	assert_memory_equal(a, b, (size_t)total);
	assert_memory_equal(a + u->form_head_len, data, sizeof(data));
	civis__upload_test_form_free(u, sha);
	(void)close(fd);
	sha_hex_of(data, sizeof(data), want_sha);
	assert_string_equal(sha, want_sha);
}

/* opts.skip_digest (start sets no_digest and sha_broken so): the same
 * bytes go out and no SHA-256 is taken, so done gets "". */
static void
test_form_skip_digest(void **state)
{
	unsigned char data[70001];
	static char out[80000];
	char sha[CIVIS_SHA256_HEX_LEN];
	civis_upload *u;
	uint64_t total, off;
	size_t got;
	int fd;
	(void)state;

	fill(data, sizeof(data), 5);
	u = one_field_form("s.bin", data, sizeof(data), &fd);
	u->no_digest = 1;
	u->sha_broken = 1;
	assert_int_equal(civis__upload_form_build(u), CIVIS_OK);
	total = u->form_head_len + sizeof(data) + u->form_tail_len;
	for (off = 0; off < total; off += got) {
		assert_int_equal(civis__upload_form_read(u, off, out + off, 4096, &got), CIVIS_OK);
		assert_true(got > 0);
	}
	/* a retry from 0 does not start a digest either */
	assert_int_equal(civis__upload_form_read(u, 0, out, 4096, &got), CIVIS_OK);
	assert_memory_equal(out + u->form_head_len, data, sizeof(data));
	assert_int_equal(u->sha_ready, 0);
	civis__upload_test_form_free(u, sha);
	(void)close(fd);
	assert_string_equal(sha, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_form_on_the_wire),
		cmocka_unit_test(test_form_read_retry),
		cmocka_unit_test(test_form_skip_digest),
	};
	int rc;

	rc = cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
	return rc;
}
