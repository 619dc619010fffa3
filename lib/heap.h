/* Process-wide heap accounting and the hard heap cap.
 *
 * The live heap is measured in jemalloc's usable sizes (what a block really occupies), from
 * jemalloc's exact per-thread counters of bytes allocated and freed. Each thread adds its
 * balance (allocated - freed) to one process-wide sum at its events, at least once per flush
 * interval (below). Frees cost nothing extra; a thread that only frees is caught up by a
 * reconcile (a walk over all threads) before any allocation is refused and when the peak grows.
 *
 * The cap's bound (README "Accounting"). A flush interval is counted in the units the countdown
 * charges, n + 1 per request of n bytes (engine.h), so no mix of request sizes, zero included,
 * escapes it. A request of n bytes (malloc, calloc, realloc, alignment up to 16) gets a block of
 * at most ML_HEAP_RATIO * (n + 1) usable bytes: 8 bytes for malloc(0), charged 1 unit, is the
 * worst case over all of jemalloc's size classes (ratios: 8 for 0 bytes, 4 for 1, 1.78 for 17
 * (32-byte class), 1.41 for 33, and at most 1.25 from 64 bytes on, small and large classes alike,
 * a large class being a multiple of the page). Every event that ends an interval flushes the
 * thread, then admits the allocation at hand only if the sum, with every block admitted but not
 * yet flushed (reserved, below), stays within the cap, in one compare-and-swap; then the thread
 * allocates at most the interval it armed (F units) before its next check. (A large block's
 * admission, ml__heap_admit_large, reserves the block and arms an interval not charged with it:
 * the block is in the sum until a flush counts it in the thread's balance.) So, with R_i the
 * ratio of thread i's requests and F_i the interval it armed at its last admission:
 *
 *     live heap <= cap + sum over threads of R_i * F_i
 *
 * (proof: take the last admission before the moment considered, at which the sum was within the
 * cap; every thread has grown by at most R_i * F_i since its own last flush, and what it had
 * before is in the sum or reserved). F_i is ML_FLUSH_NEAR when the thread armed it within
 * ML_FLUSH_NEAR_ZONE per thread of the cap, ML_FLUSH_FAR otherwise. A far interval that runs out
 * on a thread that grew by at most ML_REARM_MAX bytes since its flush (its requests replaced
 * blocks: reallocs, allocations matched by frees) is re-armed without a flush, at ML_FLUSH_FAR
 * units less that growth g (ml__heap_rearm): the thread's growth beyond the sum is then at most
 * g + R_i * (ML_FLUSH_FAR - g) <= R_i * ML_FLUSH_FAR for R_i >= 1, as if it had flushed
 * (tests/test_heap.c: cap_holds_after_reallocs_rearmed_the_intervals). At most 128 KiB per thread
 * allocating near the cap (20 KiB for requests of 64 bytes or more), and 2 MiB for a thread that
 * armed a far interval and has not allocated since. Outside the bound: aligned allocations
 * (alignment above 16) made on the fast path, whose block can be up to 16 KiB for one unit;
 * allocations made inside memlimits' own slow path (pass-through); frees in glibc's thread
 * teardown (thread.c). */
#ifndef ML_HEAP_H
#define ML_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "thread.h"

/* The most usable bytes jemalloc gives per charged unit (n + 1 for n bytes; n + 1 + align for
 * an aligned request, thread.h's ml__charged_units): malloc(0) gets an 8-byte block; an aligned
 * request at most 2 bytes per unit, over every size class and alignment. */
#define ML_HEAP_RATIO 8
/* Flush intervals, in charged units. Near: when a heap cap is within ML_FLUSH_NEAR_ZONE per
 * registered thread (plus one) of the live heap. Watched: while a global-memory task runs.
 * Far: otherwise. */
#define ML_FLUSH_NEAR ((uint64_t)16 << 10)
#define ML_FLUSH_WATCHED ((uint64_t)64 << 10)
#define ML_FLUSH_FAR ((uint64_t)256 << 10)
/* The most a thread's balance can grow between two of its flushes: 2 MiB. The near zone is that
 * much per thread, so that the far intervals in flight cannot by themselves take the heap past
 * the cap. */
#define ML_HEAP_LAG_MAX (ML_HEAP_RATIO * ML_FLUSH_FAR)
#define ML_FLUSH_NEAR_ZONE ML_HEAP_LAG_MAX
/* A far interval that ran out is re-armed without a flush while the thread's growth not yet in
 * the sum is within this many bytes of zero (ml__heap_admit): the interval it then arms is the
 * far one less the growth, at least 3/4 of it. A thread whose requests add to its heap ends its
 * interval with more growth than this, and one that freed more flushes its frees. */
#define ML_REARM_MAX (ML_FLUSH_FAR / 4)
/* Global-memory tasks (task.c) need the live heap close to exact: while one runs (the count is
 * above zero), every thread flushes at each event and at least every ML_FLUSH_WATCHED units. The
 * count lives here, where the intervals are chosen; task.c moves it by +1/-1. */
void ml__heap_watch(int delta);
extern ML_HIDDEN int ml__heap_watchers;
static inline int ml__heap_watched(void) /* read at every event: inline */
{
    return ML_LOAD(&ml__heap_watchers) > 0;
}
/* The peak is re-checked against a reconcile whenever it grows by this much. */
#define ML_PEAK_RECHECK ((uint64_t)1 << 20)
/* A block of this many bytes or more that took the slow path is flushed as soon as allocated,
 * so that the peak sees it even if it is freed before the thread's next event
 * (a realloc only if it grew the thread by that much: ml__heap_unflushed). */
#define ML_PEAK_BLOCK ((uint64_t)64 << 10)

/* Adds the calling thread's balance change since its last flush to the process's live heap, and
 * settles its reservation (the block admitted at its last event, allocated or not since). Owner
 * thread, outside an allocation (after jemalloc returned). */
void ml__heap_flush(ml_thread *t);
/* `reported` while a flush holds it as a lock (heap.c). */
#define ML_REPORTED_LOCKED INT64_MIN
/* The owner's growth not yet in the sum: its balance now, less what the sum holds of it (its
 * reported balance and its reservation). Read without the flush lock: INT64_MAX when a flush or
 * a reconcile holds it, or when jemalloc's counters went back (which only a flush may settle). A
 * reconcile that takes the lock after the read only brings the sum closer: the owner allocates
 * nothing meanwhile, so what it grows from then on is all after it. Used to re-arm a far
 * interval without a flush (ml__heap_rearm), and after an allocation of ML_PEAK_BLOCK bytes or
 * more that took the slow path without a reservation (ml__event_after), which flushes only when
 * this is ML_PEAK_BLOCK or more (a new large block, not a realloc that grew its block a little:
 * the old block is in the sum), so that the peak sees the block even if it is freed before the
 * thread's next event. Owner thread, outside an allocation; inline (after every large slow-path
 * allocation). */
static inline int64_t ml__heap_unflushed(const ml_thread *t)
{
    int64_t reported = __atomic_load_n(&t->reported, __ATOMIC_ACQUIRE);
    uint64_t a = ML_LOAD(t->je_allocated), d = ML_LOAD(t->je_deallocated);
    if (reported == ML_REPORTED_LOCKED || a < t->seen_allocated || d < t->seen_deallocated)
        return INT64_MAX;
    return (int64_t)(t->balance_base + a - d) - reported - ML_LOAD(&t->heap_reserved);
}
/* Flushes every registered thread (reads their counters), making the live heap exact up to
 * allocations in flight. Takes the registry lock. */
void ml__heap_reconcile(void);
/* The same, for a caller that holds the registry lock (the waker). */
void ml__heap_reconcile_locked(void);
/* The heap's part of an event: whether an allocation of n bytes (aligned to `align`, 0:
 * default), replacing the block `old` (realloc; NULL otherwise), may go ahead. Called at every
 * event, after t->flush_left was charged with the units of the earlier allocations. In the
 * middle of a far interval, far below the cap, it answers yes at once. Otherwise (the allocation
 * ends the interval, the cap is near, an alignment above 16, a global-memory task runs, the
 * thread is exiting) it flushes the thread, looks the sizes up, and reserves the block's usable
 * size (less the old block's) in the live heap if that keeps it within the cap, reconciling every
 * thread once before answering no; then it arms the next interval in t->flush_left (0 after a
 * refusal: the next allocation is checked). The reservation is settled by the next
 * ml__heap_flush, which the caller must make once jemalloc has returned (or at once if the
 * allocation does not go ahead). Preconditions: busy; n <= 2^47. */
int ml__heap_admit(ml_thread *t, uint64_t n, size_t align, const void *old);

/* At an event that the far interval's end alone would make a full one (event.c's short path:
 * no flush is due but the interval's): re-arms the interval from the thread's exact growth not
 * yet in the sum, as ml__heap_admit's far shortcut does, when the heap is far below the cap (or
 * has none), the thread grew by at most ML_REARM_MAX and the request at hand (`charged` of the
 * event's `units`) fits in the new interval; not in a process tree. Sets t->flush_left so that
 * taking the event's units off it leaves the new interval less the request. Returns 0, having
 * changed nothing, when the thread must take the full event (and flush). Preconditions: busy,
 * READY, no global-memory task. */
int ml__heap_rearm(ml_thread *t, uint64_t units, uint64_t charged);
/* jemalloc's usable size for a request of n bytes, ML_PEAK_BLOCK <= n <= 2^47 (mlje_nallocx
 * without its call: a test compares them). */
static inline uint64_t ml__heap_large_usable(uint64_t n)
{
    /* The large size classes: from 2^k exclusive to 2^(k+1) inclusive, the multiples of
     * 2^(k-2), four per doubling. */
    unsigned lg_ceil = 63 - (unsigned)__builtin_clzll(2 * n - 1);
    uint64_t spacing_mask = ((uint64_t)1 << (lg_ceil - 3)) - 1;
    return (n + spacing_mask) & ~spacing_mask;
}

/* --- The owner's flush, inline for the large block's event ----------------------------------
 * A large block's event (event.c's event_large) makes one flush per block; called, its frame
 * and call were about 20 of the 4 MiB malloc + free's instructions (bench/WHY.md section 3). So
 * the flush's core lives here, and heap.c's own flushes use the same code. */
extern ML_HIDDEN int64_t ml__heap_sum;        /* the live heap (heap.c's; read inline here) */
extern ML_HIDDEN uint64_t ml__heap_peak_sum;  /* its peak */
extern ML_HIDDEN uint64_t ml__heap_cap_bytes; /* the cap (UINT64_MAX: none); ml__heap_cap() */
/* Takes t's flush lock when another flush holds it: spins, yielding now and then (the holder
 * reads two counters and makes one atomic add, but may have been descheduled). */
int64_t ml__heap_reported_wait(ml_thread *t);
/* Takes t's flush lock (`reported` holds ML_REPORTED_LOCKED while a flush of the owner's or a
 * reconcile's reads the counters and adds the change); returns its reported balance. */
static inline int64_t ml__heap_reported_take(ml_thread *t)
{
    int64_t r = __atomic_exchange_n(&t->reported, ML_REPORTED_LOCKED, __ATOMIC_ACQUIRE);
    return ML_LIKELY(r != ML_REPORTED_LOCKED) ? r : ml__heap_reported_wait(t);
}
/* The thread's balance now. jemalloc's counters only grow; if they are seen to go back (jemalloc
 * recreating its state for a thread that allocates again after its teardown), the balance so far
 * is kept in balance_base and counting restarts from the new values. Owner thread only, under
 * the flush lock (a reconcile reads balance_base). */
static inline int64_t ml__heap_own_balance(ml_thread *t)
{
    uint64_t a = ML_LOAD(t->je_allocated), d = ML_LOAD(t->je_deallocated);
    if (ML_UNLIKELY(a < t->seen_allocated || d < t->seen_deallocated))
        t->balance_base += t->seen_allocated - t->seen_deallocated;
    t->seen_allocated = a;
    t->seen_deallocated = d;
    return (int64_t)(t->balance_base + a - d);
}
/* The owner's flush, its lock taken (`old`: the reported balance the lock returned): adds the
 * balance change since the last flush, less the reservation it settles, to the sum; and, in the
 * same atomic step, reserves `reserve` bytes for the block at hand if the sum plus `check` (the
 * block's usable size less the old block's) stays within `limit`. Releases the lock. Returns
 * whether it reserved; *live is the sum it left. */
static inline __attribute__((always_inline)) int ml__heap_flush_locked(ml_thread *t, int64_t old,
                                                                       int64_t check,
                                                                       int64_t reserve,
                                                                       int64_t limit, int64_t *live)
{
    int64_t balance = ml__heap_own_balance(t);
    int64_t delta = balance - old - ML_LOAD(&t->heap_reserved);
    int64_t sum = ML_LOAD(&ml__heap_sum), next;
    int fits;
    do {
        fits = sum + delta + check <= limit;
        next = sum + delta + (fits ? reserve : 0);
    } while (next != sum && !__atomic_compare_exchange_n(&ml__heap_sum, &sum, next, 1,
                                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    ML_STORE(&t->heap_reserved, fits ? reserve : 0);
    ML_STORE(&t->reserve_allocated, 0);
    __atomic_store_n(&t->reported, balance, __ATOMIC_RELEASE);
    *live = next;
    return fits;
}
/* Whether the sum is far enough below the cap for the intervals in flight: every registered
 * thread, and one more arriving, may grow by ML_HEAP_LAG_MAX before its next flush. */
static inline int ml__heap_far_below(uint64_t cap, int64_t live)
{
    uint64_t zone = (uint64_t)(ml__thread_count() + 1) * ML_FLUSH_NEAR_ZONE;
    if (live < 0) live = 0;
    return (uint64_t)live < cap && cap - (uint64_t)live > zone;
}
/* The interval to arm after a flush that left the sum at `live`. */
static inline uint64_t ml__heap_next_interval(uint64_t cap, int64_t live, int watched)
{
    uint64_t interval =
        cap == UINT64_MAX || ml__heap_far_below(cap, live) ? ML_FLUSH_FAR : ML_FLUSH_NEAR;
    return watched ? ML_MIN(interval, ML_FLUSH_WATCHED) : interval;
}

/* ml__heap_admit for a large block's event (event.c): n >= ML_PEAK_BLOCK bytes, default
 * alignment, no old block, no global-memory task, no process tree. Flushes the thread and
 * reserves the block's usable size in the live heap if that keeps it within the cap, in one
 * compare-and-swap, with or without a cap (so that the peak sees the block at ml__heap_allocated),
 * and arms the next interval in t->flush_left. The block being in the sum from then on, the
 * interval is not charged with it: the thread's growth beyond the sum stays within the interval
 * (the bound above). Returns 0, having reserved nothing, when the block does not fit: the caller
 * then takes ml__heap_admit, which reconciles before refusing. Preconditions: busy, READY. */
static inline __attribute__((always_inline)) int ml__heap_admit_large(ml_thread *t, uint64_t n)
{
    uint64_t cap = ML_LOAD(&ml__heap_cap_bytes);
    int64_t usable = (int64_t)ml__heap_large_usable(n), live;
    /* Busy on the owner's thread already: the flush lock is taken without entering busy. */
    if (!ml__heap_flush_locked(t, ml__heap_reported_take(t), usable, usable,
                               cap > INT64_MAX ? INT64_MAX : (int64_t)cap, &live))
        return 0;
    t->flush_left = ml__heap_next_interval(cap, live, 0);
    return 1;
}
/* After the allocation admitted with a reservation succeeded, instead of ml__heap_flush: marks
 * the reservation's block allocated and lets the peak see the sum, which holds the block since
 * its admission. The reservation stays in the sum until the thread's next flush, or a reconcile
 * (which, the block being allocated, finds it in the thread's balance and settles it there:
 * without the mark it would count it twice until the thread's next flush). A reconcile in the
 * moment between jemalloc's return and the mark counts the block twice until the next flush of
 * the thread, of either kind; the peak's recheck (ML_PEAK_RECHECK) bounds what that can add to
 * the peak. Owner thread, outside a process tree (whose ledger hears of the thread's figures at
 * flushes). */
/* Records `live` as the peak if it is one, catching every thread up first each time the peak
 * grows by ML_PEAK_RECHECK. No flush lock may be held. */
void ml__heap_note_peak(int64_t live);
static inline void ml__heap_allocated(ml_thread *t) /* after every large block: inline */
{
    __atomic_store_n(&t->reserve_allocated, 1, __ATOMIC_RELEASE);
    int64_t live = ML_LOAD(&ml__heap_sum);
    if (live > 0 && (uint64_t)live > ML_LOAD(&ml__heap_peak_sum)) ml__heap_note_peak(live);
}

void ml__heap_set_cap(uint64_t cap);
uint64_t ml__heap_cap(void);
uint64_t ml__heap_live(void);
uint64_t ml__heap_peak(void);

#endif
