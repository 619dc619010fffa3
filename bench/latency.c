/* latency: interrupt latency of tokens and the cost of the fast path inside a task (links
 * libmemlimits).
 *
 *   latency token MODE TRIALS SEED
 *     Time from ml_token_set, called on the main thread, to ml_run returning on a worker thread,
 *     per trial, in nanoseconds (CLOCK_MONOTONIC on both sides). MODE:
 *       alloc       the task allocates and frees 64-byte blocks in a loop until malloc fails
 *                   (default ENOMEM delivery; it notices at its next event, within 32 KiB);
 *       alloc-wake  the same with ML_WAKE (the waker thread signals it as well);
 *       read        the task is blocked in read() on an empty pipe, with ML_WAKE: the wake-up
 *                   signal makes read return EINTR, and the task returns.
 *     The main thread waits until the worker is running its task (and, for read, a further
 *     2 ms so that it is blocked in the kernel), then waits a random 0.1..1 ms, sets the token
 *     and waits on a semaphore for the worker. One line per trial ("ns=..."), then a summary.
 *
 *   latency fastpath ROUNDS OPS SEED
 *     The malloc fast path on this thread, ns per operation (one free + one malloc of 16..528
 *     bytes over 1000 slots, as in malloc_bench), in three variants interleaved round-robin
 *     within one process: no task; inside a task with an allocation limit that never fires
 *     (the limit is folded into the countdown: no extra events); inside a task with a token
 *     and the global memory limit (remote limits: an event every 32 KiB to look at them). One
 *     line per round and variant, then a summary of medians.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "memlimits.h"

static const char *prog = "latency";

/* ------------------------------------------------------------------------- tokens -- */

enum mode { M_ALLOC, M_ALLOC_WAKE, M_READ };

struct token_trial {
    ml_token *token;
    enum mode mode;
    int pipe_rd;
    volatile int started;
    uint64_t returned_ns;
    int status;
    uint64_t loops;
    sem_t go, done;
    int quit;
};

static void alloc_loop(void *arg)
{
    struct token_trial *tt = arg;
    __atomic_store_n(&tt->started, 1, __ATOMIC_RELEASE);
    uint64_t loops = 0;
    for (;;) {
        void *p = malloc(64);
        if (p == NULL) break;
        *(volatile char *)p = 1;
        free(p);
        loops++;
    }
    tt->loops = loops;
}

static void read_blocked(void *arg)
{
    struct token_trial *tt = arg;
    __atomic_store_n(&tt->started, 1, __ATOMIC_RELEASE);
    char c;
    for (;;) {
        ssize_t n = read(tt->pipe_rd, &c, 1);
        if (n < 0 && errno == EINTR && ml_is_interrupted()) return;
        if (n == 0) return; /* closed: should not happen */
    }
}

static void *token_worker(void *arg)
{
    struct token_trial *tt = arg;
    for (;;) {
        sem_wait(&tt->go);
        if (tt->quit) return NULL;
        ml_limits lim = {0, 0, tt->token, 0};
        void (*fn)(void *) = alloc_loop;
        if (tt->mode == M_ALLOC_WAKE) lim.flags = ML_WAKE;
        if (tt->mode == M_READ) {
            lim.flags = ML_WAKE;
            fn = read_blocked;
        }
        tt->status = (int)ml_run(&lim, fn, tt, NULL);
        tt->returned_ns = bench_now_ns();
        sem_post(&tt->done);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, uint64_t n, double p)
{
    /* nearest rank */
    uint64_t k = (uint64_t)(p * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return sorted[k - 1];
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmd_token(const char *mode_name, uint64_t trials, uint64_t seed)
{
    struct token_trial tt;
    memset(&tt, 0, sizeof tt);
    if (strcmp(mode_name, "alloc") == 0)
        tt.mode = M_ALLOC;
    else if (strcmp(mode_name, "alloc-wake") == 0)
        tt.mode = M_ALLOC_WAKE;
    else if (strcmp(mode_name, "read") == 0)
        tt.mode = M_READ;
    else
        bench_die(prog, "token MODE: alloc, alloc-wake or read");
    int fds[2];
    if (pipe(fds) != 0) bench_die(prog, "pipe failed");
    tt.pipe_rd = fds[0];
    sem_init(&tt.go, 0, 0);
    sem_init(&tt.done, 0, 0);
    pthread_t tid;
    if (pthread_create(&tid, NULL, token_worker, &tt) != 0) bench_die(prog, "pthread_create");
    uint64_t *ns = calloc(trials, sizeof *ns);
    if (ns == NULL) bench_die(prog, "out of memory");
    uint64_t rng = bench_mix(seed, 5), failures = 0;
    printf("# mode trial ns status\n");
    for (uint64_t t = 0; t < trials; t++) {
        tt.token = ml_token_create();
        if (tt.token == NULL) bench_die(prog, "ml_token_create failed");
        tt.started = 0;
        sem_post(&tt.go);
        while (!__atomic_load_n(&tt.started, __ATOMIC_ACQUIRE))
            sched_yield();
        if (tt.mode == M_READ) sleep_ns(2000000);
        sleep_ns(bench_range(&rng, 100000, 1000000));
        uint64_t set_ns = bench_now_ns();
        ml_token_set(tt.token);
        sem_wait(&tt.done);
        ns[t] = tt.returned_ns - set_ns;
        if (tt.status != ML_TOKEN) failures++;
        printf("%s %" PRIu64 " %" PRIu64 " %d\n", mode_name, t, ns[t], tt.status);
        ml_token_destroy(tt.token);
    }
    tt.quit = 1;
    sem_post(&tt.go);
    pthread_join(tid, NULL);
    qsort(ns, trials, sizeof *ns, cmp_u64);
    printf("# summary mode=%s trials=%" PRIu64 " median_ns=%" PRIu64 " p99_ns=%" PRIu64
           " max_ns=%" PRIu64 " min_ns=%" PRIu64 " not_token_status=%" PRIu64 "\n",
           mode_name, trials, pct(ns, trials, 0.5), pct(ns, trials, 0.99), ns[trials - 1], ns[0],
           failures);
    free(ns);
    close(fds[0]);
    close(fds[1]);
    return failures != 0;
}

/* ----------------------------------------------------------------------- fast path -- */

enum { SLOTS = 1000, MIN_SIZE = 16, MAX_SIZE = 528 };

struct churn {
    uint64_t ops, seed, ns;
    void *slots[SLOTS];
};

static void churn(void *arg)
{
    struct churn *c = arg;
    uint64_t rng = c->seed;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < c->ops; i++) {
        uint64_t r = bench_rand(&rng);
        unsigned slot = (unsigned)(r % SLOTS);
        size_t size = MIN_SIZE + (size_t)((r >> 32) % (MAX_SIZE - MIN_SIZE + 1));
        free(c->slots[slot]);
        char *b = malloc(size);
        if (b == NULL) bench_die(prog, "malloc returned NULL");
        *(volatile char *)b = (char)i;
        c->slots[slot] = b;
    }
    c->ns = bench_now_ns() - start;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_fastpath(uint64_t rounds, uint64_t ops, uint64_t seed)
{
    static const char *const names[3] = {"none", "task-alloc-limit", "task-token+global"};
    double *res[3];
    for (int v = 0; v < 3; v++)
        if ((res[v] = calloc(rounds, sizeof(double))) == NULL) bench_die(prog, "out of memory");
    struct churn *c = calloc(1, sizeof *c);
    ml_token *token = ml_token_create();
    if (c == NULL || token == NULL) bench_die(prog, "out of memory");
    c->ops = ops;
    /* Warm-up: fill the slots, fault in jemalloc's pages. */
    c->seed = bench_mix(seed, 99);
    churn(c);
    printf("# round variant ns_per_op\n");
    for (uint64_t r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            int v = (int)((r + (uint64_t)k) % 3); /* rotate the starting variant */
            c->seed = bench_mix(seed, r);
            if (v == 0) {
                churn(c);
            } else if (v == 1) {
                uint64_t allocated;
                if (ml_limit_allocations(BENCH_TASK_LIMIT, churn, c, &allocated) != ML_OK)
                    bench_die(prog, "task interrupted");
            } else {
                ml_limits lim = {0, 1, token, 0};
                if (ml_run(&lim, churn, c, NULL) != ML_OK) bench_die(prog, "task interrupted");
            }
            res[v][r] = (double)c->ns / (double)ops;
            printf("%" PRIu64 " %s %.3f\n", r, names[v], res[v][r]);
        }
    }
    for (int v = 0; v < 3; v++)
        qsort(res[v], rounds, sizeof(double), cmp_double);
    double base = res[0][rounds / 2];
    for (int v = 0; v < 3; v++)
        printf("# summary variant=%s rounds=%" PRIu64 " ops=%" PRIu64
               " median_ns=%.3f min_ns=%.3f max_ns=%.3f ratio=%.4f\n",
               names[v], rounds, ops, res[v][rounds / 2], res[v][0], res[v][rounds - 1],
               res[v][rounds / 2] / base);
    for (unsigned s = 0; s < SLOTS; s++)
        free(c->slots[s]);
    free(c);
    ml_token_destroy(token);
    for (int v = 0; v < 3; v++)
        free(res[v]);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (!ml_active()) bench_die(prog, "memlimits does not own malloc in this process");
    if (argc >= 3 && strcmp(argv[1], "token") == 0) {
        uint64_t trials = bench_arg(argc, argv, 3, 200, 1, 10000000);
        uint64_t seed = bench_arg(argc, argv, 4, 1, 0, UINT64_MAX);
        return cmd_token(argv[2], trials, seed);
    }
    if (argc >= 2 && strcmp(argv[1], "fastpath") == 0) {
        uint64_t rounds = bench_arg(argc, argv, 2, 21, 1, 100000);
        uint64_t ops = bench_arg(argc, argv, 3, 2000000, 1, UINT64_MAX);
        uint64_t seed = bench_arg(argc, argv, 4, 1, 0, UINT64_MAX);
        return cmd_fastpath(rounds, ops, seed);
    }
    fprintf(stderr, "usage: latency token alloc|alloc-wake|read [TRIALS] [SEED]\n"
                    "       latency fastpath [ROUNDS] [OPS] [SEED]\n");
    return 2;
}
