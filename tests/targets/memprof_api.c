/* The tracker API (include/memlimits.h, "Memprof") checked in a preloaded process: one check per
 * run, named by argv[1]; prints "ok NAME" or "FAIL NAME: why" lines and exits with the number of
 * failures. Statistical checks use fixed seeds (MEMLIMITS_SEED from the test) and bounds of five
 * standard deviations of the distribution named in each check. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <memlimits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "say.h"

void free_sized(void *p, size_t size);

static int failures;
static const char *check_name;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            say("FAIL %s: ", check_name);                                                          \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
        }                                                                                          \
    } while (0)

/* Keeps the compiler from eliding malloc/free pairs. */
static void *volatile sink;

/* ---- a counting tracker: every tracked block gets a serial number; its state is checked ---- */

#define MAX_TRACKED 200000
static unsigned char state[MAX_TRACKED]; /* 1: allocated, 2: freed, 3+: freed again */
static long n_alloc, n_free, n_realloc, n_samples, bad;
static long n_kind[8]; /* alloc callbacks by ml_alloc_kind */
static pthread_t free_thread_seen;
static __thread int inside;
static int nested_seen;

static void *count_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    if (inside) nested_seen++;
    if (a->n_samples < 1 || a->block == NULL) bad++;
    if ((unsigned)a->kind < 8) __atomic_fetch_add(&n_kind[a->kind], 1, __ATOMIC_RELAXED);
    long id = __atomic_fetch_add(&n_alloc, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&n_samples, (long)a->n_samples, __ATOMIC_RELAXED);
    if (id >= MAX_TRACKED) return NULL;
    state[id] = 1;
    return (void *)(intptr_t)(id + 2);
}

static void count_free(void *tracked, void *ctx)
{
    (void)ctx;
    if (inside) nested_seen++;
    long id = (long)(intptr_t)tracked - 2;
    __atomic_fetch_add(&n_free, 1, __ATOMIC_RELAXED);
    free_thread_seen = pthread_self();
    if (id < 0 || id >= MAX_TRACKED || state[id] != 1)
        bad++;
    else
        state[id] = 2;
}

static void *count_realloc(void *tracked, const ml_allocation *a, void *ctx)
{
    (void)ctx, (void)a;
    __atomic_fetch_add(&n_realloc, 1, __ATOMIC_RELAXED);
    return tracked;
}

static const ml_tracker counting = {count_alloc, count_realloc, count_free, NULL};

static void flush_callbacks(void)
{
    sink = malloc(1); /* the thread's next allocation runs its queued free callbacks */
    free(sink);
    sink = malloc(1);
    free(sink);
}

/* Stops and discards p, running the free callbacks queued before each step. */
static void finish_profile(ml_profile *p)
{
    flush_callbacks();
    ml_memprof_stop(p);
    flush_callbacks();
    ml_memprof_discard(p);
}

static void check_freed_once(void)
{
    long twice = 0, never = 0;
    for (long i = 0; i < n_alloc && i < MAX_TRACKED; i++) {
        if (state[i] == 1) never++;
        if (state[i] > 2) twice++;
    }
    EXPECT(never == 0 && twice == 0 && bad == 0, "%ld never freed, %ld freed twice, %ld bad", never,
           twice, bad);
}

/* The profile's totals after `blocks` blocks of n bytes at mean gap `gap`, each within 5
 * standard deviations (and 2, for the test's own bookkeeping blocks): samples
 * Binomial(blocks * n, 1/gap); sampled blocks Binomial(blocks, 1 - (1 - 1/gap)^n). */
static void expect_samples(double blocks, double n, double gap)
{
    double mean_s = blocks * n / gap, sd_s = sqrt(blocks * n / gap * (1 - 1 / gap));
    EXPECT(fabs((double)n_samples - mean_s) < 5 * sd_s + 2, "samples %ld, expected %.0f +- %.0f",
           n_samples, mean_s, 5 * sd_s);
}

static void expect_sampled_blocks(double blocks, double n, double gap)
{
    double q = 1 - pow(1 - 1 / gap, n);
    double mean_b = blocks * q, sd_b = sqrt(blocks * q * (1 - q));
    EXPECT(fabs((double)n_alloc - mean_b) < 5 * sd_b + 2,
           "sampled blocks %ld, expected %.0f +- %.0f", n_alloc, mean_b, 5 * sd_b);
}

/* A block of n bytes carries Binomial(n, 1/gap) samples: N blocks of n bytes carry
 * Binomial(N n, 1/gap) in all, and each is sampled with probability 1 - (1 - 1/gap)^n. */
static void check_binomial(void)
{
    const double gap = 1000, n = 500, blocks = 20000;
    ml_profile *p = ml_memprof_start((uint64_t)gap, 0, &counting);
    EXPECT(p != NULL, "start: %s", strerror(errno));
    for (int i = 0; i < (int)blocks; i++) {
        sink = malloc((size_t)n);
        free(sink);
    }
    flush_callbacks();
    ml_memprof_stop(p);
    ml_memprof_discard(p);
    /* The flush's two 1-byte blocks may add a sample or a block. */
    expect_samples(blocks, n, gap);
    expect_sampled_blocks(blocks, n, gap);
    EXPECT(n_free == n_alloc, "%ld alloc callbacks, %ld free callbacks", n_alloc, n_free);
    EXPECT(bad == 0, "%ld callbacks with bad arguments or states", bad);
    say("samples %ld blocks %ld\n", n_samples, n_alloc);
}

/* The profiles' streams run on the countdown's units (memprof.h), and an aligned request is
 * charged its alignment in units beyond its bytes: those units are never sampled. 20000
 * memalign(4096, 100) blocks at gap 1000 carry Binomial(2,000,000, 1/1000) samples (mean 2000,
 * sd 44.7); sampling the 4097 extra units of each would give about 84,000. */
static void check_aligned_binomial(void)
{
    const double gap = 1000, n = 100, blocks = 20000;
    ml_profile *p = ml_memprof_start((uint64_t)gap, 0, &counting);
    EXPECT(p != NULL, "start: %s", strerror(errno));
    for (int i = 0; i < (int)blocks; i++) {
        sink = memalign(4096, (size_t)n);
        free(sink);
    }
    flush_callbacks();
    ml_memprof_stop(p);
    ml_memprof_discard(p);
    expect_samples(blocks, n, gap);
    EXPECT(n_free == n_alloc, "%ld alloc callbacks, %ld free callbacks", n_alloc, n_free);
    EXPECT(bad == 0, "%ld callbacks with bad arguments or states", bad);
}

/* Every way of freeing a tracked block gives exactly one free callback. */
static void check_free_once(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &counting); /* every block is sampled */
    for (int i = 0; i < 2000; i++) {
        char *b = malloc(100 + (size_t)i);
        b[0] = 1;
        switch (i % 6) {
        case 0:
            free(b);
            break;
        case 1:
            free_sized(b, 100 + (size_t)i);
            break;
        case 2:
            b = realloc(b, 0);
            break;
        case 3: /* moved: the realloc callback, then one free of the new block */
            b = realloc(b, 50000);
            EXPECT(b != NULL && b[0] == 1, "realloc lost the contents");
            free(b);
            break;
        case 4:
            b = realloc(b, 60);
            free(b);
            break;
        case 5: {
            char *c = calloc(1, 70000);
            EXPECT(c != NULL && c[69999] == 0, "calloc not zeroed");
            free(c);
            free(b);
            break;
        }
        }
    }
    void *a = aligned_alloc(4096, 100);
    EXPECT(((uintptr_t)a & 4095) == 0, "aligned_alloc misaligned");
    free(a);
    finish_profile(p);
    check_freed_once();
    EXPECT(n_realloc >= 666, "%ld realloc callbacks, expected >= 666", n_realloc);
}

static void *consumer(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < 100; i++)
        free(blocks[i]);
    long before = n_free;
    EXPECT(before == 0, "free callbacks ran before the freeing thread's next event: %ld", before);
    flush_callbacks();
    return NULL;
}

/* A tracked block freed by another thread: its free callback runs on that thread. */
static void check_cross_thread(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    static void *blocks[100];
    for (int i = 0; i < 100; i++)
        blocks[i] = malloc(64);
    pthread_t t;
    pthread_create(&t, NULL, consumer, blocks);
    pthread_join(t, NULL);
    long missing = 0;
    for (int i = 0; i < 100; i++)
        missing += state[i] != 2;
    EXPECT(missing == 0 && bad == 0, "%ld of the 100 blocks had no free callback", missing);
    EXPECT(pthread_equal(free_thread_seen, t), "free callback ran on another thread");
    ml_memprof_stop(p);
    ml_memprof_discard(p);
}

/* Inside a callback: allocations succeed, are counted, are not sampled; frees of tracked blocks
 * get their callbacks after the running callback returns. */
static void *victim;
static long inner_counted;
static void *inner_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    if (inside) nested_seen++;
    inside = 1;
    uint64_t before = ml_thread_allocated();
    void *big = malloc(1 << 20);
    if (big == NULL) bad++;
    inner_counted += (long)(ml_thread_allocated() - before);
    free(big);
    if (victim != NULL) {
        long f = n_free;
        free(victim);
        victim = NULL;
        if (n_free != f) nested_seen++;
    }
    inside = 0;
    return count_alloc(a, ctx);
}

static void check_in_callback(void)
{
    ml_tracker t = {inner_alloc, NULL, count_free, NULL};
    ml_profile *p = ml_memprof_start(1, 0, &t);
    victim = malloc(10);
    for (int i = 0; i < 100; i++) {
        sink = malloc(10);
        free(sink);
    }
    flush_callbacks();
    ml_memprof_stop(p);
    ml_memprof_discard(p);
    EXPECT(nested_seen == 0, "%d callbacks ran inside a callback", nested_seen);
    EXPECT(bad == 0, "an allocation inside a callback failed");
    EXPECT(n_alloc > 100 && n_alloc < 110, "%ld alloc callbacks for ~104 allocations", n_alloc);
    EXPECT(inner_counted >= (long)n_alloc * (1 << 20), "allocations inside callbacks not counted");
    EXPECT(n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
}

/* ML_MEMPROF_REFUSE: the allocation fails with ENOMEM, the block is released, the bytes are
 * not counted. */
static void *refuse_big(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    return a->size >= 5000 ? ML_MEMPROF_REFUSE : count_alloc(a, ctx);
}

static void check_refuse(void)
{
    ml_tracker t = {refuse_big, NULL, count_free, NULL};
    ml_profile *p = ml_memprof_start(1, 0, &t);
    uint64_t before = ml_thread_allocated();
    errno = 0;
    void *b = malloc(6000);
    EXPECT(b == NULL && errno == ENOMEM, "malloc not refused (%p, errno %d)", b, errno);
    EXPECT(ml_thread_allocated() == before, "a refused allocation was counted");
    void *c = realloc(malloc(10), 8000);
    EXPECT(c == NULL && errno == ENOMEM, "realloc not refused");
    void *d = malloc(100);
    EXPECT(d != NULL, "malloc(100) refused");
    free(d);
    flush_callbacks();
    ml_memprof_stop(p);
    ml_memprof_discard(p);
}

/* stop: no alloc callback after it returns, free callbacks continue; discard: no callback. */
static void check_stop_discard(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    static void *volatile kept, *volatile dropped;
    kept = malloc(100);
    dropped = malloc(100);
    long allocs = n_alloc;
    ml_memprof_stop(p);
    sink = malloc(100);
    free(sink);
    flush_callbacks();
    EXPECT(n_alloc == allocs, "alloc callback after stop");
    free(kept);
    flush_callbacks();
    EXPECT(n_free == 1, "free callbacks after stop: %ld, expected 1", n_free);
    ml_memprof_discard(p);
    free(dropped);
    flush_callbacks();
    EXPECT(n_free == 1, "free callback after discard");
    EXPECT(ml_memprof_start(0, 0, &counting) == NULL && errno == EINVAL, "gap 0 accepted");
    ml_profile *all[ML_MEMPROF_MAX + 1];
    int started = 0;
    for (int i = 0; i <= ML_MEMPROF_MAX; i++)
        if ((all[i] = ml_memprof_start(1000, 0, &counting)) != NULL) started++;
    EXPECT(started == ML_MEMPROF_MAX && errno == EAGAIN, "%d profiles at once", started);
    for (int i = 0; i < started; i++)
        ml_memprof_discard(all[i]);
}

/* Two profiles with different gaps sample independently, each at its own rate. */
static long a_samples, b_samples;
static void *count_a(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    a_samples += (long)a->n_samples;
    return NULL;
}
static void *count_b(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    b_samples += (long)a->n_samples;
    return NULL;
}

static void check_two_profiles(void)
{
    ml_tracker ta = {count_a, NULL, NULL, NULL}, tb = {count_b, NULL, NULL, NULL};
    ml_profile *a = ml_memprof_start(1000, 0, &ta), *b = ml_memprof_start(20000, 0, &tb);
    double bytes = 0;
    for (int i = 0; i < 100000; i++) {
        size_t n = 16 + (size_t)(i % 400);
        sink = malloc(n);
        free(sink);
        bytes += (double)n;
    }
    ml_memprof_discard(a);
    ml_memprof_discard(b);
    double ma = bytes / 1000, mb = bytes / 20000;
    EXPECT(fabs(a_samples - ma) < 5 * sqrt(ma) + 2, "gap 1000: %ld samples, expected %.0f",
           a_samples, ma);
    EXPECT(fabs(b_samples - mb) < 5 * sqrt(mb) + 2, "gap 20000: %ld samples, expected %.0f",
           b_samples, mb);
}

/* A forked child inherits no profile. */
static void check_fork(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    static void *volatile parent_block;
    parent_block = malloc(100);
    long allocs = n_alloc, frees = n_free;
    pid_t pid = fork();
    if (pid == 0) {
        free(parent_block);
        for (int i = 0; i < 100; i++) {
            sink = malloc(100);
            free(sink);
        }
        flush_callbacks();
        _exit(n_alloc == allocs && n_free == frees ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "callbacks ran in the child");
    free(parent_block);
    flush_callbacks();
    EXPECT(allocs >= 1 && state[allocs - 1] == 2, "the parent's free callback is lost");
    ml_memprof_discard(p);
}

/* A thread created after start is covered. */
static void *late_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++) {
        sink = malloc(100);
        free(sink);
    }
    flush_callbacks();
    return NULL;
}

static void check_later_thread(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    long before = n_alloc;
    pthread_t t;
    pthread_create(&t, NULL, late_thread, NULL);
    pthread_join(t, NULL);
    EXPECT(n_alloc - before >= 100, "the new thread's allocations were not sampled");
    ml_memprof_discard(p);
}

/* The callstack starts at the allocation's caller. */
static void *frame0;
static unsigned frames_len;
static void *stack_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    frames_len = a->callstack_len;
    frame0 = a->callstack_len ? a->callstack[0] : NULL;
    return NULL;
}

__attribute__((noinline)) static void *allocation_site(void)
{
    void *p = malloc(1000);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void check_callstack(void)
{
    ml_tracker t = {stack_alloc, NULL, NULL, NULL};
    ml_profile *p = ml_memprof_start(1, 16, &t);
    void *b = allocation_site();
    free(b);
    ml_memprof_discard(p);
    uintptr_t site = (uintptr_t)allocation_site, f = (uintptr_t)frame0;
    EXPECT(frames_len >= 2 && frames_len <= 16, "callstack of %u frames", frames_len);
    EXPECT(f > site && f < site + 64, "frame 0 %p is not in allocation_site %p", frame0,
           (void *)site);
}

/* memprof-limits on the tracker API: an allocation limit estimated from the samples (each
 * sample stands for `gap` bytes) refuses allocations past the budget. */
static const uint64_t budget = 20 << 20, limit_gap = 10000;
static uint64_t estimated;
static void *limit_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    estimated += a->n_samples * limit_gap;
    return estimated > budget ? ML_MEMPROF_REFUSE : NULL;
}

static void check_limits_client(void)
{
    ml_tracker t = {limit_alloc, NULL, NULL, NULL};
    ml_profile *p = ml_memprof_start(limit_gap, 0, &t);
    uint64_t done = 0;
    void *b;
    while ((b = malloc(1000)) != NULL) {
        free(b);
        done += 1000;
    }
    ml_memprof_discard(p);
    /* Refused at the sample that crossed: bytes ~ Gamma; sd ~ gap * sqrt(budget / gap). */
    double sd = (double)limit_gap * sqrt((double)budget / (double)limit_gap);
    EXPECT(fabs((double)done - (double)budget) < 5 * sd + 1000,
           "refused after %llu bytes; budget %llu +- %.0f", (unsigned long long)done,
           (unsigned long long)budget, 5 * sd);
}

/* Tracked blocks are counted in the live heap at their own size: after a profiled churn whose
 * blocks are all freed, the live heap is back where it was, but for the freed tracked blocks a
 * thread keeps for reuse (at most 16 of at most 14 KiB). */
static void check_accounting(void)
{
    flush_callbacks();
    uint64_t before = ml_heap_live();
    ml_profile *p = ml_memprof_start(500, 0, &counting);
    static void *ring[64];
    for (int i = 0; i < 200000; i++) {
        int k = i & 63;
        free(ring[k]);
        ring[k] = malloc(16 + (size_t)(i * 7919) % 9000);
    }
    uint64_t during = ml_heap_live();
    for (int k = 0; k < 64; k++)
        free(ring[k]);
    flush_callbacks();
    ml_memprof_discard(p);
    uint64_t after = ml_heap_live();
    EXPECT(during < before + 64 * 16384 + (1 << 20), "live heap %llu during, %llu before",
           (unsigned long long)during, (unsigned long long)before);
    EXPECT(after < before + 16 * 14336 + 65536 && after + 65536 > before,
           "live heap %llu after, %llu before", (unsigned long long)after,
           (unsigned long long)before);
    EXPECT(n_alloc > 1000 && n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
}

/* stop and discard from another thread than the one that started the profile; alloc callbacks
 * run on the allocating thread. */
static pthread_t alloc_thread_seen;
static void *thread_alloc(const ml_allocation *a, void *ctx)
{
    alloc_thread_seen = pthread_self();
    return count_alloc(a, ctx);
}

static void *stopper(void *arg)
{
    ml_memprof_stop(arg);
    ml_memprof_discard(arg);
    return NULL;
}

static void check_other_thread(void)
{
    ml_tracker t = {thread_alloc, NULL, count_free, NULL};
    ml_profile *p = ml_memprof_start(1, 0, &t);
    static void *volatile kept;
    kept = malloc(100);
    EXPECT(pthread_equal(alloc_thread_seen, pthread_self()), "alloc callback on another thread");
    pthread_t th;
    pthread_create(&th, NULL, stopper, p);
    pthread_join(th, NULL);
    long allocs = n_alloc, frees = n_free;
    free(kept);
    for (int i = 0; i < 100; i++) {
        sink = malloc(100);
        free(sink);
    }
    flush_callbacks();
    EXPECT(n_alloc == allocs && n_free == frees, "callbacks after a discard from another thread");
}

/* Tracked blocks freed or moved through jemalloc's own API (exported by libmemlimits): the
 * size-hinted frees must not take a tracked block's promoted class for a slab object, and
 * rallocx must move it as realloc does. Every block sampled; each free callback exactly once. */
static void check_jemalloc_api(void)
{
    void (*sdallocx_)(void *, size_t, int) =
        (void (*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "sdallocx");
    void (*dallocx_)(void *, int) = (void (*)(void *, int))dlsym(RTLD_DEFAULT, "dallocx");
    void *(*rallocx_)(void *, size_t, int) =
        (void *(*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "rallocx");
    size_t (*xallocx_)(void *, size_t, size_t, int) =
        (size_t(*)(void *, size_t, size_t, int))dlsym(RTLD_DEFAULT, "xallocx");
    EXPECT(sdallocx_ && dallocx_ && rallocx_ && xallocx_, "jemalloc's API is not exported");
    if (!(sdallocx_ && dallocx_ && rallocx_ && xallocx_)) return;
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    for (int i = 0; i < 2000; i++) {
        size_t n = 100 + (size_t)i;
        char *b = malloc(n);
        b[0] = 1;
        switch (i % 4) {
        case 0:
            sdallocx_(b, n, 0);
            break;
        case 1:
            dallocx_(b, 0);
            break;
        case 2:
            b = rallocx_(b, 50000, 0);
            EXPECT(b != NULL && b[0] == 1, "rallocx lost the contents");
            sdallocx_(b, 50000, 0);
            break;
        case 3:
            EXPECT(xallocx_(b, n + 5000, 0, 0) >= n, "xallocx shrank the block");
            free(b);
            break;
        }
    }
    finish_profile(p);
    check_freed_once();
}

/* C++'s operator new and delete (exported by libmemlimits under their mangled names, called
 * here through dlsym): every sampled block tracked with kind ML_ALLOC_NEW, and freed through
 * plain, sized and aligned delete, each free callback exactly once. */
static void check_cxx_new(void)
{
    void *(*new_)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
    void *(*new_aligned)(size_t, size_t) =
        (void *(*)(size_t, size_t))dlsym(RTLD_DEFAULT, "_ZnwmSt11align_val_t");
    void (*delete_)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_ZdlPv");
    void (*delete_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
    void (*delete_aligned_sized)(void *, size_t, size_t) =
        (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvmSt11align_val_t");
    EXPECT(new_ && new_aligned && delete_ && delete_sized && delete_aligned_sized,
           "C++'s operators are not exported");
    if (!(new_ && new_aligned && delete_ && delete_sized && delete_aligned_sized)) return;
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    long news = 0;
    for (int i = 0; i < 900; i++) {
        size_t n = 100 + (size_t)i;
        switch (i % 3) {
        case 0:
            delete_(new_(n));
            break;
        case 1:
            delete_sized(new_(n), n);
            break;
        case 2:
            delete_aligned_sized(new_aligned(n, 64), n, 64);
            break;
        }
        news++;
    }
    finish_profile(p);
    EXPECT(n_kind[ML_ALLOC_NEW] == news, "%ld blocks tracked as ML_ALLOC_NEW, expected %ld",
           n_kind[ML_ALLOC_NEW], news);
    check_freed_once();
}

/* ---- jemalloc's allocating API: mallocx, rallocx and xallocx (exported by libmemlimits, called
 * here through dlsym, as this program is not linked with jemalloc) ---- */

/* jemalloc(3)'s flag encodings, as its 5.3 ABI defines them. */
#define MALLOCX_LG_ALIGN(la) ((int)(la))
#define MALLOCX_ZERO 0x40
#define MALLOCX_TCACHE(tc) ((int)(((tc) + 2) << 8))
#define MALLOCX_TCACHE_NONE MALLOCX_TCACHE(-1)
#define MALLOCX_ARENA(a) ((int)(((unsigned)(a) + 1) << 20))

static struct {
    void *(*mallocx)(size_t, int);
    void *(*rallocx)(void *, size_t, int);
    size_t (*xallocx)(void *, size_t, size_t, int);
    size_t (*sallocx)(const void *, int);
    void (*dallocx)(void *, int);
    void (*sdallocx)(void *, size_t, int);
    int (*mallctl)(const char *, void *, size_t *, void *, size_t);
} je;

static int find_jemalloc_api(void)
{
    je.mallocx = (void *(*)(size_t, int))dlsym(RTLD_DEFAULT, "mallocx");
    je.rallocx = (void *(*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "rallocx");
    je.xallocx = (size_t(*)(void *, size_t, size_t, int))dlsym(RTLD_DEFAULT, "xallocx");
    je.sallocx = (size_t(*)(const void *, int))dlsym(RTLD_DEFAULT, "sallocx");
    je.dallocx = (void (*)(void *, int))dlsym(RTLD_DEFAULT, "dallocx");
    je.sdallocx = (void (*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "sdallocx");
    je.mallctl =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    int ok = je.mallocx && je.rallocx && je.xallocx && je.sallocx && je.dallocx && je.sdallocx &&
             je.mallctl;
    EXPECT(ok, "jemalloc's API is not exported");
    return ok;
}

/* The last alloc or realloc callback's arguments (one thread). */
static ml_allocation last;
static void *record_alloc(const ml_allocation *a, void *ctx)
{
    last = *a;
    return count_alloc(a, ctx);
}
static void *record_realloc(void *tracked, const ml_allocation *a, void *ctx)
{
    last = *a;
    return count_realloc(tracked, a, ctx);
}
static const ml_tracker recording = {record_alloc, record_realloc, count_free, NULL};

static int all_zero(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0) return 0;
    return 1;
}

/* Every aligned entry point's block sampled (gap 1): an alloc callback of kind ML_ALLOC_ALIGNED
 * for the very block returned, with its size and n samples, the alignment honoured, and one free
 * callback each. Before the fix, aligned_alloc, memalign, valloc and pvalloc (one slow half in
 * alloc_ext.c) ran no callback at all. */
static void check_aligned_tracked(void)
{
    ml_profile *p = ml_memprof_start(1, 0, &recording);
    EXPECT(p != NULL, "start: %s", strerror(errno));
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    static const char *const names[] = {"posix_memalign", "aligned_alloc", "memalign", "valloc",
                                        "pvalloc"};
    for (int i = 0; i < 500; i++) {
        int k = i % 5;
        size_t align = (size_t)64 << (i % 7), n = 100 + (size_t)i * 13;
        void *b = NULL;
        memset(&last, 0, sizeof last);
        switch (k) {
        case 0:
            if (posix_memalign(&b, align, n) != 0) b = NULL;
            break;
        case 1:
            b = aligned_alloc(align, n);
            break;
        case 2:
            b = memalign(align, n);
            break;
        case 3:
            b = valloc(n);
            align = page;
            break;
        case 4:
            b = pvalloc(n);
            align = page;
            n = (n + page - 1) / page * page; /* pvalloc asks for whole pages */
            break;
        }
        EXPECT(b != NULL, "%s(%zu, %zu) failed", names[k], align, n);
        if (b == NULL) continue;
        EXPECT((uintptr_t)b % align == 0, "%s(%zu, %zu) = %p misaligned", names[k], align, n, b);
        EXPECT(last.block == b && last.kind == ML_ALLOC_ALIGNED && last.size == n &&
                   last.n_samples == n,
               "%s(%zu, %zu) = %p: alloc callback of %p, kind %d, size %zu, %llu samples", names[k],
               align, n, b, last.block, (int)last.kind, last.size,
               (unsigned long long)last.n_samples);
        free(b);
    }
    flush_callbacks();
    ml_memprof_discard(p);
    EXPECT(n_alloc >= 500, "%ld alloc callbacks for 500 sampled blocks", n_alloc);
    EXPECT(n_free == n_alloc, "%ld alloc callbacks, %ld free callbacks", n_alloc, n_free);
    check_freed_once();
}

/* mallocx's blocks carry Binomial(n, 1/gap) samples, as malloc's (check_binomial's bounds). */
static void check_mallocx_binomial(void)
{
    if (!find_jemalloc_api()) return;
    const double gap = 1000, n = 500, blocks = 20000;
    ml_profile *p = ml_memprof_start((uint64_t)gap, 0, &counting);
    EXPECT(p != NULL, "start: %s", strerror(errno));
    for (int i = 0; i < (int)blocks; i++)
        je.dallocx(je.mallocx((size_t)n, 0), 0);
    flush_callbacks();
    ml_memprof_discard(p);
    expect_samples(blocks, n, gap);
    expect_sampled_blocks(blocks, n, gap);
    EXPECT(n_kind[ML_ALLOC_MALLOC] == n_alloc, "%ld of %ld blocks of kind ML_ALLOC_MALLOC",
           n_kind[ML_ALLOC_MALLOC], n_alloc);
    EXPECT(n_free == n_alloc, "%ld alloc callbacks, %ld free callbacks", n_alloc, n_free);
    EXPECT(bad == 0, "%ld callbacks with bad arguments or states", bad);
}

/* Every mallocx block sampled (gap 1: a block of n bytes carries Binomial(n, 1) = n samples):
 * its alloc callback has the kind its flags ask for, its size and n samples; the flags are
 * honoured (zeroed, aligned, also for blocks reused after a free); each block gets exactly one
 * free callback, whether freed by dallocx, sdallocx, free, or moved by rallocx (a realloc
 * callback, then the new block's free). */
static void check_mallocx_tracked(void)
{
    if (!find_jemalloc_api()) return;
    ml_profile *p = ml_memprof_start(1, 0, &recording);
    long moves = 0;
    for (int i = 0; i < 1200; i++) {
        size_t n = i % 50 == 49 ? 40000 + (size_t)i : 100 + (size_t)i * 7;
        static const int flags[] = {0,
                                    MALLOCX_ZERO,
                                    MALLOCX_LG_ALIGN(6),
                                    MALLOCX_LG_ALIGN(12) | MALLOCX_ZERO,
                                    MALLOCX_LG_ALIGN(16),
                                    MALLOCX_TCACHE_NONE};
        static const ml_alloc_kind kinds[] = {ML_ALLOC_MALLOC,  ML_ALLOC_CALLOC,  ML_ALLOC_ALIGNED,
                                              ML_ALLOC_ALIGNED, ML_ALLOC_ALIGNED, ML_ALLOC_MALLOC};
        static const size_t aligns[] = {16, 16, 64, 4096, 65536, 16};
        int k = i % 6;
        memset(&last, 0, sizeof last);
        char *b = je.mallocx(n, flags[k]);
        EXPECT(b != NULL, "mallocx(%zu, %#x) failed", n, flags[k]);
        if (b == NULL) continue;
        EXPECT(last.block == b && last.kind == kinds[k] && last.size == n && last.n_samples == n,
               "mallocx(%zu, %#x) = %p: alloc callback of %p, kind %d, size %zu, %llu samples", n,
               flags[k], (void *)b, last.block, (int)last.kind, last.size,
               (unsigned long long)last.n_samples);
        EXPECT((uintptr_t)b % aligns[k] == 0, "mallocx(%zu, %#x) = %p misaligned", n, flags[k],
               (void *)b);
        if (flags[k] & MALLOCX_ZERO) EXPECT(all_zero(b, n), "mallocx(%zu, ZERO) not zeroed", n);
        memset(b, 0xa5, je.sallocx(b, 0)); /* dirty: a reused block must be zeroed again */
        switch (k) {
        case 0:
            je.dallocx(b, 0);
            break;
        case 1:
            je.sdallocx(b, n, 0);
            break;
        case 2:
            free(b);
            break;
        case 3:
            je.dallocx(b, MALLOCX_TCACHE_NONE);
            break;
        case 4: { /* moved: a realloc callback for the new block */
            memset(&last, 0, sizeof last);
            char *c = je.rallocx(b, n + 30000, MALLOCX_LG_ALIGN(16));
            EXPECT(c != NULL && (unsigned char)c[n - 1] == 0xa5 && (uintptr_t)c % 65536 == 0,
                   "rallocx lost the contents or the alignment");
            EXPECT(last.block == c && last.kind == ML_ALLOC_REALLOC && last.size == n + 30000,
                   "rallocx: no realloc callback for %p", (void *)c);
            moves++;
            je.sdallocx(c, n + 30000, MALLOCX_LG_ALIGN(16));
            break;
        }
        case 5: {
            char *c = je.rallocx(b, n / 2, MALLOCX_ZERO);
            EXPECT(c != NULL && (unsigned char)c[n / 2 - 1] == 0xa5, "rallocx lost the contents");
            moves++;
            je.dallocx(c, 0);
            break;
        }
        }
    }
    finish_profile(p);
    EXPECT(n_realloc == moves, "%ld realloc callbacks for %ld rallocx moves", n_realloc, moves);
    check_freed_once();
}

/* rallocx of a block that is not tracked, with a sampled request, behaves as realloc: the new
 * block is tracked (an alloc callback of kind ML_ALLOC_REALLOC), with the flags honoured. */
static void check_rallocx_sampled(void)
{
    if (!find_jemalloc_api()) return;
    static char *blocks[300];
    for (int i = 0; i < 300; i++) { /* before the profile: not tracked */
        blocks[i] = je.mallocx(200 + (size_t)i, 0);
        memset(blocks[i], 0x5a, 200 + (size_t)i);
    }
    ml_profile *p = ml_memprof_start(1, 0, &recording);
    for (int i = 0; i < 300; i++) {
        size_t old = 200 + (size_t)i, n = i % 3 == 2 ? 50000 + old : 3 * old;
        int flags = i % 3 == 0 ? MALLOCX_ZERO : i % 3 == 1 ? MALLOCX_LG_ALIGN(12) : 0;
        size_t usable = je.sallocx(blocks[i], 0);
        memset(&last, 0, sizeof last);
        char *c = je.rallocx(blocks[i], n, flags);
        EXPECT(c != NULL && c[0] == 0x5a && c[old - 1] == 0x5a, "rallocx lost the contents");
        if (c == NULL) continue;
        EXPECT(last.block == c && last.kind == ML_ALLOC_REALLOC && last.size == n &&
                   last.n_samples == n,
               "rallocx(%zu -> %zu, %#x): alloc callback of %p, kind %d, size %zu, %llu samples",
               old, n, flags, last.block, (int)last.kind, last.size,
               (unsigned long long)last.n_samples);
        if (flags & MALLOCX_ZERO)
            EXPECT(all_zero(c + usable, n - usable), "rallocx(ZERO): the growth is not zeroed");
        if (flags & MALLOCX_LG_ALIGN(12))
            EXPECT((uintptr_t)c % 4096 == 0, "rallocx(ALIGN(4096)) misaligned");
        je.dallocx(c, 0);
    }
    finish_profile(p);
    EXPECT(n_kind[ML_ALLOC_REALLOC] == 300, "%ld alloc callbacks of kind ML_ALLOC_REALLOC",
           n_kind[ML_ALLOC_REALLOC]);
    check_freed_once();
}

/* ML_MEMPROF_REFUSE: mallocx and rallocx return NULL (errno ENOMEM, as the repo documents), the
 * bytes are not counted, rallocx's block is left as it was. */
static void check_mallocx_refuse(void)
{
    if (!find_jemalloc_api()) return;
    ml_tracker t = {refuse_big, NULL, count_free, NULL};
    ml_profile *p = ml_memprof_start(1, 0, &t);
    uint64_t before = ml_thread_allocated();
    errno = 0;
    void *b = je.mallocx(6000, 0);
    EXPECT(b == NULL && errno == ENOMEM, "mallocx not refused (%p, errno %d)", b, errno);
    errno = 0;
    b = je.mallocx(6000, MALLOCX_ZERO | MALLOCX_LG_ALIGN(12));
    EXPECT(b == NULL && errno == ENOMEM, "mallocx(ZERO | ALIGN) not refused (%p, errno %d)", b,
           errno);
    EXPECT(ml_thread_allocated() == before, "a refused allocation was counted");
    char *c = je.mallocx(100, 0);
    EXPECT(c != NULL, "mallocx(100) refused");
    if (c == NULL) return;
    memset(c, 7, 100);
    errno = 0;
    void *d = je.rallocx(c, 8000, 0);
    EXPECT(d == NULL && errno == ENOMEM, "rallocx not refused");
    EXPECT(c[99] == 7 && je.sallocx(c, 0) >= 100, "a refused rallocx changed the block");
    je.dallocx(c, 0);
    flush_callbacks();
    ml_memprof_stop(p);
    ml_memprof_discard(p);
    EXPECT(n_alloc >= 1 && n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
}

/* Flags that name an arena keep the block in that arena, untracked (arena.<i>.reset and
 * .destroy must find it), and the profile counts it (ml_memprof_untracked); the growth of xallocx
 * is counted the same way; a tracked block rallocx'd into an arena gets its free callback at once.
 * A thread cache named by the flags does not stop tracking. */
static void check_mallocx_arena(void)
{
    if (!find_jemalloc_api()) return;
    uint64_t (*untracked)(const ml_profile *, uint64_t *) =
        (uint64_t(*)(const ml_profile *, uint64_t *))dlsym(RTLD_DEFAULT, "ml_memprof_untracked");
    EXPECT(untracked != NULL, "ml_memprof_untracked is not exported");
    if (untracked == NULL) return;
    unsigned arena, tcache;
    size_t len = sizeof arena;
    EXPECT(je.mallctl("arenas.create", &arena, &len, NULL, 0) == 0, "arenas.create");
    len = sizeof tcache;
    EXPECT(je.mallctl("tcache.create", &tcache, &len, NULL, 0) == 0, "tcache.create");
    ml_profile *p = ml_memprof_start(1, 0, &recording);
    uint64_t want_blocks = 0, want_samples = 0;
    static void *in_arena[100];
    for (int i = 0; i < 100; i++) {
        size_t n = 100 + (size_t)i * 150;
        in_arena[i] = je.mallocx(n, MALLOCX_ARENA(arena));
        in_arena[i] = je.rallocx(in_arena[i], 2 * n, MALLOCX_ARENA(arena) | MALLOCX_ZERO);
        want_blocks += 2;
        want_samples += 3 * n;
        unsigned where = ~0u;
        len = sizeof where;
        void *ptr = in_arena[i];
        EXPECT(je.mallctl("arenas.lookup", &where, &len, &ptr, sizeof ptr) == 0 && where == arena,
               "a block for arena %u is in arena %u", arena, where);
    }
    EXPECT(n_alloc == 0 && n_realloc == 0, "%ld alloc, %ld realloc callbacks for arena blocks",
           n_alloc, n_realloc);
    /* A tracked block moved into the arena: its free callback, at once. */
    void *b = je.mallocx(300, 0);
    EXPECT(n_alloc == 1, "mallocx(300) not tracked");
    b = je.rallocx(b, 600, MALLOCX_ARENA(arena));
    want_blocks++;
    want_samples += 600;
    EXPECT(n_free == 1, "rallocx into an arena: %ld free callbacks at once", n_free);
    je.dallocx(b, 0);
    /* xallocx never moves a block: the samples of its charge (size + extra) are untracked, and a
     * tracked block keeps its size. */
    void *x = je.mallocx(1000, 0);
    size_t size = je.sallocx(x, 0);
    EXPECT(je.xallocx(x, 1000, 9000, 0) == size, "xallocx resized a tracked block");
    want_blocks++;
    want_samples += 10000;
    EXPECT(n_realloc == 0, "xallocx ran a realloc callback");
    je.dallocx(x, 0);
    /* A thread cache named by the flags. */
    void *t = je.mallocx(500, MALLOCX_TCACHE(tcache));
    EXPECT(n_alloc == 3 && last.block == t, "mallocx(TCACHE(%u)) not tracked", tcache);
    je.dallocx(t, MALLOCX_TCACHE(tcache));
    uint64_t samples = 0, blocks = untracked(p, &samples);
    EXPECT(blocks == want_blocks && samples == want_samples,
           "untracked: %llu blocks, %llu samples; expected %llu, %llu", (unsigned long long)blocks,
           (unsigned long long)samples, (unsigned long long)want_blocks,
           (unsigned long long)want_samples);
    char name[64];
    snprintf(name, sizeof name, "arena.%u.destroy", arena);
    EXPECT(je.mallctl(name, NULL, NULL, NULL, 0) == 0, "%s", name);
    EXPECT(je.mallctl("tcache.destroy", NULL, NULL, &tcache, sizeof tcache) == 0, "tcache.destroy");
    finish_profile(p);
    EXPECT(n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
    check_freed_once();
}

/* The free callback of a tracked block runs at the freeing thread's next allocation, when that
 * allocation is a mallocx, rallocx or xallocx too (a stopped profile: nothing new is sampled). */
static void check_mallocx_runs_free_callbacks(void)
{
    if (!find_jemalloc_api()) return;
    ml_profile *p = ml_memprof_start(1, 0, &counting);
    static void *blocks[3];
    for (int i = 0; i < 3; i++)
        blocks[i] = malloc(100);
    void *r = je.mallocx(100, 0), *x = je.mallocx(100, 0);
    ml_memprof_stop(p);
    r = je.rallocx(r, 200, 0); /* tracked: moved, realloc callback; not sampled */
    long frees = n_free;
    free(blocks[0]);
    void *a = je.mallocx(50, 0);
    EXPECT(n_free == frees + 1, "mallocx: %ld free callbacks, expected 1", n_free - frees);
    free(blocks[1]);
    void *b = je.mallocx(60, 0);
    b = je.rallocx(b, 5000, 0);
    EXPECT(n_free == frees + 2, "rallocx: %ld free callbacks, expected 2", n_free - frees);
    free(blocks[2]);
    je.xallocx(b, 5000, 100, 0);
    EXPECT(n_free == frees + 3, "xallocx: %ld free callbacks, expected 3", n_free - frees);
    je.dallocx(a, 0);
    je.dallocx(b, 0);
    je.dallocx(r, 0);
    je.dallocx(x, 0);
    flush_callbacks();
    ml_memprof_discard(p);
    EXPECT(n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
    check_freed_once();
}

/* Sampled blocks for which no tracked block can be had (the tracked arena's range made small by
 * an address-space limit at ml_memprof_start, then lifted): malloc, mallocx and realloc still
 * succeed with ordinary blocks, no alloc callback runs for them, ml_memprof_untracked counts
 * them, and a tracked block realloc'd or rallocx'd into such a block gets its free callback at
 * once (its tracker could never be told of the new block's free). */
static void check_no_tracked_block(void)
{
    if (!find_jemalloc_api()) return;
    uint64_t (*untracked)(const ml_profile *, uint64_t *) =
        (uint64_t(*)(const ml_profile *, uint64_t *))dlsym(RTLD_DEFAULT, "ml_memprof_untracked");
    EXPECT(untracked != NULL, "ml_memprof_untracked is not exported");
    if (untracked == NULL) return;
    const size_t big = (size_t)300 << 20;
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    EXPECT(f != NULL && fscanf(f, "%ld", &pages) == 1, "/proc/self/statm");
    if (f != NULL) fclose(f);
    struct rlimit was, low;
    getrlimit(RLIMIT_AS, &was);
    low = was;
    /* Room for a 256 MiB reservation (the smallest the arena takes), not for 512 MiB. */
    low.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)400 << 20);
    EXPECT(setrlimit(RLIMIT_AS, &low) == 0, "setrlimit: %s", strerror(errno));
    ml_profile *p = ml_memprof_start(1, 0, &recording);
    EXPECT(setrlimit(RLIMIT_AS, &was) == 0, "setrlimit back: %s", strerror(errno));
    EXPECT(p != NULL, "start: %s", strerror(errno));
    if (p == NULL) return;
    void *small = malloc(100), *smallx = je.mallocx(100, 0);
    EXPECT(n_alloc == 2, "small blocks not tracked: %ld alloc callbacks", n_alloc);
    long allocs = n_alloc;
    char *a = malloc(big), *b = je.mallocx(big, MALLOCX_ZERO);
    EXPECT(a != NULL && b != NULL && b[big - 1] == 0, "malloc or mallocx of 300 MiB failed");
    EXPECT(n_alloc == allocs, "an alloc callback for a block that is not tracked");
    char *c = realloc(small, big), *d = je.rallocx(smallx, big, 0);
    EXPECT(c != NULL && d != NULL, "realloc or rallocx to 300 MiB failed");
    EXPECT(n_free == 2 && n_realloc == 0,
           "tracked blocks moved to blocks that are not: %ld free callbacks (expected 2), %ld "
           "realloc callbacks (expected 0)",
           n_free, n_realloc);
    uint64_t samples = 0, blocks = untracked(p, &samples);
    EXPECT(blocks == 4 && samples == 4 * (uint64_t)big,
           "untracked: %llu blocks, %llu samples; expected 4, %llu", (unsigned long long)blocks,
           (unsigned long long)samples, 4 * (unsigned long long)big);
    free(a);
    je.dallocx(b, 0);
    free(c);
    je.dallocx(d, 0);
    finish_profile(p);
    EXPECT(n_free == n_alloc, "%ld allocs, %ld frees", n_alloc, n_free);
    check_freed_once();
}

/* The callstack of a mallocx block starts at mallocx's caller, as malloc's does. */
__attribute__((noinline)) static void *mallocx_site(void)
{
    void *p = je.mallocx(1000, MALLOCX_ZERO);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void check_mallocx_callstack(void)
{
    if (!find_jemalloc_api()) return;
    ml_tracker t = {stack_alloc, NULL, NULL, NULL};
    ml_profile *p = ml_memprof_start(1, 16, &t);
    je.dallocx(mallocx_site(), 0);
    ml_memprof_discard(p);
    uintptr_t site = (uintptr_t)mallocx_site, f = (uintptr_t)frame0;
    EXPECT(frames_len >= 2 && frames_len <= 16, "callstack of %u frames", frames_len);
    EXPECT(f > site && f < site + 64, "frame 0 %p is not in mallocx_site %p", frame0, (void *)site);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } checks[] = {
        {"binomial", check_binomial},
        {"aligned_binomial", check_aligned_binomial},
        {"free_once", check_free_once},
        {"cross_thread", check_cross_thread},
        {"in_callback", check_in_callback},
        {"refuse", check_refuse},
        {"stop_discard", check_stop_discard},
        {"two_profiles", check_two_profiles},
        {"fork", check_fork},
        {"later_thread", check_later_thread},
        {"callstack", check_callstack},
        {"limits_client", check_limits_client},
        {"accounting", check_accounting},
        {"other_thread", check_other_thread},
        {"jemalloc_api", check_jemalloc_api},
        {"cxx_new", check_cxx_new},
        {"aligned_tracked", check_aligned_tracked},
        {"mallocx_binomial", check_mallocx_binomial},
        {"mallocx_tracked", check_mallocx_tracked},
        {"rallocx_sampled", check_rallocx_sampled},
        {"mallocx_refuse", check_mallocx_refuse},
        {"mallocx_arena", check_mallocx_arena},
        {"mallocx_free_callbacks", check_mallocx_runs_free_callbacks},
        {"no_tracked_block", check_no_tracked_block},
        {"mallocx_callstack", check_mallocx_callstack},
    };
    if (argc != 2) return 100;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        if (strcmp(argv[1], checks[i].name) != 0) continue;
        check_name = checks[i].name;
        checks[i].fn();
        if (failures == 0) say("ok %s\n", check_name);
        return failures;
    }
    say("unknown check %s\n", argv[1]);
    return 100;
}
