/* Tasks: entering and leaving them, interrupt marking and delivery, masking, cleanups and resources
 * (see task.h).
 *
 * Who touches what. A task's fields are written by its own thread, except `pending` and `woken`,
 * which other threads (the waker, a thread that saw the global limit crossed) may set with
 * atomics while holding the registry lock, and only on tasks linked on the cross-thread list;
 * a task unlinks itself under that lock before its frame goes away.
 *
 * Delivery. An interrupt is delivered only at an allocation event or ml_check, never while
 * masked, and never from a signal handler or from inside jemalloc: the slow path returns a
 * verdict, and the entry point (still outside jemalloc, with no lock held and busy cleared)
 * fails the allocation or, for ML_UNWIND, unwinds with siglongjmp after running the task's
 * cleanups, masked. An enclosing task's interrupt interrupts the tasks nested in it: the
 * innermost task's effective reason is the first pending reason along its chain. */
#define _GNU_SOURCE
#include "task.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "heap.h"
#include "host.h"
#include "token.h"
#include "wake.h"

static uint64_t global_limit = ML_NONE;
static ml_task *remote_tasks; /* token and global-memory tasks, under the registry lock */
static uint64_t global_generation, global_marked_generation;
static uint64_t
    tasks_ended[ML_HEAP_CAP + 1]; /* by the status ml_run returned: ML_OK to ML_HEAP_CAP */

uint64_t ml__global_limit(void)
{
    return ML_LOAD(&global_limit);
}

void ml__task_set_global_limit(uint64_t bytes)
{
    ML_STORE(&global_limit, bytes);
    ML_STORE(&global_marked_generation, 0); /* a new limit: look again */
}

static void mark(ml_task *k, int reason)
{
    int none = 0;
    __atomic_compare_exchange_n(&k->pending, &none, reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Whether the live heap is above the global limit: the one global-limit check. Far below the
 * limit the batched sum answers (it lags each thread by at most ML_HEAP_LAG_MAX); near
 * or over it, the sum may lag allocations (not yet flushed) or frees (a thread that only frees),
 * so every thread is reconciled first and the answer is exact up to allocations in flight.
 * `locked`: the caller holds the registry lock. */
static int over_global(int locked)
{
    uint64_t limit = ML_LOAD(&global_limit);
    if (limit == ML_NONE) return 0;
    uint64_t slack = (uint64_t)(ml__thread_count() + 1) * ML_HEAP_LAG_MAX;
    if (ml__heap_live() + slack <= limit) return 0;
    if (locked)
        ml__heap_reconcile_locked();
    else
        ml__heap_reconcile();
    return ml__heap_live() > limit;
}

/* Brings one task up to date with the limits set from outside it, and returns its pending
 * reason (0: none): the one place a task is marked for its token or the global limit. `over`
 * caches over_global for one walk (-1: not asked yet). */
static int check(ml_task *k, int *over, int locked)
{
    if (ML_LOAD(&k->pending) == 0 && k->token != NULL && ml_token_is_set(k->token))
        mark(k, ML_TOKEN);
    if (ML_LOAD(&k->pending) == 0 && k->global) {
        if (*over < 0) *over = over_global(locked);
        if (*over) mark(k, ML_MEMORY_LIMIT);
    }
    return ML_LOAD(&k->pending);
}

/* Brings the chain from `k` outwards up to date and returns the first pending reason along it:
 * an enclosing task's interrupt interrupts the tasks nested in it. Owner thread. */
static int refresh(ml_task *k)
{
    int reason = 0, over = -1;
    for (; k != NULL; k = k->parent) {
        int p = check(k, &over, 0);
        if (reason == 0) reason = p;
    }
    return reason;
}

/* The thread's exact count, read so that the wake-up signal's handler cannot tear it. */
static uint64_t exact_allocated(const ml_thread *t)
{
    return ml__allocated_now(t);
}

ml_verdict ml__task_decide(ml_thread *t, uint64_t n)
{
    uint64_t now = t->allocated; /* busy: the countdown is folded in */
    for (ml_task *k = t->task; k != NULL; k = k->parent)
        if (k->deadline != ML_NONE && now + n > k->deadline) mark(k, ML_ALLOCATION_LIMIT);
    if (refresh(t->task) == 0 || t->mask_depth > 0) return ML_ALLOW;
    return (t->task->flags & ML_UNWIND) ? ML_REFUSE_UNWIND : ML_REFUSE;
}

uint64_t ml__task_left(ml_thread *t)
{
    uint64_t now = t->allocated, left = ML_NONE;
    int interrupted = 0;
    for (ml_task *k = t->task; k != NULL; k = k->parent) {
        interrupted |= ML_LOAD(&k->pending) != 0;
        if (k->deadline != ML_NONE && k->deadline >= now)
            left = ML_MIN(left, k->deadline - now + 1); /* an event when n > deadline - now */
        if (k->token != NULL || k->global) left = ML_MIN(left, ML_REMOTE_CHECK_BYTES);
    }
    if (interrupted && t->mask_depth == 0) return 0; /* every allocation delivers */
    return left;
}

int ml__task_may_unwind_now(ml_thread *t)
{
    sigset_t now;
    if (t->task == NULL || pthread_sigmask(SIG_BLOCK, NULL, &now) != 0) return 0;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&now, s) == 1 && sigismember(&t->task->signals_at_start, s) != 1) return 0;
    return 1;
}

/* Runs the task's cleanups, innermost first, masked. */
static void run_cleanups(ml_thread *t, ml_task *k)
{
    t->mask_depth++;
    while (k->cleanups != NULL) {
        ml_cleanup *c = k->cleanups;
        k->cleanups = c->prev;
        c->owner = NULL;
        c->fn(c->arg);
    }
    t->mask_depth--;
}

void ml__task_unwind(ml_thread *t)
{
    ml_task *k = t->task;
    run_cleanups(t, k);
    siglongjmp(k->jump, 1); /* lands in ml__task_run: the task's own record is not run */
}

void ml__task_global_exceeded(void)
{
    uint64_t generation = ML_LOAD(&global_generation);
    if (ML_LOAD(&global_marked_generation) == generation) return; /* done for these tasks */
    if (!over_global(0)) return; /* frees not yet accounted must not interrupt anyone */
    int marked = 0;
    ml__registry_lock();
    for (ml_task *k = remote_tasks; k != NULL; k = k->remote_next)
        if (k->global && ML_LOAD(&k->pending) == 0) {
            mark(k, ML_MEMORY_LIMIT);
            marked = 1;
        }
    ML_STORE(&global_marked_generation, generation);
    ml__registry_unlock();
    if (marked) ml__wake_poke(); /* ML_WAKE tasks and condition waiters: the waker */
}

/* Broadcasts the condition k's thread waits on, unless the waiter has left meanwhile; the
 * count of broadcasts in flight keeps it from leaving (and the condition from going away) in
 * between. Returns whether there was a waiter. */
static int broadcast_waiter(ml_task *k)
{
    if (__atomic_load_n(&k->waiting, __ATOMIC_SEQ_CST) == NULL) return 0;
    __atomic_add_fetch(&k->wait_broadcasts, 1, __ATOMIC_SEQ_CST);
    pthread_cond_t *cond = __atomic_load_n(&k->waiting, __ATOMIC_SEQ_CST);
    if (cond != NULL) pthread_cond_broadcast(cond);
    __atomic_sub_fetch(&k->wait_broadcasts, 1, __ATOMIC_SEQ_CST);
    return cond != NULL;
}

int ml__task_wake_scan(void)
{
    int over = -1, again = 0;
    for (ml_task *k = remote_tasks; k != NULL; k = k->remote_next) {
        int signal = (k->flags & ML_WAKE) && !ML_LOAD(&k->woken);
        int waiter = __atomic_load_n(&k->waiting, __ATOMIC_SEQ_CST) != NULL;
        if (!signal && !waiter) continue;
        if (check(k, &over, 1) == 0) continue;
        if (signal) {
            ML_STORE(&k->woken, 1);
            ml__wake_send(k->tid);
        }
        if (waiter) again |= broadcast_waiter(k);
    }
    return again;
}

void ml__task_heap_refused(ml_thread *t)
{
    if (t->task != NULL) t->task->heap_refused = 1;
}

int ml__task_wait_begin(ml_thread *t, void *cond)
{
    int remote = 0;
    for (ml_task *k = t->task; k != NULL && !remote; k = k->parent)
        remote = k->token != NULL || k->global;
    if (!remote) return 0;
    /* Starting the waker may allocate (the C library's thread setup, dlsym): masked, so that a
     * pending interrupt does not refuse it. */
    t->mask_depth++;
    int rc = ml__wake_start(ml__task_wake_scan);
    t->mask_depth--;
    if (rc != 0) return rc;
    for (ml_task *k = t->task; k != NULL; k = k->parent)
        if (k->token != NULL || k->global) __atomic_store_n(&k->waiting, cond, __ATOMIC_SEQ_CST);
    return 1;
}

void ml__task_wait_end(ml_thread *t)
{
    for (ml_task *k = t->task; k != NULL; k = k->parent) {
        if (k->token == NULL && !k->global) continue;
        __atomic_store_n(&k->waiting, NULL, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&k->wait_broadcasts, __ATOMIC_SEQ_CST) != 0)
            sched_yield(); /* the waker is inside pthread_cond_broadcast: a short wait */
    }
}

void ml__task_fork_child(int multithreaded)
{
    /* The forking thread's tasks, whose ml_run the child carries on in, name the thread by the
     * kernel id it had in the parent: give them the child's. */
    ml_thread *self = &ml__self;
    for (ml_task *k = self->task; k != NULL; k = k->parent)
        k->tid = self->tid;
    if (!multithreaded) return; /* no other thread ever existed: nothing else changed */
    /* Only the forking thread survives; its own tasks stay linked, the others' frames are gone.
     * A wake-up signal sent to the forking thread but not yet delivered is not inherited, so its
     * ML_WAKE tasks are signalled again, by a waker of the child's own, started here: the child
     * carries on inside them, and a token set in the child (from a signal handler, say) must
     * reach them at once as it would have in the parent. */
    ml_task **link = &remote_tasks;
    int wake = 0;
    while (*link != NULL) {
        ml_task *k = *link;
        if (k->thread != self) {
            *link = k->remote_next;
            if (k->global) ml__heap_watch(-1);
        } else {
            k->remote_pprev = link;
            link = &k->remote_next;
            ML_STORE(&k->woken, 0);
            wake |= (k->flags & ML_WAKE) != 0;
        }
    }
    ml__wake_fork_child(wake);
}

/* Makes the calling thread's next allocation an event (to arm or disarm task limits, or to
 * deliver). Called from a signal handler that interrupted memlimits' own code (ml_unmask is
 * async-signal-safe), it leaves the note the busy code honours on its way out. */
static void force_self(ml_thread *t)
{
    ml__thread_force_event_self(t);
}

static void link_remote(ml_task *k)
{
    ml__registry_lock();
    k->remote_next = remote_tasks;
    if (remote_tasks != NULL) remote_tasks->remote_pprev = &k->remote_next;
    k->remote_pprev = &remote_tasks;
    remote_tasks = k;
    if (k->global) {
        ml__heap_watch(+1);
        global_generation++;
    }
    ml__registry_unlock();
}

static void unlink_remote(ml_task *k)
{
    ml__registry_lock();
    *k->remote_pprev = k->remote_next;
    if (k->remote_next != NULL) k->remote_next->remote_pprev = k->remote_pprev;
    if (k->global) ml__heap_watch(-1);
    ml__registry_unlock();
}

static void enter(ml_thread *t, ml_task *k, const ml_limits *limits)
{
    memset(k, 0, sizeof *k);
    k->parent = t->task;
    k->thread = t;
    k->tid = t->tid;
    k->flags = limits->flags;
    k->global = limits->global_memory != 0;
    k->token = limits->token;
    k->start = exact_allocated(t);
    if (limits->allocations == 0 || limits->allocations == ML_UNLIMITED)
        k->deadline = ML_NONE;
    else if (limits->allocations >= ML_NONE - k->start)
        k->deadline = ML_NONE - 1;
    else
        k->deadline = k->start + limits->allocations;
    k->mask_at_start = t->mask_depth;
    if (k->global || k->token != NULL) link_remote(k);
    pthread_sigmask(SIG_BLOCK, NULL, &k->signals_at_start);
    t->task = k;
    refresh(k);    /* a token already set or a heap already over the limit: interrupted at once */
    force_self(t); /* arm the task's limit at the next allocation */
}

/* Takes the task off the thread and off the cross-thread list, restoring the thread's mask. */
static void finish(ml_thread *t, ml_task *k)
{
    if (k->global || k->token != NULL) unlink_remote(k);
    if (k->heap_refused && k->parent != NULL) k->parent->heap_refused = 1; /* its allocations too */
    t->task = k->parent;
    t->mask_depth = k->mask_at_start;
    force_self(t); /* re-arm without this task's limit */
}

/* What ml_run returns for task k, by level (memlimits.h, ml_run): its own reason; else an
 * enclosing task's interrupt; else a refusal by the heap cap; else success. The chain is brought
 * up to date first, so the status does not depend on the task polling. */
static ml_status status_of(ml_task *k)
{
    if (refresh(k) == 0) return k->heap_refused ? ML_HEAP_CAP : ML_OK;
    int own = ML_LOAD(&k->pending);
    return own != 0 ? (ml_status)own : ML_OUTER_LIMIT;
}

static ml_status leave(ml_thread *t, ml_task *k, uint64_t *allocated)
{
    ml_status reason = status_of(k);
    uint64_t count = exact_allocated(t) - k->start;
    finish(t, k);
    if (allocated != NULL) *allocated = count;
    __atomic_add_fetch(&tasks_ended[reason], 1, __ATOMIC_RELAXED);
    return reason;
}

uint64_t ml__task_ended(ml_status status)
{
    return status >= ML_OK && status <= ML_HEAP_CAP ? ML_LOAD(&tasks_ended[status]) : 0;
}

/* The task's record with the C library (host.h): a longjmp, siglongjmp or __longjmp_chk out of
 * the task's function (from its code or from a signal handler), pthread_exit or a cancellation
 * discards ml_run's frame, and the C library calls this, while every frame still exists. The
 * cleanups that the task registered in the discarded frames have their own records, called
 * before this one; any left run now. Then the task is taken off the thread and the process-wide
 * list, and the thread's mask depth is restored; so is every task still nested in it (their
 * frames are deeper, so discarded too: their records normally come first). Not called by a jump
 * that lands inside the task, or on an alternate signal stack that is not part of the thread's
 * own stack. */
static void left_without_return(void *task)
{
    ml_task *k = task;
    ml_thread *t = &ml__self;
    ml_task *j = t->task;
    while (j != NULL && j != k)
        j = j->parent;
    if (j == NULL) return; /* already off the thread */
    do {
        j = t->task;
        run_cleanups(t, j);
        finish(t, j);
    } while (j != k);
}

ml_status ml__task_run(ml_thread *t, ml_task *k, const ml_limits *limits, void (*fn)(void *arg),
                       void *arg, uint64_t *allocated)
{
    enter(t, k, limits);
    ml__host_cleanup_push(&k->thread_record, left_without_return, k);
    ml_task *volatile task = k;
    uint64_t *volatile out = allocated;
    /* An unwind of ours (ML_UNWIND, ml_check) lands here: sigsetjmp must be called in a frame
     * that stays live while fn runs. The task's record is above this frame, so that jump does
     * not run it. */
    if (sigsetjmp(k->jump, 0) == 0) fn(arg);
    ml__host_cleanup_pop(&task->thread_record);
    return leave(&ml__self, task, out);
}

void ml__task_thrown(ml_task *k)
{
    ml_thread *t = &ml__self;
    if (t->task != k) return; /* returned, jumped out or left the thread: already unlinked */
    /* The exception has unwound the frames of the task's cleanups without running them or their
     * records: drop both (popping the task's record drops every record pushed after it). */
    k->cleanups = NULL;
    ml__host_cleanup_pop(&k->thread_record);
    finish(t, k);
}

int ml_is_interrupted(void)
{
    ml_thread *t = &ml__self;
    if (t->task == NULL || refresh(t->task) == 0) return 0;
    /* The poll may be the first to see a token or the global limit: from now on, the task's next
     * unmasked allocation delivers, as after any other marking. */
    force_self(t);
    return 1;
}

void ml_check(void)
{
    ml_thread *t = &ml__self;
    if (t->task == NULL || t->mask_depth > 0) return;
    if (refresh(t->task) != 0 && ml__task_may_unwind_now(t)) ml__task_unwind(t);
}
void ml_mask(void)
{
    ml__self.mask_depth++;
}

void ml_unmask(void)
{
    ml_thread *t = &ml__self;
    if (t->mask_depth == 0) return;
    if (--t->mask_depth == 0 && t->task != NULL) force_self(t); /* deliver at the next one */
}

int ml_is_masked(void)
{
    return ML_LOAD(&ml__self.mask_depth) > 0;
}

/* The fields ml__since_arm reads, and `allocated`: what a signal handler on the thread may
 * change between two of our loads. */
typedef struct count_fields {
    uint64_t allocated, armed, until_event, allocations, allocations_at_arm, units_extra,
        units_extra_at_arm;
} count_fields;

static void read_count_fields(const ml_thread *t, count_fields *f)
{
    f->allocated = ML_LOAD(&t->allocated);
    f->armed = ML_LOAD(&t->armed);
    f->until_event = ML_LOAD(&t->until_event);
    f->allocations = ML_LOAD(&t->allocations_down);
    f->allocations_at_arm = ML_LOAD(&t->allocations_at_arm);
    f->units_extra = ML_LOAD(&t->units_extra);
    f->units_extra_at_arm = ML_LOAD(&t->units_extra_at_arm);
}

uint64_t ml__allocated_now(const ml_thread *t)
{
    if (ML_LOAD(&t->busy)) return ML_LOAD(&t->allocated); /* mid-update: as of the last event */
    for (;;) {
        count_fields before, after;
        read_count_fields(t, &before);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        uint64_t count = ML_LOAD(&t->allocated) + ml__since_arm(t);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        read_count_fields(t, &after);
        if (memcmp(&before, &after, sizeof before) == 0) return count; /* no handler ran */
    }
}

uint64_t ml_task_allocated(void)
{
    const ml_thread *t = &ml__self;
    const ml_task *k = ML_LOAD(&t->task);
    if (k == NULL) return 0;
    uint64_t now = ml__allocated_now(t);
    return now > k->start ? now - k->start : 0;
}

uint64_t ml_task_remaining(void)
{
    const ml_thread *t = &ml__self;
    uint64_t now = ml__allocated_now(t), left = ML_UNLIMITED;
    for (const ml_task *k = ML_LOAD(&t->task); k != NULL; k = k->parent)
        if (k->deadline != ML_NONE) left = ML_MIN(left, k->deadline >= now ? k->deadline - now : 0);
    return left;
}

/* A cleanup frame's record with the C library: a longjmp, pthread_exit or cancellation discards
 * the frame that holds it, and the C library calls this while that frame still exists. Runs the
 * cleanup, masked, unless an unwind of ours ran it already (owner cleared). */
static void cleanup_discarded(void *arg)
{
    ml_cleanup *c = arg;
    ml_task *k = c->owner;
    if (k == NULL) return;
    ml_cleanup **link = &k->cleanups; /* c is the innermost one, unless pushes and pops crossed */
    while (*link != NULL && *link != c)
        link = &(*link)->prev;
    if (*link == c) *link = c->prev;
    c->owner = NULL;
    ml_thread *t = &ml__self;
    t->mask_depth++;
    c->fn(c->arg);
    t->mask_depth--;
}

void ml_cleanup_push(ml_cleanup *frame, void (*fn)(void *arg), void *arg)
{
    ml_task *k = ml__self.task;
    frame->fn = fn;
    frame->arg = arg;
    frame->owner = k;
    frame->prev = k != NULL ? k->cleanups : NULL;
    if (k == NULL) return;
    k->cleanups = frame;
    ml__host_cleanup_push((ml_host_cleanup *)frame->thread_record, cleanup_discarded, frame);
}

void ml_cleanup_pop(ml_cleanup *frame, int execute)
{
    ml_task *k = frame->owner;
    if (k != NULL) {
        if (k->cleanups == frame) k->cleanups = frame->prev;
        ml__host_cleanup_pop((ml_host_cleanup *)frame->thread_record);
    }
    frame->owner = NULL;
    if (execute && frame->fn != NULL) {
        ml_mask();
        frame->fn(frame->arg);
        ml_unmask();
    }
}

int ml_with_resource(int (*acquire)(void *arg, void **resource), void *arg,
                     void (*release)(void *resource), int (*scope)(void *resource, void *ctx),
                     void *ctx)
{
    if (acquire == NULL || release == NULL || scope == NULL) return -1;
    void *resource = NULL;
    ml_mask();
    int rc = acquire(arg, &resource);
    ml_unmask();
    if (rc != 0) return rc;
    int result;
    ML_CLEANUP_PUSH(release, resource);
    result = scope(resource, ctx);
    ML_CLEANUP_POP(1);
    return result;
}
