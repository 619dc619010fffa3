/* Slow halves of the entry points (see alloc.h). */
#include "alloc.h"

#include <errno.h>
#include <stdint.h>

#include "engine.h"
#include "host.h"
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

void *ml__malloc_slow(size_t size, const void *ret)
{
    ml_verdict verdict = ml__event(size, 0, NULL);
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return settle(mlje_malloc(size), size);
}

void *ml__calloc_slow(size_t count, size_t size, size_t total, const void *ret)
{
    ml_verdict verdict = ml__event(total, 0, NULL);
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return settle(mlje_calloc(count, size), total);
}

void *ml__realloc_slow(void *p, size_t size, const void *ret)
{
    ml_verdict verdict = ml__event(size, 0, p);
    if (verdict != ML_ALLOW) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return settle(mlje_realloc(p, size), size);
}

int ml__memalign_slow(void **out, size_t align, size_t size, const void *ret)
{
    ml_verdict verdict = ml__event(size, align, NULL);
    if (verdict != ML_ALLOW) return refuse(verdict, ret);
    int err = mlje_posix_memalign(out, align, size);
    settle(err == 0 ? *out : NULL, size);
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
