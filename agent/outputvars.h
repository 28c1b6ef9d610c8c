/* outputvars.h: the CIVIS_OUTPUT file, GitHub's GITHUB_OUTPUT format: the
 * command's values, made into the text of one JSON object {key: value}.
 * Pure: no I/O but reading the file, no network, no loop.
 *
 * The format, line by line ('\n'; a '\r' before it is dropped):
 *  - KEY=VALUE sets KEY to everything after the first '='.
 *  - KEY<<DELIMITER sets KEY to the lines that follow, joined with '\n',
 *    up to a line that is exactly DELIMITER.
 *    Which form a line is: whichever of "=" and "<<" comes first in it.
 *  - Empty and blank (spaces and tabs only) lines are skipped.
 *  - Anything else is malformed.
 *
 * A value whose text, less surrounding whitespace, parses as JSON (cJSON) is
 * kept as JSON: an object, array, string, true, false or null as cJSON prints
 * it (compact), a number as written when it is a JSON number by the strict
 * grammar (so 12345678901234567890 keeps every digit; "01" or "1." are strings).
 * Anything else is a JSON string of the value exactly as written.
 *
 * A key set twice keeps its first place in the object and its last value:
 * later lines override earlier ones.
 *
 * Malformed lines (a NUL byte, bytes that are not UTF-8, no '=' and no "<<",
 * an empty key or delimiter, a delimiter line that never comes) are skipped,
 * each with one line through `note` naming its line number and never its
 * value (values may be secrets); the other keys still count. */
#ifndef AGENT_OUTPUTVARS_H
#define AGENT_OUTPUTVARS_H

#include <stddef.h>

#define AGENT_OUTPUTVARS_MAX_JSON 1000000      /* the API's cap on valueStr, bytes */
#define AGENT_OUTPUTVARS_MAX_FILE (4u << 20)   /* the file is read up to this, bytes */

/* One line, no newline, e.g. "CIVIS_OUTPUT line 7: neither KEY=VALUE nor KEY<<DELIMITER". */
typedef void (*agent_outputvars_note_fn)(void *ud, const char *text);

typedef struct agent_outputvars {
	char *json;      /* "{...}", NUL-terminated; NULL when no key was set */
	size_t len;      /* strlen(json), at most AGENT_OUTPUTVARS_MAX_JSON */
	size_t nkeys;    /* keys in the object */
	size_t nbad;     /* malformed lines skipped (each reported through note) */
} agent_outputvars;

/* Parse len bytes of text into *out (cleared first; the caller disposes it).
 * Returns CIVIS_OK; CIVIS_EINVAL when some lines were malformed (*out still
 * holds the other keys; err: the first line's message); CIVIS_ETOOBIG when
 * the object would be over AGENT_OUTPUTVARS_MAX_JSON bytes (*out empty);
 * CIVIS_ENOMEM. note may be NULL. */
int agent_outputvars_parse(agent_outputvars *out, const char *text, size_t len,
                           agent_outputvars_note_fn note, void *ud, char *err, size_t errlen);

/* The same for the file at path, which must be a regular file (not followed
 * if a symlink) of at most AGENT_OUTPUTVARS_MAX_FILE bytes: else CIVIS_ETOOBIG,
 * CIVIS_EINVAL (not a regular file), CIVIS_ENOTFOUND (missing), CIVIS_ESYS. */
int agent_outputvars_read(agent_outputvars *out, const char *path,
                          agent_outputvars_note_fn note, void *ud, char *err, size_t errlen);

/* Free what parse/read put into v and clear it; v may be cleared already. */
void agent_outputvars_dispose(agent_outputvars *v);

#endif
