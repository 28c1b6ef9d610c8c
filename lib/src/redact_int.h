/* redact_int.h (private): what the two halves of the redactor share.
 *
 * redact_build.c builds the set: secrets from the environment and from the
 * caller, their encodings (JSON, URL, base64), multi-line secrets, long
 * values in pieces, the default secret names. redact_match.c matches: the
 * Wu-Manber tables built from the set, streams, flushes, whole strings. */
#ifndef CIVIS_REDACT_INT_H
#define CIVIS_REDACT_INT_H

#include "civis/redact.h"

#include <stddef.h>
#include <stdint.h>

#define MINLEN   CIVIS_REDACT_MIN_LEN   /* Wu-Manber window: every pattern is at least this long */
#define BLOCK    3                      /* bytes hashed for the shift table */
#define MAXSHIFT (MINLEN - BLOCK + 1)
#define NONE     UINT64_MAX
#define EMPTYKEY UINT64_MAX             /* prefixes are 48-bit, never this */

struct pat {
	uint32_t off;   /* into arena */
	uint32_t len;
};

struct slot {
	uint64_t key;   /* the 6-byte prefix, EMPTYKEY when free */
	uint32_t first; /* into group[] */
	uint32_t count;
};

struct civis_redact {
	unsigned char *arena;   /* pattern bytes, back to back */
	size_t arena_len, arena_cap;
	struct pat *pats;       /* distinct patterns in order of registration */
	size_t npat, pat_cap;
	uint32_t *dedup;        /* open addressing: index + 1, 0 = free */
	size_t dedup_cap;       /* power of two */
	int dirty;              /* patterns added since the tables were built */

	/* match tables, built from pats[0..nbuilt) */
	size_t nbuilt;
	uint32_t *sorted;       /* pattern indices, bytes in lexicographic order */
	size_t maxlen;
	uint8_t first[32];      /* bitmap of first bytes */
	uint8_t *pair;          /* bitmap of first two bytes, 8 KiB */
	unsigned tbits;
	uint8_t *shift;         /* 1 << tbits entries */
	struct slot *slots;
	size_t slot_mask;
	uint32_t *group;        /* per prefix: pattern indices, longest first */
};

struct civis_redact_stream {
	const civis_redact *r;
	uint64_t pos;           /* bytes fed */
	uint64_t emit;          /* bytes decided and passed to out */
	uint64_t mask_end;      /* bytes before this offset are covered by an occurrence seen */
	int last_masked;        /* the last byte passed out was masked (its token is out) */
	uint64_t tail_abs;      /* stream offset of tail[0]; tail_abs <= emit <= pos */
	size_t tail_len;        /* tail holds [tail_abs, pos) */
	unsigned char *tail;
	size_t tail_cap;
	unsigned char *scratch; /* tail + the first bytes of the next input */
	size_t scratch_cap;
};

/* ---- redact_build.c: allocation (a CIVIS_UNITTEST hook makes one fail) */

void *civis__redact_malloc(size_t n);
void *civis__redact_calloc(size_t n, size_t size);
void *civis__redact_realloc(void *p, size_t n);
char *civis__redact_strndup(const char *s, size_t n);

/* ---- redact_match.c: the match tables */

/* Build the match tables for every pattern registered (no-op unless
 * dirty). On failure the old tables stay as they were. */
int  civis__redact_build(civis_redact *r);
void civis__redact_free_tables(civis_redact *r);

#ifdef CIVIS_UNITTEST
/* ---- test hooks (tests/unit/test_redact.c) */

/* Pattern i (0 <= i < count) in the set's sorted order. */
int  civis__redact_pattern(const civis_redact *r, size_t i, const char **p,
                           size_t *len);
/* Make the n-th next allocation of the module fail (0: the next one), -1
 * never; returns the count left before the call (-1: none was pending). */
int  civis__redact_fail_alloc(int n);
#endif

static inline uint32_t
civis__redact_hash3(const unsigned char *p, unsigned tbits)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
	return (v * 0x9E3779B1u) >> (32 - tbits);
}

static inline uint64_t
civis__redact_load6(const unsigned char *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40;
}

static inline size_t
civis__redact_slot_hash(uint64_t key, size_t mask)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;
}

#endif
