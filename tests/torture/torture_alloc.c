/* torture_alloc.c: the counting, failing allocator of the torture build
 * (see torture_alloc.h). One process, one thread: no locking. A forked
 * child inherits the counter; only the process that read the environment
 * writes the report, so a child's exit does not overwrite it. */
#include "torture_alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long n_allocs;
static unsigned long n_injected;
static unsigned long fail_at;           /* 0: never */
static int sticky;
static pid_t owner;
static char report_path[4096];

static unsigned long
env_count(const char *name)
{
	const char *v = getenv(name);
	char *end = NULL;
	unsigned long long x;

	if (v == NULL || *v == '\0')
		return 0;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || x > 1000000000ULL) {
		fprintf(stderr, "civis-torture: ignoring %s=%s (not a count)\n", name, v);
		return 0;
	}
	return (unsigned long)x;
}

static void
report(void)
{
	FILE *f;

	if (report_path[0] == '\0' || getpid() != owner)
		return;
	if (strcmp(report_path, "1") == 0 || strcmp(report_path, "-") == 0) {
		fprintf(stderr, "civis-torture: allocs=%lu injected=%lu at=%lu\n",
		        n_allocs, n_injected, fail_at);
		return;
	}
	f = fopen(report_path, "w");
	if (f == NULL)
		return;
	fprintf(f, "allocs=%lu injected=%lu at=%lu\n", n_allocs, n_injected, fail_at);
	(void)fclose(f);
}

__attribute__((constructor)) static void
torture_init(void)
{
	const char *p = getenv("CIVIS_COUNT_ALLOCS");
	const char *s = getenv("CIVIS_FAIL_ALLOC_STICKY");

	owner = getpid();
	fail_at = env_count("CIVIS_FAIL_ALLOC_AT");
	sticky = s != NULL && strcmp(s, "1") == 0;
	if (p != NULL && *p != '\0') {
		size_t len = strlen(p);

		if (len < sizeof(report_path)) {
			memcpy(report_path, p, len + 1);
			(void)atexit(report);
		}
	}
}

/* Whether this counted allocation is the one (or one of those) to fail. */
static int
should_fail(void)
{
	n_allocs++;
	if (fail_at == 0)
		return 0;
	if (n_allocs == fail_at || (sticky && n_allocs > fail_at)) {
		n_injected++;
		errno = ENOMEM;
		return 1;
	}
	return 0;
}

void *
civis_torture_malloc(size_t n)
{
	return should_fail() ? NULL : malloc(n);
}

void *
civis_torture_calloc(size_t n, size_t size)
{
	return should_fail() ? NULL : calloc(n, size);
}

void *
civis_torture_realloc(void *p, size_t n)
{
	return should_fail() ? NULL : realloc(p, n);
}

char *
civis_torture_strdup(const char *s)
{
	return should_fail() ? NULL : strdup(s);
}

char *
civis_torture_strndup(const char *s, size_t n)
{
	return should_fail() ? NULL : strndup(s, n);
}

unsigned long
civis_torture_allocs(void)
{
	return n_allocs;
}

unsigned long
civis_torture_injected(void)
{
	return n_injected;
}
