/* Tasks: ml_run, interrupt marking and delivery, masking, cleanups and resources (see task.h).
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
#include <link.h>
#include <pthread.h>
#include <string.h>

#include "engine.h"
#include "heap.h"
#include "host.h"
#include "token.h"
#include "wake.h"

int ml__global_tasks;
static uint64_t global_limit = ML_NONE;
static ml_task *remote_tasks; /* token and global-memory tasks, under the registry lock */
static uint64_t global_generation, global_marked_generation;

uint64_t ml__global_limit(void)
{
    return ML_LOAD(&global_limit);
}

void ml__task_set_global_limit(uint64_t bytes)
{
    ML_STORE(&global_limit, bytes);
    ML_STORE(&global_marked_generation, 0); /* a new limit: look again */
}

void ml_set_global_memory_limit(uint64_t bytes)
{
    if (!ml__initialised()) ml__init();
    ml__task_set_global_limit(bytes);
}

uint64_t ml_global_memory_limit(void)
{
    if (!ml__initialised()) ml__init();
    return ML_LOAD(&global_limit);
}

static void mark(ml_task *k, int reason)
{
    int none = 0;
    __atomic_compare_exchange_n(&k->pending, &none, reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Whether the live heap is above the global limit. Near the limit, the batched sum may lag the
 * other threads' allocations: reconcile then, so that the answer is exact up to allocations in
 * flight. */
static int over_global(void)
{
    uint64_t limit = ML_LOAD(&global_limit);
    if (limit == ML_NONE) return 0;
    uint64_t live = ml__heap_live();
    uint64_t slack = (uint64_t)(ml__thread_count() + 1) * ML_FLUSH_FAR * 2;
    if (live + slack <= limit) return 0;
    /* Near or over: the sum may lag allocations (not yet flushed) or frees (a thread that only
     * frees): reconcile before answering either way. */
    ml__heap_reconcile();
    return ml__heap_live() > limit;
}

/* Brings the calling thread's chain up to date with tokens and the global limit, and returns
 * the innermost task's effective reason (0: not interrupted). Owner thread. */
static int refresh(ml_thread *t)
{
    int reason = 0, global_checked = 0, over = 0;
    for (ml_task *k = t->task; k != NULL; k = k->parent) {
        if (ML_LOAD(&k->pending) == 0 && k->token != NULL && ml_token_is_set(k->token))
            mark(k, ML_TOKEN);
        if (ML_LOAD(&k->pending) == 0 && k->global) {
            if (!global_checked) over = over_global();
            global_checked = 1;
            if (over) mark(k, ML_MEMORY_LIMIT);
        }
        int p = ML_LOAD(&k->pending);
        if (reason == 0) reason = p;
    }
    return reason;
}

static uint64_t exact_allocated(const ml_thread *t)
{
    return t->allocated + ml__since_arm(t);
}

int ml__task_decide(ml_thread *t, uint64_t n)
{
    uint64_t now = t->allocated; /* busy: the countdown is folded in */
    for (ml_task *k = t->task; k != NULL; k = k->parent)
        if (k->deadline != ML_NONE && now + n > k->deadline) mark(k, ML_ALLOCATION_LIMIT);
    if (refresh(t) == 0 || t->mask_depth > 0) return 0;
    return (t->task->flags & ML_UNWIND) ? ML_VERDICT_UNWIND : ENOMEM;
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

/* Address ranges of the text of the C library and the dynamic loader: allocations made from
 * there are on the task's behalf and never unwind. Computed at the first ML_UNWIND task. */
static struct {
    uintptr_t start, end;
} system_text[8];
static int system_text_count = -1;
static pthread_once_t system_text_once = PTHREAD_ONCE_INIT;

static int collect_text(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    (void)ctx;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strncmp(base, "libc.so", 7) != 0 && strncmp(base, "ld-linux", 8) != 0) return 0;
    for (int i = 0; i < info->dlpi_phnum && system_text_count < 8; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        system_text[system_text_count].start = info->dlpi_addr + ph->p_vaddr;
        system_text[system_text_count].end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        system_text_count++;
    }
    return 0;
}

static void find_system_text(void)
{
    system_text_count = 0;
    dl_iterate_phdr(collect_text, NULL);
}

int ml__task_caller_may_unwind(const void *ret)
{
    uintptr_t a = (uintptr_t)ret;
    int count = __atomic_load_n(&system_text_count, __ATOMIC_ACQUIRE);
    if (count < 0) return 0; /* not computed: be safe */
    for (int i = 0; i < count; i++)
        if (a >= system_text[i].start && a < system_text[i].end) return 0;
    return 1;
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
    siglongjmp(k->jump, 1);
}

void ml__task_global_exceeded(void)
{
    uint64_t generation = ML_LOAD(&global_generation);
    if (ML_LOAD(&global_marked_generation) == generation) return; /* done for these tasks */
    ml__heap_reconcile(); /* frees not yet accounted must not interrupt anyone */
    if (ml__heap_live() <= ML_LOAD(&global_limit)) return;
    int wake = 0;
    ml__registry_lock();
    for (ml_task *k = remote_tasks; k != NULL; k = k->remote_next)
        if (k->global && ML_LOAD(&k->pending) == 0) {
            mark(k, ML_MEMORY_LIMIT);
            wake |= (k->flags & ML_WAKE) != 0;
        }
    ML_STORE(&global_marked_generation, generation);
    ml__registry_unlock();
    if (wake) ml__wake_poke();
}

void ml__task_wake_scan(void)
{
    int over = -1;
    for (ml_task *k = remote_tasks; k != NULL; k = k->remote_next) {
        if (!(k->flags & ML_WAKE) || ML_LOAD(&k->woken)) continue;
        if (ML_LOAD(&k->pending) == 0 && k->token != NULL && ml_token_is_set(k->token))
            mark(k, ML_TOKEN);
        if (ML_LOAD(&k->pending) == 0 && k->global) {
            if (over < 0) {
                uint64_t limit = ML_LOAD(&global_limit);
                if (limit != ML_NONE) ml__heap_reconcile_locked();
                over = limit != ML_NONE && ml__heap_live() > limit;
            }
            if (over) mark(k, ML_MEMORY_LIMIT);
        }
        if (ML_LOAD(&k->pending) != 0) {
            ML_STORE(&k->woken, 1);
            ml__wake_send(k->tid);
        }
    }
}

void ml__task_fork_child(void)
{
    /* Only the forking thread survives; its own tasks stay linked, the others' frames are gone. */
    ml_task **link = &remote_tasks;
    ml_thread *self = &ml__self;
    while (*link != NULL) {
        ml_task *k = *link;
        if (k->thread != self) {
            *link = k->remote_next;
            if (k->global) ml__global_tasks--;
        } else {
            k->remote_pprev = link;
            link = &k->remote_next;
        }
    }
    ml__wake_fork_child();
}

/* Makes the calling thread's next allocation an event (to arm or disarm task limits). Called
 * from a signal handler that interrupted memlimits' own code (ml_unmask is async-signal-safe),
 * it leaves the note the busy code honours on its way out. */
static void force_self(ml_thread *t)
{
    if (!ml__busy_enter(t)) {
        t->wake_pending = 1;
        return;
    }
    ml__thread_force_event(t);
    ml__busy_leave(t);
}

/* Takes the task off the thread and off the cross-thread list, restoring the thread's mask. */
static void task_finish(ml_thread *t, ml_task *k)
{
    if (k->global || k->token != NULL) {
        ml__registry_lock();
        *k->remote_pprev = k->remote_next;
        if (k->remote_next != NULL) k->remote_next->remote_pprev = k->remote_pprev;
        if (k->global) ml__global_tasks--;
        ml__registry_unlock();
    }
    t->task = k->parent;
    t->mask_depth = k->mask_at_start;
    force_self(t); /* re-arm without this task's limit */
}

/* fn left the thread inside the task (pthread_exit or cancellation): release what the task
 * registered, as an unwind would, and take it off every list. */
static void task_abandoned(void *arg)
{
    ml_task *k = arg;
    ml_thread *t = &ml__self;
    run_cleanups(t, k);
    task_finish(t, k);
}

ml_status ml_run(const ml_limits *limits, void (*fn)(void *arg), void *arg, uint64_t *allocated)
{
    if (limits == NULL || fn == NULL || (limits->flags & ~(unsigned)(ML_UNWIND | ML_WAKE)) != 0)
        return ML_EINVAL;
    if (limits->token != NULL && !ml__token_valid(limits->token)) return ML_EINVAL;
    if (!ml_active()) return ML_ENOTACTIVE;
    ml__thread_ensure();
    if (limits->flags & ML_WAKE) {
        int rc = ml__wake_setup();
        if (rc != 0) return (ml_status)rc;
    }
    if (limits->flags & ML_UNWIND) pthread_once(&system_text_once, find_system_text);

    ml_thread *t = &ml__self;
    ml_task task;
    memset(&task, 0, sizeof task);
    task.parent = t->task;
    task.thread = t;
    task.tid = t->tid;
    task.flags = limits->flags;
    task.global = limits->global_memory != 0;
    task.token = limits->token;
    task.start = exact_allocated(t);
    task.deadline = limits->allocations == 0 ? ML_NONE
                    : limits->allocations >= ML_NONE - task.start
                        ? ML_NONE - 1
                        : task.start + limits->allocations;
    task.mask_at_start = t->mask_depth;
    int remote = task.global || task.token != NULL;
    if (remote) {
        ml__registry_lock();
        task.remote_next = remote_tasks;
        if (remote_tasks != NULL) remote_tasks->remote_pprev = &task.remote_next;
        task.remote_pprev = &remote_tasks;
        remote_tasks = &task;
        if (task.global) {
            ml__global_tasks++;
            global_generation++;
        }
        ml__registry_unlock();
    }
    pthread_sigmask(SIG_BLOCK, NULL, &task.signals_at_start);
    t->task = &task;
    refresh(t);    /* a token already set or a heap already over the limit: interrupted at once */
    force_self(t); /* arm the task's limit at the next allocation */

    ml_task *volatile self = &task;
    /* If fn leaves the thread (pthread_exit, cancellation), the task must not stay linked: its
     * frame is about to go away. The jump target is inside the push/pop pair, so an unwind of
     * ours still pops it. */
    pthread_cleanup_push(task_abandoned, &task);
    if (sigsetjmp(task.jump, 0) == 0) fn(arg);
    pthread_cleanup_pop(0);

    ml_task *k = self;
    t = &ml__self;
    int reason = 0;
    for (ml_task *i = k; i != NULL && reason == 0; i = i->parent)
        reason = ML_LOAD(&i->pending);
    uint64_t count = exact_allocated(t) - k->start;
    task_finish(t, k);
    if (allocated != NULL) *allocated = count;
    return (ml_status)reason;
}

ml_status ml_limit_global_memory(void (*fn)(void *arg), void *arg)
{
    ml_limits limits = {0, 1, NULL, 0};
    return ml_run(&limits, fn, arg, NULL);
}

ml_status ml_limit_allocations(uint64_t limit, void (*fn)(void *arg), void *arg,
                               uint64_t *allocated)
{
    ml_limits limits = {limit, 0, NULL, 0};
    return ml_run(&limits, fn, arg, allocated);
}

ml_status ml_limit_with_token(ml_token *token, void (*fn)(void *arg), void *arg)
{
    if (token == NULL) return ML_EINVAL;
    ml_limits limits = {0, 0, token, 0};
    return ml_run(&limits, fn, arg, NULL);
}

int ml_is_interrupted(void)
{
    ml_thread *t = &ml__self;
    return t->task != NULL && refresh(t) != 0;
}

void ml_check(void)
{
    ml_thread *t = &ml__self;
    if (t->task == NULL || t->mask_depth > 0) return;
    if (refresh(t) != 0 && ml__task_may_unwind_now(t)) ml__task_unwind(t);
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

void ml_cleanup_push(ml_cleanup *frame, void (*fn)(void *arg), void *arg)
{
    ml_task *k = ml__self.task;
    frame->fn = fn;
    frame->arg = arg;
    frame->owner = k;
    frame->prev = k != NULL ? k->cleanups : NULL;
    if (k != NULL) k->cleanups = frame;
}

void ml_cleanup_pop(ml_cleanup *frame, int execute)
{
    ml_task *k = frame->owner;
    if (k != NULL && k->cleanups == frame) k->cleanups = frame->prev;
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
