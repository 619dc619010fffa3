/* jemalloc's purging, bounded (host.h, "Purging"): when the embedded jemalloc returns pages to
 * the system. cmake/embed-jemalloc.sh sends three of jemalloc's internal calls here:
 * - pa.pic.o's pac_init, made once per arena: ml__host_pac_init checks the arena's page
 *   allocator (pac_t) against the layout below, and finds where an arena keeps it;
 * - tcache.pic.o's arena_decay, made with `all` when a thread leaves its arena with no thread:
 *   ml__host_tcache_decay purges the arena's dirty pages down to ML_HOST_EXIT_KEEP, not to 0;
 * - pac.pic.o's ecache_alloc_grow, made when no dirty or muzzy extent fits a request and the arena
 *   takes pages it has not used or has purged: ml__host_grow first purges the dirty pages that
 *   would take the arena's resident pages past its bound (ML_HOST_RESIDENT_SLACK).
 * Both purges take the least recently freed extents first, one at a time, through jemalloc's own
 * eviction (ecache_evict) and release (extent_dalloc_wrapper: MADV_DONTNEED, the pages kept as
 * retained address space), and count them in jemalloc's statistics as its decay does. */
#include "host.h"

#include <string.h>

#include "common.h"

/* jemalloc 5.3's page allocator (pac_t) as Debian's x86-64 build lays it out (read from the
 * disassembly of pac_alloc_real and pac_decay_to_limit): three extent caches of ECACHE_SIZE bytes
 * from PAC_ECACHES on (dirty, muzzy, retained), each with its state (1, 2, 3) at ECACHE_STATE
 * and its arena's index after it; the statistics pointer at PAC_STATS, whose block holds the
 * decay counters of dirty pages (from 0) and of muzzy ones (from STATS_DECAY_MUZZY: purge
 * passes, madvise calls, pages purged), and the mapped bytes at STATS_MAPPED. An extent (edata_t)
 * holds its size at EDATA_SIZE (its low 12 bits are a serial number). Every pac is checked
 * against this layout when jemalloc initialises it; one that does not match turns both bounds off
 * for good, and jemalloc purges as it would without them (tests/targets/robust_purge.c fails
 * then; the layout is fixed when libmemlimits.so is built, since jemalloc is linked in). */
#define PAC_ECACHES 0x38
#define ECACHE_SIZE 0x4bf0
#define ECACHE_STATE 0x4be0
#define PAC_STATS 0xf310
#define STATS_DECAY_MUZZY 0x18
#define STATS_MAPPED 0x38
#define EDATA_SIZE 0x10
#define JE_PAGE_MASK ((uint64_t)ML_HOST_JE_PAGE - 1)
enum { STATE_DIRTY = 1, STATE_MUZZY = 2, STATE_RETAINED = 3 };

void *je_ecache_alloc_grow(void *tsdn, void *pac, void *ehooks, void *ecache, void *expand,
                           size_t size, size_t alignment, bool zero, bool guarded);
bool je_pac_init(void *tsdn, void *pac, void *base, void *emap, void *edata_cache, void *cur_time,
                 size_t oversize_threshold, ssize_t dirty_decay_ms, ssize_t muzzy_decay_ms,
                 void *stats, void *stats_mtx);
void *je_ecache_evict(void *tsdn, void *pac, void *ehooks, void *ecache, size_t npages_min);
void je_extent_dalloc_wrapper(void *tsdn, void *pac, void *ehooks, void *edata);
void *je_arena_get_ehooks(void *arena);
void je_arena_decay(void *tsdn, void *arena, bool is_background_thread, bool all);
void je_arena_basic_stats_merge(void *tsdn, void *arena, unsigned *nthreads, const char **dss,
                                ssize_t *dirty_decay_ms, ssize_t *muzzy_decay_ms, size_t *nactive,
                                size_t *ndirty, size_t *nmuzzy);
unsigned je_narenas_total_get(void);
extern void *je_arenas[]; /* jemalloc's arena table: atomic pointers, by index */

#define ARENA_LIMIT 4096 /* jemalloc's MALLOCX_ARENA_LIMIT, rounded up */

static char *first_pac;  /* arena 0's pac: the first jemalloc initialises */
static int layout_bad;   /* a pac did not match the layout: both bounds off */
static ptrdiff_t pac_at; /* where an arena holds its pac; 0 until known */
/* Per arena, its peak: the most pages it has had active when taking new pages for a request of
 * ML_HOST_GROW_MIN bytes or more, the request's included. */
static size_t peak_pages[ARENA_LIMIT];

static char *ecache_of(char *pac, int state)
{
    return pac + PAC_ECACHES + (size_t)(state - STATE_DIRTY) * ECACHE_SIZE;
}

static int ecache_state(char *pac, int state)
{
    int v;
    memcpy(&v, ecache_of(pac, state) + ECACHE_STATE, sizeof v);
    return v;
}

static int pac_matches(char *pac)
{
    return ecache_state(pac, STATE_DIRTY) == STATE_DIRTY &&
           ecache_state(pac, STATE_MUZZY) == STATE_MUZZY &&
           ecache_state(pac, STATE_RETAINED) == STATE_RETAINED;
}

bool ml__host_pac_init(void *tsdn, void *pac, void *base, void *emap, void *edata_cache,
                       void *cur_time, size_t oversize_threshold, ssize_t dirty_decay_ms,
                       ssize_t muzzy_decay_ms, void *stats, void *stats_mtx)
{
    bool failed = je_pac_init(tsdn, pac, base, emap, edata_cache, cur_time, oversize_threshold,
                              dirty_decay_ms, muzzy_decay_ms, stats, stats_mtx);
    if (failed) return failed;
    void *stats_ptr;
    memcpy(&stats_ptr, (char *)pac + PAC_STATS, sizeof stats_ptr);
    if (!pac_matches(pac) || stats_ptr != stats) ML_STORE(&layout_bad, 1);
    char *expected = NULL;
    __atomic_compare_exchange_n(&first_pac, &expected, (char *)pac, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
    return failed;
}

/* Where an arena holds its pac: arena 0's pac less arena 0 (jemalloc builds arena 0 first, and
 * sets its table entry after). 0 while unknown or when the layout did not match. */
static ptrdiff_t pac_offset(void)
{
    ptrdiff_t at = ML_LOAD(&pac_at);
    if (ML_LIKELY(at != 0)) return at;
    char *pac = ML_LOAD(&first_pac);
    char *arena0 = __atomic_load_n(&je_arenas[0], __ATOMIC_ACQUIRE);
    if (pac == NULL || arena0 == NULL || ML_LOAD(&layout_bad)) return 0;
    at = pac - arena0;
    if (at <= 0 || at >= ((ptrdiff_t)1 << 20) || !pac_matches(arena0 + at)) return 0;
    ML_STORE(&pac_at, at);
    return at;
}

/* Purges the least recently freed extents of one of the pac's caches until it holds at most
 * `keep` pages; counts them as jemalloc's decay does. */
static void purge_to(void *tsdn, char *pac, void *ehooks, int state, size_t keep)
{
    uint64_t extents = 0, pages = 0;
    void *edata;
    while ((edata = je_ecache_evict(tsdn, pac, ehooks, ecache_of(pac, state), keep)) != NULL) {
        uint64_t size_esn;
        memcpy(&size_esn, (char *)edata + EDATA_SIZE, sizeof size_esn);
        pages += (size_esn & ~JE_PAGE_MASK) / ML_HOST_JE_PAGE;
        extents++;
        je_extent_dalloc_wrapper(tsdn, pac, ehooks, edata);
    }
    if (extents == 0) return;
    char *stats;
    memcpy(&stats, pac + PAC_STATS, sizeof stats);
    uint64_t *decay = (uint64_t *)(stats + (state == STATE_DIRTY ? 0 : STATS_DECAY_MUZZY));
    __atomic_fetch_add(&decay[0], 1, __ATOMIC_RELAXED);       /* purge passes */
    __atomic_fetch_add(&decay[1], extents, __ATOMIC_RELAXED); /* madvise calls */
    __atomic_fetch_add(&decay[2], pages, __ATOMIC_RELAXED);   /* pages purged */
    __atomic_fetch_sub((size_t *)(stats + STATS_MAPPED), (size_t)(pages * ML_HOST_JE_PAGE),
                       __ATOMIC_RELAXED);
}

/* The arena's active and dirty pages, read without a lock; returns its dirty_decay_ms. */
static ssize_t arena_pages(void *tsdn, void *arena, size_t *nactive, size_t *ndirty)
{
    unsigned nthreads = 0;
    const char *dss;
    ssize_t dirty_ms = 0, muzzy_ms;
    size_t nmuzzy = 0;
    *nactive = *ndirty = 0;
    je_arena_basic_stats_merge(tsdn, arena, &nthreads, &dss, &dirty_ms, &muzzy_ms, nactive, ndirty,
                               &nmuzzy);
    return dirty_ms;
}

void ml__host_tcache_decay(void *tsdn, void *arena, bool is_background_thread, bool all)
{
    if (all) {
        size_t nactive, ndirty;
        arena_pages(tsdn, arena, &nactive, &ndirty);
        if (ndirty > ML_HOST_EXIT_KEEP / ML_HOST_JE_PAGE) {
            ptrdiff_t at = pac_offset();
            /* The layout did not match: jemalloc's purge of everything. */
            if (at == 0) return je_arena_decay(tsdn, arena, is_background_thread, true);
            /* The least recently freed go, and every muzzy page (jemalloc's purge of everything
             * takes those too). */
            char *pac = (char *)arena + at;
            void *ehooks = je_arena_get_ehooks(arena);
            purge_to(tsdn, pac, ehooks, STATE_DIRTY, ML_HOST_EXIT_KEEP / ML_HOST_JE_PAGE);
            purge_to(tsdn, pac, ehooks, STATE_MUZZY, 0);
        }
        all = false;
    }
    je_arena_decay(tsdn, arena, is_background_thread, all);
}

/* The arena that holds `pac`, and its index; NULL if it is none of jemalloc's arenas. */
static void *arena_of(char *pac, ptrdiff_t at, unsigned *index)
{
    void *arena = pac - at;
    unsigned n = je_narenas_total_get();
    for (unsigned i = 0; i < n && i < ARENA_LIMIT; i++)
        if (__atomic_load_n(&je_arenas[i], __ATOMIC_ACQUIRE) == arena) {
            *index = i;
            return arena;
        }
    return NULL;
}

void *ml__host_grow(void *tsdn, void *pac, void *ehooks, void *ecache, void *expand, size_t size,
                    size_t alignment, bool zero, bool guarded)
{
    ptrdiff_t at =
        size >= ML_HOST_GROW_MIN && ecache == ecache_of(pac, STATE_RETAINED) ? pac_offset() : 0;
    unsigned i;
    void *arena = at != 0 ? arena_of(pac, at, &i) : NULL;
    if (arena != NULL) {
        size_t nactive, ndirty;
        ssize_t dirty_ms = arena_pages(tsdn, arena, &nactive, &ndirty);
        size_t want = nactive + size / ML_HOST_JE_PAGE;
        size_t peak = ML_LOAD(&peak_pages[i]);
        while (want > peak && !__atomic_compare_exchange_n(&peak_pages[i], &peak, want, true,
                                                           __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
        if (want > peak) peak = want;
        size_t bound = peak + peak / ML_HOST_RESIDENT_SLACK;
        size_t floor = ML_HOST_RESIDENT_FLOOR / ML_HOST_JE_PAGE;
        /* dirty_decay_ms -1: whoever set it asked that dirty pages never be purged. */
        if (dirty_ms >= 0 && ndirty > floor && want + ndirty > bound) {
            size_t keep = bound > want ? bound - want : 0;
            purge_to(tsdn, pac, ehooks, STATE_DIRTY, keep > floor ? keep : floor);
        }
    }
    return je_ecache_alloc_grow(tsdn, pac, ehooks, ecache, expand, size, alignment, zero, guarded);
}
