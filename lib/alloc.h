/* The slow halves of the interposed entry points (preload/malloc.c): each runs the event, then
 * the jemalloc call, and keeps glibc's errno semantics. Out of line so that the entry points stay
 * a charge, a branch and a tail call. */
#ifndef ML_ALLOC_H
#define ML_ALLOC_H

#include <stddef.h>

#include "common.h"

/* `ret` is the entry point's return address: an allocation refused to a task with ML_UNWIND
 * unwinds only when that caller is the task's own code, not the C library's. */
ML_NOINLINE void *ml__malloc_slow(size_t size, const void *ret);
ML_NOINLINE void *ml__calloc_slow(size_t count, size_t size, size_t total, const void *ret);
/* `event`: the charge reached an event (0: p lies in the tracked range and may be tracked). */
ML_NOINLINE void *ml__realloc_slow(void *p, size_t size, int event, const void *ret);
ML_NOINLINE int ml__memalign_slow(void **out, size_t align, size_t size, const void *ret);

#endif
