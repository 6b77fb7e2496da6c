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
 * is rebuilt from the Maildir: each folder keeps its UIDVALIDITY and UIDs
 * as recorded in the Dovecot-compatible `dovecot-uidlist` file kept in its
 * directory (also how a Maildir migrated from Dovecot keeps its UIDs);
 * without a usable one, UIDs are reassigned under a new UIDVALIDITY (a
 * client re-downloads, never mixes messages up).
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
    char *keywords;         /* IMAP keywords, space-separated, in the order
                               first set; "" for none (kept in the index only) */
    uint64_t size;          /* RFC 822 size: octets with CRLF line endings */
    time_t internaldate;
    uint64_t modseq;
};

/* A folder as of one sync, messages in ascending UID order. */
struct mailindex_view {
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq;
    uint32_t recent_mark;   /* messages with uid >= recent_mark are \Recent
                               for the next session that claims them
                               (mailindex_claim_recent) */
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

/* Replaces the flags of one message: Maildir letters (index and file
 * name) and, unless keywords is NULL, its keywords (space-separated; index
 * only). Bumps the message's modseq. Returns 0 or -1 (errno ENOENT for an
 * unknown UID). */
int mailindex_set_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *flags, const char *keywords, char *err, size_t errlen);

/* Like mailindex_set_flags, but the new flags are computed from the
 * message's current ones under the handle lock, so that a change made
 * meanwhile by another session on this handle is not lost (STORE +FLAGS,
 * FETCH's implicit \Seen). update(arg, flags, keywords, new_flags,
 * new_keywords) gets the current Maildir letters and keywords; it writes
 * the new letters into new_flags (at most MAILINDEX_FLAGS_MAX) and sets
 * *new_keywords to a malloc'd keyword string, or NULL to keep them; it
 * returns 0, or -1 to give up (nothing changes). It must not call into
 * mailindex. Returns 0 or -1 (errno ENOENT for an unknown UID). */
#define MAILINDEX_FLAGS_MAX 52
typedef int (*mailindex_flags_fn)(void *arg, const char *flags, const char *keywords,
                                  char *new_flags, char **new_keywords);
int mailindex_update_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                           mailindex_flags_fn update, void *arg, char *err, size_t errlen);

/* Removes messages (files first, then index rows). Each message is either
 * fully present or fully gone after a crash. Returns the number removed, or
 * -1 on error. */
long mailindex_expunge(struct mailindex *ix, const char *folder, const uint32_t *uids,
                       size_t n, char *err, size_t errlen);

/* --- IMAP ------------------------------------------------------------------ */

/* Appends a message (data: CRLF line endings, as APPEND sends it) to
 * `folder` (NULL = INBOX, created when missing; any other folder must exist:
 * errno ENOENT). The file is written to tmp/, fsynced, given `internaldate`
 * as its mtime (0 = now), renamed into cur/ (new/ when flags is "" and no
 * keywords) and the directory fsynced; then, before returning, indexed
 * under the next UID. `flags` are Maildir letters, `keywords` space-separated
 * (NULL or "" for none). Sets *uidvalidity and *uid. Returns 0, or -1 with
 * nothing left behind. */
int mailindex_append(struct mailindex *ix, const char *folder, const char *data, size_t len,
                     const char *flags, const char *keywords, time_t internaldate,
                     uint32_t *uidvalidity, uint32_t *uid, char *err, size_t errlen);

/* Copies the messages uids[0..n) of `src` to `dst` (both folders of this
 * owner, NULL = INBOX; dst must exist: errno ENOENT). Each copy keeps the
 * flags, keywords and internal date and gets the next UID of dst, in the
 * order of uids (ascending). The copies are made (hard link, or copy and
 * fsync when linking fails) before any is indexed, so a failure leaves no
 * copy behind. dst_uids[i] receives the new UID of uids[i], or 0 when that
 * message no longer exists. Sets *dst_uidvalidity. Returns the number
 * copied, or -1. */
long mailindex_copy(struct mailindex *ix, const char *src, const uint32_t *uids, size_t n,
                    const char *dst, uint32_t *dst_uidvalidity, uint32_t *dst_uids,
                    char *err, size_t errlen);

/* Like mailindex_copy, but each message is renamed into dst (atomic per
 * message: it is in one folder or the other, never both, never neither)
 * and its row leaves src. Returns the number moved, or -1. */
long mailindex_move(struct mailindex *ix, const char *src, const uint32_t *uids, size_t n,
                    const char *dst, uint32_t *dst_uidvalidity, uint32_t *dst_uids,
                    char *err, size_t errlen);

/* \Recent (RFC 3501 2.3.2): claims the folder's recent messages for one
 * session. Sets *first_recent to the folder's recent mark (the session
 * treats messages with uid >= it as \Recent) and moves the mark to UIDNEXT,
 * so no other session sees them as recent. Call after mailindex_sync.
 * Returns 0 or -1. */
int mailindex_claim_recent(struct mailindex *ix, const char *folder, uint32_t *first_recent,
                           char *err, size_t errlen);

/* The cached IMAP texts of a message (imap_bodystructure.h): ENVELOPE,
 * BODYSTRUCTURE and BODY. *found is false when none is cached yet (then the
 * buffers are untouched); otherwise all three are replaced. Returns 0 or
 * -1 (errno ENOENT for an unknown UID). */
int mailindex_get_cache(struct mailindex *ix, const char *folder, uint32_t uid,
                        struct buf *envelope, struct buf *bodystructure, struct buf *body,
                        bool *found, char *err, size_t errlen);
/* Stores them (after a parse on a cache miss). Returns 0 or -1. */
int mailindex_put_cache(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *envelope, size_t envelope_len,
                        const char *bodystructure, size_t bodystructure_len,
                        const char *body, size_t body_len, char *err, size_t errlen);

/* Folders other than INBOX ('.'-separated names, as the mail store has
 * them), sorted. Free with mailstore_folders_free. Returns 0 or -1. */
int mailindex_folders(struct mailindex *ix, char ***names, size_t *n, char *err, size_t errlen);

/* Creates a folder (its Maildir directory and an index entry with a fresh
 * UIDVALIDITY). Returns 0, or -1 (errno EEXIST when it exists, EINVAL for
 * a name the store cannot hold). */
int mailindex_folder_create(struct mailindex *ix, const char *folder, char *err, size_t errlen);

/* Deletes a folder with its messages and index rows; its subfolders stay.
 * Atomic from a client's view: the directory is first renamed out of the
 * way (a name the store does not list), then removed. A folder recreated
 * under the same name later gets a new UIDVALIDITY. INBOX cannot be
 * deleted (EPERM). Returns 0, or -1 (errno ENOENT). */
int mailindex_folder_delete(struct mailindex *ix, const char *folder, char *err, size_t errlen);

/* Renames a folder and all its subfolders ("A" to "B" also renames
 * "A.x" to "B.x"), keeping UIDVALIDITY and UIDs (one directory rename per
 * folder; index rows follow). Renaming INBOX (RFC 3501 6.3.5) moves every
 * INBOX message into the new folder `to` (created; it gets new UIDs) and
 * leaves INBOX empty. Returns 0, or -1 (errno ENOENT for a missing source,
 * EEXIST when `to` exists). */
int mailindex_folder_rename(struct mailindex *ix, const char *from, const char *to,
                            char *err, size_t errlen);

/* Subscriptions (LSUB), by name; a subscription may name a folder that
 * does not exist. Adding one twice or removing a missing one is not an
 * error. mailindex_subscriptions returns them sorted; free with
 * mailstore_folders_free. Return 0 or -1. */
int mailindex_subscribe(struct mailindex *ix, const char *name, bool subscribe,
                        char *err, size_t errlen);
int mailindex_subscriptions(struct mailindex *ix, char ***names, size_t *n,
                            char *err, size_t errlen);

#endif
