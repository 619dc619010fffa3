/* The host seam's runtime half (see host.h): the embedded jemalloc's setup, defaults and private
 * globals, glibc's internals, and the dynamic linker. Only the engine links it. */
#define _GNU_SOURCE
#include "host.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/types.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/single_threaded.h>

#include "common.h"

/* The entry point the interposed `malloc` symbol names in this library (preload/malloc.c): the
 * engine's one reference upwards, by design (docs/ARCHITECTURE.md, "Layers"). Weak: test
 * programs link the engine without the entry points. */
extern void *ml__malloc_entry(size_t size) __attribute__((weak));

int ml__host_owns_malloc(const uint64_t *counter)
{
    static int known; /* 0: not asked yet, 1: owned, 2: not */
    int k = ML_LOAD(&known);
    if (k == 0) {
        int owned = 0;
        if (ml__malloc_entry != NULL) {
            void *(*volatile bound_malloc)(size_t) = malloc;
            void (*volatile bound_free)(void *) = free;
            uint64_t before = ML_LOAD(counter);
            void *p = bound_malloc(0); /* counts 0 bytes against the caller's limits */
            owned = ML_LOAD(counter) != before;
            bound_free(p);
        }
        k = owned ? 1 : 2;
        ML_STORE(&known, k);
    }
    return k == 1;
}

/* The embedded jemalloc's defaults (jemalloc reads this before MALLOC_CONF, which still
 * overrides it). Measured in bench/results/REPORT.md: stock jemalloc sends blocks of 8 MiB and
 * more to an arena that purges them at once, and returns freed pages with MADV_DONTNEED, so a
 * program churning large blocks faults every page in again (large-block churn: 3.7x slower than
 * glibc). Keeping large blocks in the ordinary arenas and leaving lazily-freed (MADV_FREE) pages
 * to the kernel makes that churn 6x faster than glibc; the cost is RSS that counts pages the
 * kernel may reclaim at any time. Re-studied for issue 12 (bench/WHY.md, item 5): settings that
 * return pages sooner lose that speed and still do not bring the RSS within 10% of glibc's, and
 * those that spare thread churn jemalloc's purge at thread exit (one arena, per-CPU arenas, a
 * background thread) multiply the RSS of the same workloads; so these stay. memlimits bounds
 * jemalloc's purging instead (host_purge.c). */
extern const char *mlje_malloc_conf;
const char *mlje_malloc_conf = "oversize_threshold:1073741824,muzzy_decay_ms:-1";

/* jemalloc's fork handlers. jemalloc registers them with pthread_atfork while it initialises;
 * embed-jemalloc.sh renames that call to this function, which keeps them for memlimits' own
 * handlers to call (host.h, "fork"). Called once, under jemalloc's initialisation lock; read by
 * fork handlers, hence the atomics. */
typedef void (*fork_fn)(void);
static fork_fn je_prefork, je_postfork_parent, je_postfork_child;

int ml__host_jemalloc_atfork(fork_fn prepare, fork_fn parent, fork_fn child);
int ml__host_jemalloc_atfork(fork_fn prepare, fork_fn parent, fork_fn child)
{
    __atomic_store_n(&je_postfork_child, child, __ATOMIC_RELEASE);
    __atomic_store_n(&je_postfork_parent, parent, __ATOMIC_RELEASE);
    __atomic_store_n(&je_prefork, prepare, __ATOMIC_RELEASE);
    return 0;
}

static void call_fork_fn(fork_fn *slot)
{
    fork_fn f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (f != NULL) f();
}

void ml__host_jemalloc_prefork(void)
{
    call_fork_fn(&je_prefork);
}

void ml__host_jemalloc_postfork_parent(void)
{
    call_fork_fn(&je_postfork_parent);
}

void ml__host_jemalloc_postfork_child(void)
{
    call_fork_fn(&je_postfork_child);
}

int ml__host_single_threaded(void)
{
    return __libc_single_threaded != 0;
}

int ml__host_jemalloc_init(void)
{
    mlje_free(mlje_malloc(1));
    const uint64_t *probe = NULL;
    size_t len = sizeof probe;
    if (mlje_mallctl("thread.allocatedp", (void *)&probe, &len, NULL, 0) != 0 || probe == NULL)
        return -1;
    if (__atomic_load_n(&je_prefork, __ATOMIC_ACQUIRE) == NULL) return -2;
    return 0;
}

/* Under an exhausted address space (RLIMIT_AS), jemalloc 5.3 cannot allocate a new thread's
 * cache and ignores the failure: its fast paths then dereference a NULL bin and the thread
 * crashes in malloc. Turning the cache off afterwards crashes too (it flushes the broken bins).
 * So, before jemalloc first sees a thread, check that 1 MiB of address space can still be had;
 * if not, let jemalloc set this thread up with its cache option off (jemalloc's own global,
 * linked into this object, read only while a thread's state is created), so that the thread's
 * allocations take the arena path and fail with NULL like any other. Other threads created at
 * the same moment may start without a cache too, which only costs speed. A thread whose first
 * call is free() is set up by jemalloc before memlimits sees it. */
extern _Bool je_opt_tcache;

void ml__host_jemalloc_thread(const uint64_t **allocated, const uint64_t **deallocated)
{
    size_t len = sizeof *allocated;
    _Bool cache = je_opt_tcache;
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
        void *probe =
            mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (probe != MAP_FAILED)
            munmap(probe, 1 << 20);
        else
            je_opt_tcache = 0;
    }
    mlje_mallctl("thread.allocatedp", (void *)allocated, &len, NULL, 0);
    je_opt_tcache = cache;
    len = sizeof *deallocated;
    mlje_mallctl("thread.deallocatedp", (void *)deallocated, &len, NULL, 0);
}

int ml__host_jemalloc_stats(ml_host_heap_stats *out)
{
    uint64_t epoch = 1;
    size_t mapped = 0, retained = 0;
    size_t len = sizeof epoch;
    out->mapped = out->retained = 0;
    if (mlje_mallctl("epoch", &epoch, &len, &epoch, sizeof epoch) != 0) return -1;
    len = sizeof mapped;
    if (mlje_mallctl("stats.mapped", &mapped, &len, NULL, 0) != 0) return -1;
    len = sizeof retained;
    if (mlje_mallctl("stats.retained", &retained, &len, NULL, 0) != 0) return -1;
    out->mapped = mapped;
    out->retained = retained;
    return 0;
}

/* glibc exports these (GLIBC_2.2.5); they are the lock fork itself takes after the handlers. */

/* glibc exports these (GLIBC_2.2.5); they are the lock fork itself takes after the handlers
 * when the process is multithreaded. */
extern void _IO_list_lock(void);
extern void _IO_list_unlock(void);
extern void _IO_list_resetlock(void);

void ml__host_stdio_lock(void)
{
    _IO_list_lock();
}

void ml__host_stdio_unlock(void)
{
    _IO_list_unlock();
}

void ml__host_stdio_reset(void)
{
    _IO_list_resetlock();
}

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static create_fn real_create;

int ml__host_pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                            void *arg)
{
    create_fn create = __atomic_load_n(&real_create, __ATOMIC_ACQUIRE);
    if (create == NULL) {
        create = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
        if (create == NULL) return EAGAIN;
        __atomic_store_n(&real_create, create, __ATOMIC_RELEASE);
    }
    return create(thread, attr, start, arg);
}

/* Executable ranges of libc and ld.so, filled once. */
#define SYSTEM_TEXT_MAX 8
static struct {
    uintptr_t start, end;
} system_text[SYSTEM_TEXT_MAX];
static int system_text_count = -1;
static pthread_once_t system_text_once = PTHREAD_ONCE_INIT;

static int collect_text(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    int *count = ctx;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strncmp(base, "libc.so", 7) != 0 && strncmp(base, "ld-linux", 8) != 0) return 0;
    for (int i = 0; i < info->dlpi_phnum && *count < SYSTEM_TEXT_MAX; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        system_text[*count].start = info->dlpi_addr + ph->p_vaddr;
        system_text[*count].end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        (*count)++;
    }
    return 0;
}

static void find_once(void)
{
    int count = 0;
    dl_iterate_phdr(collect_text, &count);
    __atomic_store_n(&system_text_count, count, __ATOMIC_RELEASE);
}

void ml__host_find_system_text(void)
{
    pthread_once(&system_text_once, find_once);
}

int ml__host_in_system_text(const void *addr)
{
    uintptr_t a = (uintptr_t)addr;
    int count = __atomic_load_n(&system_text_count, __ATOMIC_ACQUIRE);
    if (count < 0) return 1; /* not computed: be safe */
    for (int i = 0; i < count; i++)
        if (a >= system_text[i].start && a < system_text[i].end) return 1;
    return 0;
}

/* glibc exports these (GLIBC_2.2.5, and GLIBC_2.34 since libpthread joined libc); <pthread.h>
 * declares only the record's type. */
extern void _pthread_cleanup_push(struct _pthread_cleanup_buffer *record, void (*fn)(void *),
                                  void *arg);
extern void _pthread_cleanup_pop(struct _pthread_cleanup_buffer *record, int execute);

_Static_assert(sizeof(struct _pthread_cleanup_buffer) <= sizeof(ml_host_cleanup),
               "ml_host_cleanup holds glibc's cleanup record");

void ml__host_cleanup_push(ml_host_cleanup *record, void (*fn)(void *arg), void *arg)
{
    _pthread_cleanup_push((struct _pthread_cleanup_buffer *)record, fn, arg);
}

void ml__host_cleanup_pop(ml_host_cleanup *record)
{
    _pthread_cleanup_pop((struct _pthread_cleanup_buffer *)record, 0);
}

/* The process's C++ runtime (see host.h). Looked up once each, on the first failure that needs
 * it; versioned lookups for libstdc++'s own definitions, so that memlimits' operators (exported
 * unversioned) and another allocator's (Debian's libjemalloc, also unversioned) are never found
 * instead. */
static void *cxx_symbol(void **cache, const char *name, const char *version)
{
    void *f = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (f == NULL) {
        f = version != NULL ? dlvsym(RTLD_DEFAULT, name, version) : dlsym(RTLD_DEFAULT, name);
        if (f != NULL) __atomic_store_n(cache, f, __ATOMIC_RELEASE);
    }
    return f;
}

ml_new_handler ml__host_new_handler(void)
{
    static void *get;
    ml_new_handler (*f)(void) = (ml_new_handler(*)(void))cxx_symbol(
        &get, "_ZSt15get_new_handlerv", NULL); /* std::get_new_handler() */
    return f != NULL ? f() : NULL;
}

void ml__host_throw_bad_alloc(void)
{
    static void *thrower, *thrower_libcxx;
    void (*f)(void) = (void (*)(void))cxx_symbol(&thrower, "_ZSt17__throw_bad_allocv", NULL);
    if (f == NULL) /* libc++: std::__1::__throw_bad_alloc() */
        f = (void (*)(void))cxx_symbol(&thrower_libcxx, "_ZNSt3__117__throw_bad_allocEv", NULL);
    if (f != NULL) f();
    static const char msg[] =
        "memlimits: operator new failed and no C++ runtime is loaded to throw std::bad_alloc\n";
    ml__write_all(2, msg, sizeof msg - 1);
    abort();
}

int ml__host_nothrow_new(size_t size, size_t align, void **out)
{
    static void *plain, *aligned;
    static const char tag; /* a std::nothrow_t: an empty tag, passed by reference, never read */
    if (align == 0) {
        void *(*f)(size_t, const void *) = (void *(*)(size_t, const void *))cxx_symbol(
            &plain, "_ZnwmRKSt9nothrow_t", "GLIBCXX_3.4");
        if (f == NULL) return 0;
        *out = f(size, &tag);
        return 1;
    }
    void *(*f)(size_t, size_t, const void *) = (void *(*)(size_t, size_t, const void *))cxx_symbol(
        &aligned, "_ZnwmSt11align_val_tRKSt9nothrow_t", "CXXABI_1.3.11");
    if (f == NULL) return 0;
    *out = f(size, align, &tag);
    return 1;
}
