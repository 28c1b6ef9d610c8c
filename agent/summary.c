/* summary.c: the end-of-run messages. See summary.h. */
#include "summary.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static const char *
signame(int sig)
{
	const char *s = sigabbrev_np(sig);

	return s ? s : "?";
}

void
agent_summary_note(agent_logstream *ls, const agent_sup *sup, agent_exitinfo *ei,
                   int code, int verbose, int passthrough)
{
	agent_sup_usage u;
	agent_logstream_stats st;
	char how[64], limits[160], streamed[96], line[768];
	int sig = agent_sup_child_signal(sup);
	const char *oom = agent_exitinfo_oom_line(ei);
	uint64_t other = agent_exitinfo_other_oom_kills(ei);

	agent_sup_child_usage(sup, &u);
	agent_logstream_stats_get(ls, &st);
	agent_exitinfo_limits_text(ei, limits, sizeof(limits));
	if (oom) {
		agent_logstream_note_log_only(ls, "error", oom);
		fprintf(stderr, "civis-agent: %s\n", oom);
	} else if (other) {
		agent_logstream_note(ls, "warn", "the kernel's OOM killer ended %llu of the command's "
		                     "processes; %s", (unsigned long long)other,
		                     limits[0] ? limits : "no memory limit is set");
	}
	if (sig)
		snprintf(how, sizeof(how), "was killed by signal %d (SIG%s)", sig, signame(sig));
	else
		snprintf(how, sizeof(how), "exited with status %d", code);
	if (passthrough)
		snprintf(streamed, sizeof(streamed), "output straight through, not read");
	else
		snprintf(streamed, sizeof(streamed), "streamed %llu lines, %llu bytes",
		         (unsigned long long)st.lines, (unsigned long long)st.bytes);
	snprintf(line, sizeof(line), "civis-agent: command %s; wall time %.3f s, CPU %.3f s "
	         "(user %.3f s, system %.3f s), peak RSS %.1f MiB; %s%s%s%s%s",
	         how, (double)u.wall_ns / 1e9, (double)(u.user_us + u.sys_us) / 1e6,
	         (double)u.user_us / 1e6, (double)u.sys_us / 1e6, (double)u.maxrss_kb / 1024.0,
	         streamed, limits[0] ? "; " : "", limits, oom ? ". " : "", oom ? oom : "");
	agent_logstream_note_log_only(ls, "info", line);
	if (verbose)
		fprintf(stderr, "%s\n", line);
	(void)agent_exitinfo_write_termlog(ei, line);
}

void
agent_summary_unfinished(const agent_logstream *ls, int auth_rejected, int stopped,
                         uint64_t grace_ns, uint64_t final_flush_ns)
{
	agent_logstream_stats st;

	agent_logstream_stats_get(ls, &st);
	if (st.undelivered && auth_rejected)
		fprintf(stderr, "civis-agent: %llu log lines were not delivered: the API key "
		        "was rejected\n", (unsigned long long)st.undelivered);
	else if (st.undelivered && stopped)
		fprintf(stderr, "civis-agent: %llu log lines could not be delivered to the "
		        "run log in time (stopped: grace period %.1f s)\n",
		        (unsigned long long)st.undelivered, (double)grace_ns / 1e9);
	else if (st.undelivered)
		fprintf(stderr, "civis-agent: %llu log lines could not be delivered to the "
		        "run log in time (final flush timeout %.1f s)\n",
		        (unsigned long long)st.undelivered, (double)final_flush_ns / 1e9);
	if (st.dropped)
		fprintf(stderr, "civis-agent: %llu log lines were dropped\n",
		        (unsigned long long)st.dropped);
}

static double
tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void
agent_summary_verbose(const agent_logstream *ls, const civis_run *run)
{
	agent_logstream_stats st;
	struct rusage ru;
	FILE *f;
	char l[256];

	/* VmHWM is the peak of this process alone: ru_maxrss also takes in
	 * what the forked child touched before its exec. */
	f = fopen("/proc/self/status", "r");
	while (f && fgets(l, sizeof(l), f))
		if (strncmp(l, "VmHWM:", 6) == 0)
			fprintf(stderr, "civis-agent: agent peak RSS (VmHWM): %s", l + 6 + strspn(l + 6, " \t"));
	if (f)
		fclose(f);
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		fprintf(stderr, "civis-agent: agent usage: CPU %.3f s (user %.3f s, system %.3f s), "
		        "peak RSS %ld KiB\n", tv_s(ru.ru_utime) + tv_s(ru.ru_stime),
		        tv_s(ru.ru_utime), tv_s(ru.ru_stime), ru.ru_maxrss);

	agent_logstream_stats_get(ls, &st);
	fprintf(stderr, "civis-agent: delivery: %llu messages delivered (%llu lines from the "
	        "command) in %llu requests; "
	        "%llu possible duplicate tries; %llu dropped; %llu undelivered; "
	        "log memory peak %llu bytes, spool %llu bytes\n",
	        (unsigned long long)st.delivered, (unsigned long long)st.lines,
	        (unsigned long long)st.requests, (unsigned long long)st.ambiguous,
	        (unsigned long long)st.dropped, (unsigned long long)st.undelivered,
	        (unsigned long long)st.mem_peak, (unsigned long long)st.spool_bytes);
	if (st.backlog_peak)
		fprintf(stderr, "civis-agent: log backlog: peak %llu bytes of raw output (cap %llu); "
		        "reading paused %llu times by the cap, %.1f s in all; nothing dropped\n",
		        (unsigned long long)st.backlog_peak, (unsigned long long)st.backlog_cap,
		        (unsigned long long)st.backlog_pauses, (double)st.backlog_paused_ns / 1e9);
	if (run) {
		civis_run_watch_stats rs;

		civis_run_watch_stats_get(run, &rs);
		fprintf(stderr, "civis-agent: heartbeats: %llu sent, %llu failed; cancel polls: "
		        "%llu, %llu failed\n", (unsigned long long)rs.heartbeats_ok,
		        (unsigned long long)rs.heartbeats_failed, (unsigned long long)rs.polls_ok,
		        (unsigned long long)rs.polls_failed);
	}
}
