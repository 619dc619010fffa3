/* The slow halves of the interposed entry points (preload/malloc.c): each runs the event, then
 * the jemalloc call, and keeps glibc's errno semantics. Out of line so that the entry points stay
 * a charge, a branch and a tail call. */
#ifndef ML_ALLOC_H
#define ML_ALLOC_H

#include <stddef.h>

#include "common.h"
#include "memlimits.h"
#include "task.h"

/* `ret` is the entry point's return address: an allocation refused to a task with ML_UNWIND
 * unwinds only when that caller is the task's own code, not the C library's. */
ML_NOINLINE void *ml__malloc_slow(size_t size, const void *ret);
ML_NOINLINE void *ml__calloc_slow(size_t count, size_t size, size_t total, const void *ret);
/* `event`: the charge reached an event (0: p lies in the tracked range and may be tracked). */
ML_NOINLINE void *ml__realloc_slow(void *p, size_t size, int event, const void *ret);
ML_NOINLINE int ml__memalign_slow(void **out, size_t align, size_t size, const void *ret);

/* The two steps around jemalloc of every slow half, for the others (alloc_ext.c): a refused
 * allocation's errno, after unwinding the task if the verdict and the caller allow it; and the
 * accounting after an admitted allocation's jemalloc call (p NULL: give the n bytes back). */
int ml__alloc_refuse(ml_verdict verdict, const void *ret);
void *ml__alloc_settle(void *p, uint64_t n);
/* For the other entry points' slow halves (alloc_ext.c), after an admitted allocation: whether
 * the profiler sampled it (ml__alloc_sampling), then either the sampled block `p` (from the
 * tracked arena, or `p` got otherwise when none can be had) settled and handed to the profiles
 * (ml__alloc_sampled: NULL + ENOMEM if a callback refused it), or an unsampled block settled
 * and the thread's queued free callbacks run (ml__alloc_unsampled). */
int ml__alloc_sampling(void);
void *ml__alloc_sampled(void *p, size_t size, ml_alloc_kind kind, const void *ret);
void *ml__alloc_unsampled(void *p, uint64_t n);

#endif
