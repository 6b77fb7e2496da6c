/* mailindex_uidlist: a folder's dovecot-uidlist file, for mailindex.c.
 *
 * The file repeats the index's UIDs in Dovecot's format 3 ("3 V<uidvalidity>
 * N<uidnext>", then "<uid> :<base name>" per message; version 1's
 * "1 <uidvalidity> <uidnext>" / "<uid> <name>" is read too), so that an
 * index that is deleted or damaged is rebuilt with the same UIDVALIDITY
 * and UIDs, and a Maildir migrated from Dovecot keeps its UIDs. It is only
 * a recovery aid: writes go through mailstore_meta_write (no fsync), and a
 * failure is logged, never returned as an error of the mail operation.
 *
 * This file knows the format and the mail store calls; the index keeps the
 * bookkeeping (how many lines a folder's file holds, in its folder row) and
 * decides when to write. Blocking file I/O: worker threads only, like the
 * rest of mailindex. */
#ifndef POSTHORN_MAILINDEX_UIDLIST_H
#define POSTHORN_MAILINDEX_UIDLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mailindex.h"
#include "mailstore.h"

/* Whose uidlist: the folder's place in the mail store, and the index
 * file's path for log messages. */
struct uidlist_at {
    struct mailstore *ms;
    const char *address;
    const char *folder;         /* the store's folder name, NULL for INBOX */
    const char *index;          /* the index's path (logs only) */
};

/* Replaces the file (temporary file and rename): the header, then the live
 * rows m[0..n) (ascending UIDs; name NULL = deleted, skipped). Returns the
 * number of lines written (header included), or 0 after a failure, logged
 * unless the folder does not exist (ENOENT: an INBOX not created yet). */
uint64_t uidlist_write(const struct uidlist_at *at, uint32_t uidvalidity, uint64_t uidnext,
                       const struct mailindex_msg *m, size_t n);

/* Appends one line per live row of m[0..n) in one write; *lines is the
 * number appended (0: nothing written). Returns 0, or -1 with errno:
 * ENOENT (the file is gone; not logged, the caller rewrites it) or another
 * failure (logged). */
int uidlist_append(const struct uidlist_at *at, const struct mailindex_msg *m, size_t n,
                   uint64_t *lines);

/* Whether a file of `lines` lines (0 = none known) for the rows m[0..n)
 * should be rewritten rather than appended to: none is known, or expunged
 * messages left too many stale lines. */
bool uidlist_rewrite_due(uint64_t lines, const struct mailindex_msg *m, size_t n);

/* The UIDs a uidlist gives to base names, sorted by name. */
struct uidmap_ent {
    const char *name;           /* points into data */
    uint32_t uid;
};

struct uidmap {
    char *data;
    struct uidmap_ent *e;
    size_t n, cap;
};

#define UIDMAP_INIT { NULL, NULL, 0, 0 }

/* Reads and parses the folder's file into m (zero-initialised, freed by
 * uidmap_free in any case) and its UIDVALIDITY and UIDNEXT. UIDs must
 * ascend (as Dovecot requires); a last line cut short by a crash only
 * counts for UIDNEXT; a name listed twice keeps its latest UID. Returns
 * false when there is no file (ENOENT), it cannot be read, or it cannot be
 * trusted (a bad header or line, UIDs not ascending); all but ENOENT are
 * logged, and so is an import. */
bool uidlist_read(const struct uidlist_at *at, struct uidmap *m, uint32_t *uidvalidity,
                  uint64_t *uidnext);

/* The UID the file gave to a base name, or 0. */
uint32_t uidmap_find(const struct uidmap *m, const char *name);

void uidmap_free(struct uidmap *m);

#endif
