/* logqueue.c: unsent log chunks, in order: memory up to a cap, then an
 * append-only spool file, sent oldest first.
 *
 * Every chunk gets a sequence number at push; the queue hands out the lowest
 * one among three sorted sources: the memory list, the list of disk chunks
 * that came back by nack, and the spool's unsent region [rd, wr). So order
 * holds whatever mix of memory, disk, nacks and out-of-order acks happens.
 *
 * Spool record: a 48-byte header then the body.
 *   0 magic "CLGQ"  4 body length  8 seq  16 first_ns  24 last_ns
 *  32 nlines  36 crc32(body)  40 reserved (0)  44 crc32(header bytes 0..43)
 * Only offsets live in memory for queued records; a take preads the header.
 * Space is given back with FALLOC_FL_PUNCH_HOLE: whole blocks inside a
 * record at once when it is acked or dropped, and everything below the
 * lowest live record as it advances; when nothing is left on disk the file
 * is truncated to 0 and the offsets restart. */
#include "civis/logqueue.h"
#include "civis/civis.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#define HDR_SIZE   48u
#define HDR_MAGIC  0x51474c43u          /* "CLGQ" little-endian */
#define CRC_BUF    (32u << 10)          /* stack buffer for body checks */
#define DEF_BLOCK  4096u

enum { WHERE_MEM = 1, WHERE_DISK = 2 };
enum { ST_QUEUED = 1, ST_INFLIGHT = 2 };

struct civis_logq_chunk {
	struct civis_logq_chunk *prev, *next;
	uint64_t seq;
	uint64_t first_ns, last_ns;
	uint64_t off;                   /* disk: offset of the record header */
	uint32_t len, nlines, crc;
	unsigned char where, state;
	char body[];                    /* memory chunks only */
};

struct chunk_list {
	civis_logq_chunk *head, *tail;
	size_t n;
};

struct rec_hdr {
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
	struct rec_hdr head;

	uint64_t pushed_chunks, pushed_lines;
	uint64_t acked_chunks, acked_lines;
	uint64_t dropped_chunks, dropped_lines, dropped_unreported;
	uint64_t mem_used, mem_peak;
	uint64_t structs_live, structs_peak;
	uint64_t corruptions;           /* spool_corrupt calls, to keep its text */

	char err[CIVIS_LOGQ_ERRLEN];
#ifdef CIVIS_UNITTEST
	int ut_fail_alloc;              /* allocations left before one fails; -1 never */
	int ut_no_tmpfile;
#endif
};

/* ---------------------------------------------------------------- helpers */

static void set_err(civis_logq *q, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
set_err(civis_logq *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(q->err, sizeof q->err, fmt, ap) < 0)
		q->err[0] = '\0';
	va_end(ap);
}

static void
copy_err(char *err, size_t errlen, const char *text)
{
	if (err != NULL && errlen > 0 && snprintf(err, errlen, "%s", text) < 0)
		err[0] = '\0';
}

static void
list_push_tail(struct chunk_list *l, civis_logq_chunk *c)
{
	c->next = NULL;
	c->prev = l->tail;
	if (l->tail != NULL)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	l->n++;
}

static void
list_remove(struct chunk_list *l, civis_logq_chunk *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	l->n--;
}

/* Nacked chunks are usually the oldest, so scan from the head. */
static void
list_insert_sorted(struct chunk_list *l, civis_logq_chunk *c)
{
	civis_logq_chunk *at = l->head;

	while (at != NULL && at->seq < c->seq)
		at = at->next;
	if (at == NULL) {
		list_push_tail(l, c);
		return;
	}
	c->next = at;
	c->prev = at->prev;
	if (at->prev != NULL)
		at->prev->next = c;
	else
		l->head = c;
	at->prev = c;
	l->n++;
}

static void
list_free_all(civis_logq *q, struct chunk_list *l)
{
	civis_logq_chunk *c = l->head, *next;

	while (c != NULL) {
		next = c->next;
		free(c);
		q->structs_live--;
		c = next;
	}
	l->head = l->tail = NULL;
	l->n = 0;
}

static civis_logq_chunk *
chunk_alloc(civis_logq *q, size_t body_len)
{
	civis_logq_chunk *c;

#ifdef CIVIS_UNITTEST
	if (q->ut_fail_alloc >= 0 && q->ut_fail_alloc-- == 0)
		return NULL;
#endif
	c = malloc(sizeof *c + body_len);
	if (c == NULL)
		return NULL;
	memset(c, 0, sizeof *c);
	if (++q->structs_live > q->structs_peak)
		q->structs_peak = q->structs_live;
	return c;
}

static void
chunk_release(civis_logq *q, civis_logq_chunk *c)
{
	free(c);
	q->structs_live--;
}

static uint64_t
mem_cost(uint32_t len)
{
	return (uint64_t)sizeof(civis_logq_chunk) + len;
}

static void
count_drop(civis_logq *q, uint64_t chunks, uint64_t lines)
{
	q->dropped_chunks += chunks;
	q->dropped_lines += lines;
	q->dropped_unreported += lines;
}

static void
put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void
put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)v);
	put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t
get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void
hdr_encode(unsigned char *b, const struct rec_hdr *h)
{
	put_u32(b, HDR_MAGIC);
	put_u32(b + 4, h->len);
	put_u64(b + 8, h->seq);
	put_u64(b + 16, h->first_ns);
	put_u64(b + 24, h->last_ns);
	put_u32(b + 32, h->nlines);
	put_u32(b + 36, h->crc);
	put_u32(b + 40, 0);
	put_u32(b + 44, (uint32_t)crc32(0L, b, 44));
}

/* ---------------------------------------------------------------- spool file */

static int
spool_open(civis_logq *q)
{
	char err[CIVIS_LOGQ_ERRLEN];
	struct stat st;
	unsigned flags = 0;
	int fd, rc;

	if (q->fd >= 0)
		return CIVIS_OK;
#ifdef CIVIS_UNITTEST
	if (q->ut_no_tmpfile)
		flags |= CIVIS__TMPFILE_NO_OTMPFILE;
#endif
	rc = civis__tmpfile(q->dir, "civis-logq", flags, &fd, err, sizeof err);
	if (rc != CIVIS_OK) {
		set_err(q, "log spool: %s", err);
		return rc;
	}
	q->fd = fd;
	q->blk = DEF_BLOCK;
	if (fstat(fd, &st) == 0 && st.st_blksize >= 512 && st.st_blksize <= (1 << 20) &&
	    (st.st_blksize & (st.st_blksize - 1)) == 0)
		q->blk = (uint64_t)st.st_blksize;
	q->punch = 1;
	q->rd = q->wr = q->punched = 0;
	q->head_ok = 0;
	return CIVIS_OK;
}

static void
spool_punch(civis_logq *q, uint64_t off, uint64_t len)
{
	if (!q->punch || len == 0)
		return;
	if (fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	              (off_t)off, (off_t)len) != 0 &&
	    (errno == EOPNOTSUPP || errno == ENOSYS))
		q->punch = 0;   /* the file then only shrinks when it empties */
}

/* The whole blocks inside a record that is gone: no neighbour is touched. */
static void
spool_release_record(civis_logq *q, uint64_t off, uint64_t reclen)
{
	uint64_t lo = (off + q->blk - 1) & ~(q->blk - 1);
	uint64_t hi = (off + reclen) & ~(q->blk - 1);

	if (hi > lo)
		spool_punch(q, lo, hi - lo);
}

/* Truncate when nothing lives on disk, else punch below the lowest live record. */
static void
spool_reclaim(civis_logq *q)
{
	civis_logq_chunk *c;
	uint64_t low;

	if (q->fd < 0)
		return;
	if (q->rd == q->wr && q->inflight_disk == 0 && q->nacked.n == 0) {
		if (q->wr > 0 && ftruncate(q->fd, 0) != 0)
			set_err(q, "log spool: truncate: %s", strerror(errno));
		q->rd = q->wr = q->punched = 0;
		q->spool_live = 0;
		q->head_ok = 0;
		return;
	}
	low = q->rd;
	for (c = q->nacked.head; c != NULL; c = c->next)
		if (c->off < low)
			low = c->off;
	if (q->inflight_disk > 0)
		for (c = q->inflight.head; c != NULL; c = c->next)
			if (c->where == WHERE_DISK && c->off < low)
				low = c->off;
	low &= ~(q->blk - 1);
	if (low > q->punched) {
		spool_punch(q, q->punched, low - q->punched);
		q->punched = low;
	}
}

/* Every queued record in [rd, wr) is lost: drop them all, counted exactly
 * from the in-memory totals (the headers cannot be trusted any more). */
static void
spool_corrupt(civis_logq *q, uint64_t at, const char *why)
{
	uint64_t chunks = q->sp_chunks, lines = q->sp_lines;

	q->corruptions++;
	count_drop(q, chunks, lines);
	set_err(q, "log spool corrupt at offset %" PRIu64 " (%s): %" PRIu64
	        " queued chunks (%" PRIu64 " lines) dropped", at, why, chunks, lines);
	q->spool_live -= q->wr - q->rd;
	q->rd = q->wr;
	q->sp_chunks = q->sp_lines = q->sp_bytes = 0;
	q->head_ok = 0;
	spool_reclaim(q);
}

/* The header of the oldest queued record: CIVIS_OK, CIVIS_ENOTFOUND when
 * none, CIVIS_ESYS (read error, nothing changed), CIVIS_EPROTO (corrupt:
 * the queued records were dropped). */
static int
spool_head(civis_logq *q, struct rec_hdr *out)
{
	unsigned char b[HDR_SIZE];
	struct rec_hdr h;
	size_t got;

	if (q->fd < 0 || q->rd >= q->wr)
		return CIVIS_ENOTFOUND;
	if (q->head_ok) {
		*out = q->head;
		return CIVIS_OK;
	}
	if (civis__pread_all(q->fd, b, sizeof b, q->rd, &got) != 0) {
		set_err(q, "log spool: read at offset %" PRIu64 ": %s", q->rd, strerror(errno));
		return CIVIS_ESYS;
	}
	if (got < sizeof b) {
		spool_corrupt(q, q->rd, "file shorter than its records");
		return CIVIS_EPROTO;
	}
	if (get_u32(b) != HDR_MAGIC) {
		spool_corrupt(q, q->rd, "bad record magic");
		return CIVIS_EPROTO;
	}
	if (get_u32(b + 44) != (uint32_t)crc32(0L, b, 44)) {
		spool_corrupt(q, q->rd, "record header checksum mismatch");
		return CIVIS_EPROTO;
	}
	h.len = get_u32(b + 4);
	h.seq = get_u64(b + 8);
	h.first_ns = get_u64(b + 16);
	h.last_ns = get_u64(b + 24);
	h.nlines = get_u32(b + 32);
	h.crc = get_u32(b + 36);
	if (h.len == 0 || h.len > CIVIS_LOGQ_MAX_CHUNK ||
	    HDR_SIZE + (uint64_t)h.len > q->wr - q->rd || h.nlines > q->sp_lines) {
		spool_corrupt(q, q->rd, "record length out of range");
		return CIVIS_EPROTO;
	}
	q->head = h;
	q->head_ok = 1;
	*out = h;
	return CIVIS_OK;
}

/* Move rd past the head record, which is gone (taken, dropped). */
static void
spool_advance(civis_logq *q, const struct rec_hdr *h)
{
	q->rd += HDR_SIZE + (uint64_t)h->len;
	q->sp_chunks--;
	q->sp_lines -= h->nlines;
	q->sp_bytes -= h->len;
	q->head_ok = 0;
}

/* crc32 of a record's body against its header: CIVIS_OK, CIVIS_EPROTO, CIVIS_ESYS. */
static int
spool_check_body(civis_logq *q, uint64_t off, const struct rec_hdr *h)
{
	unsigned char buf[CRC_BUF];
	uLong crc = crc32(0L, Z_NULL, 0);
	uint64_t pos = off + HDR_SIZE, end = pos + h->len;
	size_t want, got;

	while (pos < end) {
		want = end - pos < sizeof buf ? (size_t)(end - pos) : sizeof buf;
		if (civis__pread_all(q->fd, buf, want, pos, &got) != 0) {
			set_err(q, "log spool: read at offset %" PRIu64 ": %s", pos,
			        strerror(errno));
			return CIVIS_ESYS;
		}
		if (got < want)
			return CIVIS_EPROTO;
		crc = crc32(crc, buf, (uInt)got);
		pos += got;
	}
	return (uint32_t)crc == h->crc ? CIVIS_OK : CIVIS_EPROTO;
}

static void
drop_nacked_head(civis_logq *q)
{
	civis_logq_chunk *c = q->nacked.head;
	uint64_t reclen = HDR_SIZE + (uint64_t)c->len; /* NOLINT(clang-analyzer-unix.Malloc): c is the live head; nothing freed it */

	list_remove(&q->nacked, c);
	q->nk_lines -= c->nlines;
	q->nk_bytes -= c->len;
	q->spool_live -= reclen;
	count_drop(q, 1, c->nlines);
	spool_release_record(q, c->off, reclen);
	chunk_release(q, c);
}

/* Oldest queued spooled chunk out (for the cap). 0 when there was none. */
static int
drop_spool_oldest(civis_logq *q)
{
	struct rec_hdr h;
	uint64_t off;
	int rc;

	/* A returned disk chunk is always older than the records still at rd. */
	if (q->nacked.n > 0) {
		drop_nacked_head(q);
		return 1;
	}
	rc = spool_head(q, &h);
	if (rc == CIVIS_EPROTO)
		return 1;              /* everything queued was dropped as corrupt */
	if (rc != CIVIS_OK)
		return 0;
	off = q->rd;
	spool_advance(q, &h);
	q->spool_live -= HDR_SIZE + (uint64_t)h.len;
	count_drop(q, 1, h.nlines);
	spool_release_record(q, off, HDR_SIZE + (uint64_t)h.len);
	return 1;
}

static int
spool_push(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
           uint64_t first_ns, uint64_t last_ns, uint64_t seq)
{
	unsigned char b[HDR_SIZE];
	struct iovec iov[2];
	struct rec_hdr h;
	uint64_t reclen = HDR_SIZE + (uint64_t)len, before, corruptions;
	int rc;

	if (reclen > q->spool_cap) {
		set_err(q, "log chunk of %" PRIu32 " bytes is larger than the spool cap "
		        "(%" PRIu64 " bytes)", len, q->spool_cap);
		return CIVIS_ETOOBIG;
	}
	rc = spool_open(q);
	if (rc != CIVIS_OK)
		return rc;
	before = q->dropped_lines;
	corruptions = q->corruptions;
	while (q->spool_live + reclen > q->spool_cap)
		if (!drop_spool_oldest(q))
			break;
	if (q->dropped_lines != before && q->corruptions == corruptions)
		set_err(q, "log spool over its cap (%" PRIu64 " bytes): %" PRIu64
		        " oldest queued lines dropped", q->spool_cap, q->dropped_lines - before);
	spool_reclaim(q);
	if (q->spool_live + reclen > q->spool_cap) {
		set_err(q, "log spool full (%" PRIu64 " bytes) with chunks in flight",
		        q->spool_cap);
		return CIVIS_ETOOBIG;
	}
	if (q->wr > (uint64_t)INT64_MAX - reclen) {
		set_err(q, "log spool: file offset overflow");
		return CIVIS_ESYS;
	}
	h.len = len;
	h.nlines = nlines;
	h.crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)body, len);
	h.seq = seq;
	h.first_ns = first_ns;
	h.last_ns = last_ns;
	hdr_encode(b, &h);
	iov[0].iov_base = b;
	iov[0].iov_len = sizeof b;
	iov[1].iov_base = (void *)(uintptr_t)body;
	iov[1].iov_len = len;
	if (civis__pwritev_all(q->fd, iov, 2, q->wr) != 0) {
		/* Bytes past wr are never read: the next record overwrites them. */
		set_err(q, "log spool: write of %" PRIu64 " bytes at offset %" PRIu64 " in %s: %s",
		        reclen, q->wr, q->dir, strerror(errno));
		return CIVIS_ESYS;
	}
	q->wr += reclen;
	q->spool_live += reclen;
	q->sp_chunks++;
	q->sp_lines += nlines;
	q->sp_bytes += len;
	return CIVIS_OK;
}

static int
mem_push(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
         uint64_t first_ns, uint64_t last_ns, uint64_t seq)
{
	civis_logq_chunk *c = chunk_alloc(q, len);

	if (c == NULL) {
		set_err(q, "log queue: out of memory for a chunk of %" PRIu32 " bytes", len);
		return CIVIS_ENOMEM;
	}
	memcpy(c->body, body, len);
	c->seq = seq;
	c->first_ns = first_ns;
	c->last_ns = last_ns;
	c->len = len;
	c->nlines = nlines;
	c->where = WHERE_MEM;
	c->state = ST_QUEUED;
	list_push_tail(&q->mem, c);
	q->mq_lines += nlines;
	q->mq_bytes += len;
	q->mem_used += mem_cost(len);
	if (q->mem_used > q->mem_peak)
		q->mem_peak = q->mem_used;
	return CIVIS_OK;
}

/* ---------------------------------------------------------------- public */

int
civis_logq_new(civis_logq **out, const civis_logq_opts *o, char *err, size_t errlen)
{
	const char *dir = NULL;
	civis_logq *q;
	int n;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	copy_err(err, errlen, "");
	if (o != NULL && o->spool_dir != NULL && o->spool_dir[0] != '\0')
		dir = o->spool_dir;
	if (dir == NULL) {
		dir = getenv("TMPDIR");
		if (dir == NULL || dir[0] == '\0')
			dir = "/tmp";
	}
	q = calloc(1, sizeof *q);
	if (q == NULL) {
		copy_err(err, errlen, "log queue: out of memory");
		return CIVIS_ENOMEM;
	}
	n = snprintf(q->dir, sizeof q->dir, "%s", dir);
	if (n < 0 || (size_t)n >= sizeof q->dir) {
		copy_err(err, errlen, "log queue: spool directory name too long");
		free(q);
		return CIVIS_ECONFIG;
	}
	q->mem_cap = o != NULL && o->mem_cap > 0 ? o->mem_cap : CIVIS_LOGQ_DEFAULT_MEM_CAP;
	q->spool_cap = o != NULL && o->spool_cap > 0 ? o->spool_cap
	                                             : CIVIS_LOGQ_DEFAULT_SPOOL_CAP;
	q->fd = -1;
	q->blk = DEF_BLOCK;
	q->next_seq = 1;
#ifdef CIVIS_UNITTEST
	q->ut_fail_alloc = -1;
#endif
	*out = q;
	return CIVIS_OK;
}

void
civis_logq_free(civis_logq *q)
{
	if (q == NULL)
		return;
	list_free_all(q, &q->mem);
	list_free_all(q, &q->nacked);
	list_free_all(q, &q->inflight);
	if (q->fd >= 0)
		close(q->fd);
	free(q);
}

int
civis_logq_spool_check(civis_logq *q, char *err, size_t errlen)
{
	int rc;

	copy_err(err, errlen, "");
	if (q == NULL)
		return CIVIS_EINVAL;
	rc = spool_open(q);
	if (rc != CIVIS_OK)
		copy_err(err, errlen, q->err);
	return rc;
}

int
civis_logq_push(civis_logq *q, const char *body, size_t len, uint32_t nlines,
                uint64_t first_ns, uint64_t last_ns)
{
	char cause[CIVIS_LOGQ_ERRLEN];
	uint64_t seq;
	int want_mem, rc;

	if (q == NULL)
		return CIVIS_EINVAL;
	q->pushed_chunks++;
	q->pushed_lines += nlines;
	if (body == NULL || len == 0) {
		rc = CIVIS_EINVAL;
		set_err(q, "empty log chunk");
		goto dropped;
	}
	if (len > CIVIS_LOGQ_MAX_CHUNK) {
		rc = CIVIS_ETOOBIG;
		set_err(q, "log chunk of %zu bytes is over the %u-byte cap", len,
		        (unsigned)CIVIS_LOGQ_MAX_CHUNK);
		goto dropped;
	}
	seq = q->next_seq++;
	want_mem = q->sp_chunks == 0 && q->nacked.n == 0 &&
	           q->mem_used + mem_cost((uint32_t)len) <= q->mem_cap;
	if (want_mem &&
	    mem_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq) == CIVIS_OK)
		return CIVIS_OK;
	rc = spool_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq);
	if (rc == CIVIS_OK)
		return CIVIS_OK;
	/* The spool failed (disk full, unusable directory): memory if it fits.
	 * Order still holds, the sequence number decides. last_error keeps why. */
	if (!want_mem && q->mem_used + mem_cost((uint32_t)len) <= q->mem_cap) {
		if (snprintf(cause, sizeof cause, "%s", q->err) < 0)
			cause[0] = '\0';
		if (mem_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq) == CIVIS_OK) {
			set_err(q, "%s (chunk kept in memory)", cause);
			return CIVIS_OK;
		}
	}
dropped:
	count_drop(q, 1, nlines);
	if (snprintf(cause, sizeof cause, "%s", q->err) < 0)
		cause[0] = '\0';
	set_err(q, "log chunk of %" PRIu32 " lines dropped: %s", nlines, cause);
	return rc;
}

int
civis_logq_take(civis_logq *q, civis_logq_chunk **out)
{
	civis_logq_chunk *m, *k, *c;
	struct rec_hdr h = { 0, 0, 0, 0, 0, 0 };
	uint64_t off;
	int rc, have_disk;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	if (q == NULL)
		return CIVIS_EINVAL;
	if (q->inflight.n >= CIVIS_LOGQ_MAX_INFLIGHT)
		return CIVIS_ETOOBIG;
	rc = spool_head(q, &h);
	if (rc == CIVIS_EPROTO || rc == CIVIS_ESYS)
		return rc;
	have_disk = rc == CIVIS_OK;
	m = q->mem.head;
	k = q->nacked.head;
	if (m != NULL && (k == NULL || m->seq < k->seq) && (!have_disk || m->seq < h.seq)) {
		list_remove(&q->mem, m);
		q->mq_lines -= m->nlines;
		q->mq_bytes -= m->len;
		c = m;
	} else if (k != NULL && (!have_disk || k->seq < h.seq)) {
		list_remove(&q->nacked, k);
		q->nk_lines -= k->nlines;
		q->nk_bytes -= k->len;
		q->inflight_disk++;
		c = k;
	} else if (have_disk) {
		off = q->rd;
		rc = spool_check_body(q, off, &h);
		if (rc == CIVIS_ESYS)
			return rc;
		if (rc == CIVIS_EPROTO) {
			spool_advance(q, &h);
			q->spool_live -= HDR_SIZE + (uint64_t)h.len;
			count_drop(q, 1, h.nlines);
			set_err(q, "log spool corrupt at offset %" PRIu64 " (body checksum "
			        "mismatch): 1 chunk (%" PRIu32 " lines) dropped", off, h.nlines);
			spool_release_record(q, off, HDR_SIZE + (uint64_t)h.len);
			spool_reclaim(q);
			return CIVIS_EPROTO;
		}
		c = chunk_alloc(q, 0);
		if (c == NULL) {
			set_err(q, "log queue: out of memory");
			return CIVIS_ENOMEM;
		}
		c->seq = h.seq;
		c->first_ns = h.first_ns;
		c->last_ns = h.last_ns;
		c->off = off;
		c->len = h.len;
		c->nlines = h.nlines;
		c->crc = h.crc;
		c->where = WHERE_DISK;
		spool_advance(q, &h);
		q->inflight_disk++;
	} else {
		return CIVIS_ENOTFOUND;
	}
	c->state = ST_INFLIGHT;
	list_push_tail(&q->inflight, c);
	q->if_lines += c->nlines;
	q->if_bytes += c->len;
	*out = c;
	return CIVIS_OK;
}

static int
take_from_inflight(civis_logq *q, civis_logq_chunk *c)
{
	if (q == NULL || c == NULL || c->state != ST_INFLIGHT)
		return 0;
	list_remove(&q->inflight, c);
	q->if_lines -= c->nlines;
	q->if_bytes -= c->len;
	if (c->where == WHERE_DISK)
		q->inflight_disk--;
	return 1;
}

void
civis_logq_ack(civis_logq *q, civis_logq_chunk *c)
{
	uint64_t reclen;

	if (!take_from_inflight(q, c))
		return;
	q->acked_chunks++;
	q->acked_lines += c->nlines;
	if (c->where == WHERE_MEM) {
		q->mem_used -= mem_cost(c->len);
		chunk_release(q, c);
		return;
	}
	reclen = HDR_SIZE + (uint64_t)c->len;
	q->spool_live -= reclen;
	spool_release_record(q, c->off, reclen);
	chunk_release(q, c);
	spool_reclaim(q);
}

void
civis_logq_nack(civis_logq *q, civis_logq_chunk *c)
{
	if (!take_from_inflight(q, c))
		return;
	c->state = ST_QUEUED;
	if (c->where == WHERE_MEM) {
		list_insert_sorted(&q->mem, c);
		q->mq_lines += c->nlines;
		q->mq_bytes += c->len;
	} else {
		list_insert_sorted(&q->nacked, c);
		q->nk_lines += c->nlines;
		q->nk_bytes += c->len;
	}
}

size_t
civis_logq_chunk_len(const civis_logq_chunk *c)
{
	return c != NULL ? c->len : 0;
}

uint32_t
civis_logq_chunk_lines(const civis_logq_chunk *c)
{
	return c != NULL ? c->nlines : 0;
}

uint64_t
civis_logq_chunk_first_ns(const civis_logq_chunk *c)
{
	return c != NULL ? c->first_ns : 0;
}

uint64_t
civis_logq_chunk_last_ns(const civis_logq_chunk *c)
{
	return c != NULL ? c->last_ns : 0;
}

const char *
civis_logq_chunk_mem(const civis_logq_chunk *c)
{
	return c != NULL && c->where == WHERE_MEM ? c->body : NULL;
}

int
civis_logq_chunk_read(civis_logq *q, const civis_logq_chunk *c, size_t off,
                      void *buf, size_t n, size_t *got)
{
	size_t want;

	if (got == NULL)
		return CIVIS_EINVAL;
	*got = 0;
	if (q == NULL || c == NULL || (buf == NULL && n > 0))
		return CIVIS_EINVAL;
	if (off >= c->len)
		return CIVIS_OK;
	want = c->len - off < n ? c->len - off : n;
	if (c->where == WHERE_MEM) {
		memcpy(buf, c->body + off, want); /* NOLINT(clang-analyzer-core.NonNullParamChecker): a memory chunk always has a body */
		*got = want;
		return CIVIS_OK;
	}
	if (q->fd < 0)
		return CIVIS_EINVAL;
	if (civis__pread_all(q->fd, buf, want, c->off + HDR_SIZE + off, got) != 0) {
		set_err(q, "log spool: read at offset %" PRIu64 ": %s",
		        c->off + HDR_SIZE + off, strerror(errno));
		return CIVIS_ESYS;
	}
	if (*got < want) {
		set_err(q, "log spool corrupt: file shorter than the record at offset %" PRIu64,
		        c->off);
		return CIVIS_EPROTO;
	}
	return CIVIS_OK;
}

void
civis_logq_stats(const civis_logq *q, struct civis_logq_stats *out)
{
	struct stat st;

	if (out == NULL)
		return;
	memset(out, 0, sizeof *out);
	if (q == NULL)
		return;
	out->mem_chunks = q->mem.n;
	out->mem_lines = q->mq_lines;
	out->mem_bytes = q->mq_bytes;
	out->disk_chunks = q->sp_chunks + q->nacked.n;
	out->disk_lines = q->sp_lines + q->nk_lines;
	out->disk_bytes = q->sp_bytes + q->nk_bytes;
	out->inflight_chunks = q->inflight.n;
	out->inflight_lines = q->if_lines;
	out->inflight_bytes = q->if_bytes;
	out->pushed_chunks = q->pushed_chunks;
	out->pushed_lines = q->pushed_lines;
	out->acked_chunks = q->acked_chunks;
	out->acked_lines = q->acked_lines;
	out->dropped_chunks = q->dropped_chunks;
	out->dropped_lines = q->dropped_lines;
	out->dropped_lines_unreported = q->dropped_unreported;
	out->mem_used = q->mem_used;
	out->mem_peak = q->mem_peak;
	out->mem_cap = q->mem_cap;
	out->spool_used = q->spool_live;
	out->spool_cap = q->spool_cap;
	out->spool_open = q->fd >= 0;
	out->spool_punch = q->fd >= 0 && q->punch;
	if (q->fd >= 0 && fstat(q->fd, &st) == 0) {
		out->spool_size = (uint64_t)st.st_size;
		out->spool_disk = (uint64_t)st.st_blocks * 512u;
	}
}

uint64_t
civis_logq_take_dropped(civis_logq *q)
{
	uint64_t n;

	if (q == NULL)
		return 0;
	n = q->dropped_unreported;
	q->dropped_unreported = 0;
	return n;
}

const char *
civis_logq_last_error(const civis_logq *q)
{
	return q != NULL ? q->err : "";
}

#ifdef CIVIS_UNITTEST
int
civis__logq_spool_fd(const civis_logq *q)
{
	return q->fd;
}

void
civis__logq_alloc_counts(const civis_logq *q, uint64_t *live, uint64_t *peak)
{
	*live = q->structs_live;
	*peak = q->structs_peak;
}

void
civis__logq_fail_alloc(civis_logq *q, int n)
{
	q->ut_fail_alloc = n;
}

void
civis__logq_force_mkstemp(civis_logq *q, int on)
{
	q->ut_no_tmpfile = on;
}
#endif
