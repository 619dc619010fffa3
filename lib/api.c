/* The process-wide part of the client API (include/memlimits.h): status names, whether memlimits
 * owns malloc, the heap cap and the heap and thread counters. */
#include <stdlib.h>

#include "memlimits.h"

#include "engine.h"
#include "heap.h"

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

/* The entry point the interposed `malloc` symbol names in this library (preload/malloc.c). Weak:
 * test programs link the engine without the entry points, and then memlimits is not active. */
extern void *ml__malloc_entry(size_t size) __attribute__((weak));

int ml_active(void)
{
    /* Whether calls to malloc reach this library's entry point: call it through the GOT (bound
     * to whichever object owns malloc for the whole process) and see whether this thread's
     * allocation counter moved. Comparing addresses is not enough: a non-PIE executable that
     * takes malloc's address makes its own PLT stub the canonical address of malloc. Ownership
     * is settled when the program starts, so the answer is kept. */
    static int known; /* 0: not asked yet, 1: active, 2: not */
    int k = ML_LOAD(&known);
    if (k == 0) {
        int owned = 0;
        if (ml__malloc_entry != NULL) {
            void *(*volatile bound_malloc)(size_t) = malloc;
            void (*volatile bound_free)(void *) = free;
            uint64_t before = ML_LOAD(&ml__self.allocations);
            void *p = bound_malloc(0); /* counts 0 bytes against the caller's limits */
            owned = ML_LOAD(&ml__self.allocations) != before;
            bound_free(p);
        }
        k = owned ? 1 : 2;
        ML_STORE(&known, k);
    }
    return k == 1;
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
