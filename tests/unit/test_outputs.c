/* test_outputs.c: the output directory: quoting, names, archive rules, the
 * scan (FIFO, socket, device, symlink loop, links inside and outside, odd
 * names, 255-byte names, paths over PATH_MAX), and the scheduler driven by
 * real inotify events on a real loop with a fake upload engine. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "civis/upload.h"
#include "../../agent/outputs.h"

/* ---------------------------------------------------------------- helpers */

#define MAX_NOTES 256

static char *notes[MAX_NOTES];
static size_t nnotes;

static void
notes_clear(void)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		free(notes[i]);
	nnotes = 0;
}

static void
collect_note(void *ud, const char *level, const char *text)
{
	char buf[4096];

	(void)ud;
	assert_null(strchr(text, '\n'));
	snprintf(buf, sizeof(buf), "%s: %s", level, text);
	if (nnotes < MAX_NOTES)
		notes[nnotes++] = strdup(buf);
}

static int
has_note(const char *text)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		if (strcmp(notes[i], text) == 0)
			return 1;
	return 0;
}

static int
has_note_part(const char *part)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		if (strstr(notes[i], part) != NULL)
			return 1;
	return 0;
}

static void
dump_notes(void)
{
	size_t i;

	for (i = 0; i < nnotes; i++)
		fprintf(stderr, "  note: %s\n", notes[i]);
}

static char *
make_tmpdir(void)
{
	char tmpl[] = "/tmp/test_outputs.XXXXXX";
	char *d = mkdtemp(tmpl);

	assert_non_null(d);
	return strdup(d);
}

static void
put_file(const char *dir, const char *rel, const char *content)
{
	char path[PATH_MAX * 2];
	int fd;
	size_t n = strlen(content);

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void
make_dir(const char *dir, const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

static void
rm_rf(const char *dir)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- quoting */

static void
test_quote_plain_and_escapes(void **state)
{
	char b[256];

	(void)state;
	agent_outputs_quote(b, sizeof(b), "out/a.csv");
	assert_string_equal(b, "out/a.csv");
	agent_outputs_quote(b, sizeof(b), "out/new\nline");
	assert_string_equal(b, "out/new\\nline");
	agent_outputs_quote(b, sizeof(b), "tab\there\r");
	assert_string_equal(b, "tab\\there\\r");
	agent_outputs_quote(b, sizeof(b), "back\\slash");
	assert_string_equal(b, "back\\\\slash");
	agent_outputs_quote(b, sizeof(b), "bad\xff\xfe");
	assert_string_equal(b, "bad\\xff\\xfe");
	agent_outputs_quote(b, sizeof(b), "bell\a\x7f");
	assert_string_equal(b, "bell\\x07\\x7f");
	/* valid UTF-8 stays, an overlong or a surrogate does not */
	agent_outputs_quote(b, sizeof(b), "caf\xc3\xa9");
	assert_string_equal(b, "caf\xc3\xa9");
	agent_outputs_quote(b, sizeof(b), "x\xc0\xaf");
	assert_string_equal(b, "x\\xc0\\xaf");
	agent_outputs_quote(b, sizeof(b), "s\xed\xa0\x80");
	assert_string_equal(b, "s\\xed\\xa0\\x80");
	/* a right-to-left override could disguise the name */
	agent_outputs_quote(b, sizeof(b), "a\xe2\x80\xae" "b");
	assert_string_equal(b, "a\\xe2\\x80\\xaeb");
	/* C1 control */
	agent_outputs_quote(b, sizeof(b), "c\xc2\x85");
	assert_string_equal(b, "c\\xc2\\x85");
}

static void
test_quote_quotes_when_needed(void **state)
{
	char b[256];

	(void)state;
	agent_outputs_quote(b, sizeof(b), "out/my file.txt");
	assert_string_equal(b, "\"out/my file.txt\"");
	agent_outputs_quote(b, sizeof(b), "a:b");
	assert_string_equal(b, "\"a:b\"");
	agent_outputs_quote(b, sizeof(b), "say \"hi\"");
	assert_string_equal(b, "\"say \\\"hi\\\"\"");
	agent_outputs_quote(b, sizeof(b), "");
	assert_string_equal(b, "\"\"");
}

static void
test_quote_truncates_at_boundaries(void **state)
{
	char b[12], big[5000];
	size_t n, len;

	(void)state;
	n = agent_outputs_quote(b, sizeof(b), "abcdefghijklmnop");
	assert_int_equal(n, strlen(b));
	assert_true(n < sizeof(b));
	assert_string_equal(b, "abcdefgh...");
	/* an escape is never cut in half */
	agent_outputs_quote(b, sizeof(b), "ab\xff\xff\xff");
	assert_string_equal(b, "ab\\xff...");
	/* nor a UTF-8 sequence */
	agent_outputs_quote(b, sizeof(b), "abcdef\xc3\xa9\xc3\xa9");
	assert_string_equal(b, "abcdef\xc3\xa9...");
	agent_outputs_quote(b, sizeof(b), "a b c d e f g h");
	assert_string_equal(b, "\"a b c ...\"");
	/* every size, every input: NUL-terminated, within the buffer */
	memset(big, '\n', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (len = 0; len < 40; len++) {
		char small[40];

		memset(small, 'Z', sizeof(small));
		n = agent_outputs_quote(small, len, big);
		if (len > 0) {
			assert_true(n < len);
			assert_int_equal(strlen(small), n);
		}
	}
}

/* ---------------------------------------------------------------- names */

static void
test_civis_name(void **state)
{
	char b[64];

	(void)state;
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "sub/a.csv", NULL), CIVIS_OK);
	assert_string_equal(b, "sub/a.csv");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a/b%2Fc%", NULL), CIVIS_OK);
	assert_string_equal(b, "a/b%2Fc%");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a/b", ".tar.gz"), CIVIS_OK);
	assert_string_equal(b, "a/b.tar.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "a.csv", ".gz"), CIVIS_OK);
	assert_string_equal(b, "a.csv.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "logs", ".tar.gz"), CIVIS_OK);
	assert_string_equal(b, "logs.tar.gz");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "bad\xff.txt", NULL), CIVIS_OK);
	assert_string_equal(b, "bad\xef\xbf\xbd.txt");
	assert_int_equal(agent_outputs_civis_name(b, sizeof(b), "new\nline \xc3\xa9", NULL),
	                 CIVIS_OK);
	assert_string_equal(b, "new\nline \xc3\xa9");
	assert_int_equal(agent_outputs_civis_name(b, 8, "12345678", NULL), CIVIS_ETOOBIG);
	assert_string_equal(b, "");
	assert_int_equal(agent_outputs_civis_name(b, 9, "12345678", NULL), CIVIS_OK);
	assert_int_equal(agent_outputs_civis_name(b, 9, "1234567", ".gz"), CIVIS_ETOOBIG);
	assert_int_equal(agent_outputs_civis_name(b, 5, "\xff", NULL), CIVIS_OK);
	assert_int_equal(agent_outputs_civis_name(b, 3, "\xff", NULL), CIVIS_ETOOBIG);
}

static void
test_check_archive_and_size(void **state)
{
	char b[PATH_MAX], err[256];

	(void)state;
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "logs/", err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(b, "logs");
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a/b", err, sizeof(err)),
	                 CIVIS_OK);
	assert_string_equal(b, "a/b");
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "/abs", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_non_null(strstr(err, "relative"));
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a/../b", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "./a", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "a//b", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "..", err, sizeof(err)),
	                 CIVIS_EINVAL);
	assert_int_equal(agent_outputs_check_archive(b, sizeof(b), "/", err, sizeof(err)),
	                 CIVIS_EINVAL);

	assert_int_equal(agent_outputs_check_size(0, err, sizeof(err)), CIVIS_OK);
	assert_int_equal(agent_outputs_check_size(CIVIS_UPLOAD_MAX_SIZE, err, sizeof(err)),
	                 CIVIS_OK);
	assert_int_equal(agent_outputs_check_size(CIVIS_UPLOAD_MAX_SIZE + 1, err, sizeof(err)),
	                 CIVIS_ETOOBIG);
	assert_non_null(strstr(err, "5 TiB"));
}

static void
test_in_archive(void **state)
{
	const char *arch[] = { "logs", "a/b" };
	agent_out_rules r;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.archives = arch;
	r.narchives = 2;
	assert_int_equal(agent_outputs_in_archive(&r, "logs", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "logs", 0), 0);   /* a file so named */
	assert_int_equal(agent_outputs_in_archive(&r, "logs/x", 0), 1);
	assert_int_equal(agent_outputs_in_archive(&r, "logs2/x", 0), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "logsx", 1), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "a", 1), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "a/b", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "a/b/c/d", 0), 1);
	assert_int_equal(agent_outputs_in_archive(&r, "", 1), 0);
	r.narchives = 0;
	r.archive_dirs = 1;
	assert_int_equal(agent_outputs_in_archive(&r, "top.csv", 0), 0);
	assert_int_equal(agent_outputs_in_archive(&r, "sub", 1), 2);
	assert_int_equal(agent_outputs_in_archive(&r, "sub/x", 0), 1);
}

/* ---------------------------------------------------------------- scan */

struct tree {
	char *dir;
	char *root;
	char name255[256];
	agent_out_rules r;
};

static void
build_tree(struct tree *t)
{
	char path[PATH_MAX * 2];
	struct sockaddr_un sa;
	int s;

	t->dir = make_tmpdir();
	t->root = realpath(t->dir, NULL);
	assert_non_null(t->root);
	put_file(t->dir, "a.csv", "a,b\n1,2\n");
	put_file(t->dir, "my file.txt", "spaces\n");
	put_file(t->dir, "new\nline", "newline in name\n");
	put_file(t->dir, "bad\xff.bin", "not utf-8\n");
	put_file(t->dir, "empty", "");
	memset(t->name255, 'n', 255);
	t->name255[255] = '\0';
	put_file(t->dir, t->name255, "long name\n");
	make_dir(t->dir, "sub");
	put_file(t->dir, "sub/x.txt", "x\n");
	make_dir(t->dir, "sub/deeper");
	put_file(t->dir, "sub/deeper/y.txt", "y\n");
	make_dir(t->dir, "logs");
	put_file(t->dir, "logs/1.log", "l1\n");
	put_file(t->dir, "logs/2.log", "l2\n");
	/* a FIFO, a socket */
	snprintf(path, sizeof(path), "%s/fifo", t->dir);
	assert_int_equal(mkfifo(path, 0644), 0);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(s >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	assert_true(snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", t->dir) <
	            (int)sizeof(sa.sun_path));
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	/* symlinks: a loop, outside, inside to a file, to a dir, dangling */
	snprintf(path, sizeof(path), "%s/loop1", t->dir);
	assert_int_equal(symlink("loop2", path), 0);
	snprintf(path, sizeof(path), "%s/loop2", t->dir);
	assert_int_equal(symlink("loop1", path), 0);
	snprintf(path, sizeof(path), "%s/outside", t->dir);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	snprintf(path, sizeof(path), "%s/sneaky", t->dir);
	assert_int_equal(symlink("sub/../../", path), 0);
	snprintf(path, sizeof(path), "%s/inside", t->dir);
	assert_int_equal(symlink("sub/x.txt", path), 0);
	snprintf(path, sizeof(path), "%s/dirlink", t->dir);
	assert_int_equal(symlink("sub", path), 0);
	snprintf(path, sizeof(path), "%s/dangling", t->dir);
	assert_int_equal(symlink("nowhere", path), 0);
	snprintf(path, sizeof(path), "%s/tofifo", t->dir);
	assert_int_equal(symlink("fifo", path), 0);

	memset(&t->r, 0, sizeof(t->r));
	t->r.root = t->root;
	t->r.shown = "out";
}

static void
free_tree(struct tree *t)
{
	rm_rf(t->dir);
	free(t->dir);
	free(t->root);
}

static void
test_scan_tree(void **state)
{
	static const char *const arch[] = { "logs" };
	struct tree t;
	agent_out_scan s;
	size_t i;
	char expect_long[300];

	(void)state;
	notes_clear();
	build_tree(&t);
	t.r.archives = arch;
	t.r.narchives = 1;
	assert_int_equal(agent_outputs_scan(&s, &t.r, "", collect_note, NULL), CIVIS_OK);
	for (i = 0; i + 1 < s.nitems; i++)
		assert_true(strcmp(s.items[i].rel, s.items[i + 1].rel) < 0);
	{
		/* sorted by bytes: "bad\xff" after "a.csv", "new\n" before "nnn..." */
		const char *want[] = {
			"a.csv", "bad\xff.bin", "empty", "inside", "logs", "my file.txt",
			"new\nline", t.name255, "sub/deeper/y.txt", "sub/x.txt"
		};
		size_t nwant = sizeof(want) / sizeof(want[0]);

		if (s.nitems != nwant) {
			for (i = 0; i < s.nitems; i++)
				fprintf(stderr, "item %s\n", s.items[i].rel);
			dump_notes();
		}
		assert_int_equal(s.nitems, nwant);
		for (i = 0; i < nwant; i++)
			assert_string_equal(s.items[i].rel, want[i]);
	}
	for (i = 0; i < s.nitems; i++) {
		if (strcmp(s.items[i].rel, "logs") == 0)
			assert_int_equal(s.items[i].kind, AGENT_OUT_ARCHIVE);
		else
			assert_int_equal(s.items[i].kind, AGENT_OUT_FILE);
		if (strcmp(s.items[i].rel, "empty") == 0)
			assert_int_equal(s.items[i].st.size, 0);
		if (strcmp(s.items[i].rel, "inside") == 0)
			assert_int_equal(s.items[i].st.size, 2);   /* the target's */
	}
	assert_int_equal(s.failures, 0);
	/* the archived directory is not descended into */
	for (i = 0; i < s.ndirs; i++)
		assert_true(strncmp(s.dirs[i], "logs", 4) != 0);
	assert_int_equal(s.ndirs, 3);   /* "", sub, sub/deeper */

	assert_true(has_note("warn: skipping out/fifo: not a regular file (FIFO)"));
	assert_true(has_note("warn: skipping out/sock: not a regular file (socket)"));
	assert_true(has_note("warn: skipping out/loop1: symlink loop"));
	assert_true(has_note("warn: skipping out/loop2: symlink loop"));
	assert_true(has_note("warn: skipping out/outside: points outside the output directory"));
	assert_true(has_note("warn: skipping out/sneaky: points outside the output directory"));
	assert_true(has_note("warn: skipping out/dirlink: symlink to a directory"));
	assert_true(has_note("warn: skipping out/dangling: dangling symlink"));
	assert_true(has_note("warn: skipping out/tofifo: not a regular file (FIFO)"));
	assert_int_equal(nnotes, 9);
	(void)expect_long;
	agent_outputs_scan_dispose(&s);
	free_tree(&t);
	notes_clear();
}

static void
test_scan_archive_dirs_and_sub(void **state)
{
	struct tree t;
	agent_out_scan s;

	(void)state;
	build_tree(&t);
	t.r.archive_dirs = 1;
	assert_int_equal(agent_outputs_scan(&s, &t.r, "", NULL, NULL), CIVIS_OK);
	{
		size_t i, narch = 0;

		for (i = 0; i < s.nitems; i++) {
			assert_null(strchr(s.items[i].rel, '/'));
			if (s.items[i].kind == AGENT_OUT_ARCHIVE)
				narch++;
		}
		assert_int_equal(narch, 2);   /* logs, sub */
	}
	agent_outputs_scan_dispose(&s);
	/* a sub-tree only */
	t.r.archive_dirs = 0;
	assert_int_equal(agent_outputs_scan(&s, &t.r, "sub", NULL, NULL), CIVIS_OK);
	assert_int_equal(s.nitems, 2);
	assert_string_equal(s.items[0].rel, "sub/deeper/y.txt");
	assert_string_equal(s.items[1].rel, "sub/x.txt");
	assert_int_equal(s.ndirs, 2);
	agent_outputs_scan_dispose(&s);
	free_tree(&t);
}

static void
test_scan_cap_and_device(void **state)
{
	char *dir = make_tmpdir(), *root = realpath(dir, NULL), path[PATH_MAX];
	agent_out_rules r;
	agent_out_scan s;
	int i;

	(void)state;
	notes_clear();
	for (i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		put_file(dir, name, "x");
	}
	snprintf(path, sizeof(path), "%s/null", dir);
	if (mknod(path, S_IFCHR | 0600, makedev(1, 3)) != 0)
		assert_true(errno == EPERM);
	memset(&r, 0, sizeof(r));
	r.root = root;
	r.shown = dir;
	r.max_items = 3;
	assert_int_equal(agent_outputs_scan(&s, &r, "", collect_note, NULL), CIVIS_OK);
	assert_int_equal(s.nitems, 3);
	assert_int_equal(s.failures, 1);
	assert_true(has_note("error: more than 3 files in the output directory: "
	                     "the rest are not uploaded"));
	if (access(path, F_OK) == 0) {
		char want[PATH_MAX + 64];

		snprintf(want, sizeof(want), "warn: skipping %s/null: not a regular file "
		         "(character device)", dir);
		assert_true(has_note(want));
	}
	agent_outputs_scan_dispose(&s);
	rm_rf(dir);
	free(dir);
	free(root);
	notes_clear();
}

/* Nested 255-byte directories until the path is over PATH_MAX. */
static void
test_scan_path_too_long(void **state)
{
	char *dir = make_tmpdir(), *root = realpath(dir, NULL);
	char comp[256];
	agent_out_rules r;
	agent_out_scan s;
	int fd, i;

	(void)state;
	notes_clear();
	memset(comp, 'd', 255);
	comp[255] = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	for (i = 0; i < 17; i++) {
		int nfd;

		assert_int_equal(mkdirat(fd, comp, 0755), 0);
		nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY);
		assert_true(nfd >= 0);
		close(fd);
		fd = nfd;
	}
	i = openat(fd, "deep.txt", O_WRONLY | O_CREAT, 0644);
	assert_true(i >= 0);
	close(i);
	close(fd);
	put_file(dir, "ok.txt", "ok");
	memset(&r, 0, sizeof(r));
	r.root = root;
	r.shown = "out";
	assert_int_equal(agent_outputs_scan(&s, &r, "", collect_note, NULL), CIVIS_OK);
	assert_int_equal(s.nitems, 1);
	assert_string_equal(s.items[0].rel, "ok.txt");
	assert_true(s.failures >= 1);
	assert_true(has_note_part("PATH_MAX") || has_note_part("too deep"));
	agent_outputs_scan_dispose(&s);
	rm_rf(dir);
	free(dir);
	free(root);
	notes_clear();
}

static void
test_classify_types(void **state)
{
	struct tree t;
	agent_out_stat st;
	char reason[256];

	(void)state;
	build_tree(&t);
	assert_int_equal(agent_outputs_classify(&t.r, "a.csv", &st, reason, sizeof(reason)),
	                 AGENT_OUT_FILE);
	assert_int_equal(st.size, 8);
	assert_int_equal(agent_outputs_classify(&t.r, "sub", &st, reason, sizeof(reason)),
	                 AGENT_OUT_DIR);
	assert_int_equal(agent_outputs_classify(&t.r, "nope", &st, reason, sizeof(reason)),
	                 AGENT_OUT_GONE);
	assert_int_equal(agent_outputs_classify(&t.r, "a.csv/x", &st, reason, sizeof(reason)),
	                 AGENT_OUT_GONE);
	assert_int_equal(agent_outputs_classify(&t.r, "fifo", &st, reason, sizeof(reason)),
	                 AGENT_OUT_SKIP);
	assert_string_equal(reason, "not a regular file (FIFO)");
	assert_int_equal(agent_outputs_classify(&t.r, "inside", &st, reason, sizeof(reason)),
	                 AGENT_OUT_FILE);
	free_tree(&t);
}

/* ---------------------------------------------------------------- scheduler */

#define MAX_FAKE 20000     /* the overflow test makes 17,000 */

struct fake_up {
	civis_upload_opts o;
	char path[256];
	char name[128];
	int live;
	int canceled;
	uint64_t started_ns;
};

static struct fake_up fakes[MAX_FAKE];
static size_t nfakes;
static int64_t next_id;
static int64_t registered[MAX_FAKE];
static size_t nregistered;
static void (*reg_pending_done)(void *, int, const char *);
static void *reg_pending_ud;
static int reg_deferred;            /* registration answers later, by hand */
static const char *fail_name;       /* uploads of this name fail */

static int
fake_start(civis_client *c, const civis_upload_opts *o, civis_upload **out)
{
	struct fake_up *f;

	(void)c;
	assert_true(nfakes < MAX_FAKE);
	assert_non_null(o->loop);
	f = &fakes[nfakes];
	memset(f, 0, sizeof(*f));
	f->o = *o;
	snprintf(f->path, sizeof(f->path), "%s", o->path);
	snprintf(f->name, sizeof(f->name), "%s", o->name);
	f->o.path = f->path;
	f->o.name = f->name;
	f->live = 1;
	f->started_ns = civis_now_ns();
	*out = (civis_upload *)f;
	nfakes++;
	return CIVIS_OK;
}

static void
fake_cancel(civis_upload *u)
{
	struct fake_up *f = (struct fake_up *)u;

	assert_true(f->live);
	f->live = 0;
	f->canceled = 1;
	f->o.done(f->o.ud, CIVIS_ECANCELED, 0, "", 0, "canceled");
}

/* Finish upload i; the "SHA-256" is the file's content, which is enough to
 * tell contents apart here. */
static void
fake_finish(size_t i)
{
	struct fake_up *f = &fakes[i];
	char sha[65] = "";
	int fd;
	ssize_t n;

	assert_true(f->live);
	f->live = 0;
	fd = open(f->path, O_RDONLY);
	if (fd >= 0) {
		n = read(fd, sha, 64);
		if (n < 0)
			snprintf(sha, sizeof(sha), "dirsha");   /* a directory */
		else
			sha[n] = '\0';
		close(fd);
	}
	if (fail_name != NULL && strcmp(f->name, fail_name) == 0)
		f->o.done(f->o.ud, CIVIS_EHTTP, 0, "", 0,
		          "storage answered 403: <Error><Code>AccessDenied</Code></Error>");
	else
		f->o.done(f->o.ud, CIVIS_OK, ++next_id, sha, 1, "");
}

static int
fake_register(civis_client *c, int64_t id, void (*done)(void *, int, const char *), void *ud)
{
	(void)c;
	assert_true(nregistered < MAX_FAKE);
	registered[nregistered++] = id;
	if (reg_deferred) {
		reg_pending_done = done;
		reg_pending_ud = ud;
	} else {
		done(ud, CIVIS_OK, "");
	}
	return CIVIS_OK;
}

static const agent_outputs_hooks fake_hooks = { fake_start, fake_cancel, fake_register };

static size_t
nlive(void)
{
	size_t i, n = 0;

	for (i = 0; i < nfakes; i++)
		n += fakes[i].live;
	return n;
}

static struct fake_up *
fake_by_name(const char *name, int live)
{
	size_t i;

	for (i = nfakes; i-- > 0; )
		if (strcmp(fakes[i].name, name) == 0 && (!live || fakes[i].live))
			return &fakes[i];
	return NULL;
}

static void
finish_all(agent_outputs *o)
{
	size_t i;
	int progress = 1;

	(void)o;
	while (progress) {
		progress = 0;
		for (i = 0; i < nfakes; i++) {
			if (fakes[i].live) {
				fake_finish(i);
				progress = 1;
			}
		}
	}
}

struct sched {
	civis_loop *loop;
	agent_outputs *o;
	char *dir;
	int dummy_client;
};

static void
sched_setup(struct sched *s, const char *const *archives, size_t narchives, int gzip)
{
	agent_outputs_opts opts;
	char err[256];

	memset(s, 0, sizeof(*s));
	memset(fakes, 0, sizeof(fakes));
	nfakes = 0;
	nregistered = 0;
	next_id = 100;
	reg_deferred = 0;
	fail_name = NULL;
	notes_clear();
	agent_outputs__set_hooks(&fake_hooks);
	assert_int_equal(civis_loop_new(&s->loop), CIVIS_OK);
	s->dir = make_tmpdir();
	memset(&opts, 0, sizeof(opts));
	opts.dir = s->dir;
	opts.archives = archives;
	opts.narchives = narchives;
	opts.gzip = gzip;
	opts.note = collect_note;
	assert_int_equal(agent_outputs_new(&s->o, s->loop, (civis_client *)&s->dummy_client,
	                                   &opts, err, sizeof(err)), CIVIS_OK);
	assert_true(agent_outputs__watching(s->o) >= 1);
}

static void
sched_teardown(struct sched *s)
{
	agent_outputs_free(s->o);
	civis_loop_free(s->loop);
	rm_rf(s->dir);
	free(s->dir);
	agent_outputs__set_hooks(NULL);
	notes_clear();
}

/* Run the loop until cond() or a second passes. */
static void
spin(struct sched *s, size_t want_fakes)
{
	uint64_t end = civis_now_ns() + 2000000000ULL;

	while (nfakes < want_fakes && civis_now_ns() < end)
		assert_int_equal(civis_loop_run_once(s->loop, 50000000ULL), CIVIS_OK);
	/* and drain whatever else is pending */
	assert_int_equal(civis_loop_run_once(s->loop, 20000000ULL), CIVIS_OK);
}

static void
test_sched_inflight_cap_and_order(void **state)
{
	struct sched s;
	char name[32];
	int i;
	uint64_t t_exit;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	/* ten complete files, written in reverse name order */
	for (i = 9; i >= 0; i--) {
		snprintf(name, sizeof(name), "f%02d.txt", i);
		put_file(s.dir, name, name);
	}
	spin(&s, AGENT_OUTPUTS_MAX_INFLIGHT);
	assert_int_equal(nfakes, AGENT_OUTPUTS_MAX_INFLIGHT);
	assert_int_equal(agent_outputs__inflight(s.o), AGENT_OUTPUTS_MAX_INFLIGHT);
	assert_false(agent_outputs_idle(s.o));
	/* uploads go in the order the files were completed */
	assert_string_equal(fakes[0].name, "f09.txt");
	assert_int_equal(fakes[0].o.kind, CIVIS_UPLOAD_FILE);
	fake_finish(0);
	assert_int_equal(nfakes, AGENT_OUTPUTS_MAX_INFLIGHT + 1);
	assert_int_equal(nlive(), AGENT_OUTPUTS_MAX_INFLIGHT);
	finish_all(s.o);
	assert_int_equal(nfakes, 10);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(nregistered, 0);      /* nothing registered during the run */

	t_exit = civis_now_ns();
	agent_outputs_command_exited(s.o);
	/* nothing changed: no upload again; all registered, in name order */
	assert_int_equal(nfakes, 10);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(nregistered, 10);
	for (i = 0; i < 10; i++) {
		/* f09 got id 101 ... f00 got id 110 */
		assert_int_equal(registered[i], 110 - i);
		assert_true(fakes[i].started_ns < t_exit);
	}
	assert_int_equal(agent_outputs_failed(s.o), 0);
	sched_teardown(&s);
}

static void
test_sched_changed_vanished_failed(void **state)
{
	struct sched s;
	struct fake_up *f;
	char path[PATH_MAX];

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	make_dir(s.dir, "sub");
	spin(&s, 0);     /* the new directory gets its watch */
	put_file(s.dir, "sub/changed.txt", "v1");
	put_file(s.dir, "gone.txt", "soon gone");
	put_file(s.dir, "bad.txt", "will fail");
	put_file(s.dir, "grows.txt", "g1");
	spin(&s, 4);
	assert_int_equal(nfakes, 4);
	assert_non_null(fake_by_name("sub/changed.txt", 1));
	/* changed after its upload finished */
	fake_finish((size_t)(fake_by_name("sub/changed.txt", 1) - fakes));
	put_file(s.dir, "sub/changed.txt", "v2");
	/* grows while it is uploaded */
	put_file(s.dir, "grows.txt", "g1 and more");
	spin(&s, 0);
	fake_finish((size_t)(fake_by_name("grows.txt", 1) - fakes));
	/* vanished after its upload */
	fake_finish((size_t)(fake_by_name("gone.txt", 1) - fakes));
	snprintf(path, sizeof(path), "%s/gone.txt", s.dir);
	assert_int_equal(unlink(path), 0);
	/* storage error during the run: retried at exit, fails again */
	fail_name = "bad.txt";
	fake_finish((size_t)(fake_by_name("bad.txt", 1) - fakes));
	assert_true(has_note_part("warn: upload of out") || has_note_part("upload of "));
	assert_int_equal(nlive(), 0);
	assert_int_equal(nfakes, 4);

	agent_outputs_command_exited(s.o);
	/* at exit, in name order: bad.txt (retry), grows.txt, sub/changed.txt */
	assert_int_equal(nfakes, 7);
	assert_string_equal(fakes[4].name, "bad.txt");
	assert_string_equal(fakes[5].name, "grows.txt");
	assert_string_equal(fakes[6].name, "sub/changed.txt");
	assert_false(agent_outputs_idle(s.o));
	finish_all(s.o);
	assert_true(agent_outputs_idle(s.o));
	/* registered: grows.txt (new id), sub/changed.txt (new id); not gone.txt,
	 * not the first copies */
	assert_int_equal(nregistered, 2);
	f = fake_by_name("grows.txt", 0);
	assert_non_null(f);
	assert_int_equal(agent_outputs_failed(s.o), 1);
	assert_true(has_note_part("error: cannot upload"));
	assert_true(has_note_part("AccessDenied"));
	assert_true(has_note_part("gone.txt was removed before the command exited: not registered"));
	sched_teardown(&s);
}

static void
test_sched_archives_gzip_dedupe(void **state)
{
	static const char *const arch[] = { "logs", "missing" };
	struct sched s;

	(void)state;
	sched_setup(&s, arch, 2, 1);
	make_dir(s.dir, "logs");
	spin(&s, 0);
	put_file(s.dir, "logs/1.log", "one");
	put_file(s.dir, "top.csv", "top");
	spin(&s, 1);
	spin(&s, 2);
	/* only the top-level file: the archived directory waits for exit */
	assert_int_equal(nfakes, 1);
	assert_string_equal(fakes[0].name, "top.csv.gz");
	assert_int_equal(fakes[0].o.kind, CIVIS_UPLOAD_GZIP);
	finish_all(s.o);
	agent_outputs_command_exited(s.o);
	assert_int_equal(nfakes, 2);
	assert_string_equal(fakes[1].name, "logs.tar.gz");
	assert_int_equal(fakes[1].o.kind, CIVIS_UPLOAD_TARGZ);
	assert_non_null(strstr(fakes[1].path, "/logs"));
	finish_all(s.o);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(nregistered, 2);
	assert_int_equal(registered[0], 102);   /* logs.tar.gz < top.csv.gz */
	assert_int_equal(registered[1], 101);
	assert_int_equal(agent_outputs_failed(s.o), 1);   /* "missing" */
	assert_true(has_note("error: cannot archive out/missing: no such directory") ||
	            has_note_part("cannot archive"));
	sched_teardown(&s);
}

static void
test_sched_same_name_same_content_once(void **state)
{
	static const char *const arch[] = { "x" };
	struct sched s;

	(void)state;
	sched_setup(&s, arch, 1, 0);
	make_dir(s.dir, "x");
	/* a file named like the archive, with the content the fake engine
	 * reports as the archive's SHA-256: same (name, SHA-256) */
	put_file(s.dir, "x.tar.gz", "dirsha");
	put_file(s.dir, "y", "y");
	spin(&s, 2);
	finish_all(s.o);
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(nfakes, 3);
	assert_int_equal(nregistered, 2);      /* x.tar.gz once, y */
	assert_true(has_note_part("has the same name and content as"));
	assert_int_equal(agent_outputs_failed(s.o), 0);
	sched_teardown(&s);
}

static void
test_sched_symlink_inside_registered(void **state)
{
	struct sched s;
	char path[PATH_MAX];

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	/* "a" and a symlink "b" to it: two names, both go */
	put_file(s.dir, "a", "same");
	snprintf(path, sizeof(path), "%s/b", s.dir);
	assert_int_equal(symlink("a", path), 0);
	snprintf(path, sizeof(path), "%s/c", s.dir);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	agent_outputs_command_exited(s.o);
	assert_int_equal(nfakes, 2);
	assert_non_null(strstr(fakes[1].path, "/b"));
	finish_all(s.o);
	assert_int_equal(nregistered, 2);
	assert_true(has_note_part("/c: points outside the output directory"));
	assert_int_equal(agent_outputs_failed(s.o), 0);
	sched_teardown(&s);
}

static void
test_sched_too_big_and_empty(void **state)
{
	struct sched s;
	char path[PATH_MAX];
	int fd;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	snprintf(path, sizeof(path), "%s/huge.bin", s.dir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	if (ftruncate(fd, (off_t)(CIVIS_UPLOAD_MAX_SIZE + 1)) != 0) {
		close(fd);
		sched_teardown(&s);
		skip();
	}
	close(fd);
	put_file(s.dir, "empty", "");
	spin(&s, 1);
	/* refused before anything is sent, quietly during the run */
	assert_null(fake_by_name("huge.bin", 0));
	assert_non_null(fake_by_name("empty", 0));
	finish_all(s.o);
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	assert_null(fake_by_name("huge.bin", 0));
	assert_int_equal(nregistered, 1);
	assert_int_equal(agent_outputs_failed(s.o), 1);
	assert_true(has_note("error: cannot upload out/huge.bin: 5497558138881 bytes is "
	                     "over the 5 TiB a storage object can hold") ||
	            has_note_part("huge.bin: 5497558138881 bytes"));
	sched_teardown(&s);
}

/* The scenario of an unreadable file; returns a failed check's line, or 0.
 * Runs without cmocka asserts: as root it runs in a child that dropped to
 * an unprivileged user (root reads everything). */
static int
unreadable_scenario(void)
{
	struct sched s;
	char path[PATH_MAX];

	sched_setup(&s, NULL, 0, 0);
	if (chmod(s.dir, 0777) != 0)
		return __LINE__;
	put_file(s.dir, "secret", "no");
	snprintf(path, sizeof(path), "%s/secret", s.dir);
	if (chmod(path, 0) != 0)
		return __LINE__;
	put_file(s.dir, "fine", "yes");
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	if (nregistered != 1)
		return __LINE__;
	if (agent_outputs_failed(s.o) != 1)
		return __LINE__;
	if (!has_note_part("secret: Permission denied")) {
		dump_notes();
		return __LINE__;
	}
	sched_teardown(&s);
	return 0;
}

static void
test_sched_unreadable(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	if (geteuid() != 0) {
		assert_int_equal(unreadable_scenario(), 0);
		return;
	}
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(200);
		_exit(unreadable_scenario() != 0 ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 200)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
test_sched_free_in_flight(void **state)
{
	struct sched s;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	put_file(s.dir, "a", "a");
	put_file(s.dir, "b", "b");
	spin(&s, 2);
	assert_int_equal(nlive(), 2);
	/* a registration still in flight when the outputs go away */
	reg_deferred = 1;
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	assert_int_equal(nregistered, 1);
	assert_false(agent_outputs_idle(s.o));
	notes_clear();
	agent_outputs_report_unfinished(s.o);
	assert_true(has_note_part("uploaded as file"));
	agent_outputs_free(s.o);
	s.o = NULL;
	/* the client answers later: nothing to touch, no leak */
	reg_pending_done(reg_pending_ud, CIVIS_ECANCELED, "canceled");
	civis_loop_free(s.loop);
	rm_rf(s.dir);
	free(s.dir);
	agent_outputs__set_hooks(NULL);
	notes_clear();
}

static void
test_sched_cancel_removed_and_new_dir(void **state)
{
	struct sched s;
	char path[PATH_MAX];
	int i;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	for (i = 0; i < 6; i++) {
		char name[16];

		snprintf(name, sizeof(name), "r%d", i);
		put_file(s.dir, name, name);
	}
	spin(&s, 4);
	assert_int_equal(nlive(), 4);
	/* remove one in flight and one queued */
	snprintf(path, sizeof(path), "%s/r5", s.dir);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/r0", s.dir);
	assert_int_equal(unlink(path), 0);
	/* a directory made during the run gets a watch; its file goes early */
	make_dir(s.dir, "late");
	spin(&s, 0);
	put_file(s.dir, "late/f", "f");
	spin(&s, 0);
	agent_outputs_command_exited(s.o);
	/* r0..r3 were in flight, r4 and r5 queued */
	assert_true(fake_by_name("r0", 0) != NULL && fake_by_name("r0", 0)->canceled);
	assert_null(fake_by_name("r5", 0));
	finish_all(s.o);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(agent_outputs_failed(s.o), 0);
	assert_int_equal(nregistered, 5);   /* late/f, r1..r4 */
	assert_true(has_note_part("r0 was removed before the command exited: not uploaded"));
	assert_true(has_note_part("r5 was removed before the command exited: not uploaded"));
	sched_teardown(&s);
}

static void
test_new_creates_dir_and_rejects(void **state)
{
	civis_loop *loop;
	agent_outputs *o;
	agent_outputs_opts opts;
	char err[256], path[PATH_MAX];
	char *dir = make_tmpdir();
	const char *bad[] = { "../up" };
	int dummy;
	struct stat sb;

	(void)state;
	assert_int_equal(civis_loop_new(&loop), CIVIS_OK);
	memset(&opts, 0, sizeof(opts));
	snprintf(path, sizeof(path), "%s/a/b/c/", dir);
	opts.dir = path;
	opts.note = collect_note;
	assert_int_equal(agent_outputs_new(&o, loop, (civis_client *)&dummy, &opts, err,
	                                   sizeof(err)), CIVIS_OK);
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	agent_outputs_free(o);
	opts.archives = bad;
	opts.narchives = 1;
	assert_int_equal(agent_outputs_new(&o, loop, (civis_client *)&dummy, &opts, err,
	                                   sizeof(err)), CIVIS_EINVAL);
	assert_null(o);
	assert_true(strlen(err) > 0);
	/* a file where the directory should be */
	put_file(dir, "file", "x");
	snprintf(path, sizeof(path), "%s/file", dir);
	opts.archives = NULL;
	opts.narchives = 0;
	assert_int_equal(agent_outputs_new(&o, loop, (civis_client *)&dummy, &opts, err,
	                                   sizeof(err)), CIVIS_EINVAL);
	assert_non_null(strstr(err, "not a directory"));
	civis_loop_free(loop);
	rm_rf(dir);
	free(dir);
	notes_clear();
}

static void
test_sched_directory_renamed(void **state)
{
	struct sched s;
	char a[PATH_MAX], b[PATH_MAX];

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	make_dir(s.dir, "sub");
	spin(&s, 0);
	snprintf(a, sizeof(a), "%s/sub", s.dir);
	snprintf(b, sizeof(b), "%s/moved", s.dir);
	assert_int_equal(rename(a, b), 0);
	spin(&s, 0);
	put_file(s.dir, "moved/f", "f");
	spin(&s, 1);
	assert_int_equal(nfakes, 1);
	assert_string_equal(fakes[0].name, "moved/f");
	assert_non_null(strstr(fakes[0].path, "/moved/f"));
	assert_true(agent_outputs__rebuilds(s.o) >= 1);
	/* the old name is watched no more, the new one is */
	assert_int_equal(agent_outputs__watching(s.o), 2);
	finish_all(s.o);
	agent_outputs_command_exited(s.o);
	assert_int_equal(nregistered, 1);
	sched_teardown(&s);
}

/* More events than the kernel queues: IN_Q_OVERFLOW, a rebuild of the
 * watches, and whatever was missed goes at exit. */
static void
test_sched_queue_overflow(void **state)
{
	struct sched s;
	char name[32];
	int i, n = 17000;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	make_dir(s.dir, "d");
	spin(&s, 0);
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "d/%05d", i);
		put_file(s.dir, name, "x");
	}
	/* a later directory is still watched after the overflow */
	spin(&s, 4);
	assert_true(agent_outputs__rebuilds(s.o) >= 1);
	make_dir(s.dir, "after");
	spin(&s, 0);
	assert_int_equal(agent_outputs__watching(s.o), 3);
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(agent_outputs_failed(s.o), 0);
	/* every file once, whether its event came or the overflow ate it */
	assert_int_equal(nregistered, n);
	assert_true(nfakes >= (size_t)n);
	sched_teardown(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_plain_and_escapes),
		cmocka_unit_test(test_quote_quotes_when_needed),
		cmocka_unit_test(test_quote_truncates_at_boundaries),
		cmocka_unit_test(test_civis_name),
		cmocka_unit_test(test_check_archive_and_size),
		cmocka_unit_test(test_in_archive),
		cmocka_unit_test(test_scan_tree),
		cmocka_unit_test(test_scan_archive_dirs_and_sub),
		cmocka_unit_test(test_scan_cap_and_device),
		cmocka_unit_test(test_scan_path_too_long),
		cmocka_unit_test(test_classify_types),
		cmocka_unit_test(test_sched_inflight_cap_and_order),
		cmocka_unit_test(test_sched_changed_vanished_failed),
		cmocka_unit_test(test_sched_archives_gzip_dedupe),
		cmocka_unit_test(test_sched_same_name_same_content_once),
		cmocka_unit_test(test_sched_symlink_inside_registered),
		cmocka_unit_test(test_sched_too_big_and_empty),
		cmocka_unit_test(test_sched_unreadable),
		cmocka_unit_test(test_sched_free_in_flight),
		cmocka_unit_test(test_sched_cancel_removed_and_new_dir),
		cmocka_unit_test(test_new_creates_dir_and_rejects),
		cmocka_unit_test(test_sched_directory_renamed),
		cmocka_unit_test(test_sched_queue_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
