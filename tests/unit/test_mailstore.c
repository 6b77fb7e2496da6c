/* Unit tests of the mail store (Maildir++ backend) against a temporary
 * MAIL_DIR under /tmp, removed at the end. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mailstore.h"
#include "test.h"

static char root[64];
static struct mailstore *ms;

static const char MSG[] = "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n";

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void pathf(char *out, size_t len, const char *rel)
{
    snprintf(out, len, "%s/%s", root, rel);
}

/* Number of entries (not . and ..) in root/rel; -1 when missing. First
 * entry name copied to first when given. */
static int count_dir(const char *rel, char *first, size_t firstlen)
{
    char p[768];
    pathf(p, sizeof(p), rel);
    DIR *d = opendir(p);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == 0 && first)
            snprintf(first, firstlen, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static bool exists(const char *rel)
{
    char p[768];
    struct stat st;
    pathf(p, sizeof(p), rel);
    return lstat(p, &st) == 0;
}

/* Reads root/rel into out (NUL-terminated); returns its length or -1. */
static ssize_t read_rel(const char *rel, char *out, size_t len)
{
    char p[768];
    pathf(p, sizeof(p), rel);
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

static int deliver1(const char *addr, const char *folder, const char *flags)
{
    struct iovec iov = { (void *)MSG, sizeof(MSG) - 1 };
    struct mailstore_target t = { addr, folder, flags };
    char err[256];
    return mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof(err));
}

static void check_msg_file(const char *dir)
{
    char name[256], rel[512], body[256], sz[32];
    CHECK_INT(count_dir(dir, name, sizeof(name)), 1);
    snprintf(rel, sizeof(rel), "%s/%s", dir, name);
    CHECK_INT(read_rel(rel, body, sizeof(body)), sizeof(MSG) - 1);
    CHECK_STR(body, MSG);
    snprintf(sz, sizeof(sz), ",S=%zu", sizeof(MSG) - 1);
    CHECK(strstr(name, sz) != NULL);
    CHECK(strstr(name, ".testhost,") != NULL);
}

TEST(deliver_one)
{
    CHECK_INT(deliver1("alice@example.com", NULL, NULL), 0);
    check_msg_file("example.com/alice/new");
    CHECK_INT(count_dir("example.com/alice/tmp", NULL, 0), 0);
    CHECK_INT(count_dir("example.com/alice/cur", NULL, 0), 0);
}

TEST(deliver_three)
{
    struct iovec iov[3] = {
        { (void *)MSG, 10 }, { (void *)(MSG + 10), 0 }, { (void *)(MSG + 10), sizeof(MSG) - 11 },
    };
    struct mailstore_target t[3] = {
        { "u1@three.test", NULL, NULL }, { "u2@three.test", NULL, NULL },
        { "u3@three.test", NULL, NULL },
    };
    char err[256], names[3][256];
    CHECK_INT(mailstore_deliver(ms, iov, 3, t, 3, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++) {
        char dir[64];
        snprintf(dir, sizeof(dir), "three.test/u%d/new", i + 1);
        check_msg_file(dir);
        count_dir(dir, names[i], sizeof(names[i]));
    }
    CHECK(strcmp(names[0], names[1]) != 0);
    CHECK(strcmp(names[1], names[2]) != 0);
    CHECK(strcmp(names[0], names[2]) != 0);
}

/* More iovecs than one writev window, with empty ones in between. */
TEST(deliver_many_iov)
{
    struct iovec iov[300];
    size_t len = sizeof(MSG) - 1, pos = 0;
    for (int i = 0; i < 300; i++) {
        size_t take = (i % 3 == 0 || pos >= len) ? 0 : 1;
        if (i == 299)
            take = len - pos;
        iov[i].iov_base = (void *)(MSG + pos);
        iov[i].iov_len = take;
        pos += take;
    }
    struct mailstore_target t = { "iov@example.com", NULL, NULL };
    char err[256];
    CHECK_INT(mailstore_deliver(ms, iov, 300, &t, 1, err, sizeof(err)), 0);
    check_msg_file("example.com/iov/new");
}

TEST(deliver_folder)
{
    CHECK_INT(deliver1("bob@example.com", "Junk", NULL), 0);
    CHECK(exists("example.com/bob/.Junk/maildirfolder"));
    CHECK(exists("example.com/bob/.Junk/cur"));
    CHECK(exists("example.com/bob/.Junk/tmp"));
    CHECK(exists("example.com/bob/cur"));      /* INBOX created with it */
    check_msg_file("example.com/bob/.Junk/new");
    CHECK_INT(count_dir("example.com/bob/new", NULL, 0), 0);
}

TEST(deliver_flags)
{
    char name[256];
    CHECK_INT(deliver1("flags@example.com", NULL, "S"), 0);
    CHECK_INT(count_dir("example.com/flags/new", NULL, 0), 0);
    CHECK_INT(count_dir("example.com/flags/cur", name, sizeof(name)), 1);
    size_t n = strlen(name);
    CHECK(n > 4 && strcmp(name + n - 4, ":2,S") == 0);

    CHECK_INT(deliver1("flags2@example.com", NULL, "SFS"), 0);
    CHECK_INT(count_dir("example.com/flags2/cur", name, sizeof(name)), 1);
    n = strlen(name);
    CHECK(n > 5 && strcmp(name + n - 5, ":2,FS") == 0);

    CHECK_INT(deliver1("flags3@example.com", NULL, "S:"), -1);
    CHECK_INT(errno, EINVAL);
}

TEST(deliver_failure_cleanup)
{
    char p[512], err[256];
    pathf(p, sizeof(p), "fail.test");
    CHECK_INT(mkdir(p, 0700), 0);
    pathf(p, sizeof(p), "fail.test/b");     /* a file where the mailbox should be */
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    close(fd);

    struct iovec iov = { (void *)MSG, sizeof(MSG) - 1 };
    struct mailstore_target t[3] = {
        { "a@fail.test", NULL, NULL }, { "b@fail.test", NULL, NULL }, { "c@fail.test", "Junk", NULL },
    };
    err[0] = '\0';
    CHECK_INT(mailstore_deliver(ms, &iov, 1, t, 3, err, sizeof(err)), -1);
    CHECK(strstr(err, "fail.test/b") != NULL);
    CHECK(strstr(err, root) != NULL);
    CHECK_INT(count_dir("fail.test/a/new", NULL, 0), 0);
    CHECK_INT(count_dir("fail.test/a/tmp", NULL, 0), 0);

    /* Now the failing one is last: the first copy is written, then undone. */
    struct mailstore_target t2[2] = { { "a@fail.test", NULL, NULL }, { "b@fail.test", NULL, NULL } };
    CHECK_INT(mailstore_deliver(ms, &iov, 1, t2, 2, err, sizeof(err)), -1);
    CHECK_INT(count_dir("fail.test/a/new", NULL, 0), 0);
    CHECK_INT(count_dir("fail.test/a/tmp", NULL, 0), 0);
    CHECK_INT(count_dir("fail.test/a/cur", NULL, 0), 0);

    /* d's tmp/ works but its cur/ is a file: the rename into d fails after
     * a's copy was already renamed into new/, which must be undone. */
    const char *const dirs[] = { "fail.test/d", "fail.test/d/tmp", "fail.test/d/new" };
    for (size_t i = 0; i < 3; i++) {
        pathf(p, sizeof(p), dirs[i]);
        CHECK_INT(mkdir(p, 0700), 0);
    }
    pathf(p, sizeof(p), "fail.test/d/cur");
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    close(fd);
    struct mailstore_target t3[2] = { { "a@fail.test", NULL, NULL }, { "d@fail.test", NULL, "S" } };
    CHECK_INT(mailstore_deliver(ms, &iov, 1, t3, 2, err, sizeof(err)), -1);
    CHECK(strstr(err, "cannot rename") != NULL);
    CHECK_INT(count_dir("fail.test/a/new", NULL, 0), 0);
    CHECK_INT(count_dir("fail.test/a/tmp", NULL, 0), 0);
    CHECK_INT(count_dir("fail.test/d/tmp", NULL, 0), 0);
    CHECK_INT(deliver1("a@fail.test", NULL, NULL), 0);     /* a itself is fine */
    CHECK_INT(count_dir("fail.test/a/new", NULL, 0), 1);
}

TEST(invalid_names)
{
    static const char *const bad[] = {
        "../x@y", "a/b@c", "x@..", "x@.y", "x@.", ".x@y", "noat", "a@b@c", "@y", "x@", "x@a/b",
        "x\n@y", "",
    };
    char err[256], path[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct iovec iov = { (void *)MSG, 5 };
        struct mailstore_target t = { bad[i], NULL, NULL };
        errno = 0;
        CHECK_INT(mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof(err)), -1);
        CHECK_INT(errno, EINVAL);
        CHECK_INT(mailstore_mailbox_path(ms, bad[i], path, sizeof(path)), -1);
    }
    static const char *const badf[] = { "../x", ".x", "a..b", "a/b", "", "x.", "a\x01" };
    for (size_t i = 0; i < sizeof(badf) / sizeof(badf[0]); i++) {
        errno = 0;
        CHECK_INT(deliver1("ok@example.com", badf[i], NULL), -1);
        CHECK_INT(errno, EINVAL);
        CHECK_INT(mailstore_folder_create(ms, "ok@example.com", badf[i]), -1);
    }
    CHECK(!exists("example.com/ok"));
    CHECK(!exists("y"));
    CHECK(!exists("x"));
}

struct thread_arg { int n; int failures; };

static void *deliver_thread(void *p)
{
    struct thread_arg *a = p;
    for (int i = 0; i < a->n; i++)
        if (deliver1("busy@example.com", NULL, NULL) != 0)
            a->failures++;
    return NULL;
}

TEST(deliver_threads)
{
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){ 500, 0 };
        pthread_create(&th[i], NULL, deliver_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(args[i].failures, 0);
    }
    CHECK_INT(count_dir("example.com/busy/new", NULL, 0), 2000);
    struct mailstore_msglist l;
    CHECK_INT(mailstore_list(ms, "busy@example.com", NULL, &l), 0);
    CHECK_INT(l.n, 2000);
    mailstore_msglist_free(&l);
}

static void make_tmp_file(const char *rel, time_t mtime)
{
    char p[768];
    pathf(p, sizeof(p), rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    if (mtime) {
        struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };
        CHECK_INT(utimensat(AT_FDCWD, p, ts, 0), 0);
    }
}

TEST(cleanup_tmp)
{
    char rel[512];
    time_t now = time(NULL);
    long me = (long)getpid();
    CHECK_INT(deliver1("clean@example.com", "Drafts", NULL), 0);
    const char *tmp = "example.com/clean/tmp";

    /* removed: another pid of ours, an earlier process with our pid, an
     * old foreign file, a foreign-pid file in a folder */
    snprintf(rel, sizeof(rel), "%s/%lld.M000001P%ldQ1R0000abcd.testhost,S=5", tmp, (long long)now, me + 1);
    make_tmp_file(rel, 0);
    snprintf(rel, sizeof(rel), "%s/%lld.M000001P%ldQ7R0000abcd.testhost,S=5", tmp, (long long)now - 100, me);
    make_tmp_file(rel, 0);
    snprintf(rel, sizeof(rel), "%s/old-foreign", tmp);
    make_tmp_file(rel, now - 37 * 3600);
    snprintf(rel, sizeof(rel), "example.com/clean/.Drafts/tmp/%lld.M000001P%ldQ1R0000abcd.testhost,S=5",
             (long long)now, me + 2);
    make_tmp_file(rel, 0);

    /* kept: ours now, a young foreign file, another host's, a symlink */
    snprintf(rel, sizeof(rel), "%s/%lld.M000001P%ldQ9R0000abcd.testhost,S=5", tmp, (long long)now + 5, me);
    make_tmp_file(rel, 0);
    snprintf(rel, sizeof(rel), "%s/young-foreign", tmp);
    make_tmp_file(rel, 0);
    snprintf(rel, sizeof(rel), "%s/%lld.M000001P%ldQ1R0000abcd.otherhost,S=5", tmp, (long long)now, me + 1);
    make_tmp_file(rel, 0);
    char link[768];
    snprintf(rel, sizeof(rel), "%s/%lld.M000001P%ldQ2R0000abcd.testhost,S=5", tmp, (long long)now, me + 1);
    pathf(link, sizeof(link), rel);
    CHECK_INT(symlink("/etc/hostname", link), 0);

    CHECK_INT(mailstore_cleanup_tmp(ms), 4);
    CHECK_INT(count_dir(tmp, NULL, 0), 4);
    CHECK_INT(count_dir("example.com/clean/.Drafts/tmp", NULL, 0), 0);
    CHECK(exists("example.com/clean/tmp/young-foreign"));
    CHECK(!exists("example.com/clean/tmp/old-foreign"));
    CHECK_INT(count_dir("example.com/clean/.Drafts/new", NULL, 0), 1);
    CHECK_INT(mailstore_cleanup_tmp(ms), 0);
}

TEST(read_roundtrip)
{
    const char *a = "reader@example.com";
    struct mailstore_msglist l;
    CHECK_INT(deliver1(a, NULL, NULL), 0);
    CHECK_INT(deliver1(a, NULL, NULL), 0);
    CHECK_INT(mailstore_list(ms, a, NULL, &l), 0);
    CHECK_INT(l.n, 2);
    if (l.n != 2)
        return;
    char n0[256], n1[256];
    snprintf(n0, sizeof(n0), "%s", l.msgs[0].name);
    snprintf(n1, sizeof(n1), "%s", l.msgs[1].name);
    CHECK(strcmp(n0, n1) < 0);
    CHECK(l.msgs[0].recent);
    CHECK_STR(l.msgs[0].flags, "");
    CHECK_INT(l.msgs[0].size, sizeof(MSG) - 1);
    CHECK(l.msgs[0].mtime > 0);
    mailstore_msglist_free(&l);

    CHECK_INT(mailstore_set_flags(ms, a, NULL, n0, "SR"), 0);
    CHECK_INT(mailstore_set_flags(ms, a, NULL, n0, "SRS"), 0);    /* unchanged */
    CHECK_INT(mailstore_list(ms, a, NULL, &l), 0);
    CHECK_INT(l.n, 2);
    if (l.n == 2) {
        CHECK_STR(l.msgs[0].name, n0);
        CHECK_STR(l.msgs[0].flags, "RS");
        CHECK(!l.msgs[0].recent);
        CHECK(l.msgs[1].recent);
    }
    mailstore_msglist_free(&l);
    CHECK_INT(count_dir("example.com/reader/cur", NULL, 0), 1);
    CHECK_INT(mailstore_set_flags(ms, a, NULL, n0, ""), 0);
    char rel[512];
    snprintf(rel, sizeof(rel), "example.com/reader/cur/%s:2,", n0);
    CHECK(exists(rel));

    int fd = mailstore_open_msg(ms, a, NULL, n0);
    CHECK(fd >= 0);
    if (fd >= 0) {
        char body[256];
        ssize_t r = read(fd, body, sizeof(body) - 1);
        CHECK_INT(r, sizeof(MSG) - 1);
        body[r > 0 ? r : 0] = '\0';
        CHECK_STR(body, MSG);
        close(fd);
    }
    fd = mailstore_open_msg(ms, a, NULL, n1);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);

    CHECK_INT(mailstore_remove(ms, a, NULL, n1), 0);
    CHECK_INT(mailstore_remove(ms, a, NULL, n1), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_open_msg(ms, a, NULL, "1.M1P1Q1R00000000.nope"), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_open_msg(ms, a, NULL, "../../../etc/passwd"), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(mailstore_set_flags(ms, a, NULL, n0, "S/"), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(mailstore_list(ms, a, NULL, &l), 0);
    CHECK_INT(l.n, 1);
    mailstore_msglist_free(&l);
    CHECK_INT(mailstore_list(ms, "nobody@example.com", NULL, &l), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_list(ms, a, "Nope", &l), -1);
    CHECK_INT(errno, ENOENT);
}

static void check_folders(const char *a, const char *const *want, size_t nwant)
{
    char **names;
    size_t n;
    CHECK_INT(mailstore_folders(ms, a, &names, &n), 0);
    CHECK_INT(n, nwant);
    for (size_t i = 0; i < n && i < nwant; i++)
        CHECK_STR(names[i], want[i]);
    mailstore_folders_free(names, n);
}

TEST(folders)
{
    const char *a = "folders@example.com";
    CHECK_INT(mailstore_folder_create(ms, a, "Sent"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "Archive.2024"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "Archive"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "Sent"), -1);
    CHECK_INT(errno, EEXIST);
    CHECK(exists("example.com/folders/.Archive.2024/maildirfolder"));
    CHECK_INT(deliver1(a, "Archive.2024", NULL), 0);
    const char *const w1[] = { "Archive", "Archive.2024", "Sent" };
    check_folders(a, w1, 3);

    CHECK_INT(mailstore_folder_rename(ms, a, "Archive", "Old"), 0);
    const char *const w2[] = { "Old", "Old.2024", "Sent" };
    check_folders(a, w2, 3);
    check_msg_file("example.com/folders/.Old.2024/new");
    CHECK_INT(mailstore_folder_rename(ms, a, "Sent", "Old"), -1);
    CHECK_INT(errno, EEXIST);
    CHECK_INT(mailstore_folder_rename(ms, a, "Sent", "Sent.sub"), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(mailstore_folder_rename(ms, a, "Nope", "Nope2"), -1);
    CHECK_INT(errno, ENOENT);

    CHECK_INT(mailstore_folder_delete(ms, a, "Old.2024"), 0);
    const char *const w3[] = { "Old", "Sent" };
    check_folders(a, w3, 2);
    CHECK_INT(mailstore_folder_delete(ms, a, "Old.2024"), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_folder_delete(ms, a, "../folders"), -1);
    CHECK_INT(errno, EINVAL);
    /* nothing hidden left behind besides the two folders */
    CHECK_INT(count_dir("example.com/folders", NULL, 0), 5);
}

TEST(append_single)
{
    const char *a = "app@example.com";
    char name[256], rel[600], body[256], path[768], err[256];
    struct stat st;
    /* INBOX created when missing; no flags: new/, the given mtime. */
    CHECK_INT(mailstore_append(ms, a, NULL, MSG, sizeof(MSG) - 1, NULL, 1000000000, name,
                               sizeof(name), err, sizeof(err)), 0);
    snprintf(rel, sizeof(rel), "example.com/app/new/%s", name);
    CHECK_INT(read_rel(rel, body, sizeof(body)), sizeof(MSG) - 1);
    pathf(path, sizeof(path), rel);
    CHECK(stat(path, &st) == 0 && st.st_mtime == 1000000000);
    CHECK(strstr(name, ".testhost,S=") != NULL);
    /* Flags, even none: cur/ with ":2,<flags>". */
    CHECK_INT(mailstore_append(ms, a, "INBOX", MSG, sizeof(MSG) - 1, "SD", 0, name,
                               sizeof(name), err, sizeof(err)), 0);
    snprintf(rel, sizeof(rel), "example.com/app/cur/%s:2,DS", name);
    CHECK(exists(rel));
    CHECK_INT(mailstore_append(ms, a, NULL, "", 0, "", 0, name, sizeof(name), err,
                               sizeof(err)), 0);
    snprintf(rel, sizeof(rel), "example.com/app/cur/%s:2,", name);
    CHECK(exists(rel));
    /* Another folder must exist; nothing is left behind on failure. */
    CHECK_INT(mailstore_append(ms, a, "Nope", MSG, 3, NULL, 0, name, sizeof(name), err,
                               sizeof(err)), -1);
    CHECK_INT(errno, ENOENT);
    CHECK(!exists("example.com/app/.Nope"));
    CHECK_INT(mailstore_append(ms, a, NULL, MSG, 3, "S:", 0, name, sizeof(name), err,
                               sizeof(err)), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(mailstore_append(ms, a, NULL, MSG, 3, NULL, 0, name, 8, err, sizeof(err)), -1);
    CHECK_INT(count_dir("example.com/app/tmp", NULL, 0), 0);
    CHECK_INT(count_dir("example.com/app/new", NULL, 0), 1);
    CHECK_INT(count_dir("example.com/app/cur", NULL, 0), 2);
}

TEST(copy_move_between_folders)
{
    const char *a = "xfer@example.com";
    char name[256], copy[256], moved[256], rel[600], path[768], err[256];
    struct stat st;
    CHECK_INT(mailstore_folder_create(ms, a, "Dst"), 0);
    CHECK_INT(mailstore_append(ms, a, NULL, MSG, sizeof(MSG) - 1, "S", 1100000000, name,
                               sizeof(name), err, sizeof(err)), 0);
    /* Copy: a second name (hard link) in the same subdirectory, same info. */
    CHECK_INT(mailstore_copy(ms, a, NULL, name, "Dst", copy, sizeof(copy)), 0);
    CHECK(strcmp(copy, name) != 0);
    snprintf(rel, sizeof(rel), "example.com/xfer/.Dst/cur/%s:2,S", copy);
    pathf(path, sizeof(path), rel);
    CHECK(stat(path, &st) == 0 && st.st_nlink == 2 && st.st_mtime == 1100000000);
    CHECK_INT(mailstore_sync_folder(ms, a, "Dst"), 0);
    /* Copies into the same folder work too. */
    CHECK_INT(mailstore_copy(ms, a, NULL, name, NULL, moved, sizeof(moved)), 0);
    CHECK_INT(count_dir("example.com/xfer/cur", NULL, 0), 2);
    CHECK_INT(mailstore_remove(ms, a, NULL, moved), 0);

    /* Move: the same base name, gone from the source. */
    CHECK_INT(mailstore_move(ms, a, NULL, name, "Dst", moved, sizeof(moved)), 0);
    CHECK_STR(moved, name);
    snprintf(rel, sizeof(rel), "example.com/xfer/.Dst/cur/%s:2,S", name);
    CHECK(exists(rel));
    CHECK_INT(count_dir("example.com/xfer/cur", NULL, 0), 0);
    /* A name taken in dst (here: moved within one folder) gets a fresh one. */
    CHECK_INT(mailstore_copy(ms, a, "Dst", name, NULL, copy, sizeof(copy)), 0);
    CHECK_INT(mailstore_move(ms, a, NULL, copy, "Dst", moved, sizeof(moved)), 0);
    CHECK_STR(moved, copy);
    CHECK_INT(mailstore_move(ms, a, "Dst", name, "Dst", moved, sizeof(moved)), 0);
    CHECK(strcmp(moved, name) != 0);
    snprintf(rel, sizeof(rel), "example.com/xfer/.Dst/cur/%s:2,S", moved);
    CHECK(exists(rel));
    CHECK_INT(count_dir("example.com/xfer/.Dst/cur", NULL, 0), 3);

    CHECK_INT(mailstore_move(ms, a, NULL, name, "Dst", moved, sizeof(moved)), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_copy(ms, a, "Dst", moved, "Gone", copy, sizeof(copy)), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_sync_folder(ms, a, "Gone"), -1);
}

TEST(meta_files)
{
    const char *a = "meta@example.com";
    char *data = NULL;
    size_t len = 0;
    struct mailstore_msglist l;
    CHECK_INT(mailstore_meta_write(ms, a, NULL, "dovecot-uidlist", "x", 1, false), -1);
    CHECK_INT(errno, ENOENT);     /* no mailbox yet */
    CHECK_INT(deliver1(a, NULL, NULL), 0);
    CHECK_INT(mailstore_meta_write(ms, a, NULL, "dovecot-uidlist", "more\n", 5, true), -1);
    CHECK_INT(errno, ENOENT);     /* append needs the file */
    CHECK_INT(mailstore_meta_write(ms, a, NULL, "dovecot-uidlist", "3 V1 N1\n", 8, false), 0);
    CHECK_INT(mailstore_meta_write(ms, a, NULL, "dovecot-uidlist", "1 :x\n", 5, true), 0);
    CHECK_INT(mailstore_meta_read(ms, a, NULL, "dovecot-uidlist", &data, &len, 1024), 0);
    CHECK_INT(len, 13);
    CHECK_STR(data, "3 V1 N1\n1 :x\n");
    free(data);
    CHECK_INT(mailstore_meta_read(ms, a, NULL, "dovecot-uidlist", &data, &len, 4), -1);
    CHECK_INT(errno, EFBIG);
    CHECK(!exists("example.com/meta/dovecot-uidlist.posthorn-tmp"));
    const char *bad[] = { "cur", "tmp", "new", "maildirfolder", ".hidden", "a/b", "", NULL };
    for (int i = 0; bad[i]; i++) {
        CHECK_INT(mailstore_meta_write(ms, a, NULL, bad[i], "x", 1, false), -1);
        CHECK_INT(errno, EINVAL);
    }
    CHECK_INT(mailstore_meta_read(ms, a, NULL, "nope", &data, &len, 10), -1);
    CHECK_INT(errno, ENOENT);
    /* Listings ignore it and the index file. */
    CHECK_INT(mailstore_folder_create(ms, a, "F"), 0);
    CHECK_INT(mailstore_meta_write(ms, a, "F", "dovecot-uidlist", "3 V1 N1\n", 8, false), 0);
    int fd = -1;
    char p[768];
    pathf(p, sizeof(p), "example.com/meta/posthorn-index.db");
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK_INT(mailstore_list(ms, a, NULL, &l), 0);
    CHECK_INT(l.n, 1);
    mailstore_msglist_free(&l);
    CHECK_INT(mailstore_list(ms, a, "F", &l), 0);
    CHECK_INT(l.n, 0);
    mailstore_msglist_free(&l);
    const char *const want[] = { "F" };
    check_folders(a, want, 1);
    uint64_t used = 0;
    CHECK_INT(mailstore_usage(ms, a, &used), 0);
    CHECK_INT(used, sizeof(MSG) - 1);
}

TEST(folder_rename_checks_first)
{
    const char *a = "renchk@example.com";
    CHECK_INT(mailstore_folder_create(ms, a, "A"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "A.b"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "A.c"), 0);
    CHECK_INT(mailstore_folder_create(ms, a, "Z.c"), 0);
    /* "Z.c" is taken: nothing is renamed. */
    CHECK_INT(mailstore_folder_rename(ms, a, "A", "Z"), -1);
    CHECK_INT(errno, EEXIST);
    const char *const w[] = { "A", "A.b", "A.c", "Z.c" };
    check_folders(a, w, 4);
    /* Deleting leaves no hidden directory that a listing, usage or the tmp/
     * cleanup could see. */
    CHECK_INT(deliver1(a, "A", NULL), 0);
    CHECK_INT(mailstore_folder_delete(ms, a, "A"), 0);
    const char *const w2[] = { "A.b", "A.c", "Z.c" };
    check_folders(a, w2, 3);
    uint64_t used = 1;
    CHECK_INT(mailstore_usage(ms, a, &used), 0);
    CHECK_INT(used, 0);
}

TEST(remove_mailbox)
{
    CHECK_INT(deliver1("gone@example.com", "Junk", NULL), 0);
    CHECK(exists("example.com/gone"));
    CHECK_INT(mailstore_remove_mailbox(ms, "gone@example.com"), 0);
    CHECK(!exists("example.com/gone"));
    char p[768];
    pathf(p, sizeof(p), "example.com");
    DIR *d = opendir(p);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        CHECK(strncmp(e->d_name, ".posthorn", 9) != 0);
    if (d)
        closedir(d);
    CHECK_INT(mailstore_remove_mailbox(ms, "gone@example.com"), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailstore_remove_mailbox(ms, "../example.com@x"), -1);
    CHECK_INT(errno, EINVAL);
    CHECK(exists("example.com/alice"));
}

TEST(mailbox_path)
{
    char out[256], want[256];
    snprintf(want, sizeof(want), "%s/example.com/alice", root);
    CHECK_INT(mailstore_mailbox_path(ms, "alice@example.com", out, sizeof(out)), 0);
    CHECK_STR(out, want);
    CHECK_INT(mailstore_mailbox_path(ms, "alice@example.com", out, 8), -1);
}

int main(void)
{
    char err[256];
    snprintf(root, sizeof(root), "/tmp/mailstore-test.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    size_t len = strlen(root);
    snprintf(root + len, sizeof(root) - len, "/mail");   /* created by open */
    ms = mailstore_open(root, "testhost", err, sizeof(err));
    if (!ms) {
        fprintf(stderr, "mailstore_open: %s\n", err);
        return 1;
    }
    RUN(deliver_one);
    RUN(deliver_three);
    RUN(deliver_many_iov);
    RUN(deliver_folder);
    RUN(deliver_flags);
    RUN(deliver_failure_cleanup);
    RUN(invalid_names);
    RUN(deliver_threads);
    RUN(cleanup_tmp);
    RUN(read_roundtrip);
    RUN(folders);
    RUN(append_single);
    RUN(copy_move_between_folders);
    RUN(meta_files);
    RUN(folder_rename_checks_first);
    RUN(remove_mailbox);
    RUN(mailbox_path);
    mailstore_close(ms);
    root[len] = '\0';
    rm_rf(root);
    return test_summary();
}
