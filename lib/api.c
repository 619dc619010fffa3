/* The client API's entry into the engine (include/memlimits.h): status names, whether memlimits
 * owns malloc, the heap cap, the global memory limit, the heap and thread counters, and ml_run
 * with its shorthands over the task module's ml__task_run. */
#define _GNU_SOURCE
#include "memlimits.h"

#include "engine.h"
#include "heap.h"
#include "host.h"
#include "init.h"
#include "task.h"
#include "token.h"
#include "wake.h"

const char *ml_strstatus(ml_status status)
{
    switch (status) {
#define ML_STATUS_CASE(name, code, text)                                                           \
    case name:                                                                                     \
        return text;
        ML_STATUS_MAP(ML_STATUS_CASE)
#undef ML_STATUS_CASE
    }
    return "unknown status";
}

int ml_active(void)
{
    return ml__host_owns_malloc(&ml__self.allocations_down);
}

void ml_set_heap_cap(uint64_t bytes)
{
    if (!ml_active()) return;
    if (!ml__initialised()) ml__init();
    ml__heap_set_cap(bytes);
}

uint64_t ml_heap_cap(void)
{
    return ml__heap_cap();
}

uint64_t ml_heap_live(void)
{
    if (!ml_active()) return 0;
    ml_thread *t = &ml__self;
    if (t->state != ML_THREAD_NEW && !t->busy) {
        t->busy = 1;
        ml__heap_flush(t);
        t->busy = 0;
    }
    ml__heap_reconcile();
    return ml__heap_live();
}

uint64_t ml_heap_peak(void)
{
    return ml__heap_peak();
}

uint64_t ml_thread_allocated(void)
{
    return ml__allocated_now(&ml__self);
}

void ml_set_global_memory_limit(uint64_t bytes)
{
    if (!ml__initialised()) ml__init();
    ml__task_set_global_limit(bytes);
}

uint64_t ml_global_memory_limit(void)
{
    if (!ml__initialised()) ml__init();
    return ml__global_limit();
}

/* What ml_run needs before a task can start: valid arguments, memlimits owning malloc, the
 * thread registered, and the wake-up signal or the system text ranges when asked for. */
static ml_status prepare(const ml_limits *limits, void (*fn)(void *arg))
{
    if (limits == NULL || fn == NULL || (limits->flags & ~(unsigned)(ML_UNWIND | ML_WAKE)) != 0)
        return ML_EINVAL;
    if (limits->token != NULL && !ml__token_valid(limits->token)) return ML_EINVAL;
    if (!ml_active()) return ML_ENOTACTIVE;
    ml__thread_ensure();
    if (limits->flags & ML_WAKE) {
        int rc = ml__wake_setup(ml__config()->signal, ml__task_wake_scan);
        if (rc != 0) return (ml_status)rc;
    }
    if (limits->flags & ML_UNWIND) ml__host_find_system_text();
    return ML_OK;
}

ml_status ml_run(const ml_limits *limits, void (*fn)(void *arg), void *arg, uint64_t *allocated)
{
    ml_status rc = prepare(limits, fn);
    if (rc != ML_OK) return rc;
    /* The task lives in this frame, with a cleanup (this file is compiled with -fexceptions) that
     * a C++ exception leaving fn runs on its way through, so that the task does not stay linked
     * once its frame is gone. It cannot live in ml__task_run's frame, below: that frame is gone
     * before this cleanup runs. A jump or thread exit out of fn is seen by the C library's cleanup
     * records (task.c). */
    ml_task task __attribute__((cleanup(ml__task_thrown)));
    return ml__task_run(&ml__self, &task, limits, fn, arg, allocated);
}

ml_status ml_limit_global_memory(void (*fn)(void *arg), void *arg)
{
    ml_limits limits = {0, 1, NULL, 0};
    return ml_run(&limits, fn, arg, NULL);
}

ml_status ml_limit_allocations(uint64_t limit, void (*fn)(void *arg), void *arg,
                               uint64_t *allocated)
{
    ml_limits limits = {limit, 0, NULL, 0};
    return ml_run(&limits, fn, arg, allocated);
}

ml_status ml_limit_with_token(ml_token *token, void (*fn)(void *arg), void *arg)
{
    if (token == NULL) return ML_EINVAL;
    ml_limits limits = {0, 0, token, 0};
    return ml_run(&limits, fn, arg, NULL);
}
