/* The slow halves of the entry points beyond glibc's API (preload/new.c, preload/jemalloc_api.c):
 * C++'s operator new with the standard's failure semantics, and jemalloc's non-standard API. Each
 * is reached after the entry's charge hit an event, or after jemalloc returned NULL. */
#ifndef ML_ALLOC_EXT_H
#define ML_ALLOC_EXT_H

#include <stddef.h>

#include "common.h"
#include "host.h"

/* How an operator new fails: throwing (std::bad_alloc after the new-handler loop) or nothrow
 * (NULL), and whether it takes an alignment (std::align_val_t, which must be a power of two:
 * another one fails at once, as libstdc++'s does). */
enum { ML_NEW_NOTHROW = 1u << 0, ML_NEW_ALIGNED = 1u << 1 };

/* The charge of operator new hit an event: the event, then jemalloc (jemalloc's aligned_alloc
 * when `how` has ML_NEW_ALIGNED), then, if that gave nothing, what ml__new_failed does. */
ML_NOINLINE void *ml__new_slow(size_t size, size_t align, unsigned how, const void *ret);
/* An attempt of operator new got no block (refused, or jemalloc out of memory): the standard's
 * loop. Throwing: call the new-handler and try again (charged like any allocation) until a try
 * succeeds; no handler: throw std::bad_alloc. Nothrow: no handler, NULL; otherwise libstdc++'s
 * nothrow operator new takes over (the throwing loop inside a try block). Never returns NULL
 * unless `how` has ML_NEW_NOTHROW. */
ML_NOINLINE ML_COLD void *ml__new_failed(size_t size, size_t align, unsigned how, const void *ret);

/* aligned_alloc, memalign, valloc and pvalloc after their charge hit an event, with a power of
 * two above malloc's alignment: the event, then jemalloc's aligned_alloc; NULL and ENOMEM when
 * refused or out of memory. */
ML_NOINLINE void *ml__aligned_alloc_slow(size_t align, size_t size, const void *ret);

/* The alignment a jemalloc flags word asks for (MALLOCX_ALIGN), 0 for none: what the entries
 * charge (ml__charge_aligned) and the slow halves pass to the event, the same on both sides. */
static inline size_t ml__flags_alignment(int flags)
{
    unsigned lg = (unsigned)flags & MLJE_MALLOCX_LG_ALIGN_MASK;
    return lg != 0 ? (size_t)1 << lg : 0;
}

/* jemalloc's allocating calls after their charge hit an event (rallocx also for a block in the
 * tracked range): the event (the alignment taken from `flags`, the block replaced for rallocx and
 * xallocx), then jemalloc, or the profiler for a sampled request or a tracked block (alloc.c's
 * realloc and include/memlimits.h, "Memprof", say which), then the thread's queued free
 * callbacks. Refused (by a limit, or by a tracker with ML_MEMPROF_REFUSE): mallocx and rallocx
 * return NULL (errno ENOMEM), xallocx the block's size unchanged, as when it cannot grow in
 * place. `n` of xallocx is what was charged: size + extra, the most it may take. */
ML_NOINLINE void *ml__mallocx_slow(size_t size, int flags, const void *ret);
ML_NOINLINE void *ml__rallocx_slow(void *p, size_t size, int flags, const void *ret);
ML_NOINLINE size_t ml__xallocx_slow(void *p, size_t size, size_t extra, int flags, size_t n,
                                    const void *ret);

#endif
