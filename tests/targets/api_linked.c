/* Target for tests/test_api.c: a program linked with -lmemlimits and run without LD_PRELOAD.
 * The library precedes libc in symbol lookup, so it owns malloc all the same: ml_active() is 1
 * and this program's allocations are counted. Prints "active N", "counted N" and "live N". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "memlimits.h"

/* Blocks pass through here so that the compiler cannot elide a malloc/free pair. */
static void *volatile sink;

int main(void)
{
    int active = ml_active();
    uint64_t t0 = ml_thread_allocated();
    uint64_t live0 = ml_heap_live();
    char *p = malloc(12345);
    sink = p;
    char *q = calloc(10, 1000);
    sink = q;
    uint64_t t1 = ml_thread_allocated();
    char *big = malloc((size_t)4 << 20);
    sink = big;
    uint64_t live1 = ml_heap_live();
    free(big);
    free(q);
    free(p);
    printf("active %d\ncounted %llu\nlive %llu\n", active, (unsigned long long)(t1 - t0),
           (unsigned long long)(live1 - live0));
    return 0;
}
