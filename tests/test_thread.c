/* The per-thread state and the registry (lib/thread.c), in process: the exact count since
 * arming, forcing an event, the busy protocol, registration and retirement at thread exit. The
 * engine is linked directly; its constructor has initialised it with the defaults (no
 * MEMLIMITS_* variables), and test threads register with ml__thread_ensure as the interposed
 * pthread_create's trampoline would. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "engine.h"
#include "thread.h"

/* Charges n bytes as an entry point does, taking the slow path when the countdown runs out. */
static void charge(uint64_t n)
{
    if (ml__charge(n)) cr_assert_eq(ml__event(n, 0, NULL), ML_ALLOW);
}

Test(thread, since_arm_is_exact_modulo_2_64)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.armed = 1000;
    t.until_event = 1000;
    /* Armed after the thread's first allocations (which took n: thread.h). */
    t.allocations_at_arm = 7;
    t.allocations_down = 0 - (uint64_t)7;
    /* Three allocations of 10, 0 and 5 bytes take n + 1 each off the countdown. */
    t.until_event -= 11 + 1 + 6;
    t.allocations_down -= 3;
    cr_assert_eq(ml__since_arm(&t), 15);
    /* SIZE_MAX charges 2^64, which wraps the countdown to where it was: the count stays exact
     * modulo 2^64. */
    t.until_event -= (uint64_t)SIZE_MAX + 1;
    t.allocations_down -= 1;
    cr_assert_eq(ml__since_arm(&t), 15 + (uint64_t)SIZE_MAX);
}

Test(thread, force_event_keeps_the_count_and_zeroes_the_countdown)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.armed = t.until_event = 4096;
    t.until_event -= 101;
    t.allocations_down = 0 - (uint64_t)1;
    uint64_t before = ml__since_arm(&t);
    ml__thread_force_event(&t);
    cr_assert_eq(t.until_event, 0);
    cr_assert_eq(ml__since_arm(&t), before);
}

/* The thread's first allocation takes n units off the countdown (the count's add of -1 does not
 * carry from 0): the unit is added back while that allocation lies after the arming. */
Test(thread, the_first_allocation_is_charged_its_missing_unit)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.armed = t.until_event = 1000;
    t.until_event -= 10; /* the first allocation: 10 bytes, 10 units */
    t.allocations_down -= 1;
    cr_assert_eq(ml__units_since_arm(&t), 11);
    cr_assert_eq(ml__since_arm(&t), 10);
    t.until_event -= 6; /* the second: 5 bytes, 6 units */
    t.allocations_down -= 1;
    cr_assert_eq(ml__since_arm(&t), 15);
    /* Armed again after them: no unit to add. */
    t.armed = t.until_event;
    t.allocations_at_arm = 2;
    cr_assert_eq(ml__since_arm(&t), 0);
    cr_assert_eq(ml__units_since_arm(&t), 0);
}

Test(thread, busy_leave_honours_a_wake_up_that_came_while_busy)
{
    ml_thread t;
    memset(&t, 0, sizeof t);
    t.armed = t.until_event = 500;
    cr_assert(ml__busy_enter(&t));
    cr_assert_not(ml__busy_enter(&t), "a busy thread entered twice");
    t.wake_pending = 1; /* what the wake-up handler leaves when it finds the thread busy */
    ml__busy_leave(&t);
    cr_assert_eq(t.busy, 0);
    cr_assert_eq(t.wake_pending, 0);
    cr_assert_eq(t.until_event, 0, "the next allocation must be an event");
    cr_assert_eq(ml__since_arm(&t), 0);
}

Test(thread, the_first_allocation_registers_the_thread)
{
    cr_assert_eq(ml__self.state, ML_THREAD_NEW);
    cr_assert_eq(ml__self.until_event, 0, "a new thread's countdown must be zero");
    uint32_t before = ml__thread_count();
    charge(100);
    cr_assert_eq(ml__self.state, ML_THREAD_READY);
    cr_assert_eq(ml__thread_count(), before + 1);
    cr_assert_eq(ml__self.allocated + ml__since_arm(&ml__self), 100);
}

#define WORKERS 8
#define WORKER_BYTES 12345u

static pthread_barrier_t registered, release;

static void *worker(void *arg)
{
    (void)arg;
    ml__thread_ensure();
    for (unsigned i = 0; i < WORKER_BYTES / 5; i++)
        charge(5);
    pthread_barrier_wait(&registered);
    pthread_barrier_wait(&release);
    return NULL;
}

Test(thread, exiting_threads_leave_the_registry_and_their_totals_stay)
{
    ml__thread_ensure();
    pthread_t threads[WORKERS];
    pthread_barrier_init(&registered, NULL, WORKERS + 1);
    pthread_barrier_init(&release, NULL, WORKERS + 1);
    uint32_t base = ml__thread_count();
    uint64_t allocated0, allocations0, samples0;
    ml__totals(&allocated0, &allocations0, &samples0);
    for (int i = 0; i < WORKERS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, worker, NULL), 0);
    pthread_barrier_wait(&registered);
    cr_assert_eq(ml__thread_count(), base + WORKERS);
    pthread_barrier_wait(&release);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    cr_assert_eq(ml__thread_count(), base, "exited threads are still registered");
    uint64_t allocated, allocations, samples;
    ml__totals(&allocated, &allocations, &samples);
    uint64_t per = (WORKER_BYTES / 5) * 5;
    cr_assert_eq(allocated - allocated0, WORKERS * per, "retired totals lost bytes");
    cr_assert_eq(allocations - allocations0, WORKERS * (WORKER_BYTES / 5));
}
