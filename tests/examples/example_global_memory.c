/* Example: a global memory limit (memprof-limits' first example, in C).
 *
 * A worker task builds a list of 100 million 24-byte nodes (2.3 GiB requested, 3.2 GB of heap
 * once jemalloc rounds each node up to 32 bytes) under a 1 GiB global memory limit. The task is
 * interrupted shortly after the live heap crosses 1 GiB; the monitor frees what the worker built,
 * the heap is back under the limit, and a second, smaller task then runs to completion.
 *
 * Delivery is the default, ENOMEM: once interrupted, the worker's malloc returns NULL, and the
 * worker simply returns. There is no garbage collector, so the worker keeps its partial list
 * reachable (here, in a global) for the monitor to free: that is what "recovering" means in C.
 *
 * It prints what it observes: how each task ended (interrupted or not, and ml_run's status) and
 * the live heap against the limit, in bytes, at each step. Build: cc example_global_memory.c
 * -lmemlimits. Exits 0 when every check below holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "memlimits.h"

#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define LIMIT (1 * GiB)
/* The promise of the global memory limit: a task under it is interrupted before it allocates
 * 256 KiB more once the live heap is over the limit. Here a 24-byte request takes 32 bytes of
 * heap, so 256 KiB of requests are at most 256 * 32 / 24 KiB of heap. */
#define PROMISE (((uint64_t)256 << 10) * 32 / 24)

struct node {
    struct node *next;
    uint64_t index, payload; /* 24 bytes in all, like an OCaml cons cell of 3 words */
};

/* The worker's output, kept where the monitor can reach it. */
static struct node *list;
static uint64_t built;

/* The worker: prepends `*arg` nodes to `list`, or stops at the first refused allocation. */
static void build_list(void *arg)
{
    uint64_t n = *(const uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++) {
        struct node *node = malloc(sizeof *node);
        if (node == NULL) return; /* interrupted: the monitor will free the list */
        node->next = list;
        node->index = i;
        node->payload = i * 3;
        list = node;
        built++;
    }
}

/* How a task ended, from ml_run's status: a positive status says why it was interrupted. */
static const char *ending(ml_status status)
{
    return status > 0 ? "interrupted" : status == ML_OK ? "not interrupted" : "refused";
}

/* One line: the live heap `live` seen at `when`, and where it stands against the limit. */
static void print_heap(const char *when, uint64_t live)
{
    printf("%s: live heap %llu bytes (%.1f MiB), %s the limit by %llu bytes\n", when,
           (unsigned long long)live, (double)live / MiB, live > LIMIT ? "over" : "under",
           (unsigned long long)(live > LIMIT ? live - LIMIT : LIMIT - live));
}

static void free_list(void)
{
    while (list != NULL) {
        struct node *next = list->next;
        free(list);
        list = next;
    }
    built = 0;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                      \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    CHECK(ml_active()); /* linked with -lmemlimits: memlimits owns malloc */
    ml_set_global_memory_limit(LIMIT);
    printf("global memory limit: %llu bytes (%llu MiB)\n", (unsigned long long)LIMIT,
           (unsigned long long)(LIMIT / MiB));

    /* The monitor runs the worker as a task under the global memory limit. */
    uint64_t n = 100000000;
    ml_status status = ml_limit_global_memory(build_list, &n);
    uint64_t live = ml_heap_live();
    printf("first task: %s (%s) after %llu of %llu nodes\n", ending(status), ml_strstatus(status),
           (unsigned long long)built, (unsigned long long)n);
    print_heap("at the interrupt", live);
    CHECK(status == ML_MEMORY_LIMIT);
    CHECK(built < n);
    CHECK(live > LIMIT);            /* never interrupted before the heap crossed the limit */
    CHECK(live <= LIMIT + PROMISE); /* and soon after it did */

    /* Recover: free what the interrupted task left behind. */
    free_list();
    live = ml_heap_live();
    print_heap("after freeing the list", live);
    CHECK(live <= LIMIT);

    /* With the heap back under the limit, a new task runs normally. */
    n = 10000000; /* 240 MB requested, 320 MB of heap */
    status = ml_limit_global_memory(build_list, &n);
    live = ml_heap_live();
    printf("second task: %s (%s) after %llu of %llu nodes\n", ending(status), ml_strstatus(status),
           (unsigned long long)built, (unsigned long long)n);
    print_heap("after the second task", live);
    CHECK(status == ML_OK);
    CHECK(built == n);
    CHECK(live <= LIMIT);
    free_list();

    printf("global memory example: ok\n");
    return 0;
}
