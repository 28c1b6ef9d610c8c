/* level.h: a log line's level, from the word a person wrote at its start.
 *
 * Python's logging writes INFO to stderr, so a run log that took every
 * stderr line as an error would paint it red. civis_level_detect() finds the
 * level a line states, in the forms loggers write:
 *   - Python's default "LEVEL:name:message", and "LEVEL: message";
 *   - "[LEVEL] message" (spaces inside the brackets allowed);
 *   - "LEVEL - message", "LEVEL | message";
 *   - "LEVEL message" when the word is in upper case (log4j, zap, loguru);
 * each at the start of the line (after blanks), or after a leading timestamp
 * (ISO 8601 date and time, with 'T' or ' ', fractions with '.' or ',', 'Z' or
 * an offset; or a time of day hh:mm:ss; either may be in brackets, and may be
 * followed by '-' or '|'); and a JSON object line's top-level "level",
 * "severity" or "levelname" member (names in any case; a string value as
 * above, or pino/bunyan's numbers 10..60 for "level").
 *
 * The words, in any case, and the level each gives:
 *   TRACE TRC DEBUG DBG                   -> debug
 *   INFO INF NOTICE                       -> info
 *   WARN WARNING WRN                      -> warn
 *   ERROR ERR SEVERE                      -> error
 *   FATAL FTL CRITICAL CRIT PANIC EMERG   -> fatal
 * A longer word ("INFORMATION", "ERRORS:") or a bracket not closed ("[info")
 * is no level. Looks at the first CIVIS_LEVEL_SCAN bytes of a text line and
 * at most CIVIS_LEVEL_JSON_SCAN bytes of a JSON line; allocates nothing, reads
 * nothing outside [line, line + len), and is safe on any bytes. */
#ifndef CIVIS_LEVEL_H
#define CIVIS_LEVEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum civis_level {
	CIVIS_LEVEL_NONE = 0,       /* the line states no level */
	CIVIS_LEVEL_DEBUG,
	CIVIS_LEVEL_INFO,
	CIVIS_LEVEL_WARN,
	CIVIS_LEVEL_ERROR,
	CIVIS_LEVEL_FATAL
} civis_level;

#define CIVIS_LEVEL_SCAN       64
#define CIVIS_LEVEL_JSON_SCAN  1024

/* The level line (len bytes, no newline, need not be NUL-terminated) states. */
civis_level civis_level_detect(const char *line, size_t len);

/* The API's name of a level ("debug", "info", "warn", "error", "fatal");
 * NULL for CIVIS_LEVEL_NONE or an unknown value. */
const char *civis_level_name(civis_level level);

#ifdef __cplusplus
}
#endif
#endif
