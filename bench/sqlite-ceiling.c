/*
 * The ceiling of SQLite itself for the worker's table design on this
 * machine: the row work the repository does per event (read the
 * action-key and idempotency items, insert the notification, the
 * action-key item and the idempotency marker, read and rewrite the owner's
 * unread counter once per batch), in batches of one transaction each, with WAL and
 * synchronous=FULL, through the C API with prepared statements and no
 * NATS, JSON or Swift. Events go to owners chosen at random, as in
 * `make bench`.
 *
 *   make sqlite-ceiling                     # 200,000 events, batches of 1,024, 8,192 and 32,768
 *   bench/sqlite-ceiling EVENTS BATCH OWNERS CHECKPOINT DIR
 *
 * CHECKPOINT is 1 for SQLite's own autocheckpoint (every 1,000 pages), 0
 * for none at all (an upper bound: the WAL grows without limit).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static unsigned long long state = 42;
static unsigned long long next_random(void) {  /* SplitMix64, as the Swift benchmark */
    state += 0x9E3779B97F4A7C15ULL;
    unsigned long long z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void check(int rc, sqlite3 *db, const char *what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "sqlite-ceiling: %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static void step(sqlite3_stmt *statement, sqlite3 *db, const char *what) {
    check(sqlite3_step(statement), db, what);
    sqlite3_reset(statement);
}

int main(int argc, char **argv) {
    int events = argc > 1 ? atoi(argv[1]) : 200000;
    int batch = argc > 2 ? atoi(argv[2]) : 1024;
    int owners = argc > 3 ? atoi(argv[3]) : 1000;
    int checkpoint = argc > 4 ? atoi(argv[4]) : 1;
    const char *directory = argc > 5 ? argv[5] : "/tmp";
    if (events <= 0 || batch <= 0 || owners <= 0) {
        fprintf(stderr, "usage: sqlite-ceiling EVENTS BATCH OWNERS CHECKPOINT(0|1) DIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sqlite-ceiling-%d.db", directory, (int)getpid());

    sqlite3 *db;
    check(sqlite3_open(path, &db), db, "open");
    check(sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-32768;", 0, 0, 0), db, "pragmas");
    if (!checkpoint) check(sqlite3_exec(db, "PRAGMA wal_autocheckpoint=0;", 0, 0, 0), db, "autocheckpoint");
    /* The store's table and expiry index (SQLiteKeyValueStore). */
    check(sqlite3_exec(db,
        "CREATE TABLE kv(pk TEXT NOT NULL, sk TEXT NOT NULL, attrs BLOB NOT NULL, expires_at INTEGER,"
        " PRIMARY KEY(pk, sk)) WITHOUT ROWID;"
        "CREATE INDEX kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;", 0, 0, 0), db, "schema");
    sqlite3_stmt *get, *put;
    check(sqlite3_prepare_v2(db, "SELECT attrs, expires_at FROM kv WHERE pk = ?1 AND sk = ?2", -1, &get, 0), db, "prepare");
    check(sqlite3_prepare_v2(db,
        "INSERT INTO kv(pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT(pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at", -1, &put, 0), db, "prepare");

    /* Sizes of the stored items: a notification record, an action-key
       item with its stream position, a marker, a counter. */
    static char bytes[450];
    memset(bytes, 'x', sizeof bytes);
    const int sizes[3] = {450, 60, 16};
    const long long expiry = 2000000000LL;

    /* The batch that last changed each owner's counter: the repository
       writes one counter update per owner per batch. */
    int *counted = malloc(sizeof(int) * (size_t)owners);
    if (!counted) return 1;
    for (int o = 0; o < owners; o++) counted[o] = -1;

    double started = now();
    for (int first = 0; first < events; first += batch) {
        check(sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0), db, "begin");
        for (int index = first; index < first + batch && index < events; index++) {
            char owner[64], action[128], marker[64], notification[64];
            int who = (int)(next_random() % (unsigned long long)owners);
            snprintf(owner, sizeof owner, "U#user-%d", who);
            snprintf(action, sizeof action, "A#1#POST#post-%d#user-%llu", index, next_random() % 100000);
            snprintf(marker, sizeof marker, "I#e:bench-%d", index);
            snprintf(notification, sizeof notification, "N#01JZ%010d%06llu", index, next_random() % 1000000);
            const char *reads[2] = {action, marker};
            for (int r = 0; r < 2; r++) {
                sqlite3_bind_text(get, 1, owner, -1, SQLITE_STATIC);
                sqlite3_bind_text(get, 2, reads[r], -1, SQLITE_STATIC);
                step(get, db, "read");
            }
            const char *writes[3] = {notification, action, marker};
            for (int w = 0; w < 3; w++) {
                sqlite3_bind_text(put, 1, owner, -1, SQLITE_STATIC);
                sqlite3_bind_text(put, 2, writes[w], -1, SQLITE_STATIC);
                sqlite3_bind_blob(put, 3, bytes, sizes[w], SQLITE_STATIC);
                sqlite3_bind_int64(put, 4, expiry + index / 1000);
                step(put, db, "write");
            }
            if (counted[who] == first) continue;
            counted[who] = first;
            sqlite3_bind_text(get, 1, owner, -1, SQLITE_STATIC);
            sqlite3_bind_text(get, 2, "C", -1, SQLITE_STATIC);
            step(get, db, "read counter");
            sqlite3_bind_text(put, 1, owner, -1, SQLITE_STATIC);
            sqlite3_bind_text(put, 2, "C", -1, SQLITE_STATIC);
            sqlite3_bind_blob(put, 3, bytes, 12, SQLITE_STATIC);
            sqlite3_bind_null(put, 4);
            step(put, db, "counter");
        }
        check(sqlite3_exec(db, "COMMIT", 0, 0, 0), db, "commit");
    }
    double elapsed = now() - started;
    printf("{\"events\":%d,\"batch\":%d,\"owners\":%d,\"checkpoints\":%s,\"events_per_second\":%.0f}\n",
           events, batch, owners, checkpoint ? "true" : "false", events / elapsed);

    free(counted);
    sqlite3_finalize(get);
    sqlite3_finalize(put);
    sqlite3_close(db);
    char sidecar[4200];
    unlink(path);
    snprintf(sidecar, sizeof sidecar, "%s-wal", path);
    unlink(sidecar);
    snprintf(sidecar, sizeof sidecar, "%s-shm", path);
    unlink(sidecar);
    return 0;
}
