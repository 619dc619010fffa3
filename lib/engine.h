/* The engine as the interposed entry points (preload/) and the client API (api.c) see it: the
 * fast path's charge, and the slow path behind it (event.c). */
#ifndef ML_ENGINE_H
#define ML_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "task.h"
#include "thread.h"

/* The fast path, in one place: count one allocation of n requested bytes against the calling
 * thread's countdown. Cost: one TLS add (the allocation count, counted down), one TLS
 * subtract-with-borrow and one branch. The count's add of -1 carries (but at the thread's first
 * allocation, which is an event: thread.h), so the subtraction charges n + 1: zero-byte requests
 * move the countdown too, so no sequence of allocations escapes the events, and it borrows
 * correctly even for n = SIZE_MAX; the exact byte count is recovered with the allocation count
 * (ml__since_arm). Returns nonzero when the countdown reached zero or went below, which is an
 * event for the slow path. The subtraction is one instruction, so a signal handler forcing the
 * countdown to zero (wake.c) cannot lose its store between a load and a store of ours. */
static inline __attribute__((always_inline)) int ml__charge(uint64_t n)
{
#if defined(__x86_64__)
    /* The count and the countdown are passed as input memory operands: asm goto with outputs is
     * miscompiled by GCC 12 here (the taken edge was dropped). Nothing else in an entry point
     * reads them, and the slow path reads them with atomic loads, so no stale copy can be used. */
    __asm__ goto("addq $-1, %0\n\tsbbq %2, %1\n\tjbe %l[event]"
                 :
                 : "m"(ml__self.allocations_down), "m"(ml__self.until_event), "r"(n)
                 : "cc"
                 : event);
    return 0;
event:
    return 1;
#else
    uint64_t down = ml__self.allocations_down;
    ml__self.allocations_down = down - 1;
    uint64_t charge = n + (down != 0), wrapped = charge < n;
    uint64_t left = __atomic_load_n(&ml__self.until_event, __ATOMIC_RELAXED);
    __atomic_store_n(&ml__self.until_event, left - charge, __ATOMIC_RELAXED);
    return wrapped || charge >= left;
#endif
}

/* ml__charge for an aligned allocation: charges ml__charged_units(n, align) and records the
 * units beyond n + 1 in units_extra, so that the byte count stays exact (ml__since_arm). Costs
 * one more TLS add than ml__charge. */
static inline __attribute__((always_inline)) int ml__charge_aligned(uint64_t n, uint64_t align)
{
    uint64_t units = ml__charged_units(n, align) - 1;
    ml__self.units_extra += units - n;
    return ml__charge(units);
}

/* Requests aligned to a power of two whose size, rounded up to the alignment, is at most this
 * are jemalloc's malloc of the rounded size (preload/malloc.c, preload/new.c). That is the block
 * jemalloc's own aligned path gives them: arena_palloc serves a small aligned request as a malloc
 * of the size rounded up to the alignment, then to its size class, which stays a multiple of the
 * alignment up to the page, and small blocks lie at multiples of their class in page-aligned
 * slabs. But jemalloc's aligned entry points reach that block through its general allocation
 * path, about a hundred instructions more than malloc's. 4096 is the page and the largest class
 * of malloc's table lookup; larger requests take jemalloc's aligned path. tests/test_fast_entries.c
 * and test_fast_cxx.c check the alignment and the size class of routed requests against
 * jemalloc's own. */
#define ML_ALIGNED_AS_MALLOC 4096
/* The size of a request of `size` bytes rounded up to `align` (a power of two), less 1; size 0
 * gives SIZE_MAX, so one compare with ML_ALIGNED_AS_MALLOC routes both. */
static inline size_t ml__aligned_last(size_t size, size_t align)
{
    return (size - 1) | (align - 1);
}

/* The slow path of every allocating entry point (event.c, the hub). `n` was charged already;
 * `align` is the requested alignment (0: default) and `old` the block a realloc replaces (NULL
 * otherwise). Returns whether the allocation may go ahead (ML_ALLOW), must fail with ENOMEM
 * (ML_REFUSE), or must fail and unwind the task if its caller may be unwound
 * (ML_REFUSE_UNWIND). Never unwinds itself. */
ml_verdict ml__event(uint64_t n, size_t align, void *old);
/* ml__event(n, 0, NULL), for malloc's and calloc's slow halves: a large block goes to its
 * one-pass event without the general entry's argument checks. */
ml_verdict ml__event_plain(uint64_t n);
/* ml__event's common case for a request of n bytes charged n + 1 units, for the slow halves that
 * call jemalloc and nothing else after it (malloc's, operator new's): when only the sampler's
 * component ran out (no decision to make, event.c) and the block is below ML_QUICK_BELOW (heap.h's
 * ML_PEAK_BLOCK, so ml__event_after would do nothing), takes the event and returns 1, and the
 * allocation goes ahead as on the fast path. Otherwise returns 0 having changed nothing: the
 * caller then runs ml__event. */
#define ML_QUICK_BELOW ((uint64_t)64 << 10)
int ml__event_quick_small(uint64_t n);
static inline __attribute__((always_inline)) int ml__event_quick(uint64_t n)
{
    return n < ML_QUICK_BELOW && ml__event_quick_small(n);
}

/* The allocation admitted by the last event failed in jemalloc (out of memory): take its n bytes
 * back off the thread's count, its budget lease and its task limits, and its block's reservation
 * off the live heap. */
void ml__event_refund(uint64_t n);
/* The allocation admitted by the last event succeeded: settle the heap's reservation of its block,
 * and account a block of 64 KiB or more at once (so that the peak sees it). */
void ml__event_after(uint64_t n);

/* Makes sure the calling thread is initialised and registered, outside the allocator (ml_run,
 * a new thread's trampoline). */
void ml__thread_ensure(void);

#endif
