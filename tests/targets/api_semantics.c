/* Target for tests/test_api.c: checks glibc 2.36's allocation API semantics from inside a process
 * that runs with libmemlimits.so preloaded. `api_semantics NAME...` runs the named checks (all of
 * them without arguments) and prints "ok NAME" or "FAIL NAME: why" for each; the exit status is
 * the number of failures. Output goes through write(2) from a stack buffer so that reporting
 * never allocates between the measurements of ml_thread_allocated and ml_heap_live. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "say.h"

/* The client API, the glibc-internal aliases and the newer free functions are looked up at run
 * time: this program is not linked with memlimits, and glibc 2.36 does not let a program link
 * against cfree, free_sized or __posix_memalign. */
static uint64_t (*thread_allocated)(void);
static uint64_t (*heap_live)(void);
static int (*active)(void);

#define MIB ((size_t)1 << 20)
#define BOUND ((uint64_t)64 << 10) /* ml_heap_live's per-thread bound (memlimits.h) */
/* Sizes no allocator can serve: above PTRDIFF_MAX (glibc refuses them outright), and below it
 * but far beyond any address space (the allocator must find out and fail all the same). */
#define HUGE ((size_t)PTRDIFF_MAX + 1)
#define UNSERVABLE ((size_t)1 << 62)

/* Some calls below ask for impossible sizes or reuse a block after a realloc that failed, on
 * purpose: they go through volatile pointers so that the compiler does not reason about them. */
static void *(*volatile malloc_)(size_t) = malloc;
static void *(*volatile calloc_)(size_t, size_t) = calloc;
static void *(*volatile realloc_)(void *, size_t) = realloc;
static void *(*volatile reallocarray_)(void *, size_t, size_t) = reallocarray;
static void *(*volatile memalign_)(size_t, size_t) = memalign;
static void *(*volatile aligned_alloc_)(size_t, size_t) = aligned_alloc;
static void *(*volatile valloc_)(size_t) = valloc;
static void *(*volatile pvalloc_)(size_t) = pvalloc;
static int (*volatile posix_memalign_)(void **, size_t, size_t) = posix_memalign;

static const char *current;
static int failed;

/* Records a failed expectation of the current check; returns `ok` so that checks can chain. */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            say("FAIL %s: line %d: %s: ", current, __LINE__, #cond);                               \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
            failed = 1;                                                                            \
        }                                                                                          \
    } while (0)

/* Expects `call` to return NULL with errno `err`. */
#define EXPECT_NULL_ERRNO(call, err)                                                               \
    do {                                                                                           \
        errno = 0;                                                                                 \
        void *r_ = (call);                                                                         \
        int e_ = errno;                                                                            \
        EXPECT(r_ == NULL && e_ == (err), "%s returned %p, errno %d (%s)", #call, r_, e_,          \
               strerror(e_));                                                                      \
        if (r_ != NULL) free(r_);                                                                  \
    } while (0)

static void *sym(const char *name)
{
    void *p = dlsym(RTLD_DEFAULT, name);
    if (p == NULL) {
        say("FAIL %s: dlsym(%s): not found\n", current, name);
        failed = 1;
    }
    return p;
}

static int aligned(const void *p, size_t align)
{
    return p != NULL && (uintptr_t)p % align == 0;
}

static void check_active(void)
{
    EXPECT(active() == 1, "ml_active() = %d", active());
}

static void check_malloc_zero(void)
{
    void *p = malloc(0), *q = malloc(0);
    EXPECT(p != NULL && q != NULL, "malloc(0) = %p, %p", p, q);
    EXPECT(p != q, "two malloc(0) blocks share the address %p", p);
    free(p);
    free(q);
}

static void check_calloc_overflow(void)
{
    EXPECT_NULL_ERRNO(calloc_(SIZE_MAX / 2 + 1, 2), ENOMEM);
    EXPECT_NULL_ERRNO(calloc_(SIZE_MAX, SIZE_MAX), ENOMEM);
    EXPECT_NULL_ERRNO(calloc_((size_t)1 << 32, (size_t)1 << 32), ENOMEM);
    unsigned char *p = calloc(100, 10);
    EXPECT(p != NULL, "calloc(100, 10) failed");
    for (size_t i = 0; p != NULL && i < 1000; i++)
        EXPECT(p[i] == 0, "byte %zu not zero", i);
    free(p);
}

static void check_realloc_null_allocates(void)
{
    char *p = realloc(NULL, 100);
    EXPECT(p != NULL && malloc_usable_size(p) >= 100, "realloc(NULL, 100) = %p", (void *)p);
    if (p != NULL) memset(p, 'x', 100);
    free(p);
}

static void check_realloc_zero_frees(void)
{
    void *p = malloc(MIB);
    uint64_t before = heap_live();
    errno = 0;
    void *r = realloc(p, 0);
    uint64_t after = heap_live();
    EXPECT(r == NULL, "realloc(p, 0) = %p", r);
    EXPECT(before >= after + MIB - BOUND, "live heap %llu -> %llu: the block was not freed",
           (unsigned long long)before, (unsigned long long)after);
}

static void check_realloc_huge_keeps_block(void)
{
    char *p = malloc(100);
    memset(p, 'k', 100);
    EXPECT_NULL_ERRNO(realloc_(p, SIZE_MAX), ENOMEM);
    EXPECT_NULL_ERRNO(realloc_(p, SIZE_MAX - 4096), ENOMEM);
    EXPECT_NULL_ERRNO(realloc_(p, HUGE), ENOMEM);
    for (int i = 0; i < 100; i++)
        EXPECT(p[i] == 'k', "byte %d of the old block changed", i);
    char *q = realloc_(p, 1000); /* still a valid block */
    EXPECT(q != NULL && q[99] == 'k', "realloc after a failed realloc");
    free(q);
}

static void check_reallocarray(void)
{
    EXPECT_NULL_ERRNO(reallocarray_(NULL, SIZE_MAX / 2, 4), ENOMEM);
    EXPECT_NULL_ERRNO(reallocarray_(NULL, HUGE, 1), ENOMEM);
    char *p = reallocarray(NULL, 10, 10);
    EXPECT(p != NULL && malloc_usable_size(p) >= 100, "reallocarray(NULL, 10, 10) = %p", (void *)p);
    memset(p, 'r', 100);
    EXPECT_NULL_ERRNO(reallocarray_(p, (size_t)1 << 33, (size_t)1 << 33), ENOMEM);
    EXPECT_NULL_ERRNO(reallocarray_(p, HUGE / 8, 8), ENOMEM);
    EXPECT(p[0] == 'r' && p[99] == 'r', "the block changed after a failed reallocarray");
    char *q = reallocarray_(p, 100, 100);
    EXPECT(q != NULL && q[99] == 'r', "reallocarray(p, 100, 100) = %p", (void *)q);
    free(q);
}

static void check_aligned_huge_enomem(void)
{
    long page = sysconf(_SC_PAGESIZE);
    EXPECT_NULL_ERRNO(memalign_(64, SIZE_MAX - 4096), ENOMEM);
    EXPECT_NULL_ERRNO(memalign_(4096, HUGE), ENOMEM);
    EXPECT_NULL_ERRNO(memalign_(8, HUGE), ENOMEM);
    EXPECT_NULL_ERRNO(valloc_(SIZE_MAX - 2 * (size_t)page), ENOMEM);
    EXPECT_NULL_ERRNO(valloc_(HUGE), ENOMEM);
    EXPECT_NULL_ERRNO(pvalloc_(SIZE_MAX - 10), ENOMEM);
    EXPECT_NULL_ERRNO(pvalloc_(HUGE), ENOMEM);
    EXPECT_NULL_ERRNO(aligned_alloc_(64, SIZE_MAX - 4096), ENOMEM);
    EXPECT_NULL_ERRNO(aligned_alloc_(64, HUGE), ENOMEM);
    EXPECT_NULL_ERRNO(malloc_(SIZE_MAX), ENOMEM);
    EXPECT_NULL_ERRNO(malloc_(HUGE), ENOMEM);
}

static void check_unservable_sizes(void)
{
    static const size_t sizes[] = {UNSERVABLE, PTRDIFF_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        char *p = malloc(100);
        memset(p, 'u', 100);
        EXPECT_NULL_ERRNO(malloc_(n), ENOMEM);
        EXPECT_NULL_ERRNO(calloc_(n / 4, 4), ENOMEM);
        EXPECT_NULL_ERRNO(realloc_(p, n), ENOMEM);
        EXPECT_NULL_ERRNO(reallocarray_(p, n / 2, 2), ENOMEM);
        EXPECT_NULL_ERRNO(memalign_(4096, n), ENOMEM);
        EXPECT_NULL_ERRNO(aligned_alloc_(64, n & ~(size_t)63), ENOMEM);
        EXPECT_NULL_ERRNO(valloc_(n), ENOMEM);
        EXPECT_NULL_ERRNO(pvalloc_(n), ENOMEM);
        void *out = (void *)0x5678;
        int rc = posix_memalign_(&out, 64, n);
        EXPECT(rc == ENOMEM && out == (void *)0x5678, "posix_memalign(64, %zu) = %d, %p", n, rc,
               out);
        EXPECT(p[0] == 'u' && p[99] == 'u', "the block changed after a failed realloc");
        free(p);
    }
}

static void check_memalign_bad_alignment(void)
{
    /* glibc: an alignment above SIZE_MAX / 2 + 1 is invalid. */
    EXPECT_NULL_ERRNO(memalign_(SIZE_MAX / 2 + 2, 16), EINVAL);
    EXPECT_NULL_ERRNO(memalign_(SIZE_MAX, 16), EINVAL);
}

static void check_posix_memalign_bad_alignment(void)
{
    static const size_t bad[] = {0, 1, 2, 3, 4, 24, 48, 100, SIZE_MAX / 2 + 2, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = (void *)0x1234;
        int rc = posix_memalign_(&out, bad[i], 64);
        EXPECT(rc == EINVAL, "posix_memalign(align %zu) returned %d", bad[i], rc);
        EXPECT(out == (void *)0x1234, "align %zu: out-pointer changed to %p", bad[i], out);
    }
    void *out = NULL;
    int rc = posix_memalign(&out, sizeof(void *), 64);
    EXPECT(rc == 0 && aligned(out, sizeof(void *)), "posix_memalign(8, 64) = %d, %p", rc, out);
    free(out);
}

static void check_posix_memalign_huge_leaves_pointer(void)
{
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 4096, HUGE};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        void *out = (void *)0x5678;
        int rc = posix_memalign_(&out, 64, huge[i]);
        EXPECT(rc == ENOMEM, "posix_memalign(64, %zu) returned %d", huge[i], rc);
        EXPECT(out == (void *)0x5678, "size %zu: out-pointer changed to %p", huge[i], out);
    }
}

static void check_alignment_honoured(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *a = memalign(4096, 100);
    EXPECT(aligned(a, 4096), "memalign(4096, 100) = %p", a);
    void *b = aligned_alloc(64, 100);
    EXPECT(aligned(b, 64), "aligned_alloc(64, 100) = %p", b);
    void *c = valloc(100);
    EXPECT(aligned(c, page), "valloc(100) = %p", c);
    void *d = pvalloc(100);
    EXPECT(aligned(d, page), "pvalloc(100) = %p", d);
    EXPECT(d != NULL && malloc_usable_size(d) >= page, "pvalloc(100): usable size %zu",
           d ? malloc_usable_size(d) : 0);
    void *e = pvalloc(0);
    EXPECT(aligned(e, page) && malloc_usable_size(e) >= page, "pvalloc(0) = %p", e);
    void *f = memalign(48, 10); /* glibc rounds an alignment up to a power of two */
    EXPECT(aligned(f, 64), "memalign(48, 10) = %p", f);
    void *g = NULL;
    int rc = posix_memalign(&g, 256, 10);
    EXPECT(rc == 0 && aligned(g, 256), "posix_memalign(256, 10) = %d, %p", rc, g);
    void *h = memalign((size_t)2 << 20, 10);
    EXPECT(aligned(h, (size_t)2 << 20), "memalign(2 MiB, 10) = %p", h);
    void *blocks[] = {a, b, c, d, e, f, g, h};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
        free(blocks[i]);
}

static void check_usable_size(void)
{
    EXPECT(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu",
           malloc_usable_size(NULL));
    void *p = malloc(100);
    EXPECT(malloc_usable_size(p) >= 100, "malloc_usable_size = %zu", malloc_usable_size(p));
    free(p);
}

static void check_free_null(void)
{
    errno = EDOM;
    free(NULL);
    EXPECT(errno == EDOM, "free(NULL) changed errno to %d", errno);
}

static void check_free_preserves_errno(void)
{
    /* Small, large and huge blocks, enough of them that jemalloc purges and unmaps memory. */
    static void *blocks[64];
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < 64; i++) {
            size_t size = i % 3 == 0 ? 24 : i % 3 == 1 ? (size_t)100 << 10 : (size_t)9 << 20;
            blocks[i] = malloc(size);
            if (blocks[i] != NULL) memset(blocks[i], 1, 64);
        }
        for (int i = 0; i < 64; i++) {
            errno = 12345;
            free(blocks[i]);
            EXPECT(errno == 12345, "round %d, block %d: free changed errno to %d", round, i, errno);
        }
    }
    errno = 54321;
    malloc_trim(0);
    void *p = malloc(8 << 20);
    errno = 54321;
    free(p);
    EXPECT(errno == 54321, "free after malloc_trim changed errno to %d", errno);
}

/* Expects that freeing a 1 MiB block through `release` takes it out of the live heap. */
static void expect_frees(const char *what, void (*release)(void *p, size_t size))
{
    void *p = malloc(MIB);
    memset(p, 1, 4096);
    uint64_t before = heap_live();
    release(p, MIB);
    uint64_t after = heap_live();
    EXPECT(before >= after + MIB - BOUND, "%s: live heap %llu -> %llu", what,
           (unsigned long long)before, (unsigned long long)after);
}

static void (*free_sized_fn)(void *, size_t);
static void (*free_aligned_sized_fn)(void *, size_t, size_t);
static void (*cfree_fn)(void *);
static void (*libc_free_fn)(void *);

static void via_free_sized(void *p, size_t size)
{
    free_sized_fn(p, size);
}

static void via_free_aligned_sized(void *p, size_t size)
{
    free_aligned_sized_fn(p, 16, size);
}

static void via_cfree(void *p, size_t size)
{
    cfree_fn(p);
}

static void via_libc_free(void *p, size_t size)
{
    libc_free_fn(p);
}

static void check_free_variants(void)
{
    free_sized_fn = (void (*)(void *, size_t))sym("free_sized");
    free_aligned_sized_fn = (void (*)(void *, size_t, size_t))sym("free_aligned_sized");
    cfree_fn = (void (*)(void *))sym("cfree");
    if (!free_sized_fn || !free_aligned_sized_fn || !cfree_fn) return;
    expect_frees("free_sized", via_free_sized);
    expect_frees("free_aligned_sized", via_free_aligned_sized);
    expect_frees("cfree", via_cfree);
    free_sized_fn(NULL, 0);
    cfree_fn(NULL);
}

/* Expects that `call` allocated exactly `bytes` more in ml_thread_allocated's count, with the
 * result in `out`. */
#define EXPECT_COUNTED(out, call, bytes)                                                           \
    do {                                                                                           \
        uint64_t t0_ = thread_allocated();                                                         \
        out = (call);                                                                              \
        uint64_t t1_ = thread_allocated();                                                         \
        EXPECT(out != NULL && t1_ - t0_ == (bytes), "%s = %p counted %llu bytes, expected %llu",   \
               #call, (void *)out, (unsigned long long)(t1_ - t0_), (unsigned long long)(bytes));  \
    } while (0)

static void check_libc_aliases(void)
{
    void *(*l_malloc)(size_t) = (void *(*)(size_t))sym("__libc_malloc");
    void *(*l_calloc)(size_t, size_t) = (void *(*)(size_t, size_t))sym("__libc_calloc");
    void *(*l_realloc)(void *, size_t) = (void *(*)(void *, size_t))sym("__libc_realloc");
    void *(*l_memalign)(size_t, size_t) = (void *(*)(size_t, size_t))sym("__libc_memalign");
    void *(*l_valloc)(size_t) = (void *(*)(size_t))sym("__libc_valloc");
    void *(*l_pvalloc)(size_t) = (void *(*)(size_t))sym("__libc_pvalloc");
    int (*l_posix_memalign)(void **, size_t, size_t) =
        (int (*)(void **, size_t, size_t))sym("__posix_memalign");
    libc_free_fn = (void (*)(void *))sym("__libc_free");
    if (!l_malloc || !l_calloc || !l_realloc || !l_memalign || !l_valloc || !l_pvalloc ||
        !l_posix_memalign || !libc_free_fn)
        return;
    /* The aliases are the library's own entry points, not glibc's. */
    EXPECT((void *)l_malloc == sym("malloc"), "__libc_malloc is not memlimits' malloc");
    EXPECT((void *)libc_free_fn == sym("free"), "__libc_free is not memlimits' free");
    void *p;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    EXPECT_COUNTED(p, l_malloc(1000), 1000);
    EXPECT_COUNTED(p, l_realloc(p, 3000), 3000);
    libc_free_fn(p);
    EXPECT_COUNTED(p, l_calloc(30, 7), 210);
    libc_free_fn(p);
    EXPECT_COUNTED(p, l_memalign(256, 500), 500);
    EXPECT(aligned(p, 256), "__libc_memalign(256) = %p", p);
    libc_free_fn(p);
    EXPECT_COUNTED(p, l_valloc(700), 700);
    EXPECT(aligned(p, page), "__libc_valloc = %p", p);
    libc_free_fn(p);
    p = l_pvalloc(10);
    EXPECT(aligned(p, page) && malloc_usable_size(p) >= page, "__libc_pvalloc(10) = %p", p);
    libc_free_fn(p);
    uint64_t t0 = thread_allocated();
    p = NULL;
    int rc = l_posix_memalign(&p, 128, 900);
    EXPECT(rc == 0 && aligned(p, 128) && thread_allocated() - t0 == 900,
           "__posix_memalign = %d, %p", rc, p);
    libc_free_fn(p);
    void *out = (void *)0x99;
    EXPECT(l_posix_memalign(&out, 24, 10) == EINVAL && out == (void *)0x99,
           "__posix_memalign with a bad alignment");
    expect_frees("__libc_free", via_libc_free);
}

/* C++'s operators, reached through libstdc++ as a C++ program would (the project builds C only,
 * so the mangled names are looked up in a dlopen'd libstdc++). */
static void check_cxx_new_delete(void)
{
    void *cxx = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL);
    if (cxx == NULL) {
        say("FAIL %s: dlopen(libstdc++.so.6): %s\n", current, dlerror());
        failed = 1;
        return;
    }
    void *(*op_new)(size_t) = (void *(*)(size_t))dlsym(cxx, "_Znwm");
    void *(*op_new_array)(size_t) = (void *(*)(size_t))dlsym(cxx, "_Znam");
    void *(*op_new_aligned)(size_t, size_t) =
        (void *(*)(size_t, size_t))dlsym(cxx, "_ZnwmSt11align_val_t");
    void (*op_delete)(void *) = (void (*)(void *))dlsym(cxx, "_ZdlPv");
    void (*op_delete_array)(void *) = (void (*)(void *))dlsym(cxx, "_ZdaPv");
    void (*op_delete_aligned)(void *, size_t) =
        (void (*)(void *, size_t))dlsym(cxx, "_ZdlPvSt11align_val_t");
    EXPECT(op_new && op_new_array && op_new_aligned && op_delete && op_delete_array &&
               op_delete_aligned,
           "libstdc++ operators not found");
    if (!(op_new && op_new_array && op_new_aligned && op_delete && op_delete_array &&
          op_delete_aligned))
        return;
    void *p;
    EXPECT_COUNTED(p, op_new(1000), 1000);
    op_delete(p);
    EXPECT_COUNTED(p, op_new_array(3333), 3333);
    op_delete_array(p);
    /* libstdc++ rounds the size up to a multiple of the alignment for aligned_alloc. */
    EXPECT_COUNTED(p, op_new_aligned(4000, 256), 4096);
    EXPECT(aligned(p, 256), "aligned operator new = %p", p);
    op_delete_aligned(p, 256);
    p = op_new(MIB);
    uint64_t before = heap_live();
    op_delete(p);
    uint64_t after = heap_live();
    EXPECT(before >= after + MIB - BOUND, "operator delete: live heap %llu -> %llu",
           (unsigned long long)before, (unsigned long long)after);
}

static void check_malloc_trim(void)
{
    void *p = malloc(32 << 20);
    memset(p, 1, 32 << 20);
    free(p);
    int rc = malloc_trim(0);
    EXPECT(rc == 0 || rc == 1, "malloc_trim returned %d", rc);
    void *q = malloc(100);
    EXPECT(q != NULL, "malloc after malloc_trim");
    free(q);
}

static const struct {
    const char *name;
    void (*run)(void);
} checks[] = {
    {"active", check_active},
    {"malloc_zero", check_malloc_zero},
    {"calloc_overflow", check_calloc_overflow},
    {"realloc_null_allocates", check_realloc_null_allocates},
    {"realloc_zero_frees", check_realloc_zero_frees},
    {"realloc_huge_keeps_block", check_realloc_huge_keeps_block},
    {"reallocarray", check_reallocarray},
    {"aligned_huge_enomem", check_aligned_huge_enomem},
    {"unservable_sizes", check_unservable_sizes},
    {"memalign_bad_alignment", check_memalign_bad_alignment},
    {"posix_memalign_bad_alignment", check_posix_memalign_bad_alignment},
    {"posix_memalign_huge_leaves_pointer", check_posix_memalign_huge_leaves_pointer},
    {"alignment_honoured", check_alignment_honoured},
    {"usable_size", check_usable_size},
    {"free_null", check_free_null},
    {"free_preserves_errno", check_free_preserves_errno},
    {"free_variants", check_free_variants},
    {"libc_aliases", check_libc_aliases},
    {"cxx_new_delete", check_cxx_new_delete},
    {"malloc_trim", check_malloc_trim},
};
#define NCHECKS (sizeof checks / sizeof checks[0])

static int run(size_t i)
{
    current = checks[i].name;
    failed = 0;
    checks[i].run();
    if (!failed) say("ok %s\n", current);
    return failed;
}

int main(int argc, char **argv)
{
    current = "setup";
    thread_allocated = (uint64_t(*)(void))sym("ml_thread_allocated");
    heap_live = (uint64_t(*)(void))sym("ml_heap_live");
    active = (int (*)(void))sym("ml_active");
    if (!thread_allocated || !heap_live || !active) return 100; /* not preloaded */
    int failures = 0;
    if (argc < 2) {
        for (size_t i = 0; i < NCHECKS; i++)
            failures += run(i);
        return failures;
    }
    for (int a = 1; a < argc; a++) {
        size_t i;
        for (i = 0; i < NCHECKS && strcmp(checks[i].name, argv[a]) != 0; i++) {
        }
        if (i == NCHECKS) {
            say("FAIL %s: no such check\n", argv[a]);
            return 100;
        }
        failures += run(i);
    }
    return failures;
}
