/* malloc_bench: the allocation microbenchmark behind the design's "within 5% of bare jemalloc"
 * budget. Each thread churns its own array of slots with random 16..528-byte malloc/free pairs;
 * the program prints the wall-clock cost per operation. Run it bare or under LD_PRELOAD
 * (bench/run_malloc_bench.sh does both). `--spin N` is the two-core throttling check instead:
 * a CPU-bound loop on 1 and then 2 threads, reporting the two-thread speedup. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_COUNT = 1000, MIN_SIZE = 16, MAX_SIZE = 528, MAX_THREADS = 1024 };

/* One per thread; written only by its thread, read by main after the join. */
struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t ops;      /* churn mode: operations to run; spin mode: loop iterations */
    uint64_t seed;     /* the run's seed, mixed with index into this thread's PRNG state */
    uint64_t start_ns; /* CLOCK_MONOTONIC as this thread leaves the start barrier */
    uint64_t end_ns;   /* CLOCK_MONOTONIC as this thread finishes its operations */
    uint64_t checksum; /* spin mode: the loop's result, kept so it cannot be optimised away */
    int failed;        /* churn mode: a malloc returned NULL */
};

/* Workers start together behind this barrier and read the clock themselves, on leaving it and
 * on finishing; the timed interval runs from the first start to the last end, so it holds the
 * operations and nothing of thread creation, slot setup or the final frees. Main is not a party
 * and never reads the clock: with as many workers as cores, a third runnable thread would wait
 * for a free core, and its timestamps would land anywhere inside the phase (seen here: two-thread
 * phases "taking" 0 ms). */
static pthread_barrier_t start_barrier;

/* splitmix64: turns (seed, thread index) into a well-mixed, nonzero xorshift state. */
static uint64_t mix_seed(uint64_t seed, unsigned index)
{
    uint64_t z = seed + (uint64_t)(index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z != 0 ? z : 0x2545f4914f6cdd1dull;
}

/* xorshift64 (Marsaglia 2003). The state must be nonzero, which mix_seed guarantees. */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One churn operation: pick a random slot, free its block (if any), allocate a new block of a
 * uniformly random size in MIN_SIZE..MAX_SIZE and touch its first byte, so that the allocator
 * cannot hand out memory it never backs. The modulo bias over 2^64 is negligible here. */
static void *churn_worker(void *arg)
{
    struct worker *w = arg;
    void *slots[SLOT_COUNT] = {0};
    uint64_t rng = mix_seed(w->seed, w->index);

    pthread_barrier_wait(&start_barrier);
    w->start_ns = now_ns();
    for (uint64_t i = 0; i < w->ops; i++) {
        uint64_t r = xorshift64(&rng);
        unsigned slot = (unsigned)(r % SLOT_COUNT);
        size_t size = MIN_SIZE + (size_t)((r >> 32) % (MAX_SIZE - MIN_SIZE + 1));
        free(slots[slot]);
        char *block = malloc(size);
        if (block == NULL) {
            w->failed = 1;
            break;
        }
        *(volatile char *)block = (char)i;
        slots[slot] = block;
    }
    w->end_ns = now_ns();

    for (unsigned slot = 0; slot < SLOT_COUNT; slot++)
        free(slots[slot]);
    return NULL;
}

/* The throttling check's load: a serial xorshift chain, pure ALU work that touches no memory
 * shared with the other thread, so two threads on two free cores take as long as one. */
static void *spin_worker(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = mix_seed(w->seed, w->index);

    pthread_barrier_wait(&start_barrier);
    w->start_ns = now_ns();
    for (uint64_t i = 0; i < w->ops; i++)
        xorshift64(&rng);
    w->end_ns = now_ns();

    w->checksum = rng;
    return NULL;
}

/* Runs fn on thread_count threads, each given ops and seed; returns the wall-clock nanoseconds
 * from the first worker's start to the last worker's end, or 0 on failure (after printing why).
 * workers must hold thread_count entries. */
static uint64_t run_phase(void *(*fn)(void *), struct worker *workers, unsigned thread_count,
                          uint64_t ops, uint64_t seed)
{
    int err = pthread_barrier_init(&start_barrier, NULL, thread_count);
    if (err != 0) {
        fprintf(stderr, "malloc_bench: pthread_barrier_init: %s\n", strerror(err));
        return 0;
    }
    for (unsigned t = 0; t < thread_count; t++) {
        workers[t] = (struct worker){.index = t, .ops = ops, .seed = seed};
        if ((err = pthread_create(&workers[t].thread, NULL, fn, &workers[t])) != 0) {
            /* The barrier counts thread_count parties; with a thread missing it would never
             * open, so there is no clean way back: give up on the whole process. */
            fprintf(stderr, "malloc_bench: pthread_create: %s\n", strerror(err));
            exit(1);
        }
    }
    for (unsigned t = 0; t < thread_count; t++)
        pthread_join(workers[t].thread, NULL);
    pthread_barrier_destroy(&start_barrier);

    uint64_t first_start = UINT64_MAX, last_end = 0;
    for (unsigned t = 0; t < thread_count; t++) {
        if (workers[t].start_ns < first_start) first_start = workers[t].start_ns;
        if (workers[t].end_ns > last_end) last_end = workers[t].end_ns;
    }
    return last_end > first_start ? last_end - first_start : 1;
}

/* Parses a decimal integer in [min, max]; returns 0 on success, -1 (after printing) otherwise. */
static int parse_u64(const char *what, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (text[0] == '\0' || text[0] == '-' || *end != '\0' || errno != 0 || value < min ||
        value > max) {
        fprintf(stderr,
                "malloc_bench: %s: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'\n",
                what, min, max, text);
        return -1;
    }
    *out = value;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: malloc_bench THREADS OPS [SEED]\n"
                    "       malloc_bench --spin ITERATIONS\n");
    return 2;
}

/* Spin mode: speedup = (2 threads' work / 2-thread time) / (1 thread's work / 1-thread time)
 * = 2 * t1 / t2. About 2.0 with two free cores; about 1.0 when the second core is throttled. */
static int run_spin(uint64_t iterations)
{
    struct worker workers[2];
    uint64_t t1 = run_phase(spin_worker, workers, 1, iterations, 1);
    uint64_t t2 = run_phase(spin_worker, workers, 2, iterations, 1);
    if (t1 == 0 || t2 == 0) return 1;
    printf("spin=%" PRIu64 " t1_ms=%.1f t2_ms=%.1f speedup=%.2f\n", iterations, (double)t1 / 1e6,
           (double)t2 / 1e6, 2.0 * (double)t1 / (double)t2);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t thread_count, ops, seed = 1;

    if (argc >= 2 && strcmp(argv[1], "--spin") == 0) {
        if (argc != 3 || parse_u64("ITERATIONS", argv[2], 1, UINT64_MAX, &ops) != 0) return usage();
        return run_spin(ops);
    }
    if (argc < 3 || argc > 4 || parse_u64("THREADS", argv[1], 1, MAX_THREADS, &thread_count) != 0 ||
        parse_u64("OPS", argv[2], 1, UINT64_MAX, &ops) != 0 ||
        (argc == 4 && parse_u64("SEED", argv[3], 0, UINT64_MAX, &seed) != 0))
        return usage();

    struct worker *workers = calloc(thread_count, sizeof *workers);
    if (workers == NULL) {
        fprintf(stderr, "malloc_bench: out of memory\n");
        return 1;
    }
    uint64_t elapsed = run_phase(churn_worker, workers, (unsigned)thread_count, ops, seed);
    if (elapsed == 0) return 1;
    int failed = 0;
    for (unsigned t = 0; t < thread_count; t++) {
        if (workers[t].failed) {
            fprintf(stderr, "malloc_bench: malloc returned NULL in thread %u\n", t);
            failed = 1;
        }
    }
    free(workers);
    if (failed) return 1;

    /* ns_per_op is wall-clock time divided by the operations of ONE thread (not of all threads):
     * the time an operation costs as seen by each thread. Perfect scaling keeps it flat from 1
     * to 2 threads; contention or a throttled core raises it. One operation is one free plus one
     * malloc (the first visit to a slot has nothing to free). */
    printf("threads=%" PRIu64 " ops=%" PRIu64 " ns_per_op=%.2f\n", thread_count, ops,
           (double)elapsed / (double)ops);
    return 0;
}
