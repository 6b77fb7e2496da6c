/* Running a command step as the owner of a data directory (see setup.h):
 * `setup` runs as root in the container, but the daemon runs as the mail
 * user and must be able to open what setup creates (accounts.db-wal,
 * -shm) and to remove what it finds. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privileges.h"
#include "util.h"
#include "setup.h"

/* mkdir -p, with traversable parents: the final directory gets `mode`,
 * the ones above it 0755, so that the mail user can reach it. */
static int make_dir(const char *dir, unsigned mode)
{
    char parent[4096];
    int n = snprintf(parent, sizeof parent, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof parent) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir_p(parent, 0755) < 0)
            return -1;
    }
    return mkdir_p(dir, (mode_t)mode);
}

/* Creates a missing directory and gives it to the mail user. A directory
 * owned by root (a fresh Docker volume) is given to the mail user too, as
 * posthornd does at start: files created in it as root would be unusable
 * for the daemon, which never runs as root. */
static int create_dir(const struct settings *s, const char *dir, unsigned mode)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (st.st_uid != 0)
            return SETUP_OK;
    } else if (errno != ENOENT) {
        return setup_fail("cannot use %s: %s", dir, strerror(errno));
    } else if (make_dir(dir, mode) < 0) {
        return setup_fail("cannot create %s: %s", dir, strerror(errno));
    }
    if (chown(dir, s->vmail_uid, s->vmail_gid) < 0)
        return setup_fail("cannot give %s to %u:%u: %s", dir, (unsigned)s->vmail_uid,
                          (unsigned)s->vmail_gid, strerror(errno));
    return SETUP_OK;
}

/* In the child: becomes the owner of dir, then runs fn. */
static int child_run(const struct settings *s, const char *dir,
                     int (*fn)(const struct settings *s, void *arg), void *arg)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return setup_fail("cannot use %s: %s", dir, strerror(errno));
    if (st.st_uid != 0) {
        char err[256];
        if (privileges_drop(st.st_uid, st.st_gid, err, sizeof err) < 0)
            return setup_fail("%s", err);
    }
    return fn(s, arg);
}

int setup_run_as_owner(const struct settings *s, const char *dir, unsigned create_mode,
                       int (*fn)(const struct settings *s, void *arg), void *arg)
{
    if (geteuid() != 0) {
        if (create_mode && make_dir(dir, create_mode) < 0)
            return setup_fail("cannot create %s: %s", dir, strerror(errno));
        return fn(s, arg);
    }
    if (create_mode && create_dir(s, dir, create_mode) != SETUP_OK)
        return SETUP_FAILED;
    /* Output buffered before the fork would otherwise be written twice. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return setup_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int rc = child_run(s, dir, fn, arg);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return setup_fail("waitpid: %s", strerror(errno));
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return setup_fail("%s step ended by signal %d", dir, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

struct accounts *setup_open_accounts(const struct settings *s)
{
    char err[512];
    struct accounts *a = accounts_open(s->state_dir, err, sizeof err);
    if (!a)
        setup_fail("%s", err);
    return a;
}
