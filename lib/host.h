/* The one seam between memlimits and its host: the embedded jemalloc (linked in with every public
 * name renamed to mlje_*, see cmake/embed-jemalloc.sh), jemalloc's private globals, glibc's
 * internals, dlsym, and the few system services the engine uses. No other file of lib/ or
 * preload/ names any of them. Nothing here allocates through the interposed malloc, takes a lock
 * behind the caller's back, or touches stdio, so all of it may be called from the allocator's
 * slow path (except where a function says otherwise). */
#ifndef ML_HOST_H
#define ML_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"

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
 * with --enable-stats) and that it handed over its fork handlers (below). Returns 0, -1 when
 * the counters are missing, -2 when the fork handlers are. Init only. */
int ml__host_jemalloc_init(void);
/* Sets up jemalloc's state for the calling thread and returns pointers to its exact per-thread
 * counters of bytes allocated and freed (usable sizes). Under an exhausted RLIMIT_AS the thread
 * is set up without jemalloc's thread cache (host.c says why). Owner thread, busy. */
void ml__host_jemalloc_thread(const uint64_t **allocated, const uint64_t **deallocated);

/* jemalloc's process-wide statistics, refreshed first (the "epoch" mallctl locks every arena in
 * turn, so never from the allocator's path: only from a program's own calls such as mallinfo).
 * `mapped`: bytes of the extents jemalloc has mapped and holds, whether they hold live blocks,
 * free room, unused dirty or lazily-freed pages, or jemalloc's metadata. `retained`: address
 * space it keeps reserved but not backed (returned to the kernel, not unmapped). Returns 0, or -1
 * with both 0 when jemalloc cannot say. Any thread; takes jemalloc's locks, not the caller's. */
typedef struct ml_host_heap_stats {
    uint64_t mapped;
    uint64_t retained;
} ml_host_heap_stats;
int ml__host_jemalloc_stats(ml_host_heap_stats *out);

/* stdio's list lock, which glibc's fork takes after the atfork prepare handlers: memlimits' fork
 * handlers take it first, so that no thread inside stdio calling malloc can deadlock a fork. */

/* fork. The process has one set of fork handlers for memlimits and its jemalloc: jemalloc's call
 * of pthread_atfork at its initialisation is redirected to a function of host_runtime.c that
 * stores its three handlers (cmake/embed-jemalloc.sh), and memlimits' handlers (thread.c) call
 * them through these, at the point and under the condition they choose. Each does nothing if
 * jemalloc has not initialised yet. */
void ml__host_jemalloc_prefork(void);
void ml__host_jemalloc_postfork_parent(void);
void ml__host_jemalloc_postfork_child(void);
/* Whether the process has only ever had one thread: glibc's __libc_single_threaded, the
 * criterion by which glibc's own fork (2.36) skips its malloc and stdio locks, so that fork
 * stays usable from signal handlers. Once false it stays false, in forked children too.
 * Async-signal-safe. */
int ml__host_single_threaded(void);

/* stdio's list lock, which glibc's fork takes after the atfork prepare handlers (when the process
 * is multithreaded): memlimits' fork handlers take it first, so that no thread inside stdio
 * calling malloc can deadlock a fork. */
void ml__host_stdio_lock(void);
void ml__host_stdio_unlock(void);
void ml__host_stdio_reset(void); /* in the fork child */

/* The real pthread_create (the next definition after this library's own), found once with
 * dlsym(RTLD_NEXT). Not from the allocator. Returns EAGAIN if none can be found. */
int ml__host_pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                            void *arg);

/* The C library's own per-thread list of cleanup records, the interface under the old
 * pthread_cleanup_push (_pthread_cleanup_push, still exported by glibc). glibc runs the records
 * of the frames that a longjmp, siglongjmp or __longjmp_chk discards, at the jump, and those of
 * the frames that pthread_exit or a cancellation unwinds, as each frame is left: in both cases
 * innermost first, and while the frames still exist (on the stack of the code that jumps or of
 * the unwinder). It knows which frames a jump discards from the stack pointer the jump restores,
 * on the thread's own stack. A C++ exception does not run them. `record` must live in the frame
 * whose leaving runs fn(arg); ml__host_cleanup_pop unlinks it (and every record pushed after it)
 * without running it. Owner thread. */
typedef struct ml_host_cleanup {
    void *opaque[4];
} ml_host_cleanup;
void ml__host_cleanup_push(ml_host_cleanup *record, void (*fn)(void *arg), void *arg);
void ml__host_cleanup_pop(ml_host_cleanup *record);

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

/* write(2) to a file descriptor, retrying on EINTR and short writes; errno preserved. Returns
 * 0, or the errno of the write that failed (what was written before it stays written). */
int ml__write_all(int fd, const char *buf, size_t len);
/* A duplicate of fd, close-on-exec, numbered high above the descriptors programs use: the
 * lowest free number from 16 below min(RLIMIT_NOFILE, 1024) (below 1024 so that the kernel's
 * descriptor table stays small). Returns it, or -1 when that range is full (the caller keeps
 * what it has rather than take a low number from the program). errno preserved. */
int ml__host_dup_high(int fd);
/* Makes `entry` ("NAME=value") NAME's definition in environ, so that children inherit it. Each
 * entry of NAME has its pointer replaced in place (in the array main's envp also points to);
 * when there is none, environ becomes a copy of the array with the entry added, made with mmap.
 * Allocates nothing through malloc and frees nothing, so it may run inside the first malloc;
 * strings and arrays other code may still hold stay valid. `entry` must never be freed or
 * changed. Init only (no other thread may be changing the environment). Returns 0, or -1 when
 * the copy cannot be mapped. */
int ml__host_env_put(char *entry);
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
/* Whether the ELF file at `path` is a Go program (it has a .go.buildinfo or .note.go.buildid
 * section): Go's heap does not come from malloc, so limits on malloc do not bound it, and Go
 * programs end without running exit handlers. Reads the file's section headers; no allocation.
 * 0 for anything it cannot read. */
int ml__host_is_go_program(const char *path);

/* Tracked blocks (host_tracked.c): sampled blocks live in a dedicated jemalloc arena in a
 * reserved address range, arranged so that jemalloc's free reaches memlimits for them and for
 * no other block. ml__host_tracked_setup reserves the range and creates the arena (once; -1 if
 * either fails) and registers the upcall that every free of a tracked block makes, with the
 * block's key, on the freeing thread, with no jemalloc lock held, before the block is released.
 * ml__host_tracked_alloc returns a tracked block (NULL: no memory, or no arena). A tracked
 * block's key is its page; ml__host_tracked_owns says, without a table, whether a block is
 * tracked (realloc uses it). */
int ml__host_tracked_setup(void (*free_hook)(uintptr_t key));
void *ml__host_tracked_alloc(size_t n, size_t align, int zero);
int ml__host_tracked_owns(const void *p);
uintptr_t ml__host_tracked_key(const void *p);
/* Releases the tracked blocks the calling thread keeps for reuse (thread exit). */
void ml__host_tracked_thread_exit(void);
/* Purging (host_purge.c): when the embedded jemalloc returns pages to the system. Its defaults
 * keep freed pages (dirty) for reuse and return them on a timer, so memlimits bounds two moments:
 * - Thread exit. jemalloc 5.3 purges every dirty page of an arena that its last thread leaves;
 *   the next thread given the arena faults them all in again. memlimits purges the arena only
 *   down to ML_HOST_EXIT_KEEP dirty bytes (least recently freed first, and its muzzy pages), so
 *   the arenas that no thread holds keep at most that much each: with jemalloc's 4 arenas per
 *   CPU, 32 MiB on 2 CPUs.
 * - Growth. When a request of ML_HOST_GROW_MIN bytes or more fits in none of an arena's dirty
 *   extents, jemalloc takes pages it has not used or has purged, and the dirty pages that did not
 *   fit stay resident beside them. Before that, memlimits purges the arena's dirty pages (least
 *   recently freed first) down to what keeps its active pages, the request and its dirty pages
 *   within 1 + 1/ML_HOST_RESIDENT_SLACK of the arena's peak (the most pages it has had active
 *   at such a request, the request's included), and never below ML_HOST_RESIDENT_FLOOR. So an
 *   arena's resident pages stay within 5/4 of its peak, plus 1 MiB, whenever it takes pages;
 *   reuse of freed pages, which spares the page faults, goes on below that. Smaller requests are
 *   slabs, which fit in any dirty extent. An arena set never to purge (dirty_decay_ms -1,
 *   through MALLOC_CONF or mallctl) is left alone.
 * ML_HOST_JE_PAGE is jemalloc's page, its unit of page counts (Debian's x86-64 build;
 * tests/targets/robust_purge.c checks arenas.page). The bounds read jemalloc 5.3's internal
 * layout, checked for each arena as jemalloc creates it (if it did not match, jemalloc would
 * purge as it does without them, and that test fails). */
#define ML_HOST_EXIT_KEEP ((size_t)4 << 20)
#define ML_HOST_GROW_MIN ((size_t)64 << 10)
#define ML_HOST_RESIDENT_SLACK 4
#define ML_HOST_RESIDENT_FLOOR ((size_t)1 << 20)
#define ML_HOST_JE_PAGE ((size_t)4096)
/* The three calls of jemalloc that embed-jemalloc.sh redirects here (same arguments). */
void ml__host_tcache_decay(void *tsdn, void *arena, bool is_background_thread, bool all);
void *ml__host_grow(void *tsdn, void *pac, void *ehooks, void *ecache, void *expand, size_t size,
                    size_t alignment, bool zero, bool guarded);
bool ml__host_pac_init(void *tsdn, void *pac, void *base, void *emap, void *edata_cache,
                       void *cur_time, size_t oversize_threshold, ssize_t dirty_decay_ms,
                       ssize_t muzzy_decay_ms, void *stats, void *stats_mtx);

/* Hidden: loaded with one instruction each in the entry points, not through the GOT. */
extern ML_HIDDEN uintptr_t ml__tracked_lo, ml__tracked_span;
/* One compare: whether p lies in the reserved range (never, before the first profile). */
static inline int ml__in_tracked_range(const void *p)
{
    return (uintptr_t)p - __atomic_load_n(&ml__tracked_lo, __ATOMIC_RELAXED) <
           __atomic_load_n(&ml__tracked_span, __ATOMIC_RELAXED);
}

/* Callstacks (host_unwind.c): return addresses of the calling thread's frames, innermost first,
 * starting at the frame that returns to `ret` (memlimits' frames below it are not given; ret NULL:
 * at the first frame outside memlimits' object). Never inside jemalloc, never from a signal
 * handler; takes no lock the program could hold, allocates nothing.
 * ML_HOST_UNWIND_AUTO: frame pointers where the object's call frame information says the step
 * is exact (CFA = rbp + 16, rbp saved at CFA - 16), libunwind for the rest from the first frame
 * where it is not (or for the whole walk when that frame came early; libgcc's unwinder for the
 * whole walk when libunwind is not loaded). The walk may allocate (libunwind's first walk on a
 * thread): the caller must keep those allocations from being sampled.
 * ML_HOST_UNWIND_FP: frame pointers only; the stack ends at the first frame that is not exact.
 * ML_HOST_UNWIND_LIBUNWIND: libunwind's unw_backtrace for every walk (libgcc's without it).
 * The mode is set once at init (MEMLIMITS_UNWIND). ml__host_backtrace_setup loads libunwind
 * (not in fp mode; it keeps a pipe, two descriptors, open from then on) and reads every loaded
 * object's tables; ml__host_backtrace_warm reads the tables (not libunwind) and warms the calling
 * thread. Both outside the allocator, before the first capture. Objects loaded or unloaded later
 * are seen at the next walk (dl_iterate_phdr's counters), which reads the tables again. */
enum { ML_HOST_UNWIND_AUTO, ML_HOST_UNWIND_FP, ML_HOST_UNWIND_LIBUNWIND };
void ml__host_unwind_mode(int mode);
void ml__host_backtrace_setup(void);
void ml__host_backtrace_warm(void);
unsigned ml__host_backtrace(void **frames, unsigned max, const void *ret);
/* Whether addr lies in memlimits' own object. */
int ml__host_in_own_text(const void *addr);
/* dladdr: the object file, the nearest symbol (NULL if none) and the offset from it (or from
 * the object's base). -1 when addr is in no object. Takes the loader's lock; never allocates. */
int ml__host_symbolize(const void *addr, const char **object, const char **symbol,
                       uintptr_t *offset);

#endif
