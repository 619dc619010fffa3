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
#include "alloc_ext.h"
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

/* NULL with errno set, out of line, so that the entries that fail this way early need no stack
 * frame and end in a tail call. */
static ML_NOINLINE ML_COLD void *fail(int err)
{
    errno = err;
    return NULL;
}

/* An aligned allocation with a power of two above malloc's alignment: the charge (its alignment
 * included: engine.h's ml__charge_aligned) and a tail call to jemalloc: malloc for a small
 * request (ML_ALIGNED_AS_MALLOC), else its aligned_alloc, which takes any power of two and sets
 * errno itself (ENOMEM on failure, as the slow half does). */
static inline __attribute__((always_inline)) void *do_aligned(size_t align, size_t size,
                                                              const void *ret)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, align)))
        return ml__aligned_alloc_slow(align, size, ret);
    size_t last = ml__aligned_last(size, align);
    if (ML_LIKELY(last < ML_ALIGNED_AS_MALLOC)) return mlje_malloc(last + 1);
    return mlje_aligned_alloc(align, size);
}

/* glibc's memalign for an alignment that is no power of two: above SIZE_MAX/2 + 1 it is invalid,
 * otherwise rounded up to one. Out of line: the entries test for a power of two only. */
static ML_NOINLINE void *memalign_odd(size_t align, size_t size, const void *ret)
{
    if (align > SIZE_MAX / 2 + 1) return fail(EINVAL);
    return do_aligned((size_t)1 << (64 - __builtin_clzll(align)), size, ret);
}

/* glibc's memalign: small alignments are malloc's; others are rounded up to a power of two;
 * alignments above SIZE_MAX/2 + 1 are invalid. One test on the way to the tail call. */
static inline __attribute__((always_inline)) void *do_memalign(size_t align, size_t size,
                                                               const void *ret)
{
    if (align <= ML_MALLOC_ALIGNMENT) return do_malloc(size, ret);
    if (ML_UNLIKELY((align & (align - 1)) != 0)) return memalign_odd(align, size, ret);
    return do_aligned(align, size, ret);
}

#if defined(__x86_64__)
/* malloc itself is written in assembly so that its slow half is reached by a jump, never a
 * call: the slow half then finds malloc's caller as its own return address, and the fast path
 * loads nothing but the thread's state. The instructions are ml__charge's (lib/engine.h):
 * count the allocation, subtract size + 1 with borrow, and leave on a borrow or a zero. */
_Static_assert(offsetof(ml_thread, until_event) == 0, "malloc's assembly reads until_event at 0");
_Static_assert(offsetof(ml_thread, allocations_down) == 8, "malloc's assembly counts at offset 8");
_Static_assert(offsetof(ml_thread, units_extra) == 16, "memalign's assembly adds units at 16");

/* The common event (engine.h's ml__event_quick) ends in a tail call to jemalloc's malloc, as the
 * fast path does; any other goes through the slow half. */
__attribute__((used, noinline)) void *ml__malloc_jumped(size_t size);
__attribute__((used, noinline)) void *ml__malloc_jumped(size_t size)
{
    if (ML_LIKELY(ml__event_quick(size))) return mlje_malloc(size);
    return ml__malloc_slow(size, __builtin_return_address(0));
}

__asm__(".text\n"
        ".globl malloc\n"
        ".type malloc, @function\n"
        ".p2align 4\n"
        "malloc:\n"
        ".cfi_startproc\n"
        "    movq ml__self@gottpoff(%rip), %rax\n"
        "    addq $-1, %fs:8(%rax)\n"
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
    if (ML_UNLIKELY(__builtin_mul_overflow(count, size, &total))) return fail(ENOMEM);
    if (ML_UNLIKELY(ml__charge(total))) return ml__calloc_slow(count, size, total, CALLER);
    return mlje_calloc(count, size);
}

/* glibc: frees the block and returns NULL. */
static ML_NOINLINE void *realloc_to_zero(void *p)
{
    mlje_free(p);
    return NULL;
}

/* A tail call to jemalloc's realloc. Its failures on the fast path (less than the countdown,
 * at most 1 MiB) are the system's: the mmap that failed left errno = ENOMEM; larger requests
 * always take the slow half, which sets errno itself. */
ENTRY void *realloc(void *p, size_t size)
{
    if (p == NULL) return do_malloc(size, CALLER);
    if (ML_UNLIKELY(size == 0)) return realloc_to_zero(p);
    if (ML_UNLIKELY(ml__charge(size))) return ml__realloc_slow(p, size, 1, CALLER);
    /* A block in the profiler's range may be tracked: realloc moves it itself. */
    if (ML_UNLIKELY(ml__in_tracked_range(p))) return ml__realloc_slow(p, size, 0, CALLER);
    return mlje_realloc(p, size);
}

ENTRY void *reallocarray(void *p, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) return fail(ENOMEM);
    return realloc(p, total);
}

/* The alignment is checked once, here, so that an invalid one is not counted; then the charge
 * and jemalloc: malloc for a small request (ML_ALIGNED_AS_MALLOC; a NULL from it is ENOMEM, with
 * errno as the system's failed mmap left it, as under jemalloc's own posix_memalign), else a tail
 * call to its posix_memalign, which leaves the out-pointer untouched on every error and returns
 * the error (and, like glibc's, leaves errno alone; the slow half sets it to ENOMEM when it
 * refuses). */
ENTRY int posix_memalign(void **out, size_t align, size_t size)
{
    if (ML_UNLIKELY(align < sizeof(void *) || (align & (align - 1)) != 0)) return EINVAL;
    if (ML_UNLIKELY(ml__charge_aligned(size, align)))
        return ml__memalign_slow(out, align, size, CALLER);
    size_t last = ml__aligned_last(size, align);
    if (ML_UNLIKELY(last >= ML_ALIGNED_AS_MALLOC)) return mlje_posix_memalign(out, align, size);
    void *p = mlje_malloc(last + 1);
    if (ML_UNLIKELY(p == NULL)) return ENOMEM;
    *out = p;
    return 0;
}

#if defined(__x86_64__)
/* memalign and aligned_alloc (glibc 2.36: aligned_alloc is memalign), in assembly like malloc,
 * for the same reasons: do_memalign's tests and charge (size + align units, the alignment
 * recorded in units_extra, as ml__charge_aligned does), every way out a jump. An alignment of
 * at most 16 is malloc itself; one that is no power of two goes to memalign_odd; a small
 * request (ML_ALIGNED_AS_MALLOC) ends in jemalloc's malloc of its rounded size, a larger one in
 * jemalloc's aligned_alloc, after the check that size + align does not overflow (which a small
 * one cannot). */
__attribute__((used, noinline)) void *ml__aligned_jumped(size_t align, size_t size);
__attribute__((used, noinline)) void *ml__aligned_jumped(size_t align, size_t size)
{
    return ml__aligned_alloc_slow(align, size, __builtin_return_address(0));
}

/* An aligned request whose size + alignment overflows: charged in C (saturating), then served
 * as do_aligned would. */
__attribute__((used, noinline)) void *ml__aligned_wide_jumped(size_t align, size_t size);
__attribute__((used, noinline)) void *ml__aligned_wide_jumped(size_t align, size_t size)
{
    return do_aligned(align, size, __builtin_return_address(0));
}

__attribute__((used, noinline)) void *ml__memalign_odd_jumped(size_t align, size_t size);
__attribute__((used, noinline)) void *ml__memalign_odd_jumped(size_t align, size_t size)
{
    return memalign_odd(align, size, __builtin_return_address(0));
}

_Static_assert(ML_MALLOC_ALIGNMENT == 16, "memalign's assembly compares with 16");
_Static_assert(ML_ALIGNED_AS_MALLOC == 4096, "memalign's assembly compares with 4095");
__asm__(".text\n"
        ".globl memalign\n"
        ".type memalign, @function\n"
        ".p2align 4\n"
        "memalign:\n"
        ".cfi_startproc\n"
        "    cmpq $16, %rdi\n"
        "    jbe 2f\n"
        "    leaq -1(%rdi), %rax\n"
        "    testq %rdi, %rax\n"
        "    jne 3f\n"
        /* rcx = the size rounded up to the alignment, less 1; above 4095 (or size 0, which
         * wraps) the request is jemalloc's aligned_alloc's. */
        "    leaq -1(%rsi), %rcx\n"
        "    orq %rax, %rcx\n"
        "    cmpq $4095, %rcx\n"
        "    ja 5f\n"
        "    leaq (%rsi,%rdi), %rdx\n"
        "    movq ml__self@gottpoff(%rip), %rax\n"
        "    addq %rdi, %fs:16(%rax)\n"
        "    addq $-1, %fs:8(%rax)\n"
        "    sbbq %rdx, %fs:(%rax)\n"
        "    jbe 1f\n"
        "    leaq 1(%rcx), %rdi\n"
        "    jmp mlje_malloc\n"
        "5:  movq %rsi, %rcx\n"
        "    addq %rdi, %rcx\n"
        "    jc 4f\n"
        "    movq ml__self@gottpoff(%rip), %rax\n"
        "    addq %rdi, %fs:16(%rax)\n"
        "    addq $-1, %fs:8(%rax)\n"
        "    sbbq %rcx, %fs:(%rax)\n"
        "    jbe 1f\n"
        "    jmp mlje_aligned_alloc\n"
        "1:  jmp ml__aligned_jumped\n"
        "2:  movq %rsi, %rdi\n"
        "    jmp ml__malloc_entry\n"
        "3:  jmp ml__memalign_odd_jumped\n"
        "4:  jmp ml__aligned_wide_jumped\n"
        ".cfi_endproc\n"
        ".size memalign, .-memalign\n"
        ".globl aligned_alloc\n"
        ".set aligned_alloc, memalign\n"
        ".globl __libc_memalign\n"
        ".set __libc_memalign, memalign\n");
#else
ENTRY void *aligned_alloc(size_t align, size_t size)
{
    return do_memalign(align, size, CALLER); /* glibc 2.36: aligned_alloc is memalign */
}

ENTRY void *memalign(size_t align, size_t size)
{
    return do_memalign(align, size, CALLER);
}
ENTRY __typeof__(memalign) __libc_memalign __attribute__((alias("memalign"), copy(memalign)));
#endif

ENTRY void *valloc(size_t size)
{
    return do_memalign(ml__page_size(), size, CALLER);
}

ENTRY void *pvalloc(size_t size)
{
    size_t page = ml__page_size();
    size_t rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) return fail(ENOMEM);
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
ALIAS(__libc_valloc, valloc);
ALIAS(__libc_pvalloc, pvalloc);
ALIAS(__posix_memalign, posix_memalign);

/* ml__malloc_entry, the address of this library's malloc, is defined with malloc above. */
