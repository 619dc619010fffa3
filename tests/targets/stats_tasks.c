/* Target for tests/test_stats.c: the task counts of ml_stat. Runs tasks whose outcome is known
 * (ML_OK, and an interrupt by each kind of limit, nested tasks included) and calls that are
 * errors, between two snapshots; prints each call's status as "status.I CODE" and the snapshots
 * as "WHEN.INDEX VALUE" (stats_common.h). Linked with -lmemlimits, built with -fno-builtin, run
 * preloaded. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>

#include "stats_common.h"

/* Allocates and frees one small block: within any limit of 1 KiB or more. */
static void task_small(void *arg)
{
    (void)arg;
    void *p = malloc(100);
    stats_sink = p;
    free(p);
}

/* Allocates 64 blocks of 100 bytes, or up to the first NULL, then frees them: over a limit of
 * 1000 bytes. */
static void task_over(void *arg)
{
    (void)arg;
    void *p[64];
    int n = 0;
    while (n < 64 && (p[n] = malloc(100)) != NULL)
        stats_sink = p[n++];
    while (n > 0)
        free(p[--n]);
}

/* Asks for 16 MiB: refused under a heap cap 1 MiB above the live heap. */
static void task_too_big(void *arg)
{
    (void)arg;
    void *p = malloc(16 << 20);
    stats_sink = p;
    free(p);
}

static ml_status inner_status;

/* Runs task_over as a nested task with a generous limit of its own: the enclosing limit of 1000
 * bytes interrupts both (the inner task returns ML_OUTER_LIMIT, the enclosing one its own). */
static void task_nested(void *arg)
{
    (void)arg;
    inner_status = ml_limit_allocations(1 << 20, task_over, NULL, NULL);
}

int main(void)
{
    if (!ml_active()) {
        say("memlimits does not own malloc\n");
        return 4;
    }
    ml_status st[16];
    int n = 0;
    ml_stats base = snapshot(1);
    st[n++] = ml_limit_allocations(1 << 20, task_small, NULL, NULL); /* ML_OK */
    ml_limits none = {0, 0, NULL, 0};
    st[n++] = ml_run(&none, task_small, NULL, NULL); /* ML_OK */
    for (int i = 0; i < 3; i++)
        st[n++] = ml_limit_allocations(1000, task_over, NULL, NULL); /* ML_ALLOCATION_LIMIT */
    st[n++] = ml_limit_allocations(1000, task_nested, NULL, NULL);   /* ML_ALLOCATION_LIMIT */
    st[n++] = inner_status;                                          /* ML_OUTER_LIMIT */
    ml_token *token = ml_token_create();
    if (token == NULL) return 3;
    ml_token_set(token);
    st[n++] = ml_limit_with_token(token, task_small, NULL); /* ML_TOKEN */
    void *held = malloc(4096); /* the live heap is now over a limit of 1 byte */
    stats_sink = held;
    ml_set_global_memory_limit(1);
    for (int i = 0; i < 2; i++)
        st[n++] = ml_limit_global_memory(task_small, NULL); /* ML_MEMORY_LIMIT */
    ml_set_global_memory_limit(ML_UNLIMITED);
    free(held);
    ml_set_heap_cap(ml_heap_live() + (1 << 20));
    st[n++] = ml_limit_allocations(0, task_too_big, NULL, NULL); /* ML_HEAP_CAP */
    ml_set_heap_cap(ML_UNLIMITED);
    /* Errors: no task runs. */
    st[n++] = ml_run(NULL, task_small, NULL, NULL);
    st[n++] = ml_limit_with_token(NULL, task_small, NULL);
    ml_limits bad = {0, 0, NULL, 1u << 7};
    st[n++] = ml_run(&bad, task_small, NULL, NULL);
    ml_stats end = snapshot(1);
    ml_token_destroy(token);
    for (int i = 0; i < n; i++)
        say("status.%d %d\n", i, (int)st[i]);
    print_snapshot("base", &base);
    print_snapshot("end", &end);
    return 0;
}
