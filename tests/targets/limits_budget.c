/* Target for tests/test_limits.c: a fixed sequence of allocations against the process's
 * allocation budget (MEMLIMITS_ALLOC). `limits_budget COUNT` prints "base B" (bytes this thread
 * had requested before the sequence), then "a I SIZE" just before allocation I of the sequence,
 * so that the last such line names the allocation a limit action stopped. Sizes come from a
 * fixed LCG (tests/test_limits.c computes the same sequence); blocks are freed as it goes.
 *
 * When an allocation fails it prints "refused I errno E", then, if MEMLIMITS_ALLOC is plain
 * decimal, spends exactly what is left of the budget ("fit R ok|failed") and asks for one byte
 * more ("over errno E"). It ends with "total T" (ml_thread_allocated()) and _exit(0), so that
 * nothing allocates after the last count. Output uses write(2): nothing here allocates but the
 * sequence itself. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "say.h"

/* Size of allocation i of the sequence (keep in step with tests/test_limits.c). */
static size_t sequence_size(uint64_t *state, unsigned i)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    size_t size = 1 + (size_t)((*state >> 33) % 4096);
    if (i % 97 == 0) size += 200000;
    return size;
}

int main(int argc, char **argv)
{
    uint64_t (*thread_allocated)(void) =
        (uint64_t(*)(void))dlsym(RTLD_DEFAULT, "ml_thread_allocated");
    if (thread_allocated == NULL || argc < 2) return 100;
    unsigned count = (unsigned)strtoul(argv[1], NULL, 10);
    static void *ring[16];
    uint64_t state = 42;
    say("base %llu\n", (unsigned long long)thread_allocated());
    for (unsigned i = 0; i < count; i++) {
        size_t size = sequence_size(&state, i);
        say("a %u %zu\n", i, size);
        free(ring[i % 16]);
        errno = 0;
        ring[i % 16] = i % 5 == 1 ? calloc(1, size) : malloc(size);
        if (ring[i % 16] == NULL) {
            say("refused %u errno %d\n", i, errno);
            const char *budget = getenv("MEMLIMITS_ALLOC");
            char *end;
            unsigned long long total = budget ? strtoull(budget, &end, 10) : 0;
            if (budget != NULL && *end == '\0') {
                uint64_t left = total - thread_allocated();
                void *fit = left > 0 ? malloc(left) : NULL;
                say("fit %llu %s\n", (unsigned long long)left, fit ? "ok" : "failed");
                errno = 0;
                void *over = malloc(1);
                say("over errno %d%s\n", errno, over ? " (allocated)" : "");
            }
            break;
        }
        memset(ring[i % 16], 0xab, size < 64 ? size : 64);
    }
    say("total %llu\n", (unsigned long long)thread_allocated());
    _exit(0);
}
