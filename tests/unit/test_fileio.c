/* test_fileio.c: the anonymous temporary file and the positional loops. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "../../lib/src/fileio.h"

struct fixture {
	char dir[64];
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fiotest-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	/* Every file was anonymous: the directory must be empty. */
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

static void
check_anon(int fd)
{
	struct stat st;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_nlink, 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
}

/* Both ways (O_TMPFILE, mkstemp + unlink) give a nameless 0600 file, whatever the umask. */
static void
test_tmpfile_both_ways(void **state)
{
	struct fixture *f = *state;
	char err[256];
	mode_t old = umask(0);
	unsigned flags;
	int fd;

	for (flags = 0; flags <= CIVIS__TMPFILE_NO_OTMPFILE; flags++) {
		fd = 12345;
		assert_int_equal(civis__tmpfile(f->dir, "civis-test", flags, &fd, err, sizeof err),
		                 CIVIS_OK);
		assert_string_equal(err, "");
		check_anon(fd);
		assert_int_equal(civis__pwrite_all(fd, "abc", 3, 0), 0);
		assert_int_equal(close(fd), 0);
	}
	umask(old);
}

static void
test_tmpfile_errors(void **state)
{
	struct fixture *f = *state;
	char err[256], longdir[PATH_MAX + 16], ro[96];
	unsigned flags;
	int fd;

	for (flags = 0; flags <= CIVIS__TMPFILE_NO_OTMPFILE; flags++) {
		fd = 7;
		assert_int_equal(civis__tmpfile("/nonexistent-civis-dir/x", "p", flags, &fd, err,
		                                sizeof err), CIVIS_ESYS);
		assert_int_equal(fd, -1);
		assert_string_equal(err, "cannot create a file in /nonexistent-civis-dir/x: "
		                         "No such file or directory");
		/* Nobody, root included, can create a file in /proc. */
		assert_int_equal(civis__tmpfile("/proc", "p", flags, &fd, err, sizeof err),
		                 CIVIS_ESYS);
		assert_non_null(strstr(err, "in /proc: "));
		assert_null(strchr(err, '\n'));
	}
	if (geteuid() != 0) {
		snprintf(ro, sizeof ro, "%s/ro", f->dir);
		assert_int_equal(mkdir(ro, 0500), 0);
		assert_int_equal(civis__tmpfile(ro, "p", 0, &fd, err, sizeof err), CIVIS_ESYS);
		assert_non_null(strstr(err, ro));
		assert_non_null(strstr(err, "Permission denied"));
		assert_int_equal(rmdir(ro), 0);
	}
	memset(longdir, 'a', sizeof longdir - 1);
	longdir[0] = '/';
	longdir[sizeof longdir - 1] = '\0';
	assert_int_equal(civis__tmpfile(longdir, "p", CIVIS__TMPFILE_NO_OTMPFILE, &fd, err,
	                                sizeof err), CIVIS_ECONFIG);
	assert_non_null(strstr(err, "too long"));
	assert_true(strlen(err) < 120);
	assert_int_equal(civis__tmpfile(f->dir, "a/b", 0, &fd, err, sizeof err), CIVIS_EINVAL);
	assert_int_equal(civis__tmpfile(f->dir, "", 0, &fd, err, sizeof err), CIVIS_EINVAL);
	assert_int_equal(civis__tmpfile(f->dir, "p", 0, NULL, err, sizeof err), CIVIS_EINVAL);
	/* A tiny error buffer is cut, still terminated; NULL is fine. */
	assert_int_equal(civis__tmpfile("/nonexistent-civis-dir", "p", 0, &fd, err, 8), CIVIS_ESYS);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(civis__tmpfile("/nonexistent-civis-dir", "p", 0, &fd, NULL, 0), CIVIS_ESYS);
}

/* NULL or "" means $TMPDIR, else /tmp. */
static void
test_tmpfile_default_dir(void **state)
{
	struct fixture *f = *state;
	char err[256], *old = getenv("TMPDIR"), *saved = old ? strdup(old) : NULL;
	int fd;

	assert_int_equal(setenv("TMPDIR", "/nonexistent-civis-tmpdir", 1), 0);
	assert_int_equal(civis__tmpfile(NULL, "p", 0, &fd, err, sizeof err), CIVIS_ESYS);
	assert_non_null(strstr(err, "/nonexistent-civis-tmpdir"));
	assert_int_equal(civis__tmpfile("", "p", 0, &fd, err, sizeof err), CIVIS_ESYS);
	assert_int_equal(setenv("TMPDIR", f->dir, 1), 0);
	assert_int_equal(civis__tmpfile(NULL, "p", CIVIS__TMPFILE_NO_OTMPFILE, &fd, err,
	                                sizeof err), CIVIS_OK);
	check_anon(fd);
	close(fd);
	assert_int_equal(unsetenv("TMPDIR"), 0);
	assert_int_equal(civis__tmpfile(NULL, "p", 0, &fd, err, sizeof err), CIVIS_OK);
	close(fd);
	if (saved != NULL) {
		assert_int_equal(setenv("TMPDIR", saved, 1), 0);
		free(saved);
	}
}

static void
test_pread_pwrite(void **state)
{
	struct fixture *f = *state;
	char buf[70000], back[70000], err[256];
	struct iovec iov[4];
	size_t got, i;
	int fd;

	assert_int_equal(civis__tmpfile(f->dir, "p", 0, &fd, err, sizeof err), CIVIS_OK);
	for (i = 0; i < sizeof buf; i++)
		buf[i] = (char)(i * 7 + 3);
	assert_int_equal(civis__pwrite_all(fd, buf, sizeof buf, 100), 0);
	/* The hole before it reads as zeros; the end of file stops a read short. */
	assert_int_equal(civis__pread_all(fd, back, 200, 0, &got), 0);
	assert_int_equal(got, 200);
	for (i = 0; i < 100; i++)
		assert_int_equal(back[i], 0);
	assert_memory_equal(back + 100, buf, 100);
	assert_int_equal(civis__pread_all(fd, back, sizeof back, 100, &got), 0);
	assert_int_equal(got, sizeof buf);
	assert_memory_equal(back, buf, sizeof buf);
	assert_int_equal(civis__pread_all(fd, back, 10, 100 + sizeof buf - 4, &got), 0);
	assert_int_equal(got, 4);
	assert_int_equal(civis__pread_all(fd, back, 10, 1u << 30, &got), 0);
	assert_int_equal(got, 0);
	/* iovecs, empty ones included, land back to back and are consumed. */
	iov[0].iov_base = (void *)"";
	iov[0].iov_len = 0;
	iov[1].iov_base = (void *)"head-";
	iov[1].iov_len = 5;
	iov[2].iov_base = (void *)"";
	iov[2].iov_len = 0;
	iov[3].iov_base = (void *)"body";
	iov[3].iov_len = 4;
	assert_int_equal(civis__pwritev_all(fd, iov, 4, 10), 0);
	assert_int_equal(civis__pread_all(fd, back, 9, 10, &got), 0);
	assert_int_equal(got, 9);
	assert_memory_equal(back, "head-body", 9);
	/* Offsets past what off_t holds. */
	errno = 0;
	assert_int_equal(civis__pread_all(fd, back, 10, UINT64_MAX - 5, &got), -1);
	assert_int_equal(errno, EOVERFLOW);
	assert_int_equal(got, 0);
	errno = 0;
	assert_int_equal(civis__pwrite_all(fd, "x", 1, (uint64_t)INT64_MAX), -1);
	assert_int_equal(errno, EOVERFLOW);
	/* A bad descriptor is an error, not a loop. */
	close(fd);
	assert_int_equal(civis__pread_all(fd, back, 10, 0, &got), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(civis__pwrite_all(fd, "x", 1, 0), -1);
	assert_int_equal(errno, EBADF);
}

/* A file size limit makes the kernel write part of the request, then
 * refuse: the loop takes the short write and reports the refusal, and the
 * part written stays. */
static void
test_short_write_then_error(void **state)
{
	struct fixture *f = *state;
	static char buf[20000], back[20000];
	struct rlimit old, lim;
	char err[256];
	void (*oldsig)(int);
	size_t got;
	int fd, rc, e;

	assert_int_equal(civis__tmpfile(f->dir, "p", 0, &fd, err, sizeof err), CIVIS_OK);
	memset(buf, 'q', sizeof buf);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	oldsig = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 8192;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rc = civis__pwrite_all(fd, buf, sizeof buf, 0);
	e = errno;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(rc, -1);
	assert_int_equal(e, EFBIG);
	assert_int_equal(civis__pread_all(fd, back, sizeof back, 0, &got), 0);
	assert_int_equal(got, 8192);
	assert_memory_equal(back, buf, 8192);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tmpfile_both_ways, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tmpfile_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tmpfile_default_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pread_pwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_write_then_error, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
