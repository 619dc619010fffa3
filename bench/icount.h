/* icount.h: what the instruction-count loops share (bench/icount.c for the C entry points,
 * bench/icount_cxx.cc for C++'s operators). Each program runs one named operation N times and
 * prints nothing on success; bench/run_icount.sh runs it under callgrind with N and 2N and takes
 * the difference, so that start-up, the first call's set-up and the final teardown cancel out and
 * what remains is N operations' worth of instructions.
 *
 * One operation is the allocator work of one loop iteration plus the loop itself (a xorshift
 * step, a slot index, a size): the same harness runs under every allocator, so the ratios
 * compare the allocators, and the absolute figures include a few instructions of harness. */
#ifndef BENCH_ICOUNT_H
#define BENCH_ICOUNT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ICOUNT_SLOTS 1024 /* a power of two: the slot is a mask of the random word */

/* xorshift64 (Marsaglia 2003): a few instructions, the same sequence in every run. */
static inline uint64_t icount_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* A size in 16..527 from the high bits of r (512 sizes: a mask, no division). */
static inline size_t icount_small(uint64_t r)
{
    return 16 + (size_t)((r >> 40) & 511);
}

/* Keeps a pointer observable, so that no allocation is optimised away. */
static inline void icount_keep(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

struct icount_op {
    const char *name;
    const char *what;
    /* Runs the operation n times; returns nonzero on a failure (a NULL where none is expected)
     * or when the entry point is missing from this process (127). */
    int (*run)(uint64_t n);
};

static inline int icount_main(int argc, char **argv, const struct icount_op *ops, size_t count)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < count; i++)
            printf("%s\t%s\n", ops[i].name, ops[i].what);
        return 0;
    }
    char *end = NULL;
    unsigned long long n = argc == 3 ? strtoull(argv[2], &end, 10) : 0;
    if (argc != 3 || end == argv[2] || *end != '\0' || n == 0) {
        fprintf(stderr, "usage: %s OPERATION N | --list\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < count; i++)
        if (strcmp(argv[1], ops[i].name) == 0) return ops[i].run((uint64_t)n);
    fprintf(stderr, "%s: unknown operation '%s' (--list lists them)\n", argv[0], argv[1]);
    return 2;
}

#endif
