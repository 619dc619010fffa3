/* Target for tests/test_info.c: what mallinfo2 and mallinfo report around known allocations.
 * Prints "NAME VALUE" lines after the measurements (with say(), which never allocates), so that
 * printing cannot move the heap in between.
 *
 * usage: info_mallinfo MODE, MODE one of
 *   blocks   one thread allocates 32 MiB in blocks of 1 byte to 32 KiB (small and large size
 *            classes), reads mallinfo2, frees them all, reads it again;
 *   threads  four threads each allocate 8 MiB, then wait (alive, not allocating) while the main
 *            thread reads mallinfo2; then each frees another's blocks, and it reads it again;
 *   clamp    reads mallinfo and mallinfo2 at a small heap, then with a 3 GiB block live (its
 *            pages are never touched, so it costs address space, not memory).
 * The "usable" figure is the sum of malloc_usable_size over the live blocks: the bytes they add
 * to the live heap. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "say.h"

#define MIB ((size_t)1 << 20)
#define MAX_BLOCKS 8192

/* Every block passes through here, so that no malloc/free pair can be elided. */
static void *volatile sink;

/* Block sizes from 1 to 32 KiB, from a fixed linear congruential sequence. */
static size_t next_size(uint64_t *state)
{
    *state = *state * 6364136223846793005u + 1442695040888963407u;
    return 1 + (size_t)(*state >> 33) % (32 << 10);
}

/* Allocates blocks until `target` bytes are requested; returns their count, adds their usable
 * sizes to *usable. Exits 3 if malloc fails. */
static int fill(void **blocks, size_t target, uint64_t seed, uint64_t *usable)
{
    size_t requested = 0;
    int n = 0;
    while (requested < target && n < MAX_BLOCKS) {
        size_t size = next_size(&seed);
        blocks[n] = malloc(size);
        if (blocks[n] == NULL) exit(3);
        sink = blocks[n];
        *usable += malloc_usable_size(blocks[n]);
        requested += size;
        n++;
    }
    return n;
}

static void print_mallinfo2(const char *when, struct mallinfo2 m)
{
    say("%s_arena %zu\n%s_ordblks %zu\n%s_smblks %zu\n%s_hblks %zu\n%s_hblkhd %zu\n"
        "%s_usmblks %zu\n%s_fsmblks %zu\n%s_uordblks %zu\n%s_fordblks %zu\n%s_keepcost %zu\n",
        when, m.arena, when, m.ordblks, when, m.smblks, when, m.hblks, when, m.hblkhd, when,
        m.usmblks, when, m.fsmblks, when, m.uordblks, when, m.fordblks, when, m.keepcost);
}

static void *blocks[MAX_BLOCKS];

static int blocks_mode(void)
{
    uint64_t usable = 0;
    struct mallinfo2 base = mallinfo2();
    int n = fill(blocks, 32 * MIB, 42, &usable);
    struct mallinfo2 full = mallinfo2();
    for (int i = 0; i < n; i++)
        free(blocks[i]);
    struct mallinfo2 freed = mallinfo2();
    say("blocks %d\nusable %llu\n", n, (unsigned long long)usable);
    print_mallinfo2("base", base);
    print_mallinfo2("full", full);
    print_mallinfo2("freed", freed);
    return 0;
}

#define THREADS 4
#define PER_THREAD (MAX_BLOCKS / THREADS)

static void *thread_blocks[THREADS][PER_THREAD];
static int thread_count[THREADS];
static uint64_t thread_usable[THREADS];
static pthread_barrier_t started, go, allocated, measured, freed;

static void *worker(void *arg)
{
    int i = (int)(intptr_t)arg;
    pthread_barrier_wait(&started);
    pthread_barrier_wait(&go);
    thread_count[i] = fill(thread_blocks[i], 8 * MIB, 100 + (uint64_t)i, &thread_usable[i]);
    pthread_barrier_wait(&allocated);
    pthread_barrier_wait(&measured);
    /* Cross-thread frees: each thread frees the blocks of the next. */
    int j = (i + 1) % THREADS;
    for (int k = 0; k < thread_count[j]; k++)
        free(thread_blocks[j][k]);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&measured);
    return NULL;
}

static int threads_mode(void)
{
    pthread_t t[THREADS];
    pthread_barrier_init(&started, NULL, THREADS + 1);
    pthread_barrier_init(&go, NULL, THREADS + 1);
    pthread_barrier_init(&allocated, NULL, THREADS + 1);
    pthread_barrier_init(&measured, NULL, THREADS + 1);
    pthread_barrier_init(&freed, NULL, THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0) return 3;
    pthread_barrier_wait(&started); /* every thread exists before the baseline */
    struct mallinfo2 base = mallinfo2();
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&allocated);
    struct mallinfo2 full = mallinfo2(); /* the threads are parked, not allocating */
    pthread_barrier_wait(&measured);
    pthread_barrier_wait(&freed);
    struct mallinfo2 after = mallinfo2(); /* still parked, still alive */
    pthread_barrier_wait(&measured);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    uint64_t usable = 0;
    int n = 0;
    for (int i = 0; i < THREADS; i++) {
        usable += thread_usable[i];
        n += thread_count[i];
    }
    say("blocks %d\nusable %llu\n", n, (unsigned long long)usable);
    print_mallinfo2("base", base);
    print_mallinfo2("full", full);
    print_mallinfo2("freed", after);
    return 0;
}

/* mallinfo is deprecated in glibc's header; calling it is the point here. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static void print_mallinfo(const char *when, struct mallinfo m)
{
    say("%s_int_arena %d\n%s_int_ordblks %d\n%s_int_smblks %d\n%s_int_hblks %d\n"
        "%s_int_hblkhd %d\n%s_int_usmblks %d\n%s_int_fsmblks %d\n%s_int_uordblks %d\n"
        "%s_int_fordblks %d\n%s_int_keepcost %d\n",
        when, m.arena, when, m.ordblks, when, m.smblks, when, m.hblks, when, m.hblkhd, when,
        m.usmblks, when, m.fsmblks, when, m.uordblks, when, m.fordblks, when, m.keepcost);
}

static int clamp_mode(void)
{
    void *small = malloc(MIB);
    sink = small;
    /* Nothing allocates between the two reads, so both see the same heap. */
    struct mallinfo small_int = mallinfo();
    struct mallinfo2 small_wide = mallinfo2();
    void *huge = malloc((size_t)3 << 30);
    if (huge == NULL) return 3;
    sink = huge;
    struct mallinfo huge_int = mallinfo();
    struct mallinfo2 huge_wide = mallinfo2();
    free(huge);
    free(small);
    print_mallinfo("small", small_int);
    print_mallinfo2("small", small_wide);
    print_mallinfo("huge", huge_int);
    print_mallinfo2("huge", huge_wide);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "blocks") == 0) return blocks_mode();
    if (strcmp(mode, "threads") == 0) return threads_mode();
    if (strcmp(mode, "clamp") == 0) return clamp_mode();
    say("usage: info_mallinfo blocks|threads|clamp\n");
    return 2;
}
