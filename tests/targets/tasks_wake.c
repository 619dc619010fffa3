/* Target for tests/test_tasks.c: ML_WAKE. A task blocked in read, poll or nanosleep returns
 * EINTR when its token is set, through the wake-up signal; threads that did not ask are never
 * signalled; the signal is MEMLIMITS_SIGNAL or a free real-time one, never one the program
 * handles. Linked with -lmemlimits, built with -fno-builtin; `tasks_wake NAME` runs one scenario
 * (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tasks_common.h"

static void wake_one(int kind, const char *what)
{
    static waiter w;
    w = (waiter){.kind = kind, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    double t0 = now_s();
    ml_token_set(w.token);
    int woken = wait_flag(&w.done, 2.0);
    double dt = now_s() - t0;
    EXPECT(woken, "%s: the task was not woken within 2 s of ml_token_set", what);
    waiter_finish(&w, th);
    if (woken) {
        EXPECT(w.rc == -1 && w.err == EINTR, "%s returned %d errno %d, expected EINTR", what, w.rc,
               w.err);
        EXPECT_STATUS(w.status, ML_TOKEN);
        say("info %s_wake_seconds %.6f\n", what, dt);
    }
    ml_token_destroy(w.token);
}

static void wake_read_returns_eintr(void)
{
    wake_one(BLOCK_READ, "read");
}

static void wake_poll_returns_eintr(void)
{
    wake_one(BLOCK_POLL, "poll");
}

static void wake_nanosleep_returns_eintr(void)
{
    wake_one(BLOCK_SLEEP, "nanosleep");
}

/* Threads that did not ask are never signalled: one without a task, one with a task without
 * ML_WAKE on the same token, next to an ML_WAKE task that is woken. */
static void wake_only_tasks_that_asked(void)
{
    static waiter woken, plain, nowake;
    ml_token *tok = ml_token_create();
    woken = (waiter){.kind = BLOCK_READ, .token = tok, .use_task = 1, .flags = ML_WAKE};
    plain = (waiter){.kind = BLOCK_READ, .loop = 1};
    nowake = (waiter){.kind = BLOCK_READ, .token = tok, .use_task = 1, .loop = 1};
    pthread_t tw, tp, tn;
    waiter_start(&woken, &tw);
    waiter_start(&plain, &tp);
    waiter_start(&nowake, &tn);
    ml_token_set(tok);
    EXPECT(wait_flag(&woken.done, 2.0), "the ML_WAKE task was not woken");
    sleep_ms(200);
    EXPECT(!__atomic_load_n(&plain.done, __ATOMIC_ACQUIRE), "the thread without a task returned");
    EXPECT(!__atomic_load_n(&nowake.done, __ATOMIC_ACQUIRE), "the task without ML_WAKE returned");
    EXPECT(proc_syscall_unreadable || blocked_syscall(plain.tid) == SYS_read,
           "the thread without a task is not in read");
    EXPECT(proc_syscall_unreadable || blocked_syscall(nowake.tid) == SYS_read,
           "the task without ML_WAKE is not in read");
    waiter_finish(&woken, tw);
    waiter_finish(&plain, tp);
    waiter_finish(&nowake, tn);
    EXPECT(woken.rc == -1 && woken.err == EINTR, "ML_WAKE read returned %d errno %d", woken.rc,
           woken.err);
    EXPECT(plain.eintr == 0 && plain.got_byte, "thread without a task: %d EINTR, byte %d",
           plain.eintr, plain.got_byte);
    EXPECT(nowake.eintr == 0 && nowake.got_byte, "task without ML_WAKE: %d EINTR, byte %d",
           nowake.eintr, nowake.got_byte);
    ml_token_destroy(tok);
}

static volatile sig_atomic_t program_handler_calls;

static void program_handler(int sig)
{
    (void)sig;
    program_handler_calls++;
}

/* The program's handler is still installed on `sig`, and runs once when `sig` is raised. */
static void expect_program_handler_kept(int sig)
{
    struct sigaction cur;
    sigaction(sig, NULL, &cur);
    EXPECT(!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == program_handler,
           "the program's handler of signal %d was replaced", sig);
    program_handler_calls = 0;
    raise(sig);
    EXPECT(program_handler_calls == 1, "the program's handler ran %d times",
           (int)program_handler_calls);
}

/* With the program handling `sig`, the wake-up signal: ML_WAKE tasks are refused without running
 * and the program's handler is left alone. */
static void expect_wake_refused_for_program_handler(int sig)
{
    set_handler(sig, program_handler, 0);
    ran = 0;
    ml_limits limits = {0, 0, NULL, ML_WAKE};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_ESIGNAL);
    EXPECT(ran == 0, "the task ran although ML_WAKE was refused");
    expect_program_handler_kept(sig);
}

/* Run with MEMLIMITS_SIGNAL=USR2: the program handles SIGUSR2, so ML_WAKE is refused. */
static void wake_signal_program_handler_refused(void)
{
    expect_wake_refused_for_program_handler(SIGUSR2);
    /* without ML_WAKE the task runs */
    ml_limits limits = {0, 0, NULL, 0};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_OK);
    EXPECT(ran == 1, "the task without ML_WAKE ran %d times", ran);
}

/* Run with MEMLIMITS_SIGNAL=USR2 and no program handler: ML_WAKE uses SIGUSR2. Then the program
 * installs its own handler on it: ML_WAKE is refused from then on, the handler left intact. */
static void wake_signal_configured_and_taken_over(void)
{
    static waiter w;
    w = (waiter){.kind = BLOCK_READ, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    struct sigaction cur;
    sigaction(SIGUSR2, NULL, &cur);
    EXPECT((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL,
           "SIGUSR2 has no handler while an ML_WAKE task runs with MEMLIMITS_SIGNAL=USR2");
    EXPECT(!(cur.sa_flags & SA_RESTART), "the wake-up signal is installed with SA_RESTART");
    ml_token_set(w.token);
    EXPECT(wait_flag(&w.done, 2.0), "the ML_WAKE task was not woken through SIGUSR2");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    ml_token_destroy(w.token);

    expect_wake_refused_for_program_handler(SIGUSR2);
}

/* Default signal: a free real-time one; one the program handles is left alone. */
static void wake_default_signal_skips_program_handlers(void)
{
    set_handler(SIGRTMAX, program_handler, 0);
    static waiter w;
    w = (waiter){.kind = BLOCK_READ, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    ml_token_set(w.token);
    EXPECT(wait_flag(&w.done, 2.0), "the ML_WAKE task was not woken");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    expect_program_handler_kept(SIGRTMAX);
    ml_token_destroy(w.token);
}

static const scenario scenarios[] = {
    SCENARIO(wake_read_returns_eintr),
    SCENARIO(wake_poll_returns_eintr),
    SCENARIO(wake_nanosleep_returns_eintr),
    SCENARIO(wake_only_tasks_that_asked),
    SCENARIO(wake_signal_program_handler_refused),
    SCENARIO(wake_signal_configured_and_taken_over),
    SCENARIO(wake_default_signal_skips_program_handlers),
};

SCENARIOS_MAIN(scenarios)
