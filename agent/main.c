/* main.c: civis-agent. Wires the supervisor, the log stream, heartbeats,
 * the cancel poll and the output directory onto one loop, and exits with
 * the command's status. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "logstream.h"
#include "options.h"
#include "outputs.h"
#include "supervise.h"
#include "upload_cmd.h"

extern char **environ;

#define NS 1000000000ULL

typedef struct agent {
	agent_opts o;
	agent_sup *sup;
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_redact *redact;
	agent_logstream *ls;
	civis_run *run;
	agent_outputs *out;
	int child_done;
	uint64_t child_done_at;    /* monotonic */
	uint64_t group_kill_at;    /* SIGKILL the group then, 0: not armed */
	uint64_t stop_deadline;    /* after TERM/INT or cancel: all must be done by then */
	int cancelled;
	int terminated;
	int pipes_done;
	uint64_t flush_deadline;
} agent;

static void
say(const char *fmt, const char *a)
{
	fprintf(stderr, "civis-agent: ");
	fprintf(stderr, fmt, a);
	fputc('\n', stderr);
}

/* Notes from the outputs go to stderr and the run log, but for the routine
 * "uploaded x as file N" lines: one per file, only in the run log unless -v
 * (a thousand small outputs would bury stderr). */
static void
note_cb(void *ud, const char *level, const char *text)
{
	agent *ag = ud;
	char line[1024];

	if (strcmp(level, "info") == 0 && strncmp(text, "uploaded ", 9) == 0 && !ag->o.verbose) {
		snprintf(line, sizeof(line), "civis-agent: %s", text);
		agent_logstream_note_log_only(ag->ls, level, line);
		return;
	}
	agent_logstream_note(ag->ls, level, "%s", text);
}

/* What the run module has to say goes to stderr. */
static void
run_say(void *ud, const char *text)
{
	(void)ud;
	fprintf(stderr, "civis-agent: %s\n", text);
}

static void
on_cancel(void *ud, const char *why)
{
	agent *ag = ud;
	uint64_t now = civis_now_ns();

	if (ag->cancelled)
		return;
	ag->cancelled = 1;
	agent_logstream_note(ag->ls, "warn", "the run was cancelled (%s): sending SIGTERM to the "
	                     "command, SIGKILL after %.1f s", why, (double)ag->o.grace_ns / 1e9);
	if (!ag->child_done) {
		(void)agent_sup_terminate(ag->sup);
		ag->group_kill_at = now + ag->o.grace_ns;
	}
	if (!ag->stop_deadline)
		ag->stop_deadline = now + ag->o.grace_ns + ag->o.final_flush_ns;
}

static void
on_signal(civis_loop *loop, int fd, int revents, void *ud)
{
	agent *ag = ud;
	unsigned ev = 0;

	(void)loop;
	(void)fd;
	(void)revents;
	(void)agent_sup_handle_signals(ag->sup, &ev);
	if ((ev & AGENT_SUP_EV_TERMINATE) && !ag->terminated) {
		uint64_t now = civis_now_ns();

		/* docker stop: the command got the signal; we get what is left
		 * of the grace period to flush, then it is SIGKILL for us all. */
		/* docker stop sends SIGKILL to us all when its own grace period
		 * (like ours, 10 s) is over: SIGKILL the command a little before
		 * that (a quarter of the grace period, at most 1 s), so its last
		 * lines still get out. */
		uint64_t reserve = ag->o.grace_ns / 4 < NS ? ag->o.grace_ns / 4 : NS;

		ag->terminated = 1;
		if (!ag->child_done && !ag->group_kill_at)
			ag->group_kill_at = now + ag->o.grace_ns - reserve;
		ag->stop_deadline = now + ag->o.grace_ns;
	}
}

static const char *
signame(int sig)
{
	const char *s = sigabbrev_np(sig);

	return s ? s : "?";
}

/* The run summary: how the command ended, its resources, what streamed. */
static void
summary(agent *ag, int code)
{
	agent_sup_usage u;
	agent_logstream_stats st;
	char how[64], line[512];
	int sig = agent_sup_child_signal(ag->sup);

	agent_sup_child_usage(ag->sup, &u);
	agent_logstream_stats_get(ag->ls, &st);
	if (sig)
		snprintf(how, sizeof(how), "was killed by signal %d (SIG%s)", sig, signame(sig));
	else
		snprintf(how, sizeof(how), "exited with status %d", code);
	snprintf(line, sizeof(line), "civis-agent: command %s; wall time %.3f s, CPU %.3f s "
	         "(user %.3f s, system %.3f s), peak RSS %.1f MiB; streamed %llu lines, %llu bytes",
	         how, (double)u.wall_ns / 1e9, (double)(u.user_us + u.sys_us) / 1e6,
	         (double)u.user_us / 1e6, (double)u.sys_us / 1e6, (double)u.maxrss_kb / 1024.0,
	         (unsigned long long)st.lines, (unsigned long long)st.bytes);
	agent_logstream_note_log_only(ag->ls, "info", line);
	if (ag->o.verbose)
		fprintf(stderr, "%s\n", line);
}

static void
verbose_report(agent *ag)
{
	agent_logstream_stats st;
	struct rusage ru;

	/* The agent's own footprint, for benchmarks and the curious. VmHWM is
	 * the peak of this process alone: ru_maxrss also takes in what the
	 * forked child touched before its exec. */
	{
		FILE *f = fopen("/proc/self/status", "r");
		char l[256];

		while (f && fgets(l, sizeof(l), f))
			if (strncmp(l, "VmHWM:", 6) == 0)
				fprintf(stderr, "civis-agent: agent peak RSS (VmHWM): %s", l + 6 + strspn(l + 6, " \t"));
		if (f)
			fclose(f);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		fprintf(stderr, "civis-agent: agent usage: CPU %.3f s (user %.3f s, system %.3f s), "
		        "peak RSS %ld KiB\n",
		        (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
		        (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
		        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
		        ru.ru_maxrss);

	agent_logstream_stats_get(ag->ls, &st);
	fprintf(stderr, "civis-agent: delivery: %llu messages delivered (%llu lines from the "
	        "command) in %llu requests; "
	        "%llu possible duplicate tries; %llu dropped; %llu undelivered; "
	        "log memory peak %llu bytes, spool %llu bytes\n",
	        (unsigned long long)st.delivered, (unsigned long long)st.lines,
	        (unsigned long long)st.requests, (unsigned long long)st.ambiguous,
	        (unsigned long long)st.dropped, (unsigned long long)st.undelivered,
	        (unsigned long long)st.mem_peak, (unsigned long long)st.spool_bytes);
	if (ag->run) {
		civis_run_watch_stats rs;

		civis_run_watch_stats_get(ag->run, &rs);
		fprintf(stderr, "civis-agent: heartbeats: %llu sent, %llu failed; cancel polls: "
		        "%llu, %llu failed\n", (unsigned long long)rs.heartbeats_ok,
		        (unsigned long long)rs.heartbeats_failed, (unsigned long long)rs.polls_ok,
		        (unsigned long long)rs.polls_failed);
	}
}

static int
setup_api(agent *ag, int *api_on)
{
	civis_client_config cfg;
	char err[512];
	int rc;

	*api_on = 0;
	rc = civis_client_config_from_env(&cfg, err, sizeof(err));
	if (rc == CIVIS_ENOTFOUND) {
		say("%s", "CIVIS_API_KEY, CIVIS_JOB_ID and CIVIS_RUN_ID are not set: running the "
		    "command without the Civis API (output is only copied through)");
		if (ag->o.output_dir)
			say("--output-dir %s is ignored without the Civis API", ag->o.output_dir);
		return 0;
	}
	if (rc != CIVIS_OK) {
		say("%s", err);
		return -1;
	}
	civis_client_config_dispose(&cfg);
	*api_on = 1;
	return 0;
}

int
main(int argc, char **argv)
{
	agent ag;
	char err[512];
	int rc, api_on = 0, out_fd = -1, err_fd = -1, exited = 0, code = 0;
	civis_client_config cfg;
	agent_logstream_opts lo;

	if (argc > 1 && strcmp(argv[1], "upload") == 0)
		return agent_upload_cmd_main(argc - 1, argv + 1);

	memset(&ag, 0, sizeof(ag));
	memset(&cfg, 0, sizeof(cfg));
	setvbuf(stderr, NULL, _IONBF, 0);
	rc = agent_opts_parse(&ag.o, argc, argv, NULL, NULL, err, sizeof(err));
	if (rc == AGENT_OPTS_HELP) {
		agent_opts_usage(stdout);
		return 0;
	}
	if (rc == AGENT_OPTS_VERSION) {
		printf("civis-agent %s\n", civis_version());
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "civis-agent: %s\nTry 'civis-agent --help'.\n", err);
		agent_opts_dispose(&ag.o);
		return 2;
	}
	if (setup_api(&ag, &api_on) != 0) {
		agent_opts_dispose(&ag.o);
		return 2;
	}

	/* The command may write into the output directory at once. */
	if (api_on && ag.o.output_dir &&
	    agent_outputs_mkdir(ag.o.output_dir, err, sizeof(err)) != CIVIS_OK)
		say("%s", err);

	/* The command first: no network call before it runs. */
	{
		agent_sup_opts so = { .signal_child_only = ag.o.signal_child_only };

		if (agent_sup_init(&ag.sup, &so) != CIVIS_OK) {
			say("%s", "cannot set up signal handling; exiting");
			agent_opts_dispose(&ag.o);
			return 126;
		}
	}
	rc = agent_sup_spawn(ag.sup, ag.o.argv, &out_fd, &err_fd, err, sizeof(err));
	if (rc != CIVIS_OK)
		say("%s", err);

	/* Masking needs the secrets before any line is streamed. */
	if (api_on || ag.o.redact_tee) {
		rc = civis_redact_new(&ag.redact);
		if (rc == CIVIS_OK)
			rc = civis_redact_add_env(ag.redact, environ, ag.o.redact, ag.o.nredact,
			                          ag.o.default_redact);
		if (rc == CIVIS_ETOOBIG) {
			/* what fitted is masked; streaming the rest could leak */
			say("%s", "the secrets to mask are over the 4 MiB limit; not streaming logs "
			    "(the command's output is only copied through)");
			api_on = 0;
		} else if (rc != CIVIS_OK) {
			say("%s", "cannot set up secret masking: out of memory; not streaming logs");
			api_on = 0;
		}
	}
	if (civis_loop_new(&ag.loop) != CIVIS_OK) {
		say("%s", "cannot create the event loop; copying output only");
		api_on = 0;
	}
	if (api_on) {
		if (civis_client_config_from_env(&cfg, err, sizeof(err)) != CIVIS_OK ||
		    civis_http_new(&ag.http, ag.loop) != CIVIS_OK ||
		    civis_client_new(&ag.client, ag.loop, ag.http, &cfg) != CIVIS_OK) {
			say("%s", "cannot set up the API client; copying output only");
			api_on = 0;
		}
		civis_client_config_dispose(&cfg);
	}
	if (api_on) {
		civis_run_opts ro = {
			.flush_ns = ag.o.flush_ns, .batch_lines = (size_t)ag.o.batch_lines,
			.batch_bytes = (size_t)ag.o.batch_bytes, .mem_max = (size_t)ag.o.log_mem_max,
			.spool_max = ag.o.spool_max, .spool_dir = ag.o.spool_dir,
			.verbose = ag.o.verbose, .say = run_say, .say_ud = &ag,
		};

		if (civis_run_new(&ag.run, ag.loop, ag.client, &ro, err, sizeof(err)) != CIVIS_OK) {
			say("%s", err);
			api_on = 0;
		}
	}

	memset(&lo, 0, sizeof(lo));
	lo.tee = ag.o.tee;
	lo.redact_tee = ag.o.redact_tee;
	lo.verbose = ag.o.verbose;
	lo.level[AGENT_STDOUT] = ag.o.stdout_level;
	lo.level[AGENT_STDERR] = ag.o.stderr_level;
	lo.flush_ns = ag.o.flush_ns;
	lo.line_max = (size_t)ag.o.line_max;
	lo.spool_dir = ag.o.spool_dir;
	lo.redact = ag.redact;
	lo.run = api_on ? ag.run : NULL;
	if (!ag.loop || agent_logstream_new(&ag.ls, ag.loop, &lo, err, sizeof(err)) != CIVIS_OK) {
		/* Without the loop there is nothing to stream with: the
		 * command still runs and its status still comes back. */
		if (ag.loop)
			say("%s", err);
		goto fallback;
	}
	if (out_fd >= 0)
		(void)agent_logstream_add_pipe(ag.ls, AGENT_STDOUT, out_fd, STDOUT_FILENO);
	if (err_fd >= 0)
		(void)agent_logstream_add_pipe(ag.ls, AGENT_STDERR, err_fd, STDERR_FILENO);
	out_fd = err_fd = -1;
	(void)civis_loop_add_io(ag.loop, agent_sup_signal_fd(ag.sup), POLLIN, on_signal, &ag);

	if (api_on) {
		civis_run_watch_opts wo = {
			.heartbeat_ns = ag.o.heartbeat_ns, .cancel_poll_ns = ag.o.cancel_poll_ns,
			.on_cancel = on_cancel, .ud = &ag,
		};

		if (civis_run_watch(ag.run, &wo) != CIVIS_OK)
			say("%s", "cannot start heartbeats and the cancel poll: out of memory");
		if (ag.o.output_dir) {
			agent_outputs_opts oo = {
				.dir = ag.o.output_dir, .archives = ag.o.archives,
				.narchives = ag.o.narchives, .archive_dirs = ag.o.archive_dirs,
				.gzip = ag.o.gzip, .expires_at = ag.o.expires_at,
				.multipart_threshold = ag.o.multipart_threshold,
				.concurrency = (unsigned)ag.o.upload_concurrency,
				.tmp_dir = ag.o.spool_dir, .note = note_cb, .ud = &ag,
			};

			if (agent_outputs_new(&ag.out, ag.loop, ag.client, &oo, err, sizeof(err)) != CIVIS_OK)
				agent_logstream_note(ag.ls, "error", "outputs will not be uploaded: %s", err);
		}
	}

	/* The loop: run until the command is done, its output drained and
	 * delivered, or the deadlines say stop. */
	for (;;) {
		uint64_t now;

		uint64_t wait = ag.child_done ? 50000000ULL : 1000000000ULL;

		/* Wake up for the SIGKILL deadline exactly, not up to a wait late. */
		now = civis_now_ns();
		if (ag.group_kill_at)
			wait = ag.group_kill_at <= now ? 0 :
			       ag.group_kill_at - now < wait ? ag.group_kill_at - now : wait;
		(void)civis_loop_run_once(ag.loop, wait);
		now = civis_now_ns();
		if (!ag.child_done) {
			agent_sup_child_status(ag.sup, &exited, &code);
			if (exited) {
				ag.child_done = 1;
				ag.child_done_at = now;
				/* Documented: what is left of the command's group gets
				 * SIGTERM now and SIGKILL after the grace period. */
				if (agent_sup_group_alive(ag.sup)) {
					(void)agent_sup_kill_group(ag.sup, SIGTERM);
					ag.group_kill_at = now + ag.o.grace_ns;
				} else {
					ag.group_kill_at = 0;
				}
			}
		}
		if (ag.group_kill_at && now >= ag.group_kill_at) {
			if (agent_sup_group_alive(ag.sup)) {
				agent_logstream_note(ag.ls, "warn", "the command's processes outlived the "
				                     "grace period (%.1f s): sending SIGKILL",
				                     (double)ag.o.grace_ns / 1e9);
				(void)agent_sup_kill_group(ag.sup, SIGKILL);
			}
			ag.group_kill_at = 0;
		}
		if (!ag.child_done)
			continue;
		if (!ag.pipes_done) {
			/* Grandchildren may hold the pipes: drain until EOF, or
			 * until the group is gone and the grace period is over. */
			if (!agent_logstream_eof(ag.ls) &&
			    now < ag.child_done_at + ag.o.grace_ns + NS / 2 &&
			    !(ag.stop_deadline && now >= ag.stop_deadline))
				continue;
			agent_logstream_close_pipes(ag.ls);
			ag.pipes_done = 1;
			summary(&ag, code);
			agent_logstream_finish(ag.ls);
			if (ag.out)
				agent_outputs_command_exited(ag.out);
			ag.flush_deadline = now + ag.o.final_flush_ns;
			if (ag.stop_deadline && ag.stop_deadline < ag.flush_deadline)
				ag.flush_deadline = ag.stop_deadline;
		}
		/* Notes made now (uploads finishing, registrations) need not
		 * wait for a flush tick: seal them at once. */
		agent_logstream_finish(ag.ls);
		/* Logs get --final-flush-timeout; output uploads (bounded by
		 * their own retries) run to their end, unless a SIGTERM, SIGINT
		 * or cancel set a stop deadline. */
		if ((agent_logstream_idle(ag.ls) || now >= ag.flush_deadline) &&
		    (!ag.out || agent_outputs_idle(ag.out) ||
		     (ag.stop_deadline && now >= ag.stop_deadline)))
			break;
	}

	/* Say what could not be finished, never silently. */
	{
		agent_logstream_stats st;

		agent_logstream_stats_get(ag.ls, &st);
		if (st.undelivered && ag.client && civis_client_auth_rejected(ag.client))
			fprintf(stderr, "civis-agent: %llu log lines were not delivered: the API key "
			        "was rejected\n", (unsigned long long)st.undelivered);
		else if (st.undelivered && ag.stop_deadline && ag.stop_deadline <= ag.flush_deadline)
			fprintf(stderr, "civis-agent: %llu log lines could not be delivered to the "
			        "run log in time (stopped: grace period %.1f s)\n",
			        (unsigned long long)st.undelivered, (double)ag.o.grace_ns / 1e9);
		else if (st.undelivered)
			fprintf(stderr, "civis-agent: %llu log lines could not be delivered to the "
			        "run log in time (final flush timeout %.1f s)\n",
			        (unsigned long long)st.undelivered, (double)ag.o.final_flush_ns / 1e9);
		if (st.dropped)
			fprintf(stderr, "civis-agent: %llu log lines were dropped\n",
			        (unsigned long long)st.dropped);
	}
	if (ag.out && !agent_outputs_idle(ag.out))
		agent_outputs_report_unfinished(ag.out);
	/* Members SIGKILLed just now: reap them, or they become zombies of
	 * the system's init when we are only a subreaper. */
	if (agent_sup_group_alive(ag.sup)) {
		(void)agent_sup_kill_group(ag.sup, SIGKILL);
		(void)agent_sup_wait_group(ag.sup, NS);
	}
	if (ag.o.verbose)
		verbose_report(&ag);
	agent_sup_child_status(ag.sup, &exited, &code);
	if (ag.out && code == 0 && agent_outputs_failed(ag.out) > 0)
		code = AGENT_EXIT_OUTPUT_FAILED;
	else if (code >= 0 && code < 256 && ag.o.remap[code])
		code = 0;

	agent_outputs_free(ag.out);
	agent_logstream_free(ag.ls);
	civis_run_free(ag.run);
	civis_client_free(ag.client);
	civis_http_free(ag.http);
	civis_loop_free(ag.loop);
	civis_redact_free(ag.redact);
	agent_sup_free(ag.sup);
	agent_opts_dispose(&ag.o);
	return code;

fallback:
	/* No loop: copy nothing, just supervise until the command is done. */
	{
		char buf[65536];
		struct pollfd p[3];

		for (;;) {
			int n = 0;

			p[n].fd = agent_sup_signal_fd(ag.sup); p[n++].events = POLLIN;
			if (out_fd >= 0) { p[n].fd = out_fd; p[n++].events = POLLIN; }
			if (err_fd >= 0) { p[n].fd = err_fd; p[n++].events = POLLIN; }
			(void)poll(p, (nfds_t)n, 1000);
			(void)agent_sup_handle_signals(ag.sup, NULL);
			for (int i = 1; i < n; i++) {
				ssize_t r;

				if (!(p[i].revents & (POLLIN | POLLHUP)))
					continue;
				r = read(p[i].fd, buf, sizeof(buf));
				if (r > 0) {
					if (write(p[i].fd == out_fd ? 1 : 2, buf, (size_t)r) < 0) {
						/* the reader went away: keep draining */
					}
				} else if (r == 0 || errno != EAGAIN) {
					close(p[i].fd);
					if (p[i].fd == out_fd) out_fd = -1; else err_fd = -1;
				}
			}
			agent_sup_child_status(ag.sup, &exited, &code);
			if (exited && out_fd < 0 && err_fd < 0)
				break;
		}
		civis_run_free(ag.run);
		civis_client_free(ag.client);
		civis_http_free(ag.http);
		civis_loop_free(ag.loop);
		civis_redact_free(ag.redact);
		agent_sup_free(ag.sup);
		agent_opts_dispose(&ag.o);
		if (code >= 0 && code < 256 && ag.o.remap[code])
			code = 0;
		return code;
	}
}
