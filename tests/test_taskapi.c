/* The task API of issue 13 (lib/task.c, lib/cond.c, lib/token.c, lib/wake.c): ml_is_masked, a
 * task's own counts, which level's limit fired and ML_HEAP_CAP, token handles, token
 * descriptors, condition waits, and storms of sets racing waits. Each scenario runs in a child
 * process, in the target program of its concern (tests/targets/taskapi_CONCERN.c, linked with
 * -lmemlimits so that the library owns malloc without LD_PRELOAD); it prints "ok NAME" or
 * "FAIL NAME: line N: why". What needs no owned malloc (tokens, masking, condition waits outside
 * tasks: memlimits is not active in this Criterion binary) is also checked in-process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "memlimits.h"

/* Runs scenario `name` of target program `program` (extra environment `env`, may be NULL) and
 * expects "ok NAME", exit 0. */
static void expect_scenario_env(const char *program, const char *name, const char *const env[])
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target(program));
    const char *argv[] = {target, name, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, 300, &c), 0, "cannot start %s", target);
    char want[256];
    snprintf(want, sizeof want, "ok %s\n", name);
    cr_expect(c.exited, "%s: killed by signal %d; stdout:\n%s\nstderr:\n%s", name, c.signal, c.out,
              c.err);
    cr_expect_eq(c.status, 0, "%s: exit %d; stdout:\n%s\nstderr:\n%s", name, c.status, c.out,
                 c.err);
    cr_expect(strstr(c.out, want) != NULL && strstr(c.out, "FAIL") == NULL, "%s: output:\n%s\n%s",
              name, c.out, c.err);
    ml_child_free(&c);
}

#define SCENARIO(concern, name)                                                                    \
    Test(taskapi, name)                                                                            \
    {                                                                                              \
        expect_scenario_env("taskapi_" #concern, #name, NULL);                                     \
    }

/* ml_is_masked. */
SCENARIO(counts, is_masked_follows_mask_and_unmask)
SCENARIO(counts, is_masked_in_resources_and_cleanups)
SCENARIO(counts, is_masked_from_signal_handler)

/* ml_task_allocated, ml_task_remaining. */
SCENARIO(counts, task_allocated_counts_exactly)
SCENARIO(counts, task_allocated_nested_refused_and_masked)
SCENARIO(counts, task_remaining_is_limit_minus_allocated)
SCENARIO(counts, task_counts_without_allocation_limit)
SCENARIO(counts, task_remaining_nested_is_tightest)
SCENARIO(counts, task_counts_from_signal_handlers)

/* Which level fired; ML_HEAP_CAP. */
SCENARIO(status, own_limit_reported_by_its_own_level)
SCENARIO(status, enclosing_token_is_outer_limit)
SCENARIO(status, enclosing_token_reported_without_polling)
SCENARIO(status, enclosing_global_limit_is_outer_limit)
SCENARIO(status, heap_cap_refusal_is_heap_cap)
SCENARIO(status, heap_cap_is_reported_only_without_task_limit)
SCENARIO(status, heap_cap_nested)

/* Token handles and descriptors. */
SCENARIO(handles, stale_handle_refused_until_the_window)
SCENARIO(handles, never_a_token_is_refused)
SCENARIO(handles, set_racing_destroy_reaches_nothing_new)
SCENARIO(handles, token_fd_readable_once_set_for_good)
SCENARIO(handles, token_fd_set_from_signal_handler)
SCENARIO(handles, token_fd_without_descriptors_fails_cleanly)

/* Condition waits. */
SCENARIO(cond, cond_wait_outside_tasks_is_pthread)
SCENARIO(cond, cond_wait_returns_when_token_set)
SCENARIO(cond, cond_wait_interrupt_pending_returns_at_once)
SCENARIO(cond, cond_wait_in_task_woken_by_signal)
SCENARIO(cond, cond_wait_enclosing_token)
SCENARIO(cond, cond_wait_global_limit)
SCENARIO(cond, cond_wait_unwinds_in_unwind_mode)
SCENARIO(cond, cond_wait_masked_is_not_interrupted)
SCENARIO(cond, cond_wait_token_set_from_signal_handler)
SCENARIO(cond, cond_wait_cancelled_leaves_nothing_behind)
SCENARIO(cond, cond_wait_without_waker_is_enomem)
SCENARIO(cond, cond_wait_in_signal_handler_never_unwinds)
SCENARIO(cond, cond_wait_interrupt_leaves_other_waiters_waiting)

/* Storms: thousands of sets racing waits, no lost wake-up. */
SCENARIO(storm, cond_wait_storm_no_lost_wakeup)
SCENARIO(storm, token_fd_storm_no_lost_wakeup)
SCENARIO(storm, token_fd_created_while_set)

/* ---------------------------------------------------------------------------------------------
 * In-process: this binary links the engine's objects, but its malloc is glibc's. */
#include "engine.h"
#include "task.h"
#include "thread.h"

/* A signal handler that interrupted the slow path finds the thread's fields mid-update (here:
 * the countdown cleared before the allocation count is folded in, which would read as a count
 * wrapped below zero). The counters then give the count as of the last event. */
Test(taskapi, counts_read_mid_update_lag_never_wrap)
{
    ml_thread *t = &ml__self, saved = *t;
    t->busy = 1;
    t->allocated = 1000;
    t->armed = 0;
    t->until_event = 0;
    t->allocations_at_arm = 0;
    t->allocations_down = 0 - (uint64_t)5;
    uint64_t busy_count = ml_thread_allocated();
    t->busy = 0;
    t->allocations_at_arm = 5; /* the update done: 1000 + (0 - 0) - (5 - 5) */
    uint64_t done_count = ml_thread_allocated();
    *t = saved;
    cr_expect_eq(busy_count, 1000, "mid-update: %llu", (unsigned long long)busy_count);
    cr_expect_eq(done_count, 1000);
}

/* The race the waker's repeated broadcast closes, staged by hand: the waiter has registered and
 * looked (no interrupt yet), the token is set and the waker broadcasts while nobody waits yet,
 * then the waiter enters pthread_cond_wait. That broadcast is lost; only a repeated one wakes the
 * waiter. (A storm cannot hit this window reliably: it is a few instructions wide.) */
static pthread_mutex_t staged_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t staged_cond = PTHREAD_COND_INITIALIZER;
static ml_token *staged_token;
static int staged_rc = -1, staged_registered = -1, staged_interrupted = -1;

static void *staged_setter(void *arg)
{
    (void)arg;
    ml_token_set(staged_token);
    return NULL;
}

static void staged_race(void *arg)
{
    (void)arg;
    ml_thread *t = &ml__self;
    pthread_mutex_lock(&staged_mutex);
    staged_registered = ml__task_wait_begin(t, &staged_cond);
    staged_interrupted = ml_is_interrupted();
    pthread_t th;
    pthread_create(&th, NULL, staged_setter, NULL);
    pthread_join(th, NULL);
    struct timespec pause = {0, 100 * 1000 * 1000}; /* the waker broadcasts to nobody */
    nanosleep(&pause, NULL);
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += 10;
    staged_rc = pthread_cond_timedwait(&staged_cond, &staged_mutex, &at);
    ml__task_wait_end(t);
    pthread_mutex_unlock(&staged_mutex);
}

Test(taskapi, waker_repeats_a_broadcast_sent_before_the_wait)
{
    ml__thread_ensure();
    staged_token = ml_token_create();
    ml_limits limits = {0, 0, staged_token, 0};
    ml_task task;
    ml_status st = ml__task_run(&ml__self, &task, &limits, staged_race, NULL, NULL);
    cr_expect_eq(staged_registered, 1);
    cr_expect_eq(staged_interrupted, 0);
    cr_expect_eq(staged_rc, 0, "the waiter was not woken (rc %d): the broadcast was lost",
                 staged_rc);
    cr_expect_eq(st, ML_TOKEN);
    ml_token_destroy(staged_token);
}
