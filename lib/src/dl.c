/* dl.c: load libcurl and libarchive on first use (see dl.h for why). */
#define CIVIS_DL_NO_MACROS
#include "dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "civis/civis.h"

civis__curl_fns civis__curl_api;
civis__archive_fns civis__archive_api;

/* member of the table, the library's name for it */
#define CURL_FUNCS(X) \
	X(global_init, curl_global_init) \
	X(global_cleanup, curl_global_cleanup) \
	X(easy_init, curl_easy_init) \
	X(easy_setopt, curl_easy_setopt) \
	X(easy_getinfo, curl_easy_getinfo) \
	X(easy_cleanup, curl_easy_cleanup) \
	X(easy_strerror, curl_easy_strerror) \
	X(free, curl_free) \
	X(mime_init, curl_mime_init) \
	X(mime_free, curl_mime_free) \
	X(mime_addpart, curl_mime_addpart) \
	X(mime_name, curl_mime_name) \
	X(mime_filename, curl_mime_filename) \
	X(mime_type, curl_mime_type) \
	X(mime_data, curl_mime_data) \
	X(mime_data_cb, curl_mime_data_cb) \
	X(multi_init, curl_multi_init) \
	X(multi_add_handle, curl_multi_add_handle) \
	X(multi_remove_handle, curl_multi_remove_handle) \
	X(multi_cleanup, curl_multi_cleanup) \
	X(multi_info_read, curl_multi_info_read) \
	X(multi_perform, curl_multi_perform) \
	X(multi_poll, curl_multi_poll) \
	X(multi_timeout, curl_multi_timeout) \
	X(multi_wakeup, curl_multi_wakeup) \
	X(share_init, curl_share_init) \
	X(share_setopt, curl_share_setopt) \
	X(share_cleanup, curl_share_cleanup) \
	X(slist_append, curl_slist_append) \
	X(slist_free_all, curl_slist_free_all) \
	X(url, curl_url) \
	X(url_cleanup, curl_url_cleanup) \
	X(url_get, curl_url_get) \
	X(url_set, curl_url_set)

#define ARCHIVE_FUNCS(X) \
	X(write_new, archive_write_new) \
	X(write_set_format_pax_restricted, archive_write_set_format_pax_restricted) \
	X(write_set_bytes_in_last_block, archive_write_set_bytes_in_last_block) \
	X(write_add_filter_gzip, archive_write_add_filter_gzip) \
	X(write_open, archive_write_open) \
	X(write_header, archive_write_header) \
	X(write_data, archive_write_data) \
	X(write_finish_entry, archive_write_finish_entry) \
	X(write_close, archive_write_close) \
	X(write_free, archive_write_free) \
	X(error_string, archive_error_string) \
	X(set_error, archive_set_error) \
	X(entry_new2, archive_entry_new2) \
	X(entry_free, archive_entry_free) \
	X(entry_set_pathname, archive_entry_set_pathname) \
	X(entry_set_filetype, archive_entry_set_filetype) \
	X(entry_set_perm, archive_entry_set_perm) \
	X(entry_set_uid, archive_entry_set_uid) \
	X(entry_set_gid, archive_entry_set_gid) \
	X(entry_set_size, archive_entry_set_size) \
	X(entry_set_mtime, archive_entry_set_mtime) \
	X(entry_set_symlink, archive_entry_set_symlink)

/* Each member has exactly the type of the header's prototype: a wrong
 * member fails here, at compile time, not as a crash at run time.
 * (__typeof__ of a declared function references no symbol, so this needs
 * no linking.) */
#define CHECK_CURL(member, fn) \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&fn), \
	                                            __typeof__(civis__curl_api.member)), \
	               #fn " does not match civis__curl_fns." #member);
#define CHECK_ARCHIVE(member, fn) \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&fn), \
	                                            __typeof__(civis__archive_api.member)), \
	               #fn " does not match civis__archive_fns." #member);
CURL_FUNCS(CHECK_CURL)
ARCHIVE_FUNCS(CHECK_ARCHIVE)

/* dlsym hands out object pointers; POSIX guarantees they hold a function. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers fit in void *");

struct sym {
	const char *name;
	size_t off;
};

#define SYM_CURL(member, fn) { #fn, offsetof(civis__curl_fns, member) },
#define SYM_ARCHIVE(member, fn) { #fn, offsetof(civis__archive_fns, member) },
static const struct sym curl_syms[] = { CURL_FUNCS(SYM_CURL) };
static const struct sym archive_syms[] = { ARCHIVE_FUNCS(SYM_ARCHIVE) };

#define COUNT(member, fn) +1
_Static_assert(sizeof(civis__curl_fns) == (0 CURL_FUNCS(COUNT)) * sizeof(void *),
               "every civis__curl_fns member is in CURL_FUNCS");
_Static_assert(sizeof(civis__archive_fns) == (0 ARCHIVE_FUNCS(COUNT)) * sizeof(void *),
               "every civis__archive_fns member is in ARCHIVE_FUNCS");

#ifdef CIVIS_DL_LINKED_ARCHIVE
/* A build that links libarchive itself, statically (the Docker layer's
 * agent: the shared one would bring libxml2 and ICU along), takes the
 * functions from the link instead of opening libarchive.so.13. */
#define LINKED_ARCHIVE(member, fn) civis__archive_api.member = &fn;
static void
link_archive(void)
{
	ARCHIVE_FUNCS(LINKED_ARCHIVE)
}
#endif

#define MSG_MAX 320

struct lib {
	const char *dflt;         /* soname */
	const char *name;         /* what to open: dflt unless a test says otherwise */
	const char *consequence;  /* what the caller loses, for the message */
	const struct sym *syms;
	size_t nsyms;
	void *table;
	size_t table_size;
	void (*linked)(void);     /* fills table from the link; NULL: dlopen */
	int tried;
	int rc;
	void *handle;
	char msg[MSG_MAX];        /* "" when loaded */
};

static struct lib curl_lib = {
	CIVIS__DL_CURL_NAME, CIVIS__DL_CURL_NAME, "the Civis API is unavailable",
	curl_syms, sizeof(curl_syms) / sizeof(curl_syms[0]),
	&civis__curl_api, sizeof(civis__curl_api), NULL, 0, CIVIS_OK, NULL, ""
};
static struct lib archive_lib = {
	CIVIS__DL_ARCHIVE_NAME, CIVIS__DL_ARCHIVE_NAME, "a directory cannot be archived",
	archive_syms, sizeof(archive_syms) / sizeof(archive_syms[0]),
	&civis__archive_api, sizeof(civis__archive_api),
#ifdef CIVIS_DL_LINKED_ARCHIVE
	link_archive,
#else
	NULL,
#endif
	0, CIVIS_OK, NULL, ""
};
static pthread_mutex_t dl_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned dl_opens;

static void
set_msg(struct lib *l, const char *why)
{
	int n = snprintf(l->msg, sizeof(l->msg), "cannot load %s: %s; %s", l->name,
	                 why != NULL ? why : "unknown error", l->consequence);
	size_t i;

	if (n < 0)
		l->msg[0] = '\0';
	/* dlerror() is one line today; keep ours one line whatever it says */
	for (i = 0; l->msg[i] != '\0'; i++)
		if (l->msg[i] == '\n' || l->msg[i] == '\r')
			l->msg[i] = ' ';
}

/* Under dl_mu: open l->name and fill l->table, or leave it all NULL. */
static void
load(struct lib *l)
{
	unsigned char *table = l->table;
	void *h, *p;
	size_t i;

	l->tried = 1;
	if (l->linked != NULL) {
		l->linked();
		l->msg[0] = '\0';
		l->rc = CIVIS_OK;
		return;
	}
	dl_opens++;
	(void)dlerror();
	h = dlopen(l->name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		set_msg(l, dlerror());
		l->rc = CIVIS_ENOTFOUND;
		return;
	}
	for (i = 0; i < l->nsyms; i++) {
		(void)dlerror();
		p = dlsym(h, l->syms[i].name);
		if (p == NULL) {
			const char *why = dlerror();

			set_msg(l, why != NULL ? why : l->syms[i].name);
			memset(l->table, 0, l->table_size);
			(void)dlclose(h);
			l->rc = CIVIS_ESYS;
			return;
		}
		memcpy(table + l->syms[i].off, &p, sizeof(p));
	}
	l->handle = h;
	l->msg[0] = '\0';
	l->rc = CIVIS_OK;
}

static int
get(struct lib *l, char *err, size_t errlen)
{
	int rc;

	(void)pthread_mutex_lock(&dl_mu);
	if (!l->tried)
		load(l);
	rc = l->rc;
	if (err != NULL && errlen > 0)
		(void)snprintf(err, errlen, "%s", l->msg);
	(void)pthread_mutex_unlock(&dl_mu);
	return rc;
}

int
civis__dl_curl(char *err, size_t errlen)
{
	return get(&curl_lib, err, errlen);
}

int
civis__dl_archive(char *err, size_t errlen)
{
	return get(&archive_lib, err, errlen);
}

#ifdef CIVIS_UNITTEST
static void
forget(struct lib *l, const char *name)
{
	if (l->handle != NULL)
		(void)dlclose(l->handle);
	l->handle = NULL;
	memset(l->table, 0, l->table_size);
	l->tried = 0;
	l->rc = CIVIS_OK;
	l->msg[0] = '\0';
	l->name = name != NULL ? name : l->dflt;
}

void
civis__dl_reset(const char *curl_name, const char *archive_name)
{
	(void)pthread_mutex_lock(&dl_mu);
	forget(&curl_lib, curl_name);
	forget(&archive_lib, archive_name);
	(void)pthread_mutex_unlock(&dl_mu);
}

unsigned
civis__dl_opens(void)
{
	unsigned n;

	(void)pthread_mutex_lock(&dl_mu);
	n = dl_opens;
	(void)pthread_mutex_unlock(&dl_mu);
	return n;
}
#endif
