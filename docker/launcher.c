/* launcher.c: <prefix>/bin/civis-agent, a tiny static program that runs the
 * real agent with the layer's own loader and libraries:
 *
 *   <prefix>/lib/<loader> --library-path <prefix>/lib --argv0 ARGV0 \
 *       <prefix>/libexec/civis-agent ARGS...
 *
 * so the agent works in any image (glibc, musl, none at all). The library
 * path goes to the loader on its command line and nowhere else: the
 * environment is passed through untouched, so the user's command, which the
 * agent starts with the image's own loader, sees exactly the container's
 * environment and uses the image's own libraries.
 *
 * <prefix> is two levels above /proc/self/exe (<prefix>/bin/civis-agent),
 * or CIVIS_PREFIX when /proc is not mounted. Built with musl-gcc -static
 * (or gcc -static) by docker/make-layer.sh; it uses no stdio. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CIVIS_PREFIX
#define CIVIS_PREFIX "/opt/civis-agent"
#endif
#ifndef CIVIS_LOADER
#define CIVIS_LOADER "ld-linux-x86-64.so.2"
#endif

extern char **environ;

static void
say(const char *s)
{
	size_t n = strlen(s);

	while (n > 0) {
		ssize_t w = write(2, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* Print the error and _exit(code); "returns" code so callers can write
 * `return die(...)` and every checker sees the path end. */
static int
die(const char *what, const char *path, int code)
{
	const char *why = strerror(errno);

	say("civis-agent launcher: ");
	say(what);
	if (path != NULL) {
		say(" ");
		say(path);
	}
	say(": ");
	say(why);
	say("\n");
	_exit(code);
	return code;
}

/* out = a + b, or 0 when it does not fit cap. */
static int
join(char *out, size_t cap, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la + lb + 1 > cap)
		return 0;
	memcpy(out, a, la);
	memcpy(out + la, b, lb + 1);
	return 1;
}

/* Cut the last path component off p; 0 when there is none to cut. */
static int
cut_last(char *p)
{
	char *slash = strrchr(p, '/');

	if (slash == NULL)
		return 0;
	*slash = '\0';
	return 1;
}

int
main(int argc, char **argv)
{
	char prefix[PATH_MAX], loader[PATH_MAX], libdir[PATH_MAX], agent[PATH_MAX];
	char **nargv;
	ssize_t n;
	int i, k;

	n = readlink("/proc/self/exe", prefix, sizeof(prefix));
	if (n > 0 && (size_t)n < sizeof(prefix) && prefix[0] == '/') {
		prefix[n] = '\0';
		if (!cut_last(prefix) || !cut_last(prefix))
			prefix[0] = '\0';  /* /civis-agent: the prefix is the root */
	} else if (!join(prefix, sizeof(prefix), CIVIS_PREFIX, "")) {
		errno = ENAMETOOLONG;
		return die("prefix too long", NULL, 126);
	}
	if (!join(loader, sizeof(loader), prefix, "/lib/" CIVIS_LOADER) ||
	    !join(libdir, sizeof(libdir), prefix, "/lib") ||
	    !join(agent, sizeof(agent), prefix, "/libexec/civis-agent")) {
		errno = ENAMETOOLONG;
		return die("path too long under", prefix, 126);
	}
	if (argc < 1)
		argc = 0;
	nargv = malloc(((size_t)argc + 8) * sizeof(*nargv));
	if (nargv == NULL)
		return die("out of memory", NULL, 126);
	k = 0;
	nargv[k++] = loader;
	nargv[k++] = "--library-path";
	nargv[k++] = libdir;
	nargv[k++] = "--argv0";
	nargv[k++] = argc > 0 ? argv[0] : "civis-agent";
	nargv[k++] = agent;
	for (i = 1; i < argc; i++)
		nargv[k++] = argv[i];
	nargv[k] = NULL;
	execve(loader, nargv, environ);
	return die("cannot run", loader, errno == ENOENT ? 127 : 126);
}
