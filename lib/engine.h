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
 * thread's countdown. Cost: one TLS increment, one TLS subtract-with-borrow and one branch.
 * Charging n + 1 (stc; sbb) makes zero-byte requests move the countdown too, so no sequence of
 * allocations escapes the events, and borrows correctly even for n = SIZE_MAX; the exact byte
 * count is recovered with the allocation counter (ml__since_arm). Returns nonzero when the
 * countdown reached zero or went below, which is an event for the slow path. The subtraction is
 * one instruction, so a signal handler forcing the countdown to zero (wake.c) cannot lose its
 * store between a load and a store of ours. */
static inline __attribute__((always_inline)) int ml__charge(uint64_t n)
{
    ml__self.allocations++;
#if defined(__x86_64__)
    /* The countdown is passed as an input memory operand: asm goto with outputs is miscompiled by
     * GCC 12 here (the taken edge was dropped). Nothing else in an entry point reads it, and the
     * slow path reads it with an atomic load, so no stale copy can be used. */
    __asm__ goto("stc\n\tsbbq %1, %0\n\tjbe %l[event]"
                 :
                 : "m"(ml__self.until_event), "r"(n)
                 : "cc"
                 : event);
    return 0;
event:
    return 1;
#else
    uint64_t left = __atomic_load_n(&ml__self.until_event, __ATOMIC_RELAXED);
    __atomic_store_n(&ml__self.until_event, left - n - 1, __ATOMIC_RELAXED);
    return n >= left || n + 1 == 0;
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

/* The slow path of every allocating entry point (event.c, the hub). `n` was charged already;
 * `align` is the requested alignment (0: default) and `old` the block a realloc replaces (NULL
 * otherwise). Returns whether the allocation may go ahead (ML_ALLOW), must fail with ENOMEM
 * (ML_REFUSE), or must fail and unwind the task if its caller may be unwound
 * (ML_REFUSE_UNWIND). Never unwinds itself. */
ml_verdict ml__event(uint64_t n, size_t align, void *old);

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
