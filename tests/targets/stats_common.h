/* Shared by the target programs of tests/test_stats.c (tests/targets/stats_*.c): printing an
 * ml_stats snapshot, and allocating blocks whose requests and usable sizes are known. Output is
 * printed with say() (one write(2), never allocating), after the measurements, so that printing
 * cannot move a figure in between.
 *
 * A snapshot prints as "WHEN.INDEX VALUE" lines, one per uint64_t of ml_stats (index 0 is
 * `size`): the test maps field names to indices with offsetof, so the names are written down
 * once, in the test. */
#ifndef ML_TARGET_STATS_COMMON_H
#define ML_TARGET_STATS_COMMON_H

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"

#include "memlimits.h"

/* Every block passes through here, so that no malloc/free pair can be elided. */
static void *volatile stats_sink;

__attribute__((unused)) static void print_snapshot(const char *when, const ml_stats *s)
{
    uint64_t words[sizeof *s / sizeof(uint64_t)];
    memcpy(words, s, sizeof words);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        say("%s.%zu %llu\n", when, i, (unsigned long long)words[i]);
}

/* ml_stat (exact) or ml_quick_stat into a fresh struct. */
__attribute__((unused)) static ml_stats snapshot(int exact)
{
    ml_stats s = ML_STATS_INIT;
    if (exact)
        ml_stat(&s);
    else
        ml_quick_stat(&s);
    return s;
}

/* What a run of allocations added up to. */
typedef struct tally {
    uint64_t requested, count, usable;
} tally;

/* Block sizes from 64 bytes to 32 KiB, from a fixed linear congruential sequence: at 64 bytes
 * and above jemalloc's size classes are at most 1.25 times the request. */
static size_t next_size(uint64_t *state)
{
    *state = *state * 6364136223846793005u + 1442695040888963407u;
    return 64 + (size_t)(*state >> 33) % ((32 << 10) - 63);
}

/* Allocates `n` blocks into blocks[] (malloc, every fourth with calloc), adding to *t. Exits 3
 * if one fails. */
__attribute__((unused)) static void fill(void **blocks, size_t n, uint64_t seed, tally *t)
{
    for (size_t i = 0; i < n; i++) {
        size_t size = next_size(&seed);
        blocks[i] = i % 4 == 3 ? calloc(1, size) : malloc(size);
        if (blocks[i] == NULL) exit(3);
        stats_sink = blocks[i];
        t->requested += size;
        t->count++;
        t->usable += malloc_usable_size(blocks[i]);
    }
}

/* Frees `n` blocks, adding their usable sizes to *usable. */
__attribute__((unused)) static void drain(void **blocks, size_t n, uint64_t *usable)
{
    for (size_t i = 0; i < n; i++) {
        *usable += malloc_usable_size(blocks[i]);
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

#endif
