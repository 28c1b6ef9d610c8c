/* fuzz_logbatch.c: random bytes as log messages into batches.
 *
 * Input: byte 0 picks max_messages (1..8), byte 1 is the separator that
 * splits the rest into messages. Checked: a full batch answers ETOOBIG and
 * stays valid; every body parses with cJSON with one entry per message; a
 * message that is valid UTF-8 comes back identical (up to a NUL, where
 * cJSON's C string stops); every text that comes back is valid UTF-8;
 * civis_json_escape_utf8 fits in civis_json_escape_bound and not in one
 * byte less than it needs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cJSON.h>

#include "civis/civis.h"
#include "civis/logbatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)
#define MAXMSG 8

typedef struct msgref {
	const char *p;
	size_t len;
} msgref;

static int
valid_utf8(const unsigned char *u, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = u[i], lo = 0x80, hi = 0xBF;
		size_t need, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			lo = c == 0xE0 ? 0xA0 : 0x80;
			hi = c == 0xED ? 0x9F : 0xBF;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			lo = c == 0xF0 ? 0x90 : 0x80;
			hi = c == 0xF4 ? 0x8F : 0xBF;
		} else {
			return 0;
		}
		for (k = 1; k <= need; k++) {
			if (i + k >= n || u[i + k] < lo || u[i + k] > hi)
				return 0;
			lo = 0x80;
			hi = 0xBF;
		}
		i += need + 1;
	}
	return 1;
}

/* Parse the body and compare each entry with the messages put in. */
static void
check_body(civis_batch *b, const msgref *m, size_t n)
{
	size_t len, i;
	const char *body = civis_batch_body(b, &len);
	cJSON *root, *arr;

	CHECK(body != NULL && strlen(body) == len);
	CHECK(civis_batch_count(b) == n);
	root = cJSON_ParseWithLength(body, len);
	CHECK(root != NULL);
	arr = cJSON_GetObjectItemCaseSensitive(root, "messages");
	CHECK(cJSON_IsArray(arr) && (size_t)cJSON_GetArraySize(arr) == n);
	for (i = 0; i < n; i++) {
		cJSON *e = cJSON_GetArrayItem(arr, (int)i);
		cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
		cJSON *lvl = cJSON_GetObjectItemCaseSensitive(e, "level");
		cJSON *at = cJSON_GetObjectItemCaseSensitive(e, "createdAt");
		size_t sl;

		CHECK(cJSON_IsString(msg) && cJSON_IsString(lvl) && cJSON_IsString(at));
		CHECK(strcmp(lvl->valuestring, "info") == 0);
		CHECK(strlen(at->valuestring) == CIVIS_TS_LEN - 1);
		sl = strlen(msg->valuestring);
		CHECK(valid_utf8((const unsigned char *)msg->valuestring, sl));
		if (valid_utf8((const unsigned char *)m[i].p, m[i].len)) {
			const char *nul = memchr(m[i].p, '\0', m[i].len);
			size_t want = nul ? (size_t)(nul - m[i].p) : m[i].len;

			CHECK(sl == want);
			CHECK(memcmp(msg->valuestring, m[i].p, sl) == 0);
		}
	}
	cJSON_Delete(root);
}

static void
check_escape(const char *p, size_t len)
{
	size_t bound = civis_json_escape_bound(len), n = 0, n2 = 0;
	char *o = malloc(bound + 1);

	CHECK(o != NULL);
	CHECK(civis_json_escape_utf8(p, len, o, bound, &n) == CIVIS_OK);
	CHECK(n <= bound);
	CHECK(valid_utf8((const unsigned char *)o, n));
	if (n > 0)
		CHECK(civis_json_escape_utf8(p, len, o, n - 1, &n2) == CIVIS_ETOOBIG);
	free(o);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	civis_batch *b = NULL;
	civis_tsclock clk = { 0 };
	msgref m[MAXMSG];
	size_t maxm, n = 0, pos, start;
	char sep;
	const char *in;

	/* Up to 64 KiB in all: with the slack below, only the message count
	 * can fill a batch, so every ETOOBIG is checkable. */
	if (size < 2 || size > CIVIS_BATCH_MAX_MESSAGE)
		return 0;
	maxm = 1 + data[0] % MAXMSG;
	sep = (char)data[1];
	in = (const char *)data + 2;
	size -= 2;
	CHECK(civis_batch_new(&b, maxm, CIVIS_BATCH_MIN_BYTES + 4096) == CIVIS_OK);
	check_body(b, m, 0);

	for (start = pos = 0; pos <= size; pos++) {
		const char *p;
		size_t len;
		int rc;

		if (pos < size && in[pos] != sep)
			continue;
		p = in + start;
		len = pos - start;
		start = pos + 1;
		check_escape(p, len);
		rc = civis_batch_add(b, p, len, NULL, civis_tsclock_next(&clk, 1000));
		if (rc == CIVIS_ETOOBIG) {
			CHECK(n == maxm);
			check_body(b, m, n);        /* still whole after the refusal */
			civis_batch_reset(b);
			n = 0;
			rc = civis_batch_add(b, p, len, NULL, civis_tsclock_next(&clk, 1000));
		}
		CHECK(rc == CIVIS_OK);
		CHECK(n < MAXMSG);
		m[n].p = p;
		m[n].len = len;
		n++;
		CHECK(civis_batch_last_ns(b) == clk.last_ns);
	}
	check_body(b, m, n);
	civis_batch_free(b);
	return 0;
}
