/* The one interposed entry point that is not an allocator: pthread_create. Every thread created
 * with it registers with memlimits before its start routine runs, so that a thread that only
 * frees (a consumer) is in the registry and its frees reach the live heap (a reconcile walks the
 * registry). The real pthread_create is found through host.h, outside the allocator. */
#include <errno.h>
#include <pthread.h>

#include "common.h"
#include "engine.h"
#include "host.h"

typedef struct thread_start {
    void *(*start)(void *);
    void *arg;
} thread_start;

static void *trampoline(void *p)
{
    thread_start s = *(thread_start *)p;
    mlje_free(p);
    ml__thread_ensure();
    return s.start(s.arg);
}

ML_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                             void *arg)
{
    /* jemalloc's own malloc: the start record is memlimits' bookkeeping, not the program's. */
    thread_start *s = mlje_malloc(sizeof *s);
    if (s == NULL) return EAGAIN;
    s->start = start;
    s->arg = arg;
    int rc = ml__host_pthread_create(thread, attr, trampoline, s);
    if (rc != 0) mlje_free(s);
    return rc;
}
