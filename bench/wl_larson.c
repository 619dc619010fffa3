/* wl_larson: a server simulation in the manner of Larson and Krishnan's benchmark (1998), written
 * for this suite. THREADS workers each own an array of SLOTS blocks; a worker replaces random
 * blocks (free, then malloc of a random size in MIN..MAX bytes, first and last byte touched)
 * OPS times, then hands its array to a new thread and exits, ROUNDS times over. The arrays are
 * rotated between workers at every generation, so nearly every free is of a block another
 * thread allocated (often one that has exited), and threads are created and retired
 * continually, as in a server handing connections to short-lived workers.
 *
 * usage: wl_larson [THREADS=2] [ROUNDS=40] [OPS=100000] [SLOTS=1000] [MIN=16] [MAX=1024] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_larson";

struct worker {
    void **slots;
    uint64_t slot_count, ops, min, max, seed;
};

static void work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed;
    for (uint64_t i = 0; i < w->ops; i++) {
        uint64_t slot = bench_rand(&rng) % w->slot_count;
        size_t size = bench_range(&rng, w->min, w->max);
        free(w->slots[slot]);
        char *p = malloc(size);
        if (p == NULL) bench_die(prog, "malloc returned NULL");
        p[0] = (char)i;
        p[size - 1] = (char)i;
        w->slots[slot] = p;
    }
}

static void *thread_main(void *arg)
{
    bench_run(prog, work, arg);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t threads = bench_arg(argc, argv, 1, 2, 1, 256);
    uint64_t rounds = bench_arg(argc, argv, 2, 40, 1, 1000000);
    uint64_t ops = bench_arg(argc, argv, 3, 100000, 1, UINT64_MAX);
    uint64_t slots = bench_arg(argc, argv, 4, 1000, 1, 10000000);
    uint64_t min = bench_arg(argc, argv, 5, 16, 1, 1 << 30);
    uint64_t max = bench_arg(argc, argv, 6, 1024, min, 1 << 30);
    uint64_t seed = bench_arg(argc, argv, 7, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    void ***arrays = calloc(threads, sizeof *arrays);
    struct worker *workers = calloc(threads, sizeof *workers);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (arrays == NULL || workers == NULL || tids == NULL) bench_die(prog, "out of memory");
    /* The initial blocks come from the main thread, as in the original. */
    uint64_t rng = bench_mix(seed, 1000);
    for (uint64_t t = 0; t < threads; t++) {
        arrays[t] = calloc(slots, sizeof(void *));
        if (arrays[t] == NULL) bench_die(prog, "out of memory");
        for (uint64_t s = 0; s < slots; s++) {
            size_t size = bench_range(&rng, min, max);
            if ((arrays[t][s] = malloc(size)) == NULL) bench_die(prog, "out of memory");
            ((char *)arrays[t][s])[0] = 0;
        }
    }

    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint64_t t = 0; t < threads; t++) {
            workers[t] = (struct worker){arrays[(t + r) % threads],       slots, ops, min, max,
                                         bench_mix(seed, r * threads + t)};
            if (pthread_create(&tids[t], NULL, thread_main, &workers[t]) != 0)
                bench_die(prog, "pthread_create failed");
        }
        for (uint64_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
    }
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " ops=%" PRIu64, threads * rounds * ops);
    bench_report(start, end, extra);
    for (uint64_t t = 0; t < threads; t++) {
        for (uint64_t s = 0; s < slots; s++)
            free(arrays[t][s]);
        free(arrays[t]);
    }
    free(arrays);
    free(workers);
    free(tids);
    return 0;
}
