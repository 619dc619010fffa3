/* Allocation in pthread key destructors, after memlimits has retired the thread and after
 * jemalloc has torn down its own per-thread state (both keys are created before the program's,
 * so their destructors run first in each round).
 *
 * usage: robust_tls_dtor rounds
 *   Threads (and finally the main thread, through pthread_exit) hold values in 40 keys (so that
 *   glibc allocates second-level key blocks); each destructor checks and frees its value,
 *   allocates (malloc, calloc, realloc, asprintf, fopen) and sets a new value for the next round,
 *   for all PTHREAD_DESTRUCTOR_ITERATIONS rounds. An atexit handler, which runs after the main
 *   thread's destructors, allocates too and checks that every destructor ran every round.
 * usage: robust_tls_dtor accounting
 *   Threads each hold a 256 KiB block in a key whose destructor frees it, and do nothing after.
 *   The live heap must come back to its baseline within 1 MiB (the bound of robust_threads)
 *   once the threads are joined, where 100 leaked frees would leave 25 MiB.
 * Exits nonzero on failure, with a diagnostic on stderr. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEYS 40
#define ROUNDS PTHREAD_DESTRUCTOR_ITERATIONS
#define THREADS 200
#define WAVE 50
#define DRIFT_BOUND ((int64_t)1 << 20)
#define BLOCK (256 * 1024)

typedef uint64_t (*u64_fn)(void);

static pthread_key_t keys[KEYS];
static unsigned long calls[ROUNDS];
static int failures;
static int main_exited;

struct value {
    int key;
    int round;
    size_t size;
    char *text;
};

static void fail(const char *what)
{
    fprintf(stderr, "robust_tls_dtor: %s\n", what);
    __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
}

static struct value *new_value(int key, int round)
{
    size_t size = sizeof(struct value) + (size_t)(key * 97 + round * 1000);
    struct value *v = round % 2 ? calloc(1, size) : malloc(size);
    if (v == NULL) return NULL;
    v->key = key;
    v->round = round;
    v->size = size;
    if (asprintf(&v->text, "key %d round %d", key, round) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

static void destructor(void *arg)
{
    struct value *v = arg;
    char expect[64];
    snprintf(expect, sizeof expect, "key %d round %d", v->key, v->round);
    if (v->round < 0 || v->round >= ROUNDS || strcmp(v->text, expect) != 0) {
        fail("a destructor got a corrupted value");
        return;
    }
    __atomic_add_fetch(&calls[v->round], 1, __ATOMIC_RELAXED);
    /* Allocate, grow, use stdio, and free, after the thread's teardown began. */
    char *scratch = malloc(100);
    char *grown = scratch ? realloc(scratch, 100000) : NULL;
    if (grown == NULL) {
        fail("allocation in a destructor failed");
        free(scratch);
    } else {
        memset(grown, 0x5a, 100000);
        free(grown);
    }
    if (v->key == 0) {
        FILE *f = fopen("/dev/null", "w");
        if (f == NULL || fprintf(f, "%s\n", v->text) < 0 || fclose(f) != 0)
            fail("stdio in a destructor failed");
    }
    int key = v->key, round = v->round;
    free(v->text);
    free(v);
    if (round + 1 < ROUNDS) {
        struct value *next = new_value(key, round + 1);
        if (next == NULL)
            fail("allocation of the next round's value failed");
        else
            pthread_setspecific(keys[key], next);
    }
}

static void set_all(void)
{
    for (int k = 0; k < KEYS; k++) {
        struct value *v = new_value(k, 0);
        if (v == NULL || pthread_setspecific(keys[k], v) != 0) fail("setting a key failed");
    }
}

static void *rounds_thread(void *arg)
{
    (void)arg;
    set_all();
    return NULL;
}

static void check_at_exit(void)
{
    /* After the main thread's destructors: allocation still works, and every round ran. */
    char *p = malloc(4096);
    if (p == NULL) fail("malloc in an atexit handler failed");
    free(p);
    unsigned long expect = (unsigned long)(THREADS + main_exited) * KEYS;
    for (int r = 0; r < ROUNDS; r++) {
        if (calls[r] != expect) {
            fprintf(stderr, "robust_tls_dtor: round %d: %lu destructor calls, expected %lu\n", r,
                    calls[r], expect);
            failures++;
        }
    }
    if (failures != 0) _exit(1);
    fprintf(stderr, "robust_tls_dtor: %d threads x %d keys x %d rounds of destructors\n",
            THREADS + main_exited, KEYS, ROUNDS);
}

static int run_rounds(void)
{
    for (int k = 0; k < KEYS; k++)
        if (pthread_key_create(&keys[k], destructor) != 0) return 3;
    atexit(check_at_exit);
    for (int done = 0; done < THREADS; done += WAVE) {
        pthread_t tid[WAVE];
        for (int i = 0; i < WAVE; i++)
            if (pthread_create(&tid[i], NULL, rounds_thread, NULL) != 0) return 3;
        for (int i = 0; i < WAVE; i++)
            pthread_join(tid[i], NULL);
    }
    /* The main thread's own destructors run when it exits through pthread_exit; the process
     * then exits with status 0 and runs check_at_exit. */
    main_exited = 1;
    set_all();
    pthread_exit(NULL);
}

static pthread_key_t block_key;

static void free_block(void *p)
{
    free(p);
}

static void *accounting_thread(void *arg)
{
    (void)arg;
    char *block = malloc(BLOCK);
    if (block == NULL) {
        fail("malloc failed");
        return NULL;
    }
    memset(block, 1, BLOCK);
    pthread_setspecific(block_key, block);
    return NULL;
}

static int run_accounting(void)
{
    u64_fn heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    if (heap_live == NULL) {
        fprintf(stderr, "robust_tls_dtor: not running under libmemlimits.so\n");
        return 2;
    }
    if (pthread_key_create(&block_key, free_block) != 0) return 3;
    pthread_t tid[WAVE];
    /* Warm-up wave, then the baseline. */
    for (int i = 0; i < WAVE; i++)
        if (pthread_create(&tid[i], NULL, accounting_thread, NULL) != 0) return 3;
    for (int i = 0; i < WAVE; i++)
        pthread_join(tid[i], NULL);
    uint64_t baseline = heap_live();
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < WAVE; i++)
            if (pthread_create(&tid[i], NULL, accounting_thread, NULL) != 0) return 3;
        for (int i = 0; i < WAVE; i++)
            pthread_join(tid[i], NULL);
    }
    uint64_t after = heap_live();
    int64_t drift = (int64_t)(after - baseline);
    printf("threads=%d block=%d baseline=%" PRIu64 " after=%" PRIu64 " drift=%" PRId64 "\n",
           2 * WAVE, BLOCK, baseline, after, drift);
    if (failures != 0) return 1;
    if (drift > DRIFT_BOUND || drift < -DRIFT_BOUND) {
        fprintf(stderr,
                "robust_tls_dtor: live heap drifted by %" PRId64 " bytes after %d threads freed a "
                "%d-byte block each in a key destructor (bound %" PRId64 ")\n",
                drift, 2 * WAVE, BLOCK, DRIFT_BOUND);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "rounds") == 0) return run_rounds();
    if (argc == 2 && strcmp(argv[1], "accounting") == 0) return run_accounting();
    fprintf(stderr, "usage: robust_tls_dtor rounds|accounting\n");
    return 2;
}
