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
    uint32_t mask_at_start;
    sigset_t signals_at_start; /* the thread's signal mask when ml_run started */
    ml_cleanup *cleanups;
    struct ml_task *remote_next, **remote_pprev; /* process-wide list, under registry lock */
    sigjmp_buf jump;
} ml_task;

/* ml_run's two halves around the call of the task's function (api.c): enter links `k` (on
 * ml_run's stack) as t's innermost task under `limits` (validated by the caller), marks it at
 * once if its token is already set or the heap is already over the global limit, and arms its
 * limit; leave takes it off every list and returns why it ended (its own or an enclosing task's
 * pending reason, tokens and the global limit looked at one last time), storing the exact bytes
 * it allocated in *allocated (may be NULL). Owner thread; t is registered. */
void ml__task_enter(ml_thread *t, ml_task *k, const ml_limits *limits);
ml_status ml__task_leave(ml_thread *t, ml_task *k, uint64_t *allocated);
/* A pthread cleanup handler for ml_run: the task's function left the thread (pthread_exit,
 * cancellation): release what the task registered, as an unwind would, and unlink it. */
void ml__task_abandoned(void *task);

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

/* The live heap passed the global memory limit (seen by any thread at a flush): mark every
 * global-memory task pending. */
void ml__task_global_exceeded(void);
uint64_t ml__global_limit(void);
void ml__task_set_global_limit(uint64_t bytes);
/* The waker's scan (wake.c calls it under the registry lock): marks and signals the ML_WAKE
 * tasks whose token is set or whose global limit is crossed. */
void ml__task_wake_scan(void);
/* In the fork child (thread.h's fork_child hook, same contract): the forking thread's tasks get
 * its new thread id; after a multithreaded parent, only its tasks stay linked, and if one has
 * ML_WAKE a waker is started for the child. */
void ml__task_fork_child(int multithreaded);

#endif
