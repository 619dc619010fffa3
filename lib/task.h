/* Tasks, tokens, masking and interrupt delivery: the engine side of ml_run (api.c) and of the
 * masking and resource functions of memlimits.h.
 *
 * A task is an ml_task on ml_run's stack, linked from the thread's state (innermost first).
 * Its allocation limit is a deadline on the thread's exact allocation count, folded into the
 * countdown as `task_left`, so an allocation crossing it is always an event. Token and
 * global-memory tasks are also linked on a process-wide list, under the registry lock, so that
 * other threads can mark them pending; a task with ML_WAKE is then also sent the wake-up
 * signal (wake.c), whose handler only forces the thread's next allocation to be an event. */
#ifndef ML_TASK_H
#define ML_TASK_H

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>

#include "host.h"
#include "memlimits.h"
#include "thread.h"

/* Bytes a token or global-memory task may allocate between two events: how long a task can go
 * before it notices an interrupt raised on another thread. */
#define ML_REMOTE_CHECK_BYTES ((uint64_t)32 << 10)

/* What the slow path decides about an allocation. */
typedef enum ml_verdict {
    ML_ALLOW = 0,    /* go ahead */
    ML_REFUSE,       /* fail it: NULL and ENOMEM */
    ML_REFUSE_UNWIND /* fail it, and unwind the task (ML_UNWIND) if the caller may be unwound */
} ml_verdict;

typedef struct ml_task {
    struct ml_task *parent;
    ml_thread *thread;
    int tid;
    unsigned flags;
    int global;
    ml_token *token;
    uint64_t start;    /* the thread's exact allocation count when the task started */
    uint64_t deadline; /* the count above which the task is over its limit; ML_NONE: none */
    int pending;       /* why the task is interrupted (ml_status > 0); 0: it is not */
    int woken;         /* the wake-up signal was sent for the pending interrupt */
    int heap_refused;  /* the heap cap refused an allocation of the task or of one nested in it */
    /* A condition wait of the thread (cond.c), on remote tasks only: the condition the waker
     * broadcasts once the task is interrupted, and the waker's count of broadcasts in flight,
     * which the waiter lets drop to 0 before it leaves (the condition may go away then). */
    void *waiting;
    int wait_broadcasts;
    uint32_t mask_at_start;
    sigset_t signals_at_start; /* the thread's signal mask when ml_run started */
    ml_cleanup *cleanups;
    struct ml_task *remote_next, **remote_pprev; /* process-wide list, under registry lock */
    /* The C library's record of the task (host.h): a longjmp, pthread_exit or cancellation
     * that discards ml_run's frame runs it while the frame still exists. */
    ml_host_cleanup thread_record;
    sigjmp_buf jump;
} ml_task;

/* ml_run's body, once its arguments are checked (api.c): links `k` as t's innermost task under
 * `limits` (marked at once if its token is already set or the heap is already over the global
 * limit), runs fn(arg), takes the task off every list and returns why it ended: its own or an
 * enclosing task's pending reason, with tokens and the global limit looked at one last time. The
 * exact bytes it allocated go to *allocated (may be NULL). `k` must be in ml_run's own frame,
 * above the frame of this call, and stay there until it returns: a C++ exception out of fn
 * leaves through ml_run, whose cleanup calls ml__task_thrown(k). Owner thread; t registered. */
ml_status ml__task_run(ml_thread *t, ml_task *k, const ml_limits *limits, void (*fn)(void *arg),
                       void *arg, uint64_t *allocated);
/* A cleanup for ml_run's frame (compiled with -fexceptions): when a C++ exception leaves ml_run,
 * the task it held is still the thread's innermost task; unlink it and restore the thread's
 * mask, without running its cleanups, whose frames the exception has already unwound. No effect
 * when the task was left otherwise (ml_run returned; a jump, pthread_exit or cancellation, which
 * the task's record with the C library saw first). */
void ml__task_thrown(ml_task *k);
/* How many tasks ml_run ended with `status` (ML_OK, or an interrupt's reason), since
 * the process started (a forked child continues its parent's counts); 0 for any other value.
 * Any thread; lock-free. */
uint64_t ml__task_ended(ml_status status);

/* Called by the slow path (busy) for a thread running a task, before an allocation of n bytes:
 * updates pending interrupts and says whether the allocation may go ahead. */
ml_verdict ml__task_decide(ml_thread *t, uint64_t n);
/* The task component of the countdown, after the allocation at hand. */
uint64_t ml__task_left(ml_thread *t);
/* Whether the innermost task may be unwound from here: not from a signal handler, which shows
 * as signals blocked now that were not when the task started (a handler blocks its own signal).
 * Nothing is ever unwound out of a signal handler. */
int ml__task_may_unwind_now(ml_thread *t);
/* Unwinds the calling thread's innermost task to its ml_run: cleanups first. Never returns. */
__attribute__((noreturn)) void ml__task_unwind(ml_thread *t);

/* The thread's exact count of requested bytes (ml_thread_allocated), read so that the thread's
 * own signal handlers cannot tear it: the fields are read again until two reads agree, and a
 * handler that interrupted memlimits' own code (busy, the fields mid-update) gets the count as
 * of the thread's last event, which lags by the allocations made since (and, between the two
 * instructions of the fast path's charge, the count lags by one byte). Owner thread, or a
 * signal handler on it; async-signal-safe. */
uint64_t ml__allocated_now(const ml_thread *t);

/* The heap cap refused an allocation of the thread (event.c): recorded on its innermost task,
 * if any, for ml_run's ML_HEAP_CAP. Owner thread, busy. */
void ml__task_heap_refused(ml_thread *t);

/* Condition waits (cond.c), around the wait itself. ml__task_wait_begin registers `cond` on the
 * remote tasks of the thread's task chain (those a token or the global limit can interrupt from
 * another thread), so that the waker broadcasts it once one of them is interrupted; it starts
 * the waker if needed. Returns 0 when none of the chain is remote (nothing to register: only a
 * pending interrupt can end the wait early), 1 when registered, or an ml_status error
 * (ML_ENOMEM: no waker). ml__task_wait_end undoes the registration and returns once the waker
 * no longer touches `cond`. Owner thread, in a task. */
int ml__task_wait_begin(ml_thread *t, void *cond);
void ml__task_wait_end(ml_thread *t);

/* The live heap passed the global memory limit (seen by any thread at a flush): mark every
 * global-memory task pending. */
void ml__task_global_exceeded(void);
uint64_t ml__global_limit(void);
void ml__task_set_global_limit(uint64_t bytes);
/* The waker's scan (wake.c calls it under the registry lock): marks the remote tasks whose
 * token is set or whose global limit is crossed, signals the ML_WAKE ones and broadcasts the
 * conditions waited on in the others' threads. Returns nonzero while a waiter it broadcast to
 * has not left its wait (the broadcast may have come before the waiter was inside
 * pthread_cond_wait): the waker calls it again soon. */
int ml__task_wake_scan(void);
/* In the fork child (thread.h's fork_child hook, same contract): the forking thread's tasks get
 * its new thread id; after a multithreaded parent, only its tasks stay linked, and if one has
 * ML_WAKE a waker is started for the child. */
void ml__task_fork_child(int multithreaded);

#endif
