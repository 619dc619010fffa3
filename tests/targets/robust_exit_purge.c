/* jemalloc's purge at thread exit, bounded (lib/host_runtime.c, ml__host_tcache_decay). A thread
 * that leaves its arena with no thread and at most 4 MiB of dirty pages leaves them there for
 * the next thread the arena is given; one that leaves more has them all purged, as jemalloc does.
 * Read through the exported mallctl, after an epoch refresh:
 * 1. jemalloc's page is 4096 bytes (the unit memlimits counts dirty pages in);
 * 2. a thread that allocated and freed 1 MiB in 1 KiB blocks leaves its arena (not the main
 *    thread's, and with no thread) with its dirty pages: more than 0, at most 4 MiB;
 * 3. a thread that allocated and freed 32 MiB in 4 KiB blocks leaves its arena with none.
 * Before the bound, step 2 read 0 dirty pages: jemalloc purged every arena its last thread left.
 *
 * usage: robust_exit_purge; prints the figures; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define KEEP ((size_t)4 << 20)

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static mallctl_fn ctl;

static void fail(const char *what)
{
    fprintf(stderr, "robust_exit_purge: %s\n", what);
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

struct churn {
    size_t bytes, block;
    unsigned arena;
};

static void *churn(void *arg)
{
    struct churn *c = arg;
    size_t n = c->bytes / c->block;
    char **blocks = malloc(n * sizeof *blocks);
    if (blocks == NULL) fail("malloc");
    for (size_t i = 0; i < n; i++)
        if ((blocks[i] = malloc(c->block)) == NULL)
            fail("malloc");
        else
            blocks[i][0] = (char)i;
    for (size_t i = 0; i < n; i++)
        free(blocks[i]);
    free(blocks);
    c->arena = read_unsigned("thread.arena");
    return NULL;
}

/* Runs a thread that allocates and frees `bytes` in blocks of `block`; returns the dirty pages
 * and the threads of the arena it used, after it exited. */
static size_t after_thread(size_t bytes, size_t block, unsigned *arena, unsigned *nthreads)
{
    struct churn c = {bytes, block, 0};
    pthread_t t;
    if (pthread_create(&t, NULL, churn, &c) != 0 || pthread_join(t, NULL) != 0) fail("thread");
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    if (ctl("epoch", &epoch, &len, &epoch, len) != 0) fail("epoch");
    char name[64];
    snprintf(name, sizeof name, "stats.arenas.%u.nthreads", c.arena);
    *nthreads = read_unsigned(name);
    snprintf(name, sizeof name, "stats.arenas.%u.pdirty", c.arena);
    *arena = c.arena;
    return read_size(name);
}

int main(void)
{
    ctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    if (ctl == NULL) fail("no mallctl: not preloaded");
    size_t page = read_size("arenas.page");
    if (page != 4096) fail("jemalloc's page is not 4096 bytes");
    unsigned main_arena = read_unsigned("thread.arena"), arena, nthreads;

    size_t kept = after_thread((size_t)1 << 20, 1024, &arena, &nthreads);
    printf("small: arena %u (main %u), %u threads, %zu dirty pages\n", arena, main_arena, nthreads,
           kept);
    if (arena == main_arena || nthreads != 0) fail("the thread did not leave an arena of its own");
    if (kept == 0) fail("the arena its last thread left with 1 MiB of dirty pages was purged");
    if (kept * page > KEEP) fail("more than 4 MiB of dirty pages kept");

    size_t purged = after_thread((size_t)32 << 20, 4096, &arena, &nthreads);
    printf("large: arena %u, %u threads, %zu dirty pages\n", arena, nthreads, purged);
    if (arena == main_arena || nthreads != 0) fail("the thread did not leave an arena of its own");
    if (purged != 0) fail("the arena its last thread left with 32 MiB of dirty pages kept them");
    return 0;
}
