/* The bounds memlimits puts on jemalloc's purging (lib/host.h, "Purging"), read through the
 * exported mallctl after an epoch refresh. jemalloc's page must be 4096 bytes (the unit memlimits
 * counts pages in).
 *
 * `exit`: the purge at thread exit.
 * 1. A thread that allocated and freed 1 MiB in 1 KiB blocks leaves its arena (not the main
 *    thread's, and with no thread) with its dirty pages: more than 0, at most 4 MiB.
 * 2. A thread that allocated and freed 32 MiB in blocks of 1 MiB kept apart (by blocks that
 *    outlive it) leaves its arena with some of its dirty pages: more than 0, at most 4 MiB.
 *    (The purge takes whole extents: 32 MiB freed in one piece would go whole.)
 * Before the bound, step 1 read 0 dirty pages (jemalloc purged every arena its last thread left);
 * before the bound purged only down to 4 MiB, step 2 read 0.
 *
 * `grow`: the purge before an arena takes new pages. On a thread of its own, 32 blocks of 1 MiB
 * are allocated and every other one freed, which leaves 16 dirty extents of 1 MiB each, none next
 * to another.
 * 3. A block of 4 MiB, which none of them fits, keeps the arena's active and dirty pages within
 *    5/4 of its peak: no dirty page is purged.
 * 4. A block of 12 MiB would take them past it: the least recently freed are purged until the
 *    active and dirty pages are within 5/4 of the peak, plus 1 MiB; some stay dirty (at least
 *    4 MiB). jemalloc's statistics count the purge as its own decay would: dirty_purged grows by
 *    the pages purged, and mapped by the new block less them.
 * Before the bound, step 4 kept all 16 MiB dirty: 48 MiB against a peak of 32.
 *
 * `never`: the same, run with MALLOC_CONF=dirty_decay_ms:-1 (dirty pages never purged): step 4
 * purges nothing either. Before that was honoured, it purged 8 MiB.
 *
 * usage: robust_purge exit|grow|never; prints the figures; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEP ((size_t)4 << 20)

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static mallctl_fn ctl;

static void fail(const char *what)
{
    fprintf(stderr, "robust_purge: %s\n", what);
    exit(1);
}

static size_t read_size(const char *name)
{
    size_t v = 0, len = sizeof v;
    if (ctl(name, &v, &len, NULL, 0) != 0) fail(name);
    return v;
}

static unsigned read_unsigned(const char *name)
{
    unsigned v = 0;
    size_t len = sizeof v;
    if (ctl(name, &v, &len, NULL, 0) != 0) fail(name);
    return v;
}

static void refresh(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    if (ctl("epoch", &epoch, &len, &epoch, len) != 0) fail("epoch");
}

static size_t arena_stat(unsigned arena, const char *what)
{
    char name[64];
    refresh();
    snprintf(name, sizeof name, "stats.arenas.%u.%s", arena, what);
    return read_size(name);
}

#define SEPARATORS 32

/* A thread that allocates and frees `bytes` in blocks of `block`. With `separate`, a block of
 * 64 KiB follows each, which outlives the thread (the caller frees them): the freed blocks then
 * stay apart, one dirty extent each. */
struct churn {
    size_t bytes, block;
    int separate;
    unsigned arena;
    void *separator[SEPARATORS];
};

static void *churn(void *arg)
{
    struct churn *c = arg;
    size_t n = c->bytes / c->block;
    char **blocks = malloc(n * sizeof *blocks);
    if (c->separate && n > SEPARATORS) fail("more blocks than separators");
    if (blocks == NULL) fail("malloc");
    for (size_t i = 0; i < n; i++) {
        if ((blocks[i] = malloc(c->block)) == NULL) fail("malloc");
        blocks[i][0] = (char)i;
        if (c->separate && (c->separator[i] = malloc(64 << 10)) == NULL) fail("malloc");
    }
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    free(blocks);
    c->arena = read_unsigned("thread.arena");
    return NULL;
}

/* Runs a churn thread; returns the dirty pages and the threads of the arena it used, after it
 * exited. */
static size_t after_thread(size_t bytes, size_t block, int separate, unsigned *arena,
                           unsigned *nthreads)
{
    struct churn c = {bytes, block, separate, 0, {NULL}};
    pthread_t t;
    if (pthread_create(&t, NULL, churn, &c) != 0 || pthread_join(t, NULL) != 0) fail("thread");
    char name[64];
    refresh();
    snprintf(name, sizeof name, "stats.arenas.%u.nthreads", c.arena);
    *nthreads = read_unsigned(name);
    *arena = c.arena;
    size_t dirty = arena_stat(c.arena, "pdirty");
    for (int i = 0; i < SEPARATORS; i++)
        free(c.separator[i]);
    return dirty;
}

static void check_exit(size_t page)
{
    unsigned main_arena = read_unsigned("thread.arena"), arena, nthreads;

    size_t kept = after_thread((size_t)1 << 20, 1024, 0, &arena, &nthreads);
    printf("small: arena %u (main %u), %u threads, %zu dirty pages\n", arena, main_arena, nthreads,
           kept);
    if (arena == main_arena || nthreads != 0) fail("the thread did not leave an arena of its own");
    if (kept == 0) fail("the arena its last thread left with 1 MiB of dirty pages was purged");
    if (kept * page > KEEP) fail("more than 4 MiB of dirty pages kept");

    kept = after_thread((size_t)32 << 20, (size_t)1 << 20, 1, &arena, &nthreads);
    printf("large: arena %u, %u threads, %zu dirty pages\n", arena, nthreads, kept);
    if (arena == main_arena || nthreads != 0) fail("the thread did not leave an arena of its own");
    if (kept == 0)
        fail("the arena its last thread left with 32 MiB of dirty pages was purged whole");
    if (kept * page > KEEP) fail("more than 4 MiB of dirty pages kept");
}

#define MIB ((size_t)1 << 20)
#define BLOCKS 32

static void *grow(void *arg)
{
    size_t page = ((size_t *)arg)[0], mib = MIB / page;
    int never = ((size_t *)arg)[1] != 0;
    unsigned arena = read_unsigned("thread.arena");
    char *block[BLOCKS];
    for (int i = 0; i < BLOCKS; i++)
        if ((block[i] = malloc(MIB)) == NULL) fail("malloc");
    size_t peak = arena_stat(arena, "pactive");
    for (int i = 0; i < BLOCKS; i += 2)
        free(block[i]);
    size_t active = arena_stat(arena, "pactive"), dirty = arena_stat(arena, "pdirty");
    printf("arena %u: peak %zu active %zu dirty %zu pages\n", arena, peak, active, dirty);
    if (dirty < BLOCKS / 2 * mib) fail("the freed blocks are not dirty");

    /* volatile: the compiler may not leave out a block nothing reads. */
    char *volatile four = malloc(4 * MIB);
    if (four == NULL) fail("malloc");
    size_t active4 = arena_stat(arena, "pactive"), dirty4 = arena_stat(arena, "pdirty");
    size_t mapped4 = arena_stat(arena, "mapped"), purged4 = arena_stat(arena, "dirty_purged");
    printf("4 MiB: active %zu dirty %zu pages\n", active4, dirty4);
    if (dirty4 < dirty) fail("dirty pages were purged for a block within the bound");

    char *volatile twelve = malloc(12 * MIB);
    if (twelve == NULL) fail("malloc");
    size_t active12 = arena_stat(arena, "pactive"), dirty12 = arena_stat(arena, "pdirty");
    size_t mapped12 = arena_stat(arena, "mapped"), purged12 = arena_stat(arena, "dirty_purged");
    if (active12 > peak) peak = active12;
    printf("12 MiB: active %zu dirty %zu pages, bound %zu\n", active12, dirty12,
           peak + peak / 4 + mib);
    if (never) {
        if (dirty12 < dirty4) fail("an arena set never to purge was purged");
        goto out;
    }
    if (active12 + dirty12 > peak + peak / 4 + mib)
        fail("the active and dirty pages went past 5/4 of the peak");
    if (dirty12 < 4 * mib) fail("the dirty pages were purged whole");
    /* Counted as jemalloc's decay counts its purges: the pages purged, and the mapped bytes grown
     * by the new block less them (give or take jemalloc's own metadata, well below 1 MiB). */
    long grown = (long)(mapped12 - mapped4),
         expected = (long)((active12 - active4) - (dirty4 - dirty12)) * (long)page;
    printf("12 MiB: %zu pages purged (counted %zu), mapped grew %ld bytes (expected %ld)\n",
           dirty4 - dirty12, purged12 - purged4, grown, expected);
    if (purged12 - purged4 != dirty4 - dirty12) fail("the purged pages were not counted");
    if (labs(grown - expected) > (long)MIB) fail("the mapped bytes do not count the purge");
out:
    free(four);
    free(twelve);
    for (int i = 1; i < BLOCKS; i += 2)
        free(block[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    ctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    if (ctl == NULL) fail("no mallctl: not preloaded");
    size_t page = read_size("arenas.page");
    if (page != 4096) fail("jemalloc's page is not 4096 bytes");
    if (argc == 2 && strcmp(argv[1], "exit") == 0) {
        check_exit(page);
    } else if (argc == 2 && (strcmp(argv[1], "grow") == 0 || strcmp(argv[1], "never") == 0)) {
        size_t arg[2] = {page, strcmp(argv[1], "never") == 0};
        pthread_t t;
        if (pthread_create(&t, NULL, grow, arg) != 0 || pthread_join(t, NULL) != 0) fail("thread");
    } else {
        fail("usage: robust_purge exit|grow|never");
    }
    return 0;
}
