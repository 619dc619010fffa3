/* glibc's malloc statistics and tuning calls — mallinfo, mallinfo2, malloc_stats, malloc_info and
 * mallopt — answered from memlimits' own accounting (README "glibc's statistics and mallopt").
 * Left to glibc, they would describe glibc's heap, which nothing uses once memlimits owns malloc:
 * zeros while memory is in use. The entry points are in preload/info.c. None of these is on the
 * allocation path: each reconciles every thread and refreshes jemalloc's statistics. */
#ifndef ML_INFO_H
#define ML_INFO_H

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>

/* Everything the calls report, gathered before anything is written, so that output that
 * allocates (stdio) never runs while a lock of memlimits or jemalloc is held. */
typedef struct ml_info {
    uint64_t live;        /* live heap, exact after a reconcile (ml_heap_live) */
    uint64_t peak;        /* the highest live heap seen (ml_heap_peak), at least `live` */
    uint64_t system;      /* bytes jemalloc holds mapped for the heap, at least `live` */
    uint64_t system_max;  /* the highest `system` any of these calls saw, at least `peak` */
    uint64_t aspace;      /* `system` plus the address space jemalloc keeps reserved */
    uint64_t heap_cap;    /* ML_NONE: none; likewise the next two */
    uint64_t budget;      /* the process allocation budget */
    uint64_t global;      /* the global memory limit */
    uint64_t allocated;   /* requested bytes, all threads, exited ones included */
    uint64_t allocations; /* allocation calls, all threads */
} ml_info;

/* Fills `info`. Takes the registry lock and jemalloc's arena locks, one at a time; allocates
 * nothing. Any thread, not from a signal handler. */
void ml__info_collect(ml_info *info);

/* The interposed calls, with glibc 2.36's signatures. Field by field meanings: README. */
struct mallinfo2 ml__info_mallinfo2(void);
/* mallinfo2's values, each clamped to INT_MAX (glibc truncates them modulo 2^32). */
struct mallinfo ml__info_mallinfo(void);
/* glibc's malloc_stats text, then memlimits' limits and counters, on stderr's descriptor (after
 * flushing stderr) with write(2): it allocates nothing. */
void ml__info_malloc_stats(void);
/* glibc's malloc_info XML, with memlimits' figures in a <memlimits> element, written to fp with
 * one fwrite (which may allocate: it is the program's own call). options must be 0 and fp not
 * NULL: else -1 with errno EINVAL, and nothing is written. -1 also when fp fails (errno from
 * stdio). 0 on success. */
int ml__info_malloc_info(int options, FILE *fp);
/* Accepts glibc's parameters as no-ops: 1 for every M_* name glibc's <malloc.h> defines, with
 * glibc's own range check for M_MXFAST; 0 for any other parameter. */
int ml__info_mallopt(int param, int value);

#endif
