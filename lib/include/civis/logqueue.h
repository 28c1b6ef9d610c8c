/* logqueue.h: log batches the API has not acknowledged yet, kept in order.
 *
 * The unit is a chunk: one sealed JSON request body with its number of lines
 * and its createdAt range. Chunks are kept in a bounded memory buffer
 * (mem_cap) and, beyond it, in an append-only spool file (spool_cap) that is
 * created lazily at the first overflow, already unlinked (O_TMPFILE, else
 * mkstemp + unlink), mode 0600, so nothing is left behind. They are handed
 * out oldest first; several may be in flight at once and acknowledged in any
 * order. Past spool_cap the OLDEST unsent spooled chunks are dropped (never
 * one in flight) and every dropped line is counted. A disk that is full
 * (ENOSPC, EDQUOT) is treated the same way once memory cannot take the
 * chunk: the oldest queued spooled chunks make room. So what is lost is a
 * contiguous stretch between the start of the output (what went to memory
 * first) and its end.
 *
 * Each contiguous stretch of dropped chunks leaves a note in its place: a
 * memory chunk of one message, level "warn",
 *   "civis-agent: N lines dropped here: spool full"
 * whose createdAt is that of the stretch's first line, so the run log,
 * ordered by createdAt, shows it where the lines were. A note that is still
 * queued grows while its stretch does; notes take at most 64 KiB (beyond
 * that the lines are only counted). A note counts as a pushed chunk of 1
 * line (stats note_chunks); chunks the spool finds corrupt get no note.
 *
 * Memory stays bounded whatever the outage: spooled chunks cost no memory
 * (each record on disk starts with a 48-byte header: magic, length, lines,
 * first/last ns, sequence, crc32 of the body, crc32 of the header; only the
 * read and write offsets live in memory); in-flight and returned (nacked)
 * disk chunks cost one small struct each, at most CIVIS_LOGQ_MAX_INFLIGHT. */
#ifndef CIVIS_LOGQUEUE_H
#define CIVIS_LOGQUEUE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CIVIS_LOGQ_DEFAULT_MEM_CAP   (4u << 20)        /* 4 MiB */
#define CIVIS_LOGQ_DEFAULT_SPOOL_CAP (1ull << 30)      /* 1 GiB */
#define CIVIS_LOGQ_MAX_CHUNK         (16u << 20)       /* one body, 16 MiB */
#define CIVIS_LOGQ_MAX_INFLIGHT      256               /* chunks taken, not yet acked/nacked */
#define CIVIS_LOGQ_ERRLEN            256

typedef struct civis_logq civis_logq;
typedef struct civis_logq_chunk civis_logq_chunk;  /* owned by the queue */

typedef struct civis_logq_opts {
	/* Bytes of chunks held in memory, queued or in flight, each counted as
	 * its body plus its bookkeeping (64 bytes on 64-bit).
	 * 0: CIVIS_LOGQ_DEFAULT_MEM_CAP. */
	size_t mem_cap;
	/* Bytes of live records in the spool file (headers + bodies of queued,
	 * returned and in-flight disk chunks). 0: CIVIS_LOGQ_DEFAULT_SPOOL_CAP. */
	uint64_t spool_cap;
	/* Directory of the spool file; NULL or "": $TMPDIR, else /tmp. */
	const char *spool_dir;
} civis_logq_opts;

/* Not typedef'd: civis_logq_stats is the function below. */
struct civis_logq_stats {
	uint64_t mem_chunks, mem_lines, mem_bytes;    /* queued in memory (bodies) */
	uint64_t disk_chunks, disk_lines, disk_bytes; /* queued in the spool (bodies) */
	uint64_t inflight_chunks, inflight_lines, inflight_bytes;
	uint64_t pushed_chunks, pushed_lines;         /* every push, kept or not */
	uint64_t acked_chunks, acked_lines;
	uint64_t dropped_chunks, dropped_lines;       /* total since civis_logq_new */
	uint64_t dropped_lines_unreported;            /* since the last civis_logq_take_dropped */
	uint64_t note_chunks;                         /* drop notes made (counted as pushed, 1 line) */
	uint64_t mem_used, mem_peak, mem_cap;         /* as counted against mem_cap */
	uint64_t spool_used, spool_cap;               /* live record bytes, as counted against spool_cap */
	uint64_t spool_size;                          /* logical size of the spool file (0: none / reset) */
	uint64_t spool_disk;                          /* bytes the spool file occupies on disk (st_blocks) */
	int spool_open;                               /* 1 once the spool file exists */
	int spool_punch;                              /* 1 when hole punching works on it */
	int spool_gone;                               /* errno that made the spool directory
	                                               * unusable (memory only), else 0 */
};

/* New empty queue; o may be NULL (all defaults). The spool directory is only
 * used at the first overflow; see civis_logq_spool_check to test it early. */
int  civis_logq_new(civis_logq **out, const civis_logq_opts *o, char *err, size_t errlen);
/* The spool directory in use (the option, else $TMPDIR, else /tmp). */
const char *civis_logq_dir(const civis_logq *q);
/* Frees everything, in-flight chunks included (their pointers die too). */
void civis_logq_free(civis_logq *q);

/* Create the spool file now if it does not exist yet. CIVIS_ESYS with a
 * one-line text naming the directory when it is missing or not writable. */
int  civis_logq_spool_check(civis_logq *q, char *err, size_t errlen);

/* Queue a copy of body. It goes to memory when no spooled chunk is waiting
 * and it fits under mem_cap, else to the spool (dropping the oldest unsent
 * spooled chunks when over spool_cap), else to memory if it still fits.
 * CIVIS_OK: kept (possibly after dropping older chunks: see stats).
 * Failure: this chunk was NOT kept; its lines are counted as dropped and
 * civis_logq_last_error says why (CIVIS_ESYS disk full or spool unusable,
 * CIVIS_ETOOBIG over CIVIS_LOGQ_MAX_CHUNK or spool_cap, CIVIS_EINVAL).
 * Memory only: once the spool file cannot be created because its directory
 * is unusable (EROFS, EACCES, EPERM, ENOENT, ENOTDIR; never tried again), a
 * push over mem_cap is refused with CIVIS_EFULL and NOT counted or dropped:
 * push it again once acks free memory. With nothing in memory one chunk is
 * taken whatever its size, so a caller that waits never waits forever. */
int  civis_logq_push(civis_logq *q, const char *body, size_t len, uint32_t nlines,
                     uint64_t first_ns, uint64_t last_ns);

/* The oldest chunk not in flight, now marked in flight: *out stays valid
 * until it is acked or nacked (or the queue freed).
 * CIVIS_ENOTFOUND: nothing to send. CIVIS_ETOOBIG: CIVIS_LOGQ_MAX_INFLIGHT
 * chunks are already out. CIVIS_EPROTO: the spool was found corrupt; the
 * unreadable chunks were dropped and counted (text in last_error), call
 * again. CIVIS_ESYS: the spool could not be read; nothing changed. */
int  civis_logq_take(civis_logq *q, civis_logq_chunk **out);

/* Delivered: forget it and reclaim its memory or disk space at once. */
void civis_logq_ack(civis_logq *q, civis_logq_chunk *c);
/* Not delivered: back into the queue in its place (by age), to be taken again. */
void civis_logq_nack(civis_logq *q, civis_logq_chunk *c);

size_t   civis_logq_chunk_len(const civis_logq_chunk *c);
uint32_t civis_logq_chunk_lines(const civis_logq_chunk *c);
uint64_t civis_logq_chunk_first_ns(const civis_logq_chunk *c);
uint64_t civis_logq_chunk_last_ns(const civis_logq_chunk *c);
/* The body when the chunk is in memory, NULL when it is on disk. */
const char *civis_logq_chunk_mem(const civis_logq_chunk *c);
/* Copy up to n bytes of the body from offset off into buf (pread for disk
 * chunks, so a body streamed to libcurl through a read callback costs no
 * memory). *got is 0 at or past the end. CIVIS_ESYS on a read error, or
 * CIVIS_EPROTO when the file is shorter than the record. */
int  civis_logq_chunk_read(civis_logq *q, const civis_logq_chunk *c, size_t off,
                           void *buf, size_t n, size_t *got);

void civis_logq_stats(const civis_logq *q, struct civis_logq_stats *out);
/* Lines dropped since the previous call (returned, then cleared), for the
 * "N log lines were dropped" notice once the API answers again. */
uint64_t civis_logq_take_dropped(civis_logq *q);
/* One line about the last failure or drop, "" when none. */
const char *civis_logq_last_error(const civis_logq *q);

#ifdef __cplusplus
}
#endif
#endif
