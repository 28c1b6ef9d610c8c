/* tls_int.h: libcivis-internal parts of the CA bundle choice (tls.c). */
#ifndef CIVIS_TLS_INT_H
#define CIVIS_TLS_INT_H

#include <stddef.h>
#include "civis/tls.h"

#ifdef CIVIS_UNITTEST
/* The same choice with the system candidates (NULL-terminated list) and the
 * executable's path given, instead of the built-in list and /proc/self/exe.
 * exe may be NULL (no layer bundle). */
const char *civis__tls_ca_file_from(char *buf, size_t len,
                                    const char *const *system_paths, const char *exe);
#endif

#endif
