/* mailstore: the mail store interface. Protocols (SMTP delivery, IMAP,
 * POP3) reach mailboxes only through these calls; the Maildir++ backend
 * (mailstore_maildir.c) is the one implementation today, and the interface
 * is kept narrow so another (an object store for bodies) can be added.
 *
 * Layout (DESIGN.md, Data): MAIL_DIR/<domain>/<localpart>/ is a Maildir++
 * (cur, new, tmp); folders are ".Name" subdirectories (".Sent",
 * ".Archive.2024" for Archive/2024 with '.' as the hierarchy separator),
 * each with a `maildirfolder` file. The Maildir files are the truth.
 *
 * All calls block (file I/O, fsync): run them on worker threads. A handle
 * may be used from several threads at once. */
#ifndef POSTHORN_MAILSTORE_H
#define POSTHORN_MAILSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

struct mailstore;

/* Opens the store rooted at mail_dir (created if missing). `hostname` goes
 * into unique file names. Returns NULL with a reason in err. */
struct mailstore *mailstore_open(const char *mail_dir, const char *hostname,
                                 char *err, size_t errlen);
void mailstore_close(struct mailstore *ms);

/* Removes leftovers of interrupted deliveries: files in every mailbox's and
 * folder's tmp/ that were written by an earlier posthornd process (their
 * names carry its pid and start time) or are older than 36 hours. Files of
 * the current process and of other programs younger than that are kept.
 * Returns the number of files removed. */
long mailstore_cleanup_tmp(struct mailstore *ms);

/* One recipient of a delivery. `address` is a local user "local@domain"
 * (already validated by accounts); `folder` is NULL for INBOX or a folder
 * name such as "Junk". `flags` are Maildir info flags to set at delivery
 * ("S" for \Seen; NULL for none). */
struct mailstore_target {
    const char *address;
    const char *folder;
    const char *flags;
};

/* Delivers one message, the concatenation of iov[0..iovcnt), to every
 * target: each copy is written to tmp/ under a unique name and fsynced,
 * then, only when every copy is on disk, each is renamed into new/ (cur/
 * when flags are given) and each directory fsynced. Mailboxes and folders
 * are created when missing. Returns 0 when every copy is durable. On failure
 * returns -1 with a reason in err, and removes the copies it made, so that
 * the sender's retry does not duplicate them (a crash between two renames
 * may still leave some copies: never a loss, at worst a duplicate).
 * Unique names: "<sec>.M<usec>P<pid>Q<counter>R<random>.<hostname>,S=<size>"
 * never collide across threads or restarts. */
int mailstore_deliver(struct mailstore *ms, const struct iovec *iov, int iovcnt,
                      const struct mailstore_target *targets, size_t ntargets,
                      char *err, size_t errlen);

/* --- Reading, for IMAP and POP3 ------------------------------------- */

/* One message of a folder as seen on disk. */
struct mailstore_msg {
    char *name;        /* base name without the ":2,..." info, unique in the folder */
    char *flags;       /* Maildir info flags, sorted ("FRS"), "" for none */
    uint64_t size;     /* octets of the file */
    time_t mtime;      /* delivery time (internal date) */
    bool recent;       /* still in new/ */
};

struct mailstore_msglist {
    struct mailstore_msg *msgs;
    size_t n;
};
void mailstore_msglist_free(struct mailstore_msglist *l);

/* Lists a folder's messages (new/ and cur/), sorted by delivery time then
 * name. folder NULL = INBOX. Returns 0, or -1 (no such mailbox/folder:
 * errno ENOENT). */
int mailstore_list(struct mailstore *ms, const char *address, const char *folder,
                   struct mailstore_msglist *out);

/* Opens a message for reading by its base name. Returns an fd or -1. */
int mailstore_open_msg(struct mailstore *ms, const char *address, const char *folder,
                       const char *name);

/* Replaces a message's flags (renames it into cur/ with ":2,<flags>").
 * Returns 0 or -1. */
int mailstore_set_flags(struct mailstore *ms, const char *address, const char *folder,
                        const char *name, const char *flags);

/* Removes a message. Returns 0 or -1. */
int mailstore_remove(struct mailstore *ms, const char *address, const char *folder,
                     const char *name);

/* --- Single messages, for IMAP (through the index) -------------------- */

/* Stores one message (IMAP APPEND): written to tmp/ under a unique name,
 * fsynced, given `mtime` (0 = now) as its modification time (the internal
 * date), renamed into cur/ with ":2,<flags>" (into new/ when flags is NULL)
 * and the directory fsynced. INBOX is created when missing; any other
 * folder must exist (errno ENOENT). Writes the new base name into name.
 * Returns 0, or -1 with a reason in err and nothing left behind. */
int mailstore_append(struct mailstore *ms, const char *address, const char *folder,
                     const char *data, size_t len, const char *flags, time_t mtime,
                     char *name, size_t namelen, char *err, size_t errlen);

/* Copies message `name` of folder src into folder dst (which must exist:
 * ENOENT) under a new unique name, in the same subdirectory and with the
 * same info (flags) as the original, keeping its mtime: a hard link, or,
 * when linking fails, a copy written to dst's tmp/ and fsynced first.
 * The directory is not fsynced: call mailstore_sync_folder(dst) once
 * after a batch. Writes the new base name into newname. Returns 0 or -1. */
int mailstore_copy(struct mailstore *ms, const char *address, const char *src,
                   const char *name, const char *dst, char *newname, size_t namelen);

/* Renames message `name` of folder src into folder dst (same subdirectory
 * and info), atomically: it is in one folder or the other. Its base name
 * is kept unless dst holds one like it (then a new unique name). Not
 * fsynced: call mailstore_sync_folder on both folders after a batch.
 * Writes the base name in dst into newname. Returns 0 or -1. */
int mailstore_move(struct mailstore *ms, const char *address, const char *src,
                   const char *name, const char *dst, char *newname, size_t namelen);

/* fsyncs the new/ and cur/ directories of a folder (after copies and
 * moves). Returns 0 or -1. */
int mailstore_sync_folder(struct mailstore *ms, const char *address, const char *folder);

/* Small files kept beside a folder's messages, for the index (its
 * "dovecot-uidlist"): `file` is a plain name, not hidden, not one of the
 * maildir's own (cur, new, tmp, maildirfolder). Listing never shows them.
 * meta_read returns the whole file in *data (malloc'ed, NUL-terminated,
 * length in *len); a file larger than max is EFBIG. meta_write replaces
 * the file atomically (a temporary file renamed over it; not fsynced: it
 * must only ever be a recovery aid), or with append adds data at its end
 * (ENOENT when it does not exist). Both return 0 or -1 (ENOENT when the
 * folder or file is missing). */
int mailstore_meta_read(struct mailstore *ms, const char *address, const char *folder,
                        const char *file, char **data, size_t *len, size_t max);
int mailstore_meta_write(struct mailstore *ms, const char *address, const char *folder,
                         const char *file, const char *data, size_t len, bool append);

/* Folders of a mailbox other than INBOX, as names with '.' separators
 * ("Sent", "Archive.2024"), sorted. Returns 0 or -1. */
int mailstore_folders(struct mailstore *ms, const char *address, char ***names, size_t *n);
void mailstore_folders_free(char **names, size_t n);
/* Creates a folder: EEXIST when it exists, EINVAL for a name the store
 * cannot hold. */
int mailstore_folder_create(struct mailstore *ms, const char *address, const char *folder);
/* Deletes a folder with its messages (its subfolders stay): the directory
 * is first renamed to a hidden name that no listing, usage count or tmp/
 * cleanup looks at, then removed. ENOENT when it does not exist. */
int mailstore_folder_delete(struct mailstore *ms, const char *address, const char *folder);
/* Renames a folder and its subfolders ("A" to "B" also renames "A.x" to
 * "B.x"). Every target is checked first: EEXIST when any exists (nothing
 * renamed), ENOENT when neither the folder nor a subfolder exists, EINVAL
 * when `to` is `from` or below it. */
int mailstore_folder_rename(struct mailstore *ms, const char *address, const char *from,
                            const char *to);

/* Removes a whole mailbox directory (setup email del -y). */
int mailstore_remove_mailbox(struct mailstore *ms, const char *address);

/* The directory of a mailbox, for the index that sits beside it (IMAP).
 * Writes MAIL_DIR/<domain>/<localpart> into out. Returns 0, or -1 when the
 * address cannot name a directory safely. */
int mailstore_mailbox_path(struct mailstore *ms, const char *address, char *out, size_t outlen);

/* Octets stored in a mailbox, for quotas: the sum of the message sizes in
 * new/ and cur/ of INBOX and of every folder (tmp/ not counted). A size is
 * taken from the ",S=<size>" field of the file name when there is one
 * (no stat needed), otherwise from the file. A mailbox that does not exist
 * yet holds 0. Returns 0, or -1 with errno (EINVAL: not a usable address). */
int mailstore_usage(struct mailstore *ms, const char *address, uint64_t *bytes);

#endif
