/* The one seam between memlimits and its host: the embedded jemalloc (linked in with every public
 * name renamed to mlje_*, see cmake/embed-jemalloc.sh), jemalloc's private globals, glibc's
 * internals, dlsym, and the few system services the engine uses. No other file of lib/ or
 * preload/ names any of them. Nothing here allocates through the interposed malloc, takes a lock
 * behind the caller's back, or touches stdio, so all of it may be called from the allocator's
 * slow path (except where a function says otherwise). */
#ifndef ML_HOST_H
#define ML_HOST_H

#include <pthread.h>
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
/* jemalloc's non-standard API (jemalloc(3)), the same renamed. */
void *mlje_mallocx(size_t size, int flags);
void *mlje_rallocx(void *p, size_t size, int flags);
size_t mlje_xallocx(void *p, size_t size, size_t extra, int flags);
size_t mlje_sallocx(const void *p, int flags);
void mlje_dallocx(void *p, int flags);
void mlje_sdallocx(void *p, size_t size, int flags);
int mlje_mallctlnametomib(const char *name, size_t *mibp, size_t *miblenp);
int mlje_mallctlbymib(const size_t *mib, size_t miblen, void *oldp, size_t *oldlenp, void *newp,
                      size_t newlen);
void mlje_malloc_stats_print(void (*write_cb)(void *, const char *), void *cbopaque,
                             const char *opts);
#define MLJE_MALLOCX_LG_ALIGN_MASK 0x3f /* the flags' alignment field: log2, 0 for none */
/* Two of jemalloc's internal functions, renamed: malloc's general path (what its inline fast
 * path falls back to) and the sized free of C++'s sized operator delete (p not NULL). */
void *mlje_malloc_default(size_t size);
void mlje_sdallocx_noflags(void *p, size_t size);
/* jemalloc's own operator new and new[] (its C++ object, kept by cmake/embed-jemalloc.sh): the
 * inline fast path of malloc, falling back to ml__cxx_fallback (preload/new.c) on a miss. */
void *mlje_cxx_new(size_t size);
void *mlje_cxx_new_array(size_t size);

/* The process's C++ runtime (libstdc++), looked up with dlsym when first needed: memlimits never
 * links it, so a C program does not load it. None of these may be called from the slow path
 * (busy) or with any memlimits lock held. */
typedef void (*ml_new_handler)(void);
/* std::get_new_handler(); NULL when none is installed or there is no C++ runtime. */
ml_new_handler ml__host_new_handler(void);
/* Throws std::bad_alloc through the C++ runtime; without one (a C++ operator called from a process
 * without libstdc++), writes a line on stderr and aborts. */
__attribute__((noreturn)) void ml__host_throw_bad_alloc(void);
/* Runs libstdc++'s own nothrow operator new (aligned to `align` if it is not 0), which calls the
 * throwing operator new (memlimits' own, through the process's binding) inside a try block and
 * returns NULL for anything it throws: how memlimits gets the standard's nothrow semantics,
 * including a new-handler that throws, without catching in C. Returns 0 if libstdc++ is not in
 * the process (*out untouched), 1 otherwise. */
int ml__host_nothrow_new(size_t size, size_t align, void **out);

/* Makes jemalloc initialise itself and checks that it keeps per-thread byte counters (built
 * with --enable-stats). Returns 0, or -1 when the counters are missing. Init only. */
int ml__host_jemalloc_init(void);
/* Sets up jemalloc's state for the calling thread and returns pointers to its exact per-thread
 * counters of bytes allocated and freed (usable sizes). Under an exhausted RLIMIT_AS the thread
 * is set up without jemalloc's thread cache (host.c says why). Owner thread, busy. */
void ml__host_jemalloc_thread(const uint64_t **allocated, const uint64_t **deallocated);

/* stdio's list lock, which glibc's fork takes after the atfork prepare handlers: memlimits' fork
 * handlers take it first, so that no thread inside stdio calling malloc can deadlock a fork. */
void ml__host_stdio_lock(void);
void ml__host_stdio_unlock(void);
void ml__host_stdio_reset(void); /* in the fork child */

/* The real pthread_create (the next definition after this library's own), found once with
 * dlsym(RTLD_NEXT). Not from the allocator. Returns EAGAIN if none can be found. */
int ml__host_pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                            void *arg);

/* Whether `addr` lies in the text of the C library or the dynamic loader: allocations made from
 * there are on a task's behalf and never unwind. The ranges are found once, at the first call
 * of ml__host_find_system_text (not from the allocator); before it, every address counts as
 * system text. */
void ml__host_find_system_text(void);
int ml__host_in_system_text(const void *addr);

/* Whether calls to malloc reach this library's entry point: calls malloc(0) through the
 * process's binding of malloc (the GOT) and sees whether `counter`, the calling thread's
 * allocation counter, moved. Comparing addresses is not enough: a non-PIE executable that takes
 * malloc's address makes its own PLT stub the canonical address of malloc. 0 when this object
 * has no entry points (test programs link the engine alone). Ownership is settled when the
 * program starts, so the first answer is kept. Thread-safe. */
int ml__host_owns_malloc(const uint64_t *counter);

/* write(2) to a file descriptor, retrying on EINTR and short writes; errno preserved. */
void ml__write_all(int fd, const char *buf, size_t len);
/* Nanoseconds from CLOCK_MONOTONIC. */
uint64_t ml__now_ns(void);
/* 64 bits from getrandom(2), falling back to the clock and the pid if it is unavailable. */
uint64_t ml__os_entropy(void);
/* The kernel thread id of the caller. */
int ml__gettid(void);
/* The process's environment (environ), for parsing MEMLIMITS_*; safe before libc is
 * initialised. */
char *const *ml__environment(void);
/* getenv over the environ the process started with; safe before libc is initialised. */
const char *ml__getenv(const char *name);
/* The system page size, cached. */
size_t ml__page_size(void);

#endif
