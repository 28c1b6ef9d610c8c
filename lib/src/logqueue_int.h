/* logqueue_int.h (private): what the two halves of the log queue share.
 *
 * logqueue.c is the queue: push / take / ack / nack, the memory list, order
 * by sequence number, the books. logqueue_spool.c is the spool file: its
 * records, their checksums, the cap, hole punching and truncation. */
#ifndef CIVIS_LOGQUEUE_INT_H
#define CIVIS_LOGQUEUE_INT_H

#include "civis/logqueue.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define HDR_SIZE   48u                  /* spool record header */
#define DEF_BLOCK  4096u                /* punch alignment when st_blksize is odd */

enum { WHERE_MEM = 1, WHERE_DISK = 2 };
enum { ST_QUEUED = 1, ST_INFLIGHT = 2 };

struct civis_logq_chunk {
	struct civis_logq_chunk *prev, *next;
	uint64_t seq;
	uint64_t first_ns, last_ns;
	uint64_t off;                   /* disk: offset of the record header */
	uint32_t len, nlines, crc;
	unsigned char where, state;
	unsigned char note;             /* a drop note the queue made (memory) */
	char body[];                    /* memory chunks only */
};

struct chunk_list {
	civis_logq_chunk *head, *tail;
	size_t n;
};

struct civis__logq_rec {
	uint32_t len, nlines, crc;
	uint64_t seq, first_ns, last_ns;
};

struct civis_logq {
	size_t mem_cap;
	uint64_t spool_cap;
	char dir[PATH_MAX];

	struct chunk_list mem;          /* queued in memory, by seq */
	struct chunk_list nacked;       /* disk chunks given back, by seq */
	struct chunk_list inflight;     /* taken, any order */
	uint64_t next_seq;

	uint64_t mq_lines, mq_bytes;    /* mem list */
	uint64_t nk_lines, nk_bytes;    /* nacked list */
	uint64_t if_lines, if_bytes;    /* inflight list */
	size_t inflight_disk;

	int fd;
	int punch;                      /* hole punching still believed to work */
	uint64_t blk;                   /* punch alignment */
	uint64_t rd, wr;                /* queued records are [rd, wr) */
	uint64_t punched;               /* [0, punched) already given back */
	uint64_t spool_live;            /* bytes of records not yet acked or dropped */
	uint64_t sp_chunks, sp_lines, sp_bytes;  /* queued in [rd, wr) */
	int head_ok;                    /* head caches the header at rd */
	struct civis__logq_rec head;

	uint64_t pushed_chunks, pushed_lines;
	uint64_t acked_chunks, acked_lines;
	uint64_t dropped_chunks, dropped_lines, dropped_unreported;
	uint64_t mem_used, mem_peak;
	uint64_t structs_live, structs_peak;
	uint64_t corruptions;           /* spool_corrupt calls, to keep its text */
	int spool_errno;                /* errno of the last failed record write, else 0 */
	int spool_gone;                 /* errno: the directory is unusable, memory only */

	/* Drop notes: each contiguous stretch of dropped chunks is replaced by
	 * one memory chunk saying so, with the stretch's first createdAt and
	 * sequence number, so it sorts where the stretch was. */
	civis_logq_chunk *note;         /* the newest note while still queued */
	uint64_t note_next;             /* seq right after the stretch it covers */
	uint64_t note_lines;            /* lines it says */
	uint64_t note_bytes;            /* memory of the notes alive */
	uint64_t note_chunks;           /* notes made */
	struct civis_batch *note_batch; /* builds their bodies */

	char err[CIVIS_LOGQ_ERRLEN];
#ifdef CIVIS_UNITTEST
	int ut_fail_alloc;              /* allocations left before one fails; -1 never */
	int ut_no_tmpfile;
	uint64_t ut_disk_cap;           /* > 0: spool writes past it fail with ENOSPC */
#endif
};


/* ---- logqueue.c */

void civis__logq_err(civis_logq *q, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void civis__logq_count_drop(civis_logq *q, uint64_t chunks, uint64_t lines);
civis_logq_chunk *civis__logq_chunk_alloc(civis_logq *q, size_t body_len);
void civis__logq_chunk_release(civis_logq *q, civis_logq_chunk *c);
void civis__logq_list_remove(struct chunk_list *l, civis_logq_chunk *c);
/* Chunk seq (nlines lines from first_ns on) is lost: count it and mark its
 * place in the log with a note (one per contiguous stretch). */
void civis__logq_drop(civis_logq *q, uint64_t seq, uint32_t nlines, uint64_t first_ns);

/* ---- logqueue_spool.c */

/* Create the spool file if there is none: CIVIS_OK, else last error set. */
int  civis__logq_spool_open(civis_logq *q);
/* Append a record: CIVIS_OK, CIVIS_ETOOBIG (cap), CIVIS_ESYS (write:
 * q->spool_errno says why), ... With make_room, a write that fails for want
 * of space (ENOSPC, EDQUOT) drops the oldest queued spooled chunks, one at
 * a time, and tries again, as the cap does. */
int  civis__logq_spool_push(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
                            uint64_t first_ns, uint64_t last_ns, uint64_t seq, int make_room);
/* The header of the oldest queued record: CIVIS_OK, CIVIS_ENOTFOUND when
 * none, CIVIS_ESYS (read error, nothing changed), CIVIS_EPROTO (corrupt:
 * the queued records were dropped). */
int  civis__logq_spool_head(civis_logq *q, struct civis__logq_rec *out);
int  civis__logq_spool_take(civis_logq *q, const struct civis__logq_rec *h,
                            civis_logq_chunk **out);
int  civis__logq_spool_read(civis_logq *q, const civis_logq_chunk *c, size_t off,
                            void *buf, size_t want, size_t *got);
/* Give back the whole blocks inside a record that is gone. */
void civis__logq_spool_release(civis_logq *q, uint64_t off, uint64_t reclen);
/* Truncate when nothing lives on disk, else punch below the lowest live record. */
void civis__logq_spool_reclaim(civis_logq *q);

#ifdef CIVIS_UNITTEST
/* ---- test hooks (tests/unit/test_logqueue.c) */

/* The spool file descriptor (-1 before the first overflow). */
int civis__logq_spool_fd(const civis_logq *q);
/* Chunk structs alive now and at most at once (memory and disk ones). */
void civis__logq_alloc_counts(const civis_logq *q, uint64_t *live, uint64_t *peak);
/* Make the chunk allocation after the next n succeed... fail once (n = 0:
 * the next one fails); -1 turns it off. */
void civis__logq_fail_alloc(civis_logq *q, int n);
/* 1: skip O_TMPFILE and take the mkstemp + unlink path. */
void civis__logq_force_mkstemp(civis_logq *q, int on);
/* A filesystem of `bytes` for the spool (0: the real one): a record write
 * that would take the file's allocated blocks past it fails with ENOSPC,
 * like a full disk; blocks given back by punching or truncation count. */
void civis__logq_disk_size(civis_logq *q, uint64_t bytes);
#endif

#endif
