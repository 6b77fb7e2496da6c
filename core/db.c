#include "db.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

int db_exec(sqlite3 *db, const char *name, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", name, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

int db_query_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int db_set_wal(sqlite3 *db, const char *name, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", name, sqlite3_errmsg(db));
        return -1;
    }
    int rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    bool wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        snprintf(err, errlen, "%s: cannot switch to WAL mode: %s", name, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int db_migrate(sqlite3 *db, const char *name, const char *const *migrations, int n,
               char *err, size_t errlen)
{
    if (db_exec(db, name, "BEGIN IMMEDIATE", err, errlen) < 0)
        return -1;
    int version = 0;
    if (db_query_int(db, "PRAGMA user_version", &version) < 0) {
        snprintf(err, errlen, "%s: cannot read the schema version: %s", name, sqlite3_errmsg(db));
        goto fail;
    }
    if (version > n) {
        snprintf(err, errlen, "%s: schema version %d is newer than this program's (%d)", name,
                 version, n);
        goto fail;
    }
    for (int v = version; v < n; v++)
        if (db_exec(db, name, migrations[v], err, errlen) < 0)
            goto fail;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", n);
    if (db_exec(db, name, sql, err, errlen) < 0 || db_exec(db, name, "COMMIT", err, errlen) < 0)
        goto fail;
    if (version > 0 && version < n)    /* creating a new file is not news */
        log_info("%s: schema migrated from version %d to %d", name, version, n);
    return 0;
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}
