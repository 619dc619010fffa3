/* precision: how exact memlimits' limits are, measured from outside the engine (links
 * libmemlimits through its public API only).
 *
 *   precision overshoot TRIALS SEED
 *     Allocation limits. Each trial picks a pattern and a limit L (log-uniform, 1 B..16 MiB),
 *     runs a task under ml_limit_allocations(L) that allocates by the pattern, counting itself
 *     what memlimits should count (requested sizes, a realloc its new size, calloc count*size,
 *     a zero-byte request 1), keeping every block, until the first refusal. Checks: status
 *     ML_ALLOCATION_LIMIT; the reported count equals the task's own count S of successful
 *     requests; S <= L (overshoot = max(0, reported - L), expected 0); the refused request is
 *     exactly the crossing one (S + r > L). Then the exactness the other way: the same S bytes
 *     replayed under limit S return ML_OK with count S, and under S - 1 are refused at the last
 *     request. One line per trial, then a "# summary" line.
 *
 *   precision global TRIALS SEED PATTERN THREADS
 *     Global-limit detection distance. Each trial frees everything, reads the baseline live
 *     heap, sets ml_set_global_memory_limit(baseline + uniform 1..4 MiB), and runs THREADS tasks
 *     under ml_limit_global_memory that allocate blocks of random size by PATTERN (small:
 *     16..1024 B, medium: 1..65536 B, large: 64 KiB..1 MiB) and keep them. Each thread tracks the
 *     live heap itself (baseline + the malloc_usable_size of every block, summed over threads)
 *     and records the bytes it requested after the live heap went above the limit (with a
 *     successful allocation, its own or another thread's) up to its first refusal, and how
 *     many blocks that was. Early: a thread refused while its tracked live heap was not above
 *     the limit. One line per thread per trial, then a "# summary" line.
 *
 *   precision sampler BYTES SEED
 *     The sampler's workload: allocates BYTES in total in random blocks of 1..65536 bytes, each
 *     freed at once; run it with MEMLIMITS_REPORT=json:PATH and MEMLIMITS_SEED, and compare the
 *     report's samples x sample_mean with its exact allocated_bytes (run_all.sh does).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "memlimits.h"

static const char *prog = "precision";

/* ------------------------------------------------------------------ allocation limits -- */

enum pattern {
    P_RANDOM,    /* malloc, 1..65536 */
    P_FIXED8,    /* malloc(8) */
    P_FIXED24,   /* malloc(24) */
    P_FIXED4096, /* malloc(4096) */
    P_FIXED100K, /* malloc(100000) */
    P_TINY,      /* malloc, 0..64: zero-byte requests count one byte */
    P_CALLOC,    /* calloc(1..16, 1..4096) */
    P_ALIGNED,   /* posix_memalign(64..4096, 1..65536) */
    P_REALLOC,   /* one block grown by realloc, +1..4096 each step */
    P_UNWIND,    /* P_RANDOM with ML_UNWIND delivery */
    P_COUNT
};
static const char *const pattern_names[P_COUNT] = {
    "random-1-64K", "fixed-8", "fixed-24",       "fixed-4096",     "fixed-100000",
    "tiny-0-64",    "calloc",  "posix_memalign", "realloc-growth", "random-unwind"};

enum { MAX_BLOCKS = 1 << 22 };

/* What one malloc(0) adds to a task's count, measured by measure_zero_byte(). */
static uint64_t zero_byte_cost;
static void *zero_blocks[16];

static void zero_task(void *arg)
{
    (void)arg;
    for (int i = 0; i < 16; i++)
        zero_blocks[i] = malloc(0);
}

static void measure_zero_byte(void)
{
    uint64_t n = 0;
    ml_limit_allocations(ML_UNLIMITED - 1, zero_task, NULL, &n);
    for (int i = 0; i < 16; i++)
        free(zero_blocks[i]);
    zero_byte_cost = n / 16;
}

struct alloc_run {
    enum pattern pattern;
    uint64_t seed;
    uint64_t replay; /* 0: allocate until refused; else: make exactly this many requests */
    void **blocks;   /* MAX_BLOCKS, allocated outside the task */
    volatile uint64_t kept, requests, counted, refused_size, inflight;
    volatile uint64_t last_positive; /* number of the last successful request counting > 0 */
    volatile int refused;
};

/* The next request of the pattern: its counted size, and performs it; returns the block or NULL.
 * For P_REALLOC the block replaces blocks[0]. */
static void *next_request(struct alloc_run *r, uint64_t *rng, volatile uint64_t *counted)
{
    switch (r->pattern) {
    case P_RANDOM:
    case P_UNWIND: {
        size_t n = bench_range(rng, 1, 65536);
        *counted = n;
        return malloc(n);
    }
    case P_FIXED8:
        *counted = 8;
        return malloc(8);
    case P_FIXED24:
        *counted = 24;
        return malloc(24);
    case P_FIXED4096:
        *counted = 4096;
        return malloc(4096);
    case P_FIXED100K:
        *counted = 100000;
        return malloc(100000);
    case P_TINY: {
        /* A zero-byte request is counted as memlimits counts it (zero_byte_cost, measured at
         * start: the header says one byte, the implementation measured zero). */
        size_t n = bench_range(rng, 0, 64);
        *counted = n ? n : zero_byte_cost;
        return malloc(n);
    }
    case P_CALLOC: {
        size_t c = bench_range(rng, 1, 16), s = bench_range(rng, 1, 4096);
        *counted = c * s;
        return calloc(c, s);
    }
    case P_ALIGNED: {
        size_t a = (size_t)64 << bench_range(rng, 0, 6), n = bench_range(rng, 1, 65536);
        void *p = NULL;
        *counted = n;
        return posix_memalign(&p, a, n) == 0 ? p : NULL;
    }
    case P_REALLOC: {
        static __thread size_t size;
        if (r->kept == 0) size = 0;
        size_t n = size + bench_range(rng, 1, 4096);
        *counted = n;
        void *q = realloc(r->kept ? r->blocks[0] : NULL, n);
        if (q != NULL) size = n;
        return q;
    }
    default:
        return NULL;
    }
}

static void alloc_task(void *arg)
{
    struct alloc_run *r = arg;
    uint64_t rng = bench_mix(r->seed, 7);
    for (;;) {
        if (r->replay != 0 && r->requests == r->replay) return;
        if (r->kept >= MAX_BLOCKS) return;
        /* The counted size lands in r->inflight before the request is made, so that an unwind
         * out of the request (ML_UNWIND) still leaves it. */
        r->requests++;
        void *p = next_request(r, &rng, &r->inflight);
        if (p == NULL) {
            r->refused = 1;
            r->refused_size = r->inflight;
            return;
        }
        r->counted += r->inflight;
        if (r->inflight > 0) r->last_positive = r->requests;
        if (r->pattern == P_REALLOC) {
            r->blocks[0] = p;
            r->kept = 1;
        } else {
            r->blocks[r->kept] = p;
            r->kept = r->kept + 1;
        }
    }
}

static ml_status run_alloc(struct alloc_run *r, uint64_t limit, uint64_t *reported)
{
    r->kept = r->requests = r->counted = r->refused_size = r->inflight = r->last_positive = 0;
    r->refused = 0;
    ml_limits lim = {limit, 0, NULL, r->pattern == P_UNWIND ? ML_UNWIND : 0};
    ml_status st = ml_run(&lim, alloc_task, r, reported);
    if (r->pattern == P_UNWIND && st == ML_ALLOCATION_LIMIT && !r->refused) {
        r->refused = 1; /* unwound out of the refused request */
        r->refused_size = r->inflight;
    }
    for (uint64_t i = 0; i < r->kept; i++)
        free(r->blocks[i]);
    return st;
}

static int cmd_overshoot(uint64_t trials, uint64_t seed)
{
    void **blocks = malloc(MAX_BLOCKS * sizeof *blocks);
    if (blocks == NULL) bench_die(prog, "out of memory");
    measure_zero_byte();
    uint64_t rng = bench_mix(seed, 1);
    uint64_t violations = 0, overshoot_max = 0, nonzero = 0, capped = 0;
    printf("# pattern limit status reported own_count refused_size requests overshoot "
           "replay_ok replay_minus1_ok violation\n");
    for (uint64_t t = 0; t < trials; t++) {
        struct alloc_run r = {.pattern = (enum pattern)(t % P_COUNT), .blocks = blocks};
        /* Log-uniform limit in 1 B..16 MiB, with small fixed sizes kept under 2^22 blocks. */
        double u = (double)(bench_rand(&rng) >> 11) / 9007199254740992.0;
        uint64_t limit = (uint64_t)__builtin_exp(u * __builtin_log(16.0 * 1048576.0));
        if (limit < 1) limit = 1;
        r.seed = bench_rand(&rng);
        uint64_t reported = 0;
        ml_status st = run_alloc(&r, limit, &reported);
        uint64_t own = r.counted, refused = r.refused_size, requests = r.requests;
        int hit_cap = !r.refused;
        int violation = 0;
        if (hit_cap) {
            capped++; /* the block array filled first: not a measurement */
        } else {
            if (st != ML_ALLOCATION_LIMIT) violation |= 1;
            if (reported != own) violation |= 2;
            if (own > limit) violation |= 4;
            if (own + refused <= limit) violation |= 8; /* refused before crossing */
        }
        uint64_t overshoot = reported > limit ? reported - limit : 0;
        if (overshoot > overshoot_max) overshoot_max = overshoot;
        if (overshoot != 0) nonzero++;
        /* Replays: the same successful requests under limit S (expect ML_OK, count S) and under
         * S - 1 (expect a refusal at the last request that counted more than zero bytes: later
         * zero-byte requests cannot cross a limit). */
        int replay_ok = -1, minus_ok = -1;
        if (!hit_cap && own > 0 && requests > 1) {
            struct alloc_run again = {
                .pattern = r.pattern, .seed = r.seed, .replay = requests - 1, .blocks = blocks};
            uint64_t rep2 = 0;
            ml_status st2 = run_alloc(&again, own, &rep2);
            replay_ok = st2 == ML_OK && rep2 == own && !again.refused && again.counted == own;
            struct alloc_run minus = again;
            uint64_t rep3 = 0;
            ml_status st3 = own > 1 ? run_alloc(&minus, own - 1, &rep3) : ML_OK;
            minus_ok = own <= 1 || (st3 == ML_ALLOCATION_LIMIT && minus.refused &&
                                    minus.requests == again.last_positive &&
                                    rep3 == minus.counted && rep3 < own);
            if (!replay_ok) violation |= 16;
            if (!minus_ok) violation |= 32;
        }
        if (violation) violations++;
        printf("%s %" PRIu64 " %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
               " %d %d %d\n",
               pattern_names[r.pattern], limit, (int)st, reported, own, refused, requests,
               overshoot, replay_ok, minus_ok, hit_cap ? -1 : violation);
    }
    printf("# summary trials=%" PRIu64 " measured=%" PRIu64 " violations=%" PRIu64
           " overshoot_nonzero=%" PRIu64 " overshoot_max=%" PRIu64 " zero_byte_counted_as=%" PRIu64
           "\n",
           trials, trials - capped, violations, nonzero, overshoot_max, zero_byte_cost);
    free(blocks);
    return violations != 0;
}

/* --------------------------------------------------------------- global memory limit -- */

enum gpattern { G_SMALL, G_MEDIUM, G_LARGE };

struct gshared {
    uint64_t limit;
    int64_t live; /* tracked live heap, atomic */
    enum gpattern pattern;
    pthread_barrier_t start, done;
};

struct gthread {
    struct gshared *s;
    uint64_t seed;
    void **blocks;
    uint64_t kept, cap;
    /* results */
    int crossed, early, refused, status;
    uint64_t after_bytes, after_blocks, crossing_size, refused_size, requested;
    pthread_t tid;
    int index;
};

static size_t gsize(enum gpattern p, uint64_t *rng)
{
    switch (p) {
    case G_SMALL:
        return bench_range(rng, 16, 1024);
    case G_MEDIUM:
        return bench_range(rng, 1, 65536);
    default:
        return bench_range(rng, 65536, 1 << 20);
    }
}

static void global_task(void *arg)
{
    struct gthread *g = arg;
    struct gshared *s = g->s;
    uint64_t rng = g->seed;
    while (g->kept < g->cap) {
        size_t n = gsize(s->pattern, &rng);
        if (!g->crossed && (uint64_t)__atomic_load_n(&s->live, __ATOMIC_SEQ_CST) > s->limit)
            g->crossed = 1; /* another thread's allocation crossed: count from this one */
        void *p = malloc(n);
        if (p == NULL) {
            g->refused = 1;
            g->refused_size = n;
            if (!g->crossed && (uint64_t)__atomic_load_n(&s->live, __ATOMIC_SEQ_CST) <= s->limit)
                g->early = 1;
            return;
        }
        g->blocks[g->kept++] = p;
        g->requested += n;
        int64_t live =
            __atomic_add_fetch(&s->live, (int64_t)malloc_usable_size(p), __ATOMIC_SEQ_CST);
        if (g->crossed) {
            g->after_bytes += n;
            g->after_blocks++;
        } else if ((uint64_t)live > s->limit) {
            g->crossed = 1; /* this allocation (or another thread's before it) crossed */
            g->crossing_size = n;
        }
    }
}

static void global_trial_thread(struct gthread *g)
{
    g->kept = g->after_bytes = g->after_blocks = g->crossing_size = g->refused_size = 0;
    g->requested = 0;
    g->crossed = g->early = g->refused = 0;
    g->status = (int)ml_limit_global_memory(global_task, g);
}

static void *global_worker(void *arg)
{
    struct gthread *g = arg;
    for (;;) {
        pthread_barrier_wait(&g->s->start);
        if (g->s->limit == 0) return NULL; /* the end */
        global_trial_thread(g);
        pthread_barrier_wait(&g->s->done);
    }
}

static int cmd_global(uint64_t trials, uint64_t seed, enum gpattern pattern, unsigned threads)
{
    static const char *const gnames[] = {"small-16-1024", "medium-1-64K", "large-64K-1M"};
    struct gshared s = {.pattern = pattern};
    struct gthread *g = calloc(threads, sizeof *g);
    if (g == NULL) bench_die(prog, "out of memory");
    uint64_t cap = 1 << 20;
    for (unsigned i = 0; i < threads; i++) {
        g[i].s = &s;
        g[i].index = (int)i;
        g[i].cap = cap;
        g[i].blocks = malloc(cap * sizeof(void *));
        if (g[i].blocks == NULL) bench_die(prog, "out of memory");
    }
    pthread_barrier_init(&s.start, NULL, threads);
    pthread_barrier_init(&s.done, NULL, threads);
    for (unsigned i = 1; i < threads; i++)
        if (pthread_create(&g[i].tid, NULL, global_worker, &g[i]) != 0)
            bench_die(prog, "pthread_create failed");

    uint64_t rng = bench_mix(seed, 2);
    uint64_t max_after = 0, early = 0, not_interrupted = 0, bad_status = 0;
    printf("# pattern threads trial thread limit_over_baseline status crossed early "
           "after_bytes after_blocks crossing_size refused_size\n");
    for (uint64_t t = 0; t < trials; t++) {
        uint64_t baseline = ml_heap_live();
        uint64_t over = bench_range(&rng, 1 << 20, 4 << 20);
        s.limit = baseline + over;
        s.live = (int64_t)baseline;
        ml_set_global_memory_limit(s.limit);
        for (unsigned i = 0; i < threads; i++)
            g[i].seed = bench_rand(&rng);
        /* Thread 0 is this one. */
        pthread_barrier_wait(&s.start);
        global_trial_thread(&g[0]);
        pthread_barrier_wait(&s.done);
        ml_set_global_memory_limit(ML_UNLIMITED);
        for (unsigned i = 0; i < threads; i++) {
            struct gthread *x = &g[i];
            printf("%s %u %" PRIu64 " %u %" PRIu64 " %d %d %d %" PRIu64 " %" PRIu64 " %" PRIu64
                   " %" PRIu64 "\n",
                   gnames[pattern], threads, t, i, over, x->status, x->crossed, x->early,
                   x->after_bytes, x->after_blocks, x->crossing_size, x->refused_size);
            if (x->after_bytes > max_after) max_after = x->after_bytes;
            early += x->early;
            not_interrupted += !x->refused;
            bad_status += x->status != ML_MEMORY_LIMIT;
            for (uint64_t k = 0; k < x->kept; k++)
                free(x->blocks[k]);
        }
    }
    s.limit = 0;
    if (threads > 1) {
        pthread_barrier_wait(&s.start);
        for (unsigned i = 1; i < threads; i++)
            pthread_join(g[i].tid, NULL);
    }
    printf("# summary pattern=%s threads=%u trials=%" PRIu64 " max_after_bytes=%" PRIu64
           " early=%" PRIu64 " not_interrupted=%" PRIu64 " bad_status=%" PRIu64 "\n",
           gnames[pattern], threads, trials, max_after, early, not_interrupted, bad_status);
    for (unsigned i = 0; i < threads; i++)
        free(g[i].blocks);
    free(g);
    return 0;
}

/* -------------------------------------------------------------------------- sampler -- */

static int cmd_sampler(uint64_t bytes, uint64_t seed)
{
    uint64_t rng = bench_mix(seed, 3), done = 0, sum = 0;
    while (done < bytes) {
        size_t n = bench_range(&rng, 1, 65536);
        char *p = malloc(n);
        if (p == NULL) bench_die(prog, "malloc returned NULL");
        p[0] = 1;
        sum += (unsigned char)p[0];
        free(p);
        done += n;
    }
    printf("requested=%" PRIu64 " blocks=%" PRIu64 "\n", done, sum);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (!ml_active()) bench_die(prog, "memlimits does not own malloc in this process");
    if (argc >= 2 && strcmp(argv[1], "overshoot") == 0) {
        uint64_t trials = bench_arg(argc, argv, 2, 2000, 1, UINT64_MAX);
        uint64_t seed = bench_arg(argc, argv, 3, 1, 0, UINT64_MAX);
        return cmd_overshoot(trials, seed);
    }
    if (argc >= 2 && strcmp(argv[1], "global") == 0) {
        uint64_t trials = bench_arg(argc, argv, 2, 10000, 1, UINT64_MAX);
        uint64_t seed = bench_arg(argc, argv, 3, 1, 0, UINT64_MAX);
        uint64_t pattern = bench_arg(argc, argv, 4, 1, 0, 2);
        uint64_t threads = bench_arg(argc, argv, 5, 1, 1, 16);
        return cmd_global(trials, seed, (enum gpattern)pattern, (unsigned)threads);
    }
    if (argc >= 2 && strcmp(argv[1], "sampler") == 0) {
        uint64_t bytes = bench_arg(argc, argv, 2, 100000000, 1, UINT64_MAX);
        uint64_t seed = bench_arg(argc, argv, 3, 1, 0, UINT64_MAX);
        return cmd_sampler(bytes, seed);
    }
    fprintf(stderr, "usage: precision overshoot [TRIALS] [SEED]\n"
                    "       precision global [TRIALS] [SEED] [PATTERN 0|1|2] [THREADS]\n"
                    "       precision sampler [BYTES] [SEED]\n");
    return 2;
}
