/* The profiler (see memprof.h and include/memlimits.h, "Memprof").
 *
 * Profiles are ML_MEMPROF_MAX fixed slots; each start gives its slot a new generation, so that
 * per-thread streams, tracked entries and queued frees of an earlier profile in the same slot
 * are recognised as stale. Each thread keeps, per slot, its own xoshiro stream (seeded from the
 * process seed, the generation and the thread's index) and its distance to the next sampled
 * byte; the smallest distance is one component of the thread's countdown (event.c's arm), so
 * an allocation that holds a sampled byte of any profile always takes the slow path.
 *
 * Tracked blocks are in a table keyed by the block's page (a tracked block owns its extent),
 * under one lock, in entries from never-freed mmap'd chunks: the table is touched from inside
 * jemalloc's free (the host's upcall), where calling malloc would re-enter jemalloc. An entry
 * holds one tracking value per slot. The free upcall moves the entry to the freeing thread's
 * queue and makes that thread's next allocation an event; its free callbacks run there, after
 * the event, with nothing held.
 *
 * Callbacks: a slot's `running` counters tell stop and discard which callbacks are in flight;
 * a callback starts only if its profile is in the right state after its counter went up, so
 * stop (for alloc callbacks) and discard (for all) wait for the counters to drain. A thread
 * running a callback has `in_callback` set: its events draw no samples and run no callback. */
#define _GNU_SOURCE
#include "memprof.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "host.h"
#include "sampler.h"

enum { SLOT_FREE, SLOT_RUNNING, SLOT_STOPPED, SLOT_DISCARDING };

struct ml_profile {
    int state;
    uint32_t gen;
    uint64_t mean;
    double inv;
    unsigned depth;
    ml_tracker tracker;
    int alloc_running, running;                   /* callbacks in flight: alloc ones, all */
    uint64_t untracked_blocks, untracked_samples; /* sampled, not tracked (ml_memprof_untracked) */
};

static struct ml_profile slots[ML_MEMPROF_MAX];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t next_gen = 1;
static uint32_t layout;  /* changes at every start and stop: threads refresh their streams */
int ml__memprof_started; /* a profile was started in this process */

typedef struct entry {
    uintptr_t key;
    struct entry *next;
    uint32_t gen[ML_MEMPROF_MAX]; /* 0: this slot does not track the block */
    void *value[ML_MEMPROF_MAX];
} entry;

#define BUCKETS (1u << 16)
static entry **buckets;
static entry *spare;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct mp_thread {
    uint32_t layout;
    uint32_t gen[ML_MEMPROF_MAX];
    uint64_t left[ML_MEMPROF_MAX];
    uint64_t counts[ML_MEMPROF_MAX];
    ml_rng rng[ML_MEMPROF_MAX];
    uint64_t skip;   /* units since arming charged inside a callback: not sampled */
    uint64_t mark;   /* ml__units_since_arm when the callbacks at hand began */
    uint8_t rearmed; /* an event happened inside them: everything since arming is theirs */
    entry *pending;
    uint8_t sampled, in_callback;
} mp_thread;

static ML_TLS mp_thread mp;

/* ---- the table ---- */

static entry *entry_new(void)
{
    if (spare == NULL) {
        size_t len = (size_t)1 << 20;
        entry *chunk = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (chunk == MAP_FAILED) return NULL;
        for (size_t i = 0; i < len / sizeof *chunk; i++) {
            chunk[i].next = spare;
            spare = &chunk[i];
        }
    }
    entry *e = spare;
    spare = e->next;
    memset(e, 0, sizeof *e);
    return e;
}

static entry **bucket(uintptr_t key)
{
    return &buckets[(key >> 12) * 0x9e3779b97f4a7c15ull >> 48];
}

static void table_put(entry *e)
{
    pthread_mutex_lock(&table_lock);
    entry **b = bucket(e->key);
    e->next = *b;
    *b = e;
    pthread_mutex_unlock(&table_lock);
}

/* Inserts a copy of `values` for the tracked block p (one lock); dropped if no entry can be had. */
static void table_insert(const entry *values, const void *p)
{
    pthread_mutex_lock(&table_lock);
    entry *e = entry_new();
    if (e != NULL) {
        *e = *values;
        e->key = ml__host_tracked_key(p);
        entry **b = bucket(e->key);
        e->next = *b;
        *b = e;
    }
    pthread_mutex_unlock(&table_lock);
}

static entry *table_take(uintptr_t key)
{
    pthread_mutex_lock(&table_lock);
    entry **pp = bucket(key), *e;
    while ((e = *pp) != NULL && e->key != key)
        pp = &e->next;
    if (e != NULL) *pp = e->next;
    pthread_mutex_unlock(&table_lock);
    return e;
}

static void entry_release(entry *e)
{
    pthread_mutex_lock(&table_lock);
    e->next = spare;
    spare = e;
    pthread_mutex_unlock(&table_lock);
}

static int entry_empty(const entry *e)
{
    for (int s = 0; s < ML_MEMPROF_MAX; s++)
        if (e->gen[s] != 0) return 0;
    return 1;
}

/* ---- callbacks ---- */

/* Enters a callback of slot s for generation gen; 0 if it must not run. */
static int cb_enter(int s, uint32_t gen, int is_alloc)
{
    struct ml_profile *p = &slots[s];
    __atomic_add_fetch(&p->running, 1, __ATOMIC_SEQ_CST);
    if (is_alloc) __atomic_add_fetch(&p->alloc_running, 1, __ATOMIC_SEQ_CST);
    int state = __atomic_load_n(&p->state, __ATOMIC_SEQ_CST);
    int ok = __atomic_load_n(&p->gen, __ATOMIC_SEQ_CST) == gen &&
             (is_alloc ? state == SLOT_RUNNING : state == SLOT_RUNNING || state == SLOT_STOPPED);
    if (!ok) {
        if (is_alloc) __atomic_sub_fetch(&p->alloc_running, 1, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&p->running, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    mp.in_callback = 1;
    return 1;
}

static void cb_leave(int s, int is_alloc)
{
    mp.in_callback = 0;
    if (is_alloc) __atomic_sub_fetch(&slots[s].alloc_running, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&slots[s].running, 1, __ATOMIC_SEQ_CST);
}

/* Around the callbacks of one allocation or free: the bytes allocated inside them are not
 * sampled (`skip`), and the thread's next allocation is an event that re-arms with the
 * profiles' streams. */
static void callbacks_begin(void)
{
    mp.mark = ml__units_since_arm(&ml__self);
    mp.rearmed = 0;
}

static void callbacks_done(void)
{
    ml_thread *t = &ml__self;
    /* Nothing allocated inside them and no event: the countdown is as the last event armed it. */
    if (!mp.rearmed && ml__units_since_arm(t) == mp.mark) return;
    if (ml__busy_enter(t)) {
        uint64_t now = ml__units_since_arm(t);
        mp.skip += mp.rearmed ? now : now - mp.mark;
        ml__thread_force_event(t);
        ml__busy_leave(t);
    }
}

/* The unwinder may allocate: libunwind's per-thread caches are dynamic TLS, which glibc's
 * __tls_get_addr allocates with malloc at a thread's first walk. Those allocations are the
 * unwinder's, not the program's: the thread is marked as in a callback for the walk, so they
 * are counted and never sampled (a sample there would walk again, inside the walk, and again). */
unsigned ml__memprof_capture(void **frames, unsigned max, const void *ret)
{
    uint8_t was = mp.in_callback;
    mp.in_callback = 1;
    unsigned n = ml__host_backtrace(frames, max, ret);
    mp.in_callback = was;
    return n;
}

static unsigned max_depth(uint32_t mask)
{
    unsigned d = 0;
    for (int s = 0; s < ML_MEMPROF_MAX; s++)
        if ((mask >> s & 1) && slots[s].depth > d) d = slots[s].depth;
    return d;
}

/* Runs the alloc callbacks of the slots in `mask` for block p; fills e. Returns 0, or -1 when
 * one refused (the values already given were freed through their free callbacks). */
static int run_alloc(entry *e, uint32_t mask, const uint32_t *gens, void *p, size_t n,
                     ml_alloc_kind kind, const void *ret)
{
    void *frames[256];
    unsigned depth = max_depth(mask), len = depth ? ml__memprof_capture(frames, depth, ret) : 0;
    int refused = 0;
    for (int s = 0; s < ML_MEMPROF_MAX && !refused; s++) {
        if (!(mask >> s & 1) || slots[s].tracker.alloc == NULL) continue;
        if (!cb_enter(s, gens[s], 1)) continue;
        ml_allocation a = {mp.counts[s], n, p, kind, len < slots[s].depth ? len : slots[s].depth,
                           frames};
        void *v = slots[s].tracker.alloc(&a, slots[s].tracker.ctx);
        cb_leave(s, 1);
        if (v == ML_MEMPROF_REFUSE)
            refused = 1;
        else if (v != NULL) {
            e->gen[s] = gens[s];
            e->value[s] = v;
        }
    }
    if (!refused) return 0;
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        if (e->gen[s] == 0) continue;
        if (slots[s].tracker.free != NULL && cb_enter(s, e->gen[s], 0)) {
            slots[s].tracker.free(e->value[s], slots[s].tracker.ctx);
            cb_leave(s, 0);
        }
        e->gen[s] = 0;
    }
    return -1;
}

static void run_free(entry *e)
{
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        if (e->gen[s] == 0 || slots[s].tracker.free == NULL) continue;
        if (!cb_enter(s, e->gen[s], 0)) continue;
        slots[s].tracker.free(e->value[s], slots[s].tracker.ctx);
        cb_leave(s, 0);
    }
}

/* ---- the hub's side ---- */

static void refresh(ml_thread *t)
{
    mp_thread *m = &mp;
    m->layout = __atomic_load_n(&layout, __ATOMIC_ACQUIRE);
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        struct ml_profile *p = &slots[s];
        uint32_t gen = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&p->state, __ATOMIC_ACQUIRE) != SLOT_RUNNING) {
            m->gen[s] = 0;
            continue;
        }
        if (m->gen[s] == gen) continue;
        m->gen[s] = gen;
        ml__rng_seed(&m->rng[s], ml__sampler_process_seed() ^ (gen * 0x9e3779b97f4a7c15ull),
                     t->index);
        m->left[s] = ml__sampler_gap_with(&m->rng[s], p->mean, p->inv);
    }
}

void ml__memprof_take(ml_thread *t, uint64_t before, uint64_t n, uint64_t extra)
{
    mp_thread *m = &mp;
    m->sampled = 0;
    if (!ML_LOAD(&ml__memprof_started)) return;
    if (m->in_callback) {
        m->skip = 0; /* everything since arming was allocated inside the callback */
        m->rearmed = 1;
        return;
    }
    before = before > m->skip ? before - m->skip : 0;
    m->skip = 0;
    if (m->layout != ML_LOAD(&layout)) refresh(t);
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        m->counts[s] = 0;
        if (m->gen[s] == 0) continue;
        const struct ml_profile *p = &slots[s];
        /* Samples among the earlier units fell in blocks already returned: none, unless the
         * stream started after the countdown was armed; they cannot be attributed. */
        ml__sampler_take_with(&m->rng[s], &m->left[s], before, p->mean, p->inv);
        if (n == 0) continue;
        m->counts[s] = ml__sampler_take_with(&m->rng[s], &m->left[s], n, p->mean, p->inv);
        if (m->counts[s] != 0) m->sampled = 1;
        /* The block's units beyond its bytes: on the stream, never sampled (event.c's sample). */
        if (extra != 0) ml__sampler_take_with(&m->rng[s], &m->left[s], extra, p->mean, p->inv);
    }
}

uint64_t ml__memprof_pass(uint64_t units)
{
    mp_thread *m = &mp;
    if (m->in_callback || m->skip != 0 || m->layout != ML_LOAD(&layout)) return 0;
    for (int s = 0; s < ML_MEMPROF_MAX; s++)
        if (m->gen[s] != 0 && m->left[s] <= units) return 0; /* a sampled unit lies in them */
    uint64_t left = ML_NONE;
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        if (m->gen[s] == 0) continue;
        m->left[s] -= units;
        if (m->left[s] < left) left = m->left[s];
    }
    m->sampled = 0;
    return left;
}

int ml__memprof_sampled(void)
{
    return mp.sampled;
}

uint64_t ml__memprof_left(void)
{
    mp_thread *m = &mp;
    if (!ML_LOAD(&ml__memprof_started) || m->in_callback) return ML_NONE;
    uint64_t left = ML_NONE;
    if (m->layout != ML_LOAD(&layout)) return 0; /* a profile started: join it now */
    for (int s = 0; s < ML_MEMPROF_MAX; s++)
        if (m->gen[s] != 0 && m->left[s] < left) left = m->left[s];
    return left;
}

/* ---- the entry points' side ---- */

void *ml__memprof_block(size_t n, size_t align, int zero)
{
    return ml__host_tracked_alloc(n, align, zero);
}

/* The slots that sampled the allocation at hand, and their generations. */
static uint32_t sampled_mask(uint32_t *gens)
{
    uint32_t mask = 0;
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        gens[s] = mp.gen[s];
        if (mp.sampled && mp.gen[s] != 0 && mp.counts[s] != 0) mask |= 1u << s;
    }
    return mask;
}

/* The slots in `mask` (from sampled_mask) count the allocation at hand as untracked. */
static void count_untracked(uint32_t mask, const uint32_t *gens)
{
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        struct ml_profile *p = &slots[s];
        /* A slot discarded and started again since the event counts nothing of the old one. */
        if (!(mask >> s & 1) || ML_LOAD(&p->gen) != gens[s]) continue;
        __atomic_add_fetch(&p->untracked_blocks, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&p->untracked_samples, mp.counts[s], __ATOMIC_RELAXED);
    }
}

void ml__memprof_untracked(void)
{
    uint32_t gens[ML_MEMPROF_MAX];
    count_untracked(sampled_mask(gens), gens);
    mp.sampled = 0;
}

void *ml__memprof_track(void *p, size_t n, ml_alloc_kind kind, const void *ret)
{
    uint32_t gens[ML_MEMPROF_MAX];
    if (!ml__host_tracked_owns(p)) { /* no tracked block could be had */
        ml__memprof_untracked();
        return p;
    }
    uint32_t mask = sampled_mask(gens);
    mp.sampled = 0;
    callbacks_begin();
    entry tmp;
    memset(&tmp, 0, sizeof tmp);
    int refused = run_alloc(&tmp, mask, gens, p, n, kind, ret);
    if (refused) {
        mlje_free(p);
    } else if (!entry_empty(&tmp)) {
        table_insert(&tmp, p);
    }
    callbacks_done();
    ml__memprof_drain();
    if (refused) {
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* An ordinary block (not tracked) with the alignment and zeroing asked for. */
static void *ordinary(size_t n, size_t align, int zero)
{
    if (align == 0) return zero ? mlje_calloc(1, n) : mlje_malloc(n);
    void *q = mlje_aligned_alloc(align, n);
    if (q != NULL && zero) memset(q, 0, n);
    return q;
}

void *ml__memprof_realloc(void *p, size_t n, const void *ret, int sampled)
{
    return ml__memprof_reallocx(p, n, 0, 0, ret, sampled);
}

void *ml__memprof_reallocx(void *p, size_t n, size_t align, int zero, const void *ret, int sampled)
{
    uint32_t gens[ML_MEMPROF_MAX];
    uint32_t mask = sampled ? sampled_mask(gens) : (sampled_mask(gens), 0);
    mp.sampled = 0;
    callbacks_begin();
    entry *old = ml__host_tracked_owns(p) ? table_take(ml__host_tracked_key(p)) : NULL;
    int keep = mask != 0;
    for (int s = 0; old != NULL && s < ML_MEMPROF_MAX; s++)
        if (old->gen[s] != 0 && slots[s].tracker.realloc != NULL) keep = 1;
    size_t old_size = mlje_malloc_usable_size(p);
    void *q = keep ? ml__host_tracked_alloc(n, align, zero) : NULL;
    if (q == NULL) q = ordinary(n, align, zero);
    if (q == NULL) {
        if (old != NULL) table_put(old);
        errno = ENOMEM;
        return NULL;
    }
    memcpy(q, p, old_size < n ? old_size : n);
    /* No tracked block could be had: q's free would never be seen, so its samples are counted
     * untracked and the old block's trackers see it freed. */
    int tracked = ml__host_tracked_owns(q);
    if (!tracked) count_untracked(mask, gens);
    entry tmp;
    memset(&tmp, 0, sizeof tmp);
    /* New samples first: a refusal leaves the old block as it was. */
    uint32_t fresh = tracked ? mask : 0;
    for (int s = 0; old != NULL && s < ML_MEMPROF_MAX; s++)
        if (old->gen[s] != 0 && slots[s].tracker.realloc != NULL) fresh &= ~(1u << s);
    if (run_alloc(&tmp, fresh, gens, q, n, ML_ALLOC_REALLOC, ret) != 0) {
        mlje_free(q);
        if (old != NULL) table_put(old);
        callbacks_done();
        errno = ENOMEM;
        return NULL;
    }
    entry gone;
    memset(&gone, 0, sizeof gone);
    if (old != NULL) {
        void *frames[256];
        unsigned depth = max_depth(0xff), len = 0;
        int captured = 0;
        for (int s = 0; s < ML_MEMPROF_MAX; s++) {
            if (old->gen[s] == 0) continue;
            if (slots[s].tracker.realloc == NULL || !tracked) {
                gone.gen[s] = old->gen[s];
                gone.value[s] = old->value[s];
                continue;
            }
            if (!cb_enter(s, old->gen[s], 0)) continue;
            if (!captured && depth) len = ml__memprof_capture(frames, depth, ret);
            captured = 1;
            ml_allocation a = {mp.counts[s] * (mask >> s & 1),
                               n,
                               q,
                               ML_ALLOC_REALLOC,
                               len < slots[s].depth ? len : slots[s].depth,
                               frames};
            void *v = slots[s].tracker.realloc(old->value[s], &a, slots[s].tracker.ctx);
            cb_leave(s, 0);
            if (v != NULL) {
                tmp.gen[s] = old->gen[s];
                tmp.value[s] = v;
            }
        }
        entry_release(old);
    }
    if (!entry_empty(&tmp)) table_insert(&tmp, q); /* only when q is tracked */
    mlje_free(p); /* its entry is gone: the free upcall finds nothing */
    run_free(&gone);
    callbacks_done();
    ml__memprof_drain();
    return q;
}

int ml__memprof_pending(void)
{
    return mp.pending != NULL;
}

void ml__memprof_drain(void)
{
    mp_thread *m = &mp;
    if (m->in_callback || m->pending == NULL) return;
    callbacks_begin();
    while (m->pending != NULL) {
        entry *e = m->pending;
        m->pending = e->next;
        run_free(e);
        entry_release(e);
    }
    callbacks_done();
}

/* The host's upcall: a tracked block is being released by jemalloc on this thread. No lock of
 * jemalloc is held; the thread may be anywhere, our own slow path included. */
static void on_tracked_free(uintptr_t key)
{
    entry *e = table_take(key);
    if (e == NULL) return;
    e->next = mp.pending;
    mp.pending = e;
    ml_thread *t = &ml__self;
    if (ml__busy_enter(t)) {
        ml__thread_force_event(t);
        ml__busy_leave(t);
    } /* else memlimits' slow path is running: its entry point drains after it (alloc.c) */
}

/* ---- the API ---- */

static void wait_zero(int *counter, int own)
{
    while (__atomic_load_n(counter, __ATOMIC_SEQ_CST) > own)
        sched_yield();
}

ML_EXPORT ml_profile *ml_memprof_start(uint64_t mean_gap, unsigned callstack_size,
                                       const ml_tracker *tracker)
{
    if (mean_gap == 0 || mean_gap > ((uint64_t)1 << 40) || callstack_size > 256 ||
        tracker == NULL) {
        errno = EINVAL;
        return NULL;
    }
    ml__memprof_drain();
    pthread_mutex_lock(&slots_lock);
    if (buckets == NULL) {
        void *b = mmap(NULL, BUCKETS * sizeof *buckets, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED || ml__host_tracked_setup(on_tracked_free) != 0) {
            if (b != MAP_FAILED) munmap(b, BUCKETS * sizeof *buckets);
            pthread_mutex_unlock(&slots_lock);
            errno = ENOMEM;
            return NULL;
        }
        buckets = b;
    }
    if (callstack_size > 0) ml__host_backtrace_setup();
    struct ml_profile *p = NULL;
    for (int s = 0; s < ML_MEMPROF_MAX && p == NULL; s++)
        if (__atomic_load_n(&slots[s].state, __ATOMIC_ACQUIRE) == SLOT_FREE) p = &slots[s];
    if (p == NULL) {
        pthread_mutex_unlock(&slots_lock);
        errno = EAGAIN;
        return NULL;
    }
    p->mean = mean_gap;
    p->inv = ml__sampler_param(mean_gap);
    p->depth = callstack_size;
    p->tracker = *tracker;
    ML_STORE(&p->untracked_blocks, 0);
    ML_STORE(&p->untracked_samples, 0);
    __atomic_store_n(&p->gen, next_gen++, __ATOMIC_RELEASE);
    __atomic_store_n(&p->state, SLOT_RUNNING, __ATOMIC_RELEASE);
    __atomic_add_fetch(&layout, 1, __ATOMIC_RELEASE);
    ML_STORE(&ml__memprof_started, 1);
    pthread_mutex_unlock(&slots_lock);
    if (callstack_size > 0) ml__host_backtrace_warm();
    ml_thread *t = &ml__self; /* the calling thread joins at its next allocation */
    if (ml__busy_enter(t)) {
        ml__thread_force_event(t);
        ml__busy_leave(t);
    }
    return p;
}

ML_EXPORT void ml_memprof_stop(ml_profile *p)
{
    if (p == NULL) return;
    ml__memprof_drain();
    pthread_mutex_lock(&slots_lock);
    int was = __atomic_load_n(&p->state, __ATOMIC_ACQUIRE);
    if (was == SLOT_RUNNING) {
        __atomic_store_n(&p->state, SLOT_STOPPED, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&layout, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&slots_lock);
    /* An alloc callback of this profile running on this thread is not waited for. */
    wait_zero(&p->alloc_running, mp.in_callback ? 1 : 0);
}

ML_EXPORT void ml_memprof_discard(ml_profile *p)
{
    if (p == NULL) return;
    ml_memprof_stop(p);
    pthread_mutex_lock(&slots_lock);
    if (__atomic_load_n(&p->state, __ATOMIC_ACQUIRE) != SLOT_STOPPED) {
        pthread_mutex_unlock(&slots_lock);
        return;
    }
    __atomic_store_n(&p->state, SLOT_DISCARDING, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&slots_lock);
    wait_zero(&p->running, 0);
    int s = (int)(p - slots);
    /* Forget its tracked blocks; entries left with no value go back to the pool. */
    pthread_mutex_lock(&table_lock);
    for (unsigned b = 0; b < BUCKETS; b++) {
        entry **pp = &buckets[b], *e;
        while ((e = *pp) != NULL) {
            e->gen[s] = 0;
            if (entry_empty(e)) {
                *pp = e->next;
                e->next = spare;
                spare = e;
            } else {
                pp = &e->next;
            }
        }
    }
    pthread_mutex_unlock(&table_lock);
    memset(&p->tracker, 0, sizeof p->tracker);
    __atomic_store_n(&p->state, SLOT_FREE, __ATOMIC_RELEASE);
}

ML_EXPORT uint64_t ml_memprof_untracked(const ml_profile *p, uint64_t *samples)
{
    if (samples != NULL) *samples = p != NULL ? ML_LOAD(&p->untracked_samples) : 0;
    return p != NULL ? ML_LOAD(&p->untracked_blocks) : 0;
}

void ml__memprof_thread_exit(void)
{
    ml__memprof_drain();
    ml__host_tracked_thread_exit();
}

void ml__memprof_fork_child(void)
{
    pthread_mutex_init(&table_lock, NULL);
    pthread_mutex_init(&slots_lock, NULL);
    for (int s = 0; s < ML_MEMPROF_MAX; s++) {
        slots[s].state = SLOT_FREE;
        slots[s].running = slots[s].alloc_running = 0;
        memset(&slots[s].tracker, 0, sizeof slots[s].tracker);
    }
    layout++;
    if (buckets != NULL) memset(buckets, 0, BUCKETS * sizeof *buckets); /* entries leak */
    spare = NULL; /* the parent may have been taking from it: those chunks are left */
    mp.pending = NULL;
    mp.in_callback = 0;
}
