/* The process-wide part of the client API (include/memlimits.h): status names, whether memlimits
 * owns malloc, the heap cap and the heap and thread counters. */
#include <stdlib.h>

#include "memlimits.h"

#include "engine.h"
#include "heap.h"

const char *ml_strstatus(ml_status status)
{
    switch (status) {
#define ML_STATUS_CASE(name, code, text)                                                        \
    case name: return text;
        ML_STATUS_MAP(ML_STATUS_CASE)
#undef ML_STATUS_CASE
    }
    return "unknown status";
}

/* The entry point the interposed `malloc` symbol names in this library (preload/malloc.c). Weak:
 * test programs link the engine without the entry points, and then memlimits is not active. */
extern void *ml__malloc_entry(size_t size) __attribute__((weak));

int ml_active(void)
{
    /* A reference to malloc from inside this library goes through the GOT, so it resolves to
     * whichever object the dynamic linker bound malloc to for the whole process. */
    void *(*volatile bound)(size_t) = malloc;
    return ml__malloc_entry != NULL && bound == ml__malloc_entry;
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
    const ml_thread *t = &ml__self;
    return t->allocated + ml__since_arm(t);
}
