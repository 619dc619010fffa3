/* Target for tests/test_heap.c: the heap cap under contention (issue 9), measured on the blocks
 * themselves. Run preloaded under MEMLIMITS_HEAP.
 *
 * usage: heap_fill THREADS ROUNDS SIZE|mix SEED [CHURN]
 *
 * Each round starts THREADS new threads; they park at a barrier, the main thread reads the live
 * heap (ml_heap_live, exact while every thread is parked: the baseline), then releases them
 * together. Each calls malloc until it fails, keeping every block and summing malloc_usable_size
 * of what it got; then the threads stop at a second barrier, the main thread adds the baseline
 * to their sums, and the threads free everything and exit. SIZE: every request is SIZE bytes;
 * `mix`: each request is drawn from MIX_SIZES by a per-thread generator seeded from SEED, the
 * round and the thread. CHURN (default 0): before parking, each thread reallocs one block CHURN
 * times between 1000 and 1064 bytes, and frees it: many flush intervals of units that add nothing
 * to the heap, which memlimits re-arms without flushing (lib/heap.c), so that the fill starts in
 * a re-armed interval.
 *
 * Prints, over all rounds: "rounds R", "max_excess E" and "min_excess M" (baseline + blocks - cap,
 * signed), "max_usable U" (the largest block a request of the run can get), and "bad B", the
 * rounds where a thread stopped without ENOMEM or never stopped. The heap cap's bound is
 * asserted by the test on E and M. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "say.h"

#define MAX_THREADS 64
static const size_t MIX_SIZES[] = {0, 1, 17, 33, 100, 1000, 5000, 70000};
#define MIX_COUNT (sizeof MIX_SIZES / sizeof MIX_SIZES[0])

typedef struct worker {
    pthread_t thread;
    void **blocks; /* mmap'ed: the pointer arrays are not on the heap under test */
    size_t capacity, count;
    uint64_t usable, rng;
    int stop_errno, stopped;
} worker;

static worker workers[MAX_THREADS];
static pthread_barrier_t parked, released, filled, done;
static size_t fixed_size, churn;
static int mix;

static size_t next_size(worker *w)
{
    if (!mix) return fixed_size;
    w->rng = w->rng * 6364136223846793005ull + 1442695040888963407ull;
    return MIX_SIZES[(w->rng >> 33) % MIX_COUNT];
}

static void *fill(void *arg)
{
    worker *w = arg;
    void *q = NULL;
    for (size_t i = 0; i < churn; i++) {
        void *grown = realloc(q, 1000 + (i % 65));
        if (grown == NULL) abort();
        q = grown;
    }
    free(q);
    pthread_barrier_wait(&parked);
    pthread_barrier_wait(&released);
    while (w->count < w->capacity) {
        errno = 0;
        void *p = malloc(next_size(w));
        if (p == NULL) {
            w->stop_errno = errno;
            w->stopped = 1;
            break;
        }
        w->blocks[w->count++] = p;
        w->usable += malloc_usable_size(p);
    }
    pthread_barrier_wait(&filled);
    pthread_barrier_wait(&done);
    for (size_t i = 0; i < w->count; i++)
        free(w->blocks[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) return 2;
    churn = argc == 6 ? strtoull(argv[5], NULL, 10) : 0;
    int threads = atoi(argv[1]), rounds = atoi(argv[2]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    mix = strcmp(argv[3], "mix") == 0;
    fixed_size = mix ? 0 : strtoull(argv[3], NULL, 10);
    if (threads < 1 || threads > MAX_THREADS || rounds < 1) return 2;
    uint64_t (*heap_live)(void) = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live");
    uint64_t (*heap_cap)(void) = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_cap");
    if (heap_live == NULL || heap_cap == NULL) return 100;
    uint64_t cap = heap_cap();
    if (cap == UINT64_MAX || cap > ((uint64_t)1 << 32)) return 3;

    size_t max_usable = 0, min_usable = SIZE_MAX;
    for (size_t i = 0; i < (mix ? MIX_COUNT : 1); i++) {
        void *p = malloc(mix ? MIX_SIZES[i] : fixed_size);
        if (p == NULL) return 4;
        size_t u = malloc_usable_size(p);
        max_usable = u > max_usable ? u : max_usable;
        min_usable = u < min_usable ? u : min_usable;
        free(p);
    }
    /* Room for every block one thread could get, whatever the others do. */
    size_t capacity = (size_t)(cap / min_usable) + 65536;
    for (int i = 0; i < threads; i++) {
        workers[i].capacity = capacity;
        workers[i].blocks = mmap(NULL, capacity * sizeof(void *), PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (workers[i].blocks == MAP_FAILED) return 5;
    }
    pthread_barrier_init(&parked, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&released, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&filled, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&done, NULL, (unsigned)threads + 1);

    int64_t max_excess = INT64_MIN, min_excess = INT64_MAX;
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < threads; i++) {
            worker *w = &workers[i];
            w->count = 0;
            w->usable = 0;
            w->stopped = 0;
            w->stop_errno = 0;
            w->rng = seed ^ ((uint64_t)r << 20) ^ (uint64_t)i;
            if (pthread_create(&w->thread, NULL, fill, w) != 0) return 6;
        }
        pthread_barrier_wait(&parked);
        uint64_t total = heap_live();
        pthread_barrier_wait(&released);
        pthread_barrier_wait(&filled);
        int round_bad = 0;
        for (int i = 0; i < threads; i++) {
            total += workers[i].usable;
            round_bad |= !workers[i].stopped || workers[i].stop_errno != ENOMEM;
        }
        int64_t excess = (int64_t)total - (int64_t)cap;
        max_excess = excess > max_excess ? excess : max_excess;
        min_excess = excess < min_excess ? excess : min_excess;
        bad += round_bad;
        pthread_barrier_wait(&done);
        for (int i = 0; i < threads; i++)
            pthread_join(workers[i].thread, NULL);
    }
    say("rounds %d\nmax_excess %lld\nmin_excess %lld\nmax_usable %zu\nbad %d\n", rounds,
        (long long)max_excess, (long long)min_excess, max_usable, bad);
    return 0;
}
