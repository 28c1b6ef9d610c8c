/* exitinfo.c: limits, OOM kills and the termination log. See exitinfo.h. */
#include "exitinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"

#define MiB           (1024ULL * 1024ULL)
#define NO_LIMIT      (1ULL << 62)      /* v1 writes 2^63 - 4096 for "none" */
#define PATH_MAX_LEN  4096
#define FILE_MAX      8192              /* bytes read of a cgroup file */
#define TERMLOG_DEFAULT "/dev/termination-log"

struct agent_exitinfo {
	char *root;                 /* NULL: the default */
	char *termlog;              /* NULL: off */
	agent_limits before, after;
	char mem_dir[PATH_MAX_LEN]; /* where the peak and OOM count are read at the end */
	int ended;
	int oom;                    /* the command was killed for memory */
	uint64_t other_kills;
	uint64_t allowed_mib;
	char oom_line[128];
	char summary[1024];         /* the last summary given to the termination log */
	char lines[AGENT_EXITINFO_LINES][AGENT_EXITINFO_LINE_MAX];
	size_t lens[AGENT_EXITINFO_LINES];
	size_t next, count;         /* ring of the last error lines */
};

/* Up to cap-1 bytes of path, terminated. Length, or -1. */
static ssize_t
slurp(const char *path, char *buf, size_t cap)
{
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -1;
	while (got + 1 < cap) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	return (ssize_t)got;
}

static int
join(char *out, size_t len, const char *a, const char *b)
{
	int w = snprintf(out, len, "%s/%s", a, b);

	return w < 0 || (size_t)w >= len ? -1 : 0;
}

/* The number in dir/name ("max" counts as none: *v = 0). 1 read, 0 not. */
static int
read_num(const char *dir, const char *name, uint64_t *v, int *is_max)
{
	char path[PATH_MAX_LEN], buf[64], *end;
	unsigned long long n;

	*v = 0;
	if (is_max)
		*is_max = 0;
	if (join(path, sizeof(path), dir, name) != 0 || slurp(path, buf, sizeof(buf)) <= 0)
		return 0;
	if (strncmp(buf, "max", 3) == 0) {
		if (is_max)
			*is_max = 1;
		return 1;
	}
	errno = 0;
	n = strtoull(buf, &end, 10);
	if (errno || end == buf || buf[0] == '-')
		return 0;
	*v = n;
	return 1;
}

/* The value of "key N" in the key-value file dir/name. 1 found, 0 not. */
static int
read_key(const char *dir, const char *name, const char *key, uint64_t *v)
{
	char path[PATH_MAX_LEN], buf[FILE_MAX];
	size_t klen = strlen(key);
	const char *p;

	*v = 0;
	if (join(path, sizeof(path), dir, name) != 0 || slurp(path, buf, sizeof(buf)) < 0)
		return 0;
	for (p = buf; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ') {
			char *end;

			errno = 0;
			*v = strtoull(p + klen + 1, &end, 10);
			return errno == 0 && end != p + klen + 1;
		}
	}
	return 0;
}

int
agent_cgroup_path(const char *text, const char *controller, char *out, size_t outlen)
{
	const char *line = text;
	size_t clen = strlen(controller);

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		const char *c1 = strchr(line, ':');
		const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		size_t end = nl ? (size_t)(nl - line) : strlen(line);

		if (c1 && c2 && (size_t)(c2 - line) < end) {
			const char *list = c1 + 1;
			size_t llen = (size_t)(c2 - list), plen = end - (size_t)(c2 + 1 - line);
			int match = 0;

			if (clen == 0)
				match = llen == 0 && c1 - line == 1 && line[0] == '0';
			for (const char *q = list; clen && q < c2;) {
				const char *comma = memchr(q, ',', (size_t)(c2 - q));
				size_t n = comma ? (size_t)(comma - q) : (size_t)(c2 - q);

				if (n == clen && strncmp(q, controller, n) == 0)
					match = 1;
				q += n + 1;
			}
			if (match) {
				if (plen + 1 > outlen)
					return -1;
				memcpy(out, c2 + 1, plen);
				out[plen] = '\0';
				return 0;
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	return -1;
}

static int
is_dir(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* base + the controller's path from /proc/self/cgroup when that is a
 * directory, else base itself. */
static void
locate(char *out, size_t len, const char *base, const char *cg, const char *controller)
{
	char rel[PATH_MAX_LEN];

	if (cg && agent_cgroup_path(cg, controller, rel, sizeof(rel)) == 0 &&
	    strcmp(rel, "/") != 0 && snprintf(out, len, "%s%s", base, rel) < (int)len &&
	    is_dir(out))
		return;
	snprintf(out, len, "%s", base);
}

/* One level up, not above top. 0 moved, -1 at the top. */
static int
up(char *dir, size_t toplen)
{
	char *slash = strrchr(dir, '/');

	if (strlen(dir) <= toplen || slash == NULL)
		return -1;
	if ((size_t)(slash - dir) < toplen)
		dir[toplen] = '\0';
	else
		*slash = '\0';
	return 0;
}

/* The tightest CPU quota from dir up to the top (quota/period least). */
static void
cpu_quota(agent_limits *l, char *dir, size_t toplen, int v2)
{
	do {
		uint64_t q = 0, p = 0;
		int ok;

		if (v2) {
			/* "max 100000" (none) or "QUOTA PERIOD" */
			char path[PATH_MAX_LEN], buf[128], *end, *end2;

			ok = join(path, sizeof(path), dir, "cpu.max") == 0 &&
			     slurp(path, buf, sizeof(buf)) > 0 && strncmp(buf, "max", 3) != 0;
			if (ok) {
				q = strtoull(buf, &end, 10);
				p = 100000;
				ok = end != buf;
				if (ok && *end == ' ') {
					p = strtoull(end + 1, &end2, 10);
					ok = end2 != end + 1;
				}
			}
		} else {
			/* cpu.cfs_quota_us is -1 for none */
			char path[PATH_MAX_LEN], buf[64], *end;

			ok = join(path, sizeof(path), dir, "cpu.cfs_quota_us") == 0 &&
			     slurp(path, buf, sizeof(buf)) > 0 && buf[0] != '-' &&
			     read_num(dir, "cpu.cfs_period_us", &p, NULL);
			if (ok) {
				q = strtoull(buf, &end, 10);
				ok = end != buf;
			}
		}
		if (ok && q > 0 && p > 0 &&
		    (l->cpu_quota_us == 0 || (double)q / (double)p <
		     (double)l->cpu_quota_us / (double)l->cpu_period_us)) {
			l->cpu_quota_us = q;
			l->cpu_period_us = p;
		}
	} while (up(dir, toplen) == 0);
}

static void
read_v2(agent_limits *l, const char *root, const char *cg, char *mem_dir, size_t mlen)
{
	char dir[PATH_MAX_LEN];
	size_t toplen = strlen(root);

	l->version = 2;
	locate(dir, sizeof(dir), root, cg, "");
	snprintf(mem_dir, mlen, "%s", dir);
	(void)read_num(dir, "memory.peak", &l->mem_peak, NULL);
	l->has_oom_count = read_key(dir, "memory.events", "oom_kill", &l->oom_kills);
	/* The tightest memory.max from here up. */
	do {
		uint64_t v;
		int is_max;

		if (read_num(dir, "memory.max", &v, &is_max) && !is_max && v > 0 &&
		    (l->mem_max == 0 || v < l->mem_max))
			l->mem_max = v;
	} while (up(dir, toplen) == 0);
	locate(dir, sizeof(dir), root, cg, "");
	cpu_quota(l, dir, toplen, 1);
}

static void
read_v1(agent_limits *l, const char *root, const char *cg, char *mem_dir, size_t mlen)
{
	static const char *const cpu_names[] = { "cpu", "cpu,cpuacct", "cpuacct,cpu" };
	char base[PATH_MAX_LEN], dir[PATH_MAX_LEN];
	uint64_t v;

	l->version = 1;
	if (join(base, sizeof(base), root, "memory") == 0 && is_dir(base)) {
		locate(dir, sizeof(dir), base, cg, "memory");
		snprintf(mem_dir, mlen, "%s", dir);
		if (read_num(dir, "memory.limit_in_bytes", &v, NULL) && v > 0 && v < NO_LIMIT)
			l->mem_max = v;
		if (read_key(dir, "memory.stat", "hierarchical_memory_limit", &v) && v > 0 &&
		    v < NO_LIMIT && (l->mem_max == 0 || v < l->mem_max))
			l->mem_max = v;
		(void)read_num(dir, "memory.max_usage_in_bytes", &l->mem_peak, NULL);
		l->has_oom_count = read_key(dir, "memory.oom_control", "oom_kill", &l->oom_kills);
	}
	for (size_t i = 0; i < sizeof(cpu_names) / sizeof(cpu_names[0]); i++) {
		if (join(base, sizeof(base), root, cpu_names[i]) != 0 || !is_dir(base))
			continue;
		locate(dir, sizeof(dir), base, cg, "cpu");
		cpu_quota(l, dir, strlen(base), 0);
		break;
	}
}

/* agent_limits_read(), and where the memory files are into mem_dir ("" if
 * none). */
static void
read_limits(const char *root, const char *proc_cgroup, agent_limits *out, char *mem_dir,
            size_t mlen)
{
	char path[PATH_MAX_LEN], cg[FILE_MAX];
	int have_cg;

	memset(out, 0, sizeof(*out));
	mem_dir[0] = '\0';
	if (root == NULL)
		root = "/sys/fs/cgroup";
	have_cg = slurp(proc_cgroup ? proc_cgroup : "/proc/self/cgroup", cg, sizeof(cg)) > 0;
	if (join(path, sizeof(path), root, "cgroup.controllers") == 0 && access(path, F_OK) == 0) {
		read_v2(out, root, have_cg ? cg : NULL, mem_dir, mlen);
		return;
	}
	if ((join(path, sizeof(path), root, "memory") == 0 && is_dir(path)) ||
	    (join(path, sizeof(path), root, "cpu") == 0 && is_dir(path)))
		read_v1(out, root, have_cg ? cg : NULL, mem_dir, mlen);
}

void
agent_limits_read(const char *root, const char *proc_cgroup, agent_limits *out)
{
	char mem_dir[PATH_MAX_LEN];

	read_limits(root, proc_cgroup, out, mem_dir, sizeof(mem_dir));
}

/* ---- the command's end ---------------------------------------------------- */

int
agent_exitinfo_new(agent_exitinfo **out, const char *cgroup_root, const char *termlog)
{
	agent_exitinfo *ei = calloc(1, sizeof(*ei));

	*out = NULL;
	if (ei == NULL)
		return CIVIS_ENOMEM;
	if (termlog == NULL)
		termlog = TERMLOG_DEFAULT;
	if ((cgroup_root && (ei->root = strdup(cgroup_root)) == NULL) ||
	    (*termlog && (ei->termlog = strdup(termlog)) == NULL)) {
		agent_exitinfo_free(ei);
		return CIVIS_ENOMEM;
	}
	read_limits(ei->root, NULL, &ei->before, ei->mem_dir, sizeof(ei->mem_dir));
	*out = ei;
	return CIVIS_OK;
}

void
agent_exitinfo_free(agent_exitinfo *ei)
{
	if (ei == NULL)
		return;
	free(ei->root);
	free(ei->termlog);
	free(ei);
}

static uint64_t
mem_total(void)
{
	uint64_t kb = 0;

	return read_key("/proc", "meminfo", "MemTotal:", &kb) ? kb * 1024 : 0;
}

void
agent_exitinfo_ended(agent_exitinfo *ei, int term_sig, long maxrss_kb)
{
	const agent_limits *a;
	uint64_t kills = 0, limit, allowed;

	if (ei == NULL)
		return;
	/* The limits stay; the peak and the OOM count have moved. Two files,
	 * where the start found them. */
	ei->after = ei->before;
	if (ei->mem_dir[0] && ei->before.version == 2) {
		(void)read_num(ei->mem_dir, "memory.peak", &ei->after.mem_peak, NULL);
		ei->after.has_oom_count = read_key(ei->mem_dir, "memory.events", "oom_kill",
		                                   &ei->after.oom_kills);
	} else if (ei->mem_dir[0]) {
		(void)read_num(ei->mem_dir, "memory.max_usage_in_bytes", &ei->after.mem_peak, NULL);
		ei->after.has_oom_count = read_key(ei->mem_dir, "memory.oom_control", "oom_kill",
		                                   &ei->after.oom_kills);
	}
	ei->ended = 1;
	a = &ei->after;
	limit = a->mem_max;
	if (ei->before.has_oom_count && a->has_oom_count && a->oom_kills > ei->before.oom_kills)
		kills = a->oom_kills - ei->before.oom_kills;
	if (kills > 0 && term_sig == SIGKILL) {
		ei->oom = 1;
	} else if (kills > 0) {
		ei->other_kills = kills;
	} else if (!a->has_oom_count && term_sig == SIGKILL && limit > 0) {
		/* No count: a SIGKILL with the memory at its limit. The
		 * cgroup's peak is within a page cache's slack of it; a
		 * process's own RSS stays further below. */
		uint64_t slack = limit / 50 > MiB ? limit / 50 : MiB;
		uint64_t rss = maxrss_kb > 0 ? (uint64_t)maxrss_kb * 1024 : 0;

		ei->oom = a->mem_peak ? a->mem_peak + slack >= limit : rss + limit / 10 >= limit;
	}
	if (!ei->oom)
		return;
	allowed = limit ? limit : mem_total();
	ei->allowed_mib = (allowed + MiB / 2) / MiB;
	if (allowed)
		snprintf(ei->oom_line, sizeof(ei->oom_line), "Process ran out of its allowed %llu MiB "
		         "of memory and was killed.", (unsigned long long)ei->allowed_mib);
	else
		snprintf(ei->oom_line, sizeof(ei->oom_line), "Process ran out of its allowed memory "
		         "and was killed.");
}

const char *
agent_exitinfo_oom_line(const agent_exitinfo *ei)
{
	return ei != NULL && ei->oom ? ei->oom_line : NULL;
}

uint64_t
agent_exitinfo_other_oom_kills(const agent_exitinfo *ei)
{
	return ei != NULL ? ei->other_kills : 0;
}

static void
mib_text(char *buf, size_t len, uint64_t bytes)
{
	if (bytes % MiB == 0)
		snprintf(buf, len, "%llu MiB", (unsigned long long)(bytes / MiB));
	else
		snprintf(buf, len, "%.1f MiB", (double)bytes / (double)MiB);
}

size_t
agent_exitinfo_limits_text(const agent_exitinfo *ei, char *buf, size_t len)
{
	const agent_limits *l;
	char lim[32], peak[32];
	int w = 0;

	if (buf == NULL || len == 0)
		return 0;
	buf[0] = '\0';
	if (ei == NULL)
		return 0;
	l = ei->ended ? &ei->after : &ei->before;
	if (l->mem_max) {
		mib_text(lim, sizeof(lim), l->mem_max);
		snprintf(peak, sizeof(peak), "%.1f MiB", (double)l->mem_peak / (double)MiB);
		w = snprintf(buf, len, "memory limit %s%s%s%s", lim, l->mem_peak ? " (peak " : "",
		             l->mem_peak ? peak : "", l->mem_peak ? ")" : "");
	}
	if (w >= 0 && (size_t)w < len && l->cpu_quota_us && l->cpu_period_us)
		w += snprintf(buf + w, len - (size_t)w, "%sCPU quota %.2f CPUs", w ? ", " : "",
		              (double)l->cpu_quota_us / (double)l->cpu_period_us);
	if (w < 0)
		return 0;
	return (size_t)w >= len ? len - 1 : (size_t)w;
}

/* ---- the last error lines and the termination log ------------------------- */

void
agent_exitinfo_feed(void *ud, const char *level, const char *msg, size_t len)
{
	agent_exitinfo *ei = ud;
	char *dst;
	size_t n, i;

	if (ei == NULL || level == NULL || msg == NULL ||
	    (strcmp(level, "error") != 0 && strcmp(level, "fatal") != 0))
		return;
	n = len < AGENT_EXITINFO_LINE_MAX - 1 ? len : AGENT_EXITINFO_LINE_MAX - 1;
	/* Cut on a character boundary. */
	if (n < len)
		while (n > 0 && ((unsigned char)msg[n] & 0xC0) == 0x80)
			n--;
	dst = ei->lines[ei->next];
	for (i = 0; i < n; i++)
		dst[i] = (msg[i] == '\n' || msg[i] == '\r') ? ' ' : msg[i];
	dst[n] = '\0';
	ei->lens[ei->next] = n;
	ei->next = (ei->next + 1) % AGENT_EXITINFO_LINES;
	if (ei->count < AGENT_EXITINFO_LINES)
		ei->count++;
}

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The termination log open for writing, or -1 where it is not a regular
 * file that can be written. Only where Kubernetes put one: never created. */
static int
termlog_open(const char *path)
{
	struct stat st;
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -1;
	}
	return fd;
}

int
agent_exitinfo_termlog_usable(const char *termlog)
{
	int fd;

	if (termlog == NULL)
		termlog = TERMLOG_DEFAULT;
	if (*termlog == '\0' || (fd = termlog_open(termlog)) < 0)
		return 0;
	close(fd);
	return 1;
}

int
agent_exitinfo_write_termlog(agent_exitinfo *ei, const char *summary)
{
	char buf[AGENT_TERMLOG_MAX];
	size_t slen, used, k, first;
	int fd, rc;

	if (ei == NULL || ei->termlog == NULL)
		return 0;
	if (summary != NULL)
		snprintf(ei->summary, sizeof(ei->summary), "%s", summary);
	summary = ei->summary;
	fd = termlog_open(ei->termlog);
	if (fd < 0)
		return 0;
	if (ftruncate(fd, 0) != 0) {
		close(fd);
		return 0;
	}
	slen = strlen(summary);
	if (slen > sizeof(buf) - 1)
		slen = sizeof(buf) - 1;
	/* As many of the newest error lines as fit before the summary. */
	used = slen + 1;
	for (k = 0; k < ei->count; k++) {
		size_t idx = (ei->next + AGENT_EXITINFO_LINES - 1 - k) % AGENT_EXITINFO_LINES;

		if (used + ei->lens[idx] + 1 > sizeof(buf))
			break;
		used += ei->lens[idx] + 1;
	}
	used = 0;
	for (first = k; first > 0; first--) {
		size_t idx = (ei->next + AGENT_EXITINFO_LINES - first) % AGENT_EXITINFO_LINES;

		memcpy(buf + used, ei->lines[idx], ei->lens[idx]);
		used += ei->lens[idx];
		buf[used++] = '\n';
	}
	memcpy(buf + used, summary, slen);
	used += slen;
	buf[used++] = '\n';
	rc = write_all(fd, buf, used) == 0 ? 1 : -1;
	if (close(fd) != 0)
		rc = -1;
	return rc;
}
