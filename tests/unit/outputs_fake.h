/* outputs_fake.h: a fake upload engine and registration for the outputs
 * unit programs (test_outputs.c, test_outputs_register.c), and the rig that
 * runs the module on a real loop with real inotify. Include after
 * outputs_testutil.h. */
#ifndef OUTPUTS_FAKE_H
#define OUTPUTS_FAKE_H

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
static void (*reg_pending_done[64])(void *, int, const char *);
static void *reg_pending_ud[64];
static size_t nreg_pending;
static int reg_deferred;            /* registration answers later, by hand */
static const char *fail_name;       /* uploads of this name fail */

static inline int
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

static inline void
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
static inline void
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

static inline int
fake_register(civis_run *r, const char *type, int64_t id,
              void (*done)(void *, int, const char *), void *ud)
{
	(void)r;
	assert_string_equal(type, "File");
	assert_true(nregistered < MAX_FAKE);
	registered[nregistered++] = id;
	if (reg_deferred) {
		assert_true(nreg_pending < 64);
		reg_pending_done[nreg_pending] = done;
		reg_pending_ud[nreg_pending++] = ud;
	} else {
		done(ud, CIVIS_OK, "");
	}
	return CIVIS_OK;
}

static const agent_outputs_hooks fake_hooks = { fake_start, fake_cancel, fake_register };

/* A file that is not small (2 MiB, sparse) starting with content, closed
 * after writing like any other. */
static inline void
put_big_file(const char *dir, const char *rel, const char *content)
{
	char p[PATH_MAX];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	assert_int_equal(ftruncate(fd, 2 << 20), 0);
	assert_int_equal(close(fd), 0);
}

static inline size_t
nlive(void)
{
	size_t i, n = 0;

	for (i = 0; i < nfakes; i++)
		n += fakes[i].live;
	return n;
}

static inline struct fake_up *
fake_by_name(const char *name, int live)
{
	size_t i;

	for (i = nfakes; i-- > 0; )
		if (strcmp(fakes[i].name, name) == 0 && (!live || fakes[i].live))
			return &fakes[i];
	return NULL;
}

static inline void
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

static inline void
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
	nreg_pending = 0;
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
	opts.run = (civis_run *)&s->dummy_client;   /* only the fake engine sees it */
	assert_int_equal(agent_outputs_new(&s->o, s->loop, (civis_client *)&s->dummy_client,
	                                   &opts, err, sizeof(err)), CIVIS_OK);
	assert_true(agent_outputs__watching(s->o) >= 1);
}

static inline void
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
static inline void
spin(struct sched *s, size_t want_fakes)
{
	uint64_t end = civis_now_ns() + 2000000000ULL;

	while (nfakes < want_fakes && civis_now_ns() < end)
		assert_int_equal(civis_loop_run_once(s->loop, 50000000ULL), CIVIS_OK);
	/* and drain whatever else is pending */
	assert_int_equal(civis_loop_run_once(s->loop, 20000000ULL), CIVIS_OK);
}


#endif
