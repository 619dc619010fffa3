/* memprof_bench: the profiler's costs (README "Profiling"). Linked with libmemlimits.
 *   memprof_bench churn MODE OPS [FRAMES]: the design's 16..528-byte malloc/free churn over
 *     1000 slots, run FRAMES deep in the stack (default 70), under MODE: none (no profile),
 *     gap (a profile at the default gap, 80000, callstack_size 0, tracking every sampled
 *     block), depth16 / depth64 (the same with callstacks of 16 / 64 frames). Prints ns per
 *     operation (one malloc + one free), the samples taken and the ns each cost over `none`
 *     when given the baseline (BASE_NS=...).
 *   memprof_bench unwind DEPTH N: N allocations all sampled (gap 1) with callstacks of DEPTH
 *     frames, 70 frames deep; prints ns per sampled allocation (subtract DEPTH 0's figure for
 *     the ns per captured stack).
 * Built with frame pointers, so that MEMLIMITS_UNWIND=auto (the default) walks its frames by
 * them; MEMLIMITS_UNWIND=libunwind measures libunwind on the same stacks. The stack holds 4
 * frames besides deep()'s: churn, main, and glibc's two below main. */
#define _GNU_SOURCE
#include <memlimits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long tracked, freed;
static void *on_alloc(const ml_allocation *a, void *ctx)
{
    (void)a, (void)ctx;
    tracked++;
    return (void *)2;
}
static void on_free(void *t, void *ctx)
{
    (void)t, (void)ctx;
    freed++;
}
static void *no_track(const ml_allocation *a, void *ctx)
{
    (void)a, (void)ctx;
    tracked++;
    return NULL;
}

static void *slots[1000];
static uint64_t ops_to_run;
static double result_ns;

static void churn(void)
{
    uint64_t x = 88172645463325252ull;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops_to_run; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned k = (unsigned)(x % 1000);
        free(slots[k]);
        slots[k] = malloc(16 + (size_t)((x >> 20) % 513));
    }
    result_ns = (double)(now_ns() - t0) / (double)ops_to_run;
}

/* Runs fn `frames` calls deep. */
static __attribute__((noinline)) void deep(int frames, void (*fn)(void))
{
    if (frames <= 0)
        fn();
    else
        deep(frames - 1, fn);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "churn") == 0) {
        const char *mode = argv[2];
        ops_to_run = strtoull(argv[3], NULL, 10);
        int frames = argc > 4 ? atoi(argv[4]) : 70;
        ml_tracker t = {on_alloc, NULL, on_free, NULL};
        ml_profile *p = NULL;
        if (strcmp(mode, "gap") == 0) p = ml_memprof_start(80000, 0, &t);
        if (strcmp(mode, "depth16") == 0) p = ml_memprof_start(80000, 16, &t);
        if (strcmp(mode, "depth64") == 0) p = ml_memprof_start(80000, 64, &t);
        if (strcmp(mode, "none") != 0 && p == NULL) return 2;
        deep(frames, churn);
        const char *base = getenv("BASE_NS");
        printf("mode=%s ns_per_op=%.3f samples=%ld", mode, result_ns, tracked);
        if (base != NULL && tracked > 0)
            printf(" ns_per_sample=%.0f",
                   (result_ns - atof(base)) * (double)ops_to_run / (double)tracked);
        printf("\n");
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "unwind") == 0) {
        unsigned depth = (unsigned)atoi(argv[2]);
        ops_to_run = strtoull(argv[3], NULL, 10);
        ml_tracker t = {no_track, NULL, NULL, NULL};
        ml_profile *p = ml_memprof_start(1, depth, &t);
        if (p == NULL) return 2;
        deep(70, churn);
        printf("depth=%u ns_per_sampled_alloc=%.1f samples=%ld\n", depth, result_ns, tracked);
        return 0;
    }
    fprintf(stderr, "usage: memprof_bench churn none|gap|depth16|depth64 OPS [FRAMES]\n"
                    "       memprof_bench unwind DEPTH N\n");
    return 1;
}
