/* options.c: command line and environment, parsed before anything runs. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/logbatch.h"
#include "options.h"

enum {
	OPT_NO_TEE = 256, OPT_GRACE, OPT_SIGNAL_CHILD_ONLY, OPT_STDOUT_LEVEL,
	OPT_STDERR_LEVEL, OPT_FLUSH, OPT_FINAL_FLUSH, OPT_LINE_MAX, OPT_BATCH_LINES,
	OPT_BATCH_BYTES, OPT_LOG_MEM, OPT_SPOOL_MAX, OPT_SPOOL_DIR, OPT_HEARTBEAT,
	OPT_CANCEL_POLL, OPT_REDACT, OPT_NO_DEFAULT_REDACT, OPT_REDACT_TEE,
	OPT_OUTPUT_DIR, OPT_ARCHIVE, OPT_ARCHIVE_DIRS, OPT_GZIP, OPT_EXPIRES_AT,
	OPT_MULTIPART_THRESHOLD, OPT_UPLOAD_CONCURRENCY,
	/* one a line, with its comma: options added later merge without a fight */
	OPT_NO_DETECT_LEVELS,
	OPT_CGROUP_ROOT,
	OPT_TERMINATION_LOG,
	OPT_API_BUDGET,
	OPT_REPORT_STATE,
	OPT_JSON_OUTPUT_NAME,
};

/* Each long option, its environment twin and whether it takes a value. */
static const struct opt_def {
	const char *name;
	int id;
	int has_arg;
	const char *env;
} opt_defs[] = {
	{ "help",                 'h', 0, NULL },
	{ "version",              'V', 0, NULL },
	{ "verbose",              'v', 0, "CIVIS_AGENT_VERBOSE" },
	{ "no-tee",               OPT_NO_TEE, 0, "CIVIS_AGENT_NO_TEE" },
	{ "grace-period",         OPT_GRACE, 1, "CIVIS_AGENT_GRACE_PERIOD" },
	{ "signal-child-only",    OPT_SIGNAL_CHILD_ONLY, 0, "CIVIS_AGENT_SIGNAL_CHILD_ONLY" },
	{ "exit-code-remap",      'e', 1, "CIVIS_AGENT_EXIT_CODE_REMAP" },
	{ "cgroup-root",          OPT_CGROUP_ROOT, 1, "CIVIS_AGENT_CGROUP_ROOT" },
	{ "termination-log",      OPT_TERMINATION_LOG, 1, "CIVIS_AGENT_TERMINATION_LOG" },
	{ "stdout-level",         OPT_STDOUT_LEVEL, 1, "CIVIS_AGENT_STDOUT_LEVEL" },
	{ "stderr-level",         OPT_STDERR_LEVEL, 1, "CIVIS_AGENT_STDERR_LEVEL" },
	{ "no-detect-levels",     OPT_NO_DETECT_LEVELS, 0, "CIVIS_AGENT_NO_DETECT_LEVELS" },
	{ "log-flush-interval",   OPT_FLUSH, 1, "CIVIS_AGENT_LOG_FLUSH_INTERVAL" },
	{ "final-flush-timeout",  OPT_FINAL_FLUSH, 1, "CIVIS_AGENT_FINAL_FLUSH_TIMEOUT" },
	{ "log-line-max",         OPT_LINE_MAX, 1, "CIVIS_AGENT_LOG_LINE_MAX" },
	{ "log-batch-lines",      OPT_BATCH_LINES, 1, "CIVIS_AGENT_LOG_BATCH_LINES" },
	{ "log-batch-bytes",      OPT_BATCH_BYTES, 1, "CIVIS_AGENT_LOG_BATCH_BYTES" },
	{ "log-memory-max",       OPT_LOG_MEM, 1, "CIVIS_AGENT_LOG_MEMORY_MAX" },
	{ "spool-max",            OPT_SPOOL_MAX, 1, "CIVIS_AGENT_SPOOL_MAX" },
	{ "spool-dir",            OPT_SPOOL_DIR, 1, "CIVIS_AGENT_SPOOL_DIR" },
	{ "heartbeat-interval",   OPT_HEARTBEAT, 1, "CIVIS_AGENT_HEARTBEAT_INTERVAL" },
	{ "cancel-poll-interval", OPT_CANCEL_POLL, 1, "CIVIS_AGENT_CANCEL_POLL_INTERVAL" },
	{ "api-budget",           OPT_API_BUDGET, 1, "CIVIS_AGENT_API_BUDGET" },
	{ "report-state",         OPT_REPORT_STATE, 0, "CIVIS_AGENT_REPORT_STATE" },
	{ "json-output-name",     OPT_JSON_OUTPUT_NAME, 1, "CIVIS_AGENT_JSON_OUTPUT_NAME" },
	{ "redact",               OPT_REDACT, 1, "CIVIS_AGENT_REDACT" },
	{ "no-default-redact",    OPT_NO_DEFAULT_REDACT, 0, "CIVIS_AGENT_NO_DEFAULT_REDACT" },
	{ "redact-tee",           OPT_REDACT_TEE, 0, "CIVIS_AGENT_REDACT_TEE" },
	{ "output-dir",           OPT_OUTPUT_DIR, 1, "CIVIS_AGENT_OUTPUT_DIR" },
	{ "archive",              OPT_ARCHIVE, 1, "CIVIS_AGENT_ARCHIVE" },
	{ "archive-dirs",         OPT_ARCHIVE_DIRS, 0, "CIVIS_AGENT_ARCHIVE_DIRS" },
	{ "gzip",                 OPT_GZIP, 0, "CIVIS_AGENT_GZIP" },
	{ "expires-at",           OPT_EXPIRES_AT, 1, "CIVIS_AGENT_EXPIRES_AT" },
	{ "multipart-threshold",  OPT_MULTIPART_THRESHOLD, 1, "CIVIS_AGENT_MULTIPART_THRESHOLD" },
	{ "upload-concurrency",   OPT_UPLOAD_CONCURRENCY, 1, "CIVIS_AGENT_UPLOAD_CONCURRENCY" },
};
#define NOPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))

void
agent_opts_usage(FILE *f)
{
	fputs(
"Usage: civis-agent [OPTIONS] [--] COMMAND [ARG...]\n"
"       civis-agent upload [OPTIONS] PATH...   (see civis-agent upload --help)\n"
"\n"
"Runs COMMAND as a supervised child (PID 1 duties: signal forwarding, zombie\n"
"reaping, its exit status), copies its output through, and with CIVIS_API_KEY,\n"
"CIVIS_JOB_ID and CIVIS_RUN_ID set streams it to the Civis run log, sends\n"
"heartbeats, watches for cancellation and uploads its output files. In tee-only\n"
"mode (none of them set) with nothing to mask or keep (no --redact-tee, no\n"
"termination log), COMMAND writes straight to our stdout and stderr.\n"
"Every option has an environment twin, CIVIS_AGENT_<NAME> (e.g.\n"
"CIVIS_AGENT_HEARTBEAT_INTERVAL=10s); the command line wins. Durations take\n"
"ms, s, m or h (default s); sizes take K, M, G (binary).\n"
"\n"
"  -h, --help                   this text\n"
"  -V, --version                the version\n"
"  -v, --verbose                more detail on stderr, and a delivery summary\n"
"      --no-tee                 do not copy the command's output to our stdout/stderr\n"
"      --grace-period DUR       after SIGTERM to the command, SIGKILL after DUR (10s)\n"
"      --signal-child-only      forward signals to the command only, not its group\n"
"  -e, --exit-code-remap N      report exit status N as 0 (repeatable)\n"
"      --cgroup-root DIR        where the memory and CPU limits are read (/sys/fs/cgroup)\n"
"      --termination-log PATH   the summary and last errors go there if it exists\n"
"                               (/dev/termination-log; '' for none)\n"
"Run log:\n"
"      --stdout-level LEVEL     level of stdout lines (info)\n"
"      --stderr-level LEVEL     level of stderr lines (error)\n"
"                               levels: unknown fatal error warn info debug\n"
"      --no-detect-levels       keep those levels even when a line starts with its own\n"
"                               (INFO:, [WARNING], ERROR -, {\"level\": ...})\n"
"      --log-flush-interval DUR send batches this often (1s)\n"
"      --final-flush-timeout DUR  at exit, try this long to deliver the rest (30s)\n"
"      --log-line-max SIZE      longer lines are split into pieces (64K)\n"
"      --log-batch-lines N      messages per request at most (10000)\n"
"      --log-batch-bytes SIZE   request body at most (1M)\n"
"      --log-memory-max SIZE    unsent batches kept in memory, then spooled (4M)\n"
"      --spool-dir DIR          where the spool file goes ($TMPDIR or /tmp)\n"
"      --spool-max SIZE         spool cap; past it the oldest lines are dropped (1G)\n"
"      --heartbeat-interval DUR (30s)\n"
"      --cancel-poll-interval DUR (5s)\n"
"      --api-budget PCT[:N/DUR] the agent's share of the API rate limit (1000 per 5m,\n"
"                               or N per DUR), 'off' for none (20%)\n"
"      --report-state           PATCH the run: accepted, started, succeeded/failed\n"
"Secrets:\n"
"      --redact NAME            mask the value of env variables matching NAME (glob)\n"
"      --no-default-redact      do not mask *PASSWORD*, *SECRET*, *TOKEN*, *_PASS, ... by default\n"
"      --redact-tee             mask the copy on our stdout/stderr too\n"
"Outputs:\n"
"      --output-dir DIR         upload every file left in DIR as a run output\n"
"      --archive NAME           upload sub-directory NAME as NAME.tar.gz (repeatable)\n"
"      --archive-dirs           upload every top-level sub-directory as a .tar.gz\n"
"      --gzip                   compress each file (name.gz)\n"
"      --expires-at TIME        RFC 3339 time or 'never' (API default: 30 days)\n"
"      --json-output-name NAME  the JSON value made of $CIVIS_OUTPUT's lines (outputs)\n"
"      --multipart-threshold SIZE  files above go in parts (50M)\n"
"      --upload-concurrency N   parts in flight per file (4)\n"
"\n"
"Exit status: COMMAND's; 128+N if it was killed by signal N; 126 if it could\n"
"not be executed, 127 if not found; 2 for a usage or configuration error;\n"
"see README.md for the status used when an output failed to upload.\n", f);
}

/* The message quotes what the user typed: keep it one line (control bytes
 * become '?'; found by fuzz_options). */
static int
set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	if (errlen) {
		snprintf(err, errlen, fmt, a, b ? b : "");
		for (char *p = err; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	}
	return -1;
}

static int
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)*s))
		return CIVIS_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return CIVIS_EINVAL;
	*out = v;
	return CIVIS_OK;
}

int
agent_parse_duration(const char *s, uint64_t *out_ns)
{
	char *end;
	double v, mult = 1e9;

	*out_ns = 0;
	if (!s || !(isdigit((unsigned char)*s) || *s == '.'))
		return CIVIS_EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return CIVIS_EINVAL;
	if (strcmp(end, "ms") == 0)
		mult = 1e6;
	else if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1e9;
	else if (strcmp(end, "m") == 0)
		mult = 60e9;
	else if (strcmp(end, "h") == 0)
		mult = 3600e9;
	else
		return CIVIS_EINVAL;
	v *= mult;
	if (v > 1e18)  /* about 31 years: nonsense, and the loop works in uint64 ns */
		return CIVIS_EINVAL;
	*out_ns = (uint64_t)v;
	return CIVIS_OK;
}

int
agent_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	*out = 0;
	if (!s || !isdigit((unsigned char)*s))
		return CIVIS_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return CIVIS_EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default: return CIVIS_EINVAL;
	}
	if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end)
		return CIVIS_EINVAL;
	if (v > UINT64_MAX / mult)
		return CIVIS_EINVAL;
	*out = v * mult;
	return CIVIS_OK;
}

static int
digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

int
agent_check_expires_at(const char *s)
{
	size_t i;

	if (!s)
		return CIVIS_EINVAL;
	if (strcmp(s, "never") == 0)
		return CIVIS_OK;
	/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm) */
	if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) ||
	    s[7] != '-' || !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') ||
	    !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
	    !digits(s + 17, 2))
		return CIVIS_EINVAL;
	if ((s[5] - '0') * 10 + (s[6] - '0') > 12 || (s[8] - '0') * 10 + (s[9] - '0') > 31 ||
	    (s[11] - '0') * 10 + (s[12] - '0') > 23 || s[14] > '5' || s[17] > '6')
		return CIVIS_EINVAL;
	i = 19;
	if (s[i] == '.') {
		i++;
		if (!isdigit((unsigned char)s[i]))
			return CIVIS_EINVAL;
		while (isdigit((unsigned char)s[i]))
			i++;
	}
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0')
		return CIVIS_OK;
	if ((s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2) && s[i + 3] == ':' &&
	    digits(s + i + 4, 2) && s[i + 6] == '\0')
		return CIVIS_OK;
	return CIVIS_EINVAL;
}

static int
valid_level(const char *s)
{
	static const char *const levels[] = { "unknown", "fatal", "error", "warn", "info", "debug" };

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i]) == 0)
			return 1;
	return 0;
}

static int
add_list(const char **list, size_t *n, const char *v, const char *what, char *err, size_t errlen)
{
	if (*n >= AGENT_MAX_LIST)
		return set_err(err, errlen, "too many %s options (at most 64)", what, NULL);
	if (!*v)
		return set_err(err, errlen, "%s needs a non-empty value", what, NULL);
	list[(*n)++] = v;
	return 0;
}

static int
add_remap(agent_opts *o, const char *v, const char *src, char *err, size_t errlen)
{
	uint64_t n;

	if (parse_u64(v, &n) != CIVIS_OK || n > 255)
		return set_err(err, errlen, "%s: '%s' is not an exit status (0-255)", src, v);
	o->remap[n] = 1;
	return 0;
}

static int
bool_env(const char *v)
{
	return !(strcmp(v, "") == 0 || strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 ||
	         strcasecmp(v, "no") == 0 || strcasecmp(v, "off") == 0);
}

/* The options that take a size, with their ranges. */
static int
apply_size(agent_opts *o, int id, const char *v, const char *src, char *err, size_t errlen)
{
	uint64_t n;

	if (agent_parse_size(v, &n) != CIVIS_OK)
		return set_err(err, errlen, "%s: '%s' is not a size (e.g. 65536, 64K, 1M)", src, v);
	if (id == OPT_LINE_MAX) {
		if (n < 16 || n > (1u << 20))
			return set_err(err, errlen, "%s: '%s' is out of range (16 to 1M)", src, v);
		o->line_max = n;
	} else if (id == OPT_BATCH_BYTES) {
		if (n < (64u << 10) || n > (64u << 20))
			return set_err(err, errlen, "%s: '%s' is out of range (64K to 64M)", src, v);
		o->batch_bytes = n;
	} else if (id == OPT_LOG_MEM) {
		if (n < (1u << 20))
			return set_err(err, errlen, "%s: '%s' is too small (at least 1M)", src, v);
		o->log_mem_max = n;
	} else if (id == OPT_SPOOL_MAX) {
		o->spool_max = n;
	} else {
		if (n < (5u << 20))
			return set_err(err, errlen, "%s: '%s' is too small (at least 5M, the S3 part minimum)", src, v);
		o->multipart_threshold = n;
	}
	return 0;
}

/* --api-budget: "20" or "20%" (1 to 100), or "off" / "0" for no budget;
 * ":LIMIT/WINDOW" after it names a deployment's own limit ("20%:100/30s"). */
static int
set_budget(agent_opts *o, const char *v, const char *src, char *err, size_t errlen)
{
	char num[8];
	const char *colon = strchr(v, ':'), *slash;
	size_t len = colon ? (size_t)(colon - v) : strlen(v);
	uint64_t n, lim = 0, win = 0;

	if (colon) {
		char l[16];

		slash = strchr(colon + 1, '/');
		if (!slash || (size_t)(slash - colon - 1) >= sizeof(l))
			goto bad;
		memcpy(l, colon + 1, (size_t)(slash - colon - 1));
		l[slash - colon - 1] = '\0';
		if (parse_u64(l, &lim) != CIVIS_OK || lim < 1 || lim > 1000000 ||
		    agent_parse_duration(slash + 1, &win) != CIVIS_OK || win < 1000000000ULL)
			goto bad;
	}
	if (len == 3 && strncasecmp(v, "off", 3) == 0) {
		n = 0;
	} else {
		if (len > 0 && v[len - 1] == '%')
			len--;
		if (len == 0 || len >= sizeof(num))
			goto bad;
		memcpy(num, v, len);
		num[len] = '\0';
		if (parse_u64(num, &n) != CIVIS_OK || n > 100)
			goto bad;
	}
	o->api_budget_pct = (unsigned)n;
	o->api_rate_limit = (unsigned)lim;
	o->api_rate_window_ns = win;
	return 0;
bad:
	return set_err(err, errlen, "%s: '%s' is not a share of the rate limit (a percentage "
	               "from 1 to 100, or off; e.g. 20%%, or 20%%:1000/5m)", src, v);
}

/* Apply one option value; src names it for messages ("--grace-period" or
 * "CIVIS_AGENT_GRACE_PERIOD"). */
static int
apply(agent_opts *o, int id, const char *v, const char *src, char *err, size_t errlen)
{
	uint64_t n;

	switch (id) {
	case 'v': o->verbose = 1; return 0;
	case OPT_NO_TEE: o->tee = 0; return 0;
	case OPT_SIGNAL_CHILD_ONLY: o->signal_child_only = 1; return 0;
	case OPT_NO_DEFAULT_REDACT: o->default_redact = 0; return 0;
	case OPT_REDACT_TEE: o->redact_tee = 1; return 0;
	case OPT_NO_DETECT_LEVELS: o->detect_levels = 0; return 0;
	case OPT_ARCHIVE_DIRS: o->archive_dirs = 1; return 0;
	case OPT_GZIP: o->gzip = 1; return 0;
	case OPT_REPORT_STATE: o->report_state = 1; return 0;
	case OPT_API_BUDGET: return set_budget(o, v, src, err, errlen);
	case 'e': return add_remap(o, v, src, err, errlen);
	case OPT_STDOUT_LEVEL:
	case OPT_STDERR_LEVEL:
		if (!valid_level(v))
			return set_err(err, errlen, "%s: '%s' is not a level "
			               "(unknown, fatal, error, warn, info, debug)", src, v);
		snprintf(id == OPT_STDOUT_LEVEL ? o->stdout_level : o->stderr_level,
		         sizeof(o->stdout_level), "%s", v);
		return 0;
	case OPT_GRACE: case OPT_FLUSH: case OPT_FINAL_FLUSH: case OPT_HEARTBEAT:
	case OPT_CANCEL_POLL:
		if (agent_parse_duration(v, &n) != CIVIS_OK)
			return set_err(err, errlen, "%s: '%s' is not a duration (e.g. 500ms, 30s, 2m)", src, v);
		if ((id == OPT_FLUSH || id == OPT_HEARTBEAT || id == OPT_CANCEL_POLL) && n < 10000000ULL)
			return set_err(err, errlen, "%s: '%s' is too short (at least 10ms)", src, v);
		if (id == OPT_GRACE) o->grace_ns = n;
		else if (id == OPT_FLUSH) o->flush_ns = n;
		else if (id == OPT_FINAL_FLUSH) o->final_flush_ns = n;
		else if (id == OPT_HEARTBEAT) o->heartbeat_ns = n;
		else o->cancel_poll_ns = n;
		return 0;
	case OPT_LINE_MAX: case OPT_BATCH_BYTES: case OPT_LOG_MEM: case OPT_SPOOL_MAX:
	case OPT_MULTIPART_THRESHOLD:
		return apply_size(o, id, v, src, err, errlen);
	case OPT_BATCH_LINES: case OPT_UPLOAD_CONCURRENCY:
		if (parse_u64(v, &n) != CIVIS_OK || n < 1 ||
		    n > (id == OPT_BATCH_LINES ? 100000u : 64u))
			return set_err(err, errlen, id == OPT_BATCH_LINES ?
			               "%s: '%s' is not a number from 1 to 100000" :
			               "%s: '%s' is not a number from 1 to 64", src, v);
		if (id == OPT_BATCH_LINES) o->batch_lines = n;
		else o->upload_concurrency = n;
		return 0;
	case OPT_SPOOL_DIR:
		if (!*v)
			return set_err(err, errlen, "%s needs a directory%s", src, NULL);
		o->spool_dir = v;
		return 0;
	case OPT_CGROUP_ROOT:
		if (!*v)
			return set_err(err, errlen, "%s needs a directory%s", src, NULL);
		o->cgroup_root = v;
		return 0;
	case OPT_TERMINATION_LOG:
		o->termination_log = v;
		return 0;
	case OPT_OUTPUT_DIR:
		if (!*v)
			return set_err(err, errlen, "%s needs a directory%s", src, NULL);
		o->output_dir = v;
		return 0;
	case OPT_JSON_OUTPUT_NAME:
		if (!*v || strlen(v) > 255)
			return set_err(err, errlen, "%s needs a name of 1 to 255 bytes%s", src, "");
		o->json_output_name = v;
		return 0;
	case OPT_EXPIRES_AT:
		if (agent_check_expires_at(v) != CIVIS_OK)
			return set_err(err, errlen, "%s: '%s' is not an RFC 3339 time "
			               "(2027-01-31T00:00:00Z) or 'never'", src, v);
		o->expires_at = v;
		return 0;
	case OPT_REDACT:
		return add_list(o->redact, &o->nredact, v, src, err, errlen);
	case OPT_ARCHIVE:
		if (strchr(v, '/') || strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
			return set_err(err, errlen, "%s: '%s' must name a sub-directory of the output "
			               "directory, without '/'", src, v);
		return add_list(o->archives, &o->narchives, v, src, err, errlen);
	}
	return set_err(err, errlen, "internal error: unhandled option%s%s", "", NULL);
}

static const char *
real_getenv(const char *name, void *ud)
{
	(void)ud;
	return getenv(name);
}

/* List-valued environment twins take comma-separated values. */
static int
apply_env_list(agent_opts *o, const struct opt_def *d, const char *v, char *err, size_t errlen)
{
	size_t slot;
	char *copy, *tok, *save = NULL;

	for (slot = 0; slot < sizeof(o->owned) / sizeof(o->owned[0]) && o->owned[slot]; slot++)
		;
	if (slot == sizeof(o->owned) / sizeof(o->owned[0]))
		return set_err(err, errlen, "internal error: too many list variables%s%s", "", NULL);
	copy = strdup(v);
	if (!copy)
		return set_err(err, errlen, "out of memory%s%s", "", NULL);
	o->owned[slot] = copy;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (apply(o, d->id, tok, d->env, err, errlen) != 0)
			return -1;
	return 0;
}

static void
defaults(agent_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->tee = 1;
	o->default_redact = 1;
	o->detect_levels = 1;
	o->grace_ns = 10ULL * 1000000000ULL;
	snprintf(o->stdout_level, sizeof(o->stdout_level), "info");
	snprintf(o->stderr_level, sizeof(o->stderr_level), "error");
	o->flush_ns = 1000000000ULL;
	o->final_flush_ns = 30ULL * 1000000000ULL;
	o->line_max = 64u << 10;
	o->batch_lines = 10000;
	o->batch_bytes = 1u << 20;
	o->log_mem_max = 4u << 20;
	o->spool_max = 1ULL << 30;
	o->heartbeat_ns = 30ULL * 1000000000ULL;
	o->api_budget_pct = 20;
	o->cancel_poll_ns = 5ULL * 1000000000ULL;
	o->multipart_threshold = 50ULL << 20;
	o->upload_concurrency = 4;
}

int
agent_opts_parse(agent_opts *o, int argc, char **argv, agent_getenv_fn get, void *ud,
                 char *err, size_t errlen)
{
	struct option longopts[NOPTS + 1];
	unsigned char seen[NOPTS];
	int c, idx;

	defaults(o);
	if (errlen)
		err[0] = '\0';
	if (!get)
		get = real_getenv;
	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < NOPTS; i++) {
		longopts[i].name = opt_defs[i].name;
		longopts[i].has_arg = opt_defs[i].has_arg ? required_argument : no_argument;
		longopts[i].flag = NULL;
		longopts[i].val = opt_defs[i].id;
	}
	longopts[NOPTS].name = NULL;
	longopts[NOPTS].has_arg = 0;
	longopts[NOPTS].flag = NULL;
	longopts[NOPTS].val = 0;

	/* The command line first, remembering what it set: it wins. */
	optind = 0;
	opterr = 0;
	for (;;) {
		char src[64];
		size_t k;

		idx = -1;
		c = getopt_long(argc, argv, "+:hVve:", longopts, &idx);
		if (c == -1)
			break;
		if (c == 'h')
			return AGENT_OPTS_HELP;
		if (c == 'V')
			return AGENT_OPTS_VERSION;
		if (c == '?') {
			if (optopt && optopt < 256) {
				char shortopt[2] = { (char)optopt, '\0' };
				return set_err(err, errlen, "unknown option '-%s'%s", shortopt, NULL);
			}
			return set_err(err, errlen, "unknown option '%s'%s", argv[optind - 1], NULL);
		}
		if (c == ':')
			return set_err(err, errlen, "option '%s' needs a value%s", argv[optind - 1], NULL);
		for (k = 0; k < NOPTS && opt_defs[k].id != c; k++)
			;
		if (k == NOPTS)
			return set_err(err, errlen, "unknown option%s%s", "", NULL);
		seen[k] = 1;
		snprintf(src, sizeof(src), "--%s", opt_defs[k].name);
		if (apply(o, c, optarg, src, err, errlen) != 0)
			return -1;
	}

	/* Then the environment, for what the command line left alone. */
	for (size_t k = 0; k < NOPTS; k++) {
		const char *v;

		if (seen[k] || !opt_defs[k].env)
			continue;
		v = get(opt_defs[k].env, ud);
		if (!v)
			continue;
		if (!opt_defs[k].has_arg) {
			if (bool_env(v) && apply(o, opt_defs[k].id, v, opt_defs[k].env, err, errlen) != 0)
				return -1;
			continue;
		}
		if (opt_defs[k].id == OPT_REDACT || opt_defs[k].id == OPT_ARCHIVE || opt_defs[k].id == 'e') {
			if (apply_env_list(o, &opt_defs[k], v, err, errlen) != 0)
				return -1;
			continue;
		}
		if (apply(o, opt_defs[k].id, v, opt_defs[k].env, err, errlen) != 0)
			return -1;
	}

	if (o->batch_bytes < CIVIS_BATCH_BYTES_FOR(o->line_max))
		return set_err(err, errlen, "--log-batch-bytes must hold one line of --log-line-max "
		               "bytes: raise it or lower --log-line-max%s%s", "", NULL);
	if (optind >= argc)
		return set_err(err, errlen, "no command given%s%s", "", NULL);
	o->argv = argv + optind;
	o->argc = argc - optind;
	return AGENT_OPTS_RUN;
}

void
agent_opts_dispose(agent_opts *o)
{
	for (size_t i = 0; i < sizeof(o->owned) / sizeof(o->owned[0]); i++) {
		free(o->owned[i]);
		o->owned[i] = NULL;
	}
}
