/* Example: an allocation limit (memprof-limits' second example, in C).
 *
 * A worker allocates 2.4 GB in total — 300 million 8-byte words, as in the OCaml example — as
 * 100,000 lists of 1,000 nodes of 24 bytes, each list freed as soon as it is built, so that only
 * 24 KB are live at a time. Allocation limits count allocations, not frees: they measure work.
 *
 * Under a limit of 330 million words (2.64 GB) the worker completes, and ml_limit_allocations
 * reports the exact number of bytes it requested: 2,400,000,000, where memprof-limits gives a
 * statistical estimate. Under 290 million words (2.32 GB) it is interrupted, at exactly the
 * allocation that would cross the limit, the same one on every run.
 *
 * Build: cc example_allocation_limit.c -lmemlimits. Exits 0 when every check below holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "memlimits.h"

#define WORD 8 /* bytes in an OCaml word on 64-bit */
#define LISTS 100000
#define NODES 1000

struct node {
    struct node *next;
    uint64_t list, index; /* 24 bytes: 3 words, like an OCaml cons cell with its header */
};

/* Builds a list of NODES nodes and frees it; returns 0, or -1 at a refused allocation (after
 * freeing the partial list: nothing leaks from an interrupted task). */
static int build_and_free(uint64_t list_no, uint64_t *checksum)
{
    struct node *list = NULL;
    int rc = 0;
    for (uint64_t i = 0; i < NODES; i++) {
        struct node *node = malloc(sizeof *node);
        if (node == NULL) {
            rc = -1;
            break;
        }
        node->next = list;
        node->list = list_no;
        node->index = i;
        list = node;
    }
    while (list != NULL) {
        struct node *next = list->next;
        *checksum += list->index; /* read the nodes, so that the compiler keeps them */
        free(list);
        list = next;
    }
    return rc;
}

struct work {
    uint64_t lists_done;
    uint64_t checksum;
};

/* The worker: allocates LISTS lists, or stops when interrupted (ENOMEM delivery). */
static void worker(void *arg)
{
    struct work *w = arg;
    for (uint64_t l = 0; l < LISTS; l++) {
        if (build_and_free(l, &w->checksum) != 0) return;
        w->lists_done++;
    }
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                      \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

/* The monitor: runs the worker under a limit of `words` 8-byte words; prints and returns the
 * status, and the exact bytes allocated in `*allocated`. */
static ml_status run(uint64_t words, uint64_t *allocated, struct work *w)
{
    ml_status status = ml_limit_allocations(words * WORD, worker, w, allocated);
    if (status == ML_OK)
        printf("limit %llu Mw: success (alloc. %llu bytes = %llu kw, %llu lists)\n",
               (unsigned long long)(words / 1000000), (unsigned long long)*allocated,
               (unsigned long long)(*allocated / WORD / 1000), (unsigned long long)w->lists_done);
    else
        printf("limit %llu Mw: out of fuel: %s (alloc. %llu bytes, %llu lists)\n",
               (unsigned long long)(words / 1000000), ml_strstatus(status),
               (unsigned long long)*allocated, (unsigned long long)w->lists_done);
    return status;
}

int main(void)
{
    CHECK(ml_active()); /* linked with -lmemlimits: memlimits owns malloc */
    const uint64_t total = (uint64_t)LISTS * NODES * sizeof(struct node); /* 2.4e9 bytes */
    const uint64_t expected_checksum = (uint64_t)LISTS * (NODES * (NODES - 1) / 2);

    /* 330 million words: enough, and the count is exact. */
    uint64_t allocated = 0;
    struct work w = {0, 0};
    ml_status status = run(330000000, &allocated, &w);
    CHECK(status == ML_OK);
    CHECK(allocated == total);
    CHECK(w.lists_done == LISTS && w.checksum == expected_checksum);

    /* 290 million words: not enough. The task is refused the first allocation that would take
     * it over the limit, so its count is the largest multiple of 24 bytes within the limit. */
    uint64_t limit = (uint64_t)290000000 * WORD;
    w = (struct work){0, 0};
    status = run(290000000, &allocated, &w);
    CHECK(status == ML_ALLOCATION_LIMIT);
    CHECK(allocated <= limit);
    CHECK(allocated == limit / sizeof(struct node) * sizeof(struct node));
    CHECK(w.lists_done < LISTS);

    printf("allocation limit example: ok\n");
    return 0;
}
