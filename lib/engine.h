/* The engine's slow path and its process-wide state, as seen by the interposed entry points
 * (preload/) and by the public API (api.c). */
#ifndef ML_ENGINE_H
#define ML_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "options.h"
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

/* The slow path of every allocating entry point. `n` was charged already; `align` is the
 * requested alignment (0: default) and `old` the block a realloc replaces (NULL otherwise).
 * Returns 0 when the allocation may go ahead, ENOMEM when it must fail. Never unwinds. */
int ml__event(uint64_t n, size_t align, void *old);

/* The allocation admitted by the last event failed in jemalloc (out of memory): take its n bytes
 * back off the thread's count, its budget lease and its task limits. */
void ml__event_refund(uint64_t n);
/* The allocation admitted by the last event succeeded (n >= 64 KiB): account it now. */
void ml__event_after(uint64_t n);

/* Seeds the per-thread samplers: thread i draws from stream i of `seed`. Init only. */
void ml__event_seed(uint64_t seed);

/* Global initialisation: parse the environment, set up jemalloc, keys and fork handlers. Runs
 * once, from the first allocation or from the library constructor, whichever comes first; a
 * configuration error ends the process with ML_EXIT_CONFIG before main. */
void ml__init(void);
int ml__initialised(void);
const ml_config *ml__config(void);
/* Nanoseconds (monotonic) at initialisation, for the report's wall time. */
uint64_t ml__start_ns(void);

/* Limits that have fired, for the report. */
typedef enum ml_limit_kind { ML_LIMIT_HEAP, ML_LIMIT_ALLOC, ML_LIMIT_KINDS } ml_limit_kind;
typedef struct ml_firing {
    int fired;
    uint32_t thread;     /* registration index of the thread */
    uint64_t allocation; /* that thread's allocation number, from 1 */
    uint64_t size;       /* requested bytes */
    uint64_t count;      /* how many allocations it refused (enomem action) */
} ml_firing;
const ml_firing *ml__firing(ml_limit_kind kind);

/* Totals over all threads, live and exited: requested bytes, allocations, samples. */
void ml__totals(uint64_t *allocated, uint64_t *allocations, uint64_t *samples);

/* Reports (report.c). ml__report_check opens the destination once at start, so that a path
 * that cannot be written stops the program before main. */
int ml__report_check(const ml_config *cfg, char *err, size_t errcap);
/* Writes a report now. status: exit status, or -1 when the process is not exiting; sig: the
 * signal an action is about to raise, or 0. */
void ml__report_write(const char *event, int status, int sig);

#endif
