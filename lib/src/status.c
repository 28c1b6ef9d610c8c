/* status.c: texts of civis_status. */
#include "civis/civis.h"

#ifndef CIVIS_VERSION
#define CIVIS_VERSION "0.0.0"
#endif

const char *
civis_strerror(int status)
{
	switch (status) {
	case CIVIS_OK:        return "success";
	case CIVIS_ENOMEM:    return "out of memory";
	case CIVIS_EINVAL:    return "invalid argument or input";
	case CIVIS_ESYS:      return "system call failed";
	case CIVIS_ECONFIG:   return "bad configuration";
	case CIVIS_ENET:      return "network error";
	case CIVIS_EHTTP:     return "HTTP error status";
	case CIVIS_EAUTH:     return "API key rejected";
	case CIVIS_EPROTO:    return "malformed answer";
	case CIVIS_ETOOBIG:   return "too big";
	case CIVIS_ETIMEOUT:  return "timed out";
	case CIVIS_ECANCELED: return "canceled";
	case CIVIS_ENOTFOUND: return "not found";
	case CIVIS_EUNSAFE:   return "refused as unsafe";
	case CIVIS_EFULL:     return "full for now";
	}
	return "unknown error";
}

const char *
civis_version(void)
{
	return CIVIS_VERSION;
}
