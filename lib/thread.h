/* Per-thread state: one zero-initialised, initial-exec TLS struct of plain data per thread, and
 * the registry that links the live ones so that the heap can be reconciled across threads.
 *
 * Who touches what: the owning thread reads and writes everything here. Other threads read a
 * registered thread's jemalloc counters and update its `reported` balance (heap.c's
 * reconcile), and read its totals racily (ml__totals), under the registry lock, which also keeps
 * the struct registered while they do. The wake-up signal's handler on the owning thread (wake.c)
 * forces the countdown to zero when `busy` is clear and leaves `wake_pending` when it is set. */
#ifndef ML_THREAD_H
#define ML_THREAD_H

#include <pthread.h>
#include <stdint.h>

#include "common.h"
#include "sampler.h"

enum ml_thread_state {
    ML_THREAD_NEW = 0, /* the zero state: first allocation takes the slow path and registers */
    ML_THREAD_READY,   /* registered; accounting batched */
    ML_THREAD_DEAD,    /* past its TLS destructor: unregistered, accounted at every allocation */
};

typedef struct ml_thread {
    /* Hot: what this thread may allocate before the next event. Every allocation of n bytes
     * subtracts n + 1 in one instruction (engine.h; the thread's first, n: allocations_down);
     * reaching zero or below takes the slow path.
     * Zero in a new thread, so the first allocation is an event. */
    uint64_t until_event;
    /* Allocations made by this thread, counted down from 0 on the fast path: the count (the
     * report's allocation index) is 0 - allocations_down, ml__thread_allocations. Counted down,
     * the fast path's add of -1 carries at every allocation but the thread's first, and the carry
     * is the one unit each request is charged beyond its size (engine.h), so that unit costs no
     * instruction of its own. The thread's first allocation is charged n units: ml__since_arm
     * and ml__units_since_arm add the missing one while it lies after the arming. */
    uint64_t allocations_down;
    /* Units charged beyond n + 1 by aligned allocations (engine.h's ml__charge_aligned, and
     * memalign's assembly): not bytes, so ml__since_arm takes them out. */
    uint64_t units_extra;

    /* Slow path only. until_event was last set to `armed` when `allocations` was
     * `allocations_at_arm` and `units_extra` was `units_extra_at_arm`; see ml__since_arm. */
    uint64_t armed;
    uint64_t allocations_at_arm, units_extra_at_arm;
    uint64_t allocated;   /* exact requested bytes up to the last arming */
    uint64_t sample_left; /* charged units up to and including the next sampled one (event.c) */
    uint64_t flush_left;  /* charged units (n + 1 per request) until the next heap check */
    uint64_t lease_left;  /* bytes of the process budget leased to this thread; ML_NONE: none */
    uint64_t samples;     /* samples taken by this thread */
    ml_rng rng;

    /* Heap accounting (heap.c). jemalloc's own per-thread byte counters (usable sizes), read at
     * events; `reported` is the balance this thread last added to the process's live heap (also
     * the lock of its flushes), `heap_reserved` the usable size of the block admitted at its last
     * event, counted in the live heap until a flush settles it, and `reserve_allocated` set once
     * jemalloc allocated that block (heap.c's ml__heap_allocated), so that a reconcile may settle
     * it too. */
    const uint64_t *je_allocated, *je_deallocated;
    uint64_t seen_allocated, seen_deallocated, balance_base;
    int64_t reported;
    int64_t heap_reserved;
    int reserve_allocated;

    /* Tasks (task.c). `task` is the innermost task running on this thread; the wake-up signal's
     * handler sets wake_pending when it finds the thread busy. */
    struct ml_task *task;
    uint32_t mask_depth;
    volatile int wake_pending;
    int tid; /* kernel thread id, for the wake-up signal: set at registration and in a fork child */

    struct ml_thread *next, **pprev; /* registry links, under the registry lock */
    uint32_t index;                  /* registration order: 0 is the first thread */
    uint8_t state;                   /* enum ml_thread_state */
    uint8_t exit_rounds;             /* TLS destructor rounds seen at thread exit */
    uint8_t busy;                    /* inside the slow path: nested allocations pass through */
} ml_thread;

extern ML_TLS ml_thread ml__self;

/* The allocations made by thread t (allocations_down). */
static inline uint64_t ml__thread_allocations(const ml_thread *t)
{
    return 0 - ML_LOAD(&t->allocations_down);
}

/* Units charged since the countdown was armed: n + 1 per allocation of n bytes (aligned ones
 * more, recorded in units_extra). The thread's first allocation took n off the countdown
 * (allocations_down): its missing unit is added while it lies after the arming, that is while
 * the count was 0 at the arming and is not now. Modulo 2^64, like the countdown. Includes an
 * allocation being charged. */
static inline uint64_t ml__units_since_arm(const ml_thread *t)
{
    uint64_t first = ML_LOAD(&t->allocations_at_arm) == 0 && ML_LOAD(&t->allocations_down) != 0;
    return ML_LOAD(&t->armed) - ML_LOAD(&t->until_event) + first;
}

/* The bytes requested in `units` charged since the arming: one unit less per allocation, and
 * the units_extra. */
static inline uint64_t ml__bytes_of_units(const ml_thread *t, uint64_t units)
{
    return units - (ml__thread_allocations(t) - ML_LOAD(&t->allocations_at_arm)) -
           (ML_LOAD(&t->units_extra) - ML_LOAD(&t->units_extra_at_arm));
}

/* Requested bytes allocated since the countdown was armed, exactly. Modulo 2^64, which keeps it
 * exact even when a subtraction wrapped (n = SIZE_MAX charges 2^64). Includes an allocation
 * being charged. */
static inline uint64_t ml__since_arm(const ml_thread *t)
{
    return ml__bytes_of_units(t, ml__units_since_arm(t));
}

/* The units an allocation of n bytes is charged: n + 1, and for aligned allocations (align > 0)
 * align more (saturating), because jemalloc may give an aligned request a block far larger than
 * n (16 KiB for a page-aligned malloc(0)): with them, no block's usable size exceeds
 * ML_HEAP_RATIO units (at most 2 for any alignment, measured over every size class), so the heap
 * accounting's flush intervals, counted in units, bound aligned allocations too (heap.h). */
static inline uint64_t ml__charged_units(uint64_t n, uint64_t align)
{
    uint64_t units;
    if (__builtin_add_overflow(n, align, &units)) units = UINT64_MAX;
    return units + 1;
}

/* Records that the countdown is being armed now (see ml__since_arm). */
static inline void ml__thread_mark_arm(ml_thread *t)
{
    t->allocations_at_arm = ml__thread_allocations(t);
    t->units_extra_at_arm = t->units_extra;
}

/* Enters memlimits' own code on this thread: from here, nested allocations pass straight
 * through and the wake-up signal's handler only leaves a note. Returns 0 if the thread was
 * already busy (the caller must then do nothing). Async-signal-safe. */
static inline int ml__busy_enter(ml_thread *t)
{
    if (t->busy) return 0;
    t->busy = 1;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return 1;
}

/* Makes the calling thread's next allocation an event, keeping the count exact: the bytes left
 * on the countdown are taken off `armed`. Owner thread only, busy or in the wake-up handler;
 * async-signal-safe. */
void ml__thread_force_event(ml_thread *t);

/* Leaves memlimits' code, honouring a wake-up signal that came meanwhile. */
static inline void ml__busy_leave(ml_thread *t)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    t->busy = 0;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (t->wake_pending) {
        t->wake_pending = 0;
        ml__thread_force_event(t);
    }
}

/* Makes the calling thread's next allocation an event, from its own code or from a signal
 * handler running on it: if the handler interrupted memlimits' own code (busy), it leaves the
 * note that ml__busy_leave honours on the way out instead. Async-signal-safe. */
static inline void ml__thread_force_event_self(ml_thread *t)
{
    if (!ml__busy_enter(t)) {
        t->wake_pending = 1;
        return;
    }
    ml__thread_force_event(t);
    ml__busy_leave(t);
}

/* Registers the calling thread (state NEW -> READY). Preconditions: global init done, busy. */
void ml__thread_register(ml_thread *t);
/* Runs fn with the registry lock held (the lock also guards the list of cross-thread tasks). */
void ml__registry_lock(void);
void ml__registry_unlock(void);
/* Calls fn on every registered thread, under the registry lock (taken, or already held). */
void ml__thread_each(void (*fn)(ml_thread *t, void *ctx), void *ctx);
void ml__thread_each_locked(void (*fn)(ml_thread *t, void *ctx), void *ctx);
/* Number of registered threads (read at every heap admission: inline). */
extern ML_HIDDEN uint32_t ml__thread_registered;
static inline uint32_t ml__thread_count(void)
{
    return ML_LOAD(&ml__thread_registered);
}
/* Totals over all threads, live and exited: requested bytes, allocations, samples. */
void ml__totals(uint64_t *allocated, uint64_t *allocations, uint64_t *samples);
/* The same and more, from one walk under the registry lock: racy for threads allocating during
 * the call, exact for the others. Exited threads count with what they had at their retirement;
 * a forked child continues its parent's sums. */
typedef struct ml_thread_totals {
    uint64_t allocated;    /* requested bytes (ml__since_arm included) */
    uint64_t allocations;  /* allocation calls */
    uint64_t samples;      /* samples taken */
    uint64_t je_allocated; /* jemalloc's counters: usable bytes allocated and freed */
    uint64_t je_freed;
    uint32_t live;       /* threads registered now */
    uint32_t registered; /* threads ever registered: the next registration index */
} ml_thread_totals;
void ml__thread_totals(ml_thread_totals *out);

/* The work that thread exit and fork need from the modules above this one (heap accounting,
 * the budget, tasks). They are registered once at init (init.c), so that this module never
 * calls up: mimalloc's declared upcall, as a table. Every hook runs on the thread concerned. */
typedef struct ml_thread_hooks {
    /* A destructor round of an exiting thread, not the last: other keys' destructors may still
     * free, so the thread stays registered. Busy. */
    void (*exit_round)(ml_thread *t);
    /* The last round: give back what the thread holds, before it is unregistered. Busy. */
    void (*retire)(ml_thread *t);
    /* In the fork child, on its one thread, once that thread's `tid` is its own. When
     * `multithreaded`, the fork took every lock (thread.c), the locks are reset and the registry
     * is reduced to the forking thread, which is busy. Otherwise the parent had only ever had
     * this thread, nothing was locked, and the code a signal handler interrupted may be in the
     * middle of updating any shared structure: touch only this thread's own facts. */
    void (*fork_child)(int multithreaded);
    /* In the fork child, for each thread that did not survive a fork that took every lock,
     * before the registry drops it: its struct is the child's copy, as of the fork. */
    void (*fork_lost)(const ml_thread *t);
    /* Around a fork that takes every lock (a multithreaded process): prepare takes the locks of
     * the modules above the registry, before any of thread.c's; parent releases them after.
     * fork_child(1) resets them in the child. */
    void (*fork_prepare)(void);
    void (*fork_parent)(void);
} ml_thread_hooks;

/* Sets up the pthread key whose destructor retires a thread, and the fork handlers. Called once
 * by init.c: the key before jemalloc initialises (so that ours runs first at thread exit), the
 * fork handlers after it. `hooks` must outlive the process. */
int ml__thread_setup_key(const ml_thread_hooks *hooks);
void ml__thread_setup_fork(void);

#endif
