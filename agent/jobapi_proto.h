/* jobapi_proto.h: the job API's wire format.
 *
 * One request per connection turn: a JSON object on one line, answered by
 * one JSON object on one line. Every message has a size cap; anything else
 * is refused with a one-line reason.
 *
 *   {"op":"mask","value":"s3cret"}
 *   {"op":"upload","path":"/abs/file","name":"out.csv","gzip":false}
 *   {"op":"output","type":"Table","id":123}
 *   {"op":"json","name":"metrics","value":{"rows":10}}
 *
 *   {"ok":true,"id":123,"text":"..."}   id and text optional
 *   {"ok":false,"status":-2,"error":"one line"}
 */
#ifndef AGENT_JOBAPI_PROTO_H
#define AGENT_JOBAPI_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* A request line at most (the API's 1,000,000-byte JSON value, escaped,
 * and the rest of the request fit). */
#define AGENT_JOBAPI_MAX_REQUEST  (2u << 20)
/* A JSON value's text, as the API takes it (valueStr). */
#define AGENT_JOBAPI_MAX_JSON     1000000u
/* A reply line at most. */
#define AGENT_JOBAPI_MAX_REPLY    4096u
#define AGENT_JOBAPI_MAX_PATH     4096u
#define AGENT_JOBAPI_MAX_NAME     1024u
#define AGENT_JOBAPI_MAX_SECRET   4096u

typedef enum agent_jobapi_op {
	AGENT_JOBAPI_MASK = 1,
	AGENT_JOBAPI_UPLOAD,
	AGENT_JOBAPI_OUTPUT,
	AGENT_JOBAPI_JSON
} agent_jobapi_op;

typedef struct agent_jobapi_req {
	agent_jobapi_op op;
	char *value;          /* mask: the secret; json: the value as compact JSON text */
	size_t value_len;
	char *path;           /* upload: absolute path */
	char *name;           /* upload: Civis name (NULL: the base name); json: the value's name */
	int gzip;             /* upload */
	char type[16];        /* output: File, Table, Report, Project, Credential, JSONValue */
	int64_t id;           /* output: > 0 */
} agent_jobapi_req;

/* Object types a run output can have, as the API spells them; NULL when
 * `word` (any case) is none of them. */
const char *agent_jobapi_object_type(const char *word);

/* Parse one request line (no newline). Clears *out first; on error leaves
 * it empty and writes the reason into err. CIVIS_EINVAL malformed,
 * CIVIS_ETOOBIG over a cap. */
int  agent_jobapi_parse_request(const char *line, size_t len, agent_jobapi_req *out,
                                char *err, size_t errlen);
void agent_jobapi_req_dispose(agent_jobapi_req *r);

/* The request as one line ending in '\n', malloc'd, into *out. For json,
 * r->value must be JSON text; for mask, bytes without NUL. */
int  agent_jobapi_format_request(const agent_jobapi_req *r, char **out, size_t *outlen);

/* A reply line ending in '\n' into buf: ok with an optional id (0: none)
 * and text (NULL: none), or an error status with its text. The text is cut
 * to keep the line under AGENT_JOBAPI_MAX_REPLY. Returns the length. */
size_t agent_jobapi_format_reply(char *buf, size_t len, int status, int64_t id, const char *text);

/* Parse a reply line. *status is CIVIS_OK or the server's (negative)
 * status; text gets the text or error. CIVIS_EPROTO when it is not a reply. */
int  agent_jobapi_parse_reply(const char *line, size_t len, int *status, int64_t *id,
                              char *text, size_t textlen);

#endif
