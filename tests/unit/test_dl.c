/* test_dl.c: libcurl and libarchive loaded at run time. This program links
 * -lcurl -larchive as well, so it can hold every table entry against the
 * real function: same type (compile time) and same address (run time, which
 * also catches two same-typed members swapped). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CIVIS_DL_NO_MACROS
#include "../../lib/src/dl.h"
#include "../../lib/src/loop_internal.h"
#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "../../lib/src/upload_int.h"

#define BAD_CURL    "libcivis-test-no-such-curl.so.4"
#define BAD_ARCHIVE "libcivis-test-no-such-archive.so.13"

typedef void (*any_fn)(void);

/* The table's members one by one, as function pointers. */
static size_t
table_entries(const void *table, size_t size, any_fn *out, size_t cap)
{
	size_t i, n = size / sizeof(any_fn);

	assert_int_equal(size % sizeof(any_fn), 0);
	assert_true(n <= cap);
	for (i = 0; i < n; i++)
		memcpy(&out[i], (const unsigned char *)table + i * sizeof(any_fn), sizeof(any_fn));
	return n;
}

static void
assert_all_set(const void *table, size_t size, int set)
{
	any_fn e[64];
	size_t i, n = table_entries(table, size, e, 64);

	assert_true(n > 0);
	for (i = 0; i < n; i++) {
		if (set)
			assert_non_null((void *)(uintptr_t)e[i]);
		else
			assert_null((void *)(uintptr_t)e[i]);
	}
}

/* Every member gets the real function's address: a wrong prototype does
 * not compile (-Werror: incompatible pointer types). */
static void
real_curl(civis__curl_fns *t)
{
	memset(t, 0, sizeof(*t));
	t->global_init = &curl_global_init;
	t->global_cleanup = &curl_global_cleanup;
	t->easy_init = &curl_easy_init;
	t->easy_setopt = &curl_easy_setopt;
	t->easy_getinfo = &curl_easy_getinfo;
	t->easy_cleanup = &curl_easy_cleanup;
	t->easy_strerror = &curl_easy_strerror;
	t->free = &curl_free;
	t->mime_init = &curl_mime_init;
	t->mime_free = &curl_mime_free;
	t->mime_addpart = &curl_mime_addpart;
	t->mime_name = &curl_mime_name;
	t->mime_filename = &curl_mime_filename;
	t->mime_type = &curl_mime_type;
	t->mime_data = &curl_mime_data;
	t->mime_data_cb = &curl_mime_data_cb;
	t->multi_init = &curl_multi_init;
	t->multi_add_handle = &curl_multi_add_handle;
	t->multi_remove_handle = &curl_multi_remove_handle;
	t->multi_cleanup = &curl_multi_cleanup;
	t->multi_info_read = &curl_multi_info_read;
	t->multi_perform = &curl_multi_perform;
	t->multi_poll = &curl_multi_poll;
	t->multi_timeout = &curl_multi_timeout;
	t->multi_wakeup = &curl_multi_wakeup;
	t->share_init = &curl_share_init;
	t->share_setopt = &curl_share_setopt;
	t->share_cleanup = &curl_share_cleanup;
	t->slist_append = &curl_slist_append;
	t->slist_free_all = &curl_slist_free_all;
	t->url = &curl_url;
	t->url_cleanup = &curl_url_cleanup;
	t->url_get = &curl_url_get;
	t->url_set = &curl_url_set;
}

static void
real_archive(civis__archive_fns *t)
{
	memset(t, 0, sizeof(*t));
	t->write_new = &archive_write_new;
	t->write_set_format_pax_restricted = &archive_write_set_format_pax_restricted;
	t->write_set_bytes_in_last_block = &archive_write_set_bytes_in_last_block;
	t->write_add_filter_gzip = &archive_write_add_filter_gzip;
	t->write_open = &archive_write_open;
	t->write_header = &archive_write_header;
	t->write_data = &archive_write_data;
	t->write_finish_entry = &archive_write_finish_entry;
	t->write_close = &archive_write_close;
	t->write_free = &archive_write_free;
	t->error_string = &archive_error_string;
	t->set_error = &archive_set_error;
	t->entry_new2 = &archive_entry_new2;
	t->entry_free = &archive_entry_free;
	t->entry_set_pathname = &archive_entry_set_pathname;
	t->entry_set_filetype = &archive_entry_set_filetype;
	t->entry_set_perm = &archive_entry_set_perm;
	t->entry_set_uid = &archive_entry_set_uid;
	t->entry_set_gid = &archive_entry_set_gid;
	t->entry_set_size = &archive_entry_set_size;
	t->entry_set_mtime = &archive_entry_set_mtime;
	t->entry_set_symlink = &archive_entry_set_symlink;
}

static int
reset_default(void **state)
{
	(void)state;
	civis__dl_reset(NULL, NULL);
	return 0;
}

static void
test_load_fills_every_entry(void **state)
{
	char err[256] = "junk";
	civis__curl_fns rc_;
	civis__archive_fns ra;
	any_fn want[64], got[64];
	size_t i, n;

	(void)state;
	assert_all_set(&civis__curl_api, sizeof(civis__curl_api), 0);
	assert_all_set(&civis__archive_api, sizeof(civis__archive_api), 0);

	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_OK);
	assert_string_equal(err, "");
	assert_all_set(&civis__curl_api, sizeof(civis__curl_api), 1);
	/* the archive table is untouched until asked for */
	assert_all_set(&civis__archive_api, sizeof(civis__archive_api), 0);
	(void)snprintf(err, sizeof(err), "junk");
	assert_int_equal(civis__dl_archive(err, sizeof(err)), CIVIS_OK);
	assert_string_equal(err, "");
	assert_all_set(&civis__archive_api, sizeof(civis__archive_api), 1);

	/* dlopen of the soname finds the copy this program links: each entry
	 * is the very function of the same name */
	real_curl(&rc_);
	n = table_entries(&rc_, sizeof(rc_), want, 64);
	assert_int_equal(table_entries(&civis__curl_api, sizeof(civis__curl_api), got, 64), n);
	for (i = 0; i < n; i++)
		assert_true(want[i] == got[i]);
	real_archive(&ra);
	n = table_entries(&ra, sizeof(ra), want, 64);
	assert_int_equal(table_entries(&civis__archive_api, sizeof(civis__archive_api), got, 64), n);
	for (i = 0; i < n; i++)
		assert_true(want[i] == got[i]);

	/* and they work */
	assert_string_equal(civis__curl_api.easy_strerror(CURLE_OK), curl_easy_strerror(CURLE_OK));
}

static void
test_second_call_is_cached(void **state)
{
	unsigned before;
	char err[64];

	(void)state;
	before = civis__dl_opens();
	assert_int_equal(civis__dl_curl(NULL, 0), CIVIS_OK);
	assert_int_equal(civis__dl_opens(), before + 1);
	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis__dl_curl(NULL, 0), CIVIS_OK);
	assert_int_equal(civis__dl_opens(), before + 1);
	assert_int_equal(civis__dl_archive(NULL, 0), CIVIS_OK);
	assert_int_equal(civis__dl_archive(err, sizeof(err)), CIVIS_OK);
	assert_int_equal(civis__dl_opens(), before + 2);
}

static void
test_bad_name_exact_text_and_cached(void **state)
{
	char err[256];
	unsigned before;

	(void)state;
	civis__dl_reset(BAD_CURL, BAD_ARCHIVE);
	before = civis__dl_opens();
	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_string_equal(err, "cannot load " BAD_CURL ": " BAD_CURL ": cannot open shared "
	                    "object file: No such file or directory; the Civis API is unavailable");
	assert_all_set(&civis__curl_api, sizeof(civis__curl_api), 0);
	/* the failure is the answer from now on: no second try */
	err[0] = '\0';
	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_string_equal(err, "cannot load " BAD_CURL ": " BAD_CURL ": cannot open shared "
	                    "object file: No such file or directory; the Civis API is unavailable");
	assert_int_equal(civis__dl_opens(), before + 1);

	assert_int_equal(civis__dl_archive(err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_string_equal(err, "cannot load " BAD_ARCHIVE ": " BAD_ARCHIVE ": cannot open "
	                    "shared object file: No such file or directory; a directory cannot "
	                    "be archived");
	assert_all_set(&civis__archive_api, sizeof(civis__archive_api), 0);
}

static void
test_small_or_no_error_buffer(void **state)
{
	char err[16];

	(void)state;
	civis__dl_reset(BAD_CURL, NULL);
	memset(err, 'x', sizeof(err));
	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_ENOTFOUND);
	assert_string_equal(err, "cannot load lib");
	assert_int_equal(civis__dl_curl(NULL, 0), CIVIS_ENOTFOUND);
	assert_int_equal(civis__dl_curl(err, 0), CIVIS_ENOTFOUND);
}

/* A library that is there but is not libcurl: every entry must resolve or
 * none is kept. */
static void
test_missing_function(void **state)
{
	char err[256];

	(void)state;
	civis__dl_reset("libz.so.1", "libz.so.1");
	assert_int_equal(civis__dl_curl(err, sizeof(err)), CIVIS_ESYS);
	assert_non_null(strstr(err, "cannot load libz.so.1: "));
	assert_non_null(strstr(err, "undefined symbol: curl_global_init"));
	assert_non_null(strstr(err, "; the Civis API is unavailable"));
	assert_all_set(&civis__curl_api, sizeof(civis__curl_api), 0);
	assert_int_equal(civis__dl_archive(err, sizeof(err)), CIVIS_ESYS);
	assert_non_null(strstr(err, "undefined symbol: archive_write_new"));
	assert_all_set(&civis__archive_api, sizeof(civis__archive_api), 0);
}

struct env {
	const char *const *kv;
};

static const char *
env_get(const char *name, void *ud)
{
	const struct env *e = ud;
	size_t i;

	for (i = 0; e->kv[i] != NULL; i += 2)
		if (strcmp(e->kv[i], name) == 0)
			return e->kv[i + 1];
	return NULL;
}

/* Without the CIVIS_* variables (a tee-only run) nothing is loaded; with
 * them and no libcurl, the config check fails with the loader's reason, and
 * not as "not set" (ENOTFOUND), which would mean run without the API. */
static void
test_config_loads_only_when_configured(void **state)
{
	static const char *const none[] = { "HOME", "/root", NULL };
	static const char *const all[] = { "CIVIS_API_KEY", "key123", "CIVIS_JOB_ID", "1",
	                                   "CIVIS_RUN_ID", "2", NULL };
	struct env e;
	civis_client_config cfg;
	char err[256];
	unsigned before;

	(void)state;
	civis__dl_reset(BAD_CURL, NULL);
	before = civis__dl_opens();
	e.kv = none;
	assert_int_equal(civis_client_config_parse(&cfg, env_get, &e, err, sizeof(err)),
	                 CIVIS_ENOTFOUND);
	assert_int_equal(civis__dl_opens(), before);

	e.kv = all;
	assert_int_equal(civis_client_config_parse(&cfg, env_get, &e, err, sizeof(err)),
	                 CIVIS_ESYS);
	assert_non_null(strstr(err, "cannot load " BAD_CURL ": "));
	assert_int_equal(civis__dl_opens(), before + 1);
	civis_client_config_dispose(&cfg);

	civis__dl_reset(NULL, NULL);
	assert_int_equal(civis_client_config_parse(&cfg, env_get, &e, err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(cfg.endpoint, CIVIS_DEFAULT_ENDPOINT);
	civis_client_config_dispose(&cfg);
}

static void
test_loop_and_http_without_libcurl(void **state)
{
	civis_loop *loop = NULL;
	civis_http *http = NULL;

	(void)state;
	civis__dl_reset(BAD_CURL, NULL);
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_null(civis__loop_curl_multi(loop));
	assert_int_equal(civis_http_new(&http, loop), CIVIS_ESYS);
	assert_null(http);
	/* the loop itself goes on without http */
	civis_loop_wakeup(loop);
	assert_int_equal(civis_loop_run_once(loop, 0), CIVIS_OK);
	civis_loop_free(loop);

	civis__dl_reset(NULL, NULL);
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	assert_non_null(civis__loop_curl_multi(loop));
	assert_int_equal(civis_http_new(&http, loop), CIVIS_OK);
	civis_http_free(http);
	civis_loop_free(loop);
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(p);
}

/* Directories need libarchive; files (gzip, zlib) do not. */
static void
test_stage_dir_without_libarchive(void **state)
{
	char dir[] = "/tmp/civis-test-dl-XXXXXX", file[64], err[256];
	civis__stage *st = NULL;
	FILE *f;
	int n;

	(void)state;
	assert_non_null(mkdtemp(dir));
	n = snprintf(file, sizeof(file), "%s/a.txt", dir);
	assert_true(n > 0 && (size_t)n < sizeof(file));
	f = fopen(file, "w");
	assert_non_null(f);
	assert_int_equal(fputs("hello\n", f) >= 0, 1);
	assert_int_equal(fclose(f), 0);

	civis__dl_reset(NULL, BAD_ARCHIVE);
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_TARGZ, dir, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_ESYS);
	assert_null(st);
	assert_string_equal(err, "cannot load " BAD_ARCHIVE ": " BAD_ARCHIVE ": cannot open "
	                    "shared object file: No such file or directory; a directory cannot "
	                    "be archived");
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_GZIP, file, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	civis__stage_free(st);
	st = NULL;

	civis__dl_reset(NULL, NULL);
	assert_int_equal(civis__stage_new(&st, CIVIS_UPLOAD_TARGZ, dir, -1, NULL, NULL, NULL,
	                                  err, sizeof(err)), CIVIS_OK);
	while ((n = civis__stage_step(st, 1u << 20, err, sizeof(err))) == 0)
		;
	assert_int_equal(n, 1);
	civis__stage_free(st);
	assert_int_equal(nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_load_fills_every_entry, reset_default,
		                                reset_default),
		cmocka_unit_test_setup_teardown(test_second_call_is_cached, reset_default,
		                                reset_default),
		cmocka_unit_test_teardown(test_bad_name_exact_text_and_cached, reset_default),
		cmocka_unit_test_teardown(test_small_or_no_error_buffer, reset_default),
		cmocka_unit_test_teardown(test_missing_function, reset_default),
		cmocka_unit_test_teardown(test_config_loads_only_when_configured, reset_default),
		cmocka_unit_test_teardown(test_loop_and_http_without_libcurl, reset_default),
		cmocka_unit_test_teardown(test_stage_dir_without_libarchive, reset_default),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
