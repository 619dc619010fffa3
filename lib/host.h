/* The one seam between memlimits and its host: the embedded jemalloc (linked in with every public
 * name renamed to mlje_*, see cmake/embed-jemalloc.sh) and the few system services the engine
 * uses. Nothing here allocates through the interposed malloc, takes a lock behind the caller's
 * back, or touches stdio, so all of it may be called from the allocator's slow path. */
#ifndef ML_HOST_H
#define ML_HOST_H

#include <stddef.h>
#include <stdint.h>

/* jemalloc 5.3, statically linked and hidden. Same contracts as the unprefixed names. */
void *mlje_malloc(size_t size);
void *mlje_calloc(size_t n, size_t size);
void *mlje_realloc(void *p, size_t size);
void mlje_free(void *p);
int mlje_posix_memalign(void **out, size_t align, size_t size);
void *mlje_aligned_alloc(size_t align, size_t size);
void *mlje_memalign(size_t align, size_t size);
void *mlje_valloc(size_t size);
size_t mlje_malloc_usable_size(const void *p);
size_t mlje_nallocx(size_t size, int flags);
int mlje_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
#define MLJE_MALLOCX_ALIGN(a) ((int)(__builtin_ffsll((long long)(a)) - 1))

/* write(2) to a file descriptor, retrying on EINTR and short writes; errno preserved. */
void ml__write_all(int fd, const char *buf, size_t len);
/* Nanoseconds from CLOCK_MONOTONIC / CLOCK_REALTIME. */
uint64_t ml__now_ns(void);
uint64_t ml__wall_ns(void);
/* 64 bits from getrandom(2), falling back to the clock and the pid if it is unavailable. */
uint64_t ml__os_entropy(void);
/* The kernel thread id of the caller. */
int ml__gettid(void);
/* getenv over the environ the process started with; safe before libc is initialised. */
const char *ml__getenv(const char *name);
/* The system page size, cached. */
size_t ml__page_size(void);

#endif
