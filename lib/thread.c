/* The thread registry and thread lifecycle (see thread.h).
 *
 * Thread exit: a pthread key destructor retires the thread: it flushes its heap balance, returns
 * its unspent budget lease, adds its totals to the retired sums and unregisters it. Other TLS
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

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "budget.h"
#include "engine.h"
#include "heap.h"
#include "host.h"
#include "task.h"

ML_TLS ml_thread ml__self;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ml_thread *registry;
static uint32_t registered_count;
static uint32_t next_index;
static uint64_t retired_allocated, retired_allocations, retired_samples;
static pthread_key_t exit_key;

/* glibc exports these (GLIBC_2.2.5); they are the lock fork itself takes after the handlers. */
extern void _IO_list_lock(void);
extern void _IO_list_unlock(void);
extern void _IO_list_resetlock(void);

static void retire(void *arg)
{
    ml_thread *t = arg;
    if (t != &ml__self || t->state != ML_THREAD_READY) return;
    /* Other keys' destructors run after ours in each round and may free: stay registered, and
     * flush, for every round glibc runs but the last, asking for the next one by setting our key
     * again. Frees in the last round and in glibc's own teardown are not seen (README). */
    if (++t->exit_rounds < PTHREAD_DESTRUCTOR_ITERATIONS) {
        if (ml__busy_enter(t)) {
            ml__heap_flush(t);
            ml__busy_leave(t);
        }
        pthread_setspecific(exit_key, t);
        return;
    }
    t->busy = 1;
    uint64_t spent = ml__since_arm(t);
    ml__heap_flush(t);
    ml__budget_release(t);
    pthread_mutex_lock(&registry_lock);
    *t->pprev = t->next;
    if (t->next != NULL) t->next->pprev = t->pprev;
    registered_count--;
    retired_allocated += t->allocated + spent;
    retired_allocations += t->allocations;
    retired_samples += t->samples;
    pthread_mutex_unlock(&registry_lock);
    t->allocated += spent;
    t->state = ML_THREAD_DEAD;
    t->armed = t->until_event = 0;
    t->allocations_at_arm = t->allocations;
    t->busy = 0;
}

/* Under an exhausted address space (RLIMIT_AS), jemalloc 5.3 cannot allocate a new thread's
 * cache and ignores the failure: its fast paths then dereference a NULL bin and the thread
 * crashes in malloc. Turning the cache off afterwards crashes too (it flushes the broken bins).
 * So, before jemalloc first sees a thread, check that 1 MiB of address space can still be had;
 * if not, let jemalloc set this thread up with its cache option off (jemalloc's own global,
 * linked into this object, read only while a thread's state is created), so that the thread's
 * allocations take the arena path and fail with NULL like any other. Other threads created at
 * the same moment may start without a cache too, which only costs speed. A thread whose first
 * call is free() is set up by jemalloc before memlimits sees it. */
extern _Bool je_opt_tcache;

static void register_with_jemalloc(ml_thread *t)
{
    size_t len = sizeof t->je_allocated;
    _Bool cache = je_opt_tcache;
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
        void *probe =
            mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (probe != MAP_FAILED)
            munmap(probe, 1 << 20);
        else
            je_opt_tcache = 0;
    }
    mlje_mallctl("thread.allocatedp", (void *)&t->je_allocated, &len, NULL, 0);
    je_opt_tcache = cache;
    len = sizeof t->je_deallocated;
    mlje_mallctl("thread.deallocatedp", (void *)&t->je_deallocated, &len, NULL, 0);
}

void ml__thread_register(ml_thread *t)
{
    register_with_jemalloc(t);
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

struct totals {
    uint64_t allocated, allocations, samples;
};

static void add_thread(ml_thread *t, void *ctx)
{
    struct totals *sum = ctx;
    /* Racy reads of a running thread's counters: a snapshot, exact once it has stopped. */
    sum->allocated += ML_LOAD(&t->allocated) + ml__since_arm(t);
    sum->allocations += ML_LOAD(&t->allocations);
    sum->samples += ML_LOAD(&t->samples);
}

void ml__totals(uint64_t *allocated, uint64_t *allocations, uint64_t *samples)
{
    struct totals sum = {0, 0, 0};
    pthread_mutex_lock(&registry_lock);
    sum.allocated = retired_allocated;
    sum.allocations = retired_allocations;
    sum.samples = retired_samples;
    for (ml_thread *t = registry; t != NULL; t = t->next)
        add_thread(t, &sum);
    pthread_mutex_unlock(&registry_lock);
    *allocated = sum.allocated;
    *allocations = sum.allocations;
    *samples = sum.samples;
}

static void fork_prepare(void)
{
    _IO_list_lock();
    pthread_mutex_lock(&registry_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
    _IO_list_unlock();
}

static void fork_child(void)
{
    /* glibc has already reset stdio's list lock in the child; only ours is left. */
    _IO_list_resetlock();
    pthread_mutex_init(&registry_lock, NULL);
    ml_thread *self = &ml__self;
    for (ml_thread *t = registry; t != NULL; t = t->next) {
        if (t == self) continue;
        /* The other threads are gone; their blocks stay live in the child's copy of the heap,
         * so their reported balances stay in the sum. Their allocations become retired. */
        retired_allocated += t->allocated + ml__since_arm(t);
        retired_allocations += t->allocations;
        retired_samples += t->samples;
    }
    registry = NULL;
    registered_count = 0;
    ml__task_fork_child();
    if (self->state == ML_THREAD_READY) {
        self->next = NULL;
        self->pprev = &registry;
        registry = self;
        registered_count = 1;
    }
}

/* Every thread created with pthread_create registers before its start routine runs, so that a
 * thread that only frees (a consumer) is in the registry and its frees reach the live heap. The
 * real pthread_create is found once with dlsym(RTLD_NEXT), outside the allocator. */
typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static create_fn real_create;

typedef struct thread_start {
    void *(*start)(void *);
    void *arg;
} thread_start;

static void *trampoline(void *p)
{
    thread_start s = *(thread_start *)p;
    mlje_free(p);
    ml__thread_ensure();
    return s.start(s.arg);
}

int ml__pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                       void *arg)
{
    create_fn create = __atomic_load_n(&real_create, __ATOMIC_ACQUIRE);
    if (create == NULL) {
        create = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
        if (create == NULL) return EAGAIN;
        __atomic_store_n(&real_create, create, __ATOMIC_RELEASE);
    }
    thread_start *s = mlje_malloc(sizeof *s);
    if (s == NULL) return EAGAIN;
    s->start = start;
    s->arg = arg;
    int rc = create(thread, attr, trampoline, s);
    if (rc != 0) mlje_free(s);
    return rc;
}

int ml__thread_setup_key(void)
{
    return pthread_key_create(&exit_key, retire);
}

void ml__thread_setup_fork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
