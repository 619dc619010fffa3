/* dlopen/dlclose, in a loop, of a library that allocates in its constructor and in a function
 * and frees in its destructor (robust_dl_lib.c). Checks that the library's malloc is memlimits'
 * own, that its allocations are counted exactly (ml_thread_allocated), that they appear in the
 * live heap, and that after dlclose the live heap is back where it was.
 *
 * The bound on the drift over all cycles, 256 KiB: glibc keeps a few small structures across
 * dlopen cycles (scope arrays, the dlerror buffer), all made in the first, warm-up cycle; each
 * cycle frees a 1 MiB constructor block and about 2.5 MiB of nodes, so leaking the accounting of
 * either in even one cycle exceeds it.
 *
 * usage: robust_dlopen LIBRARY [CYCLES]; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRIFT_BOUND ((int64_t)256 << 10)
#define NODES 1000

typedef uint64_t (*u64_fn)(void);

static u64_fn heap_live, thread_allocated;
static const char *library;

static void *need(void *handle, const char *name)
{
    void *f = dlsym(handle, name);
    if (f == NULL) {
        fprintf(stderr, "robust_dlopen: %s not found: %s\n", name, dlerror());
        exit(2);
    }
    return f;
}

/* Loads the library and checks its constructor; returns the handle, or NULL on failure. */
static void *load(void)
{
    void *h = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "robust_dlopen: dlopen: %s\n", dlerror());
        return NULL;
    }
    size_t (*ctor_block)(uint64_t *) = (size_t(*)(uint64_t *))need(h, "robust_dl_ctor_block");
    uint64_t counted = 0;
    size_t size = ctor_block(&counted);
    if (size == 0 || counted != size) {
        fprintf(stderr, "robust_dlopen: constructor block: size %zu, counted %" PRIu64 " bytes\n",
                size, counted);
        return NULL;
    }
    return h;
}

static void *load_in_thread(void *arg)
{
    (void)arg;
    return load();
}

static int cycle(int n)
{
    void *h;
    if (n % 2 == 0) {
        h = load();
    } else { /* loaded by another thread: the constructor block is freed by this one */
        pthread_t t;
        if (pthread_create(&t, NULL, load_in_thread, NULL) != 0) return 1;
        pthread_join(t, &h);
    }
    if (h == NULL) return 1;
    void *(*malloc_address)(void) = (void *(*)(void))need(h, "robust_dl_malloc_address");
    uint64_t (*work)(int) = (uint64_t(*)(int))need(h, "robust_dl_work");
    void (*release)(void) = (void (*)(void))need(h, "robust_dl_release");

    Dl_info info;
    if (malloc_address() != dlsym(RTLD_DEFAULT, "malloc") || !dladdr(malloc_address(), &info) ||
        strstr(info.dli_fname, "libmemlimits") == NULL) {
        fprintf(stderr, "robust_dlopen: the library's malloc is not memlimits'\n");
        return 1;
    }
    uint64_t live0 = heap_live();
    uint64_t before = thread_allocated();
    uint64_t requested = work(NODES);
    uint64_t counted = thread_allocated() - before;
    uint64_t live1 = heap_live();
    if (requested == 0 || counted != requested) {
        fprintf(stderr,
                "robust_dlopen: the library requested %" PRIu64 " bytes, counted %" PRIu64 "\n",
                requested, counted);
        return 1;
    }
    if (live1 < live0 + requested) {
        fprintf(stderr,
                "robust_dlopen: live heap grew by %" PRId64 " bytes for %" PRIu64 " requested\n",
                (int64_t)(live1 - live0), requested);
        return 1;
    }
    release();
    if (dlclose(h) != 0) {
        fprintf(stderr, "robust_dlopen: dlclose: %s\n", dlerror());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: robust_dlopen LIBRARY [CYCLES]\n");
        return 2;
    }
    library = argv[1];
    int cycles = argc > 2 ? atoi(argv[2]) : 40;
    heap_live = (u64_fn)need(RTLD_DEFAULT, "ml_heap_live");
    thread_allocated = (u64_fn)need(RTLD_DEFAULT, "ml_thread_allocated");

    if (cycle(0) != 0) return 1; /* warm-up */
    uint64_t baseline = heap_live();
    for (int n = 1; n <= cycles; n++) {
        if (cycle(n) != 0) {
            fprintf(stderr, "robust_dlopen: cycle %d failed\n", n);
            return 1;
        }
    }
    uint64_t after = heap_live();
    int64_t drift = (int64_t)(after - baseline);
    printf("cycles=%d baseline=%" PRIu64 " after=%" PRIu64 " drift=%" PRId64 "\n", cycles, baseline,
           after, drift);
    if (drift > DRIFT_BOUND || drift < -DRIFT_BOUND) {
        fprintf(stderr, "robust_dlopen: live heap drifted by %" PRId64 " bytes over %d cycles\n",
                drift, cycles);
        return 1;
    }
    return 0;
}
