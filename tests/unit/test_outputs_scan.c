/* test_outputs_scan.c: outputs_scan.c: the scan (FIFO, socket, device,
 * symlink loop, links inside and outside, odd names, 255-byte names, paths
 * over PATH_MAX) and classification. */
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

#include "outputs_testutil.h"

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


int agent_outputs__open_beneath(int dirfd, const char *rel, int flags);
void agent_outputs__set_no_openat2(int on);

/* The same answers with openat2 and with the walk by components. */
static void
test_open_beneath(void **state)
{
	struct tree t;
	char path[PATH_MAX];
	int pass, root, fd;

	(void)state;
	build_tree(&t);
	snprintf(path, sizeof(path), "%s/subswap", t.dir);
	assert_int_equal(symlink("/etc", path), 0);
	root = open(t.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(root >= 0);
	for (pass = 0; pass < 2; pass++) {
		agent_outputs__set_no_openat2(pass);
		fd = agent_outputs__open_beneath(root, "sub/deeper/y.txt", O_RDONLY);
		assert_true(fd >= 0);
		close(fd);
		/* a symlink on the way, inside or out: never followed */
		errno = 0;
		assert_int_equal(agent_outputs__open_beneath(root, "dirlink/x.txt", O_RDONLY), -1);
		assert_int_equal(errno, ELOOP);
		assert_int_equal(agent_outputs__open_beneath(root, "subswap/passwd", O_RDONLY), -1);
		assert_int_equal(errno, ELOOP);
		/* the last one: ELOOP, or the link itself with O_PATH */
		assert_int_equal(agent_outputs__open_beneath(root, "inside", O_RDONLY), -1);
		assert_int_equal(errno, ELOOP);
		fd = agent_outputs__open_beneath(root, "inside", O_PATH);
		assert_true(fd >= 0);
		close(fd);
		/* out of the tree by name */
		assert_int_equal(agent_outputs__open_beneath(root, "sub/../../x", O_RDONLY), -1);
		assert_true(errno == EXDEV || errno == ELOOP);
		assert_int_equal(agent_outputs__open_beneath(root, "/etc/passwd", O_RDONLY), -1);
		assert_int_equal(errno, EXDEV);
		assert_int_equal(agent_outputs__open_beneath(root, "nope/x", O_RDONLY), -1);
		assert_int_equal(errno, ENOENT);
	}
	agent_outputs__set_no_openat2(0);
	close(root);
	free_tree(&t);
}

/* agent_outputs_open: the kinds of agent_outputs_classify, from the open
 * object; a descriptor only for what is uploaded. */
static void
test_open_outputs(void **state)
{
	struct tree t;
	agent_out_stat st;
	struct stat sb;
	char reason[256], path[PATH_MAX], buf[8];
	int fd, pass;

	(void)state;
	build_tree(&t);
	snprintf(path, sizeof(path), "%s/subswap", t.dir);
	assert_int_equal(symlink("/etc", path), 0);
	for (pass = 0; pass < 2; pass++) {
		agent_outputs__set_no_openat2(pass);
		assert_int_equal(agent_outputs_open(&t.r, "a.csv", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_FILE);
		assert_true(fd >= 0);
		assert_int_equal(st.size, 8);
		assert_int_equal(fstat(fd, &sb), 0);
		assert_true(sb.st_ino == st.ino && sb.st_dev == st.dev);
		assert_int_equal(read(fd, buf, 4), 4);
		assert_memory_equal(buf, "a,b\n", 4);
		close(fd);
		/* a link to a file inside: the target, opened by its own path */
		assert_int_equal(agent_outputs_open(&t.r, "inside", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_FILE);
		assert_true(fd >= 0);
		assert_int_equal(read(fd, buf, 2), 2);
		assert_memory_equal(buf, "x\n", 2);
		close(fd);
		assert_int_equal(agent_outputs_open(&t.r, "outside", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_int_equal(fd, -1);
		assert_string_equal(reason, "points outside the output directory");
		assert_int_equal(agent_outputs_open(&t.r, "subswap/passwd", &st, &fd, reason,
		                                    sizeof(reason)), AGENT_OUT_SKIP);
		assert_int_equal(fd, -1);
		assert_string_equal(reason, "a directory on its path is a symlink now (not followed)");
		assert_int_equal(agent_outputs_open(&t.r, "dirlink/x.txt", &st, &fd, reason,
		                                    sizeof(reason)), AGENT_OUT_SKIP);
		assert_int_equal(agent_outputs_open(&t.r, "dirlink", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_string_equal(reason, "symlink to a directory");
		assert_int_equal(agent_outputs_open(&t.r, "loop1", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_string_equal(reason, "symlink loop");
		assert_int_equal(agent_outputs_open(&t.r, "dangling", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_string_equal(reason, "dangling symlink");
		/* a FIFO is never opened for reading (that could block) */
		assert_int_equal(agent_outputs_open(&t.r, "fifo", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_int_equal(fd, -1);
		assert_string_equal(reason, "not a regular file (FIFO)");
		assert_int_equal(agent_outputs_open(&t.r, "tofifo", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_SKIP);
		assert_int_equal(agent_outputs_open(&t.r, "nope", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_GONE);
		assert_int_equal(agent_outputs_open(&t.r, "sub", &st, &fd, reason, sizeof(reason)),
		                 AGENT_OUT_DIR);
		assert_int_equal(fd, -1);
	}
	agent_outputs__set_no_openat2(0);
	free_tree(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scan_tree),
		cmocka_unit_test(test_scan_archive_dirs_and_sub),
		cmocka_unit_test(test_scan_cap_and_device),
		cmocka_unit_test(test_scan_path_too_long),
		cmocka_unit_test(test_classify_types),
		cmocka_unit_test(test_open_beneath),
		cmocka_unit_test(test_open_outputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
