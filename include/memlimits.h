/* memlimits: limits on memory for programs that were never written for them.
 *
 * libmemlimits.so owns the process's malloc (preloaded with LD_PRELOAD, or linked with
 * -lmemlimits ahead of libc) over an embedded jemalloc, counts every allocation exactly and
 * enforces a hard heap cap and an allocation budget. This header is the client API: each
 * function says what it does, what it returns, and whether it may be called from any thread or
 * from a signal handler. Link with `pkg-config --cflags --libs memlimits`. */
#ifndef MEMLIMITS_H
#define MEMLIMITS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every public function is exported from libmemlimits.so, which hides everything else. */
#if defined(__GNUC__)
#define ML_API __attribute__((visibility("default")))
#else
#define ML_API
#endif

#define MEMLIMITS_VERSION_MAJOR 0
#define MEMLIMITS_VERSION_MINOR 1
#define MEMLIMITS_VERSION_PATCH 0
#define MEMLIMITS_VERSION_STRING "0.1.0"

/* "No limit", for every function below that takes a byte count. */
#define ML_UNLIMITED UINT64_MAX

/* The status table: code, name, description. Non-negative codes say why a task ended;
 * negative codes are errors. ml_strstatus() is generated from it. */
#define ML_STATUS_MAP(X)                                                                           \
    X(ML_OK, 0, "success")                                                                         \
    X(ML_MEMORY_LIMIT, 1, "the global memory limit was exceeded")                                  \
    X(ML_ALLOCATION_LIMIT, 2, "the task's allocation limit was exceeded")                          \
    X(ML_TOKEN, 3, "the task's token was set")                                                     \
    X(ML_EINVAL, -1, "invalid argument")                                                           \
    X(ML_ENOTACTIVE, -2, "memlimits does not own malloc in this process")                          \
    X(ML_ESIGNAL, -3, "the wake-up signal is unavailable: the program handles it")                 \
    X(ML_ENOMEM, -4, "out of memory while setting up the task")

typedef enum ml_status {
#define ML_STATUS_ENUM(name, code, text) name = code,
    ML_STATUS_MAP(ML_STATUS_ENUM)
#undef ML_STATUS_ENUM
} ml_status;

/* A static, human-readable description of `status`, or "unknown status" for a value that is not
 * in the table. Never NULL. Thread-safe and async-signal-safe. */
ML_API const char *ml_strstatus(ml_status status);

/* Nonzero when memlimits owns malloc in this process, i.e. calls to malloc reach
 * libmemlimits.so (it was preloaded, or linked ahead of libc). Zero when the library was merely
 * loaded (dlopen) after another allocator took malloc: then no limit applies, ml_set_heap_cap
 * does nothing and the task functions refuse with ML_ENOTACTIVE. (dlopen of the library needs
 * static TLS room beyond glibc's default: GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096.)
 * The first call makes one zero-byte allocation to find out. Thread-safe. */
ML_API int ml_active(void);

/* Sets the hard heap cap: from now on, an allocation that would take the live heap above `bytes`
 * fails (NULL and errno ENOMEM, or the MEMLIMITS_ON_HEAP action). ML_UNLIMITED removes the cap;
 * 0 refuses every allocation. Lowering the cap below the current live heap frees nothing; it
 * refuses allocations until the heap is back under it. Overrides MEMLIMITS_HEAP. Has no effect
 * when memlimits is not active (see ml_active). Thread-safe. */
ML_API void ml_set_heap_cap(uint64_t bytes);

/* The heap cap in force, or ML_UNLIMITED. Thread-safe. */
ML_API uint64_t ml_heap_cap(void);

/* Live heap bytes: the usable size of every block allocated and not yet freed, summed over all
 * threads. Exact for the calling thread and for threads that are not allocating at the time of
 * the call (it reconciles every thread's counters); a thread allocating concurrently may be
 * behind by at most 1 MiB of requests, 64 KiB near a heap cap (README "Accounting"). Thread-safe;
 * not async-signal-safe (it takes a lock). 0 when memlimits is not active. */
ML_API uint64_t ml_heap_live(void);

/* The highest live heap observed so far: checked at each thread's accounting flush (every 1 MiB
 * of requests, 64 KiB near a heap cap, and after every allocation of 64 KiB or more that takes
 * the slow path), so it can miss a peak by the same per-thread bound as ml_heap_live, and can
 * exceed the true peak by at most 1 MiB of frees not yet accounted. Thread-safe and
 * async-signal-safe. */
ML_API uint64_t ml_heap_peak(void);

/* Bytes the calling thread has requested so far, exact: the sum of the sizes passed to malloc,
 * calloc (count times size), realloc (the new size), the aligned allocators and C++'s operator
 * new and new[] (the size they are asked for; a zero-byte request counts 0). Not counted:
 * allocations refused by a limit, and allocations of 1 MiB or more that fail for lack of memory (a
 * smaller one that fails that way may be counted). Thread-safe (it reads only the caller's state)
 * and async-signal-safe. */
ML_API uint64_t ml_thread_allocated(void);

/* ------------------------------------------------------------------------------------------
 * Tokens. A token is a flag that, once set, interrupts every task running with it. Tokens live
 * in memory memlimits never returns to the system, so a destroyed token is detected (and
 * refused) instead of crashing, until its slot is reused by a later ml_token_create.
 */
typedef struct ml_token ml_token;

/* A new, unset token, or NULL (errno ENOMEM) when memory for it cannot be had. Thread-safe. */
ML_API ml_token *ml_token_create(void);

/* Sets the token, for good: every task running with it is interrupted, tasks on other threads
 * at their next allocation event (within 32 KiB of allocation) or poll, at once if they run with
 * ML_WAKE (their blocked system calls return EINTR). Thread-safe and async-signal-safe: it may
 * be called from a signal handler. NULL or a destroyed token: no effect. */
ML_API void ml_token_set(ml_token *token);

/* Nonzero when the token is set; 0 when it is not, or is NULL or destroyed. Thread-safe and
 * async-signal-safe. */
ML_API int ml_token_is_set(const ml_token *token);

/* Destroys the token. Tasks still running with it are not interrupted by it any more. NULL or
 * an already destroyed token: no effect. Thread-safe. */
ML_API void ml_token_destroy(ml_token *token);

/* ------------------------------------------------------------------------------------------
 * Tasks. A task is a function run on the calling thread under limits. When a limit fires the
 * task's interrupt becomes pending and is delivered, outside masked sections:
 *  - by default (ENOMEM delivery), every allocation the task makes from then on fails with NULL
 *    and errno ENOMEM, which C code already handles; the task returns and ml_run says why;
 *  - with ML_UNWIND, an allocation made directly by the task's code (not by the C library or
 *    the dynamic loader on its behalf, which get ENOMEM) unwinds to ml_run with siglongjmp,
 *    running the cleanups registered with ML_CLEANUP_PUSH and ml_with_resource, innermost
 *    first, masked. Compile such code with -fno-builtin-malloc (or -fno-builtin): otherwise
 *    the compiler, which assumes malloc returns, may move or drop stores around the call that
 *    the cleanups then miss;
 *  - ml_check() unwinds in every mode.
 * Nothing is unwound out of a signal handler (an allocation or ml_check there gets ENOMEM or
 * returns). If fn leaves the thread (pthread_exit, cancellation), the task's cleanups run and
 * the task is taken down as by an unwind.
 * Nested tasks: an inner limit never extends an outer one, every allocation counts against
 * every enclosing limit, and an interrupt of an enclosing task interrupts the tasks inside it.
 * Threads created by a task do not inherit its limits; threads without a task are never
 * affected.
 */
enum { ML_UNWIND = 1u << 0, ML_WAKE = 1u << 1 };

typedef struct ml_limits {
    uint64_t allocations; /* bytes the task may allocate; 0: no allocation limit */
    int global_memory;    /* nonzero: interrupt when the global memory limit is exceeded */
    ml_token *token;      /* interrupt when set; NULL: none */
    unsigned flags;       /* ML_UNWIND, ML_WAKE */
} ml_limits;

/* Runs fn(arg) on the calling thread as a task under `limits`. Returns ML_OK when no limit
 * fired, or why the task was interrupted: ML_ALLOCATION_LIMIT (its own or an enclosing task's
 * allocation limit), ML_MEMORY_LIMIT, ML_TOKEN. Errors, without running fn: ML_EINVAL (limits
 * or fn NULL, unknown flags, a destroyed token), ML_ENOTACTIVE (memlimits does not own malloc),
 * ML_ESIGNAL (ML_WAKE, and the wake-up signal has a handler the program installed).
 * `allocated`, when not NULL, receives the exact bytes the task requested (as counted by
 * ml_thread_allocated), masked allocations and nested tasks included, refused ones excluded.
 * The allocation limit is exact: the task is interrupted at the first allocation that takes
 * its count above `allocations`, never before. A token already set, or a global limit already
 * exceeded, makes the task start interrupted. Thread-safe: each thread runs its own tasks. */
ML_API ml_status ml_run(const ml_limits *limits, void (*fn)(void *arg), void *arg,
                        uint64_t *allocated);

/* ml_run with only the global memory limit. */
ML_API ml_status ml_limit_global_memory(void (*fn)(void *arg), void *arg);
/* ml_run with only an allocation limit of `limit` bytes (0: none). */
ML_API ml_status ml_limit_allocations(uint64_t limit, void (*fn)(void *arg), void *arg,
                                      uint64_t *allocated);
/* ml_run with only a token; a NULL token is ML_EINVAL. */
ML_API ml_status ml_limit_with_token(ml_token *token, void (*fn)(void *arg), void *arg);

/* The global memory limit: tasks run with global_memory are interrupted once the live heap
 * exceeds it, before they allocate 256 KiB more. ML_UNLIMITED (the default, unless
 * MEMLIMITS_GLOBAL is set): none. Thread-safe. */
ML_API void ml_set_global_memory_limit(uint64_t bytes);
ML_API uint64_t ml_global_memory_limit(void);

/* Nonzero when the calling thread's task (or a task enclosing it) has a pending interrupt.
 * Never delivers. 0 outside tasks. Thread-safe (reads the caller's state). */
ML_API int ml_is_interrupted(void);

/* A cancellation point: when the calling thread's task has a pending interrupt and the thread
 * is not masked, unwinds to the innermost ml_run (running cleanups), in every delivery mode.
 * Otherwise returns. No effect outside tasks. */
ML_API void ml_check(void);

/* Masking, in the manner of PostgreSQL's HOLD_INTERRUPTS: calls nest, per thread. While masked
 * nothing is delivered and no allocation is refused by a task limit (allocations still count;
 * an interrupt they cause stays pending). ml_unmask never delivers by itself: the next
 * allocation or ml_check after the outermost ml_unmask does. ml_unmask without ml_mask: no
 * effect. Thread-safe (per-thread state); async-signal-safe. */
ML_API void ml_mask(void);
ML_API void ml_unmask(void);

/* Runs acquire(arg, &resource) masked; if it returns nonzero, returns that value and runs
 * nothing else. Otherwise runs scope(resource, ctx) unmasked, then release(resource) masked,
 * always: on return and when the task is unwound out of scope, exactly once, with
 * ml_is_interrupted() true during release when an interrupt happened (so release can poison or
 * roll back). Returns scope's value when scope returns. acquire, release and scope must not be
 * NULL (returns -1 with nothing run). */
ML_API int ml_with_resource(int (*acquire)(void *arg, void **resource), void *arg,
                            void (*release)(void *resource),
                            int (*scope)(void *resource, void *ctx), void *ctx);

/* Lexical cleanups, in the style of pthread_cleanup_push: between ML_CLEANUP_PUSH(fn, arg) and
 * the matching ML_CLEANUP_POP(execute), in the same block, an unwind of the task runs fn(arg)
 * masked; ML_CLEANUP_POP(1) runs it masked on the normal path, ML_CLEANUP_POP(0) drops it. */
typedef struct ml_cleanup {
    struct ml_cleanup *prev;
    void (*fn)(void *arg);
    void *arg;
    void *owner; /* the task whose unwind runs it; NULL outside tasks */
} ml_cleanup;
ML_API void ml_cleanup_push(ml_cleanup *frame, void (*fn)(void *arg), void *arg);
ML_API void ml_cleanup_pop(ml_cleanup *frame, int execute);
#define ML_CLEANUP_PUSH(fn, arg)                                                                   \
    do {                                                                                           \
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wshadow\"")              \
            ml_cleanup ml_cleanup_frame_;                                                          \
        _Pragma("GCC diagnostic pop") ml_cleanup_push(&ml_cleanup_frame_, (fn), (arg));
#define ML_CLEANUP_POP(execute)                                                                    \
    ml_cleanup_pop(&ml_cleanup_frame_, (execute));                                                 \
    }                                                                                              \
    while (0)

#ifdef __cplusplus
}
#endif

#endif
