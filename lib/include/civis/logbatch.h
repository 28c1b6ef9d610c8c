/* logbatch.h: log messages as the JSON body of POST .../runs/{id}/logs.
 *
 *   {"messages":[{"message":"...","level":"info","createdAt":"2026-11-27T17:00:00.123456789Z"},...]}
 *
 * Each message is repaired and escaped so that the body is always valid JSON
 * whatever bytes the command wrote:
 * - invalid UTF-8 becomes U+FFFD, one per maximal invalid subpart (the
 *   Unicode / WHATWG decoder rule): overlong forms, surrogates D800-DFFF,
 *   code points above 10FFFF, truncated sequences, stray continuation bytes,
 *   C0, C1, F5-FF;
 * - '"' and '\\' are escaped, C0 controls become \b \t \n \f \r or \u00XX
 *   (NUL is \u0000); DEL (0x7F), U+2028 and U+2029 stay raw (valid JSON);
 * - valid UTF-8 without controls comes through byte for byte.
 * createdAt is RFC 3339 UTC with nanoseconds; the API sorts by it, so the
 * agent makes it strictly increasing with civis_tsclock. */
#ifndef CIVIS_LOGBATCH_H
#define CIVIS_LOGBATCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- timestamps */

/* Wall clock (CLOCK_REALTIME) in nanoseconds since the epoch. */
uint64_t civis_clock_realtime_ns(void);

typedef struct civis_tsclock {
	uint64_t last_ns;    /* start at 0 */
} civis_tsclock;

/* max(now_ns, last_ns + 1), stored as the new last_ns: strictly increasing
 * even when now_ns repeats or the wall clock steps back. */
uint64_t civis_tsclock_next(civis_tsclock *c, uint64_t now_ns);

/* "2026-11-27T17:00:00.123456789Z": 30 characters and a NUL. */
#define CIVIS_TS_LEN 31

/* Format epoch_ns as above into buf (len >= CIVIS_TS_LEN, else CIVIS_EINVAL).
 * The date and time of the last second formatted are cached per thread. */
int civis_ts_format(uint64_t epoch_ns, char *buf, size_t len);

/* ---- the encoder alone */

/* Worst-case output of civis_json_escape_utf8 for len input bytes (6 per
 * byte: a control byte becomes \u00XX), or SIZE_MAX when that overflows. */
size_t civis_json_escape_bound(size_t len);

/* Repair and escape in[0..len) into out (no quotes added, no NUL written).
 * CIVIS_OK with *outlen set; CIVIS_ETOOBIG when outcap is too small (out
 * then holds a partial result); outcap >= civis_json_escape_bound(len) is
 * always enough. */
int civis_json_escape_utf8(const char *in, size_t len, char *out, size_t outcap,
                           size_t *outlen);

/* ---- batches */

#define CIVIS_BATCH_DEFAULT_MESSAGES 10000
#define CIVIS_BATCH_DEFAULT_BYTES    (1024 * 1024)   /* the whole body */
#define CIVIS_BATCH_MAX_MESSAGE      (64 * 1024)     /* raw bytes always accepted */
#define CIVIS_BATCH_MAX_LEVEL        16              /* raw bytes of a level name */
/* {"messages":[ ]} = 15, one entry without its texts = 70 (quotes, keys,
 * 30-byte createdAt) + 1 comma; both texts at the worst escape (6x). */
#define CIVIS_BATCH_OVERHEAD         (15 + 71)
/* The smallest max_bytes with which any message of up to max_msg raw bytes
 * fits in an empty batch, whatever its bytes. */
#define CIVIS_BATCH_BYTES_FOR(max_msg) \
	(CIVIS_BATCH_OVERHEAD + 6 * CIVIS_BATCH_MAX_LEVEL + 6 * (max_msg))
/* = 393,398: a 64 KiB line always fits. */
#define CIVIS_BATCH_MIN_BYTES        CIVIS_BATCH_BYTES_FOR(CIVIS_BATCH_MAX_MESSAGE)
/* The least max_bytes accepted at all (room for one empty message). */
#define CIVIS_BATCH_FLOOR_BYTES      CIVIS_BATCH_BYTES_FOR(0)

typedef struct civis_batch civis_batch;

/* max_messages: 0 means CIVIS_BATCH_DEFAULT_MESSAGES. max_bytes: the most
 * bytes the body may have; 0 means CIVIS_BATCH_DEFAULT_BYTES; below
 * CIVIS_BATCH_FLOOR_BYTES or above 1 GiB is CIVIS_EINVAL. With max_bytes >=
 * CIVIS_BATCH_BYTES_FOR(n) every message of up to n raw bytes fits in an
 * empty batch (CIVIS_BATCH_MIN_BYTES: up to 64 KiB). Memory grows with the
 * body, up to max_bytes + 3. */
int  civis_batch_new(civis_batch **out, size_t max_messages, size_t max_bytes);
void civis_batch_free(civis_batch *b);

/* Append one message. level: "info", "error"... (at most
 * CIVIS_BATCH_MAX_LEVEL bytes, else CIVIS_EINVAL; NULL means "info").
 * CIVIS_ETOOBIG when the batch is not empty and the message would take it
 * over max_messages or max_bytes: the batch is unchanged; send it, reset,
 * and add again. CIVIS_EINVAL when even an empty batch cannot hold it
 * (never for len <= n when max_bytes >= CIVIS_BATCH_BYTES_FOR(n)). */
int  civis_batch_add(civis_batch *b, const char *msg, size_t len, const char *level,
                     uint64_t created_ns);

/* The finished body: valid JSON, NUL-terminated, len bytes (without the
 * NUL). Valid until the next add, reset or free. An empty batch gives
 * {"messages":[]}. */
const char *civis_batch_body(civis_batch *b, size_t *len);

size_t   civis_batch_count(const civis_batch *b);
/* created_ns of the first and of the last message added; 0 when empty. */
uint64_t civis_batch_first_ns(const civis_batch *b);
uint64_t civis_batch_last_ns(const civis_batch *b);

/* Empty the batch, keeping its memory. */
void civis_batch_reset(civis_batch *b);

#ifdef __cplusplus
}
#endif
#endif
