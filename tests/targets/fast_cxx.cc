// Target for tests/test_fast_cxx.c: C++'s operator new and delete under libmemlimits.so. One mode
// per run (argv[1]); each prints "key value" lines that the test checks, and "fail WHAT" for any
// check made here that went wrong.
//   cap      (MEMLIMITS_HEAP=64M) every variant of operator new at the heap cap: std::bad_alloc
//            from the throwing ones, NULL from the nothrow ones, nothing leaked afterwards
//   handler  (MEMLIMITS_HEAP=64M) std::set_new_handler at the cap: a handler that frees memory
//            lets new succeed; one that does not is called again and again until it gives up;
//            nothrow new with a handler that throws returns NULL
//   aligned  aligned new of every variant, at alignments up to 2 MiB; an invalid alignment fails;
//            preloaded, each block is of the size class jemalloc's aligned path gives (nallocx)
//   count    ml_thread_allocated counts exactly what operator new and new[] are asked for; the
//            operators are the library's own
//   oom      real exhaustion (RLIMIT_AS, no heap cap) on small blocks: std::bad_alloc, not NULL
#include <dlfcn.h>
#include <new>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <vector>

static const size_t MIB = size_t(1) << 20;
static int failures;

static void check(bool ok, const char *what)
{
    if (!ok) {
        printf("fail %s\n", what);
        failures++;
    }
}

// Keeps a block observable: a new-expression whose result is unused may be left out (C++14).
static void *volatile sink;
static void keep(void *p)
{
    sink = p;
}

template <typename T> static T lookup(const char *name)
{
    void *f = dlsym(RTLD_DEFAULT, name);
    if (f == nullptr) {
        printf("fail no %s\n", name);
        exit(100);
    }
    return reinterpret_cast<T>(f);
}

// Fills the heap with 1 MiB blocks from new[] until it throws; returns them.
static std::vector<char *> fill()
{
    std::vector<char *> blocks;
    blocks.reserve(4096);
    try {
        for (;;) {
            char *p = new char[MIB];
            p[0] = 1;
            blocks.push_back(p);
        }
    } catch (const std::bad_alloc &) {
    }
    return blocks;
}

static void release(std::vector<char *> &blocks)
{
    for (char *p : blocks)
        delete[] p;
    blocks.clear();
}

template <typename F> static bool throws_bad_alloc(F f)
{
    try {
        f();
    } catch (const std::bad_alloc &) {
        return true;
    }
    return false;
}

static int mode_cap()
{
    auto heap_live = lookup<uint64_t (*)()>("ml_heap_live");
    std::vector<void *> small;
    small.reserve(1 << 20);
    uint64_t base = heap_live();
    std::vector<char *> blocks = fill();
    printf("filled_mib %zu\n", blocks.size());
    check(throws_bad_alloc([] { keep(new char[MIB]); }), "new[] at the cap");
    check(throws_bad_alloc([] { keep(::operator new(MIB)); }), "operator new at the cap");
    check(throws_bad_alloc([] { keep(::operator new(MIB, std::align_val_t(4096))); }),
          "aligned operator new at the cap");
    check(throws_bad_alloc([] { keep(::operator new[](MIB, std::align_val_t(64))); }),
          "aligned operator new[] at the cap");
    check(new (std::nothrow) char[MIB] == nullptr, "nothrow new[] at the cap");
    check(::operator new(MIB, std::nothrow) == nullptr, "nothrow operator new at the cap");
    check(::operator new(MIB, std::align_val_t(256), std::nothrow) == nullptr,
          "aligned nothrow operator new at the cap");
    // Small blocks reach the cap through the fast path and jemalloc's own operator new.
    bool small_threw = throws_bad_alloc([&] {
        for (;;)
            small.push_back(::operator new(100));
    });
    check(small_threw, "small operator new reaches the cap");
    printf("small_blocks %zu\n", small.size());
    for (void *p : small)
        ::operator delete(p, 100);
    release(blocks);
    uint64_t after = heap_live();
    printf("leaked %lld\n", (long long)(after - base));
    void *p = ::operator new(MIB);
    check(p != nullptr, "new after release");
    ::operator delete(p);
    printf("failures %d\n", failures);
    return 0;
}

static int handler_calls;
static std::vector<char *> *held;

static void free_some()
{
    handler_calls++;
    for (int i = 0; i < 4 && !held->empty(); i++) {
        delete[] held->back();
        held->pop_back();
    }
}

static void give_up_after_three()
{
    if (++handler_calls == 3) std::set_new_handler(nullptr);
}

static void throw_from_handler()
{
    handler_calls++;
    throw std::bad_alloc();
}

static int mode_handler()
{
    std::vector<char *> blocks = fill();
    held = &blocks;
    size_t before = blocks.size();

    handler_calls = 0;
    std::set_new_handler(free_some);
    char *p = new char[2 * MIB];
    std::set_new_handler(nullptr);
    printf("freeing_handler_calls %d\n", handler_calls);
    check(p != nullptr && blocks.size() == before - 4, "the handler freed memory and new got it");
    delete[] p;
    blocks = fill();

    handler_calls = 0;
    std::set_new_handler(give_up_after_three);
    check(throws_bad_alloc([] { keep(new char[MIB]); }), "new throws once the handler gives up");
    printf("giving_up_handler_calls %d\n", handler_calls);

    handler_calls = 0;
    std::set_new_handler(give_up_after_three);
    check(throws_bad_alloc([] { keep(::operator new(MIB, std::align_val_t(4096))); }),
          "aligned new throws once the handler gives up");
    printf("aligned_giving_up_handler_calls %d\n", handler_calls);

    handler_calls = 0;
    std::set_new_handler(throw_from_handler);
    char *q = new (std::nothrow) char[MIB];
    printf("nothrow_throwing_handler_calls %d\n", handler_calls);
    check(q == nullptr, "nothrow new returns NULL when the handler throws");
    void *r = ::operator new(MIB, std::align_val_t(64), std::nothrow);
    check(r == nullptr, "aligned nothrow new returns NULL when the handler throws");

    handler_calls = 0;
    std::set_new_handler(free_some);
    char *s = new (std::nothrow) char[2 * MIB];
    std::set_new_handler(nullptr);
    printf("nothrow_freeing_handler_calls %d\n", handler_calls);
    check(s != nullptr, "nothrow new succeeds after the handler freed memory");
    delete[] s;
    release(blocks);
    printf("failures %d\n", failures);
    return 0;
}

static int mode_aligned()
{
    static const size_t aligns[] = {1, 2, 8, 16, 32, 64, 128, 4096, 65536, 2 * MIB};
    static const size_t sizes[] = {0, 1, 24, 100, 200, 1000, 4096, 100000, 3 * MIB};
    /* jemalloc's API: exported by libmemlimits.so, absent under glibc. */
    auto nallocx = reinterpret_cast<size_t (*)(size_t, int)>(dlsym(RTLD_DEFAULT, "nallocx"));
    auto usable = reinterpret_cast<size_t (*)(void *)>(dlsym(RTLD_DEFAULT, "malloc_usable_size"));
    for (size_t a : aligns) {
        for (size_t n : sizes) {
            std::align_val_t al{a};
            void *p = ::operator new(n, al);
            void *q = ::operator new[](n, al);
            void *r = ::operator new(n, al, std::nothrow);
            void *s = ::operator new[](n, al, std::nothrow);
            char what[96];
            snprintf(what, sizeof what, "alignment %zu of %zu bytes", a, n);
            check(p && q && r && s, what);
            check((uintptr_t)p % a == 0 && (uintptr_t)q % a == 0 && (uintptr_t)r % a == 0 &&
                      (uintptr_t)s % a == 0,
                  what);
            if (nallocx != nullptr) {
                size_t expect = nallocx(n ? n : 1, __builtin_ctzll(a));
                check(usable(p) == expect && usable(q) == expect && usable(r) == expect &&
                          usable(s) == expect,
                      what);
            }
            if (n > 0) memset(p, 1, n);
            ::operator delete(p, n, al);
            ::operator delete[](q, al);
            ::operator delete(r, al, std::nothrow);
            ::operator delete[](s, n, al);
        }
    }
    struct alignas(256) wide {
        char c[300];
    };
    wide *w = new wide[3];
    check((uintptr_t)w % 256 == 0, "new of an over-aligned type");
    delete[] w;
    check(throws_bad_alloc([] { keep(::operator new(64, std::align_val_t(48))); }),
          "an alignment that is no power of two throws");
    check(::operator new(64, std::align_val_t(48), std::nothrow) == nullptr,
          "an alignment that is no power of two: nothrow returns NULL");
    ::operator delete(nullptr, 16, std::align_val_t(64));
    ::operator delete(nullptr, 16);
    printf("failures %d\n", failures);
    return 0;
}

struct counted {
    char c[24];
    ~counted()
    {
        c[0] = 0;
    }
};

static int mode_count()
{
    auto allocated = lookup<uint64_t (*)()>("ml_thread_allocated");
    static const size_t sizes[] = {0, 1, 7, 100, 528, 4096, 65536, 2 * MIB};
    uint64_t expected = 0, before = allocated();
    for (size_t n : sizes) {
        char *a = new char[n];
        void *b = ::operator new(n);
        void *c = ::operator new(n, std::nothrow);
        void *d = ::operator new[](n, std::align_val_t(64));
        void *e = ::operator new(n, std::align_val_t(32), std::nothrow);
        expected += 5 * n;
        delete[] a;
        ::operator delete(b, n);
        ::operator delete(c);
        ::operator delete[](d, std::align_val_t(64));
        ::operator delete(e, n, std::align_val_t(32));
    }
    // An array of a type with a destructor: the Itanium ABI's cookie, a size_t before the
    // elements, is part of what operator new[] is asked for.
    counted *k = new counted[10];
    expected += 10 * sizeof(counted) + sizeof(size_t);
    delete[] k;
    uint64_t got = allocated() - before;
    printf("expected %llu\ncounted %llu\n", (unsigned long long)expected, (unsigned long long)got);
    Dl_info info;
    void *(*op)(size_t) = &::operator new;
    if (dladdr((void *)op, &info) != 0 && info.dli_fname != nullptr)
        printf("operator_new_from %s\n",
               strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname);
    printf("failures %d\n", failures);
    return 0;
}

static int mode_oom()
{
    // Address space for what is mapped now and 256 MiB more: small blocks then exhaust it in
    // jemalloc itself, on the fast path, with no limit of memlimits involved.
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f == nullptr || fscanf(f, "%lu", &pages) != 1) return 101;
    fclose(f);
    rlimit rl;
    rl.rlim_cur = rl.rlim_max = pages * 4096 + 256 * MIB;
    if (setrlimit(RLIMIT_AS, &rl) != 0) return 102;
    std::vector<void *> blocks;
    blocks.reserve(4 << 20);
    bool threw = throws_bad_alloc([&] {
        for (size_t i = 0; i < (size_t(4) << 20); i++)
            blocks.push_back(::operator new(96));
    });
    printf("oom_threw %d\n", threw ? 1 : 0);
    printf("oom_blocks %zu\n", blocks.size());
    check(::operator new(96, std::nothrow) == nullptr, "nothrow new returns NULL when exhausted");
    for (void *p : blocks)
        ::operator delete(p, 96);
    printf("failures %d\n", failures);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, nullptr, _IONBF, 0);
    if (argc != 2) return 2;
    if (strcmp(argv[1], "cap") == 0) return mode_cap();
    if (strcmp(argv[1], "handler") == 0) return mode_handler();
    if (strcmp(argv[1], "aligned") == 0) return mode_aligned();
    if (strcmp(argv[1], "count") == 0) return mode_count();
    if (strcmp(argv[1], "oom") == 0) return mode_oom();
    return 2;
}
