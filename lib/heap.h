/* Process-wide heap accounting and the hard heap cap.
 *
 * The live heap is measured in jemalloc's usable sizes (what a block really occupies), from
 * jemalloc's exact per-thread counters of bytes allocated and freed. Each thread adds its
 * balance (allocated - freed) to one process-wide sum at its events, at least every flush
 * interval (below), so the sum lags each thread by less than that: see the bound in README
 * "Accounting". Frees cost nothing extra; a thread that only frees is caught up
 * by a reconcile (a walk over all threads) before any allocation is refused and when the peak
 * grows. */
#ifndef ML_HEAP_H
#define ML_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "thread.h"

/* Requested bytes between two flushes of one thread's balance: ML_FLUSH_NEAR when a heap cap is
 * within ML_FLUSH_NEAR_ZONE per thread of the live heap or a global-memory task runs,
 * ML_FLUSH_FAR otherwise. Far from every limit, a thread can be up to 1 MiB of requests behind;
 * the cap is exceeded by at most ML_FLUSH_NEAR per thread (a thread that armed a far interval
 * did so with 2 MiB per thread of headroom, more than all far intervals together). */
#define ML_FLUSH_NEAR ((uint64_t)64 << 10)
#define ML_FLUSH_FAR ((uint64_t)1 << 20)
#define ML_FLUSH_NEAR_ZONE ((uint64_t)2 << 20)
/* The interval for a thread arming its countdown now. */
uint64_t ml__heap_flush_interval(void);
/* Global-memory tasks (task.c) need the live heap close to exact: while one runs (the count is
 * above zero), every thread flushes at each event and at least every ML_FLUSH_NEAR bytes. The
 * count lives here, where the intervals are chosen; task.c moves it by +1/-1. */
void ml__heap_watch(int delta);
extern int ml__heap_watchers;
static inline int ml__heap_watched(void) /* read at every event: inline */
{
    return ML_LOAD(&ml__heap_watchers) > 0;
}
/* The peak is re-checked against a reconcile whenever it grows by this much. */
#define ML_PEAK_RECHECK ((uint64_t)1 << 20)

/* Adds the calling thread's balance change since its last flush to the process's live heap. */
void ml__heap_flush(ml_thread *t);
/* Flushes every registered thread (reads their counters), making the live heap exact up to
 * allocations in flight. Takes the registry lock. */
void ml__heap_reconcile(void);
/* The same, for a caller that holds the registry lock (the waker). */
void ml__heap_reconcile_locked(void);
/* Whether an allocation of `size` bytes (aligned to `align`, 0: default), replacing the block
 * `old` (realloc; NULL otherwise), keeps the live heap within the cap. Far below the cap it
 * answers at once; near it, it flushes the caller, looks up sizes, and reconciles every thread
 * before answering no. Preconditions: busy; size <= 2^47. */
int ml__heap_admit(ml_thread *t, size_t size, size_t align, const void *old);

void ml__heap_set_cap(uint64_t cap);
uint64_t ml__heap_cap(void);
uint64_t ml__heap_live(void);
uint64_t ml__heap_peak(void);

#endif
