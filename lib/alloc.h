/* The slow halves of the interposed entry points (preload/malloc.c): each runs the event, then
 * the jemalloc call, and keeps glibc's errno semantics. Out of line so that the entry points stay
 * a charge, a branch and a tail call. */
#ifndef ML_ALLOC_H
#define ML_ALLOC_H

#include <stddef.h>

#include "common.h"

ML_NOINLINE void *ml__malloc_slow(size_t size);
ML_NOINLINE void *ml__calloc_slow(size_t count, size_t size, size_t total);
ML_NOINLINE void *ml__realloc_slow(void *p, size_t size);
ML_NOINLINE int ml__memalign_slow(void **out, size_t align, size_t size);

#endif
