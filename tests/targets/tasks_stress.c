/* Target for tests/test_stress.c: interrupt delivery under load, in a program linked with
 * -lmemlimits (built with -fno-builtin), with the clock and signal helpers of tasks_common.h.
 *
 *   tasks_stress interrupts THREADS SECONDS [TARGET]
 *       THREADS workers loop running small tasks that are always interrupted, until TARGET
 *       interrupts were delivered (default 20000) or SECONDS passed: allocation limits
 *       (ENOMEM and ML_UNWIND delivery), tokens set by a controller thread (directly, and from a
 *       SIGUSR1 handler on the worker), ML_WAKE, nested tasks, global-memory tasks building lists.
 *       Inside, resources (ml_with_resource, nested), masked sections and cleanups.
 *   tasks_stress thread_exit SECONDS
 *       short-lived threads each run one to three ML_WAKE token tasks and exit at once, while a
 *       controller sets, destroys and recreates the tokens they use.
 *   tasks_stress token_destroy THREADS SECONDS
 *       workers run tasks with whatever token the controller published last, while the
 *       controller destroys tokens tasks still hold and creates new ones (recycling slots).
 *
 * Checked: every acquired resource is released exactly once (LIFO per thread), releases and
 * cleanups run masked and see ml_is_interrupted(), masked allocations are never refused, no code
 * after an unwinding allocation runs, no interrupt is lost (a task whose limit was crossed or
 * whose token was set returns a nonzero status), a destroyed token is refused without running the
 * task, and nothing deadlocks (watchdog). Prints "stats ..." lines, then "ok MODE" or FAIL lines;
 * the exit status is 0 only when every check held. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tasks_common.h"

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------------------------------
 * Counters. Errors are named so that a failure says which invariant broke. */
#define COUNTERS(X)                                                                                \
    X(tasks)                                                                                       \
    X(interrupts)                                                                                  \
    X(st_allocation)                                                                               \
    X(st_token)                                                                                    \
    X(st_memory)                                                                                   \
    X(st_einval)                                                                                   \
    X(acquired)                                                                                    \
    X(released)                                                                                    \
    X(cleanups)                                                                                    \
    X(token_sets)                                                                                  \
    X(signal_sets)                                                                                 \
    X(tokens_destroyed)                                                                            \
    X(threads_started)

#define ERRORS(X)                                                                                  \
    X(lost)                    /* a task that had to be interrupted returned ML_OK */              \
    X(wrong_status)            /* a status the task's limits cannot produce */                     \
    X(release_twice)           /* release with no resource outstanding, or not the innermost */    \
    X(release_skipped)         /* a resource still outstanding after ml_run returned */            \
    X(release_not_interrupted) /* release after an interrupt saw ml_is_interrupted() == 0 */       \
    X(masked_refused)          /* an allocation in a masked section, acquire or release failed */  \
    X(cleanup_count)           /* a cleanup did not run exactly once */                            \
    X(after_unwind)            /* code after an unwinding allocation ran */                        \
    X(runaway)                 /* a task loop hit its safety cap: never interrupted */             \
    X(ran_with_einval)         /* the task function ran although ml_run refused */                 \
    X(bad_resource_rc)         /* ml_with_resource returned something scope/acquire did not */

#define DECLARE(name) static uint64_t c_##name;
COUNTERS(DECLARE)
ERRORS(DECLARE)
#undef DECLARE

#define INC(name) __atomic_add_fetch(&c_##name, 1, __ATOMIC_RELAXED)
#define GET(name) __atomic_load_n(&c_##name, __ATOMIC_RELAXED)

static int report(const char *mode)
{
    int bad = 0;
    say("stats");
#define PRINT(name) say(" %s=%llu", #name, (unsigned long long)GET(name));
    COUNTERS(PRINT)
#undef PRINT
    say("\n");
#define CHECK_ZERO(name)                                                                           \
    if (GET(name) != 0) {                                                                          \
        say("FAIL %s: %s = %llu\n", mode, #name, (unsigned long long)GET(name));                   \
        bad = 1;                                                                                   \
    }
    ERRORS(CHECK_ZERO)
#undef CHECK_ZERO
    if (GET(acquired) != GET(released)) {
        say("FAIL %s: %llu resources acquired, %llu released\n", mode,
            (unsigned long long)GET(acquired), (unsigned long long)GET(released));
        bad = 1;
    }
    return bad;
}

/* ---------------------------------------------------------------------------------------------
 * Workers. */
#define MAX_DEPTH 8

typedef struct worker {
    int id;
    unsigned rng;
    pthread_t thread;
    ml_token *slot; /* the token of the task running now, for the controller (atomic) */
    void *stack[MAX_DEPTH];
    int depth;        /* resources outstanding, innermost last */
    int cleanup_runs; /* of the current task's cleanup */
    int interrupted_expected;
    uint64_t done; /* tasks finished (atomic) */
    int fn_ran;
} worker;

static __thread worker *self_worker;
static int stop;           /* workers: finish the task at hand and exit */
static int workers_exited; /* the controller keeps going until every worker has exited */

static unsigned next_rand(worker *w)
{
    w->rng = w->rng * 1103515245u + 12345u;
    return w->rng >> 8;
}

static int acquire(void *arg, void **resource)
{
    worker *w = arg;
    void *p = malloc(32 + next_rand(w) % 480); /* masked: never refused */
    if (p == NULL) {
        INC(masked_refused);
        return 1;
    }
    if (w->depth >= MAX_DEPTH) {
        free(p);
        return 2;
    }
    w->stack[w->depth++] = p;
    INC(acquired);
    *resource = p;
    return 0;
}

static void release(void *resource)
{
    worker *w = self_worker;
    if (w->depth == 0 || w->stack[w->depth - 1] != resource) {
        INC(release_twice);
        return;
    }
    w->depth--;
    if (!ml_is_interrupted()) INC(release_not_interrupted);
    void *p = malloc(64); /* masked: never refused */
    if (p == NULL) INC(masked_refused);
    free(p);
    free(resource);
    INC(released);
}

static int scope(void *resource, void *ctx);

/* Allocates until refused (ENOMEM) or unwound, with masked sections, polls and nested resources.
 * Returns 0 when an allocation was refused. */
static int allocate_until_interrupted(worker *w)
{
    size_t size = 16 + next_rand(w) % 200;
    for (unsigned long i = 0;; i++) {
        if (i % 7 == 3) {
            ml_mask();
            if (i % 2) ml_mask(); /* nested masking */
            void *m = malloc(size * 2);
            if (m == NULL) INC(masked_refused);
            free(m);
            if (i % 2) ml_unmask();
            ml_unmask();
        }
        if (i == 5 && w->depth < 3 && next_rand(w) % 3 == 0) {
            int rc = ml_with_resource(acquire, w, release, scope, w);
            if (rc != 0 && rc != 2) INC(bad_resource_rc);
        }
        void *volatile p = malloc(size);
        if (p == NULL) return 0;
        free(p);
        if (i % 64 == 63) ml_check();
        if (i > 50000000ul) {
            INC(runaway);
            return 1;
        }
    }
}

static int scope(void *resource, void *ctx)
{
    (void)resource;
    worker *w = ctx;
    allocate_until_interrupted(w);
    return 0;
}

static void count_cleanup(void *arg)
{
    worker *w = arg;
    w->cleanup_runs++;
    if (!ml_is_interrupted()) INC(release_not_interrupted);
    void *p = malloc(48);
    if (p == NULL) INC(masked_refused);
    free(p);
    INC(cleanups);
}

/* The body of every task: a cleanup around a resource whose scope allocates until interrupted. */
static void task_body(void *arg)
{
    worker *w = arg;
    w->fn_ran = 1;
    ML_CLEANUP_PUSH(count_cleanup, w);
    int rc = ml_with_resource(acquire, w, release, scope, w);
    if (rc != 0 && rc != 2) INC(bad_resource_rc);
    /* ENOMEM mode: scope returned after a refusal; the interrupt is still pending */
    void *volatile p = malloc(8);
    if (p != NULL) {
        free(p);
        INC(lost);
    }
    ML_CLEANUP_POP(1);
}

/* An ML_UNWIND task whose first allocation after the interrupt must unwind. */
static void task_unwind_body(void *arg)
{
    worker *w = arg;
    w->fn_ran = 1;
    ML_CLEANUP_PUSH(count_cleanup, w);
    ml_with_resource(acquire, w, release, scope, w);
    INC(after_unwind); /* scope allocates until refused: in ML_UNWIND it never returns */
    ML_CLEANUP_POP(1);
}

typedef struct list_node {
    struct list_node *next;
    char pad[1000 - sizeof(void *)];
} list_node;

static void free_list(void *arg)
{
    list_node **head = arg;
    while (*head != NULL) {
        list_node *n = *head;
        *head = n->next;
        free(n);
    }
}

/* A global-memory task: builds a list until the heap crosses the limit. */
static void task_list_body(void *arg)
{
    worker *w = arg;
    w->fn_ran = 1;
    list_node *head = NULL;
    ML_CLEANUP_PUSH(free_list, &head);
    for (unsigned long i = 0;; i++) {
        list_node *n = malloc(sizeof *n);
        if (n == NULL) break;
        n->next = head;
        head = n;
        if (i > 10000000ul) {
            INC(runaway);
            break;
        }
    }
    ML_CLEANUP_POP(1);
}

/* After a task: every resource released, the cleanup run exactly once. */
static void after_task(worker *w, ml_status st, int expect_cleanup)
{
    INC(tasks);
    if (st > 0) INC(interrupts);
    if (st == ML_ALLOCATION_LIMIT) INC(st_allocation);
    if (st == ML_TOKEN) INC(st_token);
    if (st == ML_MEMORY_LIMIT) INC(st_memory);
    if (st == ML_EINVAL) INC(st_einval);
    if (st == ML_OK) INC(lost);
    if (w->depth != 0) {
        INC(release_skipped);
        w->depth = 0;
    }
    if (expect_cleanup && w->fn_ran && w->cleanup_runs != 1) INC(cleanup_count);
    w->cleanup_runs = 0;
    w->fn_ran = 0;
    __atomic_add_fetch(&w->done, 1, __ATOMIC_RELAXED);
}

static ml_status run_with_token(worker *w, ml_token *tok, uint64_t backstop, unsigned flags,
                                void (*fn)(void *))
{
    __atomic_store_n(&w->slot, tok, __ATOMIC_RELEASE);
    ml_limits limits = {backstop, 0, tok, flags};
    ml_status st = ml_run(&limits, fn, w, NULL);
    __atomic_store_n(&w->slot, NULL, __ATOMIC_RELEASE);
    return st;
}

static int nested_inner_status_ok;

static void task_nested_outer(void *arg)
{
    worker *w = arg;
    w->fn_ran = 1;
    /* an inner allocation-limit task inside the outer token task */
    unsigned unwind = next_rand(w) % 2 ? ML_UNWIND : 0;
    ml_limits inner = {1 * KIB + next_rand(w) % (16 * KIB), 0, NULL, unwind};
    int saved = w->cleanup_runs;
    ml_status st = ml_run(&inner, unwind ? task_unwind_body : task_body, w, NULL);
    if (st != ML_ALLOCATION_LIMIT && st != ML_OUTER_LIMIT) INC(wrong_status);
    if (st == ML_OK) INC(lost);
    if (w->depth != 0) {
        INC(release_skipped);
        w->depth = 0;
    }
    if (w->cleanup_runs != saved + 1) INC(cleanup_count);
    w->cleanup_runs = 0;
    __atomic_add_fetch(&nested_inner_status_ok, 1, __ATOMIC_RELAXED);
    /* then the outer goes on until its own token stops it */
    allocate_until_interrupted(w);
}

static void *interrupts_worker(void *arg)
{
    worker *w = arg;
    self_worker = w;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        unsigned kind = next_rand(w) % 16;
        if (kind == 15 && next_rand(w) % 4 != 0) kind = 0; /* global tasks are the slow ones */
        unsigned unwind = next_rand(w) % 2 ? ML_UNWIND : 0;
        void (*body)(void *) = unwind ? task_unwind_body : task_body;
        ml_status st;
        if (kind < 8) { /* allocation limit */
            ml_limits limits = {1 * KIB + next_rand(w) % (32 * KIB), 0, NULL, unwind};
            st = ml_run(&limits, body, w, NULL);
            if (st != ML_ALLOCATION_LIMIT) INC(wrong_status);
            after_task(w, st, 1);
        } else if (kind < 14) { /* token set by the controller, or from the signal handler */
            ml_token *tok = ml_token_create();
            if (tok == NULL) continue;
            unsigned flags = unwind | (next_rand(w) % 2 ? ML_WAKE : 0);
            if (kind == 13) { /* nested: inner allocation limit in an outer token task */
                st = run_with_token(w, tok, 0, flags, task_nested_outer);
                if (st != ML_TOKEN) INC(wrong_status);
                after_task(w, st, 0);
            } else {
                st = run_with_token(w, tok, 0, flags, body);
                if (st != ML_TOKEN) INC(wrong_status);
                after_task(w, st, 1);
            }
            ml_token_destroy(tok);
        } else { /* the global memory limit (kind 14 and a quarter of 15) */
            ml_limits limits = {0, 1, NULL, unwind};
            st = ml_run(&limits, task_list_body, w, NULL);
            if (st != ML_MEMORY_LIMIT) INC(wrong_status);
            after_task(w, st, 0);
        }
    }
    __atomic_add_fetch(&workers_exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* The controller: sets every running task's token, directly or through SIGUSR1 on its thread. */
static worker *workers;
static int nworkers;

static void on_sigusr1(int sig)
{
    (void)sig;
    worker *w = self_worker;
    if (w == NULL) return;
    ml_token *tok = __atomic_load_n(&w->slot, __ATOMIC_ACQUIRE);
    if (tok != NULL) {
        ml_token_set(tok); /* async-signal-safe; may be destroyed by now: no effect */
        INC(signal_sets);
    }
}

static void *controller(void *arg)
{
    (void)arg;
    /* Until every worker has exited (their tasks need the tokens set to end); an exited worker
     * is not joined yet, so pthread_kill on it is still valid. */
    for (unsigned long round = 0; __atomic_load_n(&workers_exited, __ATOMIC_ACQUIRE) < nworkers;
         round++) {
        for (int i = 0; i < nworkers; i++) {
            if (round % 3 == 0) {
                pthread_kill(workers[i].thread, SIGUSR1);
                continue;
            }
            ml_token *tok = __atomic_load_n(&workers[i].slot, __ATOMIC_ACQUIRE);
            if (tok != NULL) {
                ml_token_set(tok);
                INC(token_sets);
            }
        }
        sleep_us(50);
    }
    return NULL;
}

static void install_sigusr1(void)
{
    set_handler(SIGUSR1, on_sigusr1, SA_RESTART);
}

static int mode_interrupts(int threads, double seconds, uint64_t target)
{
    install_sigusr1();
    ml_set_global_memory_limit(ml_heap_live() + 4 * MIB);
    nworkers = threads;
    workers = calloc((size_t)threads, sizeof *workers);
    for (int i = 0; i < threads; i++) {
        workers[i].id = i;
        workers[i].rng = 12345u + (unsigned)i * 7919u;
        pthread_create(&workers[i].thread, NULL, interrupts_worker, &workers[i]);
    }
    pthread_t ctl;
    pthread_create(&ctl, NULL, controller, NULL);
    double end = now_s() + seconds;
    while (now_s() < end && GET(interrupts) < target)
        sleep_us(10000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(ctl, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(workers[i].thread, NULL);
    int bad = 0;
    for (int i = 0; i < threads; i++) {
        say("stats worker %d tasks %llu\n", i, (unsigned long long)workers[i].done);
        if (workers[i].done == 0) {
            say("FAIL interrupts: worker %d finished no task\n", i);
            bad = 1;
        }
    }
    say("stats nested_inner %d\n", nested_inner_status_ok);
    free(workers);
    ml_set_global_memory_limit(ML_UNLIMITED);
    return bad;
}

/* ---------------------------------------------------------------------------------------------
 * Tokens published by a controller that sets and destroys them while tasks hold them. */
static ml_token *published;

static void *token_controller(void *arg)
{
    int destroy_while_held = *(int *)arg;
    unsigned rng = 99;
    ml_token *old[4] = {NULL, NULL, NULL, NULL};
    for (unsigned long round = 0; !__atomic_load_n(&stop, __ATOMIC_ACQUIRE); round++) {
        ml_token *tok = ml_token_create();
        if (tok == NULL) continue;
        __atomic_store_n(&published, tok, __ATOMIC_RELEASE);
        rng = rng * 1103515245u + 12345u;
        sleep_us(20 + (rng >> 8) % 200);
        if ((rng >> 4) % 4 != 0) {
            ml_token_set(tok);
            INC(token_sets);
        }
        if (destroy_while_held) { /* at once: tasks may still hold it */
            ml_token_destroy(tok);
            INC(tokens_destroyed);
        } else { /* a few rounds later */
            ml_token *o = old[round % 4];
            old[round % 4] = tok;
            if (o != NULL) {
                ml_token_destroy(o);
                INC(tokens_destroyed);
            }
        }
    }
    for (int i = 0; i < 4; i++)
        ml_token_destroy(old[i]);
    return NULL;
}

/* One task with the published token and an allocation-limit backstop: its status is ML_TOKEN,
 * ML_ALLOCATION_LIMIT, or ML_EINVAL (the token was destroyed first: then fn did not run). */
static void token_task(worker *w, unsigned flags)
{
    ml_token *tok = __atomic_load_n(&published, __ATOMIC_ACQUIRE);
    if (tok == NULL) return;
    void (*body)(void *) = (flags & ML_UNWIND) ? task_unwind_body : task_body;
    w->fn_ran = 0;
    ml_status st = run_with_token(w, tok, 256 * KIB + next_rand(w) % (256 * KIB), flags, body);
    if (st == ML_EINVAL && w->fn_ran) INC(ran_with_einval);
    if (st != ML_TOKEN && st != ML_ALLOCATION_LIMIT && st != ML_EINVAL) INC(wrong_status);
    after_task(w, st, st != ML_EINVAL);
}

static void *exit_thread(void *arg)
{
    worker *w = arg;
    self_worker = w;
    INC(threads_started);
    int n = 1 + (int)(next_rand(w) % 3);
    for (int i = 0; i < n; i++)
        token_task(w, (next_rand(w) % 2 ? ML_UNWIND : 0) | (next_rand(w) % 4 ? ML_WAKE : 0));
    return NULL; /* exits right after its tasks, possibly with a wake-up signal in flight */
}

static int mode_thread_exit(double seconds)
{
    install_sigusr1();
    int destroy_while_held = 0;
    pthread_t ctl;
    pthread_create(&ctl, NULL, token_controller, &destroy_while_held);
    enum { BATCH = 4 };
    worker batch[BATCH];
    double end = now_s() + seconds;
    unsigned seed = 1;
    while (now_s() < end) {
        for (int i = 0; i < BATCH; i++) {
            memset(&batch[i], 0, sizeof batch[i]);
            batch[i].rng = seed++ * 2654435761u;
            pthread_create(&batch[i].thread, NULL, exit_thread, &batch[i]);
        }
        for (int i = 0; i < BATCH; i++)
            pthread_join(batch[i].thread, NULL);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(ctl, NULL);
    return 0;
}

static void *destroy_worker(void *arg)
{
    worker *w = arg;
    self_worker = w;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
        token_task(w, (next_rand(w) % 2 ? ML_UNWIND : 0) | (next_rand(w) % 2 ? ML_WAKE : 0));
    return NULL;
}

static int mode_token_destroy(int threads, double seconds)
{
    install_sigusr1();
    int destroy_while_held = 1;
    nworkers = threads;
    workers = calloc((size_t)threads, sizeof *workers);
    for (int i = 0; i < threads; i++) {
        workers[i].rng = 777u + (unsigned)i * 31u;
        pthread_create(&workers[i].thread, NULL, destroy_worker, &workers[i]);
    }
    pthread_t ctl;
    pthread_create(&ctl, NULL, token_controller, &destroy_while_held);
    double end = now_s() + seconds;
    while (now_s() < end)
        sleep_us(10000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < threads; i++)
        pthread_join(workers[i].thread, NULL);
    pthread_join(ctl, NULL);
    free(workers);
    return 0;
}

/* ---------------------------------------------------------------------------------------------*/
static const char *mode_name = "?";

static void on_watchdog(int sig)
{
    (void)sig;
    say("FAIL %s: watchdog: no progress, deadlock?\n", mode_name);
    report(mode_name);
    _exit(3);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        say("usage: tasks_stress interrupts THREADS SECONDS [TARGET] | thread_exit SECONDS | "
            "token_destroy THREADS SECONDS\n");
        return 2;
    }
    mode_name = argv[1];
    if (!ml_active()) {
        say("FAIL %s: memlimits does not own malloc\n", mode_name);
        return 1;
    }
    int threads = 0;
    double seconds = 0;
    if (strcmp(mode_name, "thread_exit") == 0) {
        seconds = atof(argv[2]);
    } else if (argc >= 4) {
        threads = atoi(argv[2]);
        seconds = atof(argv[3]);
    }
    if (seconds <= 0 || (strcmp(mode_name, "thread_exit") != 0 && (threads < 1 || threads > 64))) {
        say("FAIL %s: bad arguments\n", mode_name);
        return 2;
    }
    signal(SIGALRM, on_watchdog);
    alarm((unsigned)seconds + 60);
    int bad;
    uint64_t target = argc >= 5 ? strtoull(argv[4], NULL, 10) : 20000;
    if (strcmp(mode_name, "interrupts") == 0)
        bad = mode_interrupts(threads, seconds, target);
    else if (strcmp(mode_name, "thread_exit") == 0)
        bad = mode_thread_exit(seconds);
    else if (strcmp(mode_name, "token_destroy") == 0)
        bad = mode_token_destroy(threads, seconds);
    else {
        say("FAIL %s: no such mode\n", mode_name);
        return 2;
    }
    alarm(0);
    bad |= report(mode_name);
    if (!bad) say("ok %s\n", mode_name);
    return bad;
}
