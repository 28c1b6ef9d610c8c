/* logqueue_spool.c: the log queue's spool file.
 *
 * Spool record: a 48-byte header then the body.
 *   0 magic "CLGQ"  4 body length  8 seq  16 first_ns  24 last_ns
 *  32 nlines  36 crc32(body)  40 reserved (0)  44 crc32(header bytes 0..43)
 * Only offsets live in memory for queued records; a take preads the header.
 * Space is given back with FALLOC_FL_PUNCH_HOLE: whole blocks inside a
 * record at once when it is acked or dropped, and everything below the
 * lowest live record as it advances; when nothing is left on disk the file
 * is truncated to 0 and the offsets restart. */
#include "logqueue_int.h"
#include "civis/civis.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#define HDR_MAGIC  0x51474c43u          /* "CLGQ" little-endian */
#define CRC_BUF    (32u << 10)          /* stack buffer for body checks */

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
hdr_encode(unsigned char *b, const struct civis__logq_rec *h)
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

int
civis__logq_spool_open(civis_logq *q)
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
	if (q->spool_gone) {
		/* said once already: not tried again for every chunk */
		civis__logq_err(q, "log spool: no writable directory (%s: %s)", q->dir,
		                strerror(q->spool_gone));
		return CIVIS_ESYS;
	}
	errno = 0;
	rc = civis__tmpfile(q->dir, "civis-logq", flags, &fd, err, sizeof err);
	if (rc != CIVIS_OK) {
		int e = errno;

		/* A full disk may empty again; a read-only, forbidden or missing
		 * directory will not during the run. */
		if (rc == CIVIS_ESYS && (e == EROFS || e == EACCES || e == EPERM || e == ENOENT ||
		                         e == ENOTDIR))
			q->spool_gone = e;
		civis__logq_err(q, "log spool: %s", err);
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
void
civis__logq_spool_release(civis_logq *q, uint64_t off, uint64_t reclen)
{
	uint64_t lo = (off + q->blk - 1) & ~(q->blk - 1);
	uint64_t hi = (off + reclen) & ~(q->blk - 1);

	if (hi > lo)
		spool_punch(q, lo, hi - lo);
}

/* Truncate when nothing lives on disk, else punch below the lowest live record. */
void
civis__logq_spool_reclaim(civis_logq *q)
{
	civis_logq_chunk *c;
	uint64_t low;

	if (q->fd < 0)
		return;
	if (q->rd == q->wr && q->inflight_disk == 0 && q->nacked.n == 0) {
		if (q->wr > 0 && ftruncate(q->fd, 0) != 0)
			civis__logq_err(q, "log spool: truncate: %s", strerror(errno));
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
	civis__logq_count_drop(q, chunks, lines);
	civis__logq_err(q, "log spool corrupt at offset %" PRIu64 " (%s): %" PRIu64
	                " queued chunks (%" PRIu64 " lines) dropped", at, why, chunks, lines);
	q->spool_live -= q->wr - q->rd;
	q->rd = q->wr;
	q->sp_chunks = q->sp_lines = q->sp_bytes = 0;
	q->head_ok = 0;
	civis__logq_spool_reclaim(q);
}

/* The header of the oldest queued record: CIVIS_OK, CIVIS_ENOTFOUND when
 * none, CIVIS_ESYS (read error, nothing changed), CIVIS_EPROTO (corrupt:
 * the queued records were dropped). */
int
civis__logq_spool_head(civis_logq *q, struct civis__logq_rec *out)
{
	unsigned char b[HDR_SIZE];
	struct civis__logq_rec h;
	size_t got;

	if (q->fd < 0 || q->rd >= q->wr)
		return CIVIS_ENOTFOUND;
	if (q->head_ok) {
		*out = q->head;
		return CIVIS_OK;
	}
	if (civis__pread_all(q->fd, b, sizeof b, q->rd, &got) != 0) {
		civis__logq_err(q, "log spool: read at offset %" PRIu64 ": %s", q->rd, strerror(errno));
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
spool_advance(civis_logq *q, const struct civis__logq_rec *h)
{
	q->rd += HDR_SIZE + (uint64_t)h->len;
	q->sp_chunks--;
	q->sp_lines -= h->nlines;
	q->sp_bytes -= h->len;
	q->head_ok = 0;
}

/* crc32 of a record's body against its header: CIVIS_OK, CIVIS_EPROTO, CIVIS_ESYS. */
static int
spool_check_body(civis_logq *q, uint64_t off, const struct civis__logq_rec *h)
{
	unsigned char buf[CRC_BUF];
	uLong crc = crc32(0L, Z_NULL, 0);
	uint64_t pos = off + HDR_SIZE, end = pos + h->len;
	size_t want, got;

	while (pos < end) {
		want = end - pos < sizeof buf ? (size_t)(end - pos) : sizeof buf;
		if (civis__pread_all(q->fd, buf, want, pos, &got) != 0) {
			civis__logq_err(q, "log spool: read at offset %" PRIu64 ": %s", pos,
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

	civis__logq_list_remove(&q->nacked, c);
	q->nk_lines -= c->nlines;
	q->nk_bytes -= c->len;
	q->spool_live -= reclen;
	civis__logq_drop(q, c->seq, c->nlines, c->first_ns);
	civis__logq_spool_release(q, c->off, reclen);
	civis__logq_chunk_release(q, c);
}

/* Oldest queued spooled chunk out (for the cap). 0 when there was none. */
static int
drop_spool_oldest(civis_logq *q)
{
	struct civis__logq_rec h;
	uint64_t off;
	int rc;

	/* A returned disk chunk is always older than the records still at rd. */
	if (q->nacked.n > 0) {
		drop_nacked_head(q);
		return 1;
	}
	rc = civis__logq_spool_head(q, &h);
	if (rc == CIVIS_EPROTO)
		return 1;              /* everything queued was dropped as corrupt */
	if (rc != CIVIS_OK)
		return 0;
	off = q->rd;
	spool_advance(q, &h);
	q->spool_live -= HDR_SIZE + (uint64_t)h.len;
	civis__logq_drop(q, h.seq, h.nlines, h.first_ns);
	civis__logq_spool_release(q, off, HDR_SIZE + (uint64_t)h.len);
	return 1;
}

#ifdef CIVIS_UNITTEST
static int
ut_disk_full(civis_logq *q, uint64_t reclen)
{
	struct stat st;

	if (q->ut_disk_cap == 0 || fstat(q->fd, &st) != 0 ||
	    (uint64_t)st.st_blocks * 512u + reclen <= q->ut_disk_cap)
		return 0;
	errno = ENOSPC;
	return 1;
}
#else
#define ut_disk_full(q, reclen) 0
#endif

/* Write the record at wr. 0, or -1 with q->spool_errno set and the bytes a
 * partial write left past wr given back (nothing past wr is ever read). */
static int
spool_write(civis_logq *q, const struct civis__logq_rec *h, const char *body)
{
	unsigned char b[HDR_SIZE];
	struct iovec iov[2];
	uint64_t reclen = HDR_SIZE + (uint64_t)h->len;

	hdr_encode(b, h);
	iov[0].iov_base = b;
	iov[0].iov_len = sizeof b;
	iov[1].iov_base = (void *)(uintptr_t)body;
	iov[1].iov_len = h->len;
	q->spool_errno = 0;
	if (!ut_disk_full(q, reclen) && civis__pwritev_all(q->fd, iov, 2, q->wr) == 0)
		return 0;
	q->spool_errno = errno;
	civis__logq_err(q, "log spool: write of %" PRIu64 " bytes at offset %" PRIu64 " in %s: %s",
	                reclen, q->wr, q->dir, strerror(q->spool_errno));
	if (ftruncate(q->fd, (off_t)q->wr) != 0) {
		/* the partial bytes stay past wr: nothing reads them, and the
		 * next record overwrites them */
	}
	return -1;
}

static int
no_space(int e)
{
	return e == ENOSPC || e == EDQUOT;
}

int
civis__logq_spool_push(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
                       uint64_t first_ns, uint64_t last_ns, uint64_t seq, int make_room)
{
	struct civis__logq_rec h;
	uint64_t reclen = HDR_SIZE + (uint64_t)len, before, corruptions;
	int rc;

	if (reclen > q->spool_cap) {
		civis__logq_err(q, "log chunk of %" PRIu32 " bytes is larger than the spool cap "
		                "(%" PRIu64 " bytes)", len, q->spool_cap);
		return CIVIS_ETOOBIG;
	}
	rc = civis__logq_spool_open(q);
	if (rc != CIVIS_OK)
		return rc;
	before = q->dropped_lines;
	corruptions = q->corruptions;
	while (q->spool_live + reclen > q->spool_cap)
		if (!drop_spool_oldest(q))
			break;
	if (q->dropped_lines != before && q->corruptions == corruptions)
		civis__logq_err(q, "log spool over its cap (%" PRIu64 " bytes): %" PRIu64
		                " oldest queued lines dropped", q->spool_cap, q->dropped_lines - before);
	civis__logq_spool_reclaim(q);
	if (q->spool_live + reclen > q->spool_cap) {
		civis__logq_err(q, "log spool full (%" PRIu64 " bytes) with chunks in flight",
		                q->spool_cap);
		return CIVIS_ETOOBIG;
	}
	if (q->wr > (uint64_t)INT64_MAX - reclen) {
		civis__logq_err(q, "log spool: file offset overflow");
		return CIVIS_ESYS;
	}
	h.len = len;
	h.nlines = nlines;
	h.crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), (const Bytef *)body, len);
	h.seq = seq;
	h.first_ns = first_ns;
	h.last_ns = last_ns;
	before = q->dropped_lines;
	corruptions = q->corruptions;
	while (spool_write(q, &h, body) != 0) {
		/* The disk is full: make room as the cap would, oldest first. */
		if (!make_room || !no_space(q->spool_errno) || !drop_spool_oldest(q))
			return CIVIS_ESYS;
		civis__logq_spool_reclaim(q);
		if (q->wr > (uint64_t)INT64_MAX - reclen) {
			civis__logq_err(q, "log spool: file offset overflow");
			return CIVIS_ESYS;
		}
	}
	if (q->dropped_lines != before && q->corruptions == corruptions)
		civis__logq_err(q, "log spool: no space left in %s: %" PRIu64
		                " oldest queued lines dropped", q->dir, q->dropped_lines - before);
	q->wr += reclen;
	q->spool_live += reclen;
	q->sp_chunks++;
	q->sp_lines += nlines;
	q->sp_bytes += len;
	return CIVIS_OK;
}

/* The record at rd, whose header is h, out of the spool as a disk chunk
 * (not yet on the in-flight list). CIVIS_EPROTO: its body was corrupt, it
 * was dropped and counted. CIVIS_ESYS, CIVIS_ENOMEM: nothing changed. */
int
civis__logq_spool_take(civis_logq *q, const struct civis__logq_rec *hp, civis_logq_chunk **out)
{
	struct civis__logq_rec h = *hp;
	civis_logq_chunk *c;
	uint64_t off;
	int rc;

	off = q->rd;
	rc = spool_check_body(q, off, &h);
	if (rc == CIVIS_ESYS)
		return rc;
	if (rc == CIVIS_EPROTO) {
		spool_advance(q, &h);
		q->spool_live -= HDR_SIZE + (uint64_t)h.len;
		civis__logq_count_drop(q, 1, h.nlines);
		civis__logq_err(q, "log spool corrupt at offset %" PRIu64 " (body checksum "
		                "mismatch): 1 chunk (%" PRIu32 " lines) dropped", off, h.nlines);
		civis__logq_spool_release(q, off, HDR_SIZE + (uint64_t)h.len);
		civis__logq_spool_reclaim(q);
		return CIVIS_EPROTO;
	}
	c = civis__logq_chunk_alloc(q, 0);
	if (c == NULL) {
		civis__logq_err(q, "log queue: out of memory");
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
	*out = c;
	return CIVIS_OK;
}

/* want bytes of disk chunk c's body from off (want <= its length - off). */
int
civis__logq_spool_read(civis_logq *q, const civis_logq_chunk *c, size_t off, void *buf,
                       size_t want, size_t *got)
{
	if (q->fd < 0)
		return CIVIS_EINVAL;
	if (civis__pread_all(q->fd, buf, want, c->off + HDR_SIZE + off, got) != 0) {
		civis__logq_err(q, "log spool: read at offset %" PRIu64 ": %s",
		                c->off + HDR_SIZE + off, strerror(errno));
		return CIVIS_ESYS;
	}
	if (*got < want) {
		civis__logq_err(q, "log spool corrupt: file shorter than the record at offset %" PRIu64,
		                c->off);
		return CIVIS_EPROTO;
	}
	return CIVIS_OK;
}

