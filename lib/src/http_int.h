/* http_int.h: libcivis-internal parts of civis_http (not installed).
 *
 * dl.h includes this header, so every lib file that speaks libcurl sees it
 * before civis/http.h. */
#ifndef CIVIS_HTTP_INT_H
#define CIVIS_HTTP_INT_H

/* Until lib/src/upload*.c streams its bodies through spec->body_read, the
 * spec it fills keeps the old hook in the slot the public header reserves
 * (same size, same place):
 *     int (*body_fn)(void *ud, void *easy);   easy is the try's CURL *
 * called before each try to attach the body to the easy handle (read and
 * seek callbacks, a curl_mime, ...); called again for a retry, so a
 * streamed body starts over. Exclusive with body and body_read. Only lib
 * code that includes this header before civis/http.h can name it. */
#ifndef CIVIS_HTTP_H
#define CIVIS__HTTP_LEGACY_BODY 1
#endif
#include "civis/http.h"

/* Start a request that carries `userpwd` ("key:") as Basic auth plus the
 * extra headers; refused with CIVIS_EUNSAFE unless spec->url is under
 * `origin` (scheme://host:port/path of the API). Used by client.c. */
int civis__http_start_auth(civis_http *http, const civis_http_spec *spec,
                           const char *origin, const char *userpwd,
                           civis_http_req **out);

#endif
