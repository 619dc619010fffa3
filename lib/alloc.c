/* Slow halves of the entry points (see alloc.h). */
#include "alloc.h"

#include <errno.h>

#include "engine.h"
#include "host.h"
#include "task.h"

/* A refused allocation: unwind the task when it asked for it and the caller allows it, else
 * fail with ENOMEM. Nothing is held here: busy is clear and jemalloc was not entered. */
static int refuse(int verdict, const void *ret)
{
    if (verdict == ML_VERDICT_UNWIND && ml__task_caller_may_unwind(ret))
        ml__task_unwind(&ml__self);
    return ENOMEM;
}

static void *checked(void *p)
{
    if (ML_UNLIKELY(p == NULL)) errno = ENOMEM;
    return p;
}

void *ml__malloc_slow(size_t size, const void *ret)
{
    int verdict = ml__event(size, 0, NULL);
    if (verdict != 0) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return checked(mlje_malloc(size));
}

void *ml__calloc_slow(size_t count, size_t size, size_t total, const void *ret)
{
    int verdict = ml__event(total, 0, NULL);
    if (verdict != 0) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return checked(mlje_calloc(count, size));
}

void *ml__realloc_slow(void *p, size_t size, const void *ret)
{
    int verdict = ml__event(size, 0, p);
    if (verdict != 0) {
        errno = refuse(verdict, ret);
        return NULL;
    }
    return checked(mlje_realloc(p, size));
}

int ml__memalign_slow(void **out, size_t align, size_t size, const void *ret)
{
    int verdict = ml__event(size, align, NULL);
    if (verdict != 0) return refuse(verdict, ret);
    return mlje_posix_memalign(out, align, size);
}
