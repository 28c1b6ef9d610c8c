/* fuzz_parse.c: every answer parser of client_parse.c, and the Retry-After
 * parser, on the same arbitrary bytes. Must never crash, leak or read past
 * the input; a parser that fails leaves its output empty, one that succeeds
 * gives a positive id and well-formed strings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civis/civis.h"
#include "civis/client.h"
#include "civis/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_line(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n >= cap)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	civis_run_state rs;
	civis_file_post fp;
	civis_multipart_post mp;
	char err[256], text[128];
	char *z;
	int rc;

	rc = civis_parse_run_state(body, size, &rs, err, sizeof(err));
	if (rc == CIVIS_OK) {
		if (rs.id <= 0 || strnlen(rs.state, sizeof(rs.state)) >= sizeof(rs.state) ||
		    (rs.is_cancel_requested != 0 && rs.is_cancel_requested != 1))
			abort();
	} else if (rs.id != 0 || rs.state[0] != '\0' || err[0] == '\0') {
		abort();
	}

	rc = civis_parse_file_post(body, size, &fp, err, sizeof(err));
	if (rc == CIVIS_OK) {
		if (fp.id <= 0 || fp.upload_url == NULL || (fp.nfields > 0 && fp.field_names == NULL))
			abort();
		for (size_t i = 0; i < fp.nfields; i++)
			if (fp.field_names[i] == NULL || fp.field_values[i] == NULL ||
			    fp.field_names[i][0] == '\0')
				abort();
	} else if (fp.upload_url != NULL || fp.nfields != 0 || fp.id != 0) {
		abort();
	}
	civis_file_post_dispose(&fp);

	rc = civis_parse_multipart_post(body, size, &mp, err, sizeof(err));
	if (rc == CIVIS_OK) {
		if (mp.id <= 0 || mp.nurls == 0 || mp.nurls > 10000)
			abort();
		for (size_t i = 0; i < mp.nurls; i++)
			if (mp.upload_urls[i] == NULL)
				abort();
	} else if (mp.upload_urls != NULL || mp.nurls != 0) {
		abort();
	}
	civis_multipart_post_dispose(&mp);

	civis_parse_error_text(body, size, text, sizeof(text));
	check_line(text, sizeof(text));
	civis_parse_error_text(body, size, text, 3);
	check_line(text, 3);

	/* Retry-After is a C string: the input up to its first NUL */
	z = malloc(size + 1);
	if (z != NULL) {
		memcpy(z, data, size);
		z[size] = '\0';
		(void)civis_retry_after_parse_ms(z, 1700000000);
		(void)civis_retry_after_parse_ms(z, INT64_MIN);
		(void)civis_retry_after_parse_ms(z, INT64_MAX);
		free(z);
	}
	return 0;
}
