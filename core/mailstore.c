/* mailstore: the public handle; every call is forwarded to the backend's
 * operations table (mailstore_backend.h). Only Maildir++ exists today. */
#include "mailstore.h"

#include <errno.h>
#include <stdlib.h>

#include "mailstore_backend.h"

struct mailstore {
    const struct mailstore_backend_ops *ops;
    void *be;
};

struct mailstore *mailstore_open(const char *mail_dir, const char *hostname,
                                 char *err, size_t errlen)
{
    struct mailstore *ms = calloc(1, sizeof(*ms));
    if (!ms) {
        if (errlen)
            err[0] = '\0';
        return NULL;
    }
    ms->ops = &mailstore_maildir_ops;
    ms->be = ms->ops->open(mail_dir, hostname, err, errlen);
    if (!ms->be) {
        int saved = errno;
        free(ms);
        errno = saved;
        return NULL;
    }
    return ms;
}

void mailstore_close(struct mailstore *ms)
{
    if (!ms)
        return;
    ms->ops->close(ms->be);
    free(ms);
}

long mailstore_cleanup_tmp(struct mailstore *ms)
{
    return ms->ops->cleanup_tmp(ms->be);
}

int mailstore_deliver(struct mailstore *ms, const struct iovec *iov, int iovcnt,
                      const struct mailstore_target *targets, size_t ntargets,
                      char *err, size_t errlen)
{
    return ms->ops->deliver(ms->be, iov, iovcnt, targets, ntargets, err, errlen);
}

void mailstore_msglist_free(struct mailstore_msglist *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->msgs[i].name);
        free(l->msgs[i].flags);
    }
    free(l->msgs);
    l->msgs = NULL;
    l->n = 0;
}

int mailstore_list(struct mailstore *ms, const char *address, const char *folder,
                   struct mailstore_msglist *out)
{
    return ms->ops->list(ms->be, address, folder, out);
}

int mailstore_open_msg(struct mailstore *ms, const char *address, const char *folder,
                       const char *name)
{
    return ms->ops->open_msg(ms->be, address, folder, name);
}

int mailstore_set_flags(struct mailstore *ms, const char *address, const char *folder,
                        const char *name, const char *flags)
{
    return ms->ops->set_flags(ms->be, address, folder, name, flags);
}

int mailstore_remove(struct mailstore *ms, const char *address, const char *folder,
                     const char *name)
{
    return ms->ops->remove(ms->be, address, folder, name);
}

int mailstore_append(struct mailstore *ms, const char *address, const char *folder,
                     const char *data, size_t len, const char *flags, time_t mtime,
                     char *name, size_t namelen, char *err, size_t errlen)
{
    return ms->ops->append(ms->be, address, folder, data, len, flags, mtime, name, namelen,
                           err, errlen);
}

int mailstore_copy(struct mailstore *ms, const char *address, const char *src,
                   const char *name, const char *dst, char *newname, size_t namelen)
{
    return ms->ops->copy(ms->be, address, src, name, dst, newname, namelen);
}

int mailstore_move(struct mailstore *ms, const char *address, const char *src,
                   const char *name, const char *dst, char *newname, size_t namelen)
{
    return ms->ops->move(ms->be, address, src, name, dst, newname, namelen);
}

int mailstore_sync_folder(struct mailstore *ms, const char *address, const char *folder)
{
    return ms->ops->sync_folder(ms->be, address, folder);
}

int mailstore_meta_read(struct mailstore *ms, const char *address, const char *folder,
                        const char *file, char **data, size_t *len, size_t max)
{
    return ms->ops->meta_read(ms->be, address, folder, file, data, len, max);
}

int mailstore_meta_write(struct mailstore *ms, const char *address, const char *folder,
                         const char *file, const char *data, size_t len, bool append)
{
    return ms->ops->meta_write(ms->be, address, folder, file, data, len, append);
}

int mailstore_folders(struct mailstore *ms, const char *address, char ***names, size_t *n)
{
    return ms->ops->folders(ms->be, address, names, n);
}

void mailstore_folders_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int mailstore_folder_create(struct mailstore *ms, const char *address, const char *folder)
{
    return ms->ops->folder_create(ms->be, address, folder);
}

int mailstore_folder_delete(struct mailstore *ms, const char *address, const char *folder)
{
    return ms->ops->folder_delete(ms->be, address, folder);
}

int mailstore_folder_rename(struct mailstore *ms, const char *address, const char *from,
                            const char *to)
{
    return ms->ops->folder_rename(ms->be, address, from, to);
}

int mailstore_remove_mailbox(struct mailstore *ms, const char *address)
{
    return ms->ops->remove_mailbox(ms->be, address);
}

int mailstore_mailbox_path(struct mailstore *ms, const char *address, char *out, size_t outlen)
{
    return ms->ops->mailbox_path(ms->be, address, out, outlen);
}

int mailstore_usage(struct mailstore *ms, const char *address, uint64_t *bytes)
{
    return ms->ops->usage(ms->be, address, bytes);
}
