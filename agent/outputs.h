/* outputs.h: the output directory: every regular file in it becomes a File
 * output of the run.
 *
 * Lifecycle, all on the one loop:
 *  - agent_outputs_new: create DIR if missing (mkdir -p), watch it and every
 *    sub-directory with inotify.
 *  - While the command runs, a file is uploaded as soon as it is complete
 *    (IN_CLOSE_WRITE, or IN_MOVED_TO into DIR). At most
 *    AGENT_OUTPUTS_MAX_INFLIGHT files are in flight, or up to
 *    AGENT_OUTPUTS_SMALL_INFLIGHT while the next in line is a file of at most
 *    AGENT_OUTPUTS_SMALL_FILE (a small file costs requests, not bytes); the
 *    rest wait in a FIFO.
 *    A scan during the run (new sub-directory, IN_Q_OVERFLOW) only adds
 *    watches: a scan cannot tell a finished file from one still written, so
 *    what it finds goes at exit.
 *  - agent_outputs_command_exited: one final full scan (sorted by name).
 *    Files not uploaded yet, and files changed since their upload started
 *    (size, mtime, inode, or another IN_CLOSE_WRITE), are uploaded
 *    now, in name order; archived directories are packed now (never earlier:
 *    they may still be written).
 *  - Registration order: nothing is registered during the run. When every
 *    upload has finished, the registrations start in Civis name order
 *    (byte order, then by SHA-256 for equal names), up to
 *    AGENT_OUTPUTS_REG_INFLIGHT at once: the API gets them in that order
 *    but may store neighbours within such a window in either order, so the
 *    run's outputs are the same set every time and in name order up to
 *    that window (one request at a time costs a round trip per file). Only what is in DIR at
 *    exit is registered, each file's latest upload only, and a (name,
 *    SHA-256) pair only once. An earlier upload that a later one superseded
 *    stays an unregistered Civis file (it expires like any other).
 *
 * Skipped with a note, not failures: FIFOs, sockets, devices, symlinks that
 * leave DIR or loop, symlinks to directories (their target inside DIR is
 * uploaded under its own name), files that vanish before the command exits.
 * Failures (counted by agent_outputs_failed, note at level "error"): a
 * regular file present at exit that could not be read, is over 5 TiB, or
 * could not be uploaded or registered; an --archive directory missing at
 * exit; a path longer than PATH_MAX; more than AGENT_OUTPUTS_MAX_FILES files.
 *
 * Civis names: the path relative to DIR, with '/' written "%2F" and '%'
 * written "%25" ("sub/a.csv" is "sub%2Fa.csv": the Files API takes no '/'
 * in a name, and the escape keeps names apart and reversible); bytes that
 * are not UTF-8 become U+FFFD (JSON carries only UTF-8); --gzip adds ".gz",
 * an archive is "NAME.tar.gz". Names in messages are escaped (\n, \t, \xNN for
 * control characters and bytes that are not UTF-8) and double-quoted when
 * they hold a space, a colon or a quote. */
#ifndef AGENT_OUTPUTS_H
#define AGENT_OUTPUTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "civis/client.h"
#include "civis/loop.h"
#include "civis/redact.h"
#include "civis/run.h"
#include "civis/upload.h"

/* Exit status of the agent when the command exited 0 but an output could
 * not be uploaded or registered (everything else was still registered).
 * 3 is what tools use for "partial failure" and is rare as a command's own
 * status, but a command can exit 3 too: the lead uses this only when the
 * command exited 0, so a 3 after a command's 0 always means "outputs". */
#define AGENT_EXIT_OUTPUT_FAILED 3

#define AGENT_OUTPUTS_MAX_INFLIGHT 4        /* files uploading at once... */
#define AGENT_OUTPUTS_SMALL_INFLIGHT 32     /* ...or this many while they are small: */
#define AGENT_OUTPUTS_SMALL_FILE   (1u << 20) /* at most 1 MiB, not an archive */
#define AGENT_OUTPUTS_REG_INFLIGHT 32       /* registrations at once */
#define AGENT_OUTPUTS_MAX_FILES    100000   /* outputs of one run, at most */
#define AGENT_OUTPUTS_MAX_WATCHES  65536    /* directories watched, at most */
#define AGENT_OUTPUTS_NAME_MAX     16384    /* a Civis name, bytes, with NUL */
#define AGENT_OUTPUTS_EXIT_TRIES   3        /* uploads of one file after exit */

typedef void (*agent_note_fn)(void *ud, const char *level, const char *text);

typedef struct agent_outputs agent_outputs;

typedef struct agent_outputs_opts {
	const char *dir;
	const char *const *archives;  /* sub-directory paths relative to dir */
	size_t narchives;
	int archive_dirs;             /* every top-level sub-directory is archived */
	int gzip;
	const char *expires_at;       /* NULL, RFC 3339, or "never" */
	uint64_t multipart_threshold; /* 0: the engine's default */
	unsigned concurrency;         /* parts in flight per file; 0: the engine's */
	const char *tmp_dir;          /* NULL: $TMPDIR or /tmp */
	civis_run *run;               /* registers the outputs; never NULL */
	const civis_redact *redact;   /* the run's secrets (NULL: none): a file whose
	                                 Civis name holds one is refused, and names
	                                 in notes are masked */
	agent_note_fn note;           /* one line, no newline; never NULL */
	void *ud;
} agent_outputs_opts;

/* Create DIR when missing (mkdir -p), watch it. Without inotify (limits,
 * old kernel) everything is uploaded at exit, with a note. */
int  agent_outputs_new(agent_outputs **out, civis_loop *loop, civis_client *client,
                       const agent_outputs_opts *o, char *err, size_t errlen);
/* mkdir -p DIR (main.c calls it before the command starts, so the command
 * can write into it at once). */
int  agent_outputs_mkdir(const char *dir, char *err, size_t errlen);
/* The final scan, archives, re-uploads, then registration. Once only. */
void agent_outputs_command_exited(agent_outputs *o);
/* No upload in flight or queued and no registration pending; after
 * agent_outputs_command_exited it means everything is finished. */
int  agent_outputs_idle(const agent_outputs *o);
/* Outputs that could not be uploaded or registered (final once idle after
 * agent_outputs_command_exited). */
unsigned agent_outputs_failed(const agent_outputs *o);
/* On a forced stop: one note per output not uploaded or not registered. */
void agent_outputs_report_unfinished(agent_outputs *o);
/* Cancels what is in flight. Safe when a registration is still in flight
 * in the client: its callback, when it comes, finds nothing to touch. */
void agent_outputs_free(agent_outputs *o);

/* ------------------------------------------------------------------
 * The pure parts (outputs_scan.c), shared with upload_cmd.c and tests. */

/* Escape s for a one-line message into buf (always NUL-terminated). Valid
 * printable UTF-8 stays; \n \r \t \\ are escaped C-style; other control
 * characters, bytes that are not UTF-8, C1 controls and bidi/line-separator
 * code points become \xNN per byte. Wrapped in double quotes (with \"
 * inside) when s is empty or holds a space, a colon or a quote. Too long:
 * cut at a character boundary, ending in "...". Returns strlen(buf). */
size_t agent_outputs_quote(char *buf, size_t len, const char *s);
/* The same escapes, never wrapped in quotes (a tab-separated column). */
size_t agent_outputs_escape(char *buf, size_t len, const char *s);
/* A whole message text, whose names may already be quoted: the same escapes
 * for newlines, control characters, invalid UTF-8 and bidi code points, but
 * no quotes and a backslash left as it is. Every agent note goes through it
 * last, so no byte of a name (or of a library error naming it) can start a
 * line or a terminal escape on stderr or in the run log. */
size_t agent_outputs_escape_text(char *buf, size_t len, const char *s);

/* The Civis name for rel: '/' becomes "%2F", '%' "%25", invalid UTF-8
 * bytes U+FFFD, then suffix (NULL, ".gz", ".tar.gz") is added.
 * CIVIS_ETOOBIG when it does not fit. */
int  agent_outputs_civis_name(char *buf, size_t len, const char *rel, const char *suffix);

/* Why a file whose Civis name holds a secret is not uploaded: the name is
 * stored in Civis Files as it is, and masking it would upload the file
 * under a name nobody chose. */
#define AGENT_OUTPUTS_SECRET_NAME \
	"its name holds a secret (shown masked here): not uploaded; rename it"

/* Whether name holds a secret of r (NULL: never). Also 1 when it cannot
 * tell (no memory): a name is refused rather than leaked. */
int  agent_outputs_name_has_secret(const civis_redact *r, const char *name);

/* An --archive value: relative, no "." or ".." or empty components, no NUL;
 * trailing slashes are dropped into buf. CIVIS_EINVAL with a reason. */
int  agent_outputs_check_archive(char *buf, size_t len, const char *name,
                                 char *err, size_t errlen);

/* Refuse a plain file S3 cannot hold (over CIVIS_UPLOAD_MAX_SIZE): returns
 * CIVIS_ETOOBIG with a reason, else CIVIS_OK. */
int  agent_outputs_check_size(uint64_t size, char *err, size_t errlen);

/* "not a regular file (FIFO)" and the like, for what mode m is. */
const char *agent_outputs_type_text(mode_t m);

typedef enum agent_out_kind {
	AGENT_OUT_FILE    = 0,  /* a regular file, or a symlink to one inside DIR */
	AGENT_OUT_ARCHIVE = 1,  /* a directory packed as one .tar.gz */
	AGENT_OUT_DIR     = 2,  /* a directory to descend into (classify only) */
	AGENT_OUT_SKIP    = 3,  /* not an output; reason says why */
	AGENT_OUT_GONE    = 4,  /* does not exist (any more) */
	AGENT_OUT_ERROR   = 5   /* an output that cannot be sent; reason says why */
} agent_out_kind;

typedef struct agent_out_stat {
	dev_t dev;
	ino_t ino;
	uint64_t size;
	int64_t mtime_ns;
	int64_t ctime_ns;
} agent_out_stat;

typedef struct agent_out_rules {
	const char *root;             /* DIR, realpath'd, no trailing slash */
	const char *shown;            /* DIR as the user wrote it, for messages */
	const char *const *archives;  /* checked by agent_outputs_check_archive */
	size_t narchives;
	int archive_dirs;
	size_t max_items;             /* 0: AGENT_OUTPUTS_MAX_FILES */
} agent_out_rules;

typedef struct agent_out_item {
	char *rel;                    /* relative to DIR, raw bytes */
	agent_out_kind kind;          /* FILE or ARCHIVE */
	agent_out_stat st;            /* of the file (a symlink's target) */
} agent_out_item;

typedef struct agent_out_scan {
	agent_out_item *items;        /* sorted by rel (strcmp) */
	size_t nitems, capitems;
	char **dirs;                  /* directories descended into ("" = DIR) */
	size_t ndirs, capdirs;
	unsigned failures;            /* path too long, too many files */
} agent_out_scan;

/* Whether rel is an archived directory (2; only when is_dir), inside one
 * (1), or neither (0). */
int  agent_outputs_in_archive(const agent_out_rules *r, const char *rel, int is_dir);

/* What rel (relative to r->root) is, after the symlink rules; st filled for
 * FILE. For SKIP and ERROR, reason is a text for "PATH: <reason>". */
agent_out_kind agent_outputs_classify(const agent_out_rules *r, const char *rel,
                                      agent_out_stat *st, char *reason, size_t rlen);

/* The same answer as agent_outputs_classify, from the object itself: rel is
 * opened beneath DIR without following a symlink at any step (openat2
 * RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, else component by component with
 * O_NOFOLLOW); a symlink to a file inside DIR is opened by its target's
 * path the same way. For FILE (read-only) and ARCHIVE (a directory) *fd is
 * the open descriptor (the caller's) and st its fstat; else *fd is -1. */
agent_out_kind agent_outputs_open(const agent_out_rules *r, const char *rel,
                                  agent_out_stat *st, int *fd, char *reason, size_t rlen);

/* Walk the tree under sub ("" = all of DIR), directories in name order,
 * not into archived ones (reported as ARCHIVE items) nor through symlinks.
 * Skips are reported through note ("warn"; NULL: silent), as is a failure
 * ("error"). out is cleared first; free it with agent_outputs_scan_dispose. */
int  agent_outputs_scan(agent_out_scan *out, const agent_out_rules *r, const char *sub,
                        agent_note_fn note, void *ud);
void agent_outputs_scan_dispose(agent_out_scan *s);

/* "DIR/rel" as shown to the user, quoted, into buf. */
void agent_outputs_show(char *buf, size_t len, const agent_out_rules *r, const char *rel);

#ifdef CIVIS_UNITTEST
/* Replace the upload engine (tests drive the scheduler without a network). */
typedef struct agent_outputs_hooks {
	int  (*upload_start)(civis_client *c, const civis_upload_opts *o, civis_upload **out);
	void (*upload_cancel)(civis_upload *u);
	int  (*register_output)(civis_run *r, const char *object_type, int64_t object_id,
	                        void (*done)(void *ud, int status, const char *error), void *ud);
} agent_outputs_hooks;
void agent_outputs__set_hooks(const agent_outputs_hooks *h);
unsigned agent_outputs__inflight(const agent_outputs *o);
int  agent_outputs__watching(const agent_outputs *o);
unsigned agent_outputs__rebuilds(const agent_outputs *o);
#endif

#endif
