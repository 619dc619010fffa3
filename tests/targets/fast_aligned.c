/* Target for tests/test_fast_entries.c: the blocks of the aligned entry points (memalign,
 * aligned_alloc, posix_memalign, valloc, pvalloc), run under libmemlimits.so. Small requests end
 * in jemalloc's malloc of the size rounded up to the alignment (preload/malloc.c); for every
 * alignment from 32 to 8192 and sizes around each multiple of it, the block must be aligned, of
 * the size class jemalloc's own aligned path gives (nallocx with MALLOCX_ALIGN), and counted as
 * the bytes requested (ml_thread_allocated). Prints "checked N" and "fail ..." for each wrong
 * block; exits 100 without the preload (no nallocx). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* jemalloc's MALLOCX_ALIGN(a): the base-2 logarithm of a power of two. */
#define ALIGN_FLAG(a) ((int)__builtin_ctzll(a))

static size_t (*nallocx_)(size_t, int);
static uint64_t (*allocated_)(void);
static int failures, checked;

static void check(const char *entry, size_t align, size_t size, size_t jemalloc_size, void *p)
{
    checked++;
    size_t usable = p ? malloc_usable_size(p) : 0;
    size_t expect = nallocx_(jemalloc_size ? jemalloc_size : 1, ALIGN_FLAG(align));
    if (p == NULL || (uintptr_t)p % align != 0 || usable != expect) {
        printf("fail %s(%zu, %zu): %p usable %zu, jemalloc's aligned path %zu\n", entry, align,
               size, p, usable, expect);
        failures++;
    }
    free(p);
}

int main(void)
{
    nallocx_ = (size_t(*)(size_t, int))dlsym(RTLD_DEFAULT, "nallocx");
    allocated_ = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    if (nallocx_ == NULL || allocated_ == NULL) return 100;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t requested = 0, before = allocated_();
    for (size_t align = 32; align <= 8192; align *= 2) {
        for (size_t base = 0; base <= 5000; base += align) {
            for (size_t size = base > 2 ? base - 2 : 0; size <= base + 2; size++) {
                check("memalign", align, size, size, memalign(align, size));
                check("aligned_alloc", align, size, size, aligned_alloc(align, size));
                void *p = NULL;
                if (posix_memalign(&p, align, size) != 0) p = NULL;
                check("posix_memalign", align, size, size, p);
                requested += 3 * size;
            }
        }
    }
    for (size_t size = 0; size <= 2 * page + 1; size += 97) {
        check("valloc", page, size, size, valloc(size));
        size_t whole = (size + page - 1) / page * page;
        check("pvalloc", page, size, whole ? whole : page, pvalloc(size));
        requested += size + (whole ? whole : page);
    }
    uint64_t counted = allocated_() - before;
    if (counted != requested) {
        printf("fail counted %llu bytes for %llu requested\n", (unsigned long long)counted,
               (unsigned long long)requested);
        failures++;
    }
    printf("checked %d\n", checked);
    return failures != 0;
}
