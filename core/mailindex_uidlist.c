/* mailindex_uidlist: the dovecot-uidlist file (mailindex_uidlist.h); when
 * it is appended to or rewritten is mailindex.c's business (see the top of
 * that file). */
#include "mailindex_uidlist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

#define UIDLIST_FILE  "dovecot-uidlist"
#define UIDLIST_MAX   (256ULL * 1024 * 1024)   /* bigger files are not imported */
#define UIDLIST_SLACK 64                       /* extra lines tolerated before a rewrite */

/* The folder's name in log messages. */
static const char *label(const struct uidlist_at *at)
{
    return at->folder ? at->folder : "INBOX";
}

/* --- Writing ----------------------------------------------------------------------- */

/* "<uid> :<name>\n" for each live row of m[0..n); *lines counts them. */
static int format_entries(struct buf *b, const struct mailindex_msg *m, size_t n,
                          uint64_t *lines)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!m[i].name)
            continue;
        rc = buf_printf(b, "%u :%s\n", (unsigned)m[i].uid, m[i].name);
        (*lines)++;
    }
    return rc;
}

uint64_t uidlist_write(const struct uidlist_at *at, uint32_t uidvalidity, uint64_t uidnext,
                       const struct mailindex_msg *m, size_t n)
{
    struct buf b = BUF_INIT;
    uint64_t lines = 1;
    int rc = buf_printf(&b, "3 V%u N%llu\n", (unsigned)uidvalidity,
                        (unsigned long long)uidnext);
    if (rc == 0)
        rc = format_entries(&b, m, n, &lines);
    if (rc < 0)
        errno = ENOMEM;
    else
        rc = mailstore_meta_write(at->ms, at->address, at->folder, UIDLIST_FILE, b.data, b.len,
                                  false);
    if (rc < 0 && errno != ENOENT)  /* ENOENT: an INBOX not created yet */
        log_warn("mailindex: %s: cannot write the %s of %s: %s", at->index, UIDLIST_FILE,
                 label(at), strerror(errno));
    buf_free(&b);
    return rc == 0 ? lines : 0;
}

int uidlist_append(const struct uidlist_at *at, const struct mailindex_msg *m, size_t n,
                   uint64_t *lines)
{
    struct buf b = BUF_INIT;
    *lines = 0;
    int rc = format_entries(&b, m, n, lines);
    if (rc < 0)
        errno = ENOMEM;
    else if (*lines > 0)
        rc = mailstore_meta_write(at->ms, at->address, at->folder, UIDLIST_FILE, b.data, b.len,
                                  true);
    buf_free(&b);
    if (rc < 0 && errno != ENOENT) {    /* ENOENT: removed behind our back */
        int saved = errno;
        log_warn("mailindex: %s: cannot append to the %s of %s: %s", at->index, UIDLIST_FILE,
                 label(at), strerror(saved));
        errno = saved;
    }
    return rc;
}

bool uidlist_rewrite_due(uint64_t lines, const struct mailindex_msg *m, size_t n)
{
    uint64_t live = 0;
    for (size_t i = 0; i < n; i++)
        live += m[i].name != NULL;
    return lines == 0 || lines > 2 * (live + 1) + UIDLIST_SLACK;
}

/* --- Reading ----------------------------------------------------------------------- */

void uidmap_free(struct uidmap *m)
{
    free(m->data);
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* Decimal digits (at most 10) into *out; advances *p. */
static bool take_u64(const char **p, uint64_t *out)
{
    uint64_t v = 0;
    int n = 0;
    for (; (*p)[n] >= '0' && (*p)[n] <= '9'; n++) {
        if (n >= 10)
            return false;
        v = v * 10 + (uint64_t)((*p)[n] - '0');
    }
    if (n == 0)
        return false;
    *p += n;
    *out = v;
    return true;
}

/* "3 V<uidvalidity> N<uidnext> [other fields]" or version 1's
 * "1 <uidvalidity> <uidnext>". Returns the version, or 0 when bad. */
static int parse_uidlist_header(const char *line, uint64_t *uv, uint64_t *next)
{
    const char *p = line;
    *uv = 0;
    *next = 1;
    if (strncmp(p, "1 ", 2) == 0) {
        p += 2;
        if (!take_u64(&p, uv) || *p++ != ' ' || !take_u64(&p, next) || *p != '\0')
            return 0;
    } else if (strncmp(p, "3", 1) == 0 && (p[1] == ' ' || p[1] == '\0')) {
        for (p++; *p; ) {
            if (*p == ' ') {
                p++;
                continue;
            }
            char k = *p++;
            if ((k == 'V' && !take_u64(&p, uv)) || (k == 'N' && !take_u64(&p, next)))
                return 0;
            p += strcspn(p, " ");
        }
    } else {
        return 0;
    }
    if (*uv == 0 || *uv > UINT32_MAX || *next == 0)
        return 0;
    return line[0] - '0';
}

/* "<uid> [<key><value> ...] :<name>" (version 3) or "<uid> <name>"
 * (version 1); the name is cut before any ':' info. Modifies line. */
static bool parse_uidlist_entry(char *line, int version, uint64_t *uid, const char **name)
{
    const char *p = line;
    if (!take_u64(&p, uid) || *uid == 0 || *uid > UINT32_MAX || *p != ' ')
        return false;
    if (version == 1) {
        p++;
    } else {
        for (;;) {
            while (*p == ' ')
                p++;
            if (*p == ':' || *p == '\0')
                break;
            p += strcspn(p, " ");
        }
        if (*p++ != ':')
            return false;
    }
    char *n = line + (p - line);
    n[strcspn(n, ":")] = '\0';
    *name = n;
    return *n != '\0' && !strchr(n, '/');
}

static int cmp_uidmap(const void *a, const void *b)
{
    const struct uidmap_ent *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : x->uid < y->uid ? -1 : x->uid > y->uid;
}

static int uidmap_push(struct uidmap *m, const char *name, uint32_t uid)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        struct uidmap_ent *e = realloc(m->e, cap * sizeof *e);
        if (!e)
            return -1;
        m->e = e;
        m->cap = cap;
    }
    m->e[m->n].name = name;
    m->e[m->n++].uid = uid;
    return 0;
}

/* Parses a whole uidlist. UIDs must ascend (as Dovecot requires); a last
 * line cut short by a crash only counts for UIDNEXT. Returns false when
 * the file cannot be trusted. */
static bool parse_uidlist(char *data, size_t len, struct uidmap *m, uint64_t *uv,
                          uint64_t *next)
{
    char *line = data, *end = data + len;
    char *nl = memchr(line, '\n', len);
    if (!nl)
        return false;
    *nl = '\0';
    int version = parse_uidlist_header(line, uv, next);
    if (version == 0)
        return false;
    uint64_t last = 0;
    for (line = nl + 1; line < end; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(end - line));
        bool complete = nl != NULL;
        if (!nl)
            nl = end;
        *nl = '\0';
        uint64_t uid;
        const char *name;
        if (*line == '\0')
            continue;
        if (!parse_uidlist_entry(line, version, &uid, &name)) {
            const char *p = line;
            if (complete)
                return false;
            if (take_u64(&p, &uid) && uid > last && uid <= UINT32_MAX)
                last = uid;
            break;
        }
        if (uid <= last || uidmap_push(m, name, (uint32_t)uid) < 0)
            return false;
        last = uid;
    }
    if (*next <= last)
        *next = last + 1;
    if (*next > UINT32_MAX)
        return false;
    /* A name listed twice (moved away and back): its latest UID counts. */
    qsort(m->e, m->n, sizeof *m->e, cmp_uidmap);
    size_t out = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (out > 0 && strcmp(m->e[out - 1].name, m->e[i].name) == 0)
            out--;
        m->e[out++] = m->e[i];
    }
    m->n = out;
    return true;
}

bool uidlist_read(const struct uidlist_at *at, struct uidmap *m, uint32_t *uidvalidity,
                  uint64_t *uidnext)
{
    size_t len;
    uint64_t uv, next;
    if (mailstore_meta_read(at->ms, at->address, at->folder, UIDLIST_FILE, &m->data, &len,
                            UIDLIST_MAX) < 0) {
        if (errno != ENOENT)
            log_warn("mailindex: %s: cannot read the %s of %s: %s", at->index, UIDLIST_FILE,
                     label(at), strerror(errno));
        return false;
    }
    if (!parse_uidlist(m->data, len, m, &uv, &next)) {
        log_warn("mailindex: %s: ignoring the damaged %s of %s; new UIDVALIDITY", at->index,
                 UIDLIST_FILE, label(at));
        uidmap_free(m);
        return false;
    }
    log_info("mailindex: %s: %s: UIDVALIDITY %u and %zu UIDs taken from its %s", at->index,
             label(at), (unsigned)uv, m->n, UIDLIST_FILE);
    *uidvalidity = (uint32_t)uv;
    *uidnext = next;
    return true;
}

uint32_t uidmap_find(const struct uidmap *m, const char *name)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->e[mid].name, name);
        if (c == 0)
            return m->e[mid].uid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}
