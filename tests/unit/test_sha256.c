/* test_sha256.c: SHA-256 through libcrypto (dl_crypto.c): FIPS 180-2 / NIST
 * CAVP vectors, chunking independence, dispose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "civis/civis.h"
#include "../../lib/src/sha256.h"

static void
hash_hex(const void *data, size_t len, char out[CIVIS_SHA256_HEX_LEN])
{
	civis_sha256 s;
	unsigned char dig[CIVIS_SHA256_LEN];

	civis__sha256_init(&s);
	civis__sha256_update(&s, data, len);
	civis__sha256_final(&s, dig);
	civis__sha256_hex(dig, out);
}

static void
test_empty(void **state)
{
	char hex[CIVIS_SHA256_HEX_LEN];
	(void)state;
	hash_hex("", 0, hex);
	assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_abc(void **state)
{
	char hex[CIVIS_SHA256_HEX_LEN];
	(void)state;
	hash_hex("abc", 3, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void
test_448_bits(void **state)
{
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char hex[CIVIS_SHA256_HEX_LEN];
	(void)state;
	hash_hex(m, strlen(m), hex);
	assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void
test_896_bits(void **state)
{
	const char *m = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
	                "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
	char hex[CIVIS_SHA256_HEX_LEN];
	(void)state;
	hash_hex(m, strlen(m), hex);
	assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void
test_million_a(void **state)
{
	unsigned char chunk[1000];
	unsigned char dig[CIVIS_SHA256_LEN];
	char hex[CIVIS_SHA256_HEX_LEN];
	civis_sha256 s;
	int i;
	(void)state;

	memset(chunk, 'a', sizeof(chunk));
	civis__sha256_init(&s);
	for (i = 0; i < 1000; i++)
		civis__sha256_update(&s, chunk, sizeof(chunk));
	civis__sha256_final(&s, dig);
	civis__sha256_hex(dig, hex);
	assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Lengths around the 55/56/64-byte padding edges, fed one byte at a time
 * and in odd chunks, must give the one-shot digest. */
static void
test_chunking(void **state)
{
	unsigned char msg[300];
	size_t len, i;
	(void)state;

	for (i = 0; i < sizeof(msg); i++)
		msg[i] = (unsigned char)(i * 31 + 7);
	for (len = 0; len <= sizeof(msg); len++) {
		char one[CIVIS_SHA256_HEX_LEN], split[CIVIS_SHA256_HEX_LEN];
		unsigned char dig[CIVIS_SHA256_LEN];
		civis_sha256 s;
		size_t off = 0, step = 1;

		hash_hex(msg, len, one);
		civis__sha256_init(&s);
		while (off < len) {
			size_t n = step < len - off ? step : len - off;
			civis__sha256_update(&s, msg + off, n);
			off += n;
			step = step % 67 + 13;
		}
		civis__sha256_final(&s, dig);
		civis__sha256_hex(dig, split);
		assert_string_equal(one, split);
	}
}

/* Known digests at the padding boundaries (python3 hashlib). */
static void
test_boundaries(void **state)
{
	unsigned char msg[64];
	char hex[CIVIS_SHA256_HEX_LEN];
	(void)state;

	memset(msg, 'x', sizeof(msg));
	hash_hex(msg, 55, hex);
	assert_string_equal(hex, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
	hash_hex(msg, 56, hex);
	assert_string_equal(hex, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
	hash_hex(msg, 64, hex);
	assert_string_equal(hex, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
}

/* Split anywhere, the same digest as in one piece (a libcrypto context
 * per digest; dispose of an unfinished one, twice is harmless). */
static void
test_split_and_dispose(void **state)
{
	static unsigned char msg[4096];
	unsigned char a[CIVIS_SHA256_LEN], b[CIVIS_SHA256_LEN];
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	size_t len, cut;
	civis_sha256 s;

	(void)state;
	for (size_t i = 0; i < sizeof(msg); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		msg[i] = (unsigned char)x;
	}
	for (len = 0; len < sizeof(msg); len += 1 + len / 7) {
		cut = len / 3;
		assert_int_equal(civis__sha256_init(&s), CIVIS_OK);
		civis__sha256_update(&s, msg, len);
		civis__sha256_final(&s, a);
		assert_null(s.ctx);
		assert_int_equal(civis__sha256_init(&s), CIVIS_OK);
		civis__sha256_update(&s, msg, cut);
		civis__sha256_update(&s, msg + cut, len - cut);
		civis__sha256_final(&s, b);
		assert_memory_equal(a, b, sizeof(a));
	}
	assert_int_equal(civis__sha256_init(&s), CIVIS_OK);
	civis__sha256_update(&s, msg, 100);
	civis__sha256_dispose(&s);
	assert_null(s.ctx);
	civis__sha256_dispose(&s);
	assert_string_equal(civis__sha256_error(), "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_abc),
		cmocka_unit_test(test_448_bits),
		cmocka_unit_test(test_896_bits),
		cmocka_unit_test(test_million_a),
		cmocka_unit_test(test_chunking),
		cmocka_unit_test(test_boundaries),
		cmocka_unit_test(test_split_and_dispose),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
