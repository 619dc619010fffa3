/* The thread registry and thread lifecycle (see thread.h).
 *
 * Thread exit: a pthread key destructor retires the thread: the `retire` hook flushes its heap
 * balance and returns its unspent budget lease; then its totals join the retired sums and it is
 * unregistered. Other TLS
 * destructors may still allocate or free afterwards; the thread is then DEAD and every one of its
 * allocations is an event accounted at once. Our key is created before jemalloc initialises, so
 * its destructor runs before jemalloc's own in each round, while jemalloc's counters are intact.
 *
 * fork: ours are the process's only fork handlers for memlimits and its jemalloc (jemalloc hands
 * its own over, host.h). In a multithreaded process, prepare takes stdio's list lock, then the
 * registry lock, then jemalloc's locks (its prepare handler); parent and child undo that in the
 * reverse order, jemalloc's first. Stock jemalloc takes its locks before fork takes the list
 * lock, so a thread inside stdio calling malloc while another forks deadlocks; taking stdio's
 * list lock first restores glibc's own order. In the child only the forking thread survives: the
 * registry is reduced to it.
 *
 * A process that has only ever had one thread (glibc's criterion, host.h) forks without taking
 * any lock, as glibc's own fork does: it may be forking from a signal handler that interrupted
 * malloc, free or memlimits itself, and the lock that code holds would never be released. No
 * other thread exists, so nothing needs excluding; in the child nothing was locked, so nothing is
 * reset, and when the handler returns the interrupted code finishes as it would have in the
 * parent. The child only refreshes the forking thread's own facts (its kernel thread id). The
 * residual is glibc's: the child may use only async-signal-safe functions until the handler
 * returns, since the state the interrupted code was updating (jemalloc's, ours) is half done. */
#define _GNU_SOURCE
#include "thread.h"

#include <limits.h>
#include <pthread.h>

#include "host.h"

ML_TLS ml_thread ml__self;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ml_thread *registry;
uint32_t ml__thread_registered; /* thread.h: read inline */
static uint32_t next_index;
static uint64_t retired_allocated, retired_allocations, retired_samples;
static uint64_t retired_je_allocated, retired_je_freed; /* jemalloc's counters at retirement */
static pthread_key_t exit_key;
static const ml_thread_hooks *hooks;

/* Adds a thread's totals to the retired sums. Under the registry lock (or in the fork child). */
static void retire_totals(const ml_thread *t)
{
    retired_allocated += t->allocated + ml__since_arm(t);
    retired_allocations += ml__thread_allocations(t);
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
    ml__thread_registered--;
    retire_totals(t);
    pthread_mutex_unlock(&registry_lock);
    t->allocated += ml__since_arm(t);
    t->state = ML_THREAD_DEAD;
    t->armed = t->until_event = 0;
    ml__thread_mark_arm(t);
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
    ml__thread_registered++;
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
                            .live = ml__thread_registered,
                            .registered = next_index};
    for (ml_thread *t = registry; t != NULL; t = t->next) {
        /* Racy reads of a running thread's counters: a snapshot, exact once it has stopped. */
        sum.allocated += ML_LOAD(&t->allocated) + ml__since_arm(t);
        sum.allocations += ml__thread_allocations(t);
        sum.samples += ML_LOAD(&t->samples);
        sum.je_allocated += ML_LOAD(t->je_allocated);
        sum.je_freed += ML_LOAD(t->je_deallocated);
    }
    sum.samples += ml__sampler_deferred_samples(); /* large blocks' (sampler.h), drawn now */
    pthread_mutex_unlock(&registry_lock);
    *out = sum;
}

/* Whether the fork under way took the locks: decided once by prepare, for parent and child. A
 * fork nested in a signal handler decides the same, since a process never becomes
 * single-threaded again. */
static int fork_locked;

static void fork_prepare(void)
{
    fork_locked = !ml__host_single_threaded();
    if (!fork_locked) return;
    hooks->fork_prepare();
    ml__host_stdio_lock();
    pthread_mutex_lock(&registry_lock);
    ml__host_jemalloc_prefork();
}

static void fork_parent(void)
{
    if (!fork_locked) return;
    ml__host_jemalloc_postfork_parent();
    pthread_mutex_unlock(&registry_lock);
    ml__host_stdio_unlock();
    hooks->fork_parent();
}

/* The child after a fork that took the locks: reset them, and reduce the registry. */
static void fork_child_locked(ml_thread *self)
{
    ml__host_jemalloc_postfork_child();
    /* glibc has already reset stdio's list lock in the child; only ours is left. */
    ml__host_stdio_reset();
    pthread_mutex_init(&registry_lock, NULL);
    for (ml_thread *t = registry; t != NULL; t = t->next) {
        if (t == self) continue;
        /* The other threads are gone; their blocks stay live in the child's copy of the heap,
         * so their reported balances stay in the sum. Their allocations become retired, and
         * what they held of the modules above (a budget lease) is the child's to take back. */
        retire_totals(t);
        hooks->fork_lost(t);
    }
    registry = NULL;
    ml__thread_registered = 0;
    if (self->state == ML_THREAD_READY) {
        self->next = NULL;
        self->pprev = &registry;
        registry = self;
        ml__thread_registered = 1;
    }
}

static void fork_child(void)
{
    ml_thread *self = &ml__self;
    /* The child's one thread has a kernel thread id of its own. */
    self->tid = ml__gettid();
    if (!fork_locked) {
        hooks->fork_child(0);
        return;
    }
    fork_child_locked(self);
    /* Busy: what the hook allocates (the waker thread it may start) passes through, never
     * refused by a task of this thread. */
    int entered = ml__busy_enter(self);
    hooks->fork_child(1);
    if (entered) ml__busy_leave(self);
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
