/* Target for tests/test_stats.c: ml_stat and ml_quick_stat around known allocations. Linked
 * with -lmemlimits (it calls the API), built with -fno-builtin (no malloc/free pair folded away),
 * and run preloaded. Prints tallies as "NAME VALUE" lines and snapshots as "WHEN.INDEX VALUE"
 * (stats_common.h), all after the measurements.
 *
 * usage: stats_counts MODE, MODE one of
 *   one          one thread allocates 2000 blocks of 64 B to 32 KiB, frees them; then reallocs
 *                one block;
 *   threads      four threads, created before the baseline, allocate 500 blocks each, park
 *                (quick and exact snapshots), and exit holding them; the main thread frees
 *                them;
 *   budget       the main thread and then a thread that exits allocate known blocks (run it
 *                with MEMLIMITS_ALLOC);
 *   refusals     256 KiB blocks until one is refused, then three more attempts (run it with
 *                MEMLIMITS_HEAP or MEMLIMITS_ALLOC and the enomem action);
 *   print        100 blocks allocated, 50 freed, two tasks run, then an exact snapshot, and
 *                ml_print_stats on stdout. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stats_common.h"

#define BLOCKS 2000
static void *blocks[BLOCKS];

static int one_mode(void)
{
    ml_active(); /* its first call allocates: before the baseline */
    ml_stats base = snapshot(1);
    tally t = {0, 0, 0};
    fill(blocks, BLOCKS, 42, &t);
    ml_stats quick = snapshot(0);
    ml_stats full = snapshot(1);
    ml_stats again = snapshot(1);
    uint64_t freed = 0;
    drain(blocks, BLOCKS, &freed);
    ml_stats end = snapshot(1);

    void *p = malloc(100);
    uint64_t old_usable = malloc_usable_size(p);
    ml_stats before_realloc = snapshot(1);
    void *q = realloc(p, 5000);
    if (q == NULL) return 3;
    stats_sink = q;
    uint64_t new_usable = malloc_usable_size(q);
    ml_stats after_realloc = snapshot(1);
    free(q);

    say("requested %llu\ncount %llu\nusable %llu\nfreed %llu\nold_usable %llu\nnew_usable %llu\n",
        (unsigned long long)t.requested, (unsigned long long)t.count, (unsigned long long)t.usable,
        (unsigned long long)freed, (unsigned long long)old_usable, (unsigned long long)new_usable);
    print_snapshot("base", &base);
    print_snapshot("quick", &quick);
    print_snapshot("full", &full);
    print_snapshot("again", &again);
    print_snapshot("end", &end);
    print_snapshot("before_realloc", &before_realloc);
    print_snapshot("after_realloc", &after_realloc);
    return 0;
}

#define THREADS 4
#define PER_THREAD (BLOCKS / THREADS)

static tally thread_tally[THREADS];
static pthread_barrier_t started, go, allocated, measured;

static void *worker(void *arg)
{
    int i = (int)(intptr_t)arg;
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&go);
    fill(blocks + i * PER_THREAD, PER_THREAD, 100 + (uint64_t)i, &thread_tally[i]);
    pthread_barrier_wait(&allocated);
    pthread_barrier_wait(&measured);
    return NULL; /* exits holding its blocks */
}

static int threads_mode(void)
{
    ml_active();
    ml_stats pre = snapshot(1);
    pthread_t th[THREADS];
    pthread_barrier_init(&started, NULL, THREADS + 1);
    pthread_barrier_init(&go, NULL, THREADS + 1);
    pthread_barrier_init(&allocated, NULL, THREADS + 1);
    pthread_barrier_init(&measured, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) return 3;
    /* Creating a thread allocates in this one (glibc's TLS vector): before the baseline, which
     * also reconciles every thread, so that from here on every thread only allocates. */
    pthread_barrier_wait(&started);
    ml_stats base = snapshot(1);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&allocated);
    ml_stats quick = snapshot(0); /* every thread parked, alive */
    ml_stats mid = snapshot(1);
    pthread_barrier_wait(&measured);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ml_stats full = snapshot(1); /* the threads have exited, their blocks are live */
    uint64_t freed = 0;
    drain(blocks, BLOCKS, &freed);
    ml_stats end = snapshot(1);

    tally t = {0, 0, 0};
    for (int i = 0; i < THREADS; i++) {
        t.requested += thread_tally[i].requested;
        t.count += thread_tally[i].count;
        t.usable += thread_tally[i].usable;
    }
    say("threads %d\nrequested %llu\ncount %llu\nusable %llu\nfreed %llu\n", THREADS,
        (unsigned long long)t.requested, (unsigned long long)t.count, (unsigned long long)t.usable,
        (unsigned long long)freed);
    print_snapshot("pre", &pre);
    print_snapshot("base", &base);
    print_snapshot("quick", &quick);
    print_snapshot("mid", &mid);
    print_snapshot("full", &full);
    print_snapshot("end", &end);
    return 0;
}

static tally budget_thread_tally;

static void *budget_worker(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&go);
    fill(blocks + BLOCKS / 2, BLOCKS / 2, 7, &budget_thread_tally);
    return NULL;
}

static int budget_mode(void)
{
    ml_active();
    pthread_t th;
    pthread_barrier_init(&started, NULL, 2);
    pthread_barrier_init(&go, NULL, 2);
    if (pthread_create(&th, NULL, budget_worker, NULL) != 0) return 3;
    pthread_barrier_wait(&started); /* registered, holding no lease yet */
    ml_stats base = snapshot(1);
    ml_stats base_quick = snapshot(0);
    tally t = {0, 0, 0};
    fill(blocks, BLOCKS / 2, 3, &t);
    ml_stats mid = snapshot(1);
    ml_stats mid_quick = snapshot(0);
    pthread_barrier_wait(&go);
    pthread_join(th, NULL);
    ml_stats end = snapshot(1);
    uint64_t freed = 0;
    drain(blocks, BLOCKS, &freed);
    say("main_requested %llu\nthread_requested %llu\n", (unsigned long long)t.requested,
        (unsigned long long)budget_thread_tally.requested);
    print_snapshot("base", &base);
    print_snapshot("base_quick", &base_quick);
    print_snapshot("mid", &mid);
    print_snapshot("mid_quick", &mid_quick);
    print_snapshot("end", &end);
    return 0;
}

static int refusals_mode(void)
{
    ml_active();
    ml_stats before = snapshot(1);
    int got = 0, nulls = 0;
    while (got < BLOCKS && (blocks[got] = malloc(256 << 10)) != NULL)
        stats_sink = blocks[got++];
    if (got == BLOCKS) return 3; /* no limit refused anything */
    for (int i = 0; i < 3; i++)
        if (malloc(256 << 10) == NULL) nulls++;
    ml_stats after = snapshot(1);
    for (int i = 0; i < got; i++)
        free(blocks[i]);
    say("got %d\nnulls %d\n", got, nulls);
    print_snapshot("before", &before);
    print_snapshot("after", &after);
    return 0;
}

static void task_alloc(void *arg)
{
    (void)arg;
    stats_sink = malloc(1000);
    free(stats_sink);
}

static int print_mode(void)
{
    ml_active();
    tally t = {0, 0, 0};
    fill(blocks, 100, 9, &t); /* some heap to print, half of it freed: live below peak */
    uint64_t freed = 0;
    drain(blocks, 50, &freed);
    ml_limit_allocations(1 << 20, task_alloc, NULL, NULL);
    ml_limit_allocations(10, task_alloc, NULL, NULL);
    ml_stats s = snapshot(1);
    ml_print_stats(1);
    print_snapshot("raw", &s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!ml_active()) {
        say("memlimits does not own malloc\n");
        return 4;
    }
    if (strcmp(mode, "one") == 0) return one_mode();
    if (strcmp(mode, "threads") == 0) return threads_mode();
    if (strcmp(mode, "budget") == 0) return budget_mode();
    if (strcmp(mode, "refusals") == 0) return refusals_mode();
    if (strcmp(mode, "print") == 0) return print_mode();
    say("usage: stats_counts one|threads|budget|refusals|print\n");
    return 2;
}
