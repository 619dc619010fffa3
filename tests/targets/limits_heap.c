/* Target for tests/test_limits.c: the hard heap cap (MEMLIMITS_HEAP). Fills the heap with 1 MiB
 * blocks until an allocation fails, then reports, one "key value" line each: the cap in force
 * (ml_heap_cap), ml_heap_live() before the first block (baseline), the usable size of a block,
 * how many blocks it got, the failing malloc's errno, ml_heap_live() at that moment, what
 * calloc, realloc (growing a small block, which must survive) and posix_memalign do at the cap,
 * and after freeing every other block, how many 1 MiB blocks it gets back.
 * Runs with MEMLIMITS_ON_HEAP=enomem (the default). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)
#define MAX_BLOCKS 4096

static void *blocks[MAX_BLOCKS];

int main(void)
{
    uint64_t (*heap_live)(void) = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_live");
    uint64_t (*heap_cap)(void) = (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_heap_cap");
    if (heap_live == NULL || heap_cap == NULL) return 100;
    char *small = malloc(64);
    memset(small, 's', 64);
    uint64_t baseline = heap_live(); /* what is live before the first block */
    int n = 0, fill_errno = 0;
    for (; n < MAX_BLOCKS; n++) {
        errno = 0;
        blocks[n] = malloc(MIB);
        if (blocks[n] == NULL) {
            fill_errno = errno;
            break;
        }
        memset(blocks[n], 1, 4096);
    }
    uint64_t live = heap_live();
    size_t usable = n > 0 ? malloc_usable_size(blocks[0]) : 0;
    errno = 0;
    void *c = calloc(1, MIB);
    int calloc_errno = errno;
    errno = 0;
    void *r = realloc(small, 2 * MIB);
    int realloc_errno = errno;
    int kept = r == NULL && small[0] == 's' && small[63] == 's';
    void *pm = (void *)0x77;
    int pm_rc = posix_memalign(&pm, 4096, MIB);
    int pm_kept = pm == (void *)0x77;
    int freed = 0, again = 0;
    for (int i = 0; i < n; i += 2, freed++)
        free(blocks[i]);
    for (int i = 0; i < n; i += 2) {
        blocks[i] = malloc(MIB);
        if (blocks[i] != NULL) again++;
    }
    printf("cap %llu\nbaseline %llu\nusable %zu\n", (unsigned long long)heap_cap(),
           (unsigned long long)baseline, usable);
    printf("blocks %d\nerrno %d\nlive %llu\n", n, fill_errno, (unsigned long long)live);
    printf("calloc %s errno %d\n", c ? "allocated" : "null", calloc_errno);
    printf("realloc %s errno %d kept %d\n", r ? "allocated" : "null", realloc_errno, kept);
    printf("posix_memalign %d kept %d\n", pm_rc, pm_kept);
    printf("freed %d\nagain %d\n", freed, again);
    return 0;
}
