/* The thread registry and thread lifecycle (see thread.h).
 *
 * Thread exit: a pthread key destructor retires the thread: the `retire` hook flushes its heap
 * balance and returns its unspent budget lease; then its totals join the retired sums and it is
 * unregistered. Other TLS
 * destructors may still allocate or free afterwards; the thread is then DEAD and every one of its
 * allocations is an event accounted at once. Our key is created before jemalloc initialises, so
 * its destructor runs before jemalloc's own in each round, while jemalloc's counters are intact.
 *
 * fork: the prepare handler takes stdio's list lock and then the registry lock, before jemalloc's
 * handler takes its arena locks (ours is registered after jemalloc's, and prepare handlers run in
 * reverse order). Stock jemalloc takes its locks first, so a thread inside stdio calling malloc
 * while another forks deadlocks; taking stdio's list lock first restores glibc's own order. In
 * the child only the forking thread survives: the registry is reduced to it. */
#define _GNU_SOURCE
#include "thread.h"

#include <limits.h>
#include <pthread.h>

#include "host.h"

ML_TLS ml_thread ml__self;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ml_thread *registry;
static uint32_t registered_count;
static uint32_t next_index;
static uint64_t retired_allocated, retired_allocations, retired_samples;
static uint64_t retired_je_allocated, retired_je_freed; /* jemalloc's counters at retirement */
static pthread_key_t exit_key;
static const ml_thread_hooks *hooks;

/* Adds a thread's totals to the retired sums. Under the registry lock (or in the fork child). */
static void retire_totals(const ml_thread *t)
{
    retired_allocated += t->allocated + ml__since_arm(t);
    retired_allocations += t->allocations;
    retired_samples += t->samples;
    retired_je_allocated += ML_LOAD(t->je_allocated);
    retired_je_freed += ML_LOAD(t->je_deallocated);
}

/* The final round: hand back what the thread holds, unregister it, and leave it DEAD, so that
 * every allocation it still makes (other keys' destructors) is accounted at once. */
static void retire_now(ml_thread *t)
{
    t->busy = 1;
    hooks->retire(t);
    pthread_mutex_lock(&registry_lock);
    *t->pprev = t->next;
    if (t->next != NULL) t->next->pprev = t->pprev;
    registered_count--;
    retire_totals(t);
    pthread_mutex_unlock(&registry_lock);
    t->allocated += ml__since_arm(t);
    t->state = ML_THREAD_DEAD;
    t->armed = t->until_event = 0;
    t->allocations_at_arm = t->allocations;
    t->busy = 0;
}

/* The exit key's destructor. Other keys' destructors run after ours in each round and may free:
 * for every round glibc runs but the last, stay registered, let exit_round flush, and ask for
 * the next round by setting our key again. Frees in the last round and in glibc's own teardown
 * are not seen (README). */
static void on_thread_exit(void *arg)
{
    ml_thread *t = arg;
    if (t != &ml__self || t->state != ML_THREAD_READY) return;
    if (++t->exit_rounds < PTHREAD_DESTRUCTOR_ITERATIONS) {
        if (ml__busy_enter(t)) {
            hooks->exit_round(t);
            ml__busy_leave(t);
        }
        pthread_setspecific(exit_key, t);
        return;
    }
    retire_now(t);
}

void ml__thread_register(ml_thread *t)
{
    ml__host_jemalloc_thread(&t->je_allocated, &t->je_deallocated);
    t->seen_allocated = *t->je_allocated;
    t->seen_deallocated = *t->je_deallocated;
    t->lease_left = ML_NONE;
    pthread_mutex_lock(&registry_lock);
    t->index = next_index++;
    t->next = registry;
    if (registry != NULL) registry->pprev = &t->next;
    t->pprev = &registry;
    registry = t;
    registered_count++;
    pthread_mutex_unlock(&registry_lock);
    t->tid = ml__gettid();
    t->state = ML_THREAD_READY;
    /* May allocate (glibc's second-level key blocks): the nested call passes through, busy. */
    pthread_setspecific(exit_key, t);
}

void ml__thread_force_event(ml_thread *t)
{
    uint64_t left = ML_LOAD(&t->until_event);
    ML_STORE(&t->armed, t->armed - left);
    ML_STORE(&t->until_event, 0);
}

void ml__registry_lock(void)
{
    pthread_mutex_lock(&registry_lock);
}

void ml__registry_unlock(void)
{
    pthread_mutex_unlock(&registry_lock);
}

void ml__thread_each_locked(void (*fn)(ml_thread *t, void *ctx), void *ctx)
{
    for (ml_thread *t = registry; t != NULL; t = t->next)
        fn(t, ctx);
}

void ml__thread_each(void (*fn)(ml_thread *t, void *ctx), void *ctx)
{
    pthread_mutex_lock(&registry_lock);
    ml__thread_each_locked(fn, ctx);
    pthread_mutex_unlock(&registry_lock);
}

uint32_t ml__thread_count(void)
{
    return ML_LOAD(&registered_count);
}

void ml__totals(uint64_t *allocated, uint64_t *allocations, uint64_t *samples)
{
    ml_thread_totals sum;
    ml__thread_totals(&sum);
    *allocated = sum.allocated;
    *allocations = sum.allocations;
    *samples = sum.samples;
}

void ml__thread_totals(ml_thread_totals *out)
{
    pthread_mutex_lock(&registry_lock);
    ml_thread_totals sum = {.allocated = retired_allocated,
                            .allocations = retired_allocations,
                            .samples = retired_samples,
                            .je_allocated = retired_je_allocated,
                            .je_freed = retired_je_freed,
                            .live = registered_count,
                            .registered = next_index};
    for (ml_thread *t = registry; t != NULL; t = t->next) {
        /* Racy reads of a running thread's counters: a snapshot, exact once it has stopped. */
        sum.allocated += ML_LOAD(&t->allocated) + ml__since_arm(t);
        sum.allocations += ML_LOAD(&t->allocations);
        sum.samples += ML_LOAD(&t->samples);
        sum.je_allocated += ML_LOAD(t->je_allocated);
        sum.je_freed += ML_LOAD(t->je_deallocated);
    }
    pthread_mutex_unlock(&registry_lock);
    *out = sum;
}

static void fork_prepare(void)
{
    ml__host_stdio_lock();
    pthread_mutex_lock(&registry_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
    ml__host_stdio_unlock();
}

static void fork_child(void)
{
    /* glibc has already reset stdio's list lock in the child; only ours is left. */
    ml__host_stdio_reset();
    pthread_mutex_init(&registry_lock, NULL);
    ml_thread *self = &ml__self;
    for (ml_thread *t = registry; t != NULL; t = t->next) {
        if (t == self) continue;
        /* The other threads are gone; their blocks stay live in the child's copy of the heap,
         * so their reported balances stay in the sum. Their allocations become retired. */
        retire_totals(t);
    }
    registry = NULL;
    registered_count = 0;
    if (self->state == ML_THREAD_READY) {
        self->next = NULL;
        self->pprev = &registry;
        registry = self;
        registered_count = 1;
    }
    hooks->fork_child();
}

int ml__thread_setup_key(const ml_thread_hooks *h)
{
    hooks = h;
    return pthread_key_create(&exit_key, on_thread_exit);
}

void ml__thread_setup_fork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
