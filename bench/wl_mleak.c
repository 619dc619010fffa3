/* wl_mleak: many short-lived threads, in the manner of mimalloc-bench's mleak (written for this
 * suite). THREADS threads at a time, ROUNDS times: each allocates BLOCKS blocks of 16 B to 4 KiB,
 * frees all but one in KEEP, and exits; the blocks it kept are freed by the next round's
 * threads. Per thread the allocation work is small, so what it measures is what an allocator
 * spends per thread (cache set-up and teardown, arena choice) and whether memory held by dead
 * threads is reused (peak RSS).
 *
 * usage: wl_mleak [THREADS=2] [ROUNDS=2000] [BLOCKS=1000] [KEEP=10] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_mleak";

struct worker {
    uint64_t blocks, keep, seed, checksum;
    void **kept;     /* this thread's kept blocks, freed by the next round's thread */
    void **previous; /* the previous round's kept blocks, freed here */
};

static void work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed, sum = 0, kept = 0;
    for (uint64_t i = 0; i < w->keep && w->previous != NULL; i++)
        free(w->previous[i]);
    char **blocks = malloc(w->blocks * sizeof *blocks);
    if (blocks == NULL) bench_die(prog, "malloc returned NULL");
    for (uint64_t i = 0; i < w->blocks; i++) {
        size_t size = bench_range(&rng, 16, 4096);
        if ((blocks[i] = malloc(size)) == NULL) bench_die(prog, "malloc returned NULL");
        blocks[i][0] = (char)i;
    }
    for (uint64_t i = 0; i < w->blocks; i++) {
        sum += (unsigned char)blocks[i][0];
        if (kept < w->keep && i % (w->blocks / w->keep) == 0)
            w->kept[kept++] = blocks[i];
        else
            free(blocks[i]);
    }
    while (kept < w->keep)
        w->kept[kept++] = NULL;
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
    uint64_t threads = bench_arg(argc, argv, 1, 2, 1, 4096);
    uint64_t rounds = bench_arg(argc, argv, 2, 2000, 1, 100000000);
    uint64_t blocks = bench_arg(argc, argv, 3, 1000, 1, 1 << 24);
    uint64_t keep = bench_arg(argc, argv, 4, 10, 1, blocks);
    uint64_t seed = bench_arg(argc, argv, 5, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    struct worker *workers = calloc(threads, sizeof *workers);
    pthread_t *tids = calloc(threads, sizeof *tids);
    void **kept = calloc(2 * threads * keep, sizeof *kept);
    if (workers == NULL || tids == NULL || kept == NULL) bench_die(prog, "out of memory");
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint64_t t = 0; t < threads; t++) {
            void **mine = kept + ((r & 1) * threads + t) * keep;
            void **prev = r > 0 ? kept + (((r - 1) & 1) * threads + t) * keep : NULL;
            workers[t] =
                (struct worker){blocks, keep, bench_mix(seed, r * threads + t), 0, mine, prev};
            if (pthread_create(&tids[t], NULL, thread_main, &workers[t]) != 0)
                bench_die(prog, "pthread_create failed");
        }
        for (uint64_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
    }
    uint64_t end = bench_now_ns();
    for (uint64_t i = 0; i < threads * keep; i++) /* the last round's: the others are freed */
        free(kept[((rounds - 1) & 1) * threads * keep + i]);

    char extra[128];
    snprintf(extra, sizeof extra, " threads_started=%" PRIu64, rounds * threads);
    bench_report(start, end, extra);
    free(kept);
    free(workers);
    free(tids);
    return 0;
}
