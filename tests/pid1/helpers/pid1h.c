/* pid1h: helper programs for tests/pid1/run.sh, one binary, one subcommand
 * per role. Every wait is bounded so a broken agent fails the suite instead
 * of hanging it.
 *
 *   pid1h launch [--block L] [--ignore L] [--state F] -- CMD...
 *       reset every disposition to default and the mask to empty, then block
 *       and ignore the signals in the comma lists L, write our own
 *       SigBlk/SigIgn lines to F and exec CMD (how the agent is started).
 *   pid1h sigstate F           write our SigBlk/SigIgn lines to F.
 *   pid1h waitsig READY        write READY, then wait to die of a signal.
 *   pid1h catch L OUT READY    block the signals of L, write READY, wait for
 *                              one of them, write its number to OUT, exit 0.
 *   pid1h survive OUT READY    block SIGTERM, write READY, write "15" to OUT
 *                              when SIGTERM comes and keep running.
 *   pid1h counter DIR          block every signal, write DIR/ready, count
 *                              each received signal into DIR/counts ("N C"
 *                              lines), exit 0 once DIR/stop exists.
 *   pid1h reap N               make N orphans (double fork) that check they
 *                              were adopted by our parent (the agent), then
 *                              wait until the agent has reaped them all.
 *   pid1h waitfile F SECS      exit 0 once F exists, 1 after SECS.
 *   pid1h fds [SKIP]           print our open descriptors ("0 1 2"), but
 *                              those open on a path starting with SKIP.
 *   pid1h strip-notes IN OUT   copy IN to OUT without the whole lines
 *                              starting "civis-agent: " at its very start
 *                              (the agent's own notes before the command ran).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BOUND_SECS 120

static void
die(const char *what)
{
	fprintf(stderr, "pid1h: %s: %s\n", what, strerror(errno));
	exit(99);
}

static long
num(const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "pid1h: bad number '%s'\n", s);
		exit(99);
	}
	return v;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Write text to path atomically (tmp + rename), so a poller never sees half. */
static void
put_file(const char *path, const char *text)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		exit(99);
	f = fopen(tmp, "w");
	if (f == NULL)
		die(tmp);
	if (fputs(text, f) == EOF || fclose(f) != 0)
		die(tmp);
	if (rename(tmp, path) != 0)
		die(path);
}

/* "10,15,RT3" -> set; RTn is SIGRTMIN+n. */
static void
parse_sigs(const char *list, sigset_t *set)
{
	char buf[1024], *tok, *save = NULL;

	sigemptyset(set);
	if (snprintf(buf, sizeof(buf), "%s", list) >= (int)sizeof(buf))
		exit(99);
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		int sig;
		if (strncmp(tok, "RT", 2) == 0)
			sig = SIGRTMIN + (int)num(tok + 2, 0, 64);
		else
			sig = (int)num(tok, 1, 64);
		if (sig > SIGRTMAX || sigaddset(set, sig) != 0) {
			fprintf(stderr, "pid1h: bad signal '%s'\n", tok);
			exit(99);
		}
	}
}

static void
sig_state(char *out, size_t len)
{
	char line[512];
	size_t n = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (f == NULL)
		die("/proc/self/status");
	out[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "SigBlk:", 7) != 0 && strncmp(line, "SigIgn:", 7) != 0)
			continue;
		int w = snprintf(out + n, len - n, "%s", line);
		if (w < 0 || (size_t)w >= len - n)
			exit(99);
		n += (size_t)w;
	}
	fclose(f);
}

static int
cmd_launch(int argc, char **argv)
{
	sigset_t blk, ign, empty;
	const char *state = NULL;
	int i, sig;

	sigemptyset(&blk);
	sigemptyset(&ign);
	for (i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (i + 1 >= argc)
			exit(99);
		if (strcmp(argv[i], "--block") == 0)
			parse_sigs(argv[++i], &blk);
		else if (strcmp(argv[i], "--ignore") == 0)
			parse_sigs(argv[++i], &ign);
		else if (strcmp(argv[i], "--state") == 0)
			state = argv[++i];
		else
			exit(99);
	}
	if (i + 1 >= argc)
		exit(99);
	for (sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		(void)signal(sig, sigismember(&ign, sig) == 1 ? SIG_IGN : SIG_DFL);
	}
	sigemptyset(&empty);
	if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0 ||
	    sigprocmask(SIG_BLOCK, &blk, NULL) != 0)
		die("sigprocmask");
	if (state != NULL) {
		char text[1024];
		sig_state(text, sizeof(text));
		put_file(state, text);
	}
	execvp(argv[i + 1], argv + i + 1);
	die(argv[i + 1]);
	return 99;
}

static int
cmd_waitsig(const char *ready)
{
	double end = now_s() + BOUND_SECS;

	put_file(ready, "ready\n");
	while (now_s() < end)
		nap_ms(100);
	return 98;
}

static int
wait_one(const sigset_t *set, double secs)
{
	struct timespec ts = { (time_t)secs, 0 };
	int sig;

	do {
		sig = sigtimedwait(set, NULL, &ts);
	} while (sig < 0 && errno == EINTR);
	return sig;
}

static int
cmd_catch(const char *list, const char *out, const char *ready)
{
	sigset_t set;
	char text[32];
	int sig;

	parse_sigs(list, &set);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		die("sigprocmask");
	put_file(ready, "ready\n");
	sig = wait_one(&set, BOUND_SECS);
	if (sig < 0)
		return 97;
	snprintf(text, sizeof(text), "%d\n", sig);
	put_file(out, text);
	return 0;
}

static int
cmd_survive(const char *out, const char *ready)
{
	sigset_t set;
	double end = now_s() + BOUND_SECS;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		die("sigprocmask");
	put_file(ready, "ready\n");
	if (wait_one(&set, BOUND_SECS) == SIGTERM)
		put_file(out, "15\n");
	while (now_s() < end) {
		(void)wait_one(&set, 1);
	}
	return 96;
}

static void
write_counts(const char *dir, const unsigned *count)
{
	char path[4096], text[4096];
	size_t n = 0;
	int sig;

	text[0] = '\0';
	for (sig = 1; sig < NSIG; sig++) {
		if (count[sig] == 0)
			continue;
		int w = snprintf(text + n, sizeof(text) - n, "%d %u\n", sig, count[sig]);
		if (w < 0 || (size_t)w >= sizeof(text) - n)
			exit(99);
		n += (size_t)w;
	}
	snprintf(path, sizeof(path), "%s/counts", dir);
	put_file(path, text);
}

static int
cmd_counter(const char *dir)
{
	unsigned count[NSIG];
	char path[4096];
	sigset_t all;
	double end = now_s() + BOUND_SECS;
	int fd;

	memset(count, 0, sizeof(count));
	sigfillset(&all);
	if (sigprocmask(SIG_BLOCK, &all, NULL) != 0)
		die("sigprocmask");
	fd = signalfd(-1, &all, SFD_CLOEXEC);
	if (fd < 0)
		die("signalfd");
	write_counts(dir, count);
	snprintf(path, sizeof(path), "%s/ready", dir);
	put_file(path, "ready\n");
	snprintf(path, sizeof(path), "%s/stop", dir);
	while (now_s() < end) {
		struct pollfd p = { fd, POLLIN, 0 };
		struct signalfd_siginfo si;

		if (poll(&p, 1, 20) > 0 && read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo < (unsigned)NSIG)
				count[si.ssi_signo]++;
			write_counts(dir, count);
			continue;
		}
		if (access(path, F_OK) == 0) {
			/* Anything still queued counts too. */
			while (poll(&p, 1, 0) > 0 && read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				if (si.ssi_signo < (unsigned)NSIG)
					count[si.ssi_signo]++;
			write_counts(dir, count);
			return 0;
		}
	}
	return 95;
}

/* Children of ppid other than us, and how many of them are zombies. */
static void
scan_children(pid_t ppid, int *kids, int *zombies)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	*kids = *zombies = 0;
	if (d == NULL)
		die("/proc");
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[1024], *p;
		FILE *f;
		int pp;
		char st;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(buf, sizeof(buf), f) == NULL) {
			fclose(f);
			continue;
		}
		fclose(f);
		p = strrchr(buf, ')');   /* comm may hold spaces and parentheses */
		if (p == NULL || sscanf(p + 1, " %c %d", &st, &pp) != 2)
			continue;
		if (pp != ppid || strtol(e->d_name, NULL, 10) == (long)getpid())
			continue;
		(*kids)++;
		if (st == 'Z')
			(*zombies)++;
	}
	closedir(d);
}

static int
cmd_reap(long n)
{
	pid_t agent = getppid();
	int rep[2], ok = 0, bad = 0, kids = 0, zombies = 0;
	long i;
	double end;

	if (pipe(rep) != 0)
		die("pipe");
	for (i = 0; i < n; i++) {
		pid_t c = fork();
		if (c < 0)
			die("fork");
		if (c == 0) {
			pid_t gc = fork();
			if (gc < 0)
				_exit(1);
			if (gc == 0) {
				pid_t mom = getppid();
				char verdict;
				int tries;

				close(rep[0]);
				/* Wait for the intermediate child to exit, bounded. */
				for (tries = 0; tries < 5000 && getppid() == mom; tries++)
					nap_ms(1);
				verdict = getppid() == agent ? 'y' : 'n';
				if (write(rep[1], &verdict, 1) != 1)
					_exit(1);
				_exit(0);
			}
			_exit(0);
		}
		if (waitpid(c, NULL, 0) != c)
			die("waitpid");
	}
	close(rep[1]);
	for (;;) {
		char v;
		ssize_t r = read(rep[0], &v, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (v == 'y')
			ok++;
		else
			bad++;
	}
	close(rep[0]);
	/* Every orphan has written and exited; the agent must reap them all. */
	end = now_s() + 20;
	do {
		scan_children(agent, &kids, &zombies);
		if (kids == 0)
			break;
		nap_ms(10);
	} while (now_s() < end);
	printf("adopted %d of %ld, not adopted %d, left %d (zombies %d)\n",
	       ok, n, bad, kids, zombies);
	return (ok == n && kids == 0) ? 0 : 1;
}

static int
cmd_waitfile(const char *path, long secs)
{
	double end = now_s() + (double)secs;

	while (access(path, F_OK) != 0) {
		if (now_s() >= end)
			return 1;
		nap_ms(5);
	}
	return 0;
}

static int
cmd_fds(const char *skip)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int seen[64], n = 0, i, j;

	if (d == NULL)
		die("/proc/self/fd");
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (end == e->d_name || *end != '\0' || fd == dirfd(d) || n >= 64)
			continue;
		if (skip != NULL) {
			char path[300], target[4096];
			ssize_t len;

			snprintf(path, sizeof(path), "/proc/self/fd/%ld", fd);
			len = readlink(path, target, sizeof(target) - 1);
			if (len > 0) {
				target[len] = '\0';
				if (strncmp(target, skip, strlen(skip)) == 0)
					continue;
			}
		}
		seen[n++] = (int)fd;
	}
	closedir(d);
	for (i = 1; i < n; i++)           /* insertion sort: readdir order is not */
		for (j = i; j > 0 && seen[j - 1] > seen[j]; j--) {
			int t = seen[j];
			seen[j] = seen[j - 1];
			seen[j - 1] = t;
		}
	for (i = 0; i < n; i++)
		printf("%s%d", i ? " " : "", seen[i]);
	printf("\n");
	return 0;
}

static int
cmd_strip_notes(const char *in, const char *out)
{
	static const char prefix[] = "civis-agent: ";
	char buf[65536];
	FILE *fi = fopen(in, "rb"), *fo;
	size_t n, skip = 0, have;

	if (fi == NULL)
		die(in);
	fo = fopen(out, "wb");
	if (fo == NULL)
		die(out);
	have = fread(buf, 1, sizeof(buf), fi);
	/* Leading notes are short lines: they fit in the first buffer. */
	while (have - skip >= sizeof(prefix) - 1 &&
	       memcmp(buf + skip, prefix, sizeof(prefix) - 1) == 0) {
		char *nl = memchr(buf + skip, '\n', have - skip);
		if (nl == NULL)
			break;
		skip = (size_t)(nl - buf) + 1;
	}
	if (fwrite(buf + skip, 1, have - skip, fo) != have - skip)
		die(out);
	while ((n = fread(buf, 1, sizeof(buf), fi)) > 0)
		if (fwrite(buf, 1, n, fo) != n)
			die(out);
	fclose(fi);
	if (fclose(fo) != 0)
		die(out);
	return 0;
}

int
main(int argc, char **argv)
{
	char text[1024];

	if (argc < 2)
		return 99;
	if (strcmp(argv[1], "launch") == 0)
		return cmd_launch(argc - 2, argv + 2);
	if (strcmp(argv[1], "sigstate") == 0 && argc == 3) {
		sig_state(text, sizeof(text));
		put_file(argv[2], text);
		return 0;
	}
	if (strcmp(argv[1], "waitsig") == 0 && argc == 3)
		return cmd_waitsig(argv[2]);
	if (strcmp(argv[1], "catch") == 0 && argc == 5)
		return cmd_catch(argv[2], argv[3], argv[4]);
	if (strcmp(argv[1], "survive") == 0 && argc == 4)
		return cmd_survive(argv[2], argv[3]);
	if (strcmp(argv[1], "counter") == 0 && argc == 3)
		return cmd_counter(argv[2]);
	if (strcmp(argv[1], "reap") == 0 && argc == 3)
		return cmd_reap(num(argv[2], 1, 10000));
	if (strcmp(argv[1], "waitfile") == 0 && argc == 4)
		return cmd_waitfile(argv[2], num(argv[3], 0, 3600));
	if (strcmp(argv[1], "strip-notes") == 0 && argc == 4)
		return cmd_strip_notes(argv[2], argv[3]);
	if (strcmp(argv[1], "fds") == 0 && (argc == 2 || argc == 3))
		return cmd_fds(argc == 3 ? argv[2] : NULL);
	fprintf(stderr, "pid1h: bad usage\n");
	return 99;
}
