/* The host seam's profiler half (see host.h, "Tracked blocks"): where sampled blocks live so that
 * their free is recognised without slowing any other free, and dladdr for callstacks' symbols
 * (the unwinder is host_unwind.c).
 *
 * Tracked blocks are allocated in a dedicated jemalloc arena whose memory comes from a reserved
 * address range (extent hooks below). A small tracked block is allocated as a 16 KiB extent and
 * promoted with jemalloc's own arena_prof_promote (the mechanism of jemalloc's profiler, which
 * memlimits never turns on): jemalloc then records it under its small size class but as a
 * non-slab extent, so that free's fast path, which only handles slab objects, sends it to the
 * slow path, which calls arena_dalloc_promoted for it and for nothing else. A large tracked
 * block is made larger than the thread caches' largest class, so that its free calls
 * large_dalloc directly. cmake/embed-jemalloc.sh redirects jemalloc's calls of those two
 * functions from its entry points to the wrappers here, which tell the profiler (one compare of
 * the address against the reserved range for large_dalloc) and then release the block. Untracked
 * blocks never reach this file: free stays jemalloc's own code, profile or not. */
#define _GNU_SOURCE
#include "host.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

/* jemalloc 5.3's ABI, as its headers define it (the embedded copy's headers are not installed
 * under the renamed names). */
typedef struct extent_hooks_s extent_hooks_t;
struct extent_hooks_s {
    void *(*alloc)(extent_hooks_t *, void *, size_t, size_t, bool *, bool *, unsigned);
    bool (*dalloc)(extent_hooks_t *, void *, size_t, bool, unsigned);
    void (*destroy)(extent_hooks_t *, void *, size_t, bool, unsigned);
    bool (*commit)(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned);
    bool (*decommit)(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned);
    bool (*purge_lazy)(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned);
    bool (*purge_forced)(extent_hooks_t *, void *, size_t, size_t, size_t, unsigned);
    bool (*split)(extent_hooks_t *, void *, size_t, size_t, size_t, bool, unsigned);
    bool (*merge)(extent_hooks_t *, void *, size_t, void *, size_t, bool, unsigned);
};
#define MLJE_MALLOCX_ZERO 0x40
#define MLJE_MALLOCX_TCACHE_NONE (1 << 8)
#define MLJE_MALLOCX_ARENA(a) ((int)(((unsigned)(a) + 1) << 20))
#define SC_LARGE_MINCLASS 16384 /* 4 KiB pages */
#define SC_SMALL_MAXCLASS 14336
#define EDATA_ADDR_OFFSET 8 /* edata_t: uint64_t e_bits; void *e_addr; ... */

void *mlje_mallocx(size_t size, int flags);
extern __thread char je_tsd_tls[]; /* jemalloc's tsd_t of the thread: a tsdn_t * */
void je_arena_prof_promote(void *tsdn, void *ptr, size_t usize);
void je_arena_dalloc_promoted(void *tsdn, void *ptr, void *tcache, bool slow_path);
void je_large_dalloc(void *tsdn, void *edata);
void ml__host_dalloc_promoted(void *tsdn, void *ptr, void *tcache, bool slow_path);
void ml__host_large_dalloc(void *tsdn, void *edata);

uintptr_t ml__tracked_lo, ml__tracked_span;
static uintptr_t bump, reserved_end;
static unsigned arena;
static size_t tcache_max;
static void (*on_free)(uintptr_t key);
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;
static int setup_done; /* 1: ok, -1: failed */
static ML_TLS uint64_t *thread_allocatedp;

static ML_TLS uint64_t *thread_deallocatedp;

/* Freed small tracked blocks kept by the freeing thread, still promoted: its next tracked
 * allocation of the same size class takes one, which costs nothing of jemalloc's instead of a
 * large allocation and, at the free, a demotion and the thread cache's flush back to the arena.
 * jemalloc's per-thread counters must never be moved forward by hand (its event thresholds
 * would be skipped, and its fast paths would stay off), and memlimits' accounting takes a
 * counter seen going back for a reset; so a stashed block is simply not counted freed: the
 * free's count is taken off just before jemalloc adds it, and the block stays in the live heap
 * at its size while kept (at most STASH_MAX blocks of at most 14 KiB per thread). When the stash
 * is full, and when the thread exits, blocks are released for real. */
#define STASH_MAX 16
static ML_TLS struct {
    void *blocks[STASH_MAX];
    uint32_t usize[STASH_MAX];
    unsigned count;
    uint8_t releasing;
} stash;

static uint64_t *counter(uint64_t **cache, const char *name)
{
    if (*cache == NULL) {
        size_t len = sizeof *cache;
        mlje_mallctl(name, (void *)cache, &len, NULL, 0);
    }
    return *cache;
}

/* The extent hooks: memory is carved from the reserved range, kept mapped, and retained by
 * jemalloc when it gives an extent back (dalloc refuses), so no system call but madvise. */
static void *h_alloc(extent_hooks_t *h, void *addr, size_t size, size_t align, bool *zero,
                     bool *commit, unsigned ind)
{
    (void)h, (void)ind;
    if (addr != NULL) return NULL;
    uintptr_t old = __atomic_load_n(&bump, __ATOMIC_RELAXED), start;
    do {
        start = (old + align - 1) & ~(uintptr_t)(align - 1);
        if (start + size < start || start + size > reserved_end) return NULL;
    } while (!__atomic_compare_exchange_n(&bump, &old, start + size, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    if (mprotect((void *)start, size, PROT_READ | PROT_WRITE) != 0) return NULL;
    *zero = true; /* fresh anonymous pages */
    *commit = true;
    return (void *)start;
}

static bool h_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed, unsigned ind)
{
    (void)h, (void)addr, (void)size, (void)committed, (void)ind;
    return true; /* keep it: jemalloc retains the range for reuse */
}

static void h_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed, unsigned ind)
{
    (void)h, (void)committed, (void)ind;
    madvise(addr, size, MADV_DONTNEED);
}

static bool h_commit(extent_hooks_t *h, void *addr, size_t size, size_t off, size_t len,
                     unsigned ind)
{
    (void)h, (void)addr, (void)size, (void)off, (void)len, (void)ind;
    return false; /* always committed */
}

static bool h_decommit(extent_hooks_t *h, void *addr, size_t size, size_t off, size_t len,
                       unsigned ind)
{
    (void)h, (void)addr, (void)size, (void)off, (void)len, (void)ind;
    return true; /* not supported: jemalloc purges instead */
}

static bool h_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t off, size_t len,
                         unsigned ind)
{
    (void)h, (void)size, (void)ind;
    return madvise((char *)addr + off, len, MADV_FREE) != 0;
}

static bool h_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t off, size_t len,
                           unsigned ind)
{
    (void)h, (void)size, (void)ind;
    return madvise((char *)addr + off, len, MADV_DONTNEED) != 0;
}

static bool h_split(extent_hooks_t *h, void *addr, size_t size, size_t a, size_t b, bool c,
                    unsigned ind)
{
    (void)h, (void)addr, (void)size, (void)a, (void)b, (void)c, (void)ind;
    return false;
}

static bool h_merge(extent_hooks_t *h, void *a, size_t sa, void *b, size_t sb, bool c, unsigned ind)
{
    (void)h, (void)a, (void)sa, (void)b, (void)sb, (void)c, (void)ind;
    return false; /* one range: any two neighbours may merge */
}

static extent_hooks_t hooks = {h_alloc,      h_dalloc,       h_destroy, h_commit, h_decommit,
                               h_purge_lazy, h_purge_forced, h_split,   h_merge};

int ml__host_tracked_setup(void (*free_hook)(uintptr_t key))
{
    pthread_mutex_lock(&setup_lock);
    if (setup_done == 0) {
        setup_done = -1;
        /* Address space only (PROT_NONE, no reserve); pages become readable as jemalloc asks
         * for extents. Smaller reservations when an address-space limit refuses the large one. */
        void *lo = MAP_FAILED;
        size_t span;
        for (span = (size_t)64 << 30; span >= ((size_t)256 << 20) && lo == MAP_FAILED; span /= 2)
            lo = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        span *= 2;
        extent_hooks_t *hp = &hooks;
        size_t len = sizeof arena;
        size_t tlen = sizeof tcache_max;
        if (lo != MAP_FAILED) {
            bump = (uintptr_t)lo;
            reserved_end = (uintptr_t)lo + span;
            ml__tracked_lo = (uintptr_t)lo;
            if (mlje_mallctl("arenas.create", &arena, &len, &hp, sizeof hp) == 0 &&
                mlje_mallctl("arenas.tcache_max", &tcache_max, &tlen, NULL, 0) == 0) {
                on_free = free_hook;
                __atomic_store_n(&ml__tracked_span, span, __ATOMIC_RELEASE);
                setup_done = 1;
            } else {
                munmap(lo, span);
                ml__tracked_lo = 0;
            }
        }
    }
    int ok = setup_done;
    pthread_mutex_unlock(&setup_lock);
    return ok == 1 ? 0 : -1;
}

void *ml__host_tracked_alloc(size_t n, size_t align, int zero)
{
    int align_flag = align > 16 ? MLJE_MALLOCX_ALIGN(align) : 0;
    int flags = MLJE_MALLOCX_ARENA(arena) | MLJE_MALLOCX_TCACHE_NONE | align_flag |
                (zero ? MLJE_MALLOCX_ZERO : 0);
    size_t usize = mlje_nallocx(n ? n : 1, align_flag);
    if (usize == 0 || ML_LOAD(&ml__tracked_span) == 0) return NULL;
    if (usize <= SC_SMALL_MAXCLASS) {
        counter(&thread_deallocatedp, "thread.deallocatedp");       /* for the stash, at the free */
        for (unsigned i = 0; i < stash.count && align <= 64; i++) { /* 64-byte aligned */
            if (stash.usize[i] != usize) continue;
            void *p = stash.blocks[i];
            stash.count--;
            stash.blocks[i] = stash.blocks[stash.count];
            stash.usize[i] = stash.usize[stash.count];
            if (zero) memset(p, 0, usize);
            return p;
        }
        void *p = mlje_mallocx(SC_LARGE_MINCLASS, flags);
        if (p == NULL) return NULL;
        je_arena_prof_promote(je_tsd_tls, p, usize);
        /* jemalloc counted 16 KiB allocated and will count usize freed: count usize now (jemalloc
         * moved the counter forward just now, so it is seen going back by nobody). */
        uint64_t *allocated = counter(&thread_allocatedp, "thread.allocatedp");
        if (allocated != NULL) *allocated -= SC_LARGE_MINCLASS - usize;
        return p;
    }
    return mlje_mallocx(usize <= tcache_max ? tcache_max + 1 : n, flags);
}

int ml__host_tracked_owns(const void *p)
{
    /* In the range, and not one of the 16 KiB extents that jemalloc demoted at a tracked free
     * and a thread cache handed to an ordinary 16 KiB request. */
    return ml__in_tracked_range(p) && mlje_malloc_usable_size(p) != SC_LARGE_MINCLASS;
}

uintptr_t ml__host_tracked_key(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)4095;
}

void ml__host_dalloc_promoted(void *tsdn, void *ptr, void *tcache, bool slow_path)
{
    on_free(ml__host_tracked_key(ptr)); /* only tracked blocks are ever promoted */
    uint64_t *deallocated;
    /* Only on a thread that made a tracked allocation (the counter's address is known): no
     * mallctl from inside jemalloc's free. */
    if (!stash.releasing && stash.count < STASH_MAX && ((uintptr_t)ptr & 63) == 0 &&
        tsdn == (void *)je_tsd_tls && (deallocated = thread_deallocatedp) != NULL) {
        size_t usize = mlje_malloc_usable_size(ptr);
        /* ifree adds usize to the counter when this returns: the block stays counted live. */
        *deallocated -= usize;
        stash.blocks[stash.count] = ptr;
        stash.usize[stash.count++] = (uint32_t)usize;
        return;
    }
    je_arena_dalloc_promoted(tsdn, ptr, tcache, slow_path);
}

void ml__host_tracked_thread_exit(void)
{
    stash.releasing = 1;
    while (stash.count > 0)
        mlje_free(stash.blocks[--stash.count]); /* counted freed, released for real */
    stash.releasing = 0;
}

/* A tracked large block's free: its callbacks are queued, then jemalloc frees it. Out of line,
 * so that an untracked block's free is the range check and a jump. */
static ML_NOINLINE ML_COLD void large_dalloc_tracked(void *tsdn, void *edata, void *addr)
{
    on_free(ml__host_tracked_key(addr));
    je_large_dalloc(tsdn, edata);
}

void ml__host_large_dalloc(void *tsdn, void *edata)
{
    /* No tracked range (no profile ever started): nothing to read. */
    if (ML_LIKELY(ML_LOAD(&ml__tracked_span) == 0)) return je_large_dalloc(tsdn, edata);
    void *addr;
    memcpy(&addr, (char *)edata + EDATA_ADDR_OFFSET, sizeof addr);
    if (ML_UNLIKELY(ml__in_tracked_range(addr))) return large_dalloc_tracked(tsdn, edata, addr);
    je_large_dalloc(tsdn, edata);
}

int ml__host_symbolize(const void *addr, const char **object, const char **symbol,
                       uintptr_t *offset)
{
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (dladdr(addr, &info) == 0) return -1;
    *object = info.dli_fname ? info.dli_fname : "?";
    *symbol = info.dli_sname;
    *offset = info.dli_sname ? (uintptr_t)addr - (uintptr_t)info.dli_saddr
                             : (uintptr_t)addr - (uintptr_t)info.dli_fbase;
    return 0;
}
