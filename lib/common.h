/* Macros shared by every file of the engine: branch hints, visibility, the TLS model.
 * Kept apart so that both lib/ and preload/ can include it without pulling in state. */
#ifndef ML_COMMON_H
#define ML_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define ML_LIKELY(x) __builtin_expect(!!(x), 1)
#define ML_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ML_NOINLINE __attribute__((noinline))
#define ML_COLD __attribute__((cold))
#define ML_EXPORT __attribute__((visibility("default")))
/* On the declaration of a global that other files read on a hot path: the compiler then loads it
 * directly (one instruction), not through the GOT (two, even after the linker's relaxation). The
 * definitions are hidden anyway (-fvisibility=hidden); a declaration cannot say so by itself. */
#define ML_HIDDEN __attribute__((visibility("hidden")))
/* Thread-local state of a malloc replacement must use the initial-exec model: the dynamic models
 * call __tls_get_addr, which may allocate, and cost about twice as much on the fast path. */
#define ML_TLS __thread __attribute__((tls_model("initial-exec")))

/* "No limit" for any byte count, and the value of a component of the countdown that is off. */
#define ML_NONE UINT64_MAX

#define ML_MIN(a, b) ((a) < (b) ? (a) : (b))

/* Relaxed atomic access to a plain field that another thread may read (registry walks) or a
 * signal handler may write. Compiles to a plain mov on x86-64. */
#define ML_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ML_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

#endif
