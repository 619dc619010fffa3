/* Tasks, tokens, masking and interrupt delivery: the engine side of ml_run (see memlimits.h).
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

/* The verdict of ml__task_decide asking the caller to unwind the task. */
#define ML_VERDICT_UNWIND (-1)

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

/* Called by the slow path (busy) for a thread running a task, before an allocation of n bytes:
 * updates pending interrupts, and returns 0 (go ahead), ENOMEM (refuse) or ML_VERDICT_UNWIND
 * (refuse; the caller should unwind if it may). */
int ml__task_decide(ml_thread *t, uint64_t n);
/* The task component of the countdown, after the allocation at hand. */
uint64_t ml__task_left(ml_thread *t);
/* Whether an allocation whose caller returns to `ret` may unwind: not from inside the C library
 * or the dynamic loader. */
int ml__task_caller_may_unwind(const void *ret);
/* Whether the innermost task may be unwound from here: not from a signal handler, which shows
 * as signals blocked now that were not when the task started (a handler blocks its own signal).
 * Nothing is ever unwound out of a signal handler. */
int ml__task_may_unwind_now(ml_thread *t);
/* Unwinds the calling thread's innermost task to its ml_run: cleanups first. Never returns. */
__attribute__((noreturn)) void ml__task_unwind(ml_thread *t);
/* The live heap passed the global memory limit (seen by any thread at a flush): mark every
 * global-memory task pending. */
void ml__task_global_exceeded(void);
/* Number of global-memory tasks running, for the slow path's cheap test. */
extern int ml__global_tasks;
uint64_t ml__global_limit(void);
/* Sets the global memory limit without initialising (init.c, from MEMLIMITS_GLOBAL). */
void ml__task_set_global_limit(uint64_t bytes);
void ml__task_fork_child(void);

#endif
