#include "privileges.h"
#include "util.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int prepare_dir(const char *setting, const char *path, mode_t mode, uid_t uid, gid_t gid,
                       char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    if (mkdir_p(path, mode) < 0) {
        snprintf(err, errlen, "%s: cannot create %s: %s", setting, path, strerror(errno));
        return -1;
    }
    if (geteuid() == 0 && chown(path, uid, gid) < 0) {
        snprintf(err, errlen, "%s: cannot give %s to %u:%u: %s", setting, path, (unsigned)uid,
                 (unsigned)gid, strerror(errno));
        return -1;
    }
    if (access(path, W_OK) < 0 && geteuid() != 0) {
        snprintf(err, errlen, "%s: %s is not writable: %s", setting, path, strerror(errno));
        return -1;
    }
    return 0;
}

int privileges_prepare_dirs(const struct settings *s, char *err, size_t errlen)
{
    if (prepare_dir("MAIL_DIR", s->mail_dir, 0755, s->vmail_uid, s->vmail_gid, err, errlen) < 0 ||
        prepare_dir("STATE_DIR", s->state_dir, 0750, s->vmail_uid, s->vmail_gid, err, errlen) < 0 ||
        prepare_dir("LOG_DIR", s->log_dir, 0755, s->vmail_uid, s->vmail_gid, err, errlen) < 0)
        return -1;
    /* mail.log was opened as root; a later start as the mail user appends to it. */
    if (geteuid() == 0 && s->log_dir && *s->log_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/mail.log", s->log_dir);
        if (chown(path, s->vmail_uid, s->vmail_gid) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "LOG_DIR: cannot give %s to %u:%u: %s", path,
                     (unsigned)s->vmail_uid, (unsigned)s->vmail_gid, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int privileges_drop(uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return 0;
    if (uid == 0) {
        snprintf(err, errlen, "DMS_VMAIL_UID: refusing to run as root; accepted: a non-zero uid");
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "cannot drop privileges to %u:%u: %s", (unsigned)uid,
                 (unsigned)gid, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || geteuid() == 0) {
        snprintf(err, errlen, "privileges could be regained after dropping them");
        return -1;
    }
#if defined(__SANITIZE_ADDRESS__)
    /* LeakSanitizer reads the process through ptrace, which the kernel
     * refuses once the uid changed, unless the process is dumpable.
     * Sanitizer builds only: release builds stay non-dumpable. */
    prctl(PR_SET_DUMPABLE, 1);
#endif
    return 0;
}
