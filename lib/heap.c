/* Live and peak heap, and the hard cap (see heap.h for the bound and its proof).
 *
 * ml__heap_sum is the sum over threads of `reported` (the balance a thread last added) and
 * `heap_reserved` (the block admitted at its last event, not yet flushed; a reconcile settles it
 * once the owner has marked it allocated, ml__heap_allocated). A thread's flushes,
 * its own and a reconcile's, are serialised by a one-word lock in `reported` (REPORTED_LOCKED
 * while one of them reads the counters and adds the change): otherwise a reconcile that read the
 * counters before the owner's flush could store its older balance after it, and the sum would
 * lose what the thread allocated in between while the thread believed it had flushed. */
#define _GNU_SOURCE
#include "heap.h"

#include <sched.h>

#include "host.h"
#include "ledger.h"

int64_t ml__heap_sum;         /* sum of every thread's reported balance and reservation */
uint64_t ml__heap_peak_sum;   /* highest ml__heap_sum seen at a flush or a mark */
static uint64_t peak_checked; /* ml__heap_sum at the last reconcile made for the peak */
uint64_t ml__heap_cap_bytes = UINT64_MAX;
int ml__heap_watchers; /* global-memory tasks running (read inline: heap.h) */

#define REPORTED_LOCKED ML_REPORTED_LOCKED

/* The flush lock's slow case (heap.h's ml__heap_reported_take): another flush holds it, which
 * reads two counters and makes one atomic add; spin, yielding now and then (the holder may have
 * been descheduled). */
ML_NOINLINE ML_COLD int64_t ml__heap_reported_wait(ml_thread *t)
{
    for (unsigned spins = 1;; spins++) {
        if (spins % 64 == 0) sched_yield();
        int64_t r = __atomic_exchange_n(&t->reported, REPORTED_LOCKED, __ATOMIC_ACQUIRE);
        if (r != REPORTED_LOCKED) return r;
    }
}

/* Takes t's flush lock from any thread. On the caller's own thread the lock is held busy, so that
 * a signal handler that allocates meanwhile passes straight through instead of waiting for it
 * forever. *entered: busy was entered here. */
static int64_t reported_lock(ml_thread *t, int *entered)
{
    *entered = t == &ml__self && ml__busy_enter(t);
    return ml__heap_reported_take(t);
}

static void reported_unlock(ml_thread *t, int64_t balance, int entered)
{
    __atomic_store_n(&t->reported, balance, __ATOMIC_RELEASE);
    if (entered) ml__busy_leave(t);
}

/* Records `live` as the peak if it is one. Frees by threads that have not flushed may make the
 * sum high: each time the peak grows by ML_PEAK_RECHECK, every thread is caught up first. No
 * flush lock may be held (the reconcile takes them all). */
void ml__heap_note_peak(int64_t live)
{
    uint64_t peak = ML_LOAD(&ml__heap_peak_sum);
    if (live <= 0 || (uint64_t)live <= peak) return;
    if ((uint64_t)live > ML_LOAD(&peak_checked) + ML_PEAK_RECHECK) {
        ml__heap_reconcile();
        live = ML_LOAD(&ml__heap_sum);
        ML_STORE(&peak_checked, live > 0 ? (uint64_t)live : 0);
    }
    while (live > 0 && (uint64_t)live > peak &&
           !__atomic_compare_exchange_n(&ml__heap_peak_sum, &peak, (uint64_t)live, 1,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* The owner's flush (heap.h's ml__heap_flush_locked) from outside busy. */
static int flush_reserve(ml_thread *t, int64_t check, int64_t reserve, int64_t limit, int64_t *live)
{
    int entered;
    int fits = ml__heap_flush_locked(t, reported_lock(t, &entered), check, reserve, limit, live);
    if (entered) ml__busy_leave(t);
    return fits;
}

/* After an owner's flush: a process tree's ledger (ledger.h) sees the figures and adjusts the
 * process's room in the tree. */
static void tell_ledger(ml_thread *t, int64_t live)
{
    if (ml__ledger_attached())
        ml__ledger_heap_note(live, (ml__thread_count() + 1) * ML_FLUSH_NEAR_ZONE, t->allocated);
}

void ml__heap_flush(ml_thread *t)
{
    int64_t live;
    flush_reserve(t, 0, 0, INT64_MAX, &live);
    tell_ledger(t, live);
    ml__heap_note_peak(live);
}

static void flush_remote(ml_thread *t, void *ctx)
{
    (void)ctx;
    int entered;
    int64_t old = reported_lock(t, &entered);
    /* A reservation whose block jemalloc has allocated is in the balance read below: it is
     * settled here, as the owner's flush would (the flag is read first, with acquire, so that the
     * counters read after it include the block). One not yet allocated stays reserved. */
    int64_t settled = 0;
    if (__atomic_load_n(&t->reserve_allocated, __ATOMIC_ACQUIRE)) {
        settled = ML_LOAD(&t->heap_reserved);
        ML_STORE(&t->heap_reserved, 0);
    }
    /* Another thread's counters: read without reset detection, which only its owner does;
     * registered threads have not reached their teardown, where a reset could happen. Allocated
     * first: both only grow, so the balance read is at most the one at the second read, and
     * what the owner allocates after the first read is still ahead of it. */
    uint64_t a = __atomic_load_n(t->je_allocated, __ATOMIC_ACQUIRE);
    uint64_t d = __atomic_load_n(t->je_deallocated, __ATOMIC_ACQUIRE);
    int64_t balance = (int64_t)(t->balance_base + a - d);
    __atomic_add_fetch(&ml__heap_sum, balance - old - settled, __ATOMIC_RELAXED);
    reported_unlock(t, balance, entered);
}

void ml__heap_reconcile(void)
{
    ml__thread_each(flush_remote, NULL);
}

void ml__heap_reconcile_locked(void)
{
    ml__thread_each_locked(flush_remote, NULL);
}

/* A far interval ran out (the request at hand, `charged` units, does not fit in what is left of
 * it): instead of a flush, re-arms it from the thread's exact growth not yet in the sum, when
 * that growth is within ML_REARM_MAX bytes of zero. A thread whose requests mostly replace blocks
 * (reallocs, allocations matched by frees) grows far less than its units allow, and its next
 * flush waits until it has really grown. The interval armed is ML_FLUSH_FAR less the growth,
 * counting a byte as a unit, so the bound of heap.h holds as for a flushed interval: the
 * thread's growth beyond the sum is `grown` now plus at most R_i bytes per unit of what is left,
 * at most R_i * ML_FLUSH_FAR for a ratio R_i >= 1. A thread that freed more than ML_REARM_MAX
 * since its flush flushes, as before, so that the sum does not keep its freed blocks for long.
 * Returns 0, having changed nothing, when the thread must flush. */
static int rearm_far(ml_thread *t, uint64_t charged)
{
    int64_t grown = ml__heap_unflushed(t);
    if (grown > (int64_t)ML_REARM_MAX || grown < -(int64_t)ML_REARM_MAX) return 0;
    uint64_t left = ML_FLUSH_FAR - (grown > 0 ? (uint64_t)grown : 0);
    if (charged >= left) return 0;
    t->flush_left = left;
    return 1;
}

int ml__heap_rearm(ml_thread *t, uint64_t units, uint64_t charged)
{
    uint64_t cap = ML_LOAD(&ml__heap_cap_bytes);
    if (ml__ledger_attached() ||
        (cap != UINT64_MAX && !ml__heap_far_below(cap, ML_LOAD(&ml__heap_sum))) ||
        !rearm_far(t, charged))
        return 0;
    t->flush_left += units - charged; /* the caller takes the event's units off */
    return 1;
}

int ml__heap_admit(ml_thread *t, uint64_t n, size_t align, const void *old)
{
    /* In a process tree the cap is the smaller of the process's own and its room in the tree. */
    uint64_t own_cap = ML_LOAD(&ml__heap_cap_bytes), cap = ML_MIN(own_cap, ml__ledger_heap_room());
    int watched = ml__heap_watched();
    int64_t live = ML_LOAD(&ml__heap_sum);
    /* The far shortcut, no flush and no lookup: inside an interval armed far below the cap,
     * while the sum is still more than the near zone below it. It needs no check of its own
     * (the bound in heap.h):
     * - the block gets at most ML_HEAP_RATIO usable bytes per charged unit (8 for malloc(0), 8
     *   bytes for 1 unit; 4 for 1 byte; 1.78 for 17; at most 1.25 from 64 bytes on, large
     *   classes included; at most 2 for an aligned request, which is charged its alignment too:
     *   ml__charged_units), and its units fit in what is left of the interval: it is part of
     *   the growth, at most ML_HEAP_RATIO * ML_FLUSH_FAR = ML_HEAP_LAG_MAX, that the admission
     *   which armed the interval allowed for;
     * - the thread's unflushed balance is that same growth, at most ML_HEAP_LAG_MAX;
     * - every other thread lags the sum by at most its own interval's growth, ML_HEAP_LAG_MAX:
     *   the near zone, (registered threads + 1) * ML_FLUSH_NEAR_ZONE, holds all of them
     *   together, so while the sum is farther below the cap than that, the intervals in flight
     *   cannot reach the cap between them;
     * When the sum has come within the zone since the interval was armed (other threads'
     * flushes), the interval ends here: a thread that keeps allocating sees the cap near at its
     * next event, and arms a near interval. When the far interval itself ran out, it is re-armed
     * from the thread's exact growth if that is small (rearm_far), without a flush; not in a
     * process tree, whose ledger hears of the thread's figures at its flushes. */
    if (t->state == ML_THREAD_READY && !watched &&
        (cap == UINT64_MAX || ml__heap_far_below(cap, live))) {
        uint64_t charged = ml__charged_units(n, align);
        if (charged < t->flush_left || (!ml__ledger_attached() && rearm_far(t, charged))) return 1;
    }
    if (cap == UINT64_MAX) { /* an interval ends: accounting only */
        flush_reserve(t, 0, 0, INT64_MAX, &live);
        tell_ledger(t, live);
        ml__heap_note_peak(live);
        t->flush_left = ml__heap_next_interval(cap, live, watched);
        return 1;
    }
    size_t usable = mlje_nallocx(n ? n : 1, align ? MLJE_MALLOCX_ALIGN(align) : 0);
    size_t old_usable = old != NULL ? mlje_malloc_usable_size(old) : 0;
    int64_t check = (int64_t)usable - (int64_t)old_usable, reserve = check > 0 ? check : 0;
    int64_t limit = cap > INT64_MAX ? INT64_MAX : (int64_t)cap;
    if (usable != 0) { /* 0: larger than jemalloc can serve */
        for (int attempt = 0; attempt < 3; attempt++) {
            if (flush_reserve(t, check, reserve, limit, &live)) {
                tell_ledger(t, live);
                t->flush_left = ml__heap_next_interval(cap, live, watched);
                return 1;
            }
            /* Frees by threads that have not flushed since (one that only frees never does):
             * catch every thread up, once, before refusing. Then, in a process tree, ask the
             * tree for more room, within the process's own cap. */
            if (attempt == 0) {
                ml__heap_reconcile();
            } else if (attempt == 1) {
                int64_t want = ML_LOAD(&ml__heap_sum) + check;
                if (cap == own_cap || want <= 0 || (uint64_t)want > own_cap ||
                    !ml__ledger_heap_grow((uint64_t)want))
                    break;
                cap = ML_MIN(own_cap, ml__ledger_heap_room());
                limit = cap > INT64_MAX ? INT64_MAX : (int64_t)cap;
            }
        }
        ml__heap_note_peak(live);
    }
    t->flush_left = 0; /* refused: the thread's next allocation is checked again */
    return 0;
}

void ml__heap_watch(int delta)
{
    __atomic_add_fetch(&ml__heap_watchers, delta, __ATOMIC_RELAXED);
}

void ml__heap_set_cap(uint64_t cap)
{
    ML_STORE(&ml__heap_cap_bytes, cap);
}

uint64_t ml__heap_cap(void)
{
    return ML_LOAD(&ml__heap_cap_bytes);
}

uint64_t ml__heap_live(void)
{
    int64_t live = ML_LOAD(&ml__heap_sum);
    return live > 0 ? (uint64_t)live : 0;
}

uint64_t ml__heap_peak(void)
{
    return ML_LOAD(&ml__heap_peak_sum);
}
