/* wl_cache_scratch: passive false sharing, the pattern of Berger et al.'s cache-scratch (Hoard,
 * 2000), written for this suite. The main thread allocates one small object per worker, back to
 * back, so that they likely share cache lines, and hands object i to worker i. Each worker frees
 * it, then ITERATIONS times allocates an object of the same size, writes to it WRITES times and
 * frees it. An allocator that gives a worker back the block it just freed (the one main
 * allocated next to another worker's) makes the workers write to one cache line from two cores;
 * one that serves each thread from its own memory does not.
 *
 * usage: wl_cache_scratch [THREADS=2] [ITERATIONS=1000000] [WRITES=100] [SIZE=8] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_cache_scratch";

struct worker {
    char *first; /* allocated by main, freed by the worker */
    uint64_t iterations, writes, size, checksum;
};

static void work(void *arg)
{
    struct worker *w = arg;
    free(w->first);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < w->iterations; i++) {
        volatile char *p = malloc(w->size);
        if (p == NULL) bench_die(prog, "malloc returned NULL");
        for (uint64_t k = 0; k < w->writes; k++)
            p[k % w->size] = (char)(p[k % w->size] + 1);
        sum += (unsigned char)p[0];
        free((void *)p);
    }
    w->checksum = sum;
}

static void *thread_main(void *arg)
{
    bench_run(prog, work, arg);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t threads = bench_arg(argc, argv, 1, 2, 1, 256);
    uint64_t iterations = bench_arg(argc, argv, 2, 1000000, 1, UINT64_MAX);
    uint64_t writes = bench_arg(argc, argv, 3, 100, 1, UINT64_MAX);
    uint64_t size = bench_arg(argc, argv, 4, 8, 1, 1 << 20);
    (void)bench_arg(argc, argv, 5, 1, 0, UINT64_MAX); /* no randomness; kept for uniformity */
    bench_task_init(prog);

    struct worker *workers = calloc(threads, sizeof *workers);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (workers == NULL || tids == NULL) bench_die(prog, "out of memory");
    for (uint64_t t = 0; t < threads; t++) {
        workers[t] = (struct worker){malloc(size), iterations, writes, size, 0};
        if (workers[t].first == NULL) bench_die(prog, "out of memory");
        memset(workers[t].first, 0, size);
    }
    uint64_t start = bench_now_ns();
    for (uint64_t t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, thread_main, &workers[t]) != 0)
            bench_die(prog, "pthread_create failed");
    for (uint64_t t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    uint64_t end = bench_now_ns();

    bench_report(start, end, NULL);
    free(workers);
    free(tids);
    return 0;
}
