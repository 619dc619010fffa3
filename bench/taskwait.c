/* taskwait: the cost of the task API of issue 13 (links libmemlimits). Never part of ctest.
 *
 *   taskwait cost ROUNDS ITERS
 *     What ml_cond_wait costs next to pthread_cond_wait: two threads hand a turn back and forth
 *     through one mutex and one condition, ITERS hand-offs per round, each side waiting for its
 *     turn. Four variants, interleaved round-robin (the starting one rotates): pthread_cond_wait
 *     outside tasks; ml_cond_wait outside tasks; ml_cond_wait inside tasks with an allocation
 *     limit only (nothing can interrupt them from elsewhere: no registration); ml_cond_wait inside
 *     tasks with a token each (the registration path). One line per round and variant (ns per
 *     hand-off, i.e. one signal plus one wait), then medians with min-max.
 *
 *   taskwait overhead ROUNDS ITERS
 *     The same four variants on one thread, without blocking: ITERS timed waits whose deadline
 *     has passed (pthread_cond_timedwait returns ETIMEDOUT at once), so the figure is the work
 *     each call adds around the wait itself (registration, the look at the tokens), free of the
 *     scheduling noise of a hand-off. ns per call, medians with min-max, interleaved. A fifth row,
 *     "own work", is ml_cond_wait in a token task whose token is set: it registers, looks, finds
 *     the interrupt, deregisters and returns ECANCELED without calling pthread at all, which is
 *     exactly the work ml_cond_wait adds to a wait in a token task.
 *
 *   taskwait latency MODE TRIALS SEED
 *     Time from ml_token_set on the main thread to the return of the waiting thread's call, per
 *     trial, in nanoseconds (CLOCK_MONOTONIC on both sides). MODE: cond (ml_cond_wait in a task
 *     with the token: the waker thread broadcasts), fd (poll on ml_token_fd, outside tasks: the
 *     eventfd write wakes it), epoll (the same with epoll_wait). The main thread waits until the
 *     waiter is blocked (2 ms), then a random 0.1..1 ms, then sets. Summary: median, p99, max.
 *
 *   taskwait counters ITERS
 *     ns per call of ml_task_allocated, ml_task_remaining, ml_is_masked and ml_thread_allocated
 *     inside a task with an allocation limit and a token (nested two deep), and of an empty call
 *     through a function pointer for reference. Median of 9 rounds. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench_common.h"
#include "memlimits.h"

static const char *prog = "taskwait";

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, uint64_t n, double p)
{
    uint64_t k = (uint64_t)(p * (double)n + 0.999999); /* nearest rank */
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

/* ------------------------------------------------------------------------------ cost -- */

enum { V_PTHREAD, V_ML_OUTSIDE, V_ML_ALLOC_TASK, V_ML_TOKEN_TASK, VARIANTS };
static const char *const variant_names[VARIANTS] = {"pthread_cond_wait", "ml_cond_wait-no-task",
                                                    "ml_cond_wait-alloc-task",
                                                    "ml_cond_wait-token-task"};

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int turn; /* 0 or 1: whose turn it is */
    uint64_t iters;
    int variant;
    ml_token *tokens[2];
} pp;

typedef struct side {
    int me;
    uint64_t ns;
} side;

static void pingpong(void *arg)
{
    side *s = arg;
    int use_ml = pp.variant != V_PTHREAD;
    uint64_t start = bench_now_ns();
    pthread_mutex_lock(&pp.mutex);
    for (uint64_t i = 0; i < pp.iters; i++) {
        while (pp.turn != s->me) {
            int rc =
                use_ml ? ml_cond_wait(&pp.cond, &pp.mutex) : pthread_cond_wait(&pp.cond, &pp.mutex);
            if (rc != 0) bench_die(prog, "wait failed");
        }
        pp.turn = !s->me;
        pthread_cond_signal(&pp.cond);
    }
    pthread_mutex_unlock(&pp.mutex);
    s->ns = bench_now_ns() - start;
}

static void *pingpong_thread(void *arg)
{
    side *s = arg;
    if (pp.variant == V_ML_ALLOC_TASK) {
        if (ml_limit_allocations(UINT64_MAX / 4, pingpong, s, NULL) != ML_OK)
            bench_die(prog, "task interrupted");
    } else if (pp.variant == V_ML_TOKEN_TASK) {
        if (ml_limit_with_token(pp.tokens[s->me], pingpong, s) != ML_OK)
            bench_die(prog, "task interrupted");
    } else {
        pingpong(s);
    }
    return NULL;
}

static double run_pingpong(int variant, uint64_t iters)
{
    pp.variant = variant;
    pp.iters = iters;
    pp.turn = 0;
    side s[2] = {{0, 0}, {1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, pingpong_thread, &s[i]) != 0)
            bench_die(prog, "pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    uint64_t ns = s[0].ns > s[1].ns ? s[0].ns : s[1].ns;
    return (double)ns / (double)(2 * iters); /* per hand-off */
}

static int cmd_cost(uint64_t rounds, uint64_t iters)
{
    pthread_mutex_init(&pp.mutex, NULL);
    pthread_cond_init(&pp.cond, NULL);
    for (int i = 0; i < 2; i++)
        if ((pp.tokens[i] = ml_token_create()) == NULL) bench_die(prog, "ml_token_create");
    double *res[VARIANTS];
    for (int v = 0; v < VARIANTS; v++)
        if ((res[v] = calloc(rounds, sizeof(double))) == NULL) bench_die(prog, "out of memory");
    run_pingpong(V_PTHREAD, iters / 10 + 1); /* warm-up */
    printf("# round variant ns_per_handoff\n");
    for (uint64_t r = 0; r < rounds; r++)
        for (int k = 0; k < VARIANTS; k++) {
            int v = (int)((r + (uint64_t)k) % VARIANTS);
            res[v][r] = run_pingpong(v, iters);
            printf("%" PRIu64 " %s %.1f\n", r, variant_names[v], res[v][r]);
            fflush(stdout);
        }
    for (int v = 0; v < VARIANTS; v++)
        qsort(res[v], rounds, sizeof(double), cmp_double);
    double base = res[V_PTHREAD][rounds / 2];
    for (int v = 0; v < VARIANTS; v++)
        printf("# summary variant=%s rounds=%" PRIu64 " iters=%" PRIu64
               " median_ns=%.1f min_ns=%.1f max_ns=%.1f extra_ns=%.1f ratio=%.3f\n",
               variant_names[v], rounds, iters, res[v][rounds / 2], res[v][0], res[v][rounds - 1],
               res[v][rounds / 2] - base, res[v][rounds / 2] / base);
    for (int i = 0; i < 2; i++)
        ml_token_destroy(pp.tokens[i]);
    return 0;
}

/* -------------------------------------------------------------------------- overhead -- */

static void timed_out_waits(void *arg)
{
    double *ns = arg;
    struct timespec past = {0, 0};
    int use_ml = pp.variant != V_PTHREAD;
    pthread_mutex_lock(&pp.mutex);
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < pp.iters; i++) {
        int rc = use_ml ? ml_cond_timedwait(&pp.cond, &pp.mutex, &past)
                        : pthread_cond_timedwait(&pp.cond, &pp.mutex, &past);
        if (rc != ETIMEDOUT) bench_die(prog, "a wait did not time out");
    }
    *ns = (double)(bench_now_ns() - start) / (double)pp.iters;
    pthread_mutex_unlock(&pp.mutex);
}

static void pending_waits(void *arg)
{
    double *ns = arg;
    pthread_mutex_lock(&pp.mutex);
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < pp.iters; i++)
        if (ml_cond_wait(&pp.cond, &pp.mutex) != ECANCELED) bench_die(prog, "not interrupted");
    *ns = (double)(bench_now_ns() - start) / (double)pp.iters;
    pthread_mutex_unlock(&pp.mutex);
}

#define OWN_WORK VARIANTS /* the fifth row */

static double run_overhead(int variant, uint64_t iters)
{
    double ns = 0;
    if (variant == OWN_WORK) {
        pp.iters = iters;
        if (ml_limit_with_token(pp.tokens[1], pending_waits, &ns) != ML_TOKEN)
            bench_die(prog, "the task with a set token was not interrupted");
        return ns;
    }
    pp.variant = variant;
    pp.iters = iters;
    if (variant == V_ML_ALLOC_TASK) {
        if (ml_limit_allocations(UINT64_MAX / 4, timed_out_waits, &ns, NULL) != ML_OK)
            bench_die(prog, "task interrupted");
    } else if (variant == V_ML_TOKEN_TASK) {
        if (ml_limit_with_token(pp.tokens[0], timed_out_waits, &ns) != ML_OK)
            bench_die(prog, "task interrupted");
    } else {
        timed_out_waits(&ns);
    }
    return ns;
}

static int cmd_overhead(uint64_t rounds, uint64_t iters)
{
    static const char *const names[OWN_WORK + 1] = {
        "pthread_cond_timedwait", "ml_cond_timedwait-no-task", "ml_cond_timedwait-alloc-task",
        "ml_cond_timedwait-token-task", "ml_cond_wait-own-work"};
    pthread_mutex_init(&pp.mutex, NULL);
    pthread_cond_init(&pp.cond, NULL);
    for (int i = 0; i < 2; i++)
        if ((pp.tokens[i] = ml_token_create()) == NULL) bench_die(prog, "ml_token_create");
    ml_token_set(pp.tokens[1]);
    double *res[OWN_WORK + 1];
    for (int v = 0; v <= OWN_WORK; v++)
        if ((res[v] = calloc(rounds, sizeof(double))) == NULL) bench_die(prog, "out of memory");
    run_overhead(V_ML_TOKEN_TASK, iters / 10 + 1); /* warm-up, and the waker started */
    printf("# round variant ns_per_call\n");
    for (uint64_t r = 0; r < rounds; r++)
        for (int k = 0; k <= OWN_WORK; k++) {
            int v = (int)((r + (uint64_t)k) % (OWN_WORK + 1));
            res[v][r] = run_overhead(v, v == OWN_WORK ? iters * 50 : iters);
            printf("%" PRIu64 " %s %.1f\n", r, names[v], res[v][r]);
        }
    for (int v = 0; v <= OWN_WORK; v++)
        qsort(res[v], rounds, sizeof(double), cmp_double);
    double base = res[V_PTHREAD][rounds / 2];
    for (int v = 0; v <= OWN_WORK; v++)
        printf("# summary variant=%s rounds=%" PRIu64 " iters=%" PRIu64
               " median_ns=%.1f min_ns=%.1f max_ns=%.1f extra_ns=%.1f\n",
               names[v], rounds, v == OWN_WORK ? iters * 50 : iters, res[v][rounds / 2], res[v][0],
               res[v][rounds - 1], v == OWN_WORK ? 0.0 : res[v][rounds / 2] - base);
    for (int i = 0; i < 2; i++)
        ml_token_destroy(pp.tokens[i]);
    return 0;
}

/* --------------------------------------------------------------------------- latency -- */

enum { M_COND, M_FD, M_EPOLL };

static struct {
    int mode;
    ml_token *token;
    int fd;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    volatile int started;
    uint64_t returned_ns;
    int ok;
    sem_t go, done;
    int quit;
} lt;

static void cond_waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lt.mutex);
    __atomic_store_n(&lt.started, 1, __ATOMIC_RELEASE);
    int rc;
    while ((rc = ml_cond_wait(&lt.cond, &lt.mutex)) == 0) {
    }
    lt.returned_ns = bench_now_ns();
    lt.ok = rc == ECANCELED;
    pthread_mutex_unlock(&lt.mutex);
}

static void fd_waiter(void)
{
    __atomic_store_n(&lt.started, 1, __ATOMIC_RELEASE);
    int n;
    if (lt.mode == M_EPOLL) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = lt.fd}, out;
        epoll_ctl(ep, EPOLL_CTL_ADD, lt.fd, &ev);
        while ((n = epoll_wait(ep, &out, 1, -1)) < 0 && errno == EINTR) {
        }
        lt.returned_ns = bench_now_ns();
        close(ep);
    } else {
        struct pollfd p = {lt.fd, POLLIN, 0};
        while ((n = poll(&p, 1, -1)) < 0 && errno == EINTR) {
        }
        lt.returned_ns = bench_now_ns();
    }
    lt.ok = n == 1;
}

static void *latency_worker(void *arg)
{
    (void)arg;
    for (;;) {
        sem_wait(&lt.go);
        if (lt.quit) return NULL;
        if (lt.mode == M_COND) {
            if (ml_limit_with_token(lt.token, cond_waiter, NULL) != ML_TOKEN) lt.ok = 0;
        } else {
            fd_waiter();
        }
        sem_post(&lt.done);
    }
}

static int cmd_latency(const char *mode_name, uint64_t trials, uint64_t seed)
{
    if (strcmp(mode_name, "cond") == 0)
        lt.mode = M_COND;
    else if (strcmp(mode_name, "fd") == 0)
        lt.mode = M_FD;
    else if (strcmp(mode_name, "epoll") == 0)
        lt.mode = M_EPOLL;
    else
        bench_die(prog, "latency MODE: cond, fd or epoll");
    pthread_mutex_init(&lt.mutex, NULL);
    pthread_cond_init(&lt.cond, NULL);
    sem_init(&lt.go, 0, 0);
    sem_init(&lt.done, 0, 0);
    pthread_t tid;
    if (pthread_create(&tid, NULL, latency_worker, NULL) != 0) bench_die(prog, "pthread_create");
    uint64_t *ns = calloc(trials, sizeof *ns);
    if (ns == NULL) bench_die(prog, "out of memory");
    uint64_t rng = bench_mix(seed, 13), failures = 0;
    printf("# mode trial ns ok\n");
    for (uint64_t t = 0; t < trials; t++) {
        lt.token = ml_token_create();
        if (lt.token == NULL) bench_die(prog, "ml_token_create failed");
        lt.fd = lt.mode == M_COND ? -1 : ml_token_fd(lt.token);
        if (lt.mode != M_COND && lt.fd < 0) bench_die(prog, "ml_token_fd failed");
        lt.started = 0;
        lt.ok = 0;
        sem_post(&lt.go);
        while (!__atomic_load_n(&lt.started, __ATOMIC_ACQUIRE))
            sched_yield();
        sleep_ns(2000000); /* blocked in the kernel by now */
        sleep_ns(bench_range(&rng, 100000, 1000000));
        uint64_t set_ns = bench_now_ns();
        ml_token_set(lt.token);
        sem_wait(&lt.done);
        ns[t] = lt.returned_ns - set_ns;
        failures += !lt.ok;
        printf("%s %" PRIu64 " %" PRIu64 " %d\n", mode_name, t, ns[t], lt.ok);
        ml_token_destroy(lt.token);
    }
    lt.quit = 1;
    sem_post(&lt.go);
    pthread_join(tid, NULL);
    qsort(ns, trials, sizeof *ns, cmp_u64);
    printf("# summary mode=%s trials=%" PRIu64 " median_ns=%" PRIu64 " p99_ns=%" PRIu64
           " max_ns=%" PRIu64 " min_ns=%" PRIu64 " failures=%" PRIu64 "\n",
           mode_name, trials, pct(ns, trials, 0.5), pct(ns, trials, 0.99), ns[trials - 1], ns[0],
           failures);
    free(ns);
    return failures != 0;
}

/* -------------------------------------------------------------------------- counters -- */

#define COUNTER_ROUNDS 9

static uint64_t call_empty(void)
{
    return 0;
}

static uint64_t call_masked(void)
{
    return (uint64_t)ml_is_masked();
}

static struct {
    const char *name;
    uint64_t (*fn)(void);
    double ns[COUNTER_ROUNDS];
} counters[] = {
    {"empty-call", call_empty, {0}},
    {"ml_task_allocated", ml_task_allocated, {0}},
    {"ml_task_remaining", ml_task_remaining, {0}},
    {"ml_is_masked", call_masked, {0}},
    {"ml_thread_allocated", ml_thread_allocated, {0}},
};
#define NCOUNTERS (sizeof counters / sizeof counters[0])

static uint64_t counter_iters;
static volatile uint64_t sink;

static void counters_inner(void *arg)
{
    (void)arg;
    for (int r = 0; r < COUNTER_ROUNDS; r++)
        for (size_t c = 0; c < NCOUNTERS; c++) {
            uint64_t (*volatile fn)(void) = counters[c].fn; /* no inlining, no hoisting */
            uint64_t acc = 0, start = bench_now_ns();
            for (uint64_t i = 0; i < counter_iters; i++)
                acc += fn();
            counters[c].ns[r] = (double)(bench_now_ns() - start) / (double)counter_iters;
            sink = acc;
        }
}

static void counters_outer(void *arg)
{
    ml_limits inner = {1 << 30, 0, NULL, 0};
    if (ml_run(&inner, counters_inner, arg, NULL) != ML_OK) bench_die(prog, "inner interrupted");
}

static int cmd_counters(uint64_t iters)
{
    counter_iters = iters;
    ml_token *token = ml_token_create();
    ml_limits outer = {(uint64_t)1 << 40, 0, token, 0};
    if (ml_run(&outer, counters_outer, NULL, NULL) != ML_OK) bench_die(prog, "task interrupted");
    ml_token_destroy(token);
    for (size_t c = 0; c < NCOUNTERS; c++) {
        qsort(counters[c].ns, COUNTER_ROUNDS, sizeof(double), cmp_double);
        printf("# summary call=%s iters=%" PRIu64 " median_ns=%.2f min_ns=%.2f max_ns=%.2f\n",
               counters[c].name, iters, counters[c].ns[COUNTER_ROUNDS / 2], counters[c].ns[0],
               counters[c].ns[COUNTER_ROUNDS - 1]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!ml_active()) bench_die(prog, "memlimits does not own malloc in this process");
    if (argc >= 2 && strcmp(argv[1], "cost") == 0)
        return cmd_cost(bench_arg(argc, argv, 2, 11, 1, 100000),
                        bench_arg(argc, argv, 3, 100000, 1, UINT64_MAX));
    if (argc >= 2 && strcmp(argv[1], "overhead") == 0)
        return cmd_overhead(bench_arg(argc, argv, 2, 11, 1, 100000),
                            bench_arg(argc, argv, 3, 1000000, 1, UINT64_MAX));
    if (argc >= 3 && strcmp(argv[1], "latency") == 0)
        return cmd_latency(argv[2], bench_arg(argc, argv, 3, 1000, 1, 10000000),
                           bench_arg(argc, argv, 4, 1, 0, UINT64_MAX));
    if (argc >= 2 && strcmp(argv[1], "counters") == 0)
        return cmd_counters(bench_arg(argc, argv, 2, 10000000, 1, UINT64_MAX));
    fprintf(stderr, "usage: taskwait cost [ROUNDS] [ITERS]\n"
                    "       taskwait overhead [ROUNDS] [ITERS]\n"
                    "       taskwait latency cond|fd|epoll [TRIALS] [SEED]\n"
                    "       taskwait counters [ITERS]\n");
    return 2;
}
