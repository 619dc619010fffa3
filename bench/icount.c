/* icount: one allocation entry point of C (glibc's API and jemalloc's non-standard one) in a loop,
 * for instruction counts under callgrind (bench/run_icount.sh; see icount.h). Usage:
 * `icount OPERATION N`, `icount --list`. Links only libc: the allocator is chosen with
 * LD_PRELOAD. jemalloc's API is looked up with dlsym, so the same binary runs under glibc, where
 * those operations exit with 127 (not available). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>

#include "icount.h"

#define MIB ((size_t)1 << 20)

static void *slots[ICOUNT_SLOTS];
static size_t sizes[ICOUNT_SLOTS];

static int op_malloc(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        free(*slot);
        *slot = malloc(icount_small(r));
        if (*slot == NULL) return 1;
    }
    return 0;
}

static int op_calloc(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        free(*slot);
        *slot = calloc(1, icount_small(r));
        if (*slot == NULL) return 1;
    }
    return 0;
}

static int op_realloc(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        void *p = realloc(*slot, icount_small(r));
        if (p == NULL) return 1;
        *slot = p;
    }
    return 0;
}

static int op_posix_memalign(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        free(*slot);
        if (posix_memalign(slot, 64, icount_small(r)) != 0) return 1;
    }
    return 0;
}

static int op_aligned_alloc(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        free(*slot);
        *slot = aligned_alloc(64, icount_small(r));
        if (*slot == NULL) return 1;
    }
    return 0;
}

static int op_memalign(uint64_t n)
{
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        free(*slot);
        *slot = memalign(64, icount_small(r));
        if (*slot == NULL) return 1;
    }
    return 0;
}

/* One 4 MiB block at a time, its first byte written: the large-block path. */
static int op_malloc_4m(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        char *p = malloc(4 * MIB);
        if (p == NULL) return 1;
        p[0] = (char)i;
        icount_keep(p);
        free(p);
    }
    return 0;
}

/* jemalloc's API, found at run time. */
static void *(*je_mallocx)(size_t, int);
static void *(*je_rallocx)(void *, size_t, int);
static size_t (*je_xallocx)(void *, size_t, size_t, int);
static size_t (*je_sallocx)(const void *, int);
static void (*je_dallocx)(void *, int);
static void (*je_sdallocx)(void *, size_t, int);
static size_t (*je_nallocx)(size_t, int);

#define ICOUNT_ALIGN64 6 /* MALLOCX_ALIGN(64): the base-2 logarithm in the low bits */

static int find_jemalloc(void)
{
    je_mallocx = (void *(*)(size_t, int))dlsym(RTLD_DEFAULT, "mallocx");
    je_rallocx = (void *(*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "rallocx");
    je_xallocx = (size_t(*)(void *, size_t, size_t, int))dlsym(RTLD_DEFAULT, "xallocx");
    je_sallocx = (size_t(*)(const void *, int))dlsym(RTLD_DEFAULT, "sallocx");
    je_dallocx = (void (*)(void *, int))dlsym(RTLD_DEFAULT, "dallocx");
    je_sdallocx = (void (*)(void *, size_t, int))dlsym(RTLD_DEFAULT, "sdallocx");
    je_nallocx = (size_t(*)(size_t, int))dlsym(RTLD_DEFAULT, "nallocx");
    return je_mallocx && je_rallocx && je_xallocx && je_sallocx && je_dallocx && je_sdallocx &&
           je_nallocx;
}

static int op_mallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        if (*slot != NULL) je_dallocx(*slot, 0);
        *slot = je_mallocx(icount_small(r), 0);
        if (*slot == NULL) return 1;
    }
    return 0;
}

static int op_mallocx_sdallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        unsigned k = r & (ICOUNT_SLOTS - 1);
        if (slots[k] != NULL) je_sdallocx(slots[k], sizes[k], 0);
        sizes[k] = icount_small(r);
        slots[k] = je_mallocx(sizes[k], 0);
        if (slots[k] == NULL) return 1;
    }
    return 0;
}

static int op_mallocx_align(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        if (*slot != NULL) je_dallocx(*slot, ICOUNT_ALIGN64);
        *slot = je_mallocx(icount_small(r), ICOUNT_ALIGN64);
        if (*slot == NULL) return 1;
    }
    return 0;
}

static int op_rallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (unsigned k = 0; k < ICOUNT_SLOTS; k++)
        if ((slots[k] = je_mallocx(16, 0)) == NULL) return 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        void **slot = &slots[r & (ICOUNT_SLOTS - 1)];
        void *p = je_rallocx(*slot, icount_small(r), 0);
        if (p == NULL) return 1;
        *slot = p;
    }
    return 0;
}

static int op_xallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (unsigned k = 0; k < ICOUNT_SLOTS; k++)
        if ((slots[k] = je_mallocx(256, 0)) == NULL) return 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        size_t got = je_xallocx(slots[r & (ICOUNT_SLOTS - 1)], 16 + ((r >> 40) & 255), 0, 0);
        icount_keep((void *)got);
    }
    return 0;
}

static int op_sallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (unsigned k = 0; k < ICOUNT_SLOTS; k++)
        if ((slots[k] = je_mallocx(16 + k / 2, 0)) == NULL) return 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        icount_keep((void *)je_sallocx(slots[r & (ICOUNT_SLOTS - 1)], 0));
    }
    return 0;
}

static int op_nallocx(uint64_t n)
{
    if (!find_jemalloc()) return 127;
    uint64_t s = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = icount_next(&s);
        icount_keep((void *)je_nallocx(icount_small(r), 0));
    }
    return 0;
}

static const struct icount_op ops[] = {
    {"malloc", "free + malloc, 16-527 B", op_malloc},
    {"calloc", "free + calloc(1, 16-527 B)", op_calloc},
    {"realloc", "realloc to 16-527 B", op_realloc},
    {"posix_memalign", "free + posix_memalign(64, 16-527 B)", op_posix_memalign},
    {"aligned_alloc", "free + aligned_alloc(64, 16-527 B)", op_aligned_alloc},
    {"memalign", "free + memalign(64, 16-527 B)", op_memalign},
    {"malloc_4m", "malloc(4 MiB), one byte written, free", op_malloc_4m},
    {"mallocx", "dallocx + mallocx, 16-527 B", op_mallocx},
    {"mallocx_sdallocx", "sdallocx + mallocx, 16-527 B", op_mallocx_sdallocx},
    {"mallocx_align", "dallocx + mallocx(MALLOCX_ALIGN(64)), 16-527 B", op_mallocx_align},
    {"rallocx", "rallocx to 16-527 B", op_rallocx},
    {"xallocx", "xallocx in place, 16-271 B", op_xallocx},
    {"sallocx", "sallocx of a live block", op_sallocx},
    {"nallocx", "nallocx of 16-527 B", op_nallocx},
};

int main(int argc, char **argv)
{
    return icount_main(argc, argv, ops, sizeof ops / sizeof ops[0]);
}
