/* Target for tests/test_taskapi.c: ml_cond_wait and ml_cond_timedwait. Outside tasks and while
 * masked they are pthread's; in a task they also return (ECANCELED, mutex held) or unwind
 * (ML_UNWIND) when the task is interrupted: its token or an enclosing task's set by another
 * thread or a signal handler, the global limit crossed, an interrupt already pending. Linked with
 * -lmemlimits, built with -fno-builtin; `taskapi_cond NAME` runs one scenario (tasks_common.h).
 * Errors are made visible with error-checking mutexes: locking one the thread holds gives
 * EDEADLK, so "the mutex is held" is checked, not assumed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tasks_common.h"

static pthread_mutex_t mutex;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int predicate; /* under mutex */

static void init_mutex(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&mutex, &a);
    pthread_mutexattr_destroy(&a);
    pthread_cond_init(&cond, NULL);
    predicate = 0;
}

/* The calling thread holds `mutex`. */
static int held(void)
{
    return pthread_mutex_lock(&mutex) == EDEADLK;
}

static struct timespec in_seconds(double s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)((s - (long)s) * 1e9);
    ts.tv_sec += (time_t)s + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    return ts;
}

/* Waits up to 5 s for thread `tid` to block in a futex (its condition wait): where the kernel
 * does not show threads' system calls, that is a 5 s pause. */
static void wait_futex(int tid)
{
    double end = now_s() + 5;
    while (now_s() < end && blocked_syscall(tid) != SYS_futex)
        sleep_ms(1);
    sleep_ms(5);
}

/* ---------------------------------------------------------------------------------------------
 * A waiter: loops on the predicate with ml_cond_wait (or timed), inside a task or not. */
typedef struct waitrec {
    ml_limits limits;
    int in_task, timed, nested; /* nested: an inner task with only an allocation limit */
    double timeout_s;           /* for timed waits */
    int masked;
    int tid, started;
    int rc;         /* the last wait's result */
    int held_after; /* the mutex was held when the wait returned */
    int waits;      /* calls made */
    int after_unwind_point;
    ml_status status, inner_status;
} waitrec;

static void wait_body(void *arg)
{
    waitrec *w = arg;
    pthread_mutex_lock(&mutex);
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    if (w->masked) ml_mask();
    while (!predicate) {
        w->waits++;
        if (w->timed) {
            struct timespec at = in_seconds(w->timeout_s);
            w->rc = ml_cond_timedwait(&cond, &mutex, &at);
        } else {
            w->rc = ml_cond_wait(&cond, &mutex);
        }
        w->after_unwind_point = 1;
        if (w->rc != 0) break;
    }
    if (w->masked) ml_unmask();
    w->held_after = held();
    pthread_mutex_unlock(&mutex);
}

static void wait_nested(void *arg)
{
    waitrec *w = arg;
    ml_limits inner = {1 * MIB, 0, NULL, w->limits.flags & ML_UNWIND};
    w->inner_status = ml_run(&inner, wait_body, w, NULL);
}

static void *waiter_main(void *arg)
{
    waitrec *w = arg;
    w->tid = gettid_();
    if (!w->in_task)
        wait_body(w);
    else
        w->status = ml_run(&w->limits, w->nested ? wait_nested : wait_body, w, NULL);
    return NULL;
}

static pthread_t start_waiter(waitrec *w)
{
    pthread_t th;
    pthread_create(&th, NULL, waiter_main, w);
    EXPECT(wait_flag(&w->started, 10), "the waiter did not start");
    wait_futex(w->tid);
    return th;
}

/* Makes the predicate true and signals: the way out for a waiter that was not interrupted. */
static void release_waiter(void)
{
    pthread_mutex_lock(&mutex);
    predicate = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mutex);
}

/* Joins the waiter; if it is still waiting after 10 s, fails ("lost wake-up") and releases it. */
static void join_waiter(pthread_t th, waitrec *w, const char *what)
{
    (void)w;
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += 10;
    if (pthread_timedjoin_np(th, NULL, &at) != 0) {
        EXPECT(0, "%s: the waiter is still waiting after 10 s", what);
        release_waiter();
        pthread_join(th, NULL);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Outside tasks: pthread's. */
static void cond_wait_outside_tasks_is_pthread(void)
{
    init_mutex();
    waitrec w = {0};
    pthread_t th = start_waiter(&w);
    release_waiter();
    join_waiter(th, &w, "signalled");
    EXPECT(w.rc == 0 && w.held_after, "signalled: rc %d held %d", w.rc, w.held_after);

    init_mutex();
    pthread_mutex_lock(&mutex);
    struct timespec past = in_seconds(-1);
    EXPECT(ml_cond_timedwait(&cond, &mutex, &past) == ETIMEDOUT, "a past deadline");
    struct timespec soon = in_seconds(0.05);
    EXPECT(ml_cond_timedwait(&cond, &mutex, &soon) == ETIMEDOUT, "a deadline 50 ms away");
    EXPECT(held(), "the mutex is not held after a timeout");
    EXPECT(ml_cond_wait(NULL, &mutex) == EINVAL, "NULL cond");
    EXPECT(ml_cond_wait(&cond, NULL) == EINVAL, "NULL mutex");
    EXPECT(ml_cond_timedwait(NULL, &mutex, &soon) == EINVAL, "timed, NULL cond");
    EXPECT(ml_cond_timedwait(&cond, NULL, &soon) == EINVAL, "timed, NULL mutex");
    EXPECT(ml_cond_timedwait(&cond, &mutex, NULL) == EINVAL, "timed, NULL abstime");
    EXPECT(held(), "an EINVAL released the mutex");
    pthread_mutex_unlock(&mutex);
    /* pthread's own errors come through: waiting on a mutex not held (error-checking) */
    EXPECT(ml_cond_timedwait(&cond, &mutex, &soon) == EPERM, "an unheld error-checking mutex");
}

/* ---------------------------------------------------------------------------------------------
 * Token tasks: the token set by another thread while the waiter is blocked. */
static void cond_wait_returns_when_token_set(void)
{
    for (int timed = 0; timed <= 1; timed++)
        for (int wake = 0; wake <= 1; wake++) {
            init_mutex();
            ml_token *tok = ml_token_create();
            waitrec w = {.limits = {0, 0, tok, wake ? ML_WAKE : 0},
                         .in_task = 1,
                         .timed = timed,
                         .timeout_s = 60};
            pthread_t th = start_waiter(&w);
            ml_token_set(tok);
            join_waiter(th, &w, timed ? "timed" : "untimed");
            EXPECT(w.rc == ECANCELED && w.held_after && w.waits == 1,
                   "timed %d ML_WAKE %d: rc %d held %d waits %d", timed, wake, w.rc, w.held_after,
                   w.waits);
            EXPECT_STATUS(w.status, ML_TOKEN);
            ml_token_destroy(tok);
        }
}

/* An interrupt already pending: no wait at all (a 60 s deadline would show as ETIMEDOUT). */
static void task_pending_then_wait(void *arg)
{
    waitrec *w = arg;
    ml_mask();
    void *p = malloc(2000); /* past the 1000-byte limit, masked: pending */
    ml_unmask();
    free(p);
    wait_body(w);
}

/* Runs the waiter on its own thread and joins it (10 s, else "still waiting"). */
static void run_waiter(waitrec *w, void *(*main_fn)(void *), const char *what)
{
    pthread_t th;
    pthread_create(&th, NULL, main_fn, w);
    join_waiter(th, w, what);
}

static void *pending_main(void *arg)
{
    waitrec *w = arg;
    w->status = ml_run(&w->limits, task_pending_then_wait, w, NULL);
    return NULL;
}

static void cond_wait_interrupt_pending_returns_at_once(void)
{
    for (int timed = 0; timed <= 1; timed++) {
        /* a token set before the task started: the wait returns without waiting (untimed, or
         * with a deadline far past the 10 s the join allows) */
        init_mutex();
        ml_token *tok = ml_token_create();
        ml_token_set(tok);
        waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1, .timed = timed, .timeout_s = 60};
        run_waiter(&w, waiter_main, "token set before");
        EXPECT(w.rc == ECANCELED && w.held_after, "token set before: rc %d held %d", w.rc,
               w.held_after);
        EXPECT_STATUS(w.status, ML_TOKEN);
        ml_token_destroy(tok);

        /* an allocation-limit task (nothing remote to register): its pending interrupt */
        init_mutex();
        w = (waitrec){.limits = {1000, 0, NULL, 0}, .in_task = 1, .timed = timed, .timeout_s = 60};
        run_waiter(&w, pending_main, "allocation limit");
        EXPECT(w.rc == ECANCELED && w.held_after, "allocation limit: rc %d held %d", w.rc,
               w.held_after);
        EXPECT_STATUS(w.status, ML_ALLOCATION_LIMIT);
    }

    /* without an interrupt, a timed wait in a token task times out */
    init_mutex();
    ml_token *tok = ml_token_create();
    waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1, .timed = 1, .timeout_s = 0.05};
    w.status = ml_run(&w.limits, wait_body, &w, NULL);
    EXPECT(w.rc == ETIMEDOUT && w.held_after, "no interrupt: rc %d held %d", w.rc, w.held_after);
    EXPECT_STATUS(w.status, ML_OK);
    ml_token_destroy(tok);
}

/* Signals still wake a task's wait, with 0. */
static void cond_wait_in_task_woken_by_signal(void)
{
    init_mutex();
    ml_token *tok = ml_token_create();
    waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1};
    pthread_t th = start_waiter(&w);
    release_waiter();
    join_waiter(th, &w, "signalled in a task");
    EXPECT(w.rc == 0 && w.held_after, "rc %d held %d", w.rc, w.held_after);
    EXPECT_STATUS(w.status, ML_OK);
    ml_token_destroy(tok);
}

/* An enclosing task's token: the inner task (allocation limit only) waits. */
static void cond_wait_enclosing_token(void)
{
    init_mutex();
    ml_token *tok = ml_token_create();
    waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1, .nested = 1};
    pthread_t th = start_waiter(&w);
    ml_token_set(tok);
    join_waiter(th, &w, "enclosing token");
    EXPECT(w.rc == ECANCELED && w.held_after, "rc %d held %d", w.rc, w.held_after);
    EXPECT_STATUS(w.inner_status, ML_OUTER_LIMIT);
    EXPECT_STATUS(w.status, ML_TOKEN);
    ml_token_destroy(tok);
}

/* The global memory limit crossed by another thread. */
static void cond_wait_global_limit(void)
{
    init_mutex();
    ml_set_global_memory_limit(ml_heap_live() + 8 * MIB);
    waitrec w = {.limits = {0, 1, NULL, 0}, .in_task = 1};
    pthread_t th = start_waiter(&w);
    void *big = malloc(16 * MIB); /* this thread crosses the limit... */
    EXPECT(big != NULL, "malloc");
    for (int i = 0; i < 256; i++) { /* ...and sees it at its next accounting flush */
        void *p = malloc(4 * KIB);
        free(p);
    }
    join_waiter(th, &w, "global limit");
    free(big);
    ml_set_global_memory_limit(ML_UNLIMITED);
    EXPECT(w.rc == ECANCELED && w.held_after, "rc %d held %d", w.rc, w.held_after);
    EXPECT_STATUS(w.status, ML_MEMORY_LIMIT);
}

/* ML_UNWIND: a cancellation point; the cleanups run with the mutex held. */
static int cleanup_saw_held, cleanup_runs;

static void unlock_cleanup(void *arg)
{
    (void)arg;
    cleanup_runs++;
    cleanup_saw_held = held();
    pthread_mutex_unlock(&mutex);
}

static void unwind_body(void *arg)
{
    waitrec *w = arg;
    pthread_mutex_lock(&mutex);
    ML_CLEANUP_PUSH(unlock_cleanup, NULL);
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    while (!predicate) {
        w->waits++;
        w->rc = ml_cond_wait(&cond, &mutex);
        w->after_unwind_point = 1; /* not reached when unwound */
        if (w->rc != 0) break;
    }
    ML_CLEANUP_POP(1);
}

static void *unwind_main(void *arg)
{
    waitrec *w = arg;
    w->tid = gettid_();
    w->status = ml_run(&w->limits, unwind_body, w, NULL);
    return NULL;
}

static void cond_wait_unwinds_in_unwind_mode(void)
{
    for (int preset = 0; preset <= 1; preset++) {
        init_mutex();
        cleanup_runs = cleanup_saw_held = 0;
        ml_token *tok = ml_token_create();
        if (preset) ml_token_set(tok);
        waitrec w = {.limits = {0, 0, tok, ML_UNWIND}};
        pthread_t th;
        pthread_create(&th, NULL, unwind_main, &w);
        EXPECT(wait_flag(&w.started, 10), "the waiter did not start");
        if (!preset) {
            wait_futex(w.tid);
            ml_token_set(tok);
        }
        join_waiter(th, &w, "ML_UNWIND");
        EXPECT(!w.after_unwind_point && w.waits == 1,
               "preset %d: returned (rc %d) instead of unwinding", preset, w.rc);
        EXPECT(cleanup_runs == 1 && cleanup_saw_held, "preset %d: cleanup ran %d times, held %d",
               preset, cleanup_runs, cleanup_saw_held);
        EXPECT(pthread_mutex_trylock(&mutex) == 0, "preset %d: the mutex was left locked", preset);
        pthread_mutex_unlock(&mutex);
        EXPECT_STATUS(w.status, ML_TOKEN);
        ml_token_destroy(tok);
    }
}

/* Masked: pthread's wait, not interrupted; unmasked again: interrupted. */
static void cond_wait_masked_is_not_interrupted(void)
{
    init_mutex();
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    waitrec w = {
        .limits = {0, 0, tok, ML_UNWIND}, .in_task = 1, .timed = 1, .timeout_s = 0.05, .masked = 1};
    w.status = ml_run(&w.limits, wait_body, &w, NULL);
    EXPECT(w.rc == ETIMEDOUT && w.held_after, "masked: rc %d held %d", w.rc, w.held_after);
    EXPECT_STATUS(w.status, ML_TOKEN);
    init_mutex();
    w = (waitrec){.limits = {0, 0, tok, 0}, .in_task = 1};
    run_waiter(&w, waiter_main, "unmasked");
    EXPECT(w.rc == ECANCELED, "unmasked: rc %d", w.rc);
    ml_token_destroy(tok);
}

/* The token set by a signal handler: on the waiting thread itself, and on another thread. */
static ml_token *handler_token;

static void set_in_handler(int sig)
{
    (void)sig;
    ml_token_set(handler_token);
}

static void cond_wait_token_set_from_signal_handler(void)
{
    set_handler(SIGUSR1, set_in_handler, SA_RESTART);
    for (int on_waiter = 0; on_waiter <= 1; on_waiter++) {
        init_mutex();
        handler_token = ml_token_create();
        waitrec w = {.limits = {0, 0, handler_token, 0}, .in_task = 1};
        pthread_t th = start_waiter(&w);
        if (on_waiter)
            pthread_kill(th, SIGUSR1); /* the handler runs inside the waiter's pthread_cond_wait */
        else
            raise(SIGUSR1);
        join_waiter(th, &w, on_waiter ? "handler on the waiter" : "handler elsewhere");
        EXPECT(w.rc == ECANCELED && w.held_after, "on waiter %d: rc %d held %d", on_waiter, w.rc,
               w.held_after);
        EXPECT_STATUS(w.status, ML_TOKEN);
        ml_token_destroy(handler_token);
    }
    signal(SIGUSR1, SIG_DFL);
}

/* A waiter cancelled inside its wait: its registration is taken back with its frame, so a later
 * set (the waker's broadcast) touches nothing that is gone. */
static void *cancel_main(void *arg)
{
    waitrec *w = arg;
    w->tid = gettid_();
    w->status = ml_run(&w->limits, wait_body, w, NULL);
    return NULL;
}

static void cond_wait_cancelled_leaves_nothing_behind(void)
{
    ml_token *outer_tok = ml_token_create();
    for (int round = 0; round < 20; round++) {
        init_mutex();
        waitrec *w = calloc(1, sizeof *w);
        w->limits = (ml_limits){0, 0, outer_tok, 0};
        pthread_t th;
        pthread_create(&th, NULL, cancel_main, w);
        EXPECT(wait_flag(&w->started, 10), "the waiter did not start");
        wait_futex(w->tid);
        pthread_cancel(th);
        pthread_join(th, NULL);
        /* glibc re-acquires the mutex before unwinding a cancelled wait */
        pthread_mutex_destroy(&mutex);
        pthread_cond_destroy(&cond);
        memset(&cond, 0xa5, sizeof cond);
        free(w);
    }
    ml_token_set(outer_tok); /* the waker scans: nothing registered may remain */
    sleep_ms(50);
    ml_token_destroy(outer_tok);
    pthread_cond_init(&cond, NULL);
}

/* Failure injection: the waker thread cannot be started (no address space for its stack). */
static uint64_t mapped_bytes(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return strtoull(buf, NULL, 10) * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void cond_wait_without_waker_is_enomem(void)
{
    init_mutex();
    ml_token *tok = ml_token_create();
    waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1, .timed = 1, .timeout_s = 0.05};
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    struct rlimit tight = {mapped_bytes() + 16 * KIB, old.rlim_max};
    EXPECT(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit: %s", strerror(errno));
    w.status = ml_run(&w.limits, wait_body, &w, NULL);
    setrlimit(RLIMIT_AS, &old);
    EXPECT(w.rc == ENOMEM && w.held_after && w.waits == 1, "no waker: rc %d held %d", w.rc,
           w.held_after);
    EXPECT_STATUS(w.status, ML_OK);
    /* memory back: the waker starts, and the wait is interruptible */
    init_mutex();
    w = (waitrec){.limits = {0, 0, tok, 0}, .in_task = 1};
    pthread_t th = start_waiter(&w);
    ml_token_set(tok);
    join_waiter(th, &w, "after memory came back");
    EXPECT(w.rc == ECANCELED, "rc %d", w.rc);
    ml_token_destroy(tok);
}

/* Called from a signal handler inside an ML_UNWIND task with an interrupt pending: nothing is
 * unwound out of a handler, so it returns ECANCELED with the mutex held. */
static pthread_mutex_t handler_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t handler_cond = PTHREAD_COND_INITIALIZER;
static int handler_rc = -1, handler_held = -1, after_raise;

static void wait_in_handler(int sig)
{
    (void)sig;
    pthread_mutex_lock(&handler_mutex);
    handler_rc = ml_cond_wait(&handler_cond, &handler_mutex);
    handler_held = pthread_mutex_trylock(&handler_mutex) == EBUSY;
    pthread_mutex_unlock(&handler_mutex);
}

static void task_raise_wait(void *arg)
{
    (void)arg;
    raise(SIGUSR2);
    after_raise = 1;
}

static void cond_wait_in_signal_handler_never_unwinds(void)
{
    set_handler(SIGUSR2, wait_in_handler, 0);
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    ml_limits limits = {0, 0, tok, ML_UNWIND};
    ml_status st = ml_run(&limits, task_raise_wait, NULL, NULL);
    EXPECT(handler_rc == ECANCELED && handler_held == 1, "in the handler: rc %d held %d",
           handler_rc, handler_held);
    EXPECT(after_raise, "unwound out of the signal handler");
    EXPECT_STATUS(st, ML_TOKEN);
    ml_token_destroy(tok);
    signal(SIGUSR2, SIG_DFL);
}

/* The broadcast that ends an interrupted task's wait reaches the condition's other waiters as a
 * spurious wake-up: they look at their predicate and wait on, and are released as usual. */
static int other_done, other_waits, other_rc = -1;

static void *plain_waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mutex);
    while (!predicate) {
        other_waits++;
        other_rc = pthread_cond_wait(&cond, &mutex);
    }
    pthread_mutex_unlock(&mutex);
    __atomic_store_n(&other_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void cond_wait_interrupt_leaves_other_waiters_waiting(void)
{
    init_mutex();
    pthread_t other;
    other_done = other_waits = 0;
    pthread_create(&other, NULL, plain_waiter, NULL);
    ml_token *tok = ml_token_create();
    waitrec w = {.limits = {0, 0, tok, 0}, .in_task = 1};
    pthread_t th = start_waiter(&w);
    ml_token_set(tok);
    join_waiter(th, &w, "the interrupted waiter");
    EXPECT(w.rc == ECANCELED, "rc %d", w.rc);
    sleep_ms(50);
    EXPECT(!__atomic_load_n(&other_done, __ATOMIC_ACQUIRE), "the other waiter left its wait");
    release_waiter();
    EXPECT(wait_flag(&other_done, 10), "the other waiter was not released");
    pthread_join(other, NULL);
    EXPECT(other_rc == 0, "the other waiter's wait: %d", other_rc);
    say("info other_waiter_waits %d\n", other_waits);
    ml_token_destroy(tok);
}

static const scenario scenarios[] = {
    SCENARIO(cond_wait_in_signal_handler_never_unwinds),
    SCENARIO(cond_wait_interrupt_leaves_other_waiters_waiting),
    SCENARIO(cond_wait_outside_tasks_is_pthread),
    SCENARIO(cond_wait_returns_when_token_set),
    SCENARIO(cond_wait_interrupt_pending_returns_at_once),
    SCENARIO(cond_wait_in_task_woken_by_signal),
    SCENARIO(cond_wait_enclosing_token),
    SCENARIO(cond_wait_global_limit),
    SCENARIO(cond_wait_unwinds_in_unwind_mode),
    SCENARIO(cond_wait_masked_is_not_interrupted),
    SCENARIO(cond_wait_token_set_from_signal_handler),
    SCENARIO(cond_wait_cancelled_leaves_nothing_behind),
    SCENARIO(cond_wait_without_waker_is_enomem),
};

SCENARIOS_MAIN(scenarios)
