/* civis.h: status codes shared by every module of libcivis. */
#ifndef CIVIS_CIVIS_H
#define CIVIS_CIVIS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Every function of the library returns one of these; 0 is success,
 * negative is failure. The human detail goes into the caller's or the
 * handle's error buffer: one line, no newline, never a secret. */
typedef enum civis_status {
	CIVIS_OK        = 0,
	CIVIS_ENOMEM    = -1,  /* an allocation failed */
	CIVIS_EINVAL    = -2,  /* bad argument or malformed input */
	CIVIS_ESYS      = -3,  /* a system call failed (see errno in the text) */
	CIVIS_ECONFIG   = -4,  /* configuration (environment, options) is wrong */
	CIVIS_ENET      = -5,  /* could not reach the server, or the transfer broke */
	CIVIS_EHTTP     = -6,  /* the server answered an error status */
	CIVIS_EAUTH     = -7,  /* the API key was rejected (401) */
	CIVIS_EPROTO    = -8,  /* the answer was malformed */
	CIVIS_ETOOBIG   = -9,  /* over a documented size cap */
	CIVIS_ETIMEOUT  = -10, /* a deadline passed */
	CIVIS_ECANCELED = -11, /* stopped by the caller */
	CIVIS_ENOTFOUND = -12, /* no such file or object */
	CIVIS_EUNSAFE   = -13, /* refused: would send the key where it must not go */
	CIVIS_EFULL     = -14  /* full for now: try again once acknowledgements free memory */
} civis_status;

/* A constant, one-word-ish description of a status ("out of memory"). */
const char *civis_strerror(int status);

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *civis_version(void);

#ifdef __cplusplus
}
#endif
#endif
