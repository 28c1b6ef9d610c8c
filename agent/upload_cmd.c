/* upload_cmd.c: `civis-agent upload [OPTIONS] PATH...`.
 *
 * Uploads every PATH now (at most AGENT_OUTPUTS_MAX_INFLIGHT at once, each
 * with its own part concurrency), then registers them as outputs of the run
 * one at a time in argument order, and prints "<file id>\t<name>" for each
 * as soon as it and every path before it are finished. Same environment as
 * the agent: CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID, CIVIS_API_ENDPOINT;
 * CIVIS_AGENT_EXPIRES_AT, CIVIS_AGENT_MULTIPART_THRESHOLD and
 * CIVIS_AGENT_UPLOAD_CONCURRENCY are defaults for the options of the same
 * name (the command line wins). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "civis/upload.h"
#include "options.h"
#include "outputs.h"
#include "upload_cmd.h"
#include "upload_prep.h"

#define SHOW_MAX   1024
#define MAX_PATHS  10000

enum job_state { J_WAIT = 0, J_UPLOADING, J_UPLOADED, J_FAILED, J_DONE };

struct cmd;

struct job {
	struct cmd *c;
	const char *arg;            /* the path as given */
	char *name;                 /* Civis name */
	civis_upload_kind kind;
	dev_t dev;                  /* what job_prepare classified */
	ino_t ino;
	enum job_state state;
	int64_t file_id;
	civis_upload *u;
};

struct cmd {
	civis_loop *loop;
	civis_http *http;
	civis_client *client;
	civis_run *run;
	struct job *jobs;
	size_t njobs;
	size_t next_start;
	unsigned inflight;
	size_t next_reg;
	int reg_inflight;
	int in_advance;
	int stopping;               /* tearing down: start nothing */
	int no_register;
	const char *expires_at;
	uint64_t threshold;
	unsigned concurrency;
	unsigned failed;
};

void
agent_upload_cmd_usage(FILE *f)
{
	fputs(
"Usage: civis-agent upload [OPTIONS] PATH...\n"
"\n"
"Uploads each PATH to Civis Files now and registers it as an output of the\n"
"running job's run (CIVIS_API_KEY, CIVIS_JOB_ID, CIVIS_RUN_ID). A directory\n"
"is uploaded as one NAME.tar.gz. Prints \"<file id>\\t<name>\" per PATH, in\n"
"argument order; names are escaped (\\n, \\t, \\\\, \\xNN).\n"
"\n"
"  -h, --help                    this text\n"
"      --gzip                    compress each file; its name gets .gz\n"
"      --expires-at TIME         RFC 3339 time, or 'never' (default: 30 days)\n"
"      --name NAME               the Civis name, exactly (one PATH only)\n"
"      --no-register             upload only; do not register as run outputs\n"
"      --multipart-threshold N   files above N bytes go in parts (default 50M)\n"
"      --upload-concurrency N    parts in flight per file, 1 to 64 (default 4)\n"
"\n"
"Exit status: 0 every PATH uploaded (and registered), 1 some failed (one line\n"
"each on stderr), 2 usage error.\n", f);
}

extern char **environ;

/* The job's secrets (the agent's default names), for the names this
 * command shows and sends; NULL when there are none. */
static civis_redact *cmd_redact;

static void
fail_line(const char *arg, const char *text)
{
	char shown[SHOW_MAX], safe[2048], masked[PATH_MAX + 64];

	if (cmd_redact != NULL &&
	    civis_redact_string(cmd_redact, arg, masked, sizeof(masked)) == CIVIS_OK)
		arg = masked;
	agent_outputs_quote(shown, sizeof(shown), arg);
	agent_outputs_escape_text(safe, sizeof(safe), text);
	fprintf(stderr, "civis-agent: upload: %s: %s\n", shown, safe);
}

static void
job_fail(struct job *j, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	fail_line(j->arg, text);
	j->state = J_FAILED;
	j->c->failed++;
}

/* The last component of path, trailing slashes ignored, into buf. */
/* Decide kind and name; on a problem the job is FAILED with its line. */
static void
job_prepare(struct job *j, const char *name_opt, int gzip)
{
	agent_upload_prep p;
	char reason[512];

	if (agent_upload_prepare(&p, j->arg, name_opt, gzip, cmd_redact, reason,
	                         sizeof(reason)) != CIVIS_OK) {
		job_fail(j, "%s", reason);
		return;
	}
	j->kind = p.kind;
	j->dev = p.dev;
	j->ino = p.ino;
	j->name = p.name;           /* the job's now */
}

static void advance(struct cmd *c);

static void
print_done(struct job *j)
{
	char esc[AGENT_OUTPUTS_NAME_MAX];

	agent_outputs_escape(esc, sizeof(esc), j->name);
	printf("%lld\t%s\n", (long long)j->file_id, esc);
	fflush(stdout);
	j->state = J_DONE;
}

static void
on_registered(void *ud, int status, const char *error)
{
	struct job *j = ud;
	struct cmd *c = j->c;

	c->reg_inflight = 0;
	if (status == CIVIS_OK) {
		print_done(j);
	} else {
		job_fail(j, "uploaded as file %lld, but cannot register it as an output of "
		         "the run: %s", (long long)j->file_id,
		         error != NULL && error[0] != '\0' ? error : civis_strerror(status));
	}
	c->next_reg++;
	if (!c->in_advance)
		advance(c);
}

static void
on_progress(void *ud, uint64_t done, uint64_t total, double bytes_per_s)
{
	struct job *j = ud;
	char shown[SHOW_MAX];

	agent_outputs_quote(shown, sizeof(shown), j->arg);
	fprintf(stderr, "civis-agent: upload: %s: %llu of %llu MiB (%.1f MiB/s)\n", shown,
	        (unsigned long long)(done >> 20), (unsigned long long)(total >> 20),
	        bytes_per_s / 1048576.0);
}

static void
on_warn(void *ud, const char *text)
{
	struct job *j = ud;
	char line[1024];

	snprintf(line, sizeof(line), "warning: %s", text);
	fail_line(j->arg, line);
}

static void
on_uploaded(void *ud, int status, int64_t file_id, const char *sha256_hex,
            uint64_t bytes, const char *error)
{
	struct job *j = ud;
	struct cmd *c = j->c;

	(void)sha256_hex;
	(void)bytes;
	j->u = NULL;
	c->inflight--;
	if (status == CIVIS_OK && file_id > 0) {
		j->file_id = file_id;
		j->state = J_UPLOADED;
	} else {
		job_fail(j, "%s", error != NULL && error[0] != '\0' ? error
		         : status == CIVIS_OK ? "no file id in the answer" : civis_strerror(status));
	}
	if (!c->in_advance)
		advance(c);
}

/* The path job_prepare classified, open for reading; -1 (job FAILED) when
 * it cannot be opened or is no longer the same file or directory. */
static int
job_open(struct job *j)
{
	agent_upload_prep p = { .kind = j->kind, .dev = j->dev, .ino = j->ino };
	char reason[256];
	int fd = agent_upload_prep_open(&p, j->arg, reason, sizeof(reason));

	if (fd < 0)
		job_fail(j, "%s", reason);
	return fd;
}

/* Start the next waiting uploads, up to the cap. 1 when one was started
 * (or failed). */
static int
start_jobs(struct cmd *c)
{
	int progress = 0;

	while (c->inflight < AGENT_OUTPUTS_MAX_INFLIGHT && c->next_start < c->njobs) {
		struct job *j = &c->jobs[c->next_start++];
		civis_upload_opts uo;
		civis_upload *u = NULL;
		int rc, fd;

		if (j->state != J_WAIT)
			continue;
		progress = 1;
		fd = job_open(j);
		if (fd < 0)
			continue;
		civis_upload_opts_init(&uo);
		uo.fd = fd;
		uo.path = j->arg;
		uo.name = j->name;
		uo.kind = j->kind;
		uo.expires_at = c->expires_at;
		uo.multipart_threshold = c->threshold;
		uo.concurrency = c->concurrency;
		uo.progress = on_progress;
		uo.done = on_uploaded;
		uo.skip_digest = 1;  /* only the id is printed */
		uo.ud = j;
		uo.loop = c->loop;
		uo.warn = on_warn;
		j->state = J_UPLOADING;
		c->inflight++;
		rc = civis_upload_start(c->client, &uo, &u);
		(void)close(fd);   /* the upload has its own */
		if (rc != CIVIS_OK) {
			c->inflight--;
			job_fail(j, "%s", civis_strerror(rc));
		} else if (j->state == J_UPLOADING) {
			j->u = u;
		}
	}
	return progress;
}

/* Start uploads up to the cap; register (or print) in argument order. */
static void
advance(struct cmd *c)
{
	if (c->stopping)
		return;
	c->in_advance = 1;
	for (;;) {
		int progress = 0;

		progress = start_jobs(c);
		while (!c->reg_inflight && c->next_reg < c->njobs) {
			struct job *j = &c->jobs[c->next_reg];
			int rc;

			if (j->state == J_FAILED || j->state == J_DONE) {
				c->next_reg++;
				progress = 1;
				continue;
			}
			if (j->state != J_UPLOADED)
				break;
			if (c->no_register) {
				print_done(j);
				c->next_reg++;
				progress = 1;
				continue;
			}
			c->reg_inflight = 1;
			rc = civis_run_register_output(c->run, "File", j->file_id, on_registered, j);
			if (rc != CIVIS_OK) {
				c->reg_inflight = 0;
				job_fail(j, "uploaded as file %lld, but cannot register it as an "
				         "output of the run: %s", (long long)j->file_id,
				         civis_strerror(rc));
				c->next_reg++;
			}
			progress = 1;
		}
		if (!progress)
			break;
	}
	c->in_advance = 0;
}

static int
finished(const struct cmd *c)
{
	return c->inflight == 0 && !c->reg_inflight && c->next_reg >= c->njobs &&
	       c->next_start >= c->njobs;
}

static int
usage_error(const char *fmt, ...)
{
	char text[1024], safe[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): clang 14 false positive */
	va_end(ap);
	agent_outputs_escape_text(safe, sizeof(safe), text);
	fprintf(stderr, "civis-agent: upload: %s\n", safe);
	fprintf(stderr, "Try 'civis-agent upload --help'.\n");
	return AGENT_UPLOAD_USAGE;
}

static int
parse_concurrency(const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n < 1 || n > 64)
		return -1;
	*out = (unsigned)n;
	return 0;
}

enum { O_GZIP = 256, O_EXPIRES, O_NAME, O_NO_REGISTER, O_THRESHOLD, O_CONCURRENCY };

/* The environment's defaults, then the command line, into c. -1 to go on,
 * else the exit code (a usage error has been said). */
static int
parse_args(struct cmd *c, int argc, char **argv, const char **name_opt, int *gzip)
{
	static const struct option longopts[] = {
		{ "help",                no_argument,       NULL, 'h' },
		{ "gzip",                no_argument,       NULL, O_GZIP },
		{ "expires-at",          required_argument, NULL, O_EXPIRES },
		{ "name",                required_argument, NULL, O_NAME },
		{ "no-register",         no_argument,       NULL, O_NO_REGISTER },
		{ "multipart-threshold", required_argument, NULL, O_THRESHOLD },
		{ "upload-concurrency",  required_argument, NULL, O_CONCURRENCY },
		{ NULL, 0, NULL, 0 }
	};
	const char *v;
	int ch;

	/* environment defaults first; the command line wins */
	v = getenv("CIVIS_AGENT_EXPIRES_AT");
	if (v != NULL && v[0] != '\0') {
		if (agent_check_expires_at(v) != CIVIS_OK)
			return usage_error("CIVIS_AGENT_EXPIRES_AT: '%s' is not an RFC 3339 time "
			                   "or 'never'", v);
		c->expires_at = v;
	}
	v = getenv("CIVIS_AGENT_MULTIPART_THRESHOLD");
	if (v != NULL && v[0] != '\0') {
		if (agent_parse_size(v, &c->threshold) != CIVIS_OK || c->threshold < CIVIS_UPLOAD_MIN_PART)
			return usage_error("CIVIS_AGENT_MULTIPART_THRESHOLD: '%s' is not a size of "
			                   "at least 5M", v);
	}
	v = getenv("CIVIS_AGENT_UPLOAD_CONCURRENCY");
	if (v != NULL && v[0] != '\0' && parse_concurrency(v, &c->concurrency) != 0)
		return usage_error("CIVIS_AGENT_UPLOAD_CONCURRENCY: '%s' is not a number from "
		                   "1 to 64", v);

	optind = 0;    /* GNU: start over, argv[0] is "upload" */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			agent_upload_cmd_usage(stdout);
			return AGENT_UPLOAD_OK;
		case O_GZIP:
			*gzip = 1;
			break;
		case O_EXPIRES:
			if (agent_check_expires_at(optarg) != CIVIS_OK)
				return usage_error("--expires-at: '%s' is not an RFC 3339 time "
				                   "(2027-01-31T00:00:00Z) or 'never'", optarg);
			c->expires_at = optarg;
			break;
		case O_NAME:
			if (optarg[0] == '\0')
				return usage_error("--name: the name is empty");
			*name_opt = optarg;
			break;
		case O_NO_REGISTER:
			c->no_register = 1;
			break;
		case O_THRESHOLD:
			if (agent_parse_size(optarg, &c->threshold) != CIVIS_OK ||
			    c->threshold < CIVIS_UPLOAD_MIN_PART)
				return usage_error("--multipart-threshold: '%s' is not a size of at "
				                   "least 5M", optarg);
			break;
		case O_CONCURRENCY:
			if (parse_concurrency(optarg, &c->concurrency) != 0)
				return usage_error("--upload-concurrency: '%s' is not a number from "
				                   "1 to 64", optarg);
			break;
		default:
			if (optopt != 0 && optopt < 256)
				return usage_error("unknown option '-%c'", optopt);
			return usage_error("unknown option or missing value: '%s'",
			                   argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return usage_error("no PATH given");
	if ((size_t)(argc - optind) > MAX_PATHS)
		return usage_error("more than %d paths", MAX_PATHS);
	if (*name_opt != NULL && argc - optind != 1)
		return usage_error("--name takes exactly one PATH");
	return -1;
}

/* The loop, HTTP client and run; 0, or -1 when they cannot be set up. */
static int
cmd_setup(struct cmd *c, const civis_client_config *cfg)
{
	civis_run_opts ro;
	char err[512];

	if (civis_loop_new(&c->loop) != CIVIS_OK || civis_http_new(&c->http, c->loop) != CIVIS_OK ||
	    civis_client_new(&c->client, c->loop, c->http, cfg) != CIVIS_OK) {
		fprintf(stderr, "civis-agent: upload: cannot set up the HTTP client\n");
		return -1;
	}
	memset(&ro, 0, sizeof(ro));
	ro.flush_ns = 1000000000ULL;
	if (civis_run_new(&c->run, c->loop, c->client, &ro, err, sizeof(err)) != CIVIS_OK) {
		fprintf(stderr, "civis-agent: upload: %s\n", err);
		return -1;
	}
	return 0;
}

int
agent_upload_cmd_main(int argc, char **argv)
{
	struct cmd c;
	civis_client_config cfg;
	const char *name_opt = NULL, *sock;
	char err[512];
	int gzip = 0, rc;
	size_t i;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	rc = parse_args(&c, argc, argv, &name_opt, &gzip);
	if (rc >= 0)
		return rc;
	/* Inside a command the agent runs, the agent does the work, so it joins
	 * its queue (--no-register: upload here, on our own). */
	sock = getenv("CIVIS_AGENT_SOCKET");
	if (sock != NULL && *sock != '\0' && !c.no_register)
		return agent_upload_via_agent(sock, argv + optind, argc - optind, name_opt, gzip);
	rc = civis_client_config_from_env(&cfg, err, sizeof(err));
	if (rc == CIVIS_ENOTFOUND) {
		fprintf(stderr, "civis-agent: upload: CIVIS_API_KEY, CIVIS_JOB_ID and "
		        "CIVIS_RUN_ID are not set: run this inside a Civis job\n");
		return AGENT_UPLOAD_FAILED;
	}
	if (rc != CIVIS_OK) {
		fprintf(stderr, "civis-agent: upload: %s\n", err);
		return AGENT_UPLOAD_FAILED;
	}
	rc = AGENT_UPLOAD_FAILED;
	if (civis_redact_new(&cmd_redact) != CIVIS_OK ||
	    civis_redact_add_env(cmd_redact, environ, NULL, 0, 1) != CIVIS_OK) {
		fprintf(stderr, "civis-agent: upload: cannot set up secret masking: out of memory\n");
		goto out;
	}
	c.njobs = (size_t)(argc - optind);
	c.jobs = calloc(c.njobs, sizeof(*c.jobs));
	if (c.jobs == NULL) {
		fprintf(stderr, "civis-agent: upload: out of memory\n");
		goto out;
	}
	for (i = 0; i < c.njobs; i++) {
		c.jobs[i].c = &c;
		c.jobs[i].arg = argv[optind + (int)i];
		job_prepare(&c.jobs[i], name_opt, gzip);
	}
	if (cmd_setup(&c, &cfg) != 0)
		goto out;
	advance(&c);
	while (!finished(&c)) {
		int lrc = civis_loop_run_once(c.loop, 1000000000ULL);

		if (lrc != CIVIS_OK) {
			fprintf(stderr, "civis-agent: upload: the event loop failed: %s\n",
			        civis_strerror(lrc));
			break;
		}
	}
	rc = finished(&c) && c.failed == 0 ? AGENT_UPLOAD_OK : AGENT_UPLOAD_FAILED;
out:
	c.stopping = 1;
	if (c.jobs != NULL) {
		for (i = 0; i < c.njobs; i++)
			if (c.jobs[i].state == J_UPLOADING && c.jobs[i].u != NULL)
				civis_upload_cancel(c.jobs[i].u);
	}
	civis_run_free(c.run);
	civis_client_free(c.client);
	civis_http_free(c.http);
	civis_loop_free(c.loop);
	if (c.jobs != NULL) {
		for (i = 0; i < c.njobs; i++)
			free(c.jobs[i].name);
		free(c.jobs);
	}
	civis_client_config_dispose(&cfg);
	civis_redact_free(cmd_redact);
	cmd_redact = NULL;
	return rc;
}
