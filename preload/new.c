/* C++'s operator new and operator delete, every standard variant (C++17: plain, array, nothrow,
 * sized, aligned, aligned sized, aligned nothrow), interposed like the malloc family: a charge
 * against the thread's countdown, one branch, and jemalloc. Written in C under their mangled
 * names (Itanium C++ ABI, size_t = unsigned long), so that the library links no C++ runtime:
 * failure semantics are the standard's through the process's own libstdc++, looked up only when
 * an allocation fails (lib/alloc_ext.c, lib/host_runtime.c).
 *
 * operator new and new[] jump, after the charge, to jemalloc's own operator new (its C++ object,
 * kept renamed by cmake/embed-jemalloc.sh), whose inline fast path is malloc's: a C++ allocation
 * costs what a malloc costs. That code falls back to ml__cxx_fallback below, which never returns
 * NULL: so the fast path is a tail jump, as malloc's is, and still throws std::bad_alloc when
 * jemalloc runs out of memory. The other variants are rarer; they call jemalloc and test.
 *
 * Unsized operator delete, in every variant, is jemalloc's free itself (the embed script gives
 * free's address those names); sized delete reaches jemalloc's sized free. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "alloc_ext.h"
#include "engine.h"
#include "host.h"

#define ENTRY ML_EXPORT
#define CALLER __builtin_return_address(0)

#if defined(__x86_64__)
/* operator new(size_t) and operator new[](size_t): malloc's assembly (preload/malloc.c), jumping
 * to jemalloc's operator new. The slow half is reached by a jump and finds the caller as its own
 * return address. */
/* The common event (engine.h's ml__event_quick) ends in a jump to jemalloc's operator new, as
 * the fast path does; any other goes through the slow half. */
__attribute__((used, noinline)) void *ml__new_jumped(size_t size);
__attribute__((used, noinline)) void *ml__new_jumped(size_t size)
{
    if (ML_LIKELY(ml__event_quick(size))) return mlje_cxx_new(size);
    return ml__new_slow(size, 0, 0, __builtin_return_address(0));
}

__asm__(".text\n"
        ".globl _Znwm\n"
        ".type _Znwm, @function\n"
        ".p2align 4\n"
        "_Znwm:\n"
        ".cfi_startproc\n"
        "    movq ml__self@gottpoff(%rip), %rax\n"
        "    addq $-1, %fs:8(%rax)\n"
        "    sbbq %rdi, %fs:(%rax)\n"
        "    jbe 1f\n"
        "    jmp mlje_cxx_new\n"
        "1:  jmp ml__new_jumped\n"
        ".cfi_endproc\n"
        ".size _Znwm, .-_Znwm\n"
        ".globl _Znam\n"
        ".set _Znam, _Znwm\n");
#else
ENTRY void *ml_new(size_t size) __asm__("_Znwm");
void *ml_new(size_t size)
{
    if (ML_UNLIKELY(ml__charge(size))) return ml__new_slow(size, 0, 0, CALLER);
    return mlje_cxx_new(size);
}
ENTRY void *ml_new_array(size_t size) __asm__("_Znam") __attribute__((alias("_Znwm")));
#endif

/* jemalloc's operator new calls this when its inline fast path misses (an empty cache bin, a
 * large block): jemalloc's general path, and if that gives nothing, the standard's loop. The
 * charge was made by the entry above. */
void *ml__cxx_fallback(size_t size);
void *ml__cxx_fallback(size_t size)
{
    void *p = mlje_malloc_default(size);
    if (ML_LIKELY(p != NULL)) return p;
    return ml__new_failed(size, 0, 0, CALLER);
}

/* What jemalloc's C++ object uses only behind a NULL from ml__cxx_fallback, which never comes:
 * its own new-handler loop, its try blocks and std::bad_alloc. The embed script renames those
 * references to these names, so that libmemlimits.so needs no C++ runtime to link. */
ML_COLD void ml__cxx_dead_set_new_handler(void);
ML_COLD void ml__cxx_dead_set_new_handler(void)
{
    static const char msg[] = "memlimits: internal error: jemalloc's C++ failure path reached\n";
    ml__write_all(2, msg, sizeof msg - 1);
    __builtin_trap();
}
#define DEAD(name)                                                                                 \
    __typeof__(ml__cxx_dead_set_new_handler) name                                                  \
        __attribute__((alias("ml__cxx_dead_set_new_handler"), copy(ml__cxx_dead_set_new_handler)))
DEAD(ml__cxx_dead_throw_bad_alloc);
DEAD(ml__cxx_dead_throw_system_error);
DEAD(ml__cxx_dead_begin_catch);
DEAD(ml__cxx_dead_end_catch);
DEAD(ml__cxx_dead_unwind_resume);
DEAD(ml__cxx_dead_personality);
DEAD(ml__cxx_dead_bad_alloc_typeinfo);

/* operator new(size_t, const std::nothrow_t &), and new[]. */
ENTRY void *ml_new_nothrow(size_t size, const void *tag) __asm__("_ZnwmRKSt9nothrow_t");
void *ml_new_nothrow(size_t size, const void *tag)
{
    (void)tag;
    if (ML_UNLIKELY(ml__charge(size))) return ml__new_slow(size, 0, ML_NEW_NOTHROW, CALLER);
    void *p = mlje_malloc(size);
    if (ML_UNLIKELY(p == NULL)) return ml__new_failed(size, 0, ML_NEW_NOTHROW, CALLER);
    return p;
}
ENTRY void *ml_new_array_nothrow(size_t size, const void *tag) __asm__("_ZnamRKSt9nothrow_t")
    __attribute__((alias("_ZnwmRKSt9nothrow_t")));

/* An aligned operator new's block after its charge: jemalloc's malloc of the size rounded up to
 * the alignment when that is at most ML_ALIGNED_AS_MALLOC and the alignment a power of two (the
 * block jemalloc's own aligned path gives: engine.h), else its aligned_alloc, which returns NULL
 * for an alignment that is no power of 2. */
static inline __attribute__((always_inline)) void *aligned_block(size_t size, size_t align)
{
    size_t last = ml__aligned_last(size, align);
    if (ML_LIKELY(last < ML_ALIGNED_AS_MALLOC && (align & (align - 1)) == 0))
        return mlje_malloc(last + 1);
    return mlje_aligned_alloc(align, size);
}

/* operator new(size_t, std::align_val_t), and new[]. */
ENTRY void *ml_new_aligned(size_t size, size_t align) __asm__("_ZnwmSt11align_val_t");
void *ml_new_aligned(size_t size, size_t align)
{
    if (ML_UNLIKELY(ml__charge_aligned(size, align)))
        return ml__new_slow(size, align, ML_NEW_ALIGNED, CALLER);
    void *p = aligned_block(size, align);
    if (ML_UNLIKELY(p == NULL)) return ml__new_failed(size, align, ML_NEW_ALIGNED, CALLER);
    return p;
}
ENTRY void *ml_new_array_aligned(size_t size, size_t align) __asm__("_ZnamSt11align_val_t")
    __attribute__((alias("_ZnwmSt11align_val_t")));

/* operator new(size_t, std::align_val_t, const std::nothrow_t &), and new[]. */
ENTRY void *ml_new_aligned_nothrow(size_t size, size_t align,
                                   const void *tag) __asm__("_ZnwmSt11align_val_tRKSt9nothrow_t");
void *ml_new_aligned_nothrow(size_t size, size_t align, const void *tag)
{
    (void)tag;
    unsigned how = ML_NEW_ALIGNED | ML_NEW_NOTHROW;
    if (ML_UNLIKELY(ml__charge_aligned(size, align))) return ml__new_slow(size, align, how, CALLER);
    void *p = aligned_block(size, align);
    if (ML_UNLIKELY(p == NULL)) return ml__new_failed(size, align, how, CALLER);
    return p;
}
ENTRY void *
ml_new_array_aligned_nothrow(size_t size, size_t align,
                             const void *tag) __asm__("_ZnamSt11align_val_tRKSt9nothrow_t")
    __attribute__((alias("_ZnwmSt11align_val_tRKSt9nothrow_t")));

/* operator delete(void *, size_t), and delete[]: jemalloc's sized free, which skips the lookup
 * of the block's size class. */
ENTRY void ml_delete_sized(void *p, size_t size) __asm__("_ZdlPvm");
void ml_delete_sized(void *p, size_t size)
{
    /* A block the profiler tracks is freed without the size hint, which would name its
     * requested size class instead of the promoted one jemalloc keeps for it. One compare. */
    if (ML_UNLIKELY(ml__in_tracked_range(p)))
        mlje_free(p);
    else if (ML_LIKELY(p != NULL))
        mlje_sdallocx_noflags(p, size);
}
ENTRY void ml_delete_array_sized(void *p, size_t size) __asm__("_ZdaPvm")
    __attribute__((alias("_ZdlPvm")));

/* operator delete(void *, size_t, std::align_val_t), and delete[]: the same with the alignment
 * the block was allocated with (a power of two). */
ENTRY void ml_delete_sized_aligned(void *p, size_t size,
                                   size_t align) __asm__("_ZdlPvmSt11align_val_t");
void ml_delete_sized_aligned(void *p, size_t size, size_t align)
{
    if (ML_UNLIKELY(ml__in_tracked_range(p)))
        mlje_free(p);
    else if (ML_LIKELY(p != NULL))
        mlje_sdallocx(p, size, __builtin_ctzll(align | (size_t)1 << 63));
}
ENTRY void ml_delete_array_sized_aligned(void *p, size_t size,
                                         size_t align) __asm__("_ZdaPvmSt11align_val_t")
    __attribute__((alias("_ZdlPvmSt11align_val_t")));
