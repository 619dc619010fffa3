/* Slow halves of the entry points (see alloc.h). */
#include "alloc.h"

#include <errno.h>
#include <stdint.h>

#include "engine.h"
#include "host.h"
#include "memprof.h"
#include "task.h"

/* A refused allocation: unwind the task when it asked for it and the caller allows it (the
 * allocation was made by the task's own code, not by the C library or the dynamic loader on its
 * behalf), else fail with ENOMEM. Nothing is held here: busy is clear and jemalloc was not
 * entered. */
static int refuse(ml_verdict verdict, const void *ret)
{
    if (verdict == ML_REFUSE_UNWIND && !ml__host_in_system_text(ret) &&
        ml__task_may_unwind_now(&ml__self))
        ml__task_unwind(&ml__self);
    return ENOMEM;
}

/* After the jemalloc call of an admitted allocation: on failure the n bytes were never
 * allocated, so they are given back; on success the live heap is flushed again, so that a large
 * block freed before the thread's next event still reaches the peak. */
static void *settle(void *p, uint64_t n)
{
    if (ML_UNLIKELY(p == NULL)) {
        ml__event_refund(n);
        errno = ENOMEM;
    } else {
        ml__event_after(n);
    }
    return p;
}

/* After an admitted allocation that is not sampled: run the free callbacks queued on this thread
 * (tracked blocks it freed since its last event). */
static void *done(void *p)
{
    if (ML_MEMPROF_STARTED() && ml__memprof_pending()) ml__memprof_drain();
    return p;
}

/* A sampled allocation: the block comes from the tracked arena (an ordinary one if none can be
 * had), then the profiles' alloc callbacks run; a refusal gives the bytes back. */
static void *sampled(void *p, size_t size, ml_alloc_kind kind, const void *ret)
{
    if (settle(p, size) == NULL) return NULL;
    void *q = ml__memprof_track(p, size, kind, ret);
    if (q == NULL) {
        ml__event_refund(size);
        errno = ENOMEM;
    }
    return q;
}

/* malloc's and calloc's slow halves once a profile was ever started (out of line: the profiler
 * adds nothing to them before). Until then no block is tracked, so no free callback can be
 * queued on the thread and done() has nothing to run: ml__memprof_started only goes from 0 to
 * 1, before the first tracked block exists. */
static ML_NOINLINE void *malloc_profiled(size_t count, size_t size, size_t total, const void *ret,
                                         int zero)
{
    if (ml__memprof_sampled()) {
        void *p = ml__memprof_block(total, 0, zero);
        if (p == NULL) p = zero ? mlje_calloc(count, size) : mlje_malloc(size);
        return sampled(p, total, zero ? ML_ALLOC_CALLOC : ML_ALLOC_MALLOC, ret);
    }
    return done(settle(zero ? mlje_calloc(count, size) : mlje_malloc(size), total));
}

void *ml__malloc_slow(size_t size, const void *ret)
{
    ml_verdict verdict = ml__event_plain(size);
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    if (ML_MEMPROF_STARTED()) return malloc_profiled(1, size, size, ret, 0);
    return settle(mlje_malloc(size), size);
}

void *ml__calloc_slow(size_t count, size_t size, size_t total, const void *ret)
{
    ml_verdict verdict = ml__event_plain(total);
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    if (ML_MEMPROF_STARTED()) return malloc_profiled(count, size, total, ret, 1);
    return settle(mlje_calloc(count, size), total);
}

void *ml__realloc_slow(void *p, size_t size, int event, const void *ret)
{
    ml_verdict verdict = event ? ml__event(size, 0, p) : ML_ALLOW;
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    int fresh = event && ML_MEMPROF_STARTED() && ml__memprof_sampled();
    /* The range check inline: the call only for a block in the profiler's range. */
    if (ML_UNLIKELY(fresh || (ml__in_tracked_range(p) && ml__host_tracked_owns(p)))) {
        void *q = ml__memprof_realloc(p, size, ret, fresh);
        return event ? settle(q, size) : q;
    }
    void *q = mlje_realloc(p, size);
    return done(event ? settle(q, size) : q);
}

int ml__memalign_slow(void **out, size_t align, size_t size, const void *ret)
{
    ml_verdict verdict = ml__event(size, align, NULL);
    if (verdict != ML_ALLOW) return refuse(verdict, ret);
    if (ML_MEMPROF_STARTED() && ml__memprof_sampled()) {
        void *p = ml__memprof_block(size, align, 0);
        if (p == NULL && mlje_posix_memalign(&p, align, size) != 0) p = NULL;
        p = sampled(p, size, ML_ALLOC_ALIGNED, ret);
        if (p == NULL) return ENOMEM;
        *out = p;
        return 0;
    }
    int err = mlje_posix_memalign(out, align, size);
    settle(err == 0 ? *out : NULL, size);
    done(NULL);
    return err;
}

/* The same two steps for the slow halves of the other entry points (alloc_ext.c). */
int ml__alloc_refuse(ml_verdict verdict, const void *ret)
{
    return refuse(verdict, ret);
}

void *ml__alloc_settle(void *p, uint64_t n)
{
    return settle(p, n);
}

int ml__alloc_sampling(void)
{
    return ML_MEMPROF_STARTED() && ml__memprof_sampled();
}

void *ml__alloc_sampled(void *p, size_t size, ml_alloc_kind kind, const void *ret)
{
    return sampled(p, size, kind, ret);
}

void *ml__alloc_unsampled(void *p, uint64_t n)
{
    return done(settle(p, n));
}
