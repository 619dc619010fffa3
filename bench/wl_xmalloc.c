/* wl_xmalloc: producer/consumer with every free on the other thread, the pattern of the
 * xmalloc-test benchmark, written for this suite. PAIRS producer threads each allocate BLOCKS
 * blocks of random size in MIN..MAX bytes (filling the first 16 bytes) and pass them, in
 * batches of BATCH pointers through a bounded queue (mutex and condition variables, DEPTH
 * batches), to their consumer thread, which reads and frees them. So every block is allocated
 * on one thread and freed on another: the allocator's remote-free path (jemalloc's tcache flush
 * into the producer's arena bins, glibc's arena locking) carries all the load. Batching keeps
 * the two threads' hand-offs rare, so the figure measures the allocator rather than the
 * scheduler.
 *
 * usage: wl_xmalloc [PAIRS=1] [BLOCKS=4000000] [MIN=16] [MAX=512] [BATCH=256] [SEED=1]
 */
#include "bench_common.h"

#include <pthread.h>

static const char *prog = "wl_xmalloc";

enum { DEPTH = 8 };

struct pair {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    void **queue[DEPTH]; /* batches of `batch` pointers, allocated once */
    uint64_t head, tail; /* batches produced and consumed, under lock */
    uint64_t blocks, batch, min, max, seed, checksum;
};

static void produce(void *arg)
{
    struct pair *p = arg;
    uint64_t rng = p->seed;
    for (uint64_t done = 0; done < p->blocks;) {
        pthread_mutex_lock(&p->lock);
        while (p->head - p->tail == DEPTH)
            pthread_cond_wait(&p->not_full, &p->lock);
        void **slot = p->queue[p->head % DEPTH];
        pthread_mutex_unlock(&p->lock);
        uint64_t n = p->blocks - done < p->batch ? p->blocks - done : p->batch;
        for (uint64_t i = 0; i < p->batch; i++) {
            if (i >= n) {
                slot[i] = NULL;
                continue;
            }
            size_t size = bench_range(&rng, p->min, p->max);
            char *b = malloc(size);
            if (b == NULL) bench_die(prog, "malloc returned NULL");
            memset(b, (int)(done + i), size < 16 ? size : 16);
            slot[i] = b;
        }
        done += n;
        pthread_mutex_lock(&p->lock);
        p->head++;
        pthread_cond_signal(&p->not_empty);
        pthread_mutex_unlock(&p->lock);
    }
}

static void consume(void *arg)
{
    struct pair *p = arg;
    uint64_t sum = 0, batches = (p->blocks + p->batch - 1) / p->batch;
    for (uint64_t b = 0; b < batches; b++) {
        pthread_mutex_lock(&p->lock);
        while (p->head == p->tail)
            pthread_cond_wait(&p->not_empty, &p->lock);
        void **slot = p->queue[p->tail % DEPTH];
        pthread_mutex_unlock(&p->lock);
        for (uint64_t i = 0; i < p->batch && slot[i] != NULL; i++) {
            sum += *(unsigned char *)slot[i];
            free(slot[i]);
        }
        pthread_mutex_lock(&p->lock);
        p->tail++;
        pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->lock);
    }
    p->checksum = sum;
}

static void *producer_main(void *arg)
{
    bench_run(prog, produce, arg);
    return NULL;
}

static void *consumer_main(void *arg)
{
    bench_run(prog, consume, arg);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t pairs = bench_arg(argc, argv, 1, 1, 1, 128);
    uint64_t blocks = bench_arg(argc, argv, 2, 4000000, 1, UINT64_MAX);
    uint64_t min = bench_arg(argc, argv, 3, 16, 1, 1 << 30);
    uint64_t max = bench_arg(argc, argv, 4, 512, min, 1 << 30);
    uint64_t batch = bench_arg(argc, argv, 5, 256, 1, 1 << 20);
    uint64_t seed = bench_arg(argc, argv, 6, 1, 0, UINT64_MAX);
    bench_task_init(prog);

    struct pair *ps = calloc(pairs, sizeof *ps);
    pthread_t *tids = calloc(2 * pairs, sizeof *tids);
    if (ps == NULL || tids == NULL) bench_die(prog, "out of memory");
    for (uint64_t i = 0; i < pairs; i++) {
        struct pair *p = &ps[i];
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->not_full, NULL);
        pthread_cond_init(&p->not_empty, NULL);
        for (int d = 0; d < DEPTH; d++)
            if ((p->queue[d] = calloc(batch, sizeof(void *))) == NULL)
                bench_die(prog, "out of memory");
        p->blocks = blocks;
        p->batch = batch;
        p->min = min;
        p->max = max;
        p->seed = bench_mix(seed, i);
    }
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < pairs; i++)
        if (pthread_create(&tids[2 * i], NULL, consumer_main, &ps[i]) != 0 ||
            pthread_create(&tids[2 * i + 1], NULL, producer_main, &ps[i]) != 0)
            bench_die(prog, "pthread_create failed");
    for (uint64_t i = 0; i < 2 * pairs; i++)
        pthread_join(tids[i], NULL);
    uint64_t end = bench_now_ns();

    char extra[128];
    snprintf(extra, sizeof extra, " blocks=%" PRIu64, pairs * blocks);
    bench_report(start, end, extra);
    for (uint64_t i = 0; i < pairs; i++)
        for (int d = 0; d < DEPTH; d++)
            free(ps[i].queue[d]);
    free(ps);
    free(tids);
    return 0;
}
