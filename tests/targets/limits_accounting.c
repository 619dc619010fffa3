/* Target for tests/test_limits.c: what ml_thread_allocated, ml_heap_live and ml_heap_peak report
 * around known allocations. `limits_accounting counts` prints "NAME DELTA" for each call of the
 * allocation API: the change of ml_thread_allocated across it. `limits_accounting heap` prints
 * the live heap and the peak at fixed points of a malloc/free sequence. Output is written after
 * the measurements, or with write(2), so that printing never allocates in between. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
/* 128 GiB: more than the address space `counts` allows itself (RLIMIT_AS), so the allocation
 * fails on any machine. (Sizes near PTRDIFF_MAX: test_api's unservable_sizes check.) */
#define UNSERVABLE ((size_t)128 << 30)
#define ADDRESS_SPACE ((rlim_t)64 << 30)

static uint64_t (*thread_allocated)(void);
static uint64_t (*heap_live)(void);
static uint64_t (*heap_peak)(void);

static struct {
    const char *name;
    unsigned long long delta;
} rows[64];
static int nrows;

static void row(const char *name, uint64_t delta)
{
    rows[nrows].name = name;
    rows[nrows].delta = delta;
    nrows++;
}

/* Every block passes through here so that the compiler cannot elide a malloc/free pair. */
static void *volatile sink;

/* Records the change of ml_thread_allocated across `stmt`, which leaves its block in `out`. */
#define MEASURE(name, out, stmt)                                                                   \
    do {                                                                                           \
        uint64_t t0_ = thread_allocated();                                                         \
        stmt;                                                                                      \
        row(name, thread_allocated() - t0_);                                                       \
        sink = out;                                                                                \
    } while (0)

/* The calls ask for impossible sizes on purpose: through volatile pointers, the compiler does
 * not reason about them. */
static void *(*volatile malloc_)(size_t) = malloc;
static void *(*volatile calloc_)(size_t, size_t) = calloc;
static void *(*volatile realloc_)(void *, size_t) = realloc;
static int (*volatile posix_memalign_)(void **, size_t, size_t) = posix_memalign;

static void counts(void)
{
    void *p, *q, *r, *s, *z, *a = NULL, *b, *c, *d;
    int rc;
    struct rlimit as = {ADDRESS_SPACE, ADDRESS_SPACE};
    if (setrlimit(RLIMIT_AS, &as) != 0) exit(101);
    MEASURE("malloc_100", p, p = malloc(100));
    MEASURE("calloc_7x13", q, q = calloc(7, 13));
    MEASURE("realloc_to_5000", p, p = realloc(p, 5000));
    MEASURE("realloc_to_300000", p, p = realloc(p, 300000));
    MEASURE("realloc_shrink_to_10", p, p = realloc(p, 10));
    MEASURE("malloc_0", z, z = malloc(0));
    MEASURE("calloc_0x5", r, r = calloc(0, 5));
    MEASURE("realloc_null_0", s, s = realloc(NULL, 0));
    MEASURE("realloc_p_0", q, q = realloc(q, 0));
    MEASURE("posix_memalign_64_300", a, rc = posix_memalign(&a, 64, 300));
    MEASURE("memalign_4096_10", b, b = memalign(4096, 10));
    MEASURE("aligned_alloc_64_128", c, c = aligned_alloc(64, 128));
    MEASURE("valloc_10", d, d = valloc(10));
    MEASURE("malloc_1mib", z, free(z); z = malloc(MIB));
    MEASURE("free_all", NULL, free(p); free(r); free(s); free(a); free(b); free(c); free(d);
            free(z));
    /* Refused requests are not counted. */
    MEASURE("refused_calloc_overflow", p, p = calloc_(SIZE_MAX, 2));
    MEASURE("refused_malloc_size_max", p, p = malloc_(SIZE_MAX));
    MEASURE("refused_malloc_unservable", p, p = malloc_(UNSERVABLE));
    MEASURE("refused_calloc_unservable", p, p = calloc_((size_t)1 << 17, (size_t)1 << 20));
    MEASURE("refused_posix_memalign_einval", a, rc = posix_memalign_(&a, 24, 100));
    MEASURE("refused_posix_memalign_unservable", a, rc = posix_memalign_(&a, 64, UNSERVABLE));
    q = malloc(10);
    MEASURE("refused_realloc_unservable", p, p = realloc_(q, UNSERVABLE));
    free(p == NULL ? q : p);
    (void)rc;
    for (int i = 0; i < nrows; i++)
        printf("%s %llu\n", rows[i].name, rows[i].delta);
}

static void heap(void)
{
    static void *blocks[8];
    static void *small[2000];
    /* 2000 small blocks of 1 KiB (a size class: usable size = requested), then freed, with no
     * call into memlimits in between: the peak sees them through the flushes alone. */
    uint64_t live0 = heap_live();
    for (int i = 0; i < 2000; i++)
        sink = small[i] = malloc(1024);
    for (int i = 0; i < 2000; i++)
        free(small[i]);
    uint64_t peak_small = heap_peak();
    uint64_t live_small = heap_live();
    /* 8 blocks of 1 MiB, then half of them freed, then the rest. */
    uint64_t live_start = heap_live();
    for (int i = 0; i < 8; i++)
        sink = blocks[i] = malloc(MIB);
    uint64_t live_8 = heap_live();
    uint64_t peak_8 = heap_peak();
    for (int i = 0; i < 8; i += 2)
        free(blocks[i]);
    uint64_t live_4 = heap_live();
    uint64_t peak_4 = heap_peak();
    for (int i = 1; i < 8; i += 2)
        free(blocks[i]);
    uint64_t live_0 = heap_live();
    printf("live0 %llu\npeak_small %llu\nlive_small %llu\n", (unsigned long long)live0,
           (unsigned long long)peak_small, (unsigned long long)live_small);
    printf("live_start %llu\nlive_8 %llu\npeak_8 %llu\nlive_4 %llu\npeak_4 %llu\nlive_0 %llu\n",
           (unsigned long long)live_start, (unsigned long long)live_8, (unsigned long long)peak_8,
           (unsigned long long)live_4, (unsigned long long)peak_4, (unsigned long long)live_0);
}

/* A large block allocated and freed with no accounting event in between: the peak must see it. */
static void peak_large(void)
{
    uint64_t live0 = heap_live();
    uint64_t peak0 = heap_peak();
    char *p = malloc((size_t)32 << 20);
    sink = p;
    free(p);
    uint64_t peak1 = heap_peak();
    printf("live0 %llu\npeak0 %llu\npeak1 %llu\n", (unsigned long long)live0,
           (unsigned long long)peak0, (unsigned long long)peak1);
}

int main(int argc, char **argv)
{
    thread_allocated = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    heap_live = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live");
    heap_peak = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_peak");
    if (!thread_allocated || !heap_live || !heap_peak || argc < 2) return 100;
    if (strcmp(argv[1], "counts") == 0)
        counts();
    else if (strcmp(argv[1], "heap") == 0)
        heap();
    else if (strcmp(argv[1], "peak_large") == 0)
        peak_large();
    else
        return 100;
    return 0;
}
