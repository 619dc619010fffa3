/* bench_common.h: what every workload of the suite shares (header-only, each workload is one
 * translation unit): a seeded PRNG, a monotonic clock, argument parsing, the result line, and
 * the optional task around the work.
 *
 * The workloads link only libc and pthreads, so that one binary runs under every configuration
 * (glibc, LD_PRELOAD of bare jemalloc, LD_PRELOAD of libmemlimits.so). With BENCH_TASK=1 in the
 * environment, each thread's work runs as a memlimits task under an allocation limit so large it
 * never fires (ml_limit_allocations, found with dlsym in the preloaded library): that measures
 * the cost of running inside a task. BENCH_TASK=1 without memlimits owning malloc is an error,
 * never a silent fallback.
 *
 * Output: one line on stdout, `elapsed_s=SECONDS` plus workload-specific key=value pairs, the
 * wall time of the measured work only (no process start-up or final teardown). Nothing else is
 * printed on success; anything on stderr means the run is discarded by the runner. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64: turns (seed, stream) into a well-mixed, nonzero xorshift state. */
static inline uint64_t bench_mix(uint64_t seed, uint64_t stream)
{
    uint64_t z = seed + (stream + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z != 0 ? z : 0x2545f4914f6cdd1dull;
}

/* xorshift64* (Vigna 2016): the state must be nonzero, which bench_mix guarantees. */
static inline uint64_t bench_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in lo..hi (inclusive); the modulo bias over 2^64 is negligible here. */
static inline uint64_t bench_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
    return lo + bench_rand(state) % (hi - lo + 1);
}

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void bench_die(const char *prog, const char *what)
{
    fprintf(stderr, "%s: %s\n", prog, what);
    exit(1);
}

/* Parses argv[i] as a decimal integer in [min, max], or returns `dflt` when argc <= i. */
static inline uint64_t bench_arg(int argc, char **argv, int i, uint64_t dflt, uint64_t min,
                                 uint64_t max)
{
    if (i >= argc) return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (argv[i][0] == '\0' || argv[i][0] == '-' || *end != '\0' || errno != 0 || v < min ||
        v > max) {
        fprintf(stderr,
                "%s: argument %d: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'\n",
                argv[0], i, min, max, argv[i]);
        exit(2);
    }
    return v;
}

/* ---- The optional task around the work (BENCH_TASK=1). ---- */

typedef int (*bench_limit_fn)(uint64_t limit, void (*fn)(void *), void *arg, uint64_t *allocated);

/* Resolved once by bench_task_init (from main, before any thread starts). */
static bench_limit_fn bench_task_fn;

/* An allocation limit no workload comes near (4 EiB): the task is active, its limit is folded
 * into the countdown, and it never fires. */
#define BENCH_TASK_LIMIT ((uint64_t)1 << 62)

static inline void bench_task_init(const char *prog)
{
    const char *v = getenv("BENCH_TASK");
    if (v == NULL || strcmp(v, "0") == 0 || v[0] == '\0') return;
    bench_task_fn = (bench_limit_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "ml_limit_allocations");
    if (bench_task_fn == NULL)
        bench_die(prog, "BENCH_TASK=1 but ml_limit_allocations is not loaded (preload "
                        "libmemlimits.so)");
}

/* Runs fn(arg) on the calling thread, inside a task when BENCH_TASK=1. */
static inline void bench_run(const char *prog, void (*fn)(void *), void *arg)
{
    if (bench_task_fn == NULL) {
        fn(arg);
        return;
    }
    uint64_t allocated = 0;
    int status = bench_task_fn(BENCH_TASK_LIMIT, fn, arg, &allocated);
    if (status != 0) {
        fprintf(stderr, "%s: the task ended with status %d after %" PRIu64 " bytes\n", prog, status,
                allocated);
        exit(1);
    }
}

/* The result line. `extra` may be NULL or a string of " key=value" pairs. */
static inline void bench_report(uint64_t start_ns, uint64_t end_ns, const char *extra)
{
    printf("elapsed_s=%.6f task=%d%s\n", (double)(end_ns - start_ns) / 1e9, bench_task_fn != NULL,
           extra ? extra : "");
}

#endif
