/* test_upload_stage.c: upload_stage.c, upload_tar.c, upload_util.c: gzip
 * and tar.gz staging read back with zlib and libarchive, the detection of a
 * file changing under us, sizes for messages, the temporary file. */
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
#include "../../lib/src/fileio.h"
#include "../../lib/src/upload_int.h"
#include "upload_fixture.h"

/* Internals reached under CIVIS_UNITTEST (lib/src/upload.c). */
void civis__upload_storage_error(long http_code, const char *body, size_t len,
                                 char *buf, size_t buflen);
char *civis__upload_create_body(const char *name, const char *expires, unsigned nparts);
civis_upload *civis__upload_test_form_new(const civis_file_post *fp, int fd, uint64_t size,
                                          const char *filename);
void civis__upload_test_form_free(civis_upload *u, char sha_hex[CIVIS_SHA256_HEX_LEN]);

/* ---------------------------------------------------------------- staging */

typedef struct warnings {
	char text[8][256];
	int n;
} warnings;

static void
collect_warning(void *ud, const char *text)
{
	warnings *w = ud;
	if (w->n < 8)
		(void)snprintf(w->text[w->n], sizeof(w->text[0]), "%s", text);
	w->n++;
}

/* Run a stage to the end in small slices; returns the staged fd. */
static int
stage_all(civis__stage *st, size_t budget, int *steps, uint64_t *size,
          char sha[CIVIS_SHA256_HEX_LEN])
{
	char err[512] = "";
	int rc;

	*steps = 0;
	while ((rc = civis__stage_step(st, budget, err, sizeof(err))) == 0)
		(*steps)++;
	if (rc != 1)
		print_error("stage: %s\n", err);
	assert_int_equal(rc, 1);
	return civis__stage_take_fd(st, size, sha);
}

static void
check_staged_sha(int fd, uint64_t size, const char *sha)
{
	unsigned char *b = malloc(size ? size : 1);
	char want[CIVIS_SHA256_HEX_LEN];

	size_t got;

	assert_non_null(b);
	assert_int_equal(civis__pread_all(fd, b, size, 0, &got), 0);
	assert_int_equal(got, size);
	sha_hex_of(b, size, want);
	assert_string_equal(sha, want);
	free(b);
}

static void
test_gzip_roundtrip(void **state)
{
	size_t n = 3 * MiB + 12345;
	unsigned char *data = malloc(n), *back = malloc(n + 1);
	unsigned char zin[65536];
	char path[512], err[256], sha[CIVIS_SHA256_HEX_LEN];
	civis__stage *st;
	z_stream z;
	uint64_t size, off = 0;
	int fd, steps, zr;
	(void)state;

	assert_non_null(data);
	assert_non_null(back);
	fill(data, n, 42);
	write_file("big.csv", data, n);
	tpath(path, sizeof(path), "big.csv");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, path, -1, tmpdir, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	fd = stage_all(st, 256 << 10, &steps, &size, sha);
	civis__stage_free(st);
	assert_true(fd >= 0);
	assert_true(steps >= 12);      /* bounded slices, not one long stretch */
	assert_true(size > 0 && size < n);
	check_staged_sha(fd, size, sha);

	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_out = back;
	z.avail_out = (uInt)(n + 1);
	do {
		size_t r;
		assert_int_equal(civis__pread_all(fd, zin, sizeof(zin), off, &r), 0);
		assert_true(r > 0);
		off += (uint64_t)r;
		z.next_in = zin;
		z.avail_in = (uInt)r;
		zr = inflate(&z, Z_NO_FLUSH);
		assert_true(zr == Z_OK || zr == Z_STREAM_END);
	} while (zr != Z_STREAM_END);
	assert_int_equal(off, size);
	assert_int_equal(z.total_out, n);
	assert_memory_equal(back, data, n);
	inflateEnd(&z);
	(void)close(fd);
	free(data);
	free(back);
}

static void
test_gzip_empty_and_deleted(void **state)
{
	char path[512], err[256], sha[CIVIS_SHA256_HEX_LEN];
	unsigned char data[5000];
	civis__stage *st;
	uint64_t size;
	int fd, steps;
	(void)state;

	write_file("empty.txt", "", 0);
	tpath(path, sizeof(path), "empty.txt");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, path, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	fd = stage_all(st, 1 << 20, &steps, &size, sha);
	civis__stage_free(st);
	assert_true(size >= 20);       /* a gzip header and trailer */
	(void)close(fd);

	/* deleted after it was opened: what was opened is staged */
	fill(data, sizeof(data), 3);
	write_file("gone.txt", data, sizeof(data));
	tpath(path, sizeof(path), "gone.txt");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, path, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	assert_int_equal(unlink(path), 0);
	fd = stage_all(st, 1 << 20, &steps, &size, sha);
	civis__stage_free(st);
	assert_true(fd >= 0 && size > 20);
	(void)close(fd);

	/* missing: ENOTFOUND with the path in the text */
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, path, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_null(st);
	assert_non_null(strstr(err, "gone.txt: No such file"));
}

typedef struct entry {
	char name[128];
	int64_t size;
	int type;
	char data[64];
	char link[128];
} entry;

static int
read_targz(int fd, entry *out, int max)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int n = 0;

	assert_non_null(a);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	archive_read_support_filter_gzip(a);
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_fd(a, fd, 10240), ARCHIVE_OK);
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		assert_true(n < max);
		(void)snprintf(out[n].name, sizeof(out[n].name), "%s", archive_entry_pathname(e));
		out[n].size = archive_entry_size(e);
		out[n].type = (int)archive_entry_filetype(e);
		memset(out[n].data, 0, sizeof(out[n].data));
		(void)snprintf(out[n].link, sizeof(out[n].link), "%s",
		               archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
		if (out[n].type == AE_IFREG)
			(void)archive_read_data(a, out[n].data, sizeof(out[n].data) - 1);
		n++;
	}
	archive_read_free(a);
	return n;
}

static void
test_targz(void **state)
{
	char dir[512], p[512], err[256], sha[CIVIS_SHA256_HEX_LEN];
	warnings w;
	entry ents[16];
	civis__stage *st;
	uint64_t size;
	int fd, steps, n;
	(void)state;

	tpath(dir, sizeof(dir), "outdir");
	assert_int_equal(mkdir(dir, 0755), 0);
	tpath(p, sizeof(p), "outdir/b");
	assert_int_equal(mkdir(p, 0755), 0);
	write_file("outdir/z.txt", "zzz", 3);
	write_file("outdir/a.txt", "hello a", 7);
	write_file("outdir/b/c.txt", "in b", 4);
	write_file("outdir/b/d", "", 0);
	tpath(p, sizeof(p), "outdir/link_in");
	assert_int_equal(symlink("a.txt", p), 0);
	tpath(p, sizeof(p), "outdir/link_out");
	assert_int_equal(symlink("/etc/hostname", p), 0);
	tpath(p, sizeof(p), "outdir/b/loop");
	assert_int_equal(symlink("../b", p), 0);
	tpath(p, sizeof(p), "outdir/fifo");
	assert_int_equal(mkfifo(p, 0600), 0);

	memset(&w, 0, sizeof(w));
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_TARGZ, dir, -1, tmpdir, collect_warning,
	                                  &w, err, sizeof(err)), CIVIS_OK);
	fd = stage_all(st, 1024, &steps, &size, sha);
	civis__stage_free(st);
	assert_true(fd >= 0);
	check_staged_sha(fd, size, sha);

	n = read_targz(fd, ents, 16);
	(void)close(fd);
	/* symlinks are stored as symlinks, never followed, wherever they point */
	assert_int_equal(n, 8);
	assert_string_equal(ents[0].name, "a.txt");
	assert_string_equal(ents[0].data, "hello a");
	assert_true(strncmp(ents[1].name, "b", 1) == 0 && ents[1].type == AE_IFDIR);
	assert_string_equal(ents[2].name, "b/c.txt");
	assert_string_equal(ents[2].data, "in b");
	assert_string_equal(ents[3].name, "b/d");
	assert_int_equal(ents[3].size, 0);
	assert_string_equal(ents[4].name, "b/loop");
	assert_int_equal(ents[4].type, AE_IFLNK);
	assert_string_equal(ents[4].link, "../b");
	assert_string_equal(ents[5].name, "link_in");
	assert_int_equal(ents[5].type, AE_IFLNK);
	assert_string_equal(ents[5].link, "a.txt");
	assert_string_equal(ents[6].name, "link_out");
	assert_int_equal(ents[6].type, AE_IFLNK);
	assert_string_equal(ents[6].link, "/etc/hostname");
	assert_int_equal(ents[6].size, 0);
	assert_string_equal(ents[7].name, "z.txt");
	assert_string_equal(ents[7].data, "zzz");

	assert_int_equal(w.n, 1);
	assert_string_equal(w.text[0], "skipped fifo: not a regular file or directory");
}

static void
test_targz_not_a_dir(void **state)
{
	char p[512], err[256];
	civis__stage *st;
	(void)state;

	write_file("plain.txt", "x", 1);
	tpath(p, sizeof(p), "plain.txt");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_TARGZ, p, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_ESYS);
	assert_non_null(strstr(err, "Not a directory"));
}

/* ------------------------------------------------------- file changed */

static void
test_changed_detection(void **state)
{
	unsigned char data[250];
	char p[512], err[256];
	struct stat before;
	int fd;
	(void)state;

	memset(data, 'q', sizeof(data));
	write_file("grow.csv", data, 100);
	tpath(p, sizeof(p), "grow.csv");
	fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &before), 0);
	assert_int_equal(civis__upload_check_unchanged(&before, fd, "out.csv", err, sizeof(err)),
	                 CIVIS_OK);
	write_file("grow.csv", data, 250);
	assert_int_equal(civis__upload_check_unchanged(&before, fd, "out.csv", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_string_equal(err, "out.csv changed during upload (size 100 -> 250)");
	(void)close(fd);

	/* same size, new mtime */
	write_file("touch.csv", data, 10);
	tpath(p, sizeof(p), "touch.csv");
	fd = open(p, O_RDONLY);
	assert_int_equal(fstat(fd, &before), 0);
	{
		struct timespec ts[2] = { { 1000, 0 }, { 1000, 0 } };
		assert_int_equal(futimens(fd, ts), 0);
	}
	assert_int_equal(civis__upload_check_unchanged(&before, fd, "t.csv", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_non_null(strstr(err, "t.csv changed during upload (modified"));
	(void)close(fd);
}

/* A file truncated while it is being compressed fails the staging. */
static void
test_gzip_truncated_midway(void **state)
{
	size_t n = 2 * MiB;
	unsigned char *data = malloc(n);
	char p[512], err[256];
	civis__stage *st;
	int rc;
	(void)state;

	assert_non_null(data);
	fill(data, n, 9);
	write_file("trunc.csv", data, n);
	tpath(p, sizeof(p), "trunc.csv");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, p, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis__stage_step(st, 128 << 10, err, sizeof(err)), 0);
	assert_int_equal(truncate(p, 1000), 0);
	while ((rc = civis__stage_step(st, 128 << 10, err, sizeof(err))) == 0)
		;
	assert_int_equal(rc, CIVIS_EINVAL);
	assert_non_null(strstr(err, "changed during upload (size 2097152 -> 1000)"));
	civis__stage_free(st);

	/* grown while compressed */
	write_file("trunc.csv", data, n);
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, p, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis__stage_step(st, 128 << 10, err, sizeof(err)), 0);
	{
		int afd = open(p, O_WRONLY | O_APPEND);
		assert_true(afd >= 0);
		assert_int_equal(write(afd, "more", 4), 4);
		(void)close(afd);
	}
	while ((rc = civis__stage_step(st, 128 << 10, err, sizeof(err))) == 0)
		;
	assert_int_equal(rc, CIVIS_EINVAL);
	assert_non_null(strstr(err, "(size 2097152 -> 2097156)"));
	civis__stage_free(st);
	free(data);
}

static void
test_human_size(void **state)
{
	char b[32];
	(void)state;
	civis__upload_human_size(6 * TiB, b, sizeof(b));
	assert_string_equal(b, "6.0 TiB");
	civis__upload_human_size(512, b, sizeof(b));
	assert_string_equal(b, "512 B");
	civis__upload_human_size(5 * TiB + 1, b, sizeof(b));
	assert_string_equal(b, "5.0 TiB");
}

/* Staging into a directory where no temporary file can be made fails at
 * once, naming the directory; nothing is opened or left behind. */
static void
test_stage_tmpdir_missing(void **state)
{
	civis__stage *st = (civis__stage *)state;
	char err[256], p[512];
	unsigned char data[100];
	(void)state;

	fill(data, sizeof(data), 9);
	write_file("t.bin", data, sizeof(data));
	tpath(p, sizeof(p), "t.bin");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, p, -1, "/nonexistent/dir", NULL,
	                                  NULL, err, sizeof(err)), CIVIS_ESYS);
	assert_null(st);
	assert_non_null(strstr(err, "/nonexistent/dir"));
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_TARGZ, tmpdir, -1, "/nonexistent/dir",
	                                  NULL, NULL, err, sizeof(err)), CIVIS_ESYS);
	assert_null(st);
	assert_non_null(strstr(err, "/nonexistent/dir"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gzip_roundtrip),
		cmocka_unit_test(test_gzip_empty_and_deleted),
		cmocka_unit_test(test_targz),
		cmocka_unit_test(test_targz_not_a_dir),
		cmocka_unit_test(test_changed_detection),
		cmocka_unit_test(test_gzip_truncated_midway),
		cmocka_unit_test(test_human_size),
		cmocka_unit_test(test_stage_tmpdir_missing),
	};
	int rc;

	rc = cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
	return rc;
}
