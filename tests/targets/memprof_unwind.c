/* Callstacks of the profiler (lib/host_unwind.c), run by tests/test_unwind.c under each
 * MEMLIMITS_UNWIND mode. Built twice: memprof_unwind_fp with frame pointers, memprof_unwind_nofp
 * without. `memprof_unwind CASE` takes one callstack (every allocation sampled, depth 64) at a
 * known site and prints its frames, one "object+0xoffset" line each (ASLR-independent, so that
 * runs under different modes compare), then "frames N"; `chain` also checks, by the symbols of
 * the first four frames, that the stack is c, b, a, main, and prints "ok chain" or what failed.
 *   chain:  main -> a -> b -> c -> malloc
 *   thread: the same chain on a second thread (its stack is a mapping of its own)
 *   qsort:  main -> qsort (glibc, no frame pointers) -> ... -> compare -> malloc
 *   plugin: main -> plugin_outer -> plugin_inner -> malloc, in a library (built with frame
 *           pointers) dlopen'ed after the profile started.
 *   churn:  4 threads take callstacks of the chain on a loop (every allocation sampled) while
 *           main dlopens and dlcloses the library 200 times; prints "ok churn" when every
 *           callstack of the chain started with c, b, a (never a wrong frame while the tables
 *           are read again).
 *   entries: main -> entry_site -> calloc, realloc, posix_memalign and C++'s operator new
 *           (plain, nothrow, aligned); prints "ok entries" when every callstack starts with
 *           entry_site, main. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <memlimits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *frames[64];
static unsigned frames_len;
static int armed;

static void *on_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    if (!armed) return NULL;
    armed = 0;
    frames_len = a->callstack_len;
    memcpy(frames, a->callstack, a->callstack_len * sizeof *frames);
    return NULL;
}

static void *volatile sink;
void *a(size_t n);
void *b(size_t n);
void *c(size_t n);

__attribute__((noinline)) void *c(size_t n)
{
    armed = 1;
    void *p = malloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) void *b(size_t n)
{
    void *p = c(n + 1);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) void *a(size_t n)
{
    void *p = b(n + 1);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void *thread_main(void *arg)
{
    (void)arg;
    sink = a(100);
    free(sink);
    return NULL;
}

static int churn_failures, churn_done;
static long churn_stacks;

static void *chain_check(const ml_allocation *al, void *ctx)
{
    (void)ctx;
    static const char *const want[] = {"c", "b", "a"};
    if (al->size != 4321) return NULL; /* c's allocation only */
    __atomic_add_fetch(&churn_stacks, 1, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < 3 && i < al->callstack_len; i++) {
        Dl_info info;
        const char *got = dladdr(al->callstack[i], &info) && info.dli_sname ? info.dli_sname : "?";
        if (strcmp(got, want[i]) != 0) __atomic_add_fetch(&churn_failures, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *churn_thread(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&churn_done, __ATOMIC_ACQUIRE))
        free(a(4319));
    return NULL;
}

static int churn(void)
{
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&threads[i], NULL, churn_thread, NULL) != 0) return 104;
    for (int i = 0; i < 200; i++) {
        void *lib = dlopen(PLUGIN_PATH, RTLD_NOW);
        if (lib == NULL) return 102;
        int local = 0;
        void *(*outer)(size_t, int *) = (void *(*)(size_t, int *))dlsym(lib, "plugin_outer");
        free(outer(100, &local));
        dlclose(lib);
    }
    __atomic_store_n(&churn_done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    printf("stacks %ld, wrong frames %d\n", churn_stacks, churn_failures);
    if (churn_failures == 0 && churn_stacks > 0) printf("ok churn\n");
    return 0;
}

static int compare(const void *x, const void *y)
{
    if (!frames_len) free(c(100)); /* the first comparison only */
    return *(const int *)x - *(const int *)y;
}

void *_Znwm(size_t size);                                /* operator new */
void *_ZnwmRKSt9nothrow_t(size_t size, const void *tag); /* operator new(nothrow) */
void *_ZnwmSt11align_val_t(size_t size, size_t align);   /* operator new(align_val_t) */
void *entry_site(int kind);

__attribute__((noinline)) void *entry_site(int kind)
{
    void *p = NULL, *q;
    armed = 1;
    switch (kind) {
    case 0:
        p = calloc(10, 10);
        break;
    case 1:
        armed = 0;
        q = malloc(16);
        armed = 1;
        p = realloc(q, 4000);
        break;
    case 2:
        if (posix_memalign(&p, 64, 100) != 0) p = NULL;
        break;
    case 3:
        p = _Znwm(100);
        break;
    case 4:
        p = _ZnwmRKSt9nothrow_t(100, &kind);
        break;
    case 5:
        p = _ZnwmSt11align_val_t(100, 64);
        break;
    }
    __asm__ volatile("" ::: "memory");
    return p;
}

/* aligned_alloc, memalign, valloc and jemalloc's mallocx are left out: their slow halves
 * (lib/alloc_ext.c) do not hand sampled blocks to the profiler. */
static const char *const entry_names[] = {"calloc",       "realloc",      "posix_memalign",
                                          "operator new", "new(nothrow)", "new(align_val_t)"};

static const char *symbol(void *pc);

static int check_entries(void)
{
    int failures = 0;
    for (int k = 0; k < 6; k++) {
        frames_len = 0;
        void *p = entry_site(k);
        if (p == NULL) {
            printf("%s: failed\n", entry_names[k]);
            failures++;
            continue;
        }
        free(p);
        const char *f0 = frames_len > 0 ? symbol(frames[0]) : "(none)";
        const char *f1 = frames_len > 1 ? symbol(frames[1]) : "(none)";
        if (strcmp(f0, "entry_site") != 0 || strcmp(f1, "main") != 0) {
            printf("%s: callstack of %u frames starts %s, %s\n", entry_names[k], frames_len, f0,
                   f1);
            failures++;
        }
    }
    return failures;
}

static const char *frame_name(void *pc, char *buf, size_t cap)
{
    Dl_info info;
    if (dladdr(pc, &info) == 0 || info.dli_fname == NULL) {
        snprintf(buf, cap, "?%p", pc);
        return buf;
    }
    const char *base = strrchr(info.dli_fname, '/');
    snprintf(buf, cap, "%s+0x%lx", base ? base + 1 : info.dli_fname,
             (unsigned long)((uintptr_t)pc - (uintptr_t)info.dli_fbase));
    return buf;
}

static const char *symbol(void *pc)
{
    Dl_info info;
    return dladdr(pc, &info) != 0 && info.dli_sname != NULL ? info.dli_sname : "?";
}

int main(int argc, char **argv)
{
    if (argc != 2) return 100;
    if (strcmp(argv[1], "churn") == 0) {
        ml_tracker ct = {chain_check, NULL, NULL, NULL};
        ml_profile *cp = ml_memprof_start(1, 64, &ct);
        if (cp == NULL) return 101;
        int rc = churn();
        ml_memprof_discard(cp);
        return rc;
    }
    ml_tracker t = {on_alloc, NULL, NULL, NULL};
    ml_profile *p = ml_memprof_start(1, 64, &t);
    if (p == NULL) return 101;
    if (strcmp(argv[1], "chain") == 0) {
        sink = a(100);
        free(sink);
    } else if (strcmp(argv[1], "thread") == 0) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, thread_main, NULL) != 0) return 104;
        pthread_join(thread, NULL);
    } else if (strcmp(argv[1], "qsort") == 0) {
        int v[64];
        for (int i = 0; i < 64; i++)
            v[i] = (i * 37) % 64;
        qsort(v, 64, sizeof v[0], compare);
    } else if (strcmp(argv[1], "plugin") == 0) {
        void *lib = dlopen(PLUGIN_PATH, RTLD_NOW);
        if (lib == NULL) return 102;
        void *(*outer)(size_t, int *) = (void *(*)(size_t, int *))dlsym(lib, "plugin_outer");
        if (outer == NULL) return 103;
        free(outer(100, &armed));
    } else if (strcmp(argv[1], "entries") == 0) {
        int failures = check_entries();
        ml_memprof_discard(p);
        if (failures == 0) printf("ok entries\n");
        return 0;
    } else {
        return 100;
    }
    ml_memprof_discard(p);
    char buf[512];
    for (unsigned i = 0; i < frames_len; i++)
        printf("%s\n", frame_name(frames[i], buf, sizeof buf));
    printf("frames %u\n", frames_len);
    if (strcmp(argv[1], "chain") == 0) {
        int failures = 0;
        static const char *const want[] = {"c", "b", "a", "main"};
        for (unsigned i = 0; i < 4; i++) {
            const char *got = i < frames_len ? symbol(frames[i]) : "(none)";
            if (strcmp(got, want[i]) != 0) {
                printf("frame %u is %s, not %s\n", i, got, want[i]);
                failures++;
            }
        }
        if (failures == 0) printf("ok chain\n");
    }
    return 0; /* the test reads "ok chain" */
}
