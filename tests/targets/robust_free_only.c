/* A thread that only frees: the main thread allocates 64 MiB in 16 KiB blocks, another thread
 * frees them all and exits (or waits, still alive, while the main thread measures). The live heap
 * must reflect the frees: back to its baseline within 1 MiB (the bound of robust_threads).
 *
 * usage: robust_free_only MODE, MODE one of
 *   pure        the freeing thread never allocates, then exits;
 *   registered  it makes one malloc/free pair first (so memlimits knows it), frees, then exits;
 *   alive       like registered, but the live heap is measured while it is still alive;
 *   capped      run under MEMLIMITS_HEAP=32M: eight rounds of the main thread allocating 16 MiB
 *               and a new thread that never allocates freeing it; the live heap never exceeds
 *               16 MiB and a bit, so no allocation may be refused.
 * Exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 4096
#define BLOCK (16 * 1024)
#define DRIFT_BOUND ((int64_t)1 << 20)

typedef uint64_t (*u64_fn)(void);

static void *blocks[BLOCKS];
static int register_first, stay_alive;
static pthread_barrier_t freed, measured;

static void *freer(void *arg)
{
    (void)arg;
    if (register_first) {
        void *volatile first = malloc(1); /* volatile: the pair must not be optimised away */
        free(first);
    }
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    if (stay_alive) {
        pthread_barrier_wait(&freed);
        pthread_barrier_wait(&measured);
    }
    return NULL;
}

/* Mode capped: returns 0 when every allocation succeeded. */
static int run_capped(void)
{
    enum { ROUNDS = 8, PER_ROUND = 1024 };
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER_ROUND; i++) {
            blocks[i] = malloc(BLOCK);
            if (blocks[i] == NULL) {
                fprintf(stderr,
                        "robust_free_only: round %d: malloc #%d refused under a 32 MiB cap with "
                        "at most 16 MiB live (ml_heap_live says %" PRIu64 ")\n",
                        r, i, ((uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live"))());
                return 1;
            }
        }
        for (int i = PER_ROUND; i < BLOCKS; i++)
            blocks[i] = NULL;
        pthread_t t;
        if (pthread_create(&t, NULL, freer, NULL) != 0) return 3;
        pthread_join(t, NULL);
    }
    printf("mode=capped rounds=%d allocated=%d\n", ROUNDS, ROUNDS * PER_ROUND * BLOCK);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "pure") == 0) {
    } else if (strcmp(mode, "registered") == 0) {
        register_first = 1;
    } else if (strcmp(mode, "alive") == 0) {
        register_first = stay_alive = 1;
    } else if (strcmp(mode, "capped") == 0) {
        return run_capped();
    } else {
        fprintf(stderr, "usage: robust_free_only pure|registered|alive|capped\n");
        return 2;
    }
    u64_fn heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    if (heap_live == NULL) {
        fprintf(stderr, "robust_free_only: not running under libmemlimits.so\n");
        return 2;
    }
    pthread_barrier_init(&freed, NULL, 2);
    pthread_barrier_init(&measured, NULL, 2);
    uint64_t baseline = heap_live();
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (blocks[i] == NULL) return 3;
        memset(blocks[i], i, 64);
    }
    uint64_t full = heap_live();
    if (full < baseline + (uint64_t)BLOCKS * BLOCK) {
        fprintf(stderr, "robust_free_only: live heap %" PRIu64 " does not show the %d blocks\n",
                full, BLOCKS);
        return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, freer, NULL) != 0) return 3;
    if (stay_alive)
        pthread_barrier_wait(&freed);
    else
        pthread_join(t, NULL);
    uint64_t after = heap_live();
    if (stay_alive) {
        pthread_barrier_wait(&measured);
        pthread_join(t, NULL);
    }
    int64_t drift = (int64_t)(after - baseline);
    printf("mode=%s baseline=%" PRIu64 " full=%" PRIu64 " after=%" PRIu64 " drift=%" PRId64 "\n",
           mode, baseline, full, after, drift);
    if (drift > DRIFT_BOUND || drift < -DRIFT_BOUND) {
        fprintf(stderr,
                "robust_free_only: after another thread freed %d bytes, the live heap is %" PRId64
                " bytes off its baseline (bound %" PRId64 ")\n",
                BLOCKS * BLOCK, drift, DRIFT_BOUND);
        return 1;
    }
    return 0;
}
