/* client.h: the Civis API calls a container-side agent makes.
 *
 * A client is built from the environment the platform sets in a container
 * script (CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, CIVIS_API_ENDPOINT),
 * and runs every call asynchronously on a civis_loop through civis_http.
 * The key goes only to the API endpoint, never into a message. */
#ifndef CIVIS_CLIENT_H
#define CIVIS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "civis/http.h"
#include "civis/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CIVIS_DEFAULT_ENDPOINT "https://api.civisanalytics.com/"

typedef struct civis_client civis_client;

typedef struct civis_client_config {
	char *endpoint;     /* always ends with '/' */
	char *api_key;
	int64_t job_id;     /* > 0 */
	int64_t run_id;     /* > 0 */
} civis_client_config;

/* Read the configuration from the environment (getenv).
 * Returns CIVIS_OK when all three CIVIS_* variables are set and valid;
 * CIVIS_ENOTFOUND when none of CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID is
 * set (tee only); CIVIS_ECONFIG when some are missing or malformed, with a
 * one-line message naming the variable in err. Plain http:// is accepted only
 * for a loopback host (127.0.0.0/8, ::1, localhost). */
int  civis_client_config_from_env(civis_client_config *out, char *err, size_t errlen);
/* Same, with an explicit lookup function instead of getenv (tests, fuzzing). */
int  civis_client_config_parse(civis_client_config *out,
                               const char *(*lookup)(const char *name, void *ud),
                               void *ud, char *err, size_t errlen);
void civis_client_config_dispose(civis_client_config *cfg);

/* The client takes a copy of cfg. */
int  civis_client_new(civis_client **out, civis_loop *loop, civis_http *http,
                      const civis_client_config *cfg);
void civis_client_free(civis_client *c);

/* 1 once the API answered 401: every later call fails at once with
 * CIVIS_EAUTH and sends nothing. */
int  civis_client_auth_rejected(const civis_client *c);

/* Send an API request: spec->url is a path relative to the endpoint
 * ("files/", "scripts/containers/1/runs/2/logs"); the client adds the
 * endpoint, Basic auth, User-Agent, X-Civis-Job-ID/X-Civis-Run-ID and, with
 * a body, Content-Type: application/json. */
int  civis_client_call(civis_client *c, const civis_http_spec *spec, civis_http_req **out);

/* "scripts/containers/{job}/runs/{run}" + suffix ("" or "/logs"...), into buf. */
int  civis_client_run_path(const civis_client *c, const char *suffix, char *buf, size_t len);

const civis_client_config *civis_client_get_config(const civis_client *c);
civis_http *civis_client_http(civis_client *c);

/* ---- answers, parsed (bounded: every string capped, every array capped) */

/* Largest answer body each parser accepts (use as spec->max_response). */
#define CIVIS_RUN_STATE_MAX_BODY      (1u << 20)   /* ContainerRun */
#define CIVIS_FILE_POST_MAX_BODY      (8u << 20)   /* FilePost: 64 fields of up to 64 KiB */
#define CIVIS_MULTIPART_POST_MAX_BODY (32u << 20)  /* up to 10,000 presigned URLs */

typedef struct civis_run_state {
	int64_t id;
	char state[16];          /* queued, running, succeeded, failed, cancelled, or "" */
	int is_cancel_requested; /* 0 or 1 (null counts as 0) */
} civis_run_state;

typedef struct civis_file_post {
	int64_t id;
	char *upload_url;
	size_t nfields;
	char **field_names;      /* uploadFields, in the answer's order */
	char **field_values;
} civis_file_post;

typedef struct civis_multipart_post {
	int64_t id;
	size_t nurls;
	char **upload_urls;
} civis_multipart_post;

/* Each parser clears *out first, fills it, and on error leaves it empty and
 * writes why into err. Strings are the caller's: free with _dispose. */
int  civis_parse_run_state(const char *body, size_t len, civis_run_state *out,
                           char *err, size_t errlen);
int  civis_parse_file_post(const char *body, size_t len, civis_file_post *out,
                           char *err, size_t errlen);
void civis_file_post_dispose(civis_file_post *fp);
int  civis_parse_multipart_post(const char *body, size_t len, civis_multipart_post *out,
                                char *err, size_t errlen);
void civis_multipart_post_dispose(civis_multipart_post *mp);
/* The best one-line text of an error answer ({"error":..,"errorDescription":..}
 * or the start of a non-JSON body), sanitized, into buf. */
void civis_parse_error_text(const char *body, size_t len, char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif
#endif
