/* test_logqueue.c: order, caps, drops, spool reclaim and corruption of the log queue. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "civis/logbatch.h"
#include "civis/logqueue.h"
#include "../../lib/src/logqueue_int.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define BODY_MAX (2u << 20)

struct fixture {
	char dir[64];
	civis_logq *q;
};

/* Body of chunk `id`: deterministic bytes, length from len_of(id). */
static size_t
body_len_of(uint32_t id, size_t base, size_t spread)
{
	return base + (size_t)((id * 2654435761u) % (uint32_t)(spread + 1));
}

static size_t
make_body(uint32_t id, size_t len, char *buf)
{
	uint32_t x = id * 2246822519u + 1u;
	size_t i;
	int n;

	for (i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (char)('a' + (x >> 16) % 26);
	}
	n = snprintf(buf, len, "#%u#", id);   /* id readable at the start */
	if (n > 0 && (size_t)n < len)
		buf[n] = '|';                     /* snprintf's NUL replaced */
	return len;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/lqtest-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	civis_logq_free(f->q);
	/* The spool is unlinked from its creation: the directory must be empty. */
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

static civis_logq *
open_q(struct fixture *f, size_t mem_cap, uint64_t spool_cap)
{
	civis_logq_opts o;
	char err[256];

	memset(&o, 0, sizeof o);
	o.mem_cap = mem_cap;
	o.spool_cap = spool_cap;
	o.spool_dir = f->dir;
	assert_int_equal(civis_logq_new(&f->q, &o, err, sizeof err), CIVIS_OK);
	assert_string_equal(err, "");
	return f->q;
}

static int
push_id(civis_logq *q, uint32_t id, size_t len)
{
	static char buf[BODY_MAX];

	make_body(id, len, buf);
	return civis_logq_push(q, buf, len, id, (uint64_t)id * 1000u, (uint64_t)id * 1000u + 999u);
}

/* Read the chunk through chunk_read in pieces of `piece` bytes (the libcurl
 * read callback pattern) and compare with the body of `id`. */
static void
check_chunk(civis_logq *q, const civis_logq_chunk *c, uint32_t id, size_t len, size_t piece)
{
	static char want[BODY_MAX], got[BODY_MAX];
	size_t off = 0, n;

	assert_int_equal(civis_logq_chunk_lines(c), id);
	assert_int_equal(civis_logq_chunk_len(c), len);
	assert_int_equal(civis_logq_chunk_first_ns(c), (uint64_t)id * 1000u);
	assert_int_equal(civis_logq_chunk_last_ns(c), (uint64_t)id * 1000u + 999u);
	make_body(id, len, want);
	for (;;) {
		size_t ask = piece < sizeof got - off ? piece : sizeof got - off;

		assert_int_equal(civis_logq_chunk_read(q, c, off, got + off, ask, &n), CIVIS_OK);
		if (n == 0)
			break;
		off += n;
	}
	assert_int_equal(off, len);
	assert_memory_equal(got, want, len);
	if (civis_logq_chunk_mem(c) != NULL)
		assert_memory_equal(civis_logq_chunk_mem(c), want, len);
}

/* pushed = acked + dropped + queued + in flight, in lines and chunks. */
static void
check_books(civis_logq *q)
{
	struct civis_logq_stats s;

	civis_logq_stats(q, &s);
	assert_int_equal(s.pushed_lines, s.acked_lines + s.dropped_lines + s.mem_lines +
	                                 s.disk_lines + s.inflight_lines);
	assert_int_equal(s.pushed_chunks, s.acked_chunks + s.dropped_chunks + s.mem_chunks +
	                                  s.disk_chunks + s.inflight_chunks);
	assert_true(s.mem_used <= s.mem_cap);
	assert_true(s.mem_peak <= s.mem_cap);
	assert_true(s.spool_used <= s.spool_cap);
}

static size_t
std_len(uint32_t id)
{
	return body_len_of(id, 100, 400);
}

static void
take_check_ack_len(civis_logq *q, uint32_t id, size_t len)
{
	civis_logq_chunk *c;

	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	check_chunk(q, c, id, len, 13);
	civis_logq_ack(q, c);
}

static void
take_check_ack(civis_logq *q, uint32_t id)
{
	take_check_ack_len(q, id, std_len(id));
}

/* ---------------------------------------------------------------- drop notes */

#define MAXSEEN 4096

/* What came out of the queue, in take order: a data chunk (its id) or a
 * drop note (the lines it says were dropped). */
struct seen {
	uint32_t id;              /* 0 for a note */
	uint64_t note_lines;
	uint64_t first_ns, last_ns;
};

/* A note's body: one message "civis-agent: N lines dropped here: spool full"
 * at level warn, createdAt = its first_ns. Returns N. */
static uint64_t
parse_note(civis_logq *q, const civis_logq_chunk *c)
{
	char body[1024], want[1024], ts[CIVIS_TS_LEN];
	unsigned long long n = 0;
	const char *m;
	size_t got;
	int k;

	assert_true(civis_logq_chunk_len(c) < sizeof body);
	assert_int_equal(civis_logq_chunk_read(q, c, 0, body, sizeof body - 1, &got), CIVIS_OK);
	body[got] = '\0';
	assert_int_equal(civis_logq_chunk_lines(c), 1);
	assert_int_equal(civis_logq_chunk_first_ns(c), civis_logq_chunk_last_ns(c));
	m = strstr(body, "civis-agent: ");
	assert_non_null(m);
	assert_int_equal(sscanf(m, "civis-agent: %llu lines dropped here: spool full\"", &n), 1);
	assert_int_equal(civis_ts_format(civis_logq_chunk_first_ns(c), ts, sizeof ts), CIVIS_OK);
	k = snprintf(want, sizeof want, "{\"messages\":[{\"message\":\"civis-agent: %llu lines "
	             "dropped here: spool full\",\"level\":\"warn\",\"createdAt\":\"%s\"}]}", n, ts);
	assert_true(k > 0 && (size_t)k < sizeof want);
	assert_string_equal(body, want);
	return n;
}

/* The next chunk is a drop note for n lines at createdAt at_ns: ack it. */
static void
take_note(civis_logq *q, uint64_t n, uint64_t at_ns)
{
	civis_logq_chunk *c;

	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	assert_int_equal(parse_note(q, c), n);
	assert_int_equal(civis_logq_chunk_first_ns(c), at_ns);
	civis_logq_ack(q, c);
}

/* Take, check and ack everything queued, appending to seen[*n]. */
static void
drain_seen(civis_logq *q, struct seen *seen, size_t *n)
{
	civis_logq_chunk *c;
	char head;
	size_t got;

	while (civis_logq_take(q, &c) == CIVIS_OK) {
		struct seen *e = &seen[*n];

		assert_true(*n < MAXSEEN);
		memset(e, 0, sizeof *e);
		e->first_ns = civis_logq_chunk_first_ns(c);
		e->last_ns = civis_logq_chunk_last_ns(c);
		assert_int_equal(civis_logq_chunk_read(q, c, 0, &head, 1, &got), CIVIS_OK);
		if (head == '{') {
			e->note_lines = parse_note(q, c);
		} else {
			e->id = civis_logq_chunk_lines(c);
			check_chunk(q, c, e->id, civis_logq_chunk_len(c), 4096);
		}
		civis_logq_ack(q, c);
		(*n)++;
	}
}

/* The property of issue 12 point 12, for chunks pushed as ids 1..last
 * (nlines = id, createdAt id*1000 .. id*1000+999):
 * - sorted by createdAt, the data chunks come in id order (nothing out of
 *   order) and each id at most once;
 * - every id missing between two kept ones (or after the last) is dropped,
 *   and each such gap holds notes, and only gaps do, whose counts add up
 *   to the lines of the gap, with a createdAt inside the gap;
 * - the notes' total is the queue's dropped_lines;
 * - id 1 (the start) and id last (the end) are kept. */
static void
check_stretches(civis_logq *q, struct seen *seen, size_t n, uint32_t last)
{
	struct civis_logq_stats s;
	uint64_t gap_notes = 0, total_notes = 0, gap_lines;
	uint32_t prev = 0;
	size_t i, j;

	/* Insertion sort by createdAt: n is small. */
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && seen[j].first_ns < seen[j - 1].first_ns; j--) {
			struct seen t = seen[j];

			seen[j] = seen[j - 1];
			seen[j - 1] = t;
		}
	for (i = 0; i < n; i++) {
		if (i > 0)
			assert_true(seen[i].first_ns > seen[i - 1].last_ns);
		if (seen[i].id == 0) {
			assert_true(seen[i].note_lines > 0);
			gap_notes += seen[i].note_lines;
			total_notes += seen[i].note_lines;
			continue;
		}
		assert_true(seen[i].id > prev);
		gap_lines = ((uint64_t)prev + 1 + seen[i].id - 1) * (seen[i].id - 1 - prev) / 2;
		assert_int_equal(gap_notes, gap_lines);
		gap_notes = 0;
		prev = seen[i].id;
	}
	assert_int_equal(prev, last);       /* the end is kept */
	assert_int_equal(gap_notes, 0);
	assert_true(n > 0 && (seen[0].id == 1 || seen[0].id == 0));
	for (i = 0; i < n && seen[i].id == 0; i++)
		;
	assert_true(i < n);
	civis_logq_stats(q, &s);
	assert_int_equal(total_notes, s.dropped_lines);
}

/* ---------------------------------------------------------------- tests */

static void
test_fifo_mem_spool_mem(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 4096, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *c;
	uint32_t id, next = 1;

	/* API down: the first few fit in memory, the rest go to the spool. */
	for (id = 1; id <= 100; id++)
		assert_int_equal(push_id(q, id, std_len(id)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_true(s.mem_chunks > 3);
	assert_true(s.disk_chunks > 50);
	assert_int_equal(s.mem_chunks + s.disk_chunks, 100);
	assert_int_equal(s.spool_open, 1);
	check_books(q);

	/* The API answers for a while: half goes out. */
	for (; next <= 50; next++)
		take_check_ack(q, next);
	/* More output while the spool still holds older chunks: spool, in order. */
	for (id = 101; id <= 200; id++)
		assert_int_equal(push_id(q, id, std_len(id)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.mem_chunks, 0);
	assert_int_equal(s.disk_chunks, 150);
	for (; next <= 200; next++)
		take_check_ack(q, next);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOTFOUND);
	assert_null(c);

	/* Back to memory once the spool is empty. */
	for (id = 201; id <= 205; id++)
		assert_int_equal(push_id(q, id, std_len(id)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.mem_chunks, 5);
	assert_int_equal(s.disk_chunks, 0);
	assert_int_equal(s.spool_size, 0);
	for (; next <= 205; next++)
		take_check_ack(q, next);
	civis_logq_stats(q, &s);
	assert_int_equal(s.acked_lines, 205u * 206u / 2u);
	assert_int_equal(s.dropped_lines, 0);
	assert_int_equal(s.mem_used, 0);
	check_books(q);
}

static void
test_nack_keeps_order(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1500, 0);
	civis_logq_chunk *c[6];
	struct civis_logq_stats s;
	uint32_t id;
	int i;

	for (id = 1; id <= 12; id++)
		assert_int_equal(push_id(q, id, std_len(id)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_true(s.mem_chunks >= 2 && s.disk_chunks >= 6);   /* a mix */
	for (i = 0; i < 6; i++) {
		assert_int_equal(civis_logq_take(q, &c[i]), CIVIS_OK);
		assert_int_equal(civis_logq_chunk_lines(c[i]), (uint32_t)i + 1);
	}
	/* Failures come back in any order; the queue re-sorts them. */
	civis_logq_nack(q, c[4]);
	civis_logq_nack(q, c[1]);
	civis_logq_ack(q, c[0]);
	civis_logq_nack(q, c[5]);
	civis_logq_nack(q, c[2]);
	civis_logq_ack(q, c[3]);
	check_books(q);
	for (id = 2; id <= 12; id++) {
		if (id == 4)
			continue;
		take_check_ack(q, id);
	}
	assert_int_equal(civis_logq_take(q, &c[0]), CIVIS_ENOTFOUND);
	check_books(q);
}

/* A disk chunk nacked while newer chunks wait in memory still comes first. */
static void
test_nacked_disk_before_newer_memory(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1200, 0);
	civis_logq_chunk *c[8];
	struct civis_logq_stats s;
	uint32_t id;
	int i, n = 0;

	for (id = 1; id <= 8; id++)
		assert_int_equal(push_id(q, id, 200), CIVIS_OK);
	while (n < 8 && civis_logq_take(q, &c[n]) == CIVIS_OK)
		n++;
	assert_int_equal(n, 8);
	assert_non_null(civis_logq_chunk_mem(c[0]));
	assert_null(civis_logq_chunk_mem(c[6]));         /* the last ones are on disk */
	for (i = 0; i < 8; i++)
		if (i != 6)
			civis_logq_ack(q, c[i]);
	/* Nothing queued on disk, memory free: new chunks go to memory... */
	for (id = 9; id <= 11; id++)
		assert_int_equal(push_id(q, id, 200), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.mem_chunks, 3);
	/* ...then the older disk chunk 7 fails and comes back ahead of them. */
	civis_logq_nack(q, c[6]);
	civis_logq_stats(q, &s);
	assert_int_equal(s.disk_chunks, 1);
	/* While it waits, new chunks go behind it on disk. */
	assert_int_equal(push_id(q, 12, 200), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.disk_chunks, 2);
	for (id = 7; id <= 12; id++) {
		if (id == 8)
			continue;
		assert_int_equal(civis_logq_take(q, &c[0]), CIVIS_OK);
		check_chunk(q, c[0], id, 200, 4096);
		civis_logq_ack(q, c[0]);
	}
	civis_logq_stats(q, &s);
	assert_int_equal(s.spool_size, 0);
	check_books(q);
}

static void
test_out_of_order_acks(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1, 0);       /* everything to the spool */
	civis_logq_chunk *c[8];
	struct civis_logq_stats s, s2;
	uint32_t id;
	int i;

	for (id = 1; id <= 8; id++)
		assert_int_equal(push_id(q, id, 10000 + id * 7), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.disk_chunks, 8);
	assert_int_equal(s.mem_used, 0);
	for (i = 0; i < 8; i++)
		assert_int_equal(civis_logq_take(q, &c[i]), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.inflight_chunks, 8);
	/* Ack the even ones first: their blocks are punched at once... */
	for (i = 1; i < 8; i += 2)
		civis_logq_ack(q, c[i]);
	civis_logq_stats(q, &s2);
	if (s2.spool_punch)
		assert_true(s2.spool_disk + 4 * 4096 <= s.spool_disk);
	/* ...without touching the neighbours still in flight. */
	for (i = 0; i < 8; i += 2)
		check_chunk(q, c[i], (uint32_t)i + 1, 10000 + ((size_t)i + 1) * 7, 16384);
	civis_logq_ack(q, c[6]);
	civis_logq_ack(q, c[2]);
	civis_logq_ack(q, c[4]);
	check_chunk(q, c[0], 1, 10007, 777);
	civis_logq_ack(q, c[0]);
	civis_logq_stats(q, &s);
	assert_int_equal(s.inflight_chunks, 0);
	assert_int_equal(s.spool_used, 0);
	assert_int_equal(s.spool_size, 0);
	assert_int_equal(s.spool_disk, 0);
	assert_int_equal(s.acked_lines, 36);
	check_books(q);
}

/* Random pushes, takes, acks and nacks: memory never above its cap. */
static void
test_mem_cap_never_exceeded(void **state)
{
	struct fixture *f = *state;
	const size_t cap = 64 << 10;
	civis_logq *q = open_q(f, cap, 0);
	civis_logq_chunk *fl[8];
	struct civis_logq_stats s;
	uint32_t pushed = 0, nfl = 0, rnd = 12345, step, acked_ids = 0;

	for (step = 0; step < 20000; step++) {
		rnd = rnd * 1103515245u + 12345u;
		switch ((rnd >> 16) % 4) {
		case 0: case 1:
			pushed++;
			assert_int_equal(push_id(q, pushed, body_len_of(pushed, 50, 3000)), CIVIS_OK);
			break;
		case 2:
			if (nfl < 8 && civis_logq_take(q, &fl[nfl]) == CIVIS_OK)
				nfl++;
			break;
		default:
			if (nfl > 0) {
				uint32_t k = (rnd >> 8) % nfl;

				if ((rnd >> 20) % 5 == 0) {
					civis_logq_nack(q, fl[k]);
				} else {
					civis_logq_ack(q, fl[k]);
					acked_ids++;
				}
				fl[k] = fl[--nfl];
			}
			break;
		}
		civis_logq_stats(q, &s);
		assert_true(s.mem_used <= cap);
	}
	civis_logq_stats(q, &s);
	assert_true(s.mem_peak <= cap);
	assert_true(s.mem_peak > cap / 2);      /* memory was really used */
	assert_true(s.disk_chunks + s.inflight_chunks > 0 || s.acked_chunks > 0);
	assert_int_equal(s.acked_chunks, acked_ids);
	assert_int_equal(s.dropped_lines, 0);
	check_books(q);
}

static void
test_spool_cap_drops_oldest(void **state)
{
	struct fixture *f = *state;
	civis_logq *q;
	struct civis_logq_stats s;
	civis_logq_chunk *c;
	uint64_t rec;
	uint32_t id;

	q = open_q(f, 1, 0);
	assert_int_equal(push_id(q, 1, 100), CIVIS_OK);
	civis_logq_stats(q, &s);
	rec = s.spool_used;                     /* header + body of one record */
	assert_true(rec > 100 && rec < 200);
	civis_logq_free(q);
	f->q = NULL;

	q = open_q(f, 1, 10 * rec);
	for (id = 1; id <= 25; id++)
		assert_int_equal(push_id(q, id, 100), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.disk_chunks, 10);
	assert_int_equal(s.dropped_chunks, 15);
	assert_int_equal(s.dropped_lines, 15u * 16u / 2u);    /* ids 1..15 */
	assert_int_equal(s.dropped_lines_unreported, 120);
	assert_non_null(strstr(civis_logq_last_error(q), "oldest"));
	assert_true(s.spool_used <= 10 * rec);
	if (s.spool_punch)   /* dropped records' blocks went back */
		assert_true(s.spool_disk <= 10 * rec + 2 * 4096);
	assert_int_equal(civis_logq_take_dropped(q), 120);
	assert_int_equal(civis_logq_take_dropped(q), 0);
	/* One note where ids 1..15 were, at the createdAt of id 1. */
	assert_int_equal(s.note_chunks, 1);
	take_note(q, 120, 1000);
	for (id = 16; id <= 25; id++) {
		assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
		check_chunk(q, c, id, 100, 64);
		civis_logq_ack(q, c);
	}
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOTFOUND);
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 120);
	assert_int_equal(s.acked_lines, (16u + 25u) * 10u / 2u + 1u);   /* + the note */
	check_books(q);
}

static void
test_spool_cap_drops_nacked_first(void **state)
{
	struct fixture *f = *state;
	civis_logq *q;
	struct civis_logq_stats s;
	civis_logq_chunk *c, *d;
	uint64_t rec;
	uint32_t id;

	q = open_q(f, 1, 0);
	assert_int_equal(push_id(q, 1, 100), CIVIS_OK);
	civis_logq_stats(q, &s);
	rec = s.spool_used;
	civis_logq_free(q);
	f->q = NULL;

	q = open_q(f, 1, 4 * rec);
	for (id = 1; id <= 4; id++)
		assert_int_equal(push_id(q, id, 100), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);   /* 1 */
	assert_int_equal(civis_logq_take(q, &d), CIVIS_OK);   /* 2 */
	civis_logq_nack(q, d);                                 /* 2 back: the oldest queued */
	assert_int_equal(push_id(q, 5, 100), CIVIS_OK);        /* drops 2 */
	assert_int_equal(push_id(q, 6, 100), CIVIS_OK);        /* drops 3 */
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 5);
	assert_int_equal(s.inflight_chunks, 1);
	check_chunk(q, c, 1, 100, 1);
	civis_logq_ack(q, c);
	take_note(q, 2 + 3, 2000);          /* 2 and 3: one stretch */
	for (id = 4; id <= 6; id++) {
		assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
		check_chunk(q, c, id, 100, 100);
		civis_logq_ack(q, c);
	}
	check_books(q);
}

static void
test_inflight_never_dropped(void **state)
{
	struct fixture *f = *state;
	civis_logq *q;
	struct civis_logq_stats s;
	civis_logq_chunk *a, *b, *c[3];
	uint64_t rec;
	uint32_t id;
	int i;

	q = open_q(f, 1, 0);
	assert_int_equal(push_id(q, 1, 3000), CIVIS_OK);
	civis_logq_stats(q, &s);
	rec = s.spool_used;
	civis_logq_free(q);
	f->q = NULL;

	q = open_q(f, 1, 5 * rec);
	for (id = 1; id <= 5; id++)
		assert_int_equal(push_id(q, id, 3000), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &a), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &b), CIVIS_OK);
	/* Five more: the queued 3, 4, 5 go, then the new 6 and 7; 1 and 2 stay. */
	for (id = 6; id <= 10; id++)
		assert_int_equal(push_id(q, id, 3000), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 3 + 4 + 5 + 6 + 7);
	assert_int_equal(s.inflight_chunks, 2);
	check_chunk(q, a, 1, 3000, 1000);
	check_chunk(q, b, 2, 3000, 999);
	civis_logq_ack(q, b);
	civis_logq_ack(q, a);
	take_note(q, 3 + 4 + 5 + 6 + 7, 3000);
	for (i = 0; i < 3; i++) {
		assert_int_equal(civis_logq_take(q, &c[i]), CIVIS_OK);
		assert_int_equal(civis_logq_chunk_lines(c[i]), 8u + (uint32_t)i);
	}
	/* All 3 queued records in flight, cap room for 2 more. */
	assert_int_equal(push_id(q, 11, 3000), CIVIS_OK);
	assert_int_equal(push_id(q, 12, 3000), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &a), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &b), CIVIS_OK);
	/* Now the whole spool is in flight: the new chunk is the one dropped. */
	assert_int_equal(push_id(q, 13, 3000), CIVIS_ETOOBIG);
	assert_non_null(strstr(civis_logq_last_error(q), "in flight"));
	assert_non_null(strstr(civis_logq_last_error(q), "13 lines dropped"));
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 25 + 13);
	assert_int_equal(civis_logq_take_dropped(q), 38);
	for (i = 0; i < 3; i++) {
		check_chunk(q, c[i], 8u + (uint32_t)i, 3000, 512);
		civis_logq_ack(q, c[i]);
	}
	check_chunk(q, a, 11, 3000, 3000);
	check_chunk(q, b, 12, 3000, 3001);
	civis_logq_ack(q, a);
	civis_logq_ack(q, b);
	civis_logq_stats(q, &s);
	assert_int_equal(s.spool_size, 0);
	take_note(q, 13, 13000);            /* the newest, where it would have been */
	assert_int_equal(civis_logq_take(q, &a), CIVIS_ENOTFOUND);
	check_books(q);
}

static void
test_empty_spool_truncates(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1, 0);
	struct civis_logq_stats s;
	uint32_t id;

	for (id = 1; id <= 50; id++)
		assert_int_equal(push_id(q, id, std_len(id)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_true(s.spool_size > 50 * 100);
	assert_int_equal(s.spool_size, s.spool_used);
	assert_true(s.spool_disk > 0);
	for (id = 1; id <= 49; id++)
		take_check_ack(q, id);
	civis_logq_stats(q, &s);
	assert_true(s.spool_size > 0);          /* one record still lives */
	if (s.spool_punch)
		assert_true(s.spool_disk <= 2 * 4096);
	take_check_ack(q, 50);
	civis_logq_stats(q, &s);
	assert_int_equal(s.spool_size, 0);
	assert_int_equal(s.spool_disk, 0);
	assert_int_equal(s.spool_used, 0);
	/* Offsets restart at 0. */
	assert_int_equal(push_id(q, 51, std_len(51)), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.spool_size, s.spool_used);
	take_check_ack(q, 51);
	check_books(q);
}

/* A spool directory that cannot be used (missing, read-only, not a
 * directory): the queue works in memory only. Over the cap a push is
 * refused with CIVIS_EFULL and neither counted nor dropped; the spool is
 * not tried again; once acks free memory the same push goes in. */
static void
bad_dir_case(const char *dir, const char *want)
{
	civis_logq_opts o;
	civis_logq *q;
	civis_logq_chunk *c;
	struct civis_logq_stats s;
	char err[256];

	memset(&o, 0, sizeof o);
	o.mem_cap = 1000;
	o.spool_dir = dir;
	assert_int_equal(civis_logq_new(&q, &o, err, sizeof err), CIVIS_OK);
	assert_string_equal(civis_logq_dir(q), dir);
	assert_int_equal(civis_logq_spool_check(q, err, sizeof err), CIVIS_ESYS);
	assert_non_null(strstr(err, dir));
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "log spool"));
	civis_logq_stats(q, &s);
	assert_true(s.spool_gone != 0);
	/* never tried again: the text says why without a new attempt */
	assert_int_equal(civis_logq_spool_check(q, err, sizeof err), CIVIS_ESYS);
	assert_non_null(strstr(err, "no writable directory"));
	assert_non_null(strstr(err, dir));
	assert_int_equal(push_id(q, 1, 500), CIVIS_OK);       /* memory */
	assert_int_equal(push_id(q, 2, 500), CIVIS_EFULL);    /* over the cap: not now */
	assert_non_null(strstr(civis_logq_last_error(q), "memory full"));
	assert_non_null(strstr(civis_logq_last_error(q), dir));
	assert_int_equal(push_id(q, 2, 500), CIVIS_EFULL);
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 0);
	assert_int_equal(s.dropped_chunks, 0);
	assert_int_equal(s.pushed_chunks, 1);                 /* refusals are not pushes */
	assert_int_equal(s.mem_chunks, 1);
	assert_int_equal(s.note_chunks, 0);
	assert_int_equal(s.spool_open, 0);
	assert_int_equal(civis_logq_take_dropped(q), 0);
	check_books(q);
	/* in flight still holds its memory; the ack frees it */
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	check_chunk(q, c, 1, 500, 13);
	assert_int_equal(push_id(q, 2, 500), CIVIS_EFULL);
	civis_logq_ack(q, c);
	assert_int_equal(push_id(q, 2, 500), CIVIS_OK);
	assert_int_equal(push_id(q, 3, 300), CIVIS_OK);
	assert_int_equal(push_id(q, 4, 300), CIVIS_EFULL);
	check_books(q);
	take_check_ack_len(q, 2, 500);
	assert_int_equal(push_id(q, 4, 300), CIVIS_OK);
	take_check_ack_len(q, 3, 300);
	take_check_ack_len(q, 4, 300);
	check_books(q);
	/* Empty memory takes one chunk over the cap, so a waiting caller
	 * cannot wait forever; the next one waits. */
	assert_int_equal(push_id(q, 5, 1500), CIVIS_OK);
	assert_int_equal(push_id(q, 6, 10), CIVIS_EFULL);
	take_check_ack_len(q, 5, 1500);
	assert_int_equal(push_id(q, 6, 10), CIVIS_OK);
	take_check_ack_len(q, 6, 10);
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 0);
	assert_int_equal(s.acked_lines, 1 + 2 + 3 + 4 + 5 + 6);
	civis_logq_free(q);
}

static void
test_spool_dir_errors(void **state)
{
	struct fixture *f = *state;
	char ro[96], file[96];
	int fd;

	bad_dir_case("/nonexistent-civis-dir/spool", "No such file or directory");
	/* Nobody, root included, can create a file in /proc. */
	bad_dir_case("/proc", "/proc");
	snprintf(file, sizeof file, "%s/file", f->dir);
	fd = open(file, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	bad_dir_case(file, "Not a directory");
	assert_int_equal(unlink(file), 0);
	if (geteuid() != 0) {
		snprintf(ro, sizeof ro, "%s/ro", f->dir);
		assert_int_equal(mkdir(ro, 0500), 0);
		bad_dir_case(ro, "Permission denied");
		assert_int_equal(rmdir(ro), 0);
	}
	f->q = NULL;
}

/* Memory only under load: random sizes, a sender that takes, acks and
 * nacks at random; every refused push is tried again after acks. Nothing
 * is dropped, memory stays under the cap, order holds. */
static void
test_memory_only_random(void **state)
{
	struct fixture *f = *state;
	civis_logq_opts o;
	civis_logq_chunk *inflight[16];
	struct civis_logq_stats s;
	char err[256];
	uint32_t id = 1, refused = 0;
	size_t nin = 0, i;
	uint64_t rnd = 12345;
	civis_logq *q;

	(void)f;
	memset(&o, 0, sizeof o);
	o.mem_cap = 8000;
	o.spool_dir = "/nonexistent-civis-dir";
	assert_int_equal(civis_logq_new(&q, &o, err, sizeof err), CIVIS_OK);
	for (;;) {
		unsigned r;

		civis_logq_stats(q, &s);
		if (id > 3000 && nin == 0 && s.mem_chunks == 0)
			break;
		rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
		r = (unsigned)(rnd >> 60);
		if (id <= 3000 && r < 8) {
			int rc = push_id(q, id, std_len(id));

			if (rc == CIVIS_OK) {
				id++;
			} else {
				assert_int_equal(rc, CIVIS_EFULL);
				refused++;
			}
		} else if (r < 12 && nin < 16) {
			if (civis_logq_take(q, &inflight[nin]) == CIVIS_OK)
				nin++;
		} else if (nin > 0) {
			char head[16];
			size_t got;
			unsigned got_id;

			i = (size_t)((rnd >> 33) % nin);
			assert_int_equal(civis_logq_chunk_read(q, inflight[i], 0, head, sizeof head - 1,
			                                       &got), CIVIS_OK);
			head[got] = '\0';
			assert_int_equal(sscanf(head, "#%u#", &got_id), 1);
			assert_int_equal(civis_logq_chunk_lines(inflight[i]), got_id);
			if ((rnd >> 40) % 5 == 0)
				civis_logq_nack(q, inflight[i]);
			else
				civis_logq_ack(q, inflight[i]);
			inflight[i] = inflight[--nin];
		}
		check_books(q);
	}
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 0);
	assert_int_equal(s.acked_chunks, 3000);
	assert_int_equal(s.acked_lines, 3000ULL * 3001ULL / 2);
	assert_true(s.mem_peak <= o.mem_cap);
	assert_true(refused > 0);
	civis_logq_free(q);
}

/* Both ways of creating the spool leave no name behind and a 0600 file. */
static void
test_spool_file_unlinked(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	int mk;

	for (mk = 0; mk <= 1; mk++) {
		civis_logq *q = open_q(f, 1, 0);

		civis__logq_force_mkstemp(q, mk);
		assert_int_equal(civis__logq_spool_fd(q), -1);    /* lazily created */
		assert_int_equal(push_id(q, 1, 100), CIVIS_OK);
		assert_true(civis__logq_spool_fd(q) >= 0);
		assert_int_equal(fstat(civis__logq_spool_fd(q), &st), 0);
		assert_int_equal(st.st_nlink, 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(fcntl(civis__logq_spool_fd(q), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
		take_check_ack_len(q, 1, 100);
		civis_logq_free(q);
		f->q = NULL;
		assert_int_equal(rmdir(f->dir), 0);   /* empty: nothing left behind */
		assert_int_equal(mkdir(f->dir, 0700), 0);
	}
}

/* Disk full: the spool write fails, the chunk is dropped and said so, or kept
 * in memory when it fits. RLIMIT_FSIZE makes writes fail with EFBIG. */
static void
test_spool_write_error(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 3000, 0);
	struct civis_logq_stats s;
	struct rlimit old, lim;
	civis_logq_chunk *c;
	uint32_t id, kept = 0, lost = 0;
	void (*oldsig)(int);
	int rc;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	oldsig = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 64 << 10;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	/* Fill memory, then the spool up to 64 KiB, then failures. */
	for (id = 1; id <= 40; id++) {
		rc = push_id(q, id, 2000);
		if (rc == CIVIS_OK) {
			kept++;
		} else {
			assert_int_equal(rc, CIVIS_ESYS);
			assert_non_null(strstr(civis_logq_last_error(q), "File too large"));
			assert_non_null(strstr(civis_logq_last_error(q), "write"));
			lost += id;
		}
	}
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	civis_logq_stats(q, &s);
	assert_true(kept >= 30 && kept < 40);
	assert_int_equal(s.dropped_lines, lost);
	assert_int_equal(civis_logq_take_dropped(q), lost);
	/* What was kept comes out intact and in order, then one note where the
	 * rest was (the file size limit made every later write fail). */
	for (id = 1; id <= kept; id++) {
		assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
		check_chunk(q, c, id, 2000, 4096);
		/* Room in memory again: a failing spool falls back to it. */
		civis_logq_ack(q, c);
	}
	take_note(q, lost, (uint64_t)(kept + 1) * 1000u);
	check_books(q);

	/* Spool queued + memory full + write failing: kept in memory when it fits. */
	for (id = 1; id <= 3; id++)
		assert_int_equal(push_id(q, id, 900), CIVIS_OK);      /* memory: 3 x ~1 KB */
	assert_int_equal(push_id(q, 4, 900), CIVIS_OK);           /* spool */
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);       /* 1 out: memory room */
	civis_logq_ack(q, c);
	lim.rlim_cur = 1;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rc = push_id(q, 5, 900);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(rc, CIVIS_OK);
	assert_non_null(strstr(civis_logq_last_error(q), "kept in memory"));
	for (id = 2; id <= 5; id++) {
		assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
		check_chunk(q, c, id, 900, 100);
		civis_logq_ack(q, c);
	}
	check_books(q);
}

/* Issue 12 point 12: an outage, a spool on a small filesystem, a long
 * output. Today the newest chunks were the ones dropped (the end, where the
 * traceback is, lost) with no mark in the log; now the oldest spooled ones
 * go as one stretch with a note in their place, like the spool cap. */
static void
test_spool_full_drops_one_stretch(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 3000, 0);
	static struct seen seen[MAXSEEN];
	struct civis_logq_stats s;
	size_t n = 0, i, notes = 0;
	uint32_t id;

	civis__logq_disk_size(q, 64 << 10);
	for (id = 1; id <= 100; id++)
		assert_int_equal(push_id(q, id, 2000), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_true(s.dropped_lines > 0);
	assert_true(s.spool_disk <= 64 << 10);
	assert_int_equal(s.mem_chunks, 2);         /* id 1 and the note */
	check_books(q);
	drain_seen(q, seen, &n);
	for (i = 0; i < n; i++)
		notes += seen[i].id == 0;
	assert_int_equal(notes, 1);
	assert_int_equal(seen[0].id, 1);           /* the start */
	assert_int_equal(seen[1].id, 0);           /* the note, then the end */
	check_stretches(q, seen, n, 100);
	check_books(q);
}

/* The same with the sender at work: random takes, acks and nacks while the
 * disk is full, and a full disk that has room again later. */
static void
test_spool_full_random(void **state)
{
	struct fixture *f = *state;
	static struct seen seen[MAXSEEN];
	struct civis_logq_stats s;
	civis_logq_chunk *out[8];
	size_t n = 0, nout = 0, i;
	uint32_t id, x = 12345;
	civis_logq *q = open_q(f, 5000, 0);

	civis__logq_disk_size(q, 48 << 10);
	for (id = 1; id <= 600; id++) {
		x = x * 1103515245u + 12345u;
		assert_int_equal(push_id(q, id, 1000 + (x >> 16) % 2000), CIVIS_OK);
		if ((x >> 8) % 7 == 0 && nout < 8 && civis_logq_take(q, &out[nout]) == CIVIS_OK)
			nout++;
		if ((x >> 12) % 5 == 0 && nout > 0) {
			i = (x >> 4) % nout;
			civis_logq_nack(q, out[i]);
			out[i] = out[--nout];
		}
		if (id == 400)
			civis__logq_disk_size(q, 0);    /* room again */
		check_books(q);
	}
	for (i = 0; i < nout; i++)
		civis_logq_nack(q, out[i]);
	civis_logq_stats(q, &s);
	assert_true(s.dropped_lines > 0);
	assert_true(s.note_chunks > 1);          /* nacks between stretches: several */
	drain_seen(q, seen, &n);
	check_stretches(q, seen, n, 600);
	check_books(q);
}

static void
test_disk_chunk_read_in_pieces(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 0, 0);      /* default 4 MiB */
	civis_logq_chunk *c;
	char buf[8];
	size_t got;
	uint32_t id;

	/* Four 1 MiB chunks do not all fit in 4 MiB with bookkeeping. */
	for (id = 1; id <= 5; id++)
		assert_int_equal(push_id(q, id, 1u << 20), CIVIS_OK);
	for (id = 1; id <= 3; id++) {
		assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
		assert_non_null(civis_logq_chunk_mem(c));
		civis_logq_ack(q, c);
	}
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	assert_null(civis_logq_chunk_mem(c));
	check_chunk(q, c, 4, 1u << 20, 16384);    /* CURL_MAX_WRITE_SIZE pieces */
	check_chunk(q, c, 4, 1u << 20, 65537);
	check_chunk(q, c, 4, 1u << 20, 1u << 21);
	/* Past the end: nothing, no error. */
	assert_int_equal(civis_logq_chunk_read(q, c, 1u << 20, buf, sizeof buf, &got), CIVIS_OK);
	assert_int_equal(got, 0);
	assert_int_equal(civis_logq_chunk_read(q, c, (1u << 20) - 3, buf, sizeof buf, &got),
	                 CIVIS_OK);
	assert_int_equal(got, 3);
	civis_logq_nack(q, c);                      /* retry streams it again from 0 */
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	check_chunk(q, c, 4, 1u << 20, 3);
	civis_logq_ack(q, c);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_OK);
	check_chunk(q, c, 5, 1u << 20, 12345);
	civis_logq_ack(q, c);
	check_books(q);
}

static void
test_corrupt_header(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 800, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *c;
	const char junk[] = "this is not a spool record header at all......";
	uint32_t id;
	int fd;

	for (id = 1; id <= 6; id++)
		assert_int_equal(push_id(q, id, 300), CIVIS_OK);  /* 1, 2 memory; 3..6 spool */
	fd = civis__logq_spool_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, sizeof junk - 1, 0), (ssize_t)(sizeof junk - 1));
	/* The spool head is read at the first take: the corruption is reported
	 * there, everything queued on disk is dropped and counted exactly. */
	assert_int_equal(civis_logq_take(q, &c), CIVIS_EPROTO);
	assert_null(c);
	assert_non_null(strstr(civis_logq_last_error(q), "corrupt"));
	assert_non_null(strstr(civis_logq_last_error(q), "magic"));
	assert_non_null(strstr(civis_logq_last_error(q), "18 lines"));   /* 3+4+5+6 */
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 18);
	assert_int_equal(s.disk_chunks, 0);
	assert_int_equal(s.spool_size, 0);       /* nothing live: reset */
	/* The memory chunks are intact. */
	take_check_ack_len(q, 1, 300);
	take_check_ack_len(q, 2, 300);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOTFOUND);
	check_books(q);

	/* A header whose fields were altered fails its checksum. */
	for (id = 7; id <= 10; id++)
		assert_int_equal(push_id(q, id, 300), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.mem_chunks, 2);
	assert_int_equal(pwrite(fd, "\x01", 1, 32), 1);          /* nlines of the first record */
	assert_int_equal(civis_logq_take(q, &c), CIVIS_EPROTO);
	assert_non_null(strstr(civis_logq_last_error(q), "checksum"));
	take_check_ack_len(q, 7, 300);
	take_check_ack_len(q, 8, 300);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOTFOUND);
	assert_int_equal(civis_logq_take_dropped(q), 18 + 9 + 10);
	check_books(q);
}

static void
test_corrupt_body(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *c;
	uint64_t rec;
	uint32_t id;
	int fd;

	for (id = 1; id <= 3; id++)
		assert_int_equal(push_id(q, id, 500), CIVIS_OK);
	civis_logq_stats(q, &s);
	rec = s.spool_used / 3;
	fd = civis__logq_spool_fd(q);
	/* One byte of the second body flipped: only that chunk is lost. */
	assert_int_equal(pwrite(fd, "~", 1, (off_t)(rec + rec - 20)), 1);
	take_check_ack_len(q, 1, 500);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_EPROTO);
	assert_null(c);
	assert_non_null(strstr(civis_logq_last_error(q), "body checksum"));
	assert_non_null(strstr(civis_logq_last_error(q), "2 lines"));
	take_check_ack_len(q, 3, 500);
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 2);
	assert_int_equal(s.spool_size, 0);
	check_books(q);
}

/* Corruption found while dropping for the cap is reported as corruption. */
static void
test_corrupt_found_by_cap(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 1, 3 * (48 + 200));
	struct civis_logq_stats s;

	assert_int_equal(push_id(q, 1, 200), CIVIS_OK);
	civis_logq_stats(q, &s);
	assert_int_equal(s.spool_used, 48 + 200);   /* the documented 48-byte header */
	assert_int_equal(push_id(q, 2, 200), CIVIS_OK);
	assert_int_equal(push_id(q, 3, 200), CIVIS_OK);
	assert_int_equal(pwrite(civis__logq_spool_fd(q), "\0\0\0\0", 4, 0), 4);
	assert_int_equal(push_id(q, 4, 200), CIVIS_OK);
	assert_non_null(strstr(civis_logq_last_error(q), "corrupt"));
	assert_non_null(strstr(civis_logq_last_error(q), "(6 lines)"));
	assert_int_equal(civis_logq_take_dropped(q), 6);
	take_check_ack_len(q, 4, 200);
	check_books(q);
}

static void
test_bad_args(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 0, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *c;
	size_t got;

	assert_int_equal(civis_logq_push(q, NULL, 10, 3, 0, 0), CIVIS_EINVAL);
	assert_int_equal(civis_logq_push(q, "x", 0, 4, 0, 0), CIVIS_EINVAL);
	assert_int_equal(civis_logq_push(q, "x", (size_t)CIVIS_LOGQ_MAX_CHUNK + 1, 5, 0, 0),
	                 CIVIS_ETOOBIG);
	assert_non_null(strstr(civis_logq_last_error(q), "5 lines dropped"));
	civis_logq_stats(q, &s);
	assert_int_equal(s.dropped_lines, 12);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOTFOUND);
	assert_int_equal(civis_logq_take(NULL, &c), CIVIS_EINVAL);
	assert_int_equal(civis_logq_chunk_read(q, NULL, 0, NULL, 0, &got), CIVIS_EINVAL);
	civis_logq_ack(q, NULL);
	civis_logq_nack(NULL, NULL);
	civis_logq_free(NULL);
	check_books(q);
}

static void
test_inflight_cap(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 0, 0);
	static civis_logq_chunk *c[CIVIS_LOGQ_MAX_INFLIGHT];
	civis_logq_chunk *extra;
	uint32_t id;
	int i;

	for (id = 1; id <= CIVIS_LOGQ_MAX_INFLIGHT + 1; id++)
		assert_int_equal(push_id(q, id, 64), CIVIS_OK);
	for (i = 0; i < CIVIS_LOGQ_MAX_INFLIGHT; i++)
		assert_int_equal(civis_logq_take(q, &c[i]), CIVIS_OK);
	assert_int_equal(civis_logq_take(q, &extra), CIVIS_ETOOBIG);
	civis_logq_ack(q, c[0]);
	assert_int_equal(civis_logq_take(q, &extra), CIVIS_OK);
	assert_int_equal(civis_logq_chunk_lines(extra), CIVIS_LOGQ_MAX_INFLIGHT + 1);
	check_books(q);   /* the rest are freed with the queue */
}

/* A failed allocation loses nothing: memory falls back to the spool, a take
 * leaves the queue as it was. */
static void
test_alloc_failures(void **state)
{
	struct fixture *f = *state;
	civis_logq *q = open_q(f, 4096, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *c;

	civis__logq_fail_alloc(q, 1);
	assert_int_equal(push_id(q, 1, 300), CIVIS_OK);       /* memory */
	assert_int_equal(push_id(q, 2, 300), CIVIS_OK);       /* allocation fails: spool */
	assert_int_equal(push_id(q, 3, 300), CIVIS_OK);       /* spool, behind 2 */
	civis_logq_stats(q, &s);
	assert_int_equal(s.mem_chunks, 1);
	assert_int_equal(s.disk_chunks, 2);
	take_check_ack_len(q, 1, 300);
	civis__logq_fail_alloc(q, 0);
	assert_int_equal(civis_logq_take(q, &c), CIVIS_ENOMEM);
	assert_null(c);
	civis_logq_stats(q, &s);
	assert_int_equal(s.disk_chunks, 2);
	assert_int_equal(s.inflight_chunks, 0);
	take_check_ack_len(q, 2, 300);
	take_check_ack_len(q, 3, 300);
	/* Memory fails and the spool is full: the chunk is dropped, counted. */
	civis_logq_free(q);
	f->q = NULL;
	q = open_q(f, 4096, 100);
	civis__logq_fail_alloc(q, 0);
	assert_int_equal(push_id(q, 4, 300), CIVIS_ETOOBIG);
	assert_non_null(strstr(civis_logq_last_error(q), "4 lines dropped"));
	assert_int_equal(civis_logq_take_dropped(q), 4);
	check_books(q);
}

static long
maxrss_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return ru.ru_maxrss;
}

/* 100 MB of small chunks through outages: order, bytes, bounded metadata. */
static void
test_soak_small_chunks(void **state)
{
	struct fixture *f = *state;
	const size_t cap = 256 << 10;
	civis_logq *q = open_q(f, cap, 0);
	struct civis_logq_stats s;
	civis_logq_chunk *fl[8];
	uint32_t back[8];           /* nacked ids, ascending */
	uint32_t nback = 0, nfl = 0, pushed = 0, next_new = 1, rnd = 99, id, i, want;
	uint64_t bytes = 0, total, live, peak, max_disk = 0;
	const char *mb = getenv("CIVIS_LOGQ_SOAK_MB");
	long rss0 = maxrss_kib(), rss1;
	int down;

	total = (mb != NULL && strtoul(mb, NULL, 10) > 0 ? strtoul(mb, NULL, 10) : 100) << 20;
	while (bytes < total || pushed + 1 != next_new || nback > 0 || nfl > 0) {
		/* Alternate: 2 MB pushed with the API down, then it answers. */
		down = bytes < total && (bytes >> 21) % 2 == 0;
		rnd = rnd * 1103515245u + 12345u;
		if (bytes < total && (down || (rnd >> 16) % 3 == 0)) {
			size_t len = body_len_of(pushed + 1, 120, 160);

			pushed++;
			assert_int_equal(push_id(q, pushed, len), CIVIS_OK);
			bytes += len;
			continue;
		}
		if (down)
			continue;
		if (nfl < 8 && (rnd >> 20) % 2 == 0) {
			int rc = civis_logq_take(q, &fl[nfl]);

			if (rc == CIVIS_ENOTFOUND)
				continue;
			assert_int_equal(rc, CIVIS_OK);
			/* Must be the smallest id that is neither acked nor in flight. */
			if (nback > 0) {
				want = back[0];
				memmove(back, back + 1, (nback - 1) * sizeof back[0]);
				nback--;
			} else {
				want = next_new++;
			}
			assert_int_equal(civis_logq_chunk_lines(fl[nfl]), want);
			if ((rnd >> 12) % 64 == 0)
				check_chunk(q, fl[nfl], want, body_len_of(want, 120, 160), 97);
			nfl++;
		} else if (nfl > 0) {
			uint32_t k = (rnd >> 8) % nfl;

			if ((rnd >> 24) % 10 == 0) {
				id = civis_logq_chunk_lines(fl[k]);
				for (i = nback; i > 0 && back[i - 1] > id; i--)
					back[i] = back[i - 1];
				back[i] = id;
				nback++;
				civis_logq_nack(q, fl[k]);
			} else {
				civis_logq_ack(q, fl[k]);
			}
			fl[k] = fl[--nfl];
		}
		civis_logq_stats(q, &s);
		if (s.spool_disk > max_disk)
			max_disk = s.spool_disk;
	}
	civis_logq_stats(q, &s);
	assert_int_equal(s.acked_chunks, pushed);
	assert_int_equal(s.dropped_lines, 0);
	assert_true(s.mem_peak <= cap);
	assert_int_equal(s.spool_size, 0);
	assert_int_equal(s.spool_used, 0);
	civis__logq_alloc_counts(q, &live, &peak);
	assert_int_equal(live, 0);
	/* Metadata: only memory chunks (bounded by the cap) and 8 in flight,
	 * never one struct per spooled chunk. */
	assert_true(peak <= cap / 120 + 8);
	assert_true(pushed > 300000 * (total >> 20) / 100);
	rss1 = maxrss_kib();
	print_message("soak: %u chunks, %" PRIu64 " MB, peak chunk structs %" PRIu64
	              ", mem peak %" PRIu64 " B, spool peak on disk %" PRIu64
	              " KiB, maxrss +%ld KiB\n", pushed, bytes >> 20, peak, s.mem_peak,
	              max_disk >> 10, rss1 - rss0);
	if (!UNDER_ASAN && !UNDER_VALGRIND())
		assert_true(rss1 - rss0 < 8 * 1024);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fifo_mem_spool_mem, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nack_keeps_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nacked_disk_before_newer_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mem_cap_never_exceeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_cap_drops_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_cap_drops_nacked_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_never_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_spool_truncates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_file_unlinked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_dir_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_only_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_full_drops_one_stretch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_full_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_chunk_read_in_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_found_by_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_soak_small_chunks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
