/* Target for tests/test_tasks.c: tokens stop the tasks holding them (set from another thread, a
 * signal handler, before the task starts, shared by threads), destroyed tokens are refused
 * safely, and token slots and the waker thread fail cleanly without memory. Linked with
 * -lmemlimits, built with -fno-builtin; `tasks_tokens NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tasks_common.h"

static ml_token *signal_token;

static void set_token_handler(int sig)
{
    (void)sig;
    ml_token_set(signal_token);
}

typedef struct setter {
    ml_token *token;
    int *started;
    int use_kill; /* kill(getpid(), SIGUSR1) instead of ml_token_set */
    int *done;    /* set right after */
} setter;

static void *setter_main(void *arg)
{
    setter *s = arg;
    wait_flag(s->started, 10);
    sleep_ms(30);
    if (s->use_kill)
        kill(getpid(), SIGUSR1);
    else
        ml_token_set(s->token);
    if (s->done != NULL) __atomic_store_n(s->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void token_set_from_other_thread_stops_task(void)
{
    static spin s;
    static int set_done;
    set_done = 0;
    s = (spin){.seen_flag = &set_done};
    ml_token *tok = ml_token_create();
    EXPECT(tok != NULL && !ml_token_is_set(tok), "a new token");
    setter st_args = {tok, &s.started, 0, &set_done};
    pthread_t th;
    pthread_create(&th, NULL, setter_main, &st_args);
    ml_status st = ml_limit_with_token(tok, task_spin, &s);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out && s.null_err == ENOMEM, "timed out %d errno %d", s.timed_out, s.null_err);
    /* at its next allocation event: within 32 KiB of allocation (memlimits.h, ml_token_set) */
    EXPECT(s.bytes_after_seen <= 32 * KIB, "%llu bytes allocated after the token was set",
           (unsigned long long)s.bytes_after_seen);
    say("info bytes_after_set %llu\n", (unsigned long long)s.bytes_after_seen);
    EXPECT(ml_token_is_set(tok), "ml_token_is_set() after set");
    /* never unset: a task with it now starts interrupted */
    s = (spin){0};
    st = ml_limit_with_token(tok, task_spin, &s);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(s.iterations == 1, "a task with a set token allocated %lu times", s.iterations - 1);
    ml_token_destroy(tok);

    /* ML_UNWIND: the same, unwinding */
    tok = ml_token_create();
    s = (spin){0};
    st_args = (setter){tok, &s.started, 0, NULL};
    pthread_create(&th, NULL, setter_main, &st_args);
    ml_limits limits = {0, 0, tok, ML_UNWIND};
    st = ml_run(&limits, task_spin, &s, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out && s.iterations == 0, "not unwound: iterations %lu timed out %d",
           s.iterations, s.timed_out);
    ml_token_destroy(tok);
}

/* A SIGUSR1 handler sets the token: raised on the task's own thread (then the task stops within
 * 32 KiB of allocation), or sent to the process from another thread. */
static void token_set_from_signal_handler_stops_task(void)
{
    static spin s;
    set_handler(SIGUSR1, set_token_handler, SA_RESTART);

    signal_token = ml_token_create();
    s = (spin){.raise_at = 1000};
    ml_status st = ml_limit_with_token(signal_token, task_spin, &s);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(s.mark && !s.timed_out && s.null_err == ENOMEM, "mark %d timed out %d errno %d", s.mark,
           s.timed_out, s.null_err);
    EXPECT(s.bytes_after_mark <= 32 * KIB, "%llu bytes allocated after the token was set",
           (unsigned long long)s.bytes_after_mark);
    say("info bytes_after_set %llu\n", (unsigned long long)s.bytes_after_mark);
    ml_token_destroy(signal_token);

    signal_token = ml_token_create();
    s = (spin){0};
    setter args = {NULL, &s.started, 1, NULL};
    pthread_t th;
    pthread_create(&th, NULL, setter_main, &args);
    ml_limits limits = {0, 0, signal_token, ML_UNWIND};
    st = ml_run(&limits, task_spin, &s, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out, "kill(SIGUSR1) did not stop the task");
    ml_token_destroy(signal_token);
}

static void token_set_before_start_interrupts_at_once(void)
{
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    EXPECT(ml_token_is_set(tok), "ml_token_is_set");
    uint64_t allocated = 12345;
    ml_limits limits = {0, 0, tok, 0};
    ml_status st = ml_run(&limits, task_first, NULL, &allocated);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(interrupted_at_start, "ml_is_interrupted() at the task's start");
    EXPECT(first_null && first_err == ENOMEM, "first allocation: NULL %d errno %d", first_null,
           first_err);
    EXPECT_U64(allocated, 0);

    /* ml_is_interrupted() never delivers, even with ML_UNWIND: the malloc after it does */
    interrupted_at_start = 0;
    first_null = 0;
    first_err = 0;
    limits.flags = ML_UNWIND;
    st = ml_run(&limits, task_first, NULL, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(interrupted_at_start, "ml_is_interrupted() at the start of an ML_UNWIND task");
    EXPECT(!first_null && first_err == 0, "the first allocation of an ML_UNWIND task returned");

    UR = (unwindrec){0};
    st = ml_run(&limits, task_unwind, NULL, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(UR.mallocs_returned == 0 && UR.n == 2,
           "ML_UNWIND: %zu allocations returned, %d cleanups", UR.mallocs_returned, UR.n);
    ml_token_destroy(tok);
}

/* Several threads running tasks with one token all stop when it is set. */
#define SHARED_THREADS 4
static ml_token *shared_token;
static spin shared_spin[SHARED_THREADS];
static ml_status shared_status[SHARED_THREADS];

static void *shared_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    ml_limits limits = {0, 0, shared_token, i % 2 ? ML_UNWIND : 0};
    shared_status[i] = ml_run(&limits, task_spin, &shared_spin[i], NULL);
    return NULL;
}

static void token_shared_by_threads_stops_all(void)
{
    shared_token = ml_token_create();
    pthread_t th[SHARED_THREADS];
    for (int i = 0; i < SHARED_THREADS; i++) {
        shared_spin[i] = (spin){0};
        pthread_create(&th[i], NULL, shared_main, (void *)(intptr_t)i);
    }
    for (int i = 0; i < SHARED_THREADS; i++)
        EXPECT(wait_flag(&shared_spin[i].started, 10), "thread %d did not start", i);
    sleep_ms(30);
    ml_token_set(shared_token);
    for (int i = 0; i < SHARED_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(shared_status[i], ML_TOKEN);
        EXPECT(!shared_spin[i].timed_out, "thread %d was not stopped", i);
    }
    ml_token_destroy(shared_token);
}

static void token_destroyed_is_refused_safely(void)
{
    ml_token *tok = ml_token_create();
    EXPECT(tok != NULL, "create");
    ml_token_destroy(tok);
    ran = 0;
    ml_limits limits = {0, 0, tok, 0};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_EINVAL);
    EXPECT_STATUS(ml_limit_with_token(tok, task_mark_ran, NULL), ML_EINVAL);
    EXPECT(ran == 0, "the task ran %d times with a destroyed token", ran);
    /* safe no-ops */
    ml_token_set(tok);
    EXPECT(ml_token_is_set(tok) == 0, "a destroyed token reads as set");
    ml_token_destroy(tok);
    ml_token_set(NULL);
    EXPECT(ml_token_is_set(NULL) == 0, "NULL token reads as set");
    ml_token_destroy(NULL);
    EXPECT_STATUS(ml_limit_with_token(NULL, task_mark_ran, NULL), ML_EINVAL);
    EXPECT(ran == 0, "the task ran with a NULL token");
    /* a set, then destroyed token reads as unset */
    ml_token *t2 = ml_token_create();
    ml_token_set(t2);
    ml_token_destroy(t2);
    EXPECT(ml_token_is_set(t2) == 0, "a destroyed set token reads as set");
    /* a new token is unset, even in a recycled slot */
    ml_token *t3 = ml_token_create();
    EXPECT(t3 != NULL && ml_token_is_set(t3) == 0, "a new token in a recycled slot reads as set");
    ml_token_destroy(t3);
}

/* Destroying a token while its task runs: the task is not interrupted by it any more. */
static ml_token *destroy_token;
static blocks destroy_blocks;

static void task_destroy_own_token(void *arg)
{
    (void)arg;
    ml_token_set(destroy_token);
    ml_token_destroy(destroy_token);
    destroy_blocks = (blocks){.size = 256, .count = MAX_BLOCKS};
    task_blocks(&destroy_blocks);
}

static void token_destroyed_during_task_no_longer_interrupts(void)
{
    destroy_token = ml_token_create();
    ml_status st = ml_limit_with_token(destroy_token, task_destroy_own_token, NULL);
    EXPECT_U64(destroy_blocks.got, MAX_BLOCKS);
    EXPECT_STATUS(st, ML_OK);
    blocks_free(&destroy_blocks);
}
/* ---------------------------------------------------------------------------------------------
 * Failure injection: no address space left (RLIMIT_AS just above what is mapped). Token memory
 * and the waker thread cannot be had: ml_token_create returns NULL with ENOMEM, and the first
 * ML_WAKE task is refused with ML_ENOMEM without running; both work again once memory is back. */

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

static void setup_out_of_memory_is_enomem(void)
{
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    static ml_token *made[8192];
    size_t n = 0;
    int err = 0;
    struct rlimit tight = {mapped_bytes() + 16 * KIB, old.rlim_max};
    EXPECT(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit: %s", strerror(errno));
    /* the current chunk of token memory runs out, and no new one can be mapped */
    while (n < 8192) {
        errno = 0;
        ml_token *t = ml_token_create();
        if (t == NULL) {
            err = errno;
            break;
        }
        made[n++] = t;
    }
    ran = 0;
    ml_limits limits = {0, 0, NULL, ML_WAKE};
    ml_status st = ml_run(&limits, task_mark_ran, NULL, NULL);
    setrlimit(RLIMIT_AS, &old);
    EXPECT(n < 8192 && err == ENOMEM, "ml_token_create: %zu tokens, then errno %d", n, err);
    EXPECT_STATUS(st, ML_ENOMEM);
    EXPECT(ran == 0, "the task ran although its setup failed");
    for (size_t i = 0; i < n; i++)
        ml_token_destroy(made[i]);

    ml_token *t = ml_token_create();
    EXPECT(t != NULL, "ml_token_create after memory came back");
    ml_token_destroy(t);
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_OK);
    EXPECT(ran == 1, "the ML_WAKE task ran %d times after memory came back", ran);
}

static const scenario scenarios[] = {
    SCENARIO(token_set_from_other_thread_stops_task),
    SCENARIO(token_set_from_signal_handler_stops_task),
    SCENARIO(token_set_before_start_interrupts_at_once),
    SCENARIO(token_shared_by_threads_stops_all),
    SCENARIO(token_destroyed_is_refused_safely),
    SCENARIO(token_destroyed_during_task_no_longer_interrupts),
    SCENARIO(setup_out_of_memory_is_enomem),
};

SCENARIOS_MAIN(scenarios)
