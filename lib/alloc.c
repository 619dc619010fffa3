/* Slow halves of the entry points (see alloc.h). */
#include "alloc.h"

#include <errno.h>

#include "engine.h"
#include "host.h"

static void *checked(void *p)
{
    if (ML_UNLIKELY(p == NULL)) errno = ENOMEM;
    return p;
}

void *ml__malloc_slow(size_t size)
{
    if (ml__event(ML_CHARGE(size), 0, NULL) != 0) {
        errno = ENOMEM;
        return NULL;
    }
    return checked(mlje_malloc(size));
}

void *ml__calloc_slow(size_t count, size_t size, size_t total)
{
    if (ml__event(ML_CHARGE(total), 0, NULL) != 0) {
        errno = ENOMEM;
        return NULL;
    }
    return checked(mlje_calloc(count, size));
}

void *ml__realloc_slow(void *p, size_t size)
{
    if (ml__event(size, 0, p) != 0) {
        errno = ENOMEM;
        return NULL;
    }
    return checked(mlje_realloc(p, size));
}

int ml__memalign_slow(void **out, size_t align, size_t size)
{
    if (ml__event(ML_CHARGE(size), align, NULL) != 0) return ENOMEM;
    return mlje_posix_memalign(out, align, size);
}
