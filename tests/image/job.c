/* job.c: the user's command in the image tests, a static binary (no libc,
 * no shell needed in the image). One mode per behaviour under test:
 *
 *   job lines OUTDIR N CODE   N lines on stdout, one on stderr, OUTDIR/result.txt, exit CODE
 *   job term OUTDIR           "ready", then waits; on SIGTERM: last lines, OUTDIR/last.txt,
 *                             and dies of SIGTERM (the default action, re-raised)
 *   job ignore-term           ignores SIGTERM, prints a line every 200 ms until killed
 *   job signals               "got SIGUSR1" / "got SIGHUP" for each one received; after both
 *                             and 1 s more, the counts and exit 0 (SIGTERM: counts, exit 1)
 *   job alloc MIB             touches MIB MiB, 1 MiB at a time, saying so every 8 MiB
 *   job sleep MS              sleeps MS milliseconds, exit 0 (start-up figures)
 *
 * Output is unbuffered (write(2)), so each line is in the pipe when printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_term, got_usr1, got_hup;

static void
say(int fd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	while (n > 0) {
		ssize_t w = write(fd, buf, (size_t)n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		n -= (int)w;
	}
}

static int
write_file(const char *dir, const char *name, const char *text)
{
	char path[4096];
	int fd;
	size_t len = strlen(text);

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		say(2, "job: cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	if (write(fd, text, len) != (ssize_t)len) {
		say(2, "job: cannot write %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return close(fd);
}

static void
on_signal(int sig)
{
	if (sig == SIGTERM)
		got_term = 1;
	else if (sig == SIGUSR1)
		got_usr1++;
	else if (sig == SIGHUP)
		got_hup++;
}

static void
catch(int sig)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);   /* a signal ends it early: the callers loop */
}

static int
mode_lines(const char *dir, long n, int code)
{
	long i;

	say(1, "static job: hello from a binary without libc");
	for (i = 1; i <= n; i++)
		say(1, "static line %ld", i);
	say(2, "static job: a line on stderr");
	if (write_file(dir, "result.txt", "static result\n") != 0)
		return 70;
	say(1, "static job: wrote result.txt, exiting %d", code);
	return code;
}

static int
mode_term(const char *dir)
{
	catch(SIGTERM);
	say(1, "term job: ready");
	while (!got_term)
		nap_ms(50);
	say(1, "term job: got SIGTERM, writing last.txt");
	if (write_file(dir, "last.txt", "written after SIGTERM\n") != 0)
		return 70;
	say(1, "term job: last line");
	signal(SIGTERM, SIG_DFL);
	raise(SIGTERM);
	return 71;
}

static int
mode_ignore_term(void)
{
	long i;

	signal(SIGTERM, SIG_IGN);
	say(1, "ignore job: ready, ignoring SIGTERM");
	for (i = 1;; i++) {
		nap_ms(200);
		say(1, "ignore job: tick %ld", i);
	}
	return 0;
}

static int
mode_signals(void)
{
	int seen_usr1 = 0, seen_hup = 0, both_at = -1, t;

	catch(SIGUSR1);
	catch(SIGHUP);
	catch(SIGTERM);
	say(1, "signals job: ready");
	for (t = 0; t < 1200; t++) {   /* 60 s at most */
		nap_ms(50);
		while (seen_usr1 < got_usr1)
			say(1, "got SIGUSR1 (%d)", ++seen_usr1);
		while (seen_hup < got_hup)
			say(1, "got SIGHUP (%d)", ++seen_hup);
		if (got_term) {
			say(1, "signals job: SIGTERM: USR1 %d, HUP %d", seen_usr1, seen_hup);
			return 1;
		}
		if (both_at < 0 && seen_usr1 && seen_hup)
			both_at = t;
		if (both_at >= 0 && t - both_at >= 20)
			break;
	}
	say(1, "signals job: done: USR1 %d, HUP %d", seen_usr1, seen_hup);
	return both_at >= 0 ? 0 : 2;
}

static int
mode_alloc(long mib)
{
	long i;

	say(1, "alloc job: touching %ld MiB", mib);
	for (i = 1; i <= mib; i++) {
		char *p = malloc(1 << 20);

		if (!p) {
			say(2, "alloc job: malloc failed at %ld MiB", i);
			return 1;
		}
		memset(p, (int)(i & 0xff) | 1, 1 << 20);
		if (i % 8 == 0)
			say(1, "alloc job: %ld MiB", i);
	}
	say(1, "alloc job: all %ld MiB touched (no limit hit)", mib);
	return 0;
}

/* A decimal argument in [0, max]; -1 when it is not one. */
static long
num(const char *s, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
		return -1;
	return v;
}

int
main(int argc, char **argv)
{
	const char *m = argc > 1 ? argv[1] : "";
	long a = argc > 2 ? num(argv[argc - 1], 1000000000L) : -1;

	if (strcmp(m, "lines") == 0 && argc == 5 && num(argv[3], 100000000L) >= 0 && a <= 255 && a >= 0)
		return mode_lines(argv[2], num(argv[3], 100000000L), (int)a);
	if (strcmp(m, "term") == 0 && argc == 3)
		return mode_term(argv[2]);
	if (strcmp(m, "ignore-term") == 0)
		return mode_ignore_term();
	if (strcmp(m, "signals") == 0)
		return mode_signals();
	if (strcmp(m, "alloc") == 0 && argc == 3 && a >= 0)
		return mode_alloc(a);
	if (strcmp(m, "sleep") == 0 && argc == 3 && a >= 0) {
		nap_ms(a);
		return 0;
	}
	say(2, "usage: job lines OUTDIR N CODE | term OUTDIR | ignore-term | signals | alloc MIB | sleep MS");
	return 2;
}
