/* privileges: the directories the daemon owns, and giving up root.
 *
 * Started as root, posthornd creates MAIL_DIR, STATE_DIR and LOG_DIR when
 * missing, gives them to the mail user (DMS_VMAIL_UID/GID), binds its
 * ports, and then drops to that user before it reads any network input.
 * Started as another user, it stays that user and only creates the
 * directories. */
#ifndef POSTHORN_PRIVILEGES_H
#define POSTHORN_PRIVILEGES_H

#include <stddef.h>
#include <sys/types.h>

#include "settings.h"

/* Creates the data directories and, as root, chowns them (not their
 * contents) to the mail user. Returns 0, or -1 with a reason in err. */
int privileges_prepare_dirs(const struct settings *s, char *err, size_t errlen);

/* As root: drops supplementary groups, then to gid and uid, and checks that
 * root cannot be regained. Not root: nothing. Returns 0, or -1 with a
 * reason in err. */
int privileges_drop(uid_t uid, gid_t gid, char *err, size_t errlen);

#endif
