/* Allocation before memlimits' constructor: from the executable's .preinit_array (which runs
 * before every shared library's constructor), from a shared library's constructor (robust_dl,
 * linked, so that it is initialised before the preloaded libmemlimits.so) and from a
 * constructor(101). Each must be served by memlimits and accounted: the blocks are intact in
 * main, the library constructor's ml_thread_allocated count is exact, the thread's count covers
 * them all, and freeing them takes the live heap down by exactly their usable sizes (the calling
 * thread's balance is exact in ml_heap_live).
 *
 * usage: robust_early; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t (*u64_fn)(void);

/* From robust_dl_lib.c. */
size_t robust_dl_ctor_block(uint64_t *counted);

#define EARLY 4
static const size_t early_sizes[EARLY] = {100, 5000, 300000, 777777};
static unsigned char *early[EARLY];

static void fill(int i)
{
    early[i] = malloc(early_sizes[i]);
    if (early[i] != NULL) memset(early[i], 0x30 + i, early_sizes[i]);
}

static void preinit(int argc, char **argv, char **envp)
{
    (void)argc;
    (void)argv;
    (void)envp;
    for (int i = 0; i < 3; i++)
        fill(i);
}
__attribute__((section(".preinit_array"),
               used)) static void (*const preinit_entry)(int, char **, char **) = preinit;

__attribute__((constructor(101))) static void early_constructor(void)
{
    fill(3);
}

int main(void)
{
    u64_fn heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    u64_fn thread_allocated = (u64_fn)dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ml_active");
    if (heap_live == NULL || thread_allocated == NULL || active == NULL || !active()) {
        fprintf(stderr, "robust_early: not running under libmemlimits.so\n");
        return 2;
    }
    uint64_t requested = 0, usable = 0;
    for (int i = 0; i < EARLY; i++) {
        if (early[i] == NULL) {
            fprintf(stderr, "robust_early: early allocation %d failed\n", i);
            return 1;
        }
        for (size_t j = 0; j < early_sizes[i]; j++) {
            if (early[i][j] != 0x30 + i) {
                fprintf(stderr, "robust_early: early block %d damaged at %zu\n", i, j);
                return 1;
            }
        }
        requested += early_sizes[i];
        usable += malloc_usable_size(early[i]);
    }
    uint64_t counted = 0;
    size_t lib_block = robust_dl_ctor_block(&counted);
    if (lib_block == 0 || counted != lib_block) {
        fprintf(stderr, "robust_early: library constructor block %zu bytes, counted %" PRIu64 "\n",
                lib_block, counted);
        return 1;
    }
    requested += lib_block;
    uint64_t allocated = thread_allocated();
    if (allocated < requested) {
        fprintf(stderr,
                "robust_early: thread counted %" PRIu64 " bytes, early blocks alone %" PRIu64 "\n",
                allocated, requested);
        return 1;
    }
    uint64_t live = heap_live();
    if (live < usable + lib_block) {
        fprintf(stderr, "robust_early: live heap %" PRIu64 " below the early blocks' %" PRIu64 "\n",
                live, usable + lib_block);
        return 1;
    }
    for (int i = 0; i < EARLY; i++)
        free(early[i]);
    uint64_t after = heap_live();
    printf("early requested=%" PRIu64 " usable=%" PRIu64 " live=%" PRIu64 " after_free=%" PRIu64
           "\n",
           requested, usable, live, after);
    if (live - after != usable) {
        fprintf(stderr,
                "robust_early: freeing %" PRIu64 " usable bytes took the live heap down by %" PRId64
                "\n",
                usable, (int64_t)(live - after));
        return 1;
    }
    return 0;
}
