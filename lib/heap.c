/* Live and peak heap, and the hard cap (see heap.h). The balance of a thread is read from
 * jemalloc's counters, which jemalloc keeps anyway on its fast paths; exchanging `reported` makes
 * concurrent flushes of one thread (its own and a reconcile's) add up to the right total. */
#include "heap.h"

#include "host.h"

static int64_t live_heap;     /* sum of every thread's reported balance */
static uint64_t peak_heap;    /* highest live_heap seen at a flush */
static uint64_t peak_checked; /* live_heap at the last reconcile made for the peak */
static uint64_t heap_cap = UINT64_MAX;
int ml__heap_watchers; /* global-memory tasks running (read inline: heap.h) */

/* The thread's balance now. jemalloc's counters only grow; if they are seen to go back (jemalloc
 * recreating its state for a thread that allocates again after its teardown), the balance so far
 * is kept in balance_base and counting restarts from the new values. Owner thread only. */
static int64_t own_balance(ml_thread *t)
{
    uint64_t a = ML_LOAD(t->je_allocated), d = ML_LOAD(t->je_deallocated);
    if (a < t->seen_allocated || d < t->seen_deallocated)
        t->balance_base += t->seen_allocated - t->seen_deallocated;
    t->seen_allocated = a;
    t->seen_deallocated = d;
    return (int64_t)(t->balance_base + a - d);
}

static void publish(ml_thread *t, int64_t balance)
{
    int64_t old = __atomic_exchange_n(&t->reported, balance, __ATOMIC_RELAXED);
    int64_t live = __atomic_add_fetch(&live_heap, balance - old, __ATOMIC_RELAXED);
    uint64_t peak = ML_LOAD(&peak_heap);
    if (live <= 0 || (uint64_t)live <= peak) return;
    if ((uint64_t)live > ML_LOAD(&peak_checked) + ML_PEAK_RECHECK) {
        /* Frees by threads that have not flushed may make the sum high: catch them up before
         * recording a new peak. */
        ml__heap_reconcile();
        live = ML_LOAD(&live_heap);
        ML_STORE(&peak_checked, live > 0 ? (uint64_t)live : 0);
    }
    while (live > 0 && (uint64_t)live > peak &&
           !__atomic_compare_exchange_n(&peak_heap, &peak, (uint64_t)live, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
}

void ml__heap_flush(ml_thread *t)
{
    publish(t, own_balance(t));
}

static void flush_remote(ml_thread *t, void *ctx)
{
    (void)ctx;
    /* Another thread's counters: read without reset detection, which only its owner does;
     * registered threads have not reached their teardown, where a reset could happen. */
    uint64_t a = ML_LOAD(t->je_allocated), d = ML_LOAD(t->je_deallocated);
    int64_t balance = (int64_t)(ML_LOAD(&t->balance_base) + a - d);
    int64_t old = __atomic_exchange_n(&t->reported, balance, __ATOMIC_RELAXED);
    __atomic_add_fetch(&live_heap, balance - old, __ATOMIC_RELAXED);
}

void ml__heap_reconcile(void)
{
    ml__thread_each(flush_remote, NULL);
}

void ml__heap_reconcile_locked(void)
{
    ml__thread_each_locked(flush_remote, NULL);
}

int ml__heap_admit(ml_thread *t, size_t size, size_t align, const void *old)
{
    uint64_t cap = ML_LOAD(&heap_cap);
    if (cap == UINT64_MAX) return 1;
    /* Far below the cap, no lookup is needed: a block's usable size is at most twice its request
     * plus a page and the alignment, and this thread's unflushed balance is at most one far
     * flush interval (requests of 16 bytes or more: 1.25x). */
    uint64_t worst = 2 * (uint64_t)size + 4096 + align + 2 * ML_FLUSH_FAR;
    uint64_t sum = ml__heap_live();
    if (sum < cap && cap - sum > worst) return 1;
    ml__heap_flush(t);
    size_t old_usable = old != NULL ? mlje_malloc_usable_size(old) : 0;
    size_t usable = mlje_nallocx(size ? size : 1, align ? MLJE_MALLOCX_ALIGN(align) : 0);
    if (usable == 0) return 0; /* larger than jemalloc can serve */
    for (int attempt = 0; attempt < 2; attempt++) {
        int64_t live = ML_LOAD(&live_heap);
        int64_t after = live - (int64_t)old_usable + (int64_t)usable;
        if (after <= 0 || (uint64_t)after <= cap) return 1;
        if (attempt == 0) ml__heap_reconcile();
    }
    return 0;
}

void ml__heap_watch(int delta)
{
    __atomic_add_fetch(&ml__heap_watchers, delta, __ATOMIC_RELAXED);
}

uint64_t ml__heap_flush_interval(void)
{
    if (ml__heap_watched()) return ML_FLUSH_NEAR;
    uint64_t cap = ML_LOAD(&heap_cap);
    if (cap == UINT64_MAX) return ML_FLUSH_FAR;
    uint64_t zone = (uint64_t)(ml__thread_count() + 1) * ML_FLUSH_NEAR_ZONE;
    uint64_t live = ml__heap_live();
    return live >= cap || cap - live <= zone ? ML_FLUSH_NEAR : ML_FLUSH_FAR;
}

void ml__heap_set_cap(uint64_t cap)
{
    ML_STORE(&heap_cap, cap);
}

uint64_t ml__heap_cap(void)
{
    return ML_LOAD(&heap_cap);
}

uint64_t ml__heap_live(void)
{
    int64_t live = ML_LOAD(&live_heap);
    return live > 0 ? (uint64_t)live : 0;
}

uint64_t ml__heap_peak(void)
{
    return ML_LOAD(&peak_heap);
}
