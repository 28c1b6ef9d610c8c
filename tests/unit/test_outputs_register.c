/* test_outputs_register.c: outputs_register.c with the fake engine:
 * registrations in name order, several in flight, a (name, SHA-256) pair
 * once, a registration outliving the outputs; small files many at once. */
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
test_sched_small_files_in_flight(void **state)
{
	struct sched s;
	char name[32];
	size_t i;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "s%02zu", i);
		put_file(s.dir, name, name);
	}
	put_big_file(s.dir, "zbig", "zbig");
	put_file(s.dir, "zsmall", "zsmall");
	spin(&s, AGENT_OUTPUTS_SMALL_INFLIGHT);
	assert_int_equal(nlive(), AGENT_OUTPUTS_SMALL_INFLIGHT);
	assert_int_equal(agent_outputs__inflight(s.o), AGENT_OUTPUTS_SMALL_INFLIGHT);
	/* finish all but 4: the other small ones start, then zbig waits */
	for (i = 0; i < nfakes && nlive() > AGENT_OUTPUTS_MAX_INFLIGHT; i++)
		if (fakes[i].live)
			fake_finish(i);
	assert_null(fake_by_name("zsmall", 0));
	assert_null(fake_by_name("zbig", 0));
	finish_all(s.o);
	assert_non_null(fake_by_name("zbig", 0));
	assert_non_null(fake_by_name("zsmall", 0));
	/* registrations: AGENT_OUTPUTS_REG_INFLIGHT at once, in name order */
	reg_deferred = 1;
	agent_outputs_command_exited(s.o);
	assert_int_equal(nreg_pending, AGENT_OUTPUTS_REG_INFLIGHT);
	while (nreg_pending > 0) {
		size_t n = nreg_pending;

		nreg_pending = 0;
		for (i = 0; i < n; i++)
			reg_pending_done[i](reg_pending_ud[i], CIVIS_OK, "");
	}
	assert_int_equal(nregistered, 42);
	for (i = 1; i < nregistered; i++)
		assert_true(registered[i - 1] != registered[i]);
	assert_true(agent_outputs_idle(s.o));
	assert_int_equal(agent_outputs_failed(s.o), 0);
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
test_sched_free_in_flight(void **state)
{
	struct sched s;

	(void)state;
	sched_setup(&s, NULL, 0, 0);
	put_file(s.dir, "a", "a");
	put_file(s.dir, "b", "b");
	spin(&s, 2);
	assert_int_equal(nlive(), 2);
	/* registrations still in flight when the outputs go away (both at
	 * once: up to AGENT_OUTPUTS_REG_INFLIGHT go together) */
	reg_deferred = 1;
	agent_outputs_command_exited(s.o);
	finish_all(s.o);
	assert_int_equal(nregistered, 2);
	assert_int_equal(nreg_pending, 2);
	assert_false(agent_outputs_idle(s.o));
	notes_clear();
	agent_outputs_report_unfinished(s.o);
	assert_true(has_note_part("uploaded as file"));
	agent_outputs_free(s.o);
	s.o = NULL;
	/* the client answers later: nothing to touch, no leak */
	reg_pending_done[0](reg_pending_ud[0], CIVIS_ECANCELED, "canceled");
	reg_pending_done[1](reg_pending_ud[1], CIVIS_OK, "");
	civis_loop_free(s.loop);
	rm_rf(s.dir);
	free(s.dir);
	agent_outputs__set_hooks(NULL);
	notes_clear();
}


int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sched_small_files_in_flight),
		cmocka_unit_test(test_sched_same_name_same_content_once),
		cmocka_unit_test(test_sched_symlink_inside_registered),
		cmocka_unit_test(test_sched_free_in_flight),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
