/* upload_hash.c: the SHA-256 of a file sent in parts, on a helper thread.
 *
 * Parts are read in parallel, so no read of theirs is in order: one thread
 * reads the same open fd (pread, from the page cache that the parts fill or
 * use) and hashes it while the loop thread sends; it says it is done through
 * an eventfd on the loop. The loop thread never waits for it except when the
 * upload ends early (then the thread stops within one buffer). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "civis/civis.h"
#include "fileio.h"
#include "upload_int.h"

#define HASH_BUF (256u << 10)

struct civis__upload_hasher {
	pthread_t thr;
	int efd;
	int fd;                  /* the upload's fd (borrowed) */
	uint64_t size;
	atomic_int stop;
	/* results, read after the thread has ended */
	int status;              /* CIVIS_OK, CIVIS_ESYS (errno_), CIVIS_EINVAL (short) */
	int errno_;
	char hex[CIVIS_SHA256_HEX_LEN];
	unsigned char *buf;
};

static void *
hash_main(void *arg)
{
	civis__upload_hasher *h = arg;
	civis_sha256 sha;
	unsigned char dig[CIVIS_SHA256_LEN];
	uint64_t off = 0, one = 1;
	ssize_t w;

	h->status = civis__sha256_init(&sha);
	while (h->status == CIVIS_OK && off < h->size && !atomic_load(&h->stop)) {
		size_t want = h->size - off < HASH_BUF ? (size_t)(h->size - off) : HASH_BUF, got;

		if (civis__pread_all(h->fd, h->buf, want, off, &got) != 0) {
			h->status = CIVIS_ESYS;
			h->errno_ = errno;
		} else if (got < want) {
			h->status = CIVIS_EINVAL;
		} else {
			civis__sha256_update(&sha, h->buf, got);
			off += got;
		}
	}
	if (h->status == CIVIS_OK && off == h->size) {
		civis__sha256_final(&sha, dig);
		civis__sha256_hex(dig, h->hex);
	} else {
		civis__sha256_dispose(&sha);
	}
	do
		w = write(h->efd, &one, sizeof(one));
	while (w < 0 && errno == EINTR);
	return NULL;
}

static void
hasher_free(civis_loop *loop, civis__upload_hasher *h)
{
	(void)civis_loop_del_io(loop, h->efd);
	(void)close(h->efd);
	free(h->buf);
	free(h);
}

static void
on_hashed(civis_loop *loop, int fd, int revents, void *ud)
{
	civis_upload *u = ud;
	civis__upload_hasher *h = u->hasher;
	uint64_t v;

	(void)fd;
	(void)revents;
	if (read(h->efd, &v, sizeof(v)) < 0 && errno == EAGAIN)
		return;
	(void)pthread_join(h->thr, NULL);
	u->hasher = NULL;
	if (h->status == CIVIS_OK) {
		memcpy(u->sha_hex, h->hex, sizeof(u->sha_hex));
		u->sha_ready = 1;
	} else if (h->status == CIVIS_EINVAL) {
		hasher_free(loop, h);
		civis__upload_fail_short_read(u);
		return;
	} else if (h->errno_ != 0) {
		int e = h->errno_;
		hasher_free(loop, h);
		civis__upload_fail(u, CIVIS_ESYS, "%s: %s", u->path, strerror(e));
		return;
	} else {
		u->sha_broken = 1;       /* no libcrypto: the upload goes on, no digest */
	}
	hasher_free(loop, h);
	civis__upload_maybe_complete(u);
}

int
civis__upload_hash_start(civis_upload *u)
{
	civis__upload_hasher *h = calloc(1, sizeof(*h));
	int rc;

	if (h == NULL || (h->buf = malloc(HASH_BUF)) == NULL) {
		free(h);
		return CIVIS_ENOMEM;
	}
	h->fd = u->fd;
	h->size = u->size;
	atomic_init(&h->stop, 0);
	h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->efd < 0) {
		free(h->buf);
		free(h);
		return CIVIS_ESYS;
	}
	rc = civis_loop_add_io(u->loop, h->efd, POLLIN, on_hashed, u);
	if (rc != CIVIS_OK) {
		(void)close(h->efd);
		free(h->buf);
		free(h);
		return rc;
	}
	if (pthread_create(&h->thr, NULL, hash_main, h) != 0) {
		hasher_free(u->loop, h);
		return CIVIS_ESYS;
	}
	u->hasher = h;
	return CIVIS_OK;
}

void
civis__upload_hash_stop(civis_upload *u)
{
	civis__upload_hasher *h = u->hasher;

	if (h == NULL)
		return;
	atomic_store(&h->stop, 1);
	(void)pthread_join(h->thr, NULL);
	u->hasher = NULL;
	hasher_free(u->loop, h);
}
