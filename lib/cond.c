/* Condition waits a task can be interrupted out of (memlimits.h, ml_cond_wait).
 *
 * pthread_cond_wait cannot be interrupted by a signal (POSIX resumes the wait after the
 * handler), and pthread_cond_broadcast is not async-signal-safe, so ml_token_set cannot wake a
 * waiter itself. Instead the waiter registers its condition on the remote tasks of its chain
 * (task.c), looks at its interrupt once more, and waits; ml_token_set (or the thread that sees
 * the global limit crossed) pokes the waker thread, whose scan broadcasts the registered
 * condition of every interrupted task. The look after registering closes the window before it:
 * an interrupt raised before the look is seen by it; one raised after it is seen by the waker,
 * which finds the registration. A broadcast sent between the look and the waiter's entry into
 * pthread_cond_wait is lost (the waiter holds the mutex, the waker does not take it): the waker
 * repeats its broadcast until the waiter has deregistered, which it does only once out of
 * pthread_cond_wait. The waker never takes the user's mutex, so it cannot deadlock on it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>

#include "host.h"
#include "memlimits.h"
#include "task.h"
#include "thread.h"

/* pthread_cond_wait or pthread_cond_timedwait (abstime NULL: untimed). */
static int plain_wait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *abstime)
{
    return abstime == NULL ? pthread_cond_wait(cond, mutex)
                           : pthread_cond_timedwait(cond, mutex, abstime);
}

static void wait_discarded(void *thread)
{
    ml__task_wait_end(thread);
}

/* The wait, in a task and unmasked. Returns pthread's result, ECANCELED when interrupted (after
 * unwinding in ML_UNWIND mode, which does not return), or ENOMEM when the waker is missing. */
static int task_wait(ml_thread *t, pthread_cond_t *cond, pthread_mutex_t *mutex,
                     const struct timespec *abstime)
{
    int registered = ml__task_wait_begin(t, cond);
    if (registered < 0) return ENOMEM;
    int rc = ECANCELED;
    if (!ml_is_interrupted()) {
        /* A pthread cancellation (or a jump out of a signal handler) inside the wait discards
         * this frame: the record takes the registration back first. */
        ml_host_cleanup record;
        if (registered) ml__host_cleanup_push(&record, wait_discarded, t);
        rc = plain_wait(cond, mutex, abstime);
        if (registered) ml__host_cleanup_pop(&record);
    }
    if (registered) ml__task_wait_end(t);
    if (rc != ECANCELED && !ml_is_interrupted()) return rc;
    if ((t->task->flags & ML_UNWIND) && t->mask_depth == 0 && ml__task_may_unwind_now(t))
        ml__task_unwind(t); /* a cancellation point: cleanups run with the mutex held */
    return ECANCELED;
}

int ml_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    if (cond == NULL || mutex == NULL) return EINVAL;
    ml_thread *t = &ml__self;
    if (t->task == NULL || t->mask_depth > 0) return pthread_cond_wait(cond, mutex);
    return task_wait(t, cond, mutex, NULL);
}

int ml_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *abstime)
{
    if (cond == NULL || mutex == NULL || abstime == NULL) return EINVAL;
    ml_thread *t = &ml__self;
    if (t->task == NULL || t->mask_depth > 0) return pthread_cond_timedwait(cond, mutex, abstime);
    return task_wait(t, cond, mutex, abstime);
}
