/* db: what posthorn's SQLite files share. Every database (accounts.db,
 * queue.db, the mailbox indexes) is versioned with PRAGMA user_version and
 * migrated in place by an append-only list of migrations; `name` ("queue.db")
 * prefixes every error. All calls block: worker threads or the CLI. */
#ifndef POSTHORN_DB_H
#define POSTHORN_DB_H

#include <stddef.h>

#include <sqlite3.h>

/* Runs sql (may hold several statements). Returns 0, or -1 with a reason. */
int db_exec(sqlite3 *db, const char *name, const char *sql, char *err, size_t errlen);

/* The first column of the first row of sql. Returns 0, or -1. */
int db_query_int(sqlite3 *db, const char *sql, int *out);

/* Switches to WAL journaling; -1 with a reason when the file cannot. */
int db_set_wal(sqlite3 *db, const char *name, char *err, size_t errlen);

/* Applies migrations[v] for every v from the file's version up to n - 1 in
 * one transaction, and sets the version to n. A file newer than n is
 * refused. `log_name` names it in the log line about a migration. */
int db_migrate(sqlite3 *db, const char *name, const char *const *migrations, int n,
               char *err, size_t errlen);

#endif
