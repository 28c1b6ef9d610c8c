/* main.c: civis-agent. Wires the supervisor, the log stream, heartbeats,
 * the cancel poll and the output directory onto one loop, and exits with
 * the command's status.
 *
 * Three phases, each a page: setup (options, the API configuration read
 * once, the command started before any network call, then masking, the
 * loop, the client, the log stream, the watchers), run (the loop until the
 * command is done, its output drained and delivered, or a deadline says
 * stop) and shutdown (say what could not be finished, reap, exit code,
 * free). Without a loop, run_copy_only() stands in for run and shutdown. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/logbatch.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "exitinfo.h"
#include "civis/run.h"
#include "jobcmd.h"
#include "jobwork.h"
#include "logstream.h"
#include "options.h"
#include "outputs.h"
#include "summary.h"
#include "supervise.h"
#include "upload_cmd.h"

extern char **environ;

#define NS 1000000000ULL
#define AFTER_EXIT_BUDGET 80     /* % of the rate limit once the command exited */

typedef struct agent {
	agent_opts o;
	civis_client_config cfg;   /* read once in setup_api, disposed once the client has it */
	int api_on;
	int passthrough;           /* the command writes straight to our stdout/stderr: no pipes */
	agent_sup *sup;
	int out_fd, err_fd;        /* the command's pipes until the log stream takes them */
	char start_err[512];       /* why the command could not be run, said once the log stream is up */
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_redact *redact;
	agent_logstream *ls;
	civis_run *run;
	agent_outputs *out;
	agent_jobwork *jw;         /* the job API and CIVIS_OUTPUT (API on only) */
	agent_exitinfo *ei;        /* limits, OOM kill, termination log; NULL if out of memory */
	int child_done;
	int code;                  /* the command's exit code once child_done */
	uint64_t child_done_at;    /* monotonic */
	uint64_t kill_at;    /* SIGKILL what is left then, 0: not armed */
	uint64_t stop_deadline;    /* after TERM/INT or cancel: all must be done by then */
	int cancelled;
	int terminated;
	int pipes_done;
	uint64_t flush_deadline;
	uint64_t accepted_ns, started_ns; /* realtime: the agent, the command started */
} agent;

static void
say(const char *fmt, const char *a)
{
	fprintf(stderr, "civis-agent: ");
	fprintf(stderr, fmt, a);
	fputc('\n', stderr);
}

/* ---- callbacks ---------------------------------------------------------- */

/* Notes from the outputs go to stderr and the run log, but for the routine
 * "uploaded x as file N" lines: one per file, only in the run log unless -v
 * (a thousand small outputs would bury stderr). */
static void
note_cb(void *ud, const char *level, const char *text)
{
	agent *ag = ud;

	/* whole text: masked first, then cut (a cut here could show a secret) */
	if (strcmp(level, "info") == 0 && strncmp(text, "uploaded ", 9) == 0 && !ag->o.verbose) {
		agent_logstream_note_log_onlyf(ag->ls, level, "%s", text);
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
		ag->kill_at = now + ag->o.grace_ns;
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
		 * of the grace period to flush, then it is SIGKILL for us all.
		 * docker stop sends SIGKILL to us all when its own grace period
		 * (like ours, 10 s) is over: SIGKILL the command a little before
		 * that (a quarter of the grace period, at most 1 s), so its last
		 * lines still get out. */
		uint64_t reserve = ag->o.grace_ns / 4 < NS ? ag->o.grace_ns / 4 : NS;

		ag->terminated = 1;
		if (!ag->child_done && !ag->kill_at)
			ag->kill_at = now + ag->o.grace_ns - reserve;
		ag->stop_deadline = now + ag->o.grace_ns;
	}
}

/* ---- setup -------------------------------------------------------------- */

/* Returns 0 to run, else 1 with *code the exit code (help, version, usage). */
static int
setup_options(agent *ag, int argc, char **argv, int *code)
{
	char err[512];
	int rc = agent_opts_parse(&ag->o, argc, argv, NULL, NULL, err, sizeof(err));

	*code = 0;
	if (rc == AGENT_OPTS_HELP) {
		agent_opts_usage(stdout);
		return 1;
	}
	if (rc == AGENT_OPTS_VERSION) {
		printf("civis-agent %s\n", civis_version());
		return 1;
	}
	if (rc < 0) {
		fprintf(stderr, "civis-agent: %s\nTry 'civis-agent --help'.\n", err);
		*code = 2;
		return 1;
	}
	return 0;
}

/* The one read of the API configuration from the environment: ag->cfg,
 * ag->api_on. -1 when it is set but wrong (exit 2). */
static int
setup_api(agent *ag)
{
	char err[512];
	int rc = civis_client_config_from_env(&ag->cfg, err, sizeof(err));

	ag->api_on = 0;
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
	ag->api_on = 1;
	return 0;
}

/* Nothing in the agent needs the command's output without the API (no
 * run log to stream it to), with the tee on and nothing to mask in it
 * (--redact-tee) and no termination log (whose summary counts the bytes):
 * the command then writes straight to our stdout and stderr, as under
 * tini, with no pipe and no copy in between. */
static void
setup_passthrough(agent *ag)
{
	ag->passthrough = !ag->api_on && ag->o.tee && !ag->o.redact_tee &&
	                  !agent_exitinfo_termlog_usable(ag->o.termination_log);
	if (ag->passthrough && ag->o.verbose)
		say("%s", "the command's output goes straight to the agent's stdout and stderr "
		    "(nothing to stream, mask or keep)");
}

/* The command first: no network call before it runs. -1: no supervisor
 * (exit 126). Why a command could not be run (the child's errno comes back
 * through a close-on-exec pipe) waits in ag->start_err for the log stream,
 * so that it reaches the run log too; its exit code comes from the
 * supervisor. */
static int
start_command(agent *ag)
{
	agent_sup_opts so = {
		.signal_child_only = ag->o.signal_child_only, .inherit_output = ag->passthrough,
	};

	if (agent_sup_init(&ag->sup, &so) != CIVIS_OK) {
		say("%s", "cannot set up signal handling; exiting");
		return -1;
	}
	if (agent_sup_spawn(ag->sup, ag->o.argv, &ag->out_fd, &ag->err_fd, ag->start_err,
	                    sizeof(ag->start_err)) == CIVIS_OK)
		ag->start_err[0] = '\0';
	else if (ag->start_err[0] == '\0')
		snprintf(ag->start_err, sizeof(ag->start_err), "cannot run the command");
	/* The OOM count to compare with, once the command runs. */
	if (agent_exitinfo_new(&ag->ei, ag->o.cgroup_root, ag->o.termination_log) != CIVIS_OK)
		say("%s", "out of memory: the summary will not say whether the command ran out of memory");
	return 0;
}

/* The start failure, once: on stderr and in the run log (masked) when
 * there is a log stream, else on stderr alone. */
static void
say_start_error(agent *ag)
{
	if (ag->start_err[0] == '\0')
		return;
	if (ag->ls)
		agent_logstream_note(ag->ls, "error", "%s", ag->start_err);
	else
		say("%s", ag->start_err);
	ag->start_err[0] = '\0';
}

/* Masking needs the secrets before any line is streamed; a failure turns
 * the API off (streaming could leak). */
static void
setup_redact(agent *ag)
{
	int rc;

	if (!ag->api_on && !ag->o.redact_tee)
		return;
	rc = civis_redact_new(&ag->redact);
	if (rc == CIVIS_OK)
		rc = civis_redact_add_env(ag->redact, environ, ag->o.redact, ag->o.nredact,
		                          ag->o.default_redact);
	if (rc == CIVIS_ETOOBIG) {
		/* what fitted is masked; streaming the rest could leak */
		say("%s", "the secrets to mask are over the 4 MiB limit; not streaming logs "
		    "(the command's output is only copied through)");
		ag->api_on = 0;
	} else if (rc != CIVIS_OK) {
		say("%s", "cannot set up secret masking: out of memory; not streaming logs");
		ag->api_on = 0;
	}
}

/* The loop, then the API client on it (from ag->cfg, disposed here). */
static void
setup_client(agent *ag)
{
	if (civis_loop_new(&ag->loop) != CIVIS_OK) {
		say("%s", "cannot create the event loop; copying output only");
		ag->api_on = 0;
	}
	if (ag->api_on &&
	    (civis_http_new(&ag->http, ag->loop) != CIVIS_OK ||
	     civis_client_new(&ag->client, ag->loop, ag->http, &ag->cfg) != CIVIS_OK)) {
		say("%s", "cannot set up the API client; copying output only");
		ag->api_on = 0;
	}
	if (ag->api_on && ag->o.verbose) {
		char px[200];

		if (civis_http_proxy_for(ag->http, ag->cfg.endpoint, px, sizeof(px)) == CIVIS_OK)
			say(px[0] ? "API requests go through the proxy %s" : "API requests go direct%s", px);
	}
	/* --api-budget: the transport keeps the agent's own calls to it */
	if (ag->api_on)
		(void)civis_http_set_budget(ag->http, ag->o.api_budget_pct ? ag->o.api_budget_pct : 100,
		                            ag->o.api_rate_limit, ag->o.api_rate_window_ns / 1000000);
	civis_client_config_dispose(&ag->cfg);
	if (ag->api_on) {
		civis_run_opts ro = {
			.flush_ns = ag->o.flush_ns, .batch_lines = (size_t)ag->o.batch_lines,
			.batch_bytes = (size_t)ag->o.batch_bytes, .mem_max = (size_t)ag->o.log_mem_max,
			.spool_max = ag->o.spool_max, .spool_dir = ag->o.spool_dir,
			.verbose = ag->o.verbose, .say = run_say, .say_ud = ag,
		};
		char err[512];

		if (civis_run_new(&ag->run, ag->loop, ag->client, &ro, err, sizeof(err)) != CIVIS_OK) {
			say("%s", err);
			ag->api_on = 0;
		}
	}
}

/* The log stream takes the command's pipes (none in pass-through) and the
 * signalfd joins the loop. Leaves ag->ls NULL when there is nothing to
 * stream with. */
static void
setup_logstream(agent *ag)
{
	agent_logstream_opts lo;
	char err[512];

	memset(&lo, 0, sizeof(lo));
	lo.tee = ag->o.tee;
	lo.redact_tee = ag->o.redact_tee;
	lo.verbose = ag->o.verbose;
	lo.level[AGENT_STDOUT] = ag->o.stdout_level;
	lo.level[AGENT_STDERR] = ag->o.stderr_level;
	lo.detect_levels = ag->o.detect_levels;
	lo.flush_ns = ag->o.flush_ns;
	lo.line_max = (size_t)ag->o.line_max;
	lo.backlog_max = ag->o.spool_max;
	lo.spool_dir = ag->o.spool_dir;
	lo.redact = ag->redact;
	lo.run = ag->api_on ? ag->run : NULL;
	/* The last error lines, for the termination log. */
	lo.on_message = ag->ei ? agent_exitinfo_feed : NULL;
	lo.on_message_ud = ag->ei;
	if (!ag->loop)
		return;
	if (agent_logstream_new(&ag->ls, ag->loop, &lo, err, sizeof(err)) != CIVIS_OK) {
		ag->ls = NULL;
		say("%s", err);
		return;
	}
	if (ag->out_fd >= 0)
		(void)agent_logstream_add_pipe(ag->ls, AGENT_STDOUT, ag->out_fd, STDOUT_FILENO);
	if (ag->err_fd >= 0)
		(void)agent_logstream_add_pipe(ag->ls, AGENT_STDERR, ag->err_fd, STDERR_FILENO);
	ag->out_fd = ag->err_fd = -1;
	(void)civis_loop_add_io(ag->loop, agent_sup_signal_fd(ag->sup), POLLIN, on_signal, ag);
}

/* Heartbeats, the cancel poll and the output directory (API on only). */
static void
setup_watchers(agent *ag)
{
	civis_run_watch_opts wo = {
		.heartbeat_ns = ag->o.heartbeat_ns, .cancel_poll_ns = ag->o.cancel_poll_ns,
		.on_cancel = on_cancel, .ud = ag,
	};
	agent_outputs_opts oo = {
		.dir = ag->o.output_dir, .archives = ag->o.archives,
		.narchives = ag->o.narchives, .archive_dirs = ag->o.archive_dirs,
		.gzip = ag->o.gzip, .expires_at = ag->o.expires_at,
		.multipart_threshold = ag->o.multipart_threshold,
		.concurrency = (unsigned)ag->o.upload_concurrency,
		.tmp_dir = ag->o.spool_dir, .run = ag->run, .redact = ag->redact,
		.note = note_cb, .ud = ag,
	};
	char err[512];

	if (!ag->api_on)
		return;
	if (ag->o.report_state) {
		(void)civis_run_report(ag->run, CIVIS_RUN_ACCEPTED, ag->accepted_ns);
		(void)civis_run_report(ag->run, CIVIS_RUN_STARTED, ag->started_ns);
	}
	if (civis_run_watch(ag->run, &wo) != CIVIS_OK)
		say("%s", "cannot start heartbeats and the cancel poll: out of memory");
	if (ag->o.output_dir &&
	    agent_outputs_new(&ag->out, ag->loop, ag->client, &oo, err, sizeof(err)) != CIVIS_OK)
		agent_logstream_note(ag->ls, "error", "outputs will not be uploaded: %s", err);
	if (ag->jw)
		agent_jobwork_attach(ag->jw, ag->loop, ag->client, ag->run, ag->redact, ag->out,
		                     note_cb, ag);
}

static void teardown(agent *ag);

/* Returns 0 to run, else 1 with *code the exit code (everything freed). */
static int
setup(agent *ag, int argc, char **argv, int *code)
{
	char err[512];

	memset(ag, 0, sizeof(*ag));
	ag->accepted_ns = civis_clock_realtime_ns();
	ag->out_fd = ag->err_fd = -1;
	setvbuf(stderr, NULL, _IONBF, 0);
	if (setup_options(ag, argc, argv, code) != 0)
		goto stop;
	if (setup_api(ag) != 0) {
		*code = 2;
		goto stop;
	}
	setup_passthrough(ag);
	/* The command may write into the output directory at once. */
	if (ag->api_on && ag->o.output_dir &&
	    agent_outputs_mkdir(ag->o.output_dir, err, sizeof(err)) != CIVIS_OK)
		say("%s", err);
	/* The job API's socket and CIVIS_OUTPUT: in the command's environment */
	if (ag->api_on) {
		agent_jobwork_opts jo = {
			.tmp_dir = ag->o.spool_dir, .json_output_name = ag->o.json_output_name,
			.expires_at = ag->o.expires_at, .multipart_threshold = ag->o.multipart_threshold,
			.concurrency = (unsigned)ag->o.upload_concurrency,
		};

		if (agent_jobwork_new(&ag->jw, &jo) != CIVIS_OK)
			say("%s", "out of memory: no job API and no CIVIS_OUTPUT");
	}
	if (start_command(ag) != 0) {
		*code = 126;
		goto stop;
	}
	ag->started_ns = civis_clock_realtime_ns();
	setup_redact(ag);
	setup_client(ag);
	setup_logstream(ag);
	say_start_error(ag);
	if (ag->ls)
		setup_watchers(ag);
	return 0;
stop:
	teardown(ag);
	return 1;
}

/* ---- run ---------------------------------------------------------------- */

/* How long the loop may sleep: wake up for the SIGKILL deadline exactly,
 * not up to a wait late. */
static uint64_t
loop_wait(const agent *ag, uint64_t now)
{
	uint64_t wait = ag->child_done ? 50000000ULL : NS;

	if (ag->kill_at)
		wait = ag->kill_at <= now ? 0 :
		       ag->kill_at - now < wait ? ag->kill_at - now : wait;
	return wait;
}

/* Documented (supervise.h): what the command left running, in its group or
 * not, gets SIGTERM now and SIGKILL after the grace period. */
static void
left_behind(agent *ag, uint64_t now)
{
	size_t n = agent_sup_rest_alive(ag->sup);

	ag->kill_at = 0;
	if (n == 0)
		return;
	agent_logstream_note(ag->ls, "warn", "the command exited and left %zu process%s "
	                     "running: sending SIGTERM, SIGKILL after %.1f s", n,
	                     n == 1 ? "" : "es", (double)ag->o.grace_ns / 1e9);
	(void)agent_sup_kill_rest(ag->sup, SIGTERM);
	ag->kill_at = now + ag->o.grace_ns;
}

/* The command's exit, and the SIGTERM/SIGKILL of what it left behind. */
static void
watch_command(agent *ag, uint64_t now)
{
	int exited = 0;

	if (!ag->child_done) {
		agent_sup_child_status(ag->sup, &exited, &ag->code);
		if (exited) {
			ag->child_done = 1;
			ag->child_done_at = now;
			left_behind(ag, now);
		}
	}
	if (ag->kill_at && now >= ag->kill_at) {
		if (agent_sup_rest_alive(ag->sup)) {
			agent_logstream_note(ag->ls, "warn", "the command's processes outlived the "
			                     "grace period (%.1f s): sending SIGKILL",
			                     (double)ag->o.grace_ns / 1e9);
			(void)agent_sup_kill_rest(ag->sup, SIGKILL);
		}
		ag->kill_at = 0;
	}
}

/* The command's output has ended: its pipes are at EOF; or, when it wrote
 * straight to ours, none of the processes it left runs (they would have
 * held the pipes): the grace period is theirs all the same. */
static int
output_ended(agent *ag)
{
	if (ag->passthrough)
		return agent_sup_rest_alive(ag->sup) == 0;
	return agent_logstream_eof(ag->ls);
}

/* Once the command is gone: drain, summarise, finish the log, hand over to
 * the outputs. Returns 1 when everything is delivered or a deadline says
 * stop. */
static int
wind_down(agent *ag, uint64_t now)
{
	agent_sup_usage u;
	int outs_done;

	if (!ag->pipes_done) {
		/* Grandchildren may hold the pipes: drain until EOF, or until
		 * what was left is gone and the grace period is over. */
		if (!output_ended(ag) &&
		    now < ag->child_done_at + ag->o.grace_ns + NS / 2 &&
		    !(ag->stop_deadline && now >= ag->stop_deadline))
			return 0;
		agent_logstream_close_pipes(ag->ls);
		ag->pipes_done = 1;
		agent_sup_child_usage(ag->sup, &u);
		agent_exitinfo_ended(ag->ei, agent_sup_child_signal(ag->sup), u.maxrss_kb);
		agent_summary_note(ag->ls, ag->sup, ag->ei, ag->code, ag->o.verbose, ag->passthrough);
		agent_logstream_finish(ag->ls);
		civis_run_log_final(ag->run);     /* the final flush comes first */
		/* The command's own API calls stopped with it (README: the rate limit) */
		if (ag->http && ag->o.api_budget_pct > 0 && ag->o.api_budget_pct < AFTER_EXIT_BUDGET)
			(void)civis_http_set_budget(ag->http, AFTER_EXIT_BUDGET, ag->o.api_rate_limit,
			                            ag->o.api_rate_window_ns / 1000000);
		if (ag->out)
			agent_outputs_command_exited(ag->out);
		if (ag->jw)
			agent_jobwork_command_exited(ag->jw);
		ag->flush_deadline = now + ag->o.final_flush_ns;
		if (ag->stop_deadline && ag->stop_deadline < ag->flush_deadline)
			ag->flush_deadline = ag->stop_deadline;
	}
	/* Notes made now (uploads finishing, registrations) share log
	 * requests on the flush tick like every other line; once the outputs
	 * are done, the last ones are sealed at once. */
	outs_done = (!ag->out || agent_outputs_idle(ag->out)) &&
	            (!ag->jw || agent_jobwork_poll(ag->jw));
	if (outs_done)
		agent_logstream_finish(ag->ls);
	/* Logs get --final-flush-timeout; output uploads (bounded by their
	 * own retries) run to their end, unless a SIGTERM, SIGINT or cancel
	 * set a stop deadline. */
	return (agent_logstream_idle(ag->ls) || now >= ag->flush_deadline) &&
	       (outs_done || (ag->stop_deadline && now >= ag->stop_deadline));
}

static void
run(agent *ag)
{
	for (;;) {
		uint64_t now = civis_now_ns();

		(void)civis_loop_run_once(ag->loop, loop_wait(ag, now));
		now = civis_now_ns();
		watch_command(ag, now);
		if (ag->child_done && wind_down(ag, now))
			break;
	}
}

/* ---- shutdown ----------------------------------------------------------- */

/* The exit code: the command's, 3 when it succeeded but an output failed,
 * 0 for a code in --exit-code-remap. */
static int
final_code(const agent *ag, int code)
{
	if (code == 0 && ((ag->out && agent_outputs_failed(ag->out) > 0) ||
	                  agent_jobwork_failed(ag->jw) > 0))
		return AGENT_EXIT_OUTPUT_FAILED;
	if (code >= 0 && code < 256 && ag->o.remap[code])
		return 0;
	return code;
}

/* Free everything, in the order the pieces depend on each other. */
static void
teardown(agent *ag)
{
	agent_jobwork_free(ag->jw);
	ag->jw = NULL;
	agent_outputs_free(ag->out);
	agent_logstream_free(ag->ls);
	civis_run_free(ag->run);
	civis_client_free(ag->client);
	civis_http_free(ag->http);
	civis_loop_free(ag->loop);
	civis_redact_free(ag->redact);
	civis_client_config_dispose(&ag->cfg);
	agent_exitinfo_free(ag->ei);
	agent_sup_free(ag->sup);
	agent_opts_dispose(&ag->o);
	ag->out = NULL;
	ag->run = NULL;
	ag->ls = NULL;
	ag->client = NULL;
	ag->http = NULL;
	ag->loop = NULL;
	ag->redact = NULL;
	ag->ei = NULL;
	ag->sup = NULL;
}

/* --report-state: the run's end, unless the platform cancelled it (its
 * state is already final). Waits for the PATCHes, a few seconds at most. */
static void
report_final_state(agent *ag, int code)
{
	uint64_t end = civis_now_ns() + 5 * NS;

	if (!ag->o.report_state || !ag->run || ag->cancelled)
		return;
	if (ag->stop_deadline && ag->stop_deadline < end)
		end = ag->stop_deadline;
	(void)civis_run_report(ag->run, code == 0 ? CIVIS_RUN_SUCCEEDED : CIVIS_RUN_FAILED,
	                       civis_clock_realtime_ns());
	while (civis_run_pending(ag->run) > 0 && civis_now_ns() < end)
		(void)civis_loop_run_once(ag->loop, 50000000ULL);
}

static int
shutdown_agent(agent *ag)
{
	int code = 0;

	/* Say what could not be finished, never silently. */
	agent_summary_unfinished(ag->ls, ag->client && civis_client_auth_rejected(ag->client),
	                         ag->stop_deadline && ag->stop_deadline <= ag->flush_deadline,
	                         ag->o.grace_ns, ag->o.final_flush_ns);
	if (ag->out && !agent_outputs_idle(ag->out))
		agent_outputs_report_unfinished(ag->out);
	if (ag->jw && !agent_jobwork_poll(ag->jw))
		agent_jobwork_report_unfinished(ag->jw);
	/* What is still running gets SIGKILL; what was killed (now or at the
	 * deadline) is reaped, or it becomes a zombie of the system's init
	 * when we are only a subreaper. */
	if (agent_sup_rest_alive(ag->sup))
		(void)agent_sup_kill_rest(ag->sup, SIGKILL);
	(void)agent_sup_wait_rest(ag->sup, NS);
	/* The error lines since the summary (failed uploads) join it. */
	(void)agent_exitinfo_write_termlog(ag->ei, NULL);
	if (ag->o.verbose)
		agent_summary_verbose(ag->ls, ag->run);
	agent_sup_child_status(ag->sup, NULL, &code);
	code = final_code(ag, code);
	report_final_state(ag, code);
	teardown(ag);
	return code;
}

/* No loop: copy nothing but the bytes, just supervise until the command is
 * done and its pipes are closed; then shut down. */
static int
run_copy_only(agent *ag)
{
	char buf[65536];
	struct pollfd p[3];
	int exited = 0, code = 0;

	for (;;) {
		int n = 0;

		p[n].fd = agent_sup_signal_fd(ag->sup); p[n++].events = POLLIN;
		if (ag->out_fd >= 0) { p[n].fd = ag->out_fd; p[n++].events = POLLIN; }
		if (ag->err_fd >= 0) { p[n].fd = ag->err_fd; p[n++].events = POLLIN; }
		(void)poll(p, (nfds_t)n, 1000);
		(void)agent_sup_handle_signals(ag->sup, NULL);
		for (int i = 1; i < n; i++) {
			ssize_t r;

			if (!(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			r = read(p[i].fd, buf, sizeof(buf));
			if (r > 0) {
				if (write(p[i].fd == ag->out_fd ? 1 : 2, buf, (size_t)r) < 0) {
					/* the reader went away: keep draining */
				}
			} else if (r == 0 || errno != EAGAIN) {
				close(p[i].fd);
				if (p[i].fd == ag->out_fd) ag->out_fd = -1; else ag->err_fd = -1;
			}
		}
		agent_sup_child_status(ag->sup, &exited, &code);
		if (exited && ag->out_fd < 0 && ag->err_fd < 0)
			break;
	}
	if (code >= 0 && code < 256 && ag->o.remap[code])
		code = 0;
	teardown(ag);
	return code;
}

int
main(int argc, char **argv)
{
	agent ag;
	int code;

	if (argc > 1 && strcmp(argv[1], "upload") == 0)
		return agent_upload_cmd_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "mask") == 0)
		return agent_mask_cmd_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "output") == 0)
		return agent_output_cmd_main(argc - 1, argv + 1);
	if (setup(&ag, argc, argv, &code) != 0)
		return code;
	if (!ag.ls)
		return run_copy_only(&ag);
	run(&ag);
	return shutdown_agent(&ag);
}
