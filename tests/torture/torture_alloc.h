/* torture_alloc.h: allocation-failure injection for the torture build
 * (mk/torture.mk). The library's and agent's objects have their malloc,
 * calloc, realloc, strdup and strndup references renamed to these (objcopy
 * --redefine-sym), so only their own allocations are counted and failed:
 * libcurl, cJSON, libc and cmocka allocate as usual.
 *
 * Environment, read once at start:
 *   CIVIS_FAIL_ALLOC_AT=N     the Nth counted allocation (1-based) fails
 *   CIVIS_FAIL_ALLOC_STICKY=1 ... and every one after it (curl's memlimit)
 *   CIVIS_COUNT_ALLOCS=PATH   at exit, write "allocs=C injected=I at=N" to
 *                             PATH ("1" or "-": to stderr), C the number of
 *                             counted calls, I how many were failed. */
#ifndef CIVIS_TORTURE_ALLOC_H
#define CIVIS_TORTURE_ALLOC_H

#include <stddef.h>

void *civis_torture_malloc(size_t n);
void *civis_torture_calloc(size_t n, size_t size);
void *civis_torture_realloc(void *p, size_t n);
char *civis_torture_strdup(const char *s);
char *civis_torture_strndup(const char *s, size_t n);

/* The number of counted allocations so far, and of failed ones. */
unsigned long civis_torture_allocs(void);
unsigned long civis_torture_injected(void);

#endif
