/* logqueue.c: unsent log chunks, in order: memory up to a cap, then an
 * append-only spool file (logqueue_spool.c), sent oldest first.
 *
 * Every chunk gets a sequence number at push; the queue hands out the lowest
 * one among three sorted sources: the memory list, the list of disk chunks
 * that came back by nack, and the spool's unsent region [rd, wr). So order
 * holds whatever mix of memory, disk, nacks and out-of-order acks happens. */
#include "logqueue_int.h"
#include "civis/civis.h"
#include "civis/logbatch.h"
#include "fileio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

void
civis__logq_err(civis_logq *q, const char *fmt, ...)
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

void
civis__logq_list_remove(struct chunk_list *l, civis_logq_chunk *c)
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

civis_logq_chunk *
civis__logq_chunk_alloc(civis_logq *q, size_t body_len)
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

void
civis__logq_chunk_release(civis_logq *q, civis_logq_chunk *c)
{
	free(c);
	q->structs_live--;
}

static uint64_t
mem_cost(uint32_t len)
{
	return (uint64_t)sizeof(civis_logq_chunk) + len;
}

void
civis__logq_count_drop(civis_logq *q, uint64_t chunks, uint64_t lines)
{
	q->dropped_chunks += chunks;
	q->dropped_lines += lines;
	q->dropped_unreported += lines;
}

/* ---------------------------------------------------------------- drop notes */

#define NOTE_ROOM  256u                 /* body of a note, at most */
#define NOTE_CAP   (64u << 10)          /* memory of all live notes */
#define NOTE_COST  ((uint64_t)sizeof(civis_logq_chunk) + NOTE_ROOM)

/* The body of note c saying q->note_lines lines: CIVIS_OK or an error. */
static int
note_body(civis_logq *q, civis_logq_chunk *c, uint64_t lines)
{
	char text[128];
	const char *body;
	size_t len;
	int n, rc;

	n = snprintf(text, sizeof text, "civis-agent: %" PRIu64 " lines dropped here: spool full",
	             lines);
	if (n < 0 || (size_t)n >= sizeof text)
		return CIVIS_EINVAL;
	if (q->note_batch == NULL &&
	    (rc = civis_batch_new(&q->note_batch, 1, CIVIS_BATCH_FLOOR_BYTES + sizeof text * 6)) !=
	        CIVIS_OK)
		return rc;
	civis_batch_reset(q->note_batch);
	rc = civis_batch_add(q->note_batch, text, (size_t)n, "warn", c->first_ns);
	if (rc != CIVIS_OK)
		return rc;
	body = civis_batch_body(q->note_batch, &len);
	if (len > NOTE_ROOM)
		return CIVIS_ETOOBIG;
	memcpy(c->body, body, len);
	c->len = (uint32_t)len;
	return CIVIS_OK;
}

/* A new note for the stretch starting at chunk seq, in the memory list by
 * its seq. Without memory for it (NOTE_CAP, an allocation) the lines are
 * still counted, and reported by civis_logq_take_dropped. */
static void
note_new(civis_logq *q, uint64_t seq, uint32_t nlines, uint64_t first_ns)
{
	civis_logq_chunk *c;

	if (q->note_bytes + NOTE_COST > NOTE_CAP || (c = civis__logq_chunk_alloc(q, NOTE_ROOM)) == NULL)
		return;
	c->seq = seq;
	c->first_ns = c->last_ns = first_ns;
	c->nlines = 1;
	c->where = WHERE_MEM;
	c->state = ST_QUEUED;
	c->note = 1;
	if (note_body(q, c, nlines) != CIVIS_OK) {
		civis__logq_chunk_release(q, c);
		return;
	}
	list_insert_sorted(&q->mem, c);
	q->mq_lines += c->nlines;
	q->mq_bytes += c->len;
	q->note_bytes += NOTE_COST;
	q->note_chunks++;
	q->pushed_chunks++;
	q->pushed_lines++;
	q->note = c;
	q->note_next = seq + 1;
	q->note_lines = nlines;
}

void
civis__logq_drop(civis_logq *q, uint64_t seq, uint32_t nlines, uint64_t first_ns)
{
	civis_logq_chunk *c = q->note;
	uint32_t old;

	civis__logq_count_drop(q, 1, nlines);
	if (c != NULL && c->state == ST_QUEUED && seq == q->note_next) {
		/* The stretch goes on: the same note says more. */
		old = c->len;
		if (note_body(q, c, q->note_lines + nlines) == CIVIS_OK) {
			q->mq_bytes += c->len;
			q->mq_bytes -= old;
			q->note_lines += nlines;
			q->note_next = seq + 1;
			return;
		}
	}
	note_new(q, seq, nlines, first_ns);
}

static int
mem_push(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
         uint64_t first_ns, uint64_t last_ns, uint64_t seq)
{
	civis_logq_chunk *c = civis__logq_chunk_alloc(q, len);

	if (c == NULL) {
		civis__logq_err(q, "log queue: out of memory for a chunk of %" PRIu32 " bytes", len);
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

/* No spool (its directory is unusable): over the cap the chunk is refused,
 * not dropped, and the caller pushes it again once acks free memory. With
 * nothing in memory it is taken anyway, so the caller cannot wait forever. */
static int
memory_only(civis_logq *q, const char *body, uint32_t len, uint32_t nlines,
            uint64_t first_ns, uint64_t last_ns)
{
	int rc;

	if (q->mem_used > 0 || q->nacked.n > 0 || q->sp_chunks > 0) {
		q->pushed_chunks--;
		q->pushed_lines -= nlines;
		civis__logq_err(q, "log queue: memory full (%" PRIu64 " of %zu bytes) and no spool "
		                "(%s: %s): push again after acknowledgements", q->mem_used,
		                q->mem_cap, q->dir, strerror(q->spool_gone));
		return CIVIS_EFULL;
	}
	rc = mem_push(q, body, len, nlines, first_ns, last_ns, q->next_seq++);
	if (rc != CIVIS_OK) {
		civis__logq_drop(q, q->next_seq - 1, nlines, first_ns);
		civis__logq_err(q, "log chunk of %" PRIu32 " lines dropped: out of memory", nlines);
	}
	return rc;
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

const char *
civis_logq_dir(const civis_logq *q)
{
	return q != NULL ? q->dir : "";
}

void
civis_logq_free(civis_logq *q)
{
	if (q == NULL)
		return;
	list_free_all(q, &q->mem);
	list_free_all(q, &q->nacked);
	list_free_all(q, &q->inflight);
	civis_batch_free(q->note_batch);
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
	rc = civis__logq_spool_open(q);
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
		civis__logq_err(q, "empty log chunk");
		goto dropped;
	}
	if (len > CIVIS_LOGQ_MAX_CHUNK) {
		rc = CIVIS_ETOOBIG;
		civis__logq_err(q, "log chunk of %zu bytes is over the %u-byte cap", len,
		                (unsigned)CIVIS_LOGQ_MAX_CHUNK);
		goto dropped;
	}
	want_mem = q->sp_chunks == 0 && q->nacked.n == 0 &&
	           q->mem_used + mem_cost((uint32_t)len) <= q->mem_cap;
	if (!want_mem && q->spool_gone)
		return memory_only(q, body, (uint32_t)len, nlines, first_ns, last_ns);
	seq = q->next_seq++;
	if (want_mem &&
	    mem_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq) == CIVIS_OK)
		return CIVIS_OK;
	rc = civis__logq_spool_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq, 0);
	if (rc == CIVIS_OK)
		return CIVIS_OK;
	if (!want_mem && q->spool_gone) {
		q->next_seq--;      /* nothing took seq: the retry gets it */
		return memory_only(q, body, (uint32_t)len, nlines, first_ns, last_ns);
	}
	/* The spool failed (disk full, unusable directory): memory if it fits.
	 * Order still holds, the sequence number decides. last_error keeps why. */
	if (!want_mem && q->mem_used + mem_cost((uint32_t)len) <= q->mem_cap) {
		if (snprintf(cause, sizeof cause, "%s", q->err) < 0)
			cause[0] = '\0';
		if (mem_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq) == CIVIS_OK) {
			civis__logq_err(q, "%s (chunk kept in memory)", cause);
			return CIVIS_OK;
		}
	}
	/* The disk is full: the oldest queued spooled chunks make room, so
	 * what is lost is one stretch and the end of the output stays. */
	if (rc == CIVIS_ESYS && (q->spool_errno == ENOSPC || q->spool_errno == EDQUOT)) {
		rc = civis__logq_spool_push(q, body, (uint32_t)len, nlines, first_ns, last_ns, seq, 1);
		if (rc == CIVIS_OK)
			return CIVIS_OK;
	}
	civis__logq_drop(q, seq, nlines, first_ns);
	goto failed;
dropped:
	civis__logq_count_drop(q, 1, nlines);
failed:
	if (snprintf(cause, sizeof cause, "%s", q->err) < 0)
		cause[0] = '\0';
	civis__logq_err(q, "log chunk of %" PRIu32 " lines dropped: %s", nlines, cause);
	return rc;
}

int
civis_logq_take(civis_logq *q, civis_logq_chunk **out)
{
	civis_logq_chunk *m, *k, *c;
	struct civis__logq_rec h = { 0, 0, 0, 0, 0, 0 };
	int rc, have_disk;

	if (out == NULL)
		return CIVIS_EINVAL;
	*out = NULL;
	if (q == NULL)
		return CIVIS_EINVAL;
	if (q->inflight.n >= CIVIS_LOGQ_MAX_INFLIGHT)
		return CIVIS_ETOOBIG;
	rc = civis__logq_spool_head(q, &h);
	if (rc == CIVIS_EPROTO || rc == CIVIS_ESYS)
		return rc;
	have_disk = rc == CIVIS_OK;
	m = q->mem.head;
	k = q->nacked.head;
	if (m != NULL && (k == NULL || m->seq < k->seq) && (!have_disk || m->seq < h.seq)) {
		civis__logq_list_remove(&q->mem, m);
		q->mq_lines -= m->nlines;
		q->mq_bytes -= m->len;
		c = m;
	} else if (k != NULL && (!have_disk || k->seq < h.seq)) {
		civis__logq_list_remove(&q->nacked, k);
		q->nk_lines -= k->nlines;
		q->nk_bytes -= k->len;
		q->inflight_disk++;
		c = k;
	} else if (have_disk) {
		rc = civis__logq_spool_take(q, &h, &c);
		if (rc != CIVIS_OK)
			return rc;
	} else {
		return CIVIS_ENOTFOUND;
	}
	if (c == q->note)
		q->note = NULL;     /* on its way: a later stretch gets its own */
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
	civis__logq_list_remove(&q->inflight, c);
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
		if (c->note)
			q->note_bytes -= NOTE_COST;
		else
			q->mem_used -= mem_cost(c->len);
		civis__logq_chunk_release(q, c);
		return;
	}
	reclen = HDR_SIZE + (uint64_t)c->len;
	q->spool_live -= reclen;
	civis__logq_spool_release(q, c->off, reclen);
	civis__logq_chunk_release(q, c);
	civis__logq_spool_reclaim(q);
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
	return civis__logq_spool_read(q, c, off, buf, want, got);
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
	out->note_chunks = q->note_chunks;
	out->mem_used = q->mem_used;
	out->mem_peak = q->mem_peak;
	out->mem_cap = q->mem_cap;
	out->spool_used = q->spool_live;
	out->spool_cap = q->spool_cap;
	out->spool_open = q->fd >= 0;
	out->spool_punch = q->fd >= 0 && q->punch;
	out->spool_gone = q->spool_gone;
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
void
civis__logq_disk_size(civis_logq *q, uint64_t bytes)
{
	q->ut_disk_cap = bytes;
}
#endif
