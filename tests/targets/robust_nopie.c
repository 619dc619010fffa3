/* A non-PIE executable that takes malloc's address (as Debian's python3 does): the dynamic linker
 * then makes the executable's PLT entry the canonical address of malloc for the whole process,
 * and every object's GOT holds that address, though calls still land in libmemlimits.so. The
 * client API must still see memlimits as active, and the live heap must show a block.
 *
 * usage: robust_nopie; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t (*u64_fn)(void);

void *(*volatile program_malloc)(size_t);

int main(void)
{
    int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ml_active");
    u64_fn heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    u64_fn thread_allocated = (u64_fn)dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    if (active == NULL || heap_live == NULL || thread_allocated == NULL) {
        fprintf(stderr, "robust_nopie: not running under libmemlimits.so\n");
        return 2;
    }
    /* Taken in code, with an absolute relocation: the linker makes the PLT entry canonical. */
    program_malloc = malloc;
    uint64_t before = thread_allocated();
    char *block = program_malloc(1 << 20);
    if (block == NULL) return 3;
    memset(block, 1, 1 << 20);
    uint64_t counted = thread_allocated() - before;
    int is_active = active();
    uint64_t live = heap_live();
    printf("malloc=%p active=%d counted=%" PRIu64 " live=%" PRIu64 "\n", (void *)program_malloc,
           is_active, counted, live);
    free(block);
    if (counted != 1 << 20) {
        fprintf(stderr, "robust_nopie: the call through malloc's address was not memlimits'\n");
        return 1;
    }
    if (!is_active || live < 1 << 20) {
        fprintf(stderr,
                "robust_nopie: memlimits serves malloc, but ml_active() = %d and "
                "ml_heap_live() = %" PRIu64 "\n",
                is_active, live);
        return 1;
    }
    return 0;
}
