/* flood: print numbered lines fast (or paced), for tests and benchmarks.
 *
 *   flood [-n LINES] [-s BYTES] [-i INTERVAL_MS] [-r LINES_PER_SEC] [-e] [-t TIMEFILE] [-w]
 *
 * Each line is "<seq> <realtime ns> <padding>" of exactly BYTES bytes with
 * the newline (default 100). -e writes every other line to stderr. -w adds
 * the wall clock of the write (already there: field 2). -t writes "<first
 * write ns> <exit ns>" (CLOCK_MONOTONIC) to TIMEFILE at exit: the command's
 * own run time, whatever wraps it. Output goes through stdio with a 64 KiB
 * buffer (as a program writing to a pipe does) unless -i paces it, which
 * flushes each line. -r paces to that many lines per second on average
 * (line i is due at start + i/rate): it flushes and sleeps only when it is
 * more than 1 ms ahead, so 20,000 lines/s cost ~1,000 wakeups/s, not 20,000. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static unsigned long long
num(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s) {
		fprintf(stderr, "flood: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

int
main(int argc, char **argv)
{
	unsigned long long lines = 1000000, size = 100, interval_ms = 0, rate = 0;
	const char *timefile = NULL;
	int both = 0, c;
	static char obuf[65536], ebuf[65536];
	char line[65536];
	uint64_t first = 0, start = 0;

	while ((c = getopt(argc, argv, "n:s:i:r:et:")) != -1) {
		switch (c) {
		case 'n': lines = num(optarg, "line count"); break;
		case 's': size = num(optarg, "line size"); break;
		case 'i': interval_ms = num(optarg, "interval"); break;
		case 'r': rate = num(optarg, "rate"); break;
		case 'e': both = 1; break;
		case 't': timefile = optarg; break;
		default:
			fprintf(stderr, "usage: flood [-n LINES] [-s BYTES] [-i MS] [-r LINES_PER_SEC] [-e] [-t FILE]\n");
			return 2;
		}
	}
	if (size < 40 || size > sizeof(line)) {
		fprintf(stderr, "flood: line size must be 40..%zu\n", sizeof(line));
		return 2;
	}
	if (rate > 100000000ULL) {
		fprintf(stderr, "flood: rate must be 0..100000000 lines/s\n");
		return 2;
	}
	setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
	setvbuf(stderr, ebuf, _IOFBF, sizeof(ebuf));
	memset(line, 'x', sizeof(line));
	for (unsigned long long i = 0; i < lines; i++) {
		FILE *f = (both && (i & 1)) ? stderr : stdout;
		int n = snprintf(line, sizeof(line), "%llu %llu ", i,
		                 (unsigned long long)now_ns(CLOCK_REALTIME));

		if (n < 0 || (unsigned long long)n >= size)
			return 3;
		memset(line + n, 'x', size - 1 - (size_t)n);
		line[size - 1] = '\n';
		if (!first)
			first = now_ns(CLOCK_MONOTONIC);
		if (fwrite(line, 1, size, f) != size)
			return 4;
		if (interval_ms) {
			fflush(f);
			usleep((useconds_t)(interval_ms * 1000));
		}
		if (rate) {
			uint64_t due, now = now_ns(CLOCK_MONOTONIC);

			if (!start)
				start = now;
			due = start + (uint64_t)((i + 1) * 1000000000ULL / rate);
			if (due > now + 1000000ULL) {
				struct timespec ts = { .tv_sec = (time_t)(due / 1000000000ULL),
				                       .tv_nsec = (long)(due % 1000000000ULL) };

				fflush(stdout);
				fflush(stderr);
				while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
					;
			}
		}
	}
	fflush(stdout);
	fflush(stderr);
	if (timefile) {
		FILE *t = fopen(timefile, "w");

		if (!t)
			return 5;
		fprintf(t, "%llu %llu\n", (unsigned long long)first,
		        (unsigned long long)now_ns(CLOCK_MONOTONIC));
		fclose(t);
	}
	return 0;
}
