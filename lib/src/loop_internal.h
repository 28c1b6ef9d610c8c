/* loop_internal.h: what http.c needs from the loop beyond loop.h;
 * libcivis-internal (include dl.h first). */
#ifndef CIVIS_LOOP_INTERNAL_H
#define CIVIS_LOOP_INTERNAL_H

#include <stddef.h>
#include <curl/curl.h>
#include "civis/loop.h"

/* The loop's libcurl multi handle, for http.c; libcurl is loaded and
 * initialised on the first call (a tee-only loop never loads TLS state).
 * NULL if that fails. */
CURLM *civis__loop_curl_multi(civis_loop *loop);

/* Called by civis_loop_run_once for every transfer of the loop's multi
 * handle that finished (CURLMSG_DONE). The hook owns the easy handle from
 * then on: it must remove it from the multi handle. */
typedef void (*civis__loop_curl_done_fn)(void *ctx, CURL *easy, CURLcode result);

/* Install the completion hook; one per loop. fn NULL uninstalls it.
 * Returns CIVIS_EINVAL when another hook is installed already. */
int civis__loop_set_curl_done(civis_loop *loop, civis__loop_curl_done_fn fn, void *ctx);

#ifdef CIVIS_UNITTEST
/* Timers pending (tests). */
size_t civis__loop_ntimers(const civis_loop *loop);
#endif

#endif
