/* test_exitinfo.c: /proc/self/cgroup paths, the limits of fake cgroup v2
 * and v1 trees (the tightest of the ancestors), the OOM decision (a count
 * that grew, or a SIGKILL at the limit), the limits text, the ring of last
 * error lines and the termination log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "../../agent/exitinfo.h"

#define MiB (1024ULL * 1024ULL)

static char root[64];

static void
put(const char *rel, const char *text)
{
	char path[256], dir[256], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	*slash = '\0';
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
fresh_root(void)
{
	snprintf(root, sizeof(root), "/tmp/civis-exitinfo-XXXXXX");
	assert_non_null(mkdtemp(root));
}

static void
rm_root(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

static void
test_cgroup_path(void **state)
{
	const char *v1 = "12:pids:/a\n4:memory:/process_api/x\n3:cpu,cpuacct:/c/d\n"
	                 "1:name=systemd:/init.scope\n0::/unified/path\n";
	char out[64], tiny[4];
	(void)state;

	assert_int_equal(agent_cgroup_path(v1, "memory", out, sizeof(out)), 0);
	assert_string_equal(out, "/process_api/x");
	assert_int_equal(agent_cgroup_path(v1, "cpu", out, sizeof(out)), 0);
	assert_string_equal(out, "/c/d");
	assert_int_equal(agent_cgroup_path(v1, "cpuacct", out, sizeof(out)), 0);
	assert_string_equal(out, "/c/d");
	assert_int_equal(agent_cgroup_path(v1, "", out, sizeof(out)), 0);
	assert_string_equal(out, "/unified/path");
	assert_int_equal(agent_cgroup_path(v1, "blkio", out, sizeof(out)), -1);
	assert_int_equal(agent_cgroup_path(v1, "systemd", out, sizeof(out)), -1);
	assert_int_equal(agent_cgroup_path(v1, "memory", tiny, sizeof(tiny)), -1);
	/* v2 only, no final newline. */
	assert_int_equal(agent_cgroup_path("0::/", "", out, sizeof(out)), 0);
	assert_string_equal(out, "/");
	assert_int_equal(agent_cgroup_path("0::/", "memory", out, sizeof(out)), -1);
	assert_int_equal(agent_cgroup_path("", "", out, sizeof(out)), -1);
	assert_int_equal(agent_cgroup_path("garbage", "", out, sizeof(out)), -1);
}

/* v2: the process sits in /a/b; /a has the tighter memory limit, /a the
 * CPU quota; peak and OOM count are b's own. */
static void
test_limits_v2(void **state)
{
	char cg[128];
	agent_limits l;
	(void)state;

	fresh_root();
	put("cgroup.controllers", "cpu memory\n");
	put("a/memory.max", "67108864\n");
	put("a/cpu.max", "50000 100000\n");
	put("a/b/memory.max", "134217728\n");
	put("a/b/cpu.max", "max 100000\n");
	put("a/b/memory.peak", "66060288\n");
	put("a/b/memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n");
	snprintf(cg, sizeof(cg), "%s/proc-cgroup", root);
	put("proc-cgroup", "0::/a/b\n");
	agent_limits_read(root, cg, &l);
	assert_int_equal(l.version, 2);
	assert_int_equal(l.mem_max, 64 * MiB);
	assert_int_equal(l.mem_peak, 63 * MiB);
	assert_int_equal(l.has_oom_count, 1);
	assert_int_equal(l.oom_kills, 2);
	assert_int_equal(l.cpu_quota_us, 50000);
	assert_int_equal(l.cpu_period_us, 100000);

	/* A path that is not there: the root itself (a cgroup namespace). */
	put("proc-cgroup", "0::/elsewhere\n");
	put("memory.max", "max\n");
	put("cpu.max", "250000 100000\n");
	agent_limits_read(root, cg, &l);
	assert_int_equal(l.version, 2);
	assert_int_equal(l.mem_max, 0);
	assert_int_equal(l.mem_peak, 0);
	assert_int_equal(l.has_oom_count, 0);
	assert_int_equal(l.cpu_quota_us, 250000);
	rm_root();
}

static void
test_limits_v1(void **state)
{
	char cg[128];
	agent_limits l;
	(void)state;

	fresh_root();
	put("memory/job/memory.limit_in_bytes", "9223372036854771712\n");
	put("memory/job/memory.stat", "cache 0\nrss 1\nhierarchical_memory_limit 100663296\n"
	    "hierarchical_memsw_limit 9223372036854771712\n");
	put("memory/job/memory.max_usage_in_bytes", "1048576\n");
	put("memory/job/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n");
	put("cpu,cpuacct/job/cpu.cfs_quota_us", "-1\n");
	put("cpu,cpuacct/job/cpu.cfs_period_us", "100000\n");
	put("cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
	put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
	snprintf(cg, sizeof(cg), "%s/proc-cgroup", root);
	put("proc-cgroup", "4:memory:/job\n3:cpu,cpuacct:/job\n0::/\n");
	agent_limits_read(root, cg, &l);
	assert_int_equal(l.version, 1);
	assert_int_equal(l.mem_max, 96 * MiB);
	assert_int_equal(l.mem_peak, MiB);
	assert_int_equal(l.has_oom_count, 1);
	assert_int_equal(l.oom_kills, 5);
	assert_int_equal(l.cpu_quota_us, 200000);
	assert_int_equal(l.cpu_period_us, 100000);

	/* An old kernel without the oom_kill count; no limit at all. */
	put("memory/job/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
	put("memory/job/memory.stat", "cache 0\n");
	agent_limits_read(root, cg, &l);
	assert_int_equal(l.has_oom_count, 0);
	assert_int_equal(l.mem_max, 0);
	rm_root();

	/* Nothing there. */
	fresh_root();
	agent_limits_read(root, cg, &l);
	assert_int_equal(l.version, 0);
	assert_int_equal(l.mem_max, 0);
	agent_limits_read("/nonexistent/cgroup", "/nonexistent/cgroup", &l);
	assert_int_equal(l.version, 0);
	rm_root();
}

/* exitinfo reads the real /proc/self/cgroup: a fake root has none of its
 * paths, so its top level stands for the agent's cgroup. */
static agent_exitinfo *
v2_info(const char *events, const char *peak)
{
	agent_exitinfo *ei = NULL;

	put("cgroup.controllers", "memory\n");
	put("memory.max", "67108864\n");
	put("memory.peak", peak);
	put("memory.events", events);
	put("cpu.max", "150000 100000\n");
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	return ei;
}

static void
test_oom_by_count(void **state)
{
	agent_exitinfo *ei;
	char buf[256];
	(void)state;

	fresh_root();
	ei = v2_info("oom 0\noom_kill 0\n", "67108864\n");
	put("memory.events", "oom 1\noom_kill 1\n");
	agent_exitinfo_ended(ei, SIGKILL, 60000);
	assert_string_equal(agent_exitinfo_oom_line(ei),
	                    "Process ran out of its allowed 64 MiB of memory and was killed.");
	assert_int_equal(agent_exitinfo_other_oom_kills(ei), 0);
	agent_exitinfo_limits_text(ei, buf, sizeof(buf));
	assert_string_equal(buf, "memory limit 64 MiB (peak 64.0 MiB), CPU quota 1.50 CPUs");
	agent_exitinfo_free(ei);

	/* The count grew but the command was not SIGKILLed: one of its
	 * children was; the command's end is not an OOM. */
	ei = v2_info("oom_kill 3\n", "1048576\n");
	put("memory.events", "oom_kill 4\n");
	agent_exitinfo_ended(ei, 0, 1000);
	assert_null(agent_exitinfo_oom_line(ei));
	assert_int_equal(agent_exitinfo_other_oom_kills(ei), 1);
	agent_exitinfo_free(ei);

	/* SIGKILL, count unchanged: someone's kill -9, not memory. */
	ei = v2_info("oom_kill 3\n", "67108864\n");
	agent_exitinfo_ended(ei, SIGKILL, 60000);
	assert_null(agent_exitinfo_oom_line(ei));
	assert_int_equal(agent_exitinfo_other_oom_kills(ei), 0);
	agent_exitinfo_free(ei);
	rm_root();
}

static void
test_oom_without_count(void **state)
{
	agent_exitinfo *ei = NULL;
	(void)state;

	fresh_root();
	/* v1 without oom_kill: a SIGKILL with the peak at the limit. */
	put("memory/memory.limit_in_bytes", "104857600\n");
	put("memory/memory.max_usage_in_bytes", "104726528\n");
	put("memory/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	agent_exitinfo_ended(ei, SIGKILL, 1000);
	assert_string_equal(agent_exitinfo_oom_line(ei),
	                    "Process ran out of its allowed 100 MiB of memory and was killed.");
	agent_exitinfo_free(ei);
	/* The peak far below: not memory. */
	put("memory/memory.max_usage_in_bytes", "10485760\n");
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	agent_exitinfo_ended(ei, SIGKILL, 1000);
	assert_null(agent_exitinfo_oom_line(ei));
	agent_exitinfo_free(ei);
	/* No peak known: the command's RSS near the limit. */
	{
		char p[128];

		snprintf(p, sizeof(p), "%s/memory/memory.max_usage_in_bytes", root);
		assert_int_equal(unlink(p), 0);
	}
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	agent_exitinfo_ended(ei, SIGKILL, 95 * 1024);
	assert_non_null(agent_exitinfo_oom_line(ei));
	agent_exitinfo_free(ei);
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	agent_exitinfo_ended(ei, SIGKILL, 20 * 1024);
	assert_null(agent_exitinfo_oom_line(ei));
	/* Not SIGKILL: never memory. */
	agent_exitinfo_ended(ei, SIGTERM, 99 * 1024);
	assert_null(agent_exitinfo_oom_line(ei));
	agent_exitinfo_free(ei);
	rm_root();
}

static void
test_oom_no_limit(void **state)
{
	agent_exitinfo *ei;
	char buf[128];
	const char *line;
	unsigned long long n;
	(void)state;

	/* Killed for memory with no limit set: the machine's memory is
	 * what it was allowed. */
	fresh_root();
	put("cgroup.controllers", "memory\n");
	put("memory.max", "max\n");
	put("memory.events", "oom_kill 0\n");
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	agent_exitinfo_limits_text(ei, buf, sizeof(buf));
	assert_string_equal(buf, "");
	put("memory.events", "oom_kill 1\n");
	agent_exitinfo_ended(ei, SIGKILL, 0);
	line = agent_exitinfo_oom_line(ei);
	assert_non_null(line);
	assert_int_equal(sscanf(line, "Process ran out of its allowed %llu MiB of memory and was "
	                        "killed.", &n), 1);
	assert_true(n > 0);
	agent_exitinfo_free(ei);
	rm_root();

	/* NULL is harmless everywhere. */
	agent_exitinfo_ended(NULL, SIGKILL, 0);
	assert_null(agent_exitinfo_oom_line(NULL));
	assert_int_equal(agent_exitinfo_other_oom_kills(NULL), 0);
	assert_int_equal(agent_exitinfo_limits_text(NULL, buf, sizeof(buf)), 0);
	assert_int_equal(agent_exitinfo_write_termlog(NULL, "x"), 0);
	agent_exitinfo_feed(NULL, "error", "x", 1);
	agent_exitinfo_free(NULL);
}

static size_t
slurp(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

static void
test_termlog(void **state)
{
	agent_exitinfo *ei = NULL;
	static const char old[] = "old content that must go away, longer than what replaces it\n";
	char path[128], buf[8192], want[4096], msg[64], big[700];
	struct stat st;
	FILE *f;
	int i;
	(void)state;

	fresh_root();
	snprintf(path, sizeof(path), "%s/termination-log", root);
	/* Not there: not created. */
	assert_int_equal(agent_exitinfo_termlog_usable(path), 0);
	assert_int_equal(agent_exitinfo_new(&ei, root, path), CIVIS_OK);
	assert_int_equal(agent_exitinfo_write_termlog(ei, "summary"), 0);
	assert_int_equal(stat(path, &st), -1);
	agent_exitinfo_free(ei);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs(old, f);
	fclose(f);
	/* Asking does not touch it. */
	assert_int_equal(agent_exitinfo_termlog_usable(path), 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, strlen(old));
	assert_int_equal(agent_exitinfo_new(&ei, root, path), CIVIS_OK);
	for (i = 0; i < 12; i++) {
		snprintf(msg, sizeof(msg), "error %d\nsecond half", i);
		agent_exitinfo_feed(ei, i % 2 ? "error" : "fatal", msg, strlen(msg));
		agent_exitinfo_feed(ei, "info", "not an error", 12);
		agent_exitinfo_feed(ei, "warn", "not an error", 12);
	}
	assert_int_equal(agent_exitinfo_write_termlog(ei, "civis-agent: command exited with status 1"), 1);
	{
		size_t w = 0;

		for (i = 2; i < 12; i++)
			w += (size_t)snprintf(want + w, sizeof(want) - w, "error %d second half\n", i);
		snprintf(want + w, sizeof(want) - w, "civis-agent: command exited with status 1\n");
	}
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, want);
	/* Later errors join; NULL keeps the summary. */
	agent_exitinfo_feed(ei, "error", "upload failed", 13);
	assert_int_equal(agent_exitinfo_write_termlog(ei, NULL), 1);
	slurp(path, buf, sizeof(buf));
	assert_non_null(strstr(buf, "error 11 second half\nupload failed\ncivis-agent: command exited "
	                            "with status 1\n"));
	assert_null(strstr(buf, "error 2 "));

	/* Long lines: each cut to 511 bytes or less, on a character boundary
	 * (510 here: the character across the cut goes whole), and no
	 * more than 4096 bytes in all, the newest lines kept. */
	memset(big, 'a', sizeof(big));
	big[510] = (char)0xc3;        /* a 2-byte character across the cut at 511 */
	big[511] = (char)0xa9;
	for (i = 0; i < 10; i++) {
		big[0] = (char)('0' + i);
		agent_exitinfo_feed(ei, "error", big, sizeof(big));
	}
	assert_int_equal(agent_exitinfo_write_termlog(ei, "summary"), 1);
	assert_true(slurp(path, buf, sizeof(buf)) <= AGENT_TERMLOG_MAX);
	assert_non_null(strstr(buf, "9aaa"));
	assert_null(strstr(buf, "0aaa"));
	assert_int_equal(strlen(buf) - strlen(strstr(buf, "9aaa")) + 510 + strlen("\nsummary\n"),
	                 strlen(buf));
	assert_null(strchr(buf, (char)0xc3));
	assert_int_equal(strcmp(buf + strlen(buf) - 9, "\nsummary\n"), 0);
	agent_exitinfo_free(ei);

	/* Off, a directory or a FIFO (no reader: no wait) in its place:
	 * nothing written, and nothing would be. */
	assert_int_equal(agent_exitinfo_termlog_usable(""), 0);
	assert_int_equal(agent_exitinfo_termlog_usable(root), 0);
	snprintf(path, sizeof(path), "%s/fifo", root);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(agent_exitinfo_termlog_usable(path), 0);
	unlink(path);
	assert_int_equal(agent_exitinfo_new(&ei, root, ""), CIVIS_OK);
	assert_int_equal(agent_exitinfo_write_termlog(ei, "summary"), 0);
	agent_exitinfo_free(ei);
	assert_int_equal(agent_exitinfo_new(&ei, root, root), CIVIS_OK);
	assert_int_equal(agent_exitinfo_write_termlog(ei, "summary"), 0);
	agent_exitinfo_free(ei);
	rm_root();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cgroup_path),
		cmocka_unit_test(test_limits_v2),
		cmocka_unit_test(test_limits_v1),
		cmocka_unit_test(test_oom_by_count),
		cmocka_unit_test(test_oom_without_count),
		cmocka_unit_test(test_oom_no_limit),
		cmocka_unit_test(test_termlog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
