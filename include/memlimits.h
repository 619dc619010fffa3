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
#define ML_STATUS_MAP(X)                                                                        \
    X(ML_OK, 0, "success")                                                                      \
    X(ML_MEMORY_LIMIT, 1, "the global memory limit was exceeded")                               \
    X(ML_ALLOCATION_LIMIT, 2, "the task's allocation limit was exceeded")                       \
    X(ML_TOKEN, 3, "the task's token was set")                                                  \
    X(ML_EINVAL, -1, "invalid argument")                                                        \
    X(ML_ENOTACTIVE, -2, "memlimits does not own malloc in this process")

typedef enum ml_status {
#define ML_STATUS_ENUM(name, code, text) name = code,
    ML_STATUS_MAP(ML_STATUS_ENUM)
#undef ML_STATUS_ENUM
} ml_status;

/* A static, human-readable description of `status`, or "unknown status" for a value that is not
 * in the table. Never NULL. Thread-safe and async-signal-safe. */
ML_API const char *ml_strstatus(ml_status status);

/* Nonzero when memlimits owns malloc in this process, i.e. calls to malloc resolve to
 * libmemlimits.so (it was preloaded, or linked ahead of libc). Zero when the library was merely
 * loaded (dlopen) after another allocator took malloc: then no limit applies and ml_set_heap_cap
 * and the task functions refuse with ML_ENOTACTIVE. Thread-safe. */
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
 * behind by at most 64 KiB of requests (README "Accounting"). Thread-safe; not
 * async-signal-safe (it takes a lock). 0 when memlimits is not active. */
ML_API uint64_t ml_heap_live(void);

/* The highest live heap observed so far: checked at each thread's accounting flush (every 64 KiB
 * of requests, and at every allocation the heap cap or budget examines), so it can miss a peak
 * by the same per-thread bound as ml_heap_live, and can exceed the true peak by at most 1 MiB
 * of frees not yet accounted. Thread-safe and async-signal-safe. */
ML_API uint64_t ml_heap_peak(void);

/* Bytes the calling thread has requested so far, exact: the sum of the sizes passed to malloc,
 * calloc (count times size), realloc (the new size), the aligned allocators and the C++
 * operators through them, a zero-byte request counting as one byte; refused allocations are not
 * counted. Thread-safe (it reads only the caller's state) and async-signal-safe. */
ML_API uint64_t ml_thread_allocated(void);

#ifdef __cplusplus
}
#endif

#endif
