/* Slow halves of the entry points beyond glibc's API (see alloc_ext.h). */
#include "alloc_ext.h"

#include <errno.h>
#include <string.h>
#include <stdint.h>

#include "alloc.h"
#include "engine.h"
#include "host.h"
#include "memprof.h"

/* The allocation of operator new itself: jemalloc's malloc, or its aligned_alloc. */
static void *get(size_t size, size_t align, unsigned how)
{
    return (how & ML_NEW_ALIGNED) ? mlje_aligned_alloc(align, size) : mlje_malloc(size);
}

/* One try after the charge hit an event: NULL when refused or out of memory. */
static void *get_slow(size_t size, size_t align, unsigned how, const void *ret)
{
    ml_verdict verdict = ml__event(size, (how & ML_NEW_ALIGNED) ? align : 0, NULL);
    if (verdict != ML_ALLOW) {
        errno = ml__alloc_refuse(verdict, ret);
        return NULL;
    }
    if (ml__alloc_sampling()) { /* a block the profiles track: ML_ALLOC_NEW */
        void *p = ml__memprof_block(size, (how & ML_NEW_ALIGNED) ? align : 0, 0);
        return ml__alloc_sampled(p != NULL ? p : get(size, align, how), size, ML_ALLOC_NEW, ret);
    }
    return ml__alloc_unsampled(get(size, align, how), size);
}

/* One more try, charged and counted like the first. */
static void *try_again(size_t size, size_t align, unsigned how, const void *ret)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, (how & ML_NEW_ALIGNED) ? align : 0)))
        return get_slow(size, align, how, ret);
    return get(size, align, how);
}

static int bad_alignment(size_t align, unsigned how)
{
    return (how & ML_NEW_ALIGNED) && (align == 0 || (align & (align - 1)) != 0);
}

void *ml__new_slow(size_t size, size_t align, unsigned how, const void *ret)
{
    if (bad_alignment(align, how)) return ml__new_failed(size, align, how, ret);
    void *p = get_slow(size, align, how, ret);
    return p != NULL ? p : ml__new_failed(size, align, how, ret);
}

void *ml__new_failed(size_t size, size_t align, unsigned how, const void *ret)
{
    if (bad_alignment(align, how)) {
        if (how & ML_NEW_NOTHROW) return NULL;
        ml__host_throw_bad_alloc();
    }
    if (how & ML_NEW_NOTHROW) {
        /* The standard's nothrow operator new is the throwing one in a try block. No handler:
         * the throwing one would throw at once. Otherwise libstdc++'s nothrow operator new runs
         * it (memlimits' own, reached through the process's binding) and catches. */
        if (ml__host_new_handler() == NULL) return NULL;
        void *p;
        if (ml__host_nothrow_new(size, (how & ML_NEW_ALIGNED) ? align : 0, &p)) return p;
        /* No libstdc++ (another C++ runtime): the same loop, which cannot catch an exception
         * thrown by the handler. */
    }
    for (;;) {
        ml_new_handler handler = ml__host_new_handler();
        if (handler == NULL) {
            if (how & ML_NEW_NOTHROW) return NULL;
            ml__host_throw_bad_alloc();
        }
        handler(); /* may free memory, install another handler, or throw */
        void *p = try_again(size, align, how, ret);
        if (p != NULL) return p;
    }
}

void *ml__aligned_alloc_slow(size_t align, size_t size, const void *ret)
{
    ml_verdict verdict = ml__event(size, align, NULL);
    if (verdict != ML_ALLOW) {
        errno = ml__alloc_refuse(verdict, ret);
        return NULL;
    }
    if (ml__alloc_sampling()) { /* a block the profiles track: ML_ALLOC_ALIGNED */
        void *p = ml__memprof_block(size, align, 0);
        return ml__alloc_sampled(p != NULL ? p : mlje_aligned_alloc(align, size), size,
                                 ML_ALLOC_ALIGNED, ret);
    }
    return ml__alloc_unsampled(mlje_aligned_alloc(align, size), size);
}

/* jemalloc(3)'s flags besides the alignment, in jemalloc 5.3's encoding: zeroing, and the arena
 * field (MALLOCX_ARENA(a) is (a + 1) << 20; a thread cache, bits 8 to 19, changes nothing here). */
#define JE_MALLOCX_ZERO 0x40
#define JE_MALLOCX_ARENA_MASK (~0xfffff)

/* The kind of a sampled mallocx block: an alignment asked for makes it ML_ALLOC_ALIGNED (zeroed
 * or not), else zeroing ML_ALLOC_CALLOC, else ML_ALLOC_MALLOC. */
static ml_alloc_kind mallocx_kind(int flags)
{
    if (ml__flags_alignment(flags) != 0) return ML_ALLOC_ALIGNED;
    return (flags & JE_MALLOCX_ZERO) ? ML_ALLOC_CALLOC : ML_ALLOC_MALLOC;
}

/* A sampled block goes to the tracked arena with the flags' alignment and zeroing (jemalloc's own
 * block if none can be had), unless the flags name an arena: the block then stays in it,
 * untracked, since arena.<i>.reset and .destroy release its blocks without a free, and the
 * profiles count it (ml_memprof_untracked). */
void *ml__mallocx_slow(size_t size, int flags, const void *ret)
{
    size_t align = ml__flags_alignment(flags);
    ml_verdict verdict = ml__event(size, align, NULL);
    if (verdict != ML_ALLOW) {
        errno = ml__alloc_refuse(verdict, ret);
        return NULL;
    }
    if (ml__alloc_sampling()) {
        if (!(flags & JE_MALLOCX_ARENA_MASK)) {
            void *p = ml__memprof_block(size, align, flags & JE_MALLOCX_ZERO);
            return ml__alloc_sampled(p != NULL ? p : mlje_mallocx(size, flags), size,
                                     mallocx_kind(flags), ret);
        }
        ml__memprof_untracked();
    }
    return ml__alloc_unsampled(mlje_mallocx(size, flags), size);
}

/* As realloc (alloc.c): a tracked block, or any block whose new request is sampled, is moved by
 * the profiler (realloc callbacks, or an alloc callback of kind ML_ALLOC_REALLOC), never by
 * jemalloc's rallocx (which would take a tracked block's promoted size class for a small slab
 * object). Into an arena the flags name, the new block is never tracked: a tracked block is moved
 * there by memlimits and gets its free callback at once; a sampled request is counted untracked. */
void *ml__rallocx_slow(void *p, size_t size, int flags, const void *ret)
{
    size_t align = ml__flags_alignment(flags);
    ml_verdict verdict = ml__event(size, align, p);
    if (verdict != ML_ALLOW) {
        errno = ml__alloc_refuse(verdict, ret);
        return NULL;
    }
    int sampled = ml__alloc_sampling();
    int tracked = ml__host_tracked_owns(p);
    if (flags & JE_MALLOCX_ARENA_MASK) {
        if (sampled) ml__memprof_untracked();
        if (!tracked) return ml__alloc_unsampled(mlje_rallocx(p, size, flags), size);
        void *q = mlje_mallocx(size, flags);
        if (q != NULL) {
            size_t old = mlje_malloc_usable_size(p);
            memcpy(q, p, old < size ? old : size);
            mlje_free(p); /* its free callback: queued here, run by ml__alloc_unsampled */
        }
        return ml__alloc_unsampled(q, size);
    }
    if (ML_UNLIKELY(sampled || tracked)) {
        void *q = ml__memprof_reallocx(p, size, align, flags & JE_MALLOCX_ZERO, ret, sampled);
        return ml__alloc_settle(q, size);
    }
    return ml__alloc_unsampled(mlje_rallocx(p, size, flags), size);
}

/* xallocx never moves a block, so a sampled charge cannot become a tracked block: it is counted
 * untracked. A tracked block is never resized in place (see rallocx): it keeps its size, and no
 * realloc callback runs. */
size_t ml__xallocx_slow(void *p, size_t size, size_t extra, int flags, size_t n, const void *ret)
{
    ml_verdict verdict = ml__event(n, ml__flags_alignment(flags), p);
    if (verdict != ML_ALLOW) {
        errno = ml__alloc_refuse(verdict, ret);
        return mlje_sallocx(p, 0);
    }
    if (ml__alloc_sampling()) ml__memprof_untracked();
    size_t got = ml__in_tracked_range(p) ? mlje_sallocx(p, 0) : mlje_xallocx(p, size, extra, flags);
    ml__alloc_unsampled(p, n); /* counted like the fast path: a request, whatever it got */
    return got;
}
