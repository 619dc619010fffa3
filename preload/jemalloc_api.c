/* jemalloc's non-standard API (jemalloc(3)), exported by libmemlimits.so under jemalloc's names
 * and served by the embedded jemalloc, so that a program linked with -ljemalloc and run under
 * memlimits has one heap: its mallocx'd blocks are memlimits', its dallocx of a malloc'd block
 * is right, and mallctl's statistics describe the heap memlimits limits. The allocating calls
 * (mallocx, rallocx, xallocx) are charged like malloc and realloc: budgets, the heap cap, tasks
 * and samples; the others go straight to jemalloc. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "alloc_ext.h"
#include "engine.h"
#include "host.h"

#define ENTRY ML_EXPORT
#define CALLER __builtin_return_address(0)

/* jemalloc(3)'s prototypes: no header of this build declares them. */
void *mallocx(size_t size, int flags);
void *rallocx(void *p, size_t size, int flags);
size_t xallocx(void *p, size_t size, size_t extra, int flags);
size_t sallocx(const void *p, int flags);
void dallocx(void *p, int flags);
void sdallocx(void *p, size_t size, int flags);
size_t nallocx(size_t size, int flags);
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
int mallctlnametomib(const char *name, size_t *mibp, size_t *miblenp);
int mallctlbymib(const size_t *mib, size_t miblen, void *oldp, size_t *oldlenp, void *newp,
                 size_t newlen);
void malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque, const char *opts);

ENTRY void *mallocx(size_t size, int flags)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, ml__flags_alignment(flags))))
        return ml__mallocx_slow(size, flags, CALLER);
    return mlje_mallocx(size, flags);
}

/* A block the profiler tracks is moved by memlimits (ml__rallocx_slow): jemalloc's own paths
 * would take its promoted size class for a small slab object. One compare. */
ENTRY void *rallocx(void *p, size_t size, int flags)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, ml__flags_alignment(flags))) ||
        ML_UNLIKELY(ml__in_tracked_range(p)))
        return ml__rallocx_slow(p, size, flags, CALLER);
    return mlje_rallocx(p, size, flags);
}

/* Counted as size + extra, the most the block may grow to (jemalloc may give less). A sum past
 * the address space is charged as such and refused: the block keeps its size. */
ENTRY size_t xallocx(void *p, size_t size, size_t extra, int flags)
{
    size_t n;
    if (__builtin_add_overflow(size, extra, &n)) n = SIZE_MAX;
    if (ML_UNLIKELY(ml__charge_aligned(n, ml__flags_alignment(flags))))
        return ml__xallocx_slow(p, size, extra, flags, n, CALLER);
    if (ML_UNLIKELY(ml__in_tracked_range(p))) return mlje_sallocx(p, 0); /* tracked: not resized */
    return mlje_xallocx(p, size, extra, flags);
}

ENTRY size_t sallocx(const void *p, int flags)
{
    return mlje_sallocx(p, flags);
}

ENTRY void dallocx(void *p, int flags)
{
    mlje_dallocx(p, flags);
}

/* The size hint of a tracked block would name its requested size class, not the promoted one
 * jemalloc keeps for it: such a block is freed without the hint. */
ENTRY void sdallocx(void *p, size_t size, int flags)
{
    if (ML_UNLIKELY(ml__in_tracked_range(p))) {
        mlje_free(p);
        return;
    }
    mlje_sdallocx(p, size, flags);
}

ENTRY size_t nallocx(size_t size, int flags)
{
    return mlje_nallocx(size, flags);
}

ENTRY int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
{
    return mlje_mallctl(name, oldp, oldlenp, newp, newlen);
}

ENTRY int mallctlnametomib(const char *name, size_t *mibp, size_t *miblenp)
{
    return mlje_mallctlnametomib(name, mibp, miblenp);
}

ENTRY int mallctlbymib(const size_t *mib, size_t miblen, void *oldp, size_t *oldlenp, void *newp,
                       size_t newlen)
{
    return mlje_mallctlbymib(mib, miblen, oldp, oldlenp, newp, newlen);
}

ENTRY void malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque,
                              const char *opts)
{
    mlje_malloc_stats_print(write_cb, cbopaque, opts);
}
