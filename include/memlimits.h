/* memlimits: limits on memory for programs that were never written for them.
 *
 * libmemlimits.so owns the process's malloc (preloaded with LD_PRELOAD, or linked with
 * -lmemlimits ahead of libc) over an embedded jemalloc, counts every allocation exactly and
 * enforces a hard heap cap and an allocation budget. This header is the client API: each
 * function says what it does, what it returns, and whether it may be called from any thread or
 * from a signal handler. Link with `pkg-config --cflags --libs memlimits`. */
#ifndef MEMLIMITS_H
#define MEMLIMITS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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
 * negative codes are errors. ml_strstatus() is generated from it. Codes never change meaning;
 * new ones are added at the end of their sign. What ml_run returns for which level's limit is
 * said at ml_run. */
#define ML_STATUS_MAP(X)                                                                           \
    X(ML_OK, 0, "success")                                                                         \
    X(ML_MEMORY_LIMIT, 1, "the global memory limit was exceeded")                                  \
    X(ML_ALLOCATION_LIMIT, 2, "the task's allocation limit was exceeded")                          \
    X(ML_TOKEN, 3, "the task's token was set")                                                     \
    X(ML_OUTER_LIMIT, 4, "a limit of an enclosing task fired")                                     \
    X(ML_HEAP_CAP, 5, "an allocation of the task was refused by the process heap cap")             \
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
 * behind by one flush interval of its requests: at most 2 MiB of heap, 128 KiB near a heap cap,
 * for requests of 64 bytes or more 320 KiB and 20 KiB (README "Accounting"). Thread-safe;
 * not async-signal-safe (it takes a lock). 0 when memlimits is not active. */
ML_API uint64_t ml_heap_live(void);

/* The highest live heap observed so far: checked at each thread's accounting flush (at least
 * once per flush interval, and after every allocation of 64 KiB or more that takes the slow
 * path), so it can miss a peak by the same per-thread bound as ml_heap_live, and can
 * exceed the true peak by at most 1 MiB of frees not yet accounted. Thread-safe and
 * async-signal-safe. */
ML_API uint64_t ml_heap_peak(void);

/* Bytes the calling thread has requested so far, exact: the sum of the sizes passed to malloc,
 * calloc (count times size), realloc (the new size), the aligned allocators and C++'s operator
 * new and new[] (the size they are asked for; a zero-byte request counts 0). Not counted:
 * allocations refused by a limit, and allocations of 1 MiB or more that fail for lack of memory (a
 * smaller one that fails that way may be counted). Thread-safe (it reads only the caller's state)
 * and async-signal-safe: the thread's own signal handlers cannot tear the read, and in a handler
 * that interrupted one of the thread's allocations inside memlimits, it is the count as of the
 * thread's last accounting event (it lags, never runs ahead). */
ML_API uint64_t ml_thread_allocated(void);

/* ------------------------------------------------------------------------------------------
 * Statistics, C's image of OCaml's Gc.stat (README "Statistics" maps every Gc field). Counts run
 * from the start of the process image; a forked child continues its parent's (its other threads
 * count as exited). "Exact" means exact for every thread that is not allocating or exiting
 * during the call; a thread allocating meanwhile is seen as of some instant of the call.
 *
 * ABI rule. Every field is a uint64_t, and new fields are only ever appended. Before each call
 * the caller sets `size` to sizeof(ml_stats) as it was compiled (ML_STATS_INIT does). The
 * library fills the fields that lie entirely within the first `size` bytes, zeroes the bytes
 * from the end of its own ml_stats up to `size` (fields of a newer header that this library
 * does not know), and sets `size` to the number of bytes it filled: the fields at offsets below
 * `size` on return are valid. With `size` below 8 (0: the caller forgot) nothing is written. */
typedef struct ml_stats {
    uint64_t size; /* in: the bytes the caller provides; out: the bytes filled */

    /* Allocation, exact. */
    uint64_t allocated_bytes;  /* requested bytes, all threads, exited ones included, as
                                  ml_thread_allocated counts them (realloc: the new size) */
    uint64_t allocations;      /* allocation calls (malloc, calloc, realloc, the aligned
                                  allocators, operator new, jemalloc's API), including those
                                  that a limit refused or that failed */
    uint64_t allocated_usable; /* jemalloc's per-thread counters of bytes allocated, in usable
                                  sizes (what blocks occupy: >= the request), summed over live
                                  and exited threads */
    uint64_t freed_bytes;      /* jemalloc's per-thread counters of bytes freed, in usable sizes,
                                  summed the same way: a realloc frees its old block's usable
                                  size. Not seen: frees by a thread after its last TLS destructor
                                  round, and by a thread that memlimits never registered
                                  (README "Statistics") */

    /* The heap, in usable sizes (README "Accounting, and its bound"). */
    uint64_t heap_live;   /* ml_stat: exact (it reconciles every thread, as ml_heap_live).
                             ml_quick_stat: the running sum, behind each allocating thread by at
                             most its flush interval (256 Ki charged units; 16 Ki near a heap cap,
                             64 Ki while a global-memory task runs) times the usable bytes per
                             unit of its requests (at most 1.25 from 64 bytes up, 8 at most:
                             README "Accounting, and its bound"); and not yet lowered by the frees a
                             thread   made since its last flush (a thread that only frees flushes only
                             when   reconciled: ml_stat, ml_heap_live, a refusal) */
    uint64_t heap_peak;   /* the highest live heap seen at a flush (ml_heap_peak): can miss a peak
                             by the flush bound and read at most 1 MiB high; ml_stat makes it at
                             least heap_live */
    uint64_t heap_cap;    /* the heap cap in force; ML_UNLIMITED: none */
    uint64_t heap_mapped; /* ml_stat: bytes jemalloc holds mapped for the heap (live blocks,
                             free room, its metadata), at least heap_live. ml_quick_stat: 0 */
    uint64_t heap_mapped_max; /* ml_stat: the highest heap_mapped seen by ml_stat or glibc's
                                 mallinfo family, at least heap_peak. ml_quick_stat: 0 */

    /* The process allocation budget (MEMLIMITS_ALLOC) and the global memory limit. Under
     * memlimit's tree mode, the tree's budget: used is what every process of the tree allocated,
     * and the other processes' unspent leases (1 MiB each at most) count as used. */
    uint64_t budget_total; /* ML_UNLIMITED: no budget (budget_used 0, budget_left ML_UNLIMITED) */
    uint64_t budget_used;  /* budget_total - budget_left */
    uint64_t budget_left;  /* ml_stat: exact (the threads' unspent leases count as left).
                              ml_quick_stat: leases count as spent, so it can be low by 1 MiB per
                              thread */
    uint64_t global_memory_limit; /* ml_global_memory_limit(); ML_UNLIMITED: none */

    /* The sampler. */
    uint64_t samples;         /* samples taken, all threads: about allocated_bytes / gap */
    uint64_t sample_mean_gap; /* MEMLIMITS_SAMPLE: the mean gap in bytes between samples */

    /* Threads. */
    uint64_t threads_live;       /* threads registered now (those that allocated, or were
                                    created through pthread_create, and have not exited) */
    uint64_t threads_registered; /* threads ever registered, exited ones included */

    /* The process-wide limits (README "Limits and actions"). */
    uint64_t heap_cap_fired;   /* 1 once the heap cap refused an allocation, else 0 */
    uint64_t heap_cap_refused; /* allocations the heap cap refused */
    uint64_t budget_fired;     /* 1 once the allocation budget refused an allocation, else 0 */
    uint64_t budget_refused;   /* allocations the budget refused */

    /* Tasks: ml_run (and its shorthands) counted when it returns the task's outcome; calls that
     * return an error ran no task and are not counted, nor is a task whose function left its
     * thread (pthread_exit). A nested task counts on its own. */
    uint64_t tasks_run;                    /* the sum of the six counts below */
    uint64_t tasks_ok;                     /* returned ML_OK */
    uint64_t tasks_interrupted_memory;     /* returned ML_MEMORY_LIMIT */
    uint64_t tasks_interrupted_allocation; /* returned ML_ALLOCATION_LIMIT */
    uint64_t tasks_interrupted_token;      /* returned ML_TOKEN */
    uint64_t tasks_interrupted_outer;      /* returned ML_OUTER_LIMIT */
    uint64_t tasks_heap_cap;               /* returned ML_HEAP_CAP */
} ml_stats;

/* An initialiser of an ml_stats ready for ml_stat and ml_quick_stat: `size` set, every other
 * field 0 (C99's designated initialisers; in C++, value-initialise and set `size`). */
#ifndef __cplusplus
#define ML_STATS_INIT                                                                              \
    {                                                                                              \
        .size = sizeof(ml_stats)                                                                   \
    }
#endif

/* Fills *out (see the ABI rule above) exactly: flushes the caller's accounting, reconciles every
 * thread's heap counters and reads jemalloc's statistics (which locks each of its arenas in
 * turn), then sums the threads' counters under the registry lock. Costs a walk over all threads
 * and arenas: not for a hot loop. Allocates nothing (but the zero-byte probe of the process's
 * first ml_active call). NULL: no effect. When memlimits is not
 * active (ml_active), every count is 0 and every limit ML_UNLIMITED. Thread-safe; not
 * async-signal-safe (it takes locks). */
ML_API void ml_stat(ml_stats *out);

/* ml_stat without the reconcile and without jemalloc's statistics: heap_live is the running sum
 * (within the bound stated at the field), budget_left counts the threads' leases as spent,
 * heap_mapped and heap_mapped_max are 0; every other field is as exact as ml_stat's. Takes only
 * the registry lock, once, to sum the threads' counters. Allocates nothing. NULL: no effect.
 * Thread-safe; not async-signal-safe. */
ML_API void ml_quick_stat(ml_stats *out);

/* Writes ml_stat's figures to file descriptor fd, one "name: value" line per field of ml_stats
 * but `size`, in the struct's order, named as the fields are; a value is a decimal number, or
 * "unlimited" for ML_UNLIMITED in a limit. Written with write(2) from a stack buffer (retrying
 * short writes and EINTR): no stdio, nothing allocated, so it may be called anywhere ml_stat
 * may. A write error ends the output silently. Thread-safe; not async-signal-safe. */
ML_API void ml_print_stats(int fd);

/* ------------------------------------------------------------------------------------------
 * Tokens. A token is a flag that, once set, interrupts every task running with it.
 *
 * Handles. An ml_token pointer is a handle, never dereferenced by memlimits without checking it
 * first: tokens live in memory memlimits maps itself and never returns to the system, and a
 * handle names both a slot of that memory and the slot's generation (how many times the slot
 * was handed out). Every function below therefore refuses, instead of crashing on:
 *  - a pointer that was never a token (anything outside token memory is refused without being
 *    read; inside it, anything but the handle of a live token is refused);
 *  - a destroyed token's handle (stale), until the window below.
 * The remaining window: a destroyed token's slot is handed out again only after at least 1024
 * other tokens have been destroyed since (a FIFO quarantine; earlier only when memory for new
 * slots cannot be had), and each hand-out changes the slot's generation, which a handle carries
 * modulo 256. So a stale handle is refused until its slot has been handed out 256 more times,
 * that is, until at least 262,144 tokens have been destroyed after it; from then on it may name
 * the token then in the slot. A destroy that races with ml_token_set on the same token never
 * sets the next token in the slot (the set checks the generation and sets atomically).
 */
typedef struct ml_token ml_token;

/* A new, unset token, or NULL (errno ENOMEM) when memory for it cannot be had. Thread-safe; not
 * async-signal-safe (it takes a lock). */
ML_API ml_token *ml_token_create(void);

/* Sets the token, for good: every task running with it is interrupted.
 *  - On the calling thread (a task that sets its own token, or an enclosing task's token from a
 *    nested task), at once: after ml_token_set returns, the task's next allocation outside a
 *    masked section is refused (or unwinds, with ML_UNWIND). From a signal handler running on
 *    the task's thread, the same holds from the moment the handler returns, even if the handler
 *    interrupted memlimits itself.
 *  - On other threads, at their next allocation event (within 32 KiB of allocation) or poll, at
 *    once if they run with ML_WAKE (their blocked system calls return EINTR), and at once for a
 *    task waiting in ml_cond_wait or ml_cond_timedwait.
 *  - The token's descriptor (ml_token_fd), if one was asked for, becomes readable.
 * Whatever the task does afterwards, ml_run reports ML_TOKEN (see ml_run). Thread-safe and
 * async-signal-safe: it may be called from a signal handler. NULL, a destroyed token or a
 * pointer that was never a token (see "Handles"): no effect. */
ML_API void ml_token_set(ml_token *token);

/* Nonzero when the token is set; 0 when it is not, or is NULL, destroyed or not a token.
 * Thread-safe and async-signal-safe. */
ML_API int ml_token_is_set(const ml_token *token);

/* Destroys the token, and closes its descriptor if it has one (take it out of your poll sets
 * first). Tasks still running with it are not interrupted by it any more. NULL, an already
 * destroyed token or a pointer that was never a token: no effect. Thread-safe; not
 * async-signal-safe (it takes a lock). */
ML_API void ml_token_destroy(ml_token *token);

/* A file descriptor that is readable once the token is set, for poll, epoll and select loops:
 * an eventfd (non-blocking, close-on-exec). Created on the first call for the token; later calls
 * return the same descriptor; it stays valid until ml_token_destroy closes it. Once the token is
 * set it stays readable for good, whoever reads from it (each read returns 1 and takes 1 off a
 * count of 2^40 or more). Before, a read fails with EAGAIN. Do not close it, write to it or
 * change its flags. Setting the token stays async-signal-safe: ml_token_set only writes to the
 * descriptor. Returns -1 with errno EINVAL for NULL, a destroyed token or a pointer that was
 * never a token, or with eventfd's errno (EMFILE, ENFILE, ENOMEM...) when the descriptor cannot
 * be made (a later call tries again). Thread-safe; not async-signal-safe (it takes a lock). */
ML_API int ml_token_fd(ml_token *token);

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
 * returns).
 * Leaving a task without returning. fn (or a signal handler running inside the task) may leave
 * ml_run by longjmp, _longjmp, siglongjmp or __longjmp_chk to a point outside the task, or the
 * thread by pthread_exit or a cancellation. The C library tells memlimits while the frames it
 * discards still exist: the cleanups registered in those frames run, innermost first, masked,
 * and every task whose ml_run frame is discarded is left, as by an unwind: the thread is outside
 * it from then on (its limits no longer apply, the thread's count goes on), it is off the
 * process's lists (no other thread touches its frame again), and the thread's mask depth is what
 * it was when the task started. That ml_run never returns, so `allocated` is not written. A jump
 * that lands inside an enclosing task leaves only the tasks nested inside the landing point; the
 * enclosing task goes on under its limits. A C++ exception out of fn leaves ml_run the same way,
 * except that the cleanups registered in the frames it unwound do not run: those frames are gone
 * when ml_run sees the exception (in C++, release resources in destructors; an exception must
 * not cross ML_CLEANUP_PUSH/ML_CLEANUP_POP or ml_with_resource unless it also leaves the task).
 * The frames a jump discards are those below the stack pointer it restores, on the thread's own
 * stack (stacks grow down): a jump back into the task, or within an alternate signal stack that
 * is not part of the thread's stack, leaves the task alone. Not seen: __builtin_longjmp, jumps of
 * a setjmp other than the C library's, and user-level context switches (swapcontext,
 * coroutines), which tasks do not follow. A signal handler running on an alternate stack carved
 * out of the thread's own stack (a buffer in an enclosing frame) must not jump within that stack
 * while a task runs: the C library then forgets its records of the task until ml_run returns.
 * Nested tasks: an inner limit never extends an outer one, every allocation counts against
 * every enclosing limit, and an interrupt of an enclosing task interrupts the tasks inside it
 * (their ml_run returns ML_OUTER_LIMIT; see ml_run for which level reports what).
 * Threads created by a task do not inherit its limits; threads without a task are never
 * affected.
 */
enum { ML_UNWIND = 1u << 0, ML_WAKE = 1u << 1 };

typedef struct ml_limits {
    uint64_t allocations; /* bytes the task may allocate; 0 or ML_UNLIMITED: no limit */
    int global_memory;    /* nonzero: interrupt when the global memory limit is exceeded */
    ml_token *token;      /* interrupt when set; NULL: none */
    unsigned flags;       /* ML_UNWIND, ML_WAKE */
} ml_limits;

/* Runs fn(arg) on the calling thread as a task under `limits`, and returns what ended it, by
 * level. The rule is memprof-limits': a task returns an interrupt as its own error only when its
 * own limit fired; an interrupt of an enclosing task is that task's to report. In order:
 *  - ML_ALLOCATION_LIMIT, ML_MEMORY_LIMIT or ML_TOKEN: a limit of this task's own `limits`
 *    fired (the first to fire), whether or not an enclosing task's fired too;
 *  - ML_OUTER_LIMIT: none of its own fired, but a limit of an enclosing task did, while it
 *    ran or before it started, and interrupted it. The caller is itself running in that task
 *    and is being interrupted: it should wrap up; the enclosing ml_run returns that task's own
 *    status;
 *  - ML_HEAP_CAP: no task limit fired (its own or an enclosing one), and an allocation of the
 *    task (or of a task nested in it, masked or not) was refused by the process heap cap
 *    (ml_set_heap_cap, MEMLIMITS_HEAP with the enomem action, or a signal action the program
 *    survives): the task was not interrupted, it got a NULL because the process, not the
 *    task, is out of room;
 *  - ML_OK: none of the above.
 * So an enclosing task tells its own limit from an inner one's: an inner task's own limit
 * interrupts only the inner task (its ml_run returns the reason; the enclosing task goes on, and
 * its ml_run returns ML_OK unless something else happens). Errors, without running fn:
 * ML_EINVAL (limits or fn NULL, unknown flags, a token that is destroyed or not a token),
 * ML_ENOTACTIVE (memlimits does not own malloc), ML_ESIGNAL (ML_WAKE, and the wake-up signal
 * has a handler the program installed), ML_ENOMEM (ML_WAKE, and the waker thread cannot be
 * started).
 * `allocated`, when not NULL, receives the exact bytes the task requested (as counted by
 * ml_thread_allocated), masked allocations and nested tasks included, refused ones excluded.
 * The allocation limit is exact: the task is interrupted at the first allocation that takes
 * its count above `allocations`, never before. A token already set, or a global limit already
 * exceeded, makes the task start interrupted. Thread-safe: each thread runs its own tasks.
 *
 * The status says what happened while the task ran, whatever the task did: when fn returns,
 * the tokens of the task and of the tasks enclosing it, and the live heap against the global
 * limit, are looked at one last time, so a task that sleeps or computes without allocating
 * while another thread sets its token (without ML_WAKE) returns ML_TOKEN, not ML_OK, as
 * memprof-limits turns a normal return into an error when the task's token is set. The status
 * does not depend on whether the task polled ml_is_interrupted(). One exception: a live heap
 * that crossed the global limit and came back under it before fn returned is reported only if
 * the crossing was seen meanwhile (by an allocation event or a poll of the task, or by another
 * thread's accounting flush, which marks every global-memory task). */
ML_API ml_status ml_run(const ml_limits *limits, void (*fn)(void *arg), void *arg,
                        uint64_t *allocated);

/* ml_run with only the global memory limit. */
ML_API ml_status ml_limit_global_memory(void (*fn)(void *arg), void *arg);
/* ml_run with only an allocation limit of `limit` bytes (0 or ML_UNLIMITED: none). */
ML_API ml_status ml_limit_allocations(uint64_t limit, void (*fn)(void *arg), void *arg,
                                      uint64_t *allocated);
/* ml_run with only a token; a NULL token is ML_EINVAL. */
ML_API ml_status ml_limit_with_token(ml_token *token, void (*fn)(void *arg), void *arg);

/* The global memory limit: tasks run with global_memory are interrupted once the live heap
 * exceeds it, before they allocate 256 KiB more. ML_UNLIMITED (the default, unless
 * MEMLIMITS_GLOBAL is set): none. Thread-safe. */
ML_API void ml_set_global_memory_limit(uint64_t bytes);
ML_API uint64_t ml_global_memory_limit(void);

/* Nonzero when the calling thread's task (or a task enclosing it) has a pending interrupt: it
 * looks at the tasks' tokens and at the global limit. Never delivers by itself, and what ml_run
 * returns does not depend on it (but see ml_run on a global-limit crossing undone before the
 * task returned); once it has returned nonzero, the task's next allocation outside a masked
 * section delivers (refused, or unwinds with ML_UNWIND). 0 outside tasks. Thread-safe (reads
 * the caller's state). */
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

/* Nonzero when the calling thread is masked: between ml_mask and its matching ml_unmask, and
 * wherever memlimits masks it itself (acquire and release of ml_with_resource, the cleanups of
 * ML_CLEANUP_PUSH when they run). Inside tasks and outside them. memprof-limits'
 * Masking.is_blocked: a release function can assert it. Thread-safe (reads the caller's state)
 * and async-signal-safe: in a signal handler it says whether the code the handler interrupted
 * was masked. */
ML_API int ml_is_masked(void);

/* Bytes the calling thread's innermost task has requested since it started, exact, counted as
 * ml_thread_allocated counts them (masked allocations and nested tasks included, refused ones
 * excluded): what ml_run would store in `allocated` if the task returned now. 0 outside tasks.
 * It reads only the calling thread's state: no lock, no allocation event, cheap enough to call
 * in a loop. Thread-safe and async-signal-safe (in a signal handler, about the task the handler
 * interrupted; it may lag there as ml_thread_allocated does). */
ML_API uint64_t ml_task_allocated(void);

/* Bytes the calling thread's innermost task may still request before an allocation limit
 * interrupts it: the least, over the task and the enclosing tasks that have an allocation
 * limit, of that task's limit minus what that task has allocated; 0 once a masked allocation
 * took a count past its limit. An allocation of exactly this many bytes is admitted by the
 * allocation limits, one of a byte more fires the tightest. ML_UNLIMITED when neither the task
 * nor an enclosing task has an allocation limit, and outside tasks. It says nothing of other
 * limits, or of an interrupt already pending (see ml_is_interrupted). Exact, no lock, no event,
 * thread-safe and async-signal-safe, as ml_task_allocated. */
ML_API uint64_t ml_task_remaining(void);

/* ------------------------------------------------------------------------------------------
 * Condition waits a task can be interrupted out of. POSIX restarts pthread_cond_wait after a
 * signal handler, so a task blocked in pthread_cond_wait is reached neither by tokens nor by
 * ML_WAKE: it stays blocked until the condition is signalled. ml_cond_wait and
 * ml_cond_timedwait take pthread_cond_wait's and pthread_cond_timedwait's arguments and give
 * their results, with the mutex held on return in every case, and also return when the calling
 * thread's task is interrupted: its token or an enclosing task's is set, the global memory limit
 * it runs under is exceeded, or an interrupt was already pending when it was called (then it
 * does not wait).
 *  - Interrupted, in ML_UNWIND mode (the innermost task's flags): a cancellation point; it
 *    unwinds to the innermost ml_run, running the cleanups with the mutex held, as a pthread
 *    cancellation in pthread_cond_wait does: register a cleanup that unlocks it. In the default
 *    mode, and in a signal handler (nothing is unwound out of one), it returns ECANCELED, so
 *    that `while (!ready) if (ml_cond_wait(&c, &m) != 0) break;` ends.
 *  - Otherwise: 0 when woken (pthread_cond_signal or _broadcast, or spuriously: loop on your
 *    predicate, as with pthread); ETIMEDOUT once abstime has passed (on the condition's clock:
 *    CLOCK_REALTIME unless pthread_condattr_setclock said otherwise); pthread's own errors.
 *  - An interrupt wakes the waiter with pthread_cond_broadcast, from memlimits' waker thread
 *    (which repeats it until the waiter is out): other waiters of the condition may see a
 *    spurious wake-up.
 *  - Outside tasks, and while masked (nothing is delivered then): exactly pthread_cond_wait and
 *    pthread_cond_timedwait.
 *  - ENOMEM, without waiting: the task can be interrupted from another thread (a token or the
 *    global limit) and memlimits' waker thread, started by the first such wait, cannot be.
 *  - EINVAL, without waiting: cond or mutex NULL, or abstime NULL for ml_cond_timedwait.
 * Cost: where a limit of the task or of an enclosing one can fire from another thread, a walk
 * of the task chain, two atomic stores and a load per remote task, and the token checks of
 * ml_is_interrupted, around pthread_cond_wait: 15 ns a call, against microseconds for the wait
 * (README, "Tokens in event loops and condition waits"); elsewhere a few loads. Thread-safe;
 * not async-signal-safe (nor is pthread_cond_wait); a pthread cancellation point, as
 * pthread_cond_wait. */
ML_API int ml_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex);
ML_API int ml_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                             const struct timespec *abstime);

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
 * masked, and so does a longjmp, pthread_exit or cancellation that discards the frame (see
 * "Leaving a task without returning"), once; ML_CLEANUP_POP(1) runs it masked on the normal path,
 * ML_CLEANUP_POP(0) drops it. Outside tasks nothing but ML_CLEANUP_POP(1) runs it. */
typedef struct ml_cleanup {
    struct ml_cleanup *prev;
    void (*fn)(void *arg);
    void *arg;
    void *owner;            /* the task whose unwind runs it; NULL outside tasks */
    void *thread_record[4]; /* the C library's record of the frame (a jump or exit runs it) */
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

/* ------------------------------------------------------------------------------------------
 * Memprof: the sampler as a profiler (OCaml's Gc.Memprof for C). A profile samples every
 * allocated byte of every thread (threads created later included) independently with
 * probability 1/mean_gap, so a block of n bytes carries Binomial(n, 1/mean_gap) samples
 * (reproducible with MEMLIMITS_SEED); a block with at least one sample is a sampled block, and
 * the tracker's callbacks see it:
 *  - alloc: on the allocating thread, after the block exists, before the allocation returns;
 *    returns the value to track the block with, NULL not to track it, or ML_MEMPROF_REFUSE to
 *    make the allocation fail (the block is released; NULL and ENOMEM; not counted by
 *    ml_thread_allocated), C's image of a raising callback;
 *  - realloc: a tracked block was moved or resized by realloc (the new block is in `a`, kind
 *    ML_ALLOC_REALLOC, n_samples the samples of the new request, possibly 0); returns the new
 *    tracking value, or NULL to stop tracking it (no free callback then). A NULL realloc
 *    pointer: a free of the old block and, if the new request was sampled, an alloc. When no
 *    tracked block can be had for the new block (ml_memprof_untracked), the free callback runs
 *    instead, at once;
 *  - free: exactly once per tracked block, whatever thread frees it and however (free,
 *    realloc, free_sized, free_aligned_sized, C++ delete, jemalloc's dallocx, sdallocx and
 *    rallocx), on the freeing thread, after the block is released: at that thread's next
 *    allocation (free itself stays jemalloc's code, so it returns first), or at once when the
 *    block was released by realloc or by memlimits; at the latest when the thread calls
 *    ml_memprof_start/stop/discard or ml_heap_profile_write, or exits.
 * Callbacks run with no memlimits or jemalloc lock held. While a callback runs on a thread,
 * that thread samples nothing and runs no other callback: its allocations succeed, are counted
 * by the limits, and are not sampled; a tracked block it frees gets its free callback after
 * the running callback returns. Callbacks of one profile may run on several threads at once.
 * Several profiles may run at once (at most ML_MEMPROF_MAX, the built-in heap profile of
 * MEMLIMITS_PROFILE included): each has its own mean gap and its own independent samples, and
 * sees only the blocks it sampled. A profile covers a thread from that thread's first
 * allocation event after ml_memprof_start (the calling thread: at once; others: within their
 * next 1 MiB of allocation). A forked child inherits no profile: no callback of the parent's
 * profiles ever runs in it.
 * jemalloc's own API: mallocx's sampled blocks are tracked with the flags honoured (alignment,
 * zeroing); rallocx is realloc (realloc callbacks for a tracked block, an alloc callback of kind
 * ML_ALLOC_REALLOC when its sampled request moves an untracked block); a thread cache the flags
 * name changes nothing. Flags that name an arena (MALLOCX_ARENA) keep the block in that arena,
 * untracked, since arena.<i>.reset and .destroy release its blocks without a free (a tracked
 * block rallocx'd there gets its free callback at once); xallocx never moves a block, so its
 * sampled charge (size + extra) is untracked too, and a tracked block keeps its size (no
 * callback). ml_memprof_untracked counts such blocks. A rallocx without MALLOCX_ARENA is
 * realloc whatever arena the block was in (jemalloc too moves such a block to the thread's arena
 * when it cannot resize it in place): pass MALLOCX_ARENA to keep a block in its arena.
 * Cost: sampled blocks of up to 14 KiB occupy a 16 KiB extent of a dedicated arena (counted in
 * the live heap at their own size); sampled blocks between 14 and 32 KiB are allocated 40 KiB.
 */
#define ML_MEMPROF_MAX 4

/* What made a sampled block: malloc, and mallocx without the flags below; calloc, and mallocx
 * with MALLOCX_ZERO; realloc and rallocx (in an alloc callback: an untracked block moved by a
 * sampled request); posix_memalign, aligned_alloc, memalign, valloc, pvalloc, and mallocx with
 * MALLOCX_ALIGN or MALLOCX_LG_ALIGN (zeroed or not); C++'s operator new, every variant. */
typedef enum ml_alloc_kind {
    ML_ALLOC_MALLOC,
    ML_ALLOC_CALLOC,
    ML_ALLOC_REALLOC,
    ML_ALLOC_ALIGNED,
    ML_ALLOC_NEW
} ml_alloc_kind;

typedef struct ml_allocation {
    uint64_t n_samples; /* samples that fell in this block, >= 1 (realloc callback: >= 0) */
    size_t size;        /* requested bytes */
    void *block;        /* the new block */
    ml_alloc_kind kind;
    unsigned callstack_len; /* <= the callstack_size given to start */
    void *const *callstack; /* return addresses, innermost first; valid during the callback */
} ml_allocation;

typedef struct ml_tracker {
    void *(*alloc)(const ml_allocation *a, void *ctx);
    void *(*realloc)(void *tracked, const ml_allocation *a, void *ctx);
    void (*free)(void *tracked, void *ctx);
    void *ctx;
} ml_tracker;
#define ML_MEMPROF_REFUSE ((void *)1)

typedef struct ml_profile ml_profile;

/* Starts a profile: mean_gap >= 1 bytes between samples on average, callstacks of up to
 * callstack_size frames (0: none; at most 256), and the tracker (copied; NULL callbacks are
 * skipped). Returns NULL with errno EINVAL (bad argument), EAGAIN (ML_MEMPROF_MAX profiles not
 * yet discarded) or ENOMEM (no address space for the tracked arena). Thread-safe. */
ML_API ml_profile *ml_memprof_start(uint64_t mean_gap, unsigned callstack_size,
                                    const ml_tracker *tracker);
/* Stops sampling for the profile: no alloc callback of it starts after this returns (it waits
 * for those running on other threads); realloc and free callbacks continue. Thread-safe; may be
 * called from any thread, a callback included. NULL or stopped: no effect. */
ML_API void ml_memprof_stop(ml_profile *p);
/* Ends a stopped profile (stops it if it runs): no callback of it runs after this returns (it
 * waits for those running on other threads); its tracked blocks are forgotten; p is freed. NULL:
 * no effect. Thread-safe; not from a callback of the same profile. */
ML_API void ml_memprof_discard(ml_profile *p);

/* The sampled blocks the profile could not track, and their samples in *samples (when not NULL):
 * blocks of jemalloc's mallocx and rallocx that the flags put in an arena the program names
 * (MALLOCX_ARENA), the charge (size + extra) of xallocx, which never moves a block, and
 * sampled blocks for which no tracked block could be had. No callback ran for them; each is
 * counted once, with Binomial(n, 1/mean_gap) samples like any block. Counts run from
 * ml_memprof_start; valid until ml_memprof_discard. NULL: 0. Thread-safe (relaxed reads: a block
 * being allocated on another thread may not be counted yet). */
ML_API uint64_t ml_memprof_untracked(const ml_profile *p, uint64_t *samples);

/* Writes a heap profile of the built-in heap profile (MEMLIMITS_PROFILE) to `path` ("%p": the
 * pid), in the gperftools heap-profile text format that jeprof, google-pprof and go tool pprof
 * read: the sampled live blocks by callstack. Returns 0, or -1 with errno (ENOENT: no heap
 * profile runs; or why the file could not be written). Thread-safe. */
ML_API int ml_heap_profile_write(const char *path);

#ifdef __cplusplus
}
#endif

#endif
