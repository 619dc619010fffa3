/* The one interposed entry point that is not an allocator: pthread_create, so that every thread
 * registers with memlimits when it starts (lib/thread.c says why). */
#include <pthread.h>

#include "common.h"
#include "thread.h"

ML_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                             void *arg)
{
    return ml__pthread_create(thread, attr, start, arg);
}
