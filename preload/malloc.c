/* The interposed allocation API: glibc's malloc family with glibc 2.36's semantics, each entry a
 * charge against the thread's countdown, one branch, and a call into the embedded jemalloc. All
 * policy lives in lib/; a taken branch goes to the out-of-line slow halves in lib/alloc.c.
 *
 * Fast-path budget, per allocating call: one TLS increment (the allocation index), one TLS
 * subtract and one branch (ml__charge in lib/engine.h). Free: nothing but jemalloc's own free. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "engine.h"
#include "host.h"

#define ENTRY ML_EXPORT

/* Not declared by glibc 2.36's headers. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);

/* glibc's MALLOC_ALIGNMENT on x86-64: malloc's blocks are already this aligned. */
#define ML_MALLOC_ALIGNMENT 16

/* The caller of the entry point: the inline helpers below are always inlined into an entry, so
 * this is the address the entry returns to. */
#define CALLER __builtin_return_address(0)

static inline __attribute__((always_inline)) void *do_malloc(size_t size, const void *ret)
{
    if (ML_UNLIKELY(ml__charge(size))) return ml__malloc_slow(size, ret);
    return mlje_malloc(size);
}

/* Aligned allocation with a valid power-of-two alignment >= sizeof(void *); returns an errno. */
static inline __attribute__((always_inline)) int do_aligned(void **out, size_t align, size_t size,
                                                            const void *ret)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, align)))
        return ml__memalign_slow(out, align, size, ret);
    return mlje_posix_memalign(out, align, size);
}

/* glibc's memalign: small alignments are malloc's; others are rounded up to a power of two;
 * alignments above SIZE_MAX/2 + 1 are invalid. */
static inline __attribute__((always_inline)) void *do_memalign(size_t align, size_t size,
                                                               const void *ret)
{
    void *p = NULL;
    if (align <= ML_MALLOC_ALIGNMENT) return do_malloc(size, ret);
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if ((align & (align - 1)) != 0) align = (size_t)1 << (64 - __builtin_clzll(align));
    int err = do_aligned(&p, align, size, ret);
    if (err != 0) {
        errno = err;
        return NULL;
    }
    return p;
}

#if defined(__x86_64__)
/* malloc itself is written in assembly so that its slow half is reached by a jump, never a
 * call: the slow half then finds malloc's caller as its own return address, and the fast path
 * loads nothing but the thread's state. The instructions are ml__charge's (lib/engine.h):
 * count the allocation, subtract size + 1 with borrow, and leave on a borrow or a zero. */
_Static_assert(offsetof(ml_thread, until_event) == 0, "malloc's assembly reads until_event at 0");
_Static_assert(offsetof(ml_thread, allocations) == 8, "malloc's assembly counts at offset 8");

__attribute__((used, noinline)) void *ml__malloc_jumped(size_t size);
__attribute__((used, noinline)) void *ml__malloc_jumped(size_t size)
{
    return ml__malloc_slow(size, __builtin_return_address(0));
}

__asm__(".text\n"
        ".globl malloc\n"
        ".type malloc, @function\n"
        ".p2align 4\n"
        "malloc:\n"
        ".cfi_startproc\n"
        "    movq ml__self@gottpoff(%rip), %rax\n"
        "    addq $1, %fs:8(%rax)\n"
        "    stc\n"
        "    sbbq %rdi, %fs:(%rax)\n"
        "    jbe 1f\n"
        "    jmp mlje_malloc\n"
        "1:  jmp ml__malloc_jumped\n"
        ".cfi_endproc\n"
        ".size malloc, .-malloc\n"
        ".globl __libc_malloc\n"
        ".set __libc_malloc, malloc\n"
        ".hidden ml__malloc_entry\n"
        ".globl ml__malloc_entry\n"
        ".set ml__malloc_entry, malloc\n");
#else
ENTRY void *malloc(size_t size)
{
    return do_malloc(size, CALLER);
}
ENTRY __typeof__(malloc) __libc_malloc __attribute__((alias("malloc"), copy(malloc)));
__typeof__(malloc) ml__malloc_entry
    __attribute__((alias("malloc"), copy(malloc), visibility("hidden")));
#endif

/* free, __libc_free and cfree are jemalloc's free itself, exported under those names
 * (cmake/embed-jemalloc.sh): free has nothing to add, so it costs no extra jump. */

ENTRY void *calloc(size_t count, size_t size)
{
    size_t total;
    if (ML_UNLIKELY(__builtin_mul_overflow(count, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (ML_UNLIKELY(ml__charge(total))) return ml__calloc_slow(count, size, total, CALLER);
    return mlje_calloc(count, size);
}

ENTRY void *realloc(void *p, size_t size)
{
    if (p == NULL) return do_malloc(size, CALLER);
    if (size == 0) { /* glibc: frees the block and returns NULL */
        mlje_free(p);
        return NULL;
    }
    if (ML_UNLIKELY(ml__charge(size))) return ml__realloc_slow(p, size, 1, CALLER);
    /* A block in the profiler's range may be tracked: realloc moves it itself. */
    if (ML_UNLIKELY(ml__in_tracked_range(p))) return ml__realloc_slow(p, size, 0, CALLER);
    void *q = mlje_realloc(p, size);
    if (ML_UNLIKELY(q == NULL)) errno = ENOMEM; /* stock jemalloc leaves errno alone here */
    return q;
}

ENTRY void *reallocarray(void *p, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

ENTRY int posix_memalign(void **out, size_t align, size_t size)
{
    /* The out-pointer is left untouched on every error. */
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    void *p;
    int err = do_aligned(&p, align, size, CALLER);
    if (ML_LIKELY(err == 0))
        *out = p;
    else
        errno = err; /* as glibc's, whichever path refused it */
    return err;
}

ENTRY void *aligned_alloc(size_t align, size_t size)
{
    return do_memalign(align, size, CALLER); /* glibc 2.36: aligned_alloc is memalign */
}

ENTRY void *memalign(size_t align, size_t size)
{
    return do_memalign(align, size, CALLER);
}

ENTRY void *valloc(size_t size)
{
    return do_memalign(ml__page_size(), size, CALLER);
}

ENTRY void *pvalloc(size_t size)
{
    size_t page = ml__page_size();
    size_t rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) {
        errno = ENOMEM;
        return NULL;
    }
    rounded &= ~(page - 1);
    return do_memalign(page, rounded ? rounded : page, CALLER);
}

ENTRY size_t malloc_usable_size(void *p)
{
    return p == NULL ? 0 : mlje_malloc_usable_size(p);
}

ENTRY void free_sized(void *p, size_t size)
{
    (void)size;
    mlje_free(p);
}

ENTRY void free_aligned_sized(void *p, size_t align, size_t size)
{
    (void)align;
    (void)size;
    mlje_free(p);
}

/* Returns unused dirty pages of every arena to the system. */
ENTRY int malloc_trim(size_t pad)
{
    (void)pad;
    return mlje_mallctl("arena.4096.purge", NULL, NULL, NULL, 0) == 0;
}

/* glibc's internal names, which some programs and libraries call directly. */
#define ALIAS(name, target)                                                                        \
    ENTRY __typeof__(target) name __attribute__((alias(#target), copy(target)))
ALIAS(__libc_calloc, calloc);
ALIAS(__libc_realloc, realloc);
ALIAS(__libc_memalign, memalign);
ALIAS(__libc_valloc, valloc);
ALIAS(__libc_pvalloc, pvalloc);
ALIAS(__posix_memalign, posix_memalign);

/* ml__malloc_entry, the address of this library's malloc, is defined with malloc above. */
