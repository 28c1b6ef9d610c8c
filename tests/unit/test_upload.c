/* test_upload.c: the upload engine's core and multipart modules: part
 * sizes, request bodies, S3 error texts, the multipart digest on its helper
 * thread, and the state machine without a server (bad options, a descriptor
 * given, missing file, over 5 TiB, cancel in every state). The form body is
 * in test_upload_form.c, staging in test_upload_stage.c. */
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

/* ------------------------------------------------------------ part size */

static uint64_t
nparts(uint64_t size, uint64_t ps)
{
	return size / ps + (size % ps != 0);
}

static void
test_part_size(void **state)
{
	(void)state;
	assert_int_equal(civis_upload_part_size(0), 5 * MiB);
	assert_int_equal(civis_upload_part_size(1), 5 * MiB);
	/* ceil(sqrt(5 MiB * 50 MiB)) = ceil(2^20 * sqrt(250)) */
	assert_int_equal(civis_upload_part_size(50 * MiB), 16579443);
	assert_int_equal(civis_upload_part_size(50 * MiB + 1), 16579443);
	assert_int_equal(nparts(50 * MiB + 1, 16579443), 4);
	assert_int_equal(civis_upload_part_size(1ULL << 30), 75029991);
	assert_int_equal(nparts(1ULL << 30, 75029991), 15);
	/* 5 TiB: exactly 5 GiB parts, 1024 of them (S3's part maximum) */
	assert_int_equal(civis_upload_part_size(5 * TiB), 5ULL << 30);
	assert_int_equal(nparts(5 * TiB, 5ULL << 30), 1024);
	assert_int_equal(civis_upload_part_size(5 * TiB + 1), (5ULL << 30) + 1);
	/* 1 PiB: sqrt would give ~13,400 parts, so raised to 10,000 */
	assert_int_equal(civis_upload_part_size(1ULL << 50), 112589990685ULL);
	assert_int_equal(nparts(1ULL << 50, 112589990685ULL), 10000);
	/* no overflow at the top of the range */
	assert_true(nparts(UINT64_MAX, civis_upload_part_size(UINT64_MAX)) <= 10000);
}

/* r = part_size(s) is the smallest r >= 5 MiB with r^2 >= 5 MiB * s. */
static void
test_part_size_is_ceil_sqrt(void **state)
{
	uint64_t s;
	(void)state;
	for (s = 1; s < (1ULL << 42); s = s * 3 + 7) {
		uint64_t r = civis_upload_part_size(s);
		long double exact = (long double)5 * MiB * (long double)s;
		if (r == 5 * MiB)
			continue;
		assert_true((long double)r * r >= exact);
		assert_true((long double)(r - 1) * (r - 1) < exact);
	}
}

/* -------------------------------------------------------- request bodies */

/* Send buffers: libcurl's own for small bodies; else 2 MiB shared by the
 * requests in flight, at least 256 KiB each, at most the body, 64 KiB steps. */
static void
test_send_buffer(void **state)
{
	(void)state;
	assert_int_equal(civis__upload_send_buffer(0, 1), 0);
	assert_int_equal(civis__upload_send_buffer(256 * 1024 - 1, 1), 0);
	assert_int_equal(civis__upload_send_buffer(256 * 1024, 1), 256 * 1024);
	assert_int_equal(civis__upload_send_buffer(300 * 1024, 1), 256 * 1024);
	assert_int_equal(civis__upload_send_buffer(1 * MiB, 1), 1 * MiB);
	assert_int_equal(civis__upload_send_buffer(1024 * MiB, 1), 2 * MiB);
	assert_int_equal(civis__upload_send_buffer(68 * MiB, 0), 2 * MiB);
	assert_int_equal(civis__upload_send_buffer(68 * MiB, 4), 512 * 1024);
	assert_int_equal(civis__upload_send_buffer(68 * MiB, 3), 640 * 1024);
	assert_int_equal(civis__upload_send_buffer(68 * MiB, 16), 256 * 1024);
	assert_int_equal(civis__upload_send_buffer(68 * MiB, 64), 256 * 1024);
	assert_int_equal(civis__upload_send_buffer(5 * MiB, 64), 256 * 1024);
}

static void
test_create_body(void **state)
{
	char *b;
	(void)state;

	b = civis__upload_create_body("out.csv", NULL, 0);
	assert_string_equal(b, "{\"name\":\"out.csv\"}");
	free(b);
	b = civis__upload_create_body("out \"x\".csv", "never", 0);
	assert_string_equal(b, "{\"name\":\"out \\\"x\\\".csv\",\"expiresAt\":null}");
	free(b);
	b = civis__upload_create_body("big.bin", "2030-01-01T00:00:00Z", 15);
	assert_string_equal(b, "{\"name\":\"big.bin\",\"numParts\":15,"
	                       "\"expiresAt\":\"2030-01-01T00:00:00Z\"}");
	free(b);
}

/* --------------------------------------------------------- S3 error text */

static void
test_storage_error(void **state)
{
	const char *xml =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>EntityTooSmall</Code>"
	    "<Message>Your proposed upload is smaller than the minimum allowed size</Message>"
	    "<ProposedSize>3</ProposedSize><RequestId>X</RequestId></Error>";
	const char *ent = "<Error><Code>AccessDenied</Code><Message>Policy &amp; "
	                  "&lt;signature&gt;\nexpired</Message></Error>";
	char buf[256];
	(void)state;

	civis__upload_storage_error(400, xml, strlen(xml), buf, sizeof(buf));
	assert_string_equal(buf, "400 EntityTooSmall: Your proposed upload is smaller than "
	                         "the minimum allowed size");
	civis__upload_storage_error(403, ent, strlen(ent), buf, sizeof(buf));
	assert_string_equal(buf, "403 AccessDenied: Policy & <signature> expired");
	civis__upload_storage_error(400, "<Error><Code>X</Code>", 21, buf, sizeof(buf));
	assert_string_equal(buf, "400 X");
	/* unterminated tag: not used; empty body: the code alone */
	civis__upload_storage_error(500, "<Code>Slow", 10, buf, sizeof(buf));
	assert_true(strncmp(buf, "500", 3) == 0);
	assert_null(strstr(buf, "Slow\n"));
	civis__upload_storage_error(503, "", 0, buf, sizeof(buf));
	assert_string_equal(buf, "503");
	/* a small buffer is cut, still terminated */
	civis__upload_storage_error(400, xml, strlen(xml), buf, 12);
	assert_int_equal(strlen(buf), 11);
}

/* A multipart file's digest comes from the helper thread: the file's
 * SHA-256, told to the loop; stopping it early joins it at once. */
static void
test_hash_thread(void **state)
{
	civis_file_post fp;
	unsigned char *data = malloc(3 * MiB + 17);
	char path[512], sha[CIVIS_SHA256_HEX_LEN], want[CIVIS_SHA256_HEX_LEN];
	civis_upload *u;
	civis_loop *loop;
	int fd, i;
	(void)state;

	assert_non_null(data);
	fill(data, 3 * MiB + 17, 11);
	write_file("h.bin", data, 3 * MiB + 17);
	tpath(path, sizeof(path), "h.bin");
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	memset(&fp, 0, sizeof(fp));
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	u = civis__upload_test_form_new(&fp, fd, 3 * MiB + 17, "h.bin");
	assert_non_null(u);
	u->loop = loop;
	assert_int_equal(civis__upload_hash_start(u), CIVIS_OK);
	for (i = 0; i < 500 && !u->sha_ready; i++)
		assert_int_equal(civis_loop_run_once(loop, 10000000), CIVIS_OK);
	assert_true(u->sha_ready);
	assert_null(u->hasher);
	/* started again and stopped at once: joined, nothing left behind */
	u->sha_ready = 0;
	assert_int_equal(civis__upload_hash_start(u), CIVIS_OK);
	civis__upload_hash_stop(u);
	assert_null(u->hasher);
	u->sha_ready = 1;
	civis__upload_test_form_free(u, sha);
	civis_loop_free(loop);
	(void)close(fd);
	sha_hex_of(data, 3 * MiB + 17, want);
	assert_string_equal(sha, want);
	free(data);
}

/* ------------------------------------------- the state machine, no server */

typedef struct outcome {
	int calls;
	int status;
	int64_t file_id;
	char error[512];
} outcome;

static void
on_done(void *ud, int status, int64_t file_id, const char *sha, uint64_t bytes,
        const char *error)
{
	outcome *o = ud;
	(void)sha;
	(void)bytes;
	o->calls++;
	o->status = status;
	o->file_id = file_id;
	(void)snprintf(o->error, sizeof(o->error), "%s", error);
}

typedef struct rig {
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
} rig;

/* A client whose endpoint refuses connections (port 1 on loopback). */
static void
rig_new(rig *r)
{
	civis_client_config cfg;
	char e[] = "http://127.0.0.1:1/", k[] = "key";

	memset(&cfg, 0, sizeof(cfg));
	cfg.endpoint = e;
	cfg.api_key = k;
	cfg.job_id = 1;
	cfg.run_id = 2;
	assert_int_equal(civis_loop_new(&r->loop), CIVIS_OK);
	assert_int_equal(civis_http_new(&r->http, r->loop), CIVIS_OK);
	assert_int_equal(civis_client_new(&r->client, r->loop, r->http, &cfg), CIVIS_OK);
}

static void
rig_free(rig *r)
{
	civis_client_free(r->client);
	civis_http_free(r->http);
	civis_loop_free(r->loop);
}

static void
opts_init(civis_upload_opts *o, rig *r, const char *path, civis_upload_kind kind,
          outcome *out)
{
	civis_upload_opts_init(o);
	assert_int_equal(o->fd, -1);
	o->path = path;
	o->name = "out.bin";
	o->kind = kind;
	o->done = on_done;
	o->ud = out;
	o->loop = r->loop;
	o->tmp_dir = tmpdir;
}

static void
test_start_rejects_bad_options(void **state)
{
	civis_upload_opts o;
	civis_upload *u = (civis_upload *)&o;
	outcome out;
	rig r;
	(void)state;

	rig_new(&r);
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, "/nonexistent", CIVIS_UPLOAD_FILE, &out);
	o.done = NULL;
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_EINVAL);
	assert_null(u);
	opts_init(&o, &r, "/nonexistent", (civis_upload_kind)7, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_EINVAL);
	opts_init(&o, &r, "/nonexistent", CIVIS_UPLOAD_FILE, &out);
	o.loop = NULL;
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_EINVAL);
	assert_int_equal(out.calls, 0);
	rig_free(&r);
}

/* A missing file fails through done, from the loop, never inside start. */
static void
test_missing_file_fails_later(void **state)
{
	civis_upload_opts o;
	civis_upload *u;
	outcome out;
	rig r;
	int i;
	(void)state;

	rig_new(&r);
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, "/nonexistent/out.bin", CIVIS_UPLOAD_FILE, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	assert_int_equal(out.calls, 0);
	for (i = 0; i < 10 && out.calls == 0; i++)
		assert_int_equal(civis_loop_run_once(r.loop, 10000000), CIVIS_OK);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ENOTFOUND);
	assert_string_equal(out.error, "/nonexistent/out.bin: No such file or directory");
	rig_free(&r);
}

/* opts.fd: the upload reads the descriptor it is given (dup()ed: the
 * caller may close its own at once); path only names it. */
static void
test_start_with_fd(void **state)
{
	civis_upload_opts o;
	civis_upload *u;
	outcome out;
	unsigned char data[1000];
	char p[512];
	rig r;
	int fd, i, kind;
	(void)state;

	fill(data, sizeof(data), 4);
	write_file("fd.bin", data, sizeof(data));
	rig_new(&r);
	for (kind = 0; kind < 3; kind++) {
		if (kind == 2) {
			fd = open(tmpdir, O_RDONLY | O_DIRECTORY);
		} else {
			tpath(p, sizeof(p), "fd.bin");
			fd = open(p, O_RDONLY);
		}
		assert_true(fd >= 0);
		memset(&out, 0, sizeof(out));
		opts_init(&o, &r, "/nonexistent/named-only", (civis_upload_kind)kind, &out);
		o.fd = fd;
		assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
		(void)close(fd);
		/* staged or opened from fd, then POST files/ (refused, retried) */
		for (i = 0; i < 50 && out.calls == 0 && civis_http_pending(r.http) == 0; i++)
			assert_int_equal(civis_loop_run_once(r.loop, 10000000), CIVIS_OK);
		assert_int_equal(out.calls, 0);
		assert_true(civis_http_pending(r.http) >= 1);
		civis_upload_cancel(u);
		assert_int_equal(out.calls, 1);
		assert_int_equal(out.status, CIVIS_ECANCELED);
	}
	/* a descriptor that is not open: said through done, from the loop */
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, "named", CIVIS_UPLOAD_FILE, &out);
	o.fd = 1000000;
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	for (i = 0; i < 10 && out.calls == 0; i++)
		assert_int_equal(civis_loop_run_once(r.loop, 10000000), CIVIS_OK);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ESYS);
	assert_string_equal(out.error, "named: Bad file descriptor");
	rig_free(&r);
}

/* Over 5 TiB: refused before any request goes out. */
static void
test_over_5_tib_refused(void **state)
{
	civis_upload_opts o;
	civis_upload *u;
	outcome out;
	char p[512];
	rig r;
	int fd, i;
	(void)state;

	tpath(p, sizeof(p), "huge.bin");
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(6 * TiB)), 0);  /* sparse */
	(void)close(fd);
	rig_new(&r);
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, p, CIVIS_UPLOAD_FILE, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	for (i = 0; i < 10 && out.calls == 0; i++)
		assert_int_equal(civis_loop_run_once(r.loop, 10000000), CIVIS_OK);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ETOOBIG);
	assert_string_equal(out.error, "out.bin: 6.0 TiB is over the 5 TiB limit of Civis Files");
	assert_int_equal(civis_http_pending(r.http), 0);
	rig_free(&r);
	assert_int_equal(unlink(p), 0);
}

/* Cancel works while staging and while the API call is being retried;
 * done runs once, before cancel returns. */
static void
test_cancel_every_state(void **state)
{
	civis_upload_opts o;
	civis_upload *u;
	outcome out;
	unsigned char *data = malloc(4 * MiB);
	char p[512];
	rig r;
	int i;
	(void)state;

	assert_non_null(data);
	fill(data, 4 * MiB, 5);
	write_file("c.bin", data, 4 * MiB);
	free(data);
	tpath(p, sizeof(p), "c.bin");
	rig_new(&r);

	/* staging (gzip), after one slice */
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, p, CIVIS_UPLOAD_GZIP, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	assert_int_equal(civis_loop_run_once(r.loop, 10000000), CIVIS_OK);
	assert_int_equal(out.calls, 0);
	civis_upload_cancel(u);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ECANCELED);

	/* before the loop ran at all */
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, tmpdir, CIVIS_UPLOAD_TARGZ, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	civis_upload_cancel(u);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ECANCELED);

	/* POST files/ in flight (the endpoint refuses: retrying) */
	memset(&out, 0, sizeof(out));
	opts_init(&o, &r, p, CIVIS_UPLOAD_FILE, &out);
	assert_int_equal(civis_upload_start(r.client, &o, &u), CIVIS_OK);
	for (i = 0; i < 5; i++)
		assert_int_equal(civis_loop_run_once(r.loop, 20000000), CIVIS_OK);
	assert_int_equal(out.calls, 0);
	assert_true(civis_http_pending(r.http) >= 1);
	civis_upload_cancel(u);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.status, CIVIS_ECANCELED);
	assert_string_equal(out.error, "upload of out.bin canceled");
	assert_int_equal(civis_http_pending(r.http), 0);
	rig_free(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_part_size),
		cmocka_unit_test(test_part_size_is_ceil_sqrt),
		cmocka_unit_test(test_send_buffer),
		cmocka_unit_test(test_create_body),
		cmocka_unit_test(test_storage_error),
		cmocka_unit_test(test_hash_thread),
		cmocka_unit_test(test_start_rejects_bad_options),
		cmocka_unit_test(test_missing_file_fails_later),
		cmocka_unit_test(test_start_with_fd),
		cmocka_unit_test(test_over_5_tib_refused),
		cmocka_unit_test(test_cancel_every_state),
	};
	int rc;

	rc = cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
	return rc;
}
