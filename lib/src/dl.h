/* dl.h: libcurl and libarchive, loaded at run time on first use; private to
 * libcivis.
 *
 * Linked, libcurl alone pulls ~45 libraries (OpenSSL, GSSAPI, LDAP, ssh2,
 * nghttp2, ...) into every process the loader starts, 6-15 ms before main(),
 * although a run without the CIVIS_* variables never makes a request and
 * most runs never archive. So the library dlopen()s them where it first
 * needs them: civis__loop_curl_multi() and the endpoint check for libcurl,
 * the tar.gz staging for libarchive. Call civis__dl_curl() or
 * civis__dl_archive() there; everything after that point calls the
 * functions by their usual names, which this header maps onto the tables.
 *
 * Include this header before anything that includes <curl/curl.h> (no
 * public header does any more): the gcc type-check macros of curl_easy_setopt and friends
 * would otherwise take the names. The table members are declared with the
 * real prototypes, and dl.c checks each against curl.h/archive.h at compile
 * time, so a wrong one does not build. */
#ifndef CIVIS_DL_H
#define CIVIS_DL_H

#ifndef CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_TYPECHECK
#endif

#include <stddef.h>
#include <time.h>
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>

#define CIVIS__DL_CURL_NAME    "libcurl.so.4"
#define CIVIS__DL_ARCHIVE_NAME "libarchive.so.13"

typedef struct civis__curl_fns {
	CURLcode (*global_init)(long flags);
	void (*global_cleanup)(void);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
	CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *curl);
	const char *(*easy_strerror)(CURLcode code);
	void (*free)(void *p);
	curl_mime *(*mime_init)(CURL *easy);
	void (*mime_free)(curl_mime *mime);
	curl_mimepart *(*mime_addpart)(curl_mime *mime);
	CURLcode (*mime_name)(curl_mimepart *part, const char *name);
	CURLcode (*mime_filename)(curl_mimepart *part, const char *filename);
	CURLcode (*mime_type)(curl_mimepart *part, const char *mimetype);
	CURLcode (*mime_data)(curl_mimepart *part, const char *data, size_t datasize);
	CURLcode (*mime_data_cb)(curl_mimepart *part, curl_off_t datasize,
	                         curl_read_callback readfunc, curl_seek_callback seekfunc,
	                         curl_free_callback freefunc, void *arg);
	CURLM *(*multi_init)(void);
	CURLMcode (*multi_add_handle)(CURLM *multi_handle, CURL *curl_handle);
	CURLMcode (*multi_remove_handle)(CURLM *multi_handle, CURL *curl_handle);
	CURLMcode (*multi_cleanup)(CURLM *multi_handle);
	CURLMsg *(*multi_info_read)(CURLM *multi_handle, int *msgs_in_queue);
	CURLMcode (*multi_perform)(CURLM *multi_handle, int *running_handles);
	CURLMcode (*multi_poll)(CURLM *multi_handle, struct curl_waitfd extra_fds[],
	                        unsigned int extra_nfds, int timeout_ms, int *ret);
	CURLMcode (*multi_timeout)(CURLM *multi_handle, long *milliseconds);
	CURLMcode (*multi_wakeup)(CURLM *multi_handle);
	CURLSH *(*share_init)(void);
	CURLSHcode (*share_setopt)(CURLSH *share, CURLSHoption option, ...);
	CURLSHcode (*share_cleanup)(CURLSH *share);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *data);
	void (*slist_free_all)(struct curl_slist *list);
	CURLU *(*url)(void);
	void (*url_cleanup)(CURLU *handle);
	CURLUcode (*url_get)(CURLU *handle, CURLUPart what, char **part, unsigned int flags);
	CURLUcode (*url_set)(CURLU *handle, CURLUPart what, const char *part,
	                     unsigned int flags);
} civis__curl_fns;

typedef struct civis__archive_fns {
	struct archive *(*write_new)(void);
	int (*write_set_format_pax_restricted)(struct archive *a);
	int (*write_set_bytes_in_last_block)(struct archive *a, int bytes_in_last_block);
	int (*write_add_filter_gzip)(struct archive *a);
	int (*write_open)(struct archive *a, void *client_data, archive_open_callback *opener,
	                  archive_write_callback *writer, archive_close_callback *closer);
	int (*write_header)(struct archive *a, struct archive_entry *entry);
	la_ssize_t (*write_data)(struct archive *a, const void *buf, size_t len);
	int (*write_finish_entry)(struct archive *a);
	int (*write_close)(struct archive *a);
	int (*write_free)(struct archive *a);
	const char *(*error_string)(struct archive *a);
	void (*set_error)(struct archive *a, int err, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	struct archive_entry *(*entry_new2)(struct archive *a);
	void (*entry_free)(struct archive_entry *entry);
	void (*entry_set_pathname)(struct archive_entry *entry, const char *name);
	void (*entry_set_filetype)(struct archive_entry *entry, unsigned int type);
	void (*entry_set_perm)(struct archive_entry *entry, __LA_MODE_T perm);
	void (*entry_set_uid)(struct archive_entry *entry, la_int64_t uid);
	void (*entry_set_gid)(struct archive_entry *entry, la_int64_t gid);
	void (*entry_set_size)(struct archive_entry *entry, la_int64_t size);
	void (*entry_set_mtime)(struct archive_entry *entry, time_t sec, long nsec);
	void (*entry_set_symlink)(struct archive_entry *entry, const char *target);
} civis__archive_fns;

/* Filled by a successful civis__dl_curl() / civis__dl_archive(); all NULL
 * before. */
extern civis__curl_fns civis__curl_api;
extern civis__archive_fns civis__archive_api;

/* Load libcurl.so.4 and resolve every function above, once; later calls
 * return the first call's result without trying again. CIVIS_OK, or
 * CIVIS_ENOTFOUND (no such library) / CIVIS_ESYS (a function missing) with
 * one line in err: "cannot load libcurl.so.4: <dlerror>; the Civis API is
 * unavailable". Thread-safe. */
int civis__dl_curl(char *err, size_t errlen);
/* The same for libarchive.so.13 ("...; a directory cannot be archived"). */
int civis__dl_archive(char *err, size_t errlen);

#ifdef CIVIS_UNITTEST
/* Forget what was loaded (dlclose, tables cleared) and load from these
 * names next time; NULL restores the default name. */
void civis__dl_reset(const char *curl_name, const char *archive_name);
/* dlopen() calls made so far, to see that the result is cached. */
unsigned civis__dl_opens(void);
#endif

/* The usual names, onto the tables. CIVIS_DL_NO_MACROS (dl.c, test_dl.c)
 * keeps the real declarations visible. */
#ifndef CIVIS_DL_NO_MACROS
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_share_setopt
#define curl_global_init        (civis__curl_api.global_init)
#define curl_global_cleanup     (civis__curl_api.global_cleanup)
#define curl_easy_init          (civis__curl_api.easy_init)
#define curl_easy_setopt        (civis__curl_api.easy_setopt)
#define curl_easy_getinfo       (civis__curl_api.easy_getinfo)
#define curl_easy_cleanup       (civis__curl_api.easy_cleanup)
#define curl_easy_strerror      (civis__curl_api.easy_strerror)
#define curl_free               (civis__curl_api.free)
#define curl_mime_init          (civis__curl_api.mime_init)
#define curl_mime_free          (civis__curl_api.mime_free)
#define curl_mime_addpart       (civis__curl_api.mime_addpart)
#define curl_mime_name          (civis__curl_api.mime_name)
#define curl_mime_filename      (civis__curl_api.mime_filename)
#define curl_mime_type          (civis__curl_api.mime_type)
#define curl_mime_data          (civis__curl_api.mime_data)
#define curl_mime_data_cb       (civis__curl_api.mime_data_cb)
#define curl_multi_init         (civis__curl_api.multi_init)
#define curl_multi_add_handle   (civis__curl_api.multi_add_handle)
#define curl_multi_remove_handle (civis__curl_api.multi_remove_handle)
#define curl_multi_cleanup      (civis__curl_api.multi_cleanup)
#define curl_multi_info_read    (civis__curl_api.multi_info_read)
#define curl_multi_perform      (civis__curl_api.multi_perform)
#define curl_multi_poll         (civis__curl_api.multi_poll)
#define curl_multi_timeout      (civis__curl_api.multi_timeout)
#define curl_multi_wakeup       (civis__curl_api.multi_wakeup)
#define curl_share_init         (civis__curl_api.share_init)
#define curl_share_setopt       (civis__curl_api.share_setopt)
#define curl_share_cleanup      (civis__curl_api.share_cleanup)
#define curl_slist_append       (civis__curl_api.slist_append)
#define curl_slist_free_all     (civis__curl_api.slist_free_all)
#define curl_url                (civis__curl_api.url)
#define curl_url_cleanup        (civis__curl_api.url_cleanup)
#define curl_url_get            (civis__curl_api.url_get)
#define curl_url_set            (civis__curl_api.url_set)

#define archive_write_new       (civis__archive_api.write_new)
#define archive_write_set_format_pax_restricted \
	(civis__archive_api.write_set_format_pax_restricted)
#define archive_write_set_bytes_in_last_block \
	(civis__archive_api.write_set_bytes_in_last_block)
#define archive_write_add_filter_gzip (civis__archive_api.write_add_filter_gzip)
#define archive_write_open      (civis__archive_api.write_open)
#define archive_write_header    (civis__archive_api.write_header)
#define archive_write_data      (civis__archive_api.write_data)
#define archive_write_finish_entry (civis__archive_api.write_finish_entry)
#define archive_write_close     (civis__archive_api.write_close)
#define archive_write_free      (civis__archive_api.write_free)
#define archive_error_string    (civis__archive_api.error_string)
#define archive_set_error       (civis__archive_api.set_error)
#define archive_entry_new2      (civis__archive_api.entry_new2)
#define archive_entry_free      (civis__archive_api.entry_free)
#define archive_entry_set_pathname (civis__archive_api.entry_set_pathname)
#define archive_entry_set_filetype (civis__archive_api.entry_set_filetype)
#define archive_entry_set_perm  (civis__archive_api.entry_set_perm)
#define archive_entry_set_uid   (civis__archive_api.entry_set_uid)
#define archive_entry_set_gid   (civis__archive_api.entry_set_gid)
#define archive_entry_set_size  (civis__archive_api.entry_set_size)
#define archive_entry_set_mtime (civis__archive_api.entry_set_mtime)
#define archive_entry_set_symlink (civis__archive_api.entry_set_symlink)
#endif

#endif
