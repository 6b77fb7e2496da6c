/* mailindex: the per-owner mailbox index beside the Maildir (DESIGN.md,
 * Data): UIDVALIDITY and UIDs per folder, UIDNEXT, flags, modseq, RFC 822
 * sizes, and later IMAP's cached envelope and body structure.
 *
 * It is an SQLite file in the owner's mailbox directory
 * (MAIL_DIR/<domain>/<local>/posthorn-index.db, schema versioned with
 * PRAGMA user_version), and it can always be rebuilt from the Maildir files,
 * which stay the truth. It sits on top of the mail store: every file access
 * goes through mailstore.h. Delivery never touches it; files that appear in
 * new/ (from delivery or from other tools) get UIDs, in arrival order
 * (mtime, then name), at the next mailindex_sync.
 *
 * UIDs are stable across restarts. When the index is missing or unreadable it
 * is rebuilt; UIDs are then reassigned under a new UIDVALIDITY (a client
 * re-downloads, never mixes messages up).
 *
 * All calls block (SQLite, file I/O): run them on worker threads. Handles are
 * shared per owner address and reference counted, so many sessions of one
 * user cost one SQLite connection; calls on a handle are serialized. */
#ifndef POSTHORN_MAILINDEX_H
#define POSTHORN_MAILINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "mailstore.h"

struct mailindex;

struct mailindex_msg {
    uint32_t uid;
    char *name;             /* the mail store's base name */
    char *flags;            /* Maildir info flags, sorted: D F P R S T */
    uint64_t size;          /* RFC 822 size: octets with CRLF line endings */
    time_t internaldate;
    uint64_t modseq;
};

/* A folder as of one sync, messages in ascending UID order. */
struct mailindex_view {
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq;
    struct mailindex_msg *msgs;
    size_t n;
};
void mailindex_view_free(struct mailindex_view *v);

/* Opens (creating or rebuilding when needed) the index of a local user.
 * Returns NULL with a reason in err. */
struct mailindex *mailindex_open(struct mailstore *ms, const char *address,
                                 char *err, size_t errlen);
/* Drops one reference; the last one closes the database. */
void mailindex_close(struct mailindex *ix);

/* Brings the index of `folder` (NULL = INBOX) up to date with the Maildir:
 * new files get UIDs, vanished ones are removed, flags changed by other
 * programs are picked up. Then fills `out` (which the caller frees). A
 * folder that does not exist yet but is INBOX is an empty view. Returns 0,
 * or -1 with a reason in err (errno ENOENT for a missing folder). */
int mailindex_sync(struct mailindex *ix, const char *folder, struct mailindex_view *out,
                   char *err, size_t errlen);

/* Reads a message with CRLF line endings (files written by other programs
 * with bare LF are converted), into out, replacing its contents. Files
 * larger than 1 GiB are refused (EFBIG). Returns 0, or -1 with a reason in
 * err (errno ENOENT for an unknown UID or a file removed meanwhile). */
int mailindex_read(struct mailindex *ix, const char *folder, uint32_t uid, struct buf *out,
                   char *err, size_t errlen);

/* Replaces the flags of one message (index and file name). Returns 0 or -1. */
int mailindex_set_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *flags, char *err, size_t errlen);

/* Removes messages (files first, then index rows). Each message is either
 * fully present or fully gone after a crash. Returns the number removed, or
 * -1 on error. */
long mailindex_expunge(struct mailindex *ix, const char *folder, const uint32_t *uids,
                       size_t n, char *err, size_t errlen);

#endif
