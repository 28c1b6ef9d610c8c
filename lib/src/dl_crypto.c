/* dl_crypto.c: SHA-256 from OpenSSL's libcrypto, dlopen()ed on first use.
 *
 * libcrypto hashes faster than a hand-written SHA-256 (it has SHA-NI and
 * AVX2 code paths) and is on every machine that has libcurl with OpenSSL,
 * which loads it anyway. Like libcurl (dl.c) it is not linked: a run that
 * uploads nothing never maps it. Only the EVP digest calls are used, named
 * by their ABI (no OpenSSL header needed to build). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "civis/civis.h"
#include "sha256.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;

static struct {
	EVP_MD_CTX *(*ctx_new)(void);
	void (*ctx_free)(EVP_MD_CTX *ctx);
	const EVP_MD *(*sha256)(void);
	int (*init_ex)(EVP_MD_CTX *ctx, const EVP_MD *type, void *engine);
	int (*update)(EVP_MD_CTX *ctx, const void *d, size_t cnt);
	int (*final_ex)(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);
} fns;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int loaded;
static char load_err[256];

/* dlsym hands out object pointers; POSIX guarantees they hold a function. */
#define SYM(h, member, name)                                                 \
	do {                                                                 \
		void *p_ = dlsym((h), (name));                               \
		if (p_ == NULL)                                              \
			goto missing;                                        \
		memcpy(&fns.member, &p_, sizeof(p_));                        \
	} while (0)

static void
load(void)
{
	static const char *const names[] = { "libcrypto.so.3", "libcrypto.so.1.1" };
	const char *miss = NULL;
	void *h = NULL;
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]) && h == NULL; i++)
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		(void)snprintf(load_err, sizeof(load_err), "cannot load libcrypto.so.3 (%s): "
		               "no SHA-256 of uploads", e != NULL ? e : "not found");
		return;
	}
	miss = "EVP_MD_CTX_new";
	SYM(h, ctx_new, "EVP_MD_CTX_new");
	miss = "EVP_MD_CTX_free";
	SYM(h, ctx_free, "EVP_MD_CTX_free");
	miss = "EVP_sha256";
	SYM(h, sha256, "EVP_sha256");
	miss = "EVP_DigestInit_ex";
	SYM(h, init_ex, "EVP_DigestInit_ex");
	miss = "EVP_DigestUpdate";
	SYM(h, update, "EVP_DigestUpdate");
	miss = "EVP_DigestFinal_ex";
	SYM(h, final_ex, "EVP_DigestFinal_ex");
	loaded = 1;
	return;
missing:
	(void)snprintf(load_err, sizeof(load_err), "libcrypto has no %s: no SHA-256 of uploads",
	               miss);
	memset(&fns, 0, sizeof(fns));
	(void)dlclose(h);
}

const char *
civis__sha256_error(void)
{
	return load_err;
}

int
civis__sha256_init(civis_sha256 *s)
{
	EVP_MD_CTX *c;

	s->ctx = NULL;
	if (pthread_once(&once, load) != 0 || !loaded)
		return CIVIS_ESYS;
	c = fns.ctx_new();
	if (c == NULL)
		return CIVIS_ENOMEM;
	if (fns.init_ex(c, fns.sha256(), NULL) != 1) {
		fns.ctx_free(c);
		return CIVIS_ENOMEM;
	}
	s->ctx = c;
	return CIVIS_OK;
}

void
civis__sha256_update(civis_sha256 *s, const void *data, size_t len)
{
	if (s->ctx != NULL && len > 0)
		(void)fns.update(s->ctx, data, len);
}

void
civis__sha256_final(civis_sha256 *s, unsigned char out[CIVIS_SHA256_LEN])
{
	unsigned int n = 0;

	memset(out, 0, CIVIS_SHA256_LEN);
	if (s->ctx == NULL)
		return;
	(void)fns.final_ex(s->ctx, out, &n);
	fns.ctx_free(s->ctx);
	s->ctx = NULL;
}

void
civis__sha256_dispose(civis_sha256 *s)
{
	if (s->ctx != NULL)
		fns.ctx_free(s->ctx);
	s->ctx = NULL;
}

void
civis__sha256_hex(const unsigned char dig[CIVIS_SHA256_LEN], char out[CIVIS_SHA256_HEX_LEN])
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < CIVIS_SHA256_LEN; i++) {
		out[2 * i] = hex[dig[i] >> 4];
		out[2 * i + 1] = hex[dig[i] & 15];
	}
	out[2 * CIVIS_SHA256_LEN] = '\0';
}
