/* upload_prep.h: one path named by the job (`civis-agent upload PATH`, or
 * the job API's upload), made ready for the upload engine: what it is, its
 * Civis name, and later its descriptor, checked to be what was classified.
 * Shared by upload_cmd.c and jobwork.c. */
#ifndef AGENT_UPLOAD_PREP_H
#define AGENT_UPLOAD_PREP_H

#include <stddef.h>
#include <sys/types.h>
#include "civis/redact.h"
#include "civis/upload.h"

typedef struct agent_upload_prep {
	civis_upload_kind kind;     /* a directory is a .tar.gz; --gzip makes a file .gz */
	char *name;                 /* the Civis name (malloc'd) */
	dev_t dev;                  /* what was classified */
	ino_t ino;
} agent_upload_prep;

/* Classify path (following a symlink, as a path the user named) and choose
 * its name: name_opt, else the path's last component (of its real path for
 * "." and ".."), escaped as the outputs are, plus ".gz" / ".tar.gz". A name
 * holding a secret of r is refused. On failure *p is empty and reason says
 * why in one line (strerror, "not a regular file (FIFO)", ...). */
int  agent_upload_prepare(agent_upload_prep *p, const char *path, const char *name_opt, int gzip,
                          const civis_redact *r, char *reason, size_t reasonlen);
/* Open what agent_upload_prepare classified; -1 with reason when it cannot be
 * opened or is no longer the same file or directory. */
int  agent_upload_prep_open(const agent_upload_prep *p, const char *path, char *reason,
                            size_t reasonlen);
void agent_upload_prep_dispose(agent_upload_prep *p);

#endif
