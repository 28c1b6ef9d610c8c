/* test_outputs.c: the output directory's scheduler, watch and registration
 * (outputs.c, outputs_watch.c, outputs_schedule.c, outputs_register.c),
 * driven by real inotify events on a real loop with a fake upload engine. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "civis/civis.h"
#include "civis/loop.h"
#include "civis/upload.h"
#include "../../agent/outputs.h"

#include "outputs_testutil.h"
#include "outputs_fake.h"

static void
test_sched_inflight_cap_and_order(void **state)
{
	struct sched s;
	char name[32];
	int i;
	uint64_t t_exit;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	/* ten complete files that are not small, written in reverse name order */
	for (i = 9; i >= 0; i--) {
		snprintf(name, sizeof(name), "f%02d.txt", i);
		put_big_file(s.dir, name, name);
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

/* Small files: up to AGENT_OUTPUTS_SMALL_INFLIGHT at once; a big one in
 * line waits until fewer than AGENT_OUTPUTS_MAX_INFLIGHT are in flight;
 * registrations: up to AGENT_OUTPUTS_REG_INFLIGHT at once, started in name
 * order. */
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
		put_big_file(s.dir, name, name);
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
	opts.run = (civis_run *)&dummy;
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
	/* no run to register the outputs with */
	snprintf(path, sizeof(path), "%s/a", dir);
	opts.run = NULL;
	assert_int_equal(agent_outputs_new(&o, loop, (civis_client *)&dummy, &opts, err,
	                                   sizeof(err)), CIVIS_EINVAL);
	assert_string_equal(err, "outputs: missing loop, client, run, directory or note");
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
		cmocka_unit_test(test_sched_inflight_cap_and_order),
		cmocka_unit_test(test_sched_changed_vanished_failed),
		cmocka_unit_test(test_sched_archives_gzip_dedupe),
		cmocka_unit_test(test_sched_too_big_and_empty),
		cmocka_unit_test(test_sched_unreadable),
		cmocka_unit_test(test_sched_cancel_removed_and_new_dir),
		cmocka_unit_test(test_new_creates_dir_and_rejects),
		cmocka_unit_test(test_sched_directory_renamed),
		cmocka_unit_test(test_sched_queue_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
