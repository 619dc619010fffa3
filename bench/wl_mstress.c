/* wl_mstress: thread churn with live objects, in the manner of mimalloc-bench's mstress (written
 * for this suite). ROUNDS times, THREADS threads are started; each makes STEPS allocation steps:
 * a block of a size drawn mostly small (8 B to 1 KiB, skewed small), sometimes medium (to
 * 64 KiB) and rarely large (to 1 MiB), kept in its own slots, where it replaces and frees an
 * older block; one step in eight it exchanges a block with a shared transfer array instead, so
 * that blocks are freed by other threads, and of other rounds. At its end a thread frees its own
 * slots and dies; the transfer array's blocks survive into the next round's threads. It stresses
 * what an allocator does when threads come and go while their blocks live on: thread caches
 * created and torn down, blocks freed far from their arena, memory returned and taken back.
 *
 * usage: wl_mstress [THREADS=4] [ROUNDS=50] [STEPS=20000] [SLOTS=256] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_mstress";

#define TRANSFER 4096

static void *volatile transfer[TRANSFER];

struct worker {
    uint64_t steps, slots, seed, checksum;
};

static size_t draw_size(uint64_t *rng)
{
    uint64_t r = bench_rand(rng);
    unsigned kind = (unsigned)(r % 1000);
    if (kind < 5) return (size_t)bench_range(rng, 64 << 10, 1 << 20);   /* 0.5 %: large */
    if (kind < 100) return (size_t)bench_range(rng, 1 << 10, 64 << 10); /* 9.5 %: medium */
    uint64_t s = bench_range(rng, 8, 1024);
    return (size_t)(s * s / 1024 + 8); /* small, skewed towards the low end */
}

static void work(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = w->seed, sum = 0;
    char **slot = calloc(w->slots, sizeof *slot);
    if (slot == NULL) bench_die(prog, "malloc returned NULL");
    for (uint64_t i = 0; i < w->steps; i++) {
        size_t size = draw_size(&rng);
        char *p = malloc(size);
        if (p == NULL) bench_die(prog, "malloc returned NULL");
        p[0] = (char)i;
        p[size - 1] = (char)i;
        uint64_t r = bench_rand(&rng);
        if ((r & 7) == 0) {
            /* Exchange with the shared array: the block found there was another thread's. */
            char *old =
                __atomic_exchange_n((char **)&transfer[(r >> 3) % TRANSFER], p, __ATOMIC_ACQ_REL);
            if (old != NULL) sum += (unsigned char)old[0];
            free(old);
        } else {
            uint64_t k = (r >> 3) % w->slots;
            if (slot[k] != NULL) sum += (unsigned char)slot[k][0];
            free(slot[k]);
            slot[k] = p;
        }
    }
    for (uint64_t k = 0; k < w->slots; k++)
        free(slot[k]);
    free(slot);
    w->checksum = sum;
}

static void *thread_main(void *arg)
{
    bench_run(prog, work, arg);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t threads = bench_arg(argc, argv, 1, 4, 1, 4096);
    uint64_t rounds = bench_arg(argc, argv, 2, 50, 1, 1000000);
    uint64_t steps = bench_arg(argc, argv, 3, 20000, 1, UINT64_MAX);
    uint64_t slots = bench_arg(argc, argv, 4, 256, 1, 1 << 24);
    uint64_t seed = bench_arg(argc, argv, 5, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    struct worker *workers = calloc(threads, sizeof *workers);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (workers == NULL || tids == NULL) bench_die(prog, "out of memory");
    uint64_t start = bench_now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint64_t t = 0; t < threads; t++) {
            workers[t] = (struct worker){steps, slots, bench_mix(seed, r * threads + t), 0};
            if (pthread_create(&tids[t], NULL, thread_main, &workers[t]) != 0)
                bench_die(prog, "pthread_create failed");
        }
        for (uint64_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
    }
    uint64_t end = bench_now_ns();
    for (size_t i = 0; i < TRANSFER; i++)
        free(transfer[i]);

    char extra[128];
    snprintf(extra, sizeof extra, " allocations=%" PRIu64, rounds * threads * steps);
    bench_report(start, end, extra);
    free(workers);
    free(tids);
    return 0;
}
