/* Target for tests/test_tasks.c: the global memory limit. Tasks under it are interrupted before
 * they allocate 256 KiB more once the live heap is over it, on every thread, blocked ones woken;
 * it comes from MEMLIMITS_GLOBAL; back under it, tasks run normally. Linked with -lmemlimits,
 * built with -fno-builtin; `tasks_global NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include "tasks_common.h"

static void global_limit_interrupts_within_256k(void)
{
    const uint64_t limit = 64 * MIB;
    size_t block = 1000;
    void *probe = malloc(block);
    size_t usable = malloc_usable_size(probe);
    free(probe);
    EXPECT(ml_global_memory_limit() == ML_UNLIMITED, "default global limit %llu",
           (unsigned long long)ml_global_memory_limit());
    ml_set_global_memory_limit(limit);
    EXPECT_U64(ml_global_memory_limit(), limit);
    uint64_t baseline = ml_heap_live();
    EXPECT(baseline < limit / 2, "baseline %llu", (unsigned long long)baseline);
    size_t crossing = (size_t)((limit - baseline) / usable); /* live > limit after this one */
    list_cap = 2 * (size_t)(limit / block);
    list_err = 0;
    uint64_t allocated = 0;
    ml_limits limits = {0, 1, NULL, 0};
    ml_status st = ml_run(&limits, task_build_list, &block, &allocated);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(list_err == ENOMEM, "errno %d", list_err);
    size_t interrupt = list_built; /* index of the first NULL */
    EXPECT(interrupt > crossing, "interrupted at block %zu, before the heap crossed at block %zu",
           interrupt, crossing);
    uint64_t after = interrupt > crossing ? (uint64_t)(interrupt - crossing - 1) * block : 0;
    say("info usable %zu crossing %zu interrupt %zu bytes_after_crossing %llu\n", usable, crossing,
        interrupt, (unsigned long long)after);
    EXPECT(after < 256 * KIB, "%llu bytes allocated after the heap exceeded the limit",
           (unsigned long long)after);
    EXPECT_U64(allocated, (uint64_t)list_built * block);

    /* Still over the limit: a new task starts interrupted. */
    first_null = 0;
    st = ml_limit_global_memory(task_first, NULL);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(first_null && first_err == ENOMEM, "first allocation of a task started over the limit");

    /* Back under the limit: a new task runs normally. */
    list_free();
    list_cap = 1000;
    st = ml_limit_global_memory(task_build_list, &block);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(list_built, 1000);
    list_free();

    ml_set_global_memory_limit(ML_UNLIMITED);
    EXPECT_U64(ml_global_memory_limit(), ML_UNLIMITED);
}

/* Run with MEMLIMITS_GLOBAL=16M: the default global memory limit comes from the environment. */
static void global_limit_from_environment(void)
{
    EXPECT_U64(ml_global_memory_limit(), 16 * MIB);
    size_t block = 1000;
    list_cap = 64 * 1024; /* 64 MB: well past the limit */
    list_err = 0;
    ml_status st = ml_limit_global_memory(task_build_list, &block);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(list_err == ENOMEM && list_built < 17 * 1024, "%zu blocks, errno %d", list_built,
           list_err);
    list_free();
}

/* Tasks on other threads are interrupted too, each before it allocates 256 KiB more. */
#define GLOBAL_THREADS 3
typedef struct gworker {
    spin s; /* its seen_flag: global_crossed */
    int done;
    ml_status status;
} gworker;

static int global_crossed; /* set once the heap is over the limit to stay */
static gworker gworkers[GLOBAL_THREADS];

static void *gworker_main(void *arg)
{
    gworker *g = arg;
    g->status = ml_limit_global_memory(task_spin, &g->s);
    __atomic_store_n(&g->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void global_limit_interrupts_every_thread(void)
{
    const uint64_t limit = ml_heap_live() + 32 * MIB;
    ml_set_global_memory_limit(limit);
    global_crossed = 0;
    pthread_t th[GLOBAL_THREADS];
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        gworkers[i] = (gworker){.s = {.seen_flag = &global_crossed}};
        pthread_create(&th[i], NULL, gworker_main, &gworkers[i]);
    }
    for (int i = 0; i < GLOBAL_THREADS; i++)
        EXPECT(wait_flag(&gworkers[i].s.started, 10), "worker %d did not start", i);
    /* This thread has no task: it builds a list past the limit, looking closely near it. */
    size_t n = 0;
    for (;;) {
        node *b = malloc(1000);
        EXPECT(b != NULL, "the thread without a task got NULL");
        if (b == NULL) break;
        b->next = list_head;
        list_head = b;
        n++;
        /* over by more than the other threads' blocks in flight (64 bytes each), so that the
         * heap stays over the limit from here on */
        if ((uint64_t)n * 1024 + 2 * MIB >= 32 * MIB && ml_heap_live() > limit + 4 * KIB) break;
    }
    __atomic_store_n(&global_crossed, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(gworkers[i].status, ML_MEMORY_LIMIT);
        EXPECT(!gworkers[i].s.timed_out, "worker %d was not interrupted", i);
        EXPECT(gworkers[i].s.bytes_after_seen < 256 * KIB,
               "worker %d allocated %llu bytes after the heap crossed", i,
               (unsigned long long)gworkers[i].s.bytes_after_seen);
        say("info worker %d bytes_after_crossing %llu\n", i,
            (unsigned long long)gworkers[i].s.bytes_after_seen);
    }
    list_free();
    /* Back under: tasks on other threads run normally. */
    global_crossed = 0;
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        gworkers[i] = (gworker){.s = {.seen_flag = &global_crossed}};
        pthread_create(&th[i], NULL, gworker_main, &gworkers[i]);
    }
    for (int i = 0; i < GLOBAL_THREADS; i++)
        wait_flag(&gworkers[i].s.started, 10);
    sleep_ms(50);
    for (int i = 0; i < GLOBAL_THREADS; i++)
        EXPECT(!__atomic_load_n(&gworkers[i].done, __ATOMIC_ACQUIRE),
               "worker %d, started after the heap was freed back under the limit, was "
               "interrupted (status %d)",
               i, (int)gworkers[i].status);
    /* set the global limit below the heap: every running task is interrupted */
    ml_set_global_memory_limit(ml_heap_live() / 2);
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(gworkers[i].status, ML_MEMORY_LIMIT);
        EXPECT(!gworkers[i].s.timed_out, "worker %d was not interrupted by a lowered limit", i);
    }
    ml_set_global_memory_limit(ML_UNLIMITED);
    list_cap = 100;
    size_t block = 1000;
    EXPECT_STATUS(ml_limit_global_memory(task_build_list, &block), ML_OK);
    list_free();
}

/* An ML_WAKE global-memory task blocked in read is woken when another thread crosses the limit. */
static void global_limit_wakes_blocked_task(void)
{
    static waiter w;
    ml_set_global_memory_limit(ml_heap_live() + 16 * MIB);
    w = (waiter){.kind = BLOCK_READ, .use_task = 1, .global = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    for (size_t i = 0; i < 24 * 1024; i++) { /* 24 MiB in 1 KiB blocks, no task */
        node *b = malloc(1000);
        if (b == NULL) break;
        b->next = list_head;
        list_head = b;
    }
    EXPECT(wait_flag(&w.done, 2.0), "the blocked global-memory task was not woken");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    EXPECT_STATUS(w.status, ML_MEMORY_LIMIT);
    list_free();
    ml_set_global_memory_limit(ML_UNLIMITED);
}

static const scenario scenarios[] = {
    SCENARIO(global_limit_interrupts_within_256k),
    SCENARIO(global_limit_from_environment),
    SCENARIO(global_limit_interrupts_every_thread),
    SCENARIO(global_limit_wakes_blocked_task),
};

SCENARIOS_MAIN(scenarios)
