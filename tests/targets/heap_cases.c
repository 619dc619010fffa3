/* Target for tests/test_heap.c: single cases of the heap cap, measured on the blocks themselves.
 * Run preloaded under MEMLIMITS_HEAP. Prints "key value" lines.
 *
 * usage: heap_cases MODE [ARGS]
 *   size SIZE COUNT  malloc(SIZE) until it fails or COUNT blocks are held; prints the baseline
 *                    live heap, the cap, the blocks got, the sum of their usable sizes, whether
 *                    a malloc failed and its errno.
 *   aligned SIZE ALIGN COUNT  the same with posix_memalign(ALIGN, SIZE).
 *   realloc          holds a block of 60% of the cap and reallocs it to 90%: the old block is
 *                    given back by the realloc, so it fits. Prints "realloc ok" or "realloc null".
 *   free_elsewhere   fills the heap with 1 MiB blocks until one fails; another thread, which
 *                    stays alive and allocates nothing more, frees every other block; then one
 *                    more 1 MiB malloc must succeed. Prints "blocks N", "freed F", "again ok|null".
 *   idle SIZE        a second thread allocates one block (its heap interval is then armed far
 *                    below the cap) and waits; the main thread fills the heap with SIZE-byte
 *                    blocks until one fails; then the second thread allocates SIZE-byte blocks
 *                    until one fails. Prints the baseline, the cap, and both threads' usable
 *                    sums. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"

#define MIB ((size_t)1 << 20)
#define MAX_BLOCKS 4096

static uint64_t (*heap_live)(void);
static uint64_t (*heap_cap)(void);
static void *blocks[MAX_BLOCKS];

/* malloc(size), or posix_memalign(align, size) when align > 0, until it fails or `limit`
 * blocks are held (never freed: the process exits). */
static uint64_t fill(size_t size, size_t align, uint64_t limit, uint64_t *count, int *failed,
                     int *err)
{
    uint64_t usable = 0, n = 0;
    *failed = 0;
    *err = 0;
    for (; n < limit; n++) {
        errno = 0;
        void *p = NULL;
        if (align == 0) {
            p = malloc(size);
        } else {
            int rc = posix_memalign(&p, align, size);
            if (rc != 0) errno = rc;
        }
        if (p == NULL) {
            *failed = 1;
            *err = errno;
            break;
        }
        usable += malloc_usable_size(p);
    }
    *count = n;
    return usable;
}

static int run_size(size_t size, size_t align, uint64_t limit)
{
    uint64_t base = heap_live(), count;
    int failed, err;
    uint64_t usable = fill(size, align, limit, &count, &failed, &err);
    say("base %llu\ncap %llu\nblocks %llu\nusable %llu\nfailed %d\nerrno %d\n",
        (unsigned long long)base, (unsigned long long)heap_cap(), (unsigned long long)count,
        (unsigned long long)usable, failed, err);
    return 0;
}

static int run_realloc(void)
{
    uint64_t cap = heap_cap();
    char *p = malloc(cap / 10 * 6);
    if (p == NULL) return 3;
    memset(p, 'x', 4096);
    errno = 0;
    char *q = realloc(p, cap / 10 * 9);
    int kept = q != NULL && q[0] == 'x' && q[4095] == 'x';
    say("realloc %s errno %d kept %d\n", q != NULL ? "ok" : "null", q != NULL ? 0 : errno, kept);
    return 0;
}

static pthread_barrier_t step;
static int nblocks;

static void *freer(void *arg)
{
    (void)arg;
    void *volatile first = malloc(16); /* registered and allocating once, like any thread */
    free(first);
    pthread_barrier_wait(&step); /* 1: the main thread has filled the heap */
    pthread_barrier_wait(&step);
    for (int i = 0; i < nblocks; i += 2)
        free(blocks[i]);
    pthread_barrier_wait(&step); /* 2: freed; stay alive, allocate nothing */
    pthread_barrier_wait(&step); /* 3: the main thread has allocated again */
    return NULL;
}

static int run_free_elsewhere(void)
{
    pthread_t thread;
    pthread_barrier_init(&step, NULL, 2);
    if (pthread_create(&thread, NULL, freer, NULL) != 0) return 3;
    for (nblocks = 0; nblocks < MAX_BLOCKS; nblocks++) {
        blocks[nblocks] = malloc(MIB);
        if (blocks[nblocks] == NULL) break;
    }
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    errno = 0;
    void *again = malloc(MIB);
    int err = errno;
    pthread_barrier_wait(&step);
    pthread_join(thread, NULL);
    say("blocks %d\nfreed %d\nagain %s errno %d\n", nblocks, (nblocks + 1) / 2,
        again != NULL ? "ok" : "null", again != NULL ? 0 : err);
    return 0;
}

static size_t idle_size;
static uint64_t idle_usable;

static void *idler(void *arg)
{
    (void)arg;
    void *volatile first = malloc(idle_size); /* in the baseline the main thread reads */
    (void)first;
    pthread_barrier_wait(&step); /* 1: allocated once, now idle */
    pthread_barrier_wait(&step); /* 2: the main thread has filled the heap */
    uint64_t count;
    int failed, err;
    idle_usable = fill(idle_size, 0, UINT64_MAX, &count, &failed, &err);
    return NULL;
}

static int run_idle(size_t size)
{
    pthread_t thread;
    idle_size = size;
    pthread_barrier_init(&step, NULL, 2);
    if (pthread_create(&thread, NULL, idler, NULL) != 0) return 3;
    pthread_barrier_wait(&step);
    uint64_t base = heap_live(), count;
    int failed, err;
    uint64_t usable = fill(size, 0, UINT64_MAX, &count, &failed, &err);
    pthread_barrier_wait(&step);
    pthread_join(thread, NULL);
    say("base %llu\ncap %llu\nmain %llu\nidle %llu\n", (unsigned long long)base,
        (unsigned long long)heap_cap(), (unsigned long long)usable,
        (unsigned long long)idle_usable);
    return 0;
}

int main(int argc, char **argv)
{
    heap_live = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live");
    heap_cap = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_cap");
    if (heap_live == NULL || heap_cap == NULL) return 100;
    if (heap_cap() == UINT64_MAX) return 101;
    if (argc == 4 && strcmp(argv[1], "size") == 0)
        return run_size(strtoull(argv[2], NULL, 10), 0, strtoull(argv[3], NULL, 10));
    if (argc == 5 && strcmp(argv[1], "aligned") == 0)
        return run_size(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                        strtoull(argv[4], NULL, 10));
    if (argc == 2 && strcmp(argv[1], "realloc") == 0) return run_realloc();
    if (argc == 2 && strcmp(argv[1], "free_elsewhere") == 0) return run_free_elsewhere();
    if (argc == 3 && strcmp(argv[1], "idle") == 0) return run_idle(strtoull(argv[2], NULL, 10));
    return 2;
}
