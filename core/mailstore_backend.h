/* mailstore_backend: the internal operations table behind mailstore.h.
 *
 * mailstore.c owns the public handle and forwards every call to a backend
 * through this table (after OpenSMTPD's queue_backend.c over queue_fs.c), so
 * a second backend (an object store for bodies) can be added without
 * touching the protocols. Each operation has the meaning, arguments, return
 * value and errno of the public function of the same name in mailstore.h;
 * `be` is the backend's own state, returned by open(). Backends validate
 * their inputs themselves: nothing reaching them is trusted. */
#ifndef POSTHORN_MAILSTORE_BACKEND_H
#define POSTHORN_MAILSTORE_BACKEND_H

#include "mailstore.h"

struct mailstore_backend_ops {
    const char *name;
    void *(*open)(const char *root, const char *hostname, char *err, size_t errlen);
    void (*close)(void *be);
    long (*cleanup_tmp)(void *be);
    int (*deliver)(void *be, const struct iovec *iov, int iovcnt,
                   const struct mailstore_target *targets, size_t ntargets,
                   char *err, size_t errlen);
    int (*list)(void *be, const char *address, const char *folder,
                struct mailstore_msglist *out);
    int (*open_msg)(void *be, const char *address, const char *folder, const char *name);
    int (*set_flags)(void *be, const char *address, const char *folder,
                     const char *name, const char *flags);
    int (*remove)(void *be, const char *address, const char *folder, const char *name);
    int (*append)(void *be, const char *address, const char *folder, const char *data,
                  size_t len, const char *flags, time_t mtime, char *name, size_t namelen,
                  char *err, size_t errlen);
    int (*copy)(void *be, const char *address, const char *src, const char *name,
                const char *dst, char *newname, size_t namelen);
    int (*move)(void *be, const char *address, const char *src, const char *name,
                const char *dst, char *newname, size_t namelen);
    int (*sync_folder)(void *be, const char *address, const char *folder);
    /* *data is malloc'ed and freed by the caller with free(). */
    int (*meta_read)(void *be, const char *address, const char *folder, const char *file,
                     char **data, size_t *len, size_t max);
    int (*meta_write)(void *be, const char *address, const char *folder, const char *file,
                      const char *data, size_t len, bool append);
    /* Returns names allocated with malloc; freed by mailstore_folders_free(). */
    int (*folders)(void *be, const char *address, char ***names, size_t *n);
    int (*folder_create)(void *be, const char *address, const char *folder);
    int (*folder_delete)(void *be, const char *address, const char *folder);
    int (*folder_rename)(void *be, const char *address, const char *from, const char *to);
    int (*remove_mailbox)(void *be, const char *address);
    int (*mailbox_path)(void *be, const char *address, char *out, size_t outlen);
    int (*usage)(void *be, const char *address, uint64_t *bytes);
};

/* The Maildir++ backend (mailstore_maildir.c). */
extern const struct mailstore_backend_ops mailstore_maildir_ops;

#endif
