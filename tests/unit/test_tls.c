/* test_tls.c: the CA bundle order: environment, the image's bundle, the
 * layer's own bundle beside the executable, libcurl's default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../lib/src/tls_int.h"

typedef struct fixture {
	char dir[64];
	char path[8][PATH_MAX];  /* scratch paths built by the tests */
} fixture;

static int
rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(p);
}

static void
join(char *out, size_t cap, const char *a, const char *b)
{
	int n = snprintf(out, cap, "%s/%s", a, b);

	assert_true(n > 0 && (size_t)n < cap);
}

static void
mkdirs(const char *path)
{
	char tmp[PATH_MAX];
	size_t i, n = strlen(path);

	assert_true(n < sizeof(tmp));
	memcpy(tmp, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (tmp[i] == '/' || tmp[i] == '\0') {
			char c = tmp[i];

			tmp[i] = '\0';
			assert_true(mkdir(tmp, 0755) == 0 || access(tmp, F_OK) == 0);
			tmp[i] = c;
		}
	}
}

static void
write_file(const char *path)
{
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, pem, sizeof(pem) - 1), (ssize_t)(sizeof(pem) - 1));
	assert_int_equal(close(fd), 0);
}

static int
setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	memcpy(f->dir, "/tmp/civis-tls-XXXXXX", sizeof("/tmp/civis-tls-XXXXXX"));
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	unsetenv("CURL_CA_BUNDLE");
	unsetenv("SSL_CERT_FILE");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	fixture *f = *state;

	unsetenv("CURL_CA_BUNDLE");
	unsetenv("SSL_CERT_FILE");
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A layer tree under f->dir/opt/civis-agent with its bundle; path[0] is the
 * bundle, path[1] the loader, path[2] the real binary. */
static void
make_layer(fixture *f)
{
	char prefix[PATH_MAX], certs[PATH_MAX], lib[PATH_MAX], libexec[PATH_MAX];

	join(prefix, sizeof(prefix), f->dir, "opt/civis-agent");
	join(certs, sizeof(certs), prefix, "etc/ssl/certs");
	join(lib, sizeof(lib), prefix, "lib");
	join(libexec, sizeof(libexec), prefix, "libexec");
	mkdirs(certs);
	mkdirs(lib);
	mkdirs(libexec);
	join(f->path[0], PATH_MAX, certs, "ca-certificates.crt");
	write_file(f->path[0]);
	join(f->path[1], PATH_MAX, lib, "ld-linux-x86-64.so.2");
	join(f->path[2], PATH_MAX, libexec, "civis-agent");
}

static void
test_curl_ca_bundle_first(void **state)
{
	fixture *f = *state;
	const char *sys[] = { NULL, NULL };
	char buf[PATH_MAX];

	join(f->path[3], PATH_MAX, f->dir, "curl.pem");
	join(f->path[4], PATH_MAX, f->dir, "ssl.pem");
	join(f->path[5], PATH_MAX, f->dir, "system.pem");
	write_file(f->path[3]);
	write_file(f->path[4]);
	write_file(f->path[5]);
	sys[0] = f->path[5];
	setenv("CURL_CA_BUNDLE", f->path[3], 1);
	setenv("SSL_CERT_FILE", f->path[4], 1);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[3]);
	/* and through the public entry point too */
	assert_string_equal(civis_tls_ca_file(buf, sizeof(buf)), f->path[3]);
}

static void
test_curl_ca_bundle_unusable_falls_through(void **state)
{
	fixture *f = *state;
	const char *sys[] = { NULL, NULL };
	char buf[PATH_MAX];

	join(f->path[3], PATH_MAX, f->dir, "missing.pem");
	join(f->path[4], PATH_MAX, f->dir, "ssl.pem");
	join(f->path[5], PATH_MAX, f->dir, "system.pem");
	write_file(f->path[4]);
	write_file(f->path[5]);
	sys[0] = f->path[5];

	setenv("CURL_CA_BUNDLE", f->path[3], 1);        /* does not exist */
	setenv("SSL_CERT_FILE", f->path[4], 1);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[4]);

	setenv("CURL_CA_BUNDLE", f->dir, 1);            /* a directory */
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[4]);

	setenv("CURL_CA_BUNDLE", "", 1);                /* empty */
	unsetenv("SSL_CERT_FILE");
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[5]);
}

static void
test_ssl_cert_file_taken_as_given(void **state)
{
	fixture *f = *state;
	const char *sys[] = { NULL, NULL };
	char buf[PATH_MAX];

	join(f->path[4], PATH_MAX, f->dir, "named-but-absent.pem");
	join(f->path[5], PATH_MAX, f->dir, "system.pem");
	write_file(f->path[5]);
	sys[0] = f->path[5];
	setenv("SSL_CERT_FILE", f->path[4], 1);
	/* an explicit choice is not silently replaced by other roots */
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[4]);
	setenv("SSL_CERT_FILE", "", 1);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL), f->path[5]);
}

static void
test_system_list_in_order(void **state)
{
	fixture *f = *state;
	const char *sys[] = { NULL, NULL, NULL, NULL };
	char buf[PATH_MAX];

	join(f->path[3], PATH_MAX, f->dir, "debian.crt");  /* absent */
	join(f->path[4], PATH_MAX, f->dir, "rhel.crt");
	join(f->path[5], PATH_MAX, f->dir, "alpine.pem");
	write_file(f->path[4]);
	write_file(f->path[5]);
	sys[0] = f->path[3];
	sys[1] = f->path[4];
	sys[2] = f->path[5];
	make_layer(f);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, f->path[1]), f->path[4]);

	/* a symlink to a bundle counts (Debian's /etc/ssl/cert.pem is one) */
	assert_int_equal(symlink(f->path[5], f->path[3]), 0);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, f->path[1]), f->path[3]);

	/* a dangling one does not */
	assert_int_equal(unlink(f->path[5]), 0);
	assert_string_equal(civis__tls_ca_file_from(buf, sizeof(buf), sys, f->path[1]), f->path[4]);
}

static void
test_layer_bundle_from_loader_and_binary(void **state)
{
	fixture *f = *state;
	const char *sys[] = { "/nonexistent/civis-tls/ca.crt", NULL };
	char buf[PATH_MAX];
	const char *r;

	make_layer(f);
	/* under the launcher /proc/self/exe is the bundled loader */
	r = civis__tls_ca_file_from(buf, sizeof(buf), sys, f->path[1]);
	assert_ptr_equal(r, buf);
	assert_string_equal(r, f->path[0]);
	/* the real binary, run directly */
	memset(buf, 'x', sizeof(buf));
	r = civis__tls_ca_file_from(buf, sizeof(buf), sys, f->path[2]);
	assert_ptr_equal(r, buf);
	assert_string_equal(r, f->path[0]);
}

static void
test_no_bundle_anywhere(void **state)
{
	fixture *f = *state;
	const char *sys[] = { "/nonexistent/civis-tls/ca.crt", NULL };
	char buf[PATH_MAX], exe[PATH_MAX];

	join(exe, sizeof(exe), f->dir, "bin/civis-agent");   /* no etc/ under f->dir */
	memset(buf, 'x', sizeof(buf));
	assert_null(civis__tls_ca_file_from(buf, sizeof(buf), sys, exe));
	assert_string_equal(buf, "");
	assert_null(civis__tls_ca_file_from(buf, sizeof(buf), sys, NULL));
	assert_null(civis__tls_ca_file_from(buf, sizeof(buf), sys, "relative/bin/civis-agent"));
	assert_null(civis__tls_ca_file_from(buf, sizeof(buf), sys, "/civis-agent"));
	assert_null(civis__tls_ca_file_from(buf, sizeof(buf), NULL, NULL));
	assert_null(civis__tls_ca_file_from(NULL, 0, sys, exe));
}

static void
test_layer_path_too_long_for_buf(void **state)
{
	fixture *f = *state;
	const char *sys[] = { NULL };
	char small[16];

	make_layer(f);
	assert_null(civis__tls_ca_file_from(small, sizeof(small), sys, f->path[1]));
	assert_string_equal(small, "");
}

static void
test_public_entry_point_default_order(void **state)
{
	static const char *const order[] = {
		"/etc/ssl/certs/ca-certificates.crt",
		"/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/cert.pem",
	};
	char buf[PATH_MAX];
	const char *r, *want = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(order) / sizeof(order[0]) && want == NULL; i++) {
		int fd = open(order[i], O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			want = order[i];
			close(fd);
		}
	}
	r = civis_tls_ca_file(buf, sizeof(buf));
	if (want != NULL) {
		assert_non_null(r);
		assert_string_equal(r, want);
	} else if (r != NULL) {
		/* only the layer's own bundle may remain */
		assert_ptr_equal(r, buf);
		assert_non_null(strstr(r, "/etc/ssl/certs/ca-certificates.crt"));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_curl_ca_bundle_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_curl_ca_bundle_unusable_falls_through, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ssl_cert_file_taken_as_given, setup, teardown),
		cmocka_unit_test_setup_teardown(test_system_list_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layer_bundle_from_loader_and_binary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_bundle_anywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layer_path_too_long_for_buf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_public_entry_point_default_order, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
