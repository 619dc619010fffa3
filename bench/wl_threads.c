/* wl_threads: a many-threads alloc/free stress, in the manner of threadtest (Hoard), written for
 * this suite: far more threads than cores, created in waves. Each of ROUNDS waves starts THREADS
 * threads; each thread, BATCHES times, allocates BATCH blocks of random size in MIN..MAX bytes
 * (touching each) and frees them all, then exits. It stresses what an allocator does per thread
 * (cache creation and teardown, arena assignment, flushing a dying thread's cached blocks) and
 * its behaviour when threads outnumber cores.
 *
 * usage: wl_threads [THREADS=32] [ROUNDS=10] [BATCHES=400] [BATCH=200] [MIN=16] [MAX=256] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_threads";

struct worker {
    uint64_t batches, batch, min, max, seed, checksum;
};

static void work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed, sum = 0;
    char **blocks = malloc(w->batch * sizeof *blocks);
    if (blocks == NULL) bench_die(prog, "malloc returned NULL");
    for (uint64_t b = 0; b < w->batches; b++) {
        for (uint64_t i = 0; i < w->batch; i++) {
            size_t size = bench_range(&rng, w->min, w->max);
            if ((blocks[i] = malloc(size)) == NULL) bench_die(prog, "malloc returned NULL");
            blocks[i][0] = (char)i;
        }
        for (uint64_t i = 0; i < w->batch; i++) {
            sum += (unsigned char)blocks[i][0];
            free(blocks[i]);
        }
    }
    free(blocks);
    w->checksum = sum;
}

static void *thread_main(void *arg)
{
    bench_run(prog, work, arg);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t threads = bench_arg(argc, argv, 1, 32, 1, 4096);
    uint64_t rounds = bench_arg(argc, argv, 2, 10, 1, 1000000);
    uint64_t batches = bench_arg(argc, argv, 3, 400, 1, UINT64_MAX);
    uint64_t batch = bench_arg(argc, argv, 4, 200, 1, 1 << 24);
    uint64_t min = bench_arg(argc, argv, 5, 16, 1, 1 << 30);
    uint64_t max = bench_arg(argc, argv, 6, 256, min, 1 << 30);
    uint64_t seed = bench_arg(argc, argv, 7, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    struct worker *workers = calloc(threads, sizeof *workers);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (workers == NULL || tids == NULL) bench_die(prog, "out of memory");
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint64_t t = 0; t < threads; t++) {
            workers[t] =
                (struct worker){batches, batch, min, max, bench_mix(seed, r * threads + t), 0};
            if (pthread_create(&tids[t], NULL, thread_main, &workers[t]) != 0)
                bench_die(prog, "pthread_create failed");
        }
        for (uint64_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
    }
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " allocations=%" PRIu64, rounds * threads * batches * batch);
    bench_report(start, end, extra);
    free(workers);
    free(tids);
    return 0;
}
