/* tls.h: which CA bundle the agent trusts.
 *
 * The agent runs inside images it knows nothing about: Debian, Alpine, RHEL,
 * distroless, scratch. It trusts, in this order:
 *   1. $CURL_CA_BUNDLE, when set, non-empty and a readable file;
 *   2. $SSL_CERT_FILE, when set and non-empty (taken as given: a user who
 *      names a bundle gets that bundle or a clear TLS error, never a silent
 *      switch to another set of roots);
 *   3. the image's own bundle, the first readable of
 *      /etc/ssl/certs/ca-certificates.crt (Debian, Ubuntu, Alpine),
 *      /etc/pki/tls/certs/ca-bundle.crt (RHEL, Fedora),
 *      /etc/ssl/cert.pem (Alpine, macOS);
 *   4. the layer's own bundle, <prefix>/etc/ssl/certs/ca-certificates.crt,
 *      where <prefix> is two levels above /proc/self/exe: under the layer's
 *      launcher that is <prefix>/lib/ld-linux-x86-64.so.2 (the bundled
 *      loader runs the agent), else <prefix>/libexec/civis-agent or
 *      <prefix>/bin/civis-agent;
 *   5. none: NULL, libcurl's compiled-in default.
 * Only files are considered: CA directories (CURLOPT_CAPATH) are not. */
#ifndef CIVIS_TLS_H
#define CIVIS_TLS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CA bundle to trust (a file path), or NULL for libcurl's default. The result
 * is either a string of the environment or buf (len bytes, e.g. PATH_MAX),
 * so it lives as long as both; a candidate that does not fit buf is
 * skipped. */
const char *civis_tls_ca_file(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
