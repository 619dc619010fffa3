/* Target for tests/test_fast_jemalloc.c: a program linked with Debian's libjemalloc (-ljemalloc)
 * that uses jemalloc's own API, run under libmemlimits.so. One mode per run (argv[1]); each
 * prints "key value" lines, and "fail WHAT" for any check made here that went wrong.
 *   basic   the crash (malloc, sallocx, dallocx) and every call of the API on blocks of
 *           either API; mallctl's statistics describe the heap that malloc serves
 *   count   ml_thread_allocated counts mallocx, rallocx and xallocx like malloc and realloc
 *   cap     (MEMLIMITS_HEAP=64M) mallocx, rallocx and xallocx stop at the heap cap
 *   task    a task's allocation limit stops mallocx exactly
 *   budget  (MEMLIMITS_ALLOC=16M, MEMLIMITS_ON_ALLOC=enomem) the process budget stops mallocx
 * The ml_* functions are looked up with dlsym: without the preload the program runs on Debian's
 * jemalloc alone, and the modes that need memlimits exit 100. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <jemalloc/jemalloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("fail %s\n", what);
        failures++;
    }
}

static void *need(const char *name)
{
    void *f = dlsym(RTLD_DEFAULT, name);
    if (f == NULL) {
        printf("no %s\n", name);
        exit(100);
    }
    return f;
}

/* jemalloc's statistics of allocated bytes, refreshed. */
static size_t stats_allocated(void)
{
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    if (mallctl("epoch", &epoch, &len, &epoch, len) != 0) return 0;
    size_t allocated = 0;
    len = sizeof allocated;
    if (mallctl("stats.allocated", &allocated, &len, NULL, 0) != 0) return 0;
    return allocated;
}

static void collect(void *ctx, const char *text)
{
    size_t *chars = ctx;
    *chars += strlen(text);
}

static int mode_basic(void)
{
    /* The reproducer: a malloc'd block handed to jemalloc's API. */
    char *p = malloc(100);
    memset(p, 'p', 100);
    size_t usable = sallocx(p, 0);
    check(usable >= 100, "sallocx of a malloc'd block");
    dallocx(p, 0);

    char *a = mallocx(5000, MALLOCX_ALIGN(4096) | MALLOCX_ZERO);
    check(a != NULL && (uintptr_t)a % 4096 == 0, "mallocx aligned");
    int zero = 1;
    for (int i = 0; a != NULL && i < 5000; i++)
        zero &= a[i] == 0;
    check(zero, "mallocx zeroed");
    check(sallocx(a, 0) == nallocx(5000, MALLOCX_ALIGN(4096)), "sallocx is nallocx");
    memset(a, 'a', 5000);
    a = rallocx(a, 100000, 0);
    check(a != NULL && a[0] == 'a' && a[4999] == 'a', "rallocx keeps the contents");
    size_t grown = xallocx(a, 100000, 50000, 0);
    check(grown >= 100000, "xallocx keeps at least the size");
    check(malloc_usable_size(a) == grown, "malloc_usable_size agrees with xallocx");
    free(a); /* a block of jemalloc's API freed with free */
    char *b = mallocx(300, 0);
    sdallocx(b, 300, 0);
    char *c = malloc(64);
    sdallocx(c, 64, 0);

    /* The statistics are the heap's: 64 MiB malloc'd shows in stats.allocated. */
    size_t before = stats_allocated();
    void *blocks[64];
    for (int i = 0; i < 64; i++)
        blocks[i] = malloc(MIB);
    size_t after = stats_allocated();
    printf("stats_grew %zu\n", after - before);
    uint64_t (*heap_live)(void) = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live");
    if (heap_live != NULL) {
        long long diff = (long long)heap_live() - (long long)after;
        printf("stats_minus_heap_live %lld\n", -diff);
    }
    size_t mib[2], miblen = 2, allocated = 0, len = sizeof allocated;
    check(mallctlnametomib("stats.allocated", mib, &miblen) == 0, "mallctlnametomib");
    check(mallctlbymib(mib, miblen, &allocated, &len, NULL, 0) == 0 && allocated == after,
          "mallctlbymib reads stats.allocated");
    for (int i = 0; i < 64; i++)
        free(blocks[i]);
    size_t chars = 0;
    malloc_stats_print(collect, &chars, "gmdablxe");
    printf("stats_print_chars %zu\n", chars);
    check(chars > 0, "malloc_stats_print writes");
    printf("failures %d\n", failures);
    return 0;
}

static int mode_count(void)
{
    uint64_t (*allocated)(void) = (uint64_t(*)(void))need("ml_thread_allocated");
    uint64_t before = allocated(), expected = 0;
    static const size_t sizes[] = {1, 24, 528, 4096, 70000, 3 * MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        void *p = mallocx(n, 0);
        void *q = mallocx(n, MALLOCX_ALIGN(64) | MALLOCX_ZERO);
        expected += 2 * n;
        p = rallocx(p, 2 * n, 0);
        expected += 2 * n;
        size_t got = xallocx(q, n, n / 2, 0);
        expected += n + n / 2;
        (void)got;
        (void)sallocx(p, 0);
        (void)nallocx(n, 0);
        dallocx(p, 0);
        sdallocx(q, n, MALLOCX_ALIGN(64));
    }
    printf("expected %llu\ncounted %llu\n", (unsigned long long)expected,
           (unsigned long long)(allocated() - before));
    printf("failures %d\n", failures);
    return 0;
}

static int mode_cap(void)
{
    uint64_t (*heap_live)(void) = (uint64_t(*)(void))need("ml_heap_live");
    static void *blocks[4096];
    char *small = mallocx(64, 0);
    memset(small, 's', 64);
    int n = 0;
    while (n < 4096 && (blocks[n] = mallocx(MIB, 0)) != NULL)
        n++;
    printf("mallocx_blocks %d\n", n);
    printf("live_mib %llu\n", (unsigned long long)(heap_live() >> 20));
    check(n < 4096, "mallocx stops at the cap");
    check(rallocx(small, 2 * MIB, 0) == NULL && small[0] == 's' && small[63] == 's',
          "rallocx at the cap fails and keeps the block");
    size_t usable = sallocx(small, 0);
    check(xallocx(small, usable, 8 * MIB, 0) == usable, "xallocx at the cap keeps the size");
    for (int i = 0; i < n; i++)
        dallocx(blocks[i], 0);
    void *again = mallocx(MIB, 0);
    check(again != NULL, "mallocx after freeing");
    dallocx(again, 0);
    dallocx(small, 0);
    printf("failures %d\n", failures);
    return 0;
}

static int task_blocks;

static void task(void *arg)
{
    (void)arg;
    while (mallocx(4096, 0) != NULL)
        task_blocks++;
}

static int mode_task(void)
{
    int (*limit_allocations)(uint64_t, void (*)(void *), void *, uint64_t *) =
        (int (*)(uint64_t, void (*)(void *), void *, uint64_t *))need("ml_limit_allocations");
    uint64_t used = 0;
    int status = limit_allocations(1 << 20, task, NULL, &used);
    printf("status %d\nblocks %d\nused %llu\n", status, task_blocks, (unsigned long long)used);
    printf("failures %d\n", failures);
    return 0;
}

static int mode_budget(void)
{
    need("ml_thread_allocated");
    size_t total = 0;
    void *p;
    while ((p = mallocx(64 << 10, 0)) != NULL)
        total += 64 << 10;
    printf("budget_total %zu\n", total);
    printf("failures %d\n", failures);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2) return 2;
    if (strcmp(argv[1], "basic") == 0) return mode_basic();
    if (strcmp(argv[1], "count") == 0) return mode_count();
    if (strcmp(argv[1], "cap") == 0) return mode_cap();
    if (strcmp(argv[1], "task") == 0) return mode_task();
    if (strcmp(argv[1], "budget") == 0) return mode_budget();
    return 2;
}
