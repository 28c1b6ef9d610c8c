/* bench_redact.c: throughput of the streaming redactor.
 *
 *   cc -O2 -D_GNU_SOURCE -Ilib/include tests/bench/bench_redact.c \
 *      lib/src/redact_build.c lib/src/redact_match.c lib/src/status.c -o build/bench_redact
 *   build/bench_redact [MB]      (default 100)
 *
 * Pushes MB megabytes of 100-byte log lines (one line in a thousand carries
 * a registered secret), then of 100-byte lines of random base64 (the worst
 * ordinary text: it looks like the encoded patterns), through a stream with
 * 0, 1 and 50 secrets of 40 random alphanumerics, fed in 64 KiB reads and in
 * 100-byte reads (a line-buffered child), and prints MB/s of CPU time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "civis/civis.h"
#include "civis/redact.h"

#define LINE 100

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
count_out(void *ud, const char *data, size_t len)
{
	uint64_t *n = ud;

	(void)data;
	*n += len;
	return CIVIS_OK;
}

/* One 100-byte line of random base64 (a dump of encoded data: the text most
 * like the patterns, so the slowest case for the shift table). */
static void
make_dense_line(char *p, const char (*secrets)[41], size_t nsecrets, uint64_t lineno)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	(void)secrets;
	(void)nsecrets;
	(void)lineno;
	for (size_t i = 0; i < LINE - 1; i++)
		p[i] = abc[rnd() % 64];
	p[LINE - 1] = '\n';
}

/* One 100-byte line of log-like text (timestamp, level, words, numbers). */
static void
make_line(char *p, const char (*secrets)[41], size_t nsecrets, uint64_t lineno)
{
	static const char *const words[] = {
		"processing", "record", "table", "rows", "done", "INFO", "WARN",
		"query", "select", "from", "where", "value", "user", "batch",
		"model", "score", "train", "epoch", "loss", "accuracy", "file",
		"upload", "s3://bucket/path", "GET", "POST", "/api/v1/items",
		"status=200", "elapsed", "ms", "id", "the", "and", "of", "to",
	};
	size_t o;
	int w;

	w = snprintf(p, LINE, "2026-04-01T12:%02u:%02u.%06uZ ", (unsigned)(lineno / 60 % 60),
	             (unsigned)(lineno % 60), (unsigned)(lineno % 1000000));
	o = w > 0 ? (size_t)w : 0;
	if (nsecrets && lineno % 1000 == 999) {
		memcpy(p + o, "token=", 6);
		o += 6;
		memcpy(p + o, secrets[rnd() % nsecrets], 40);
		o += 40;
	}
	while (o < LINE - 1) {
		const char *wd = words[rnd() % (sizeof(words) / sizeof(words[0]))];
		size_t wl = strlen(wd);
		char num[24];
		if (rnd() % 4 == 0) {
			w = snprintf(num, sizeof(num), "%u", (unsigned)(rnd() % 100000));
			wd = num;
			wl = w > 0 ? (size_t)w : 0;
		}
		if (o + wl + 1 > LINE - 1)
			wl = LINE - 1 - o - 1;
		memcpy(p + o, wd, wl);
		o += wl;
		p[o++] = ' ';
	}
	p[LINE - 1] = '\n';
}

static int
run(const civis_redact *r, const char *text, size_t n, size_t chunk, double *mbs,
    uint64_t *outbytes)
{
	civis_redact_stream *s = NULL;
	double t0, t1;
	int rc;

	*outbytes = 0;
	rc = civis_redact_stream_new(&s, r);
	if (rc)
		return rc;
	t0 = cpu_now();
	for (size_t off = 0; off < n && rc == CIVIS_OK; off += chunk)
		rc = civis_redact_stream_feed(s, text + off, n - off < chunk ? n - off : chunk,
		                              count_out, outbytes);
	if (rc == CIVIS_OK)
		rc = civis_redact_stream_flush(s, count_out, outbytes);
	t1 = cpu_now();
	civis_redact_stream_free(s);
	*mbs = (double)n / (1024.0 * 1024.0) / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9);
	return rc;
}

int
main(int argc, char **argv)
{
	static const size_t counts[] = { 0, 1, 50 };
	static const size_t chunks[] = { 65536, LINE };
	char secrets[50][41];
	unsigned long long mb = 100;
	size_t n;
	char *text;
	int rc = 0;

	if (argc > 1) {
		char *end;
		mb = strtoull(argv[1], &end, 10);
		if (end == argv[1] || *end || mb == 0 || mb > 4096) {
			fprintf(stderr, "usage: %s [MB 1..4096]\n", argv[0]);
			return 2;
		}
	}
	for (int i = 0; i < 50; i++) {
		for (int j = 0; j < 40; j++)
			secrets[i][j] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[rnd() % 62];
		secrets[i][40] = '\0';
	}
	n = (size_t)mb << 20;
	n -= n % LINE;
	text = malloc(n);
	if (!text) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	for (size_t c = 0; c < 2 * sizeof(counts) / sizeof(counts[0]) && !rc; c++) {
		int dense = c >= sizeof(counts) / sizeof(counts[0]);
		size_t nsec = counts[c % (sizeof(counts) / sizeof(counts[0]))];
		civis_redact *r = NULL;
		if (civis_redact_new(&r)) {
			rc = 1;
			break;
		}
		for (size_t i = 0; i < nsec; i++)
			if (civis_redact_add(r, secrets[i], 40))
				rc = 1;
		for (size_t off = 0; off < n; off += LINE)
			(dense ? make_dense_line : make_line)(text + off,
			    (const char (*)[41])secrets, nsec, off / LINE);
		for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]) && !rc; k++) {
			double mbs;
			uint64_t outb;
			if (run(r, text, n, chunks[k], &mbs, &outb)) {
				rc = 1;
				break;
			}
			printf("redact: %-6s text, %2zu secrets (%4zu patterns, %6zu bytes of tables), %5zu-byte feeds: %8.1f MB/s  (%llu MB in, %llu bytes out)\n",
			       dense ? "base64" : "log", nsec, civis_redact_count(r),
			       civis_redact_memory(r), chunks[k], mbs, mb, (unsigned long long)outb);
		}
		civis_redact_free(r);
	}
	free(text);
	return rc;
}
