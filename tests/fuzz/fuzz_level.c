/* fuzz_level.c: civis_level_detect on any bytes.
 *
 * The input is one line, copied to a buffer of exactly its size (ASan sees
 * a read past len). Checked: the answer is a valid level; it depends only on
 * the first CIVIS_LEVEL_SCAN bytes of a text line (or CIVIS_LEVEL_JSON_SCAN
 * of one that starts with '{'), so changing a byte past them changes
 * nothing; a line cut inside that window never crashes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/level.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size ? size : 1);
	civis_level l, l2;
	size_t window;

	if (!line)
		return 0;
	memcpy(line, data, size);
	l = civis_level_detect(line, size);
	CHECK(l >= CIVIS_LEVEL_NONE && l <= CIVIS_LEVEL_FATAL);
	CHECK((l == CIVIS_LEVEL_NONE) == (civis_level_name(l) == NULL));
	window = size > 0 && line[0] == '{' ? CIVIS_LEVEL_JSON_SCAN : CIVIS_LEVEL_SCAN;
	if (size > window + 1) {
		line[size - 1] ^= 0x5a;
		l2 = civis_level_detect(line, size);
		CHECK(l2 == l);
	}
	for (size_t cut = 0; cut <= size && cut <= window; cut += 7)
		(void)civis_level_detect(line, cut);
	free(line);
	return 0;
}
