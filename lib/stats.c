/* Statistics, C's Gc.stat (include/memlimits.h: ml_stat, ml_quick_stat, ml_print_stats). This
 * file owns no state: every count lives in the module that owns what it counts (thread.c: the
 * threads' sums; heap.c: the live heap; budget.c: the pool; report.c: refusals; task.c: task
 * outcomes) and is gathered here, at the top of the engine. ml_stat takes its heap figures from
 * info.c's gathering, which glibc's mallinfo family shares, so both always agree. */
#define _GNU_SOURCE
#include <stddef.h>
#include <string.h>

#include "memlimits.h"

#include "budget.h"
#include "fmt.h"
#include "heap.h"
#include "host.h"
#include "info.h"
#include "report.h"
#include "sampler.h"
#include "task.h"
#include "thread.h"

/* Everything but the heap's live figures and the budget's remainder, which are where the two
 * calls differ. Takes the registry lock once (the threads' sums); everything else is a relaxed
 * load. Precondition: memlimits is active. */
static void gather_counts(ml_stats *s)
{
    ml_thread_totals threads;
    ml__thread_totals(&threads);
    s->allocated_bytes = threads.allocated;
    s->allocations = threads.allocations;
    s->allocated_usable = threads.je_allocated;
    s->freed_bytes = threads.je_freed;
    s->heap_cap = ml__heap_cap();
    s->budget_total = ml__budget_total();
    s->global_memory_limit = ml__global_limit();
    s->samples = threads.samples;
    s->sample_mean_gap = ml__sampler_mean();
    s->threads_live = threads.live;
    s->threads_registered = threads.registered;
    s->heap_cap_refused = ml__report_refused(ML_LIMIT_HEAP);
    s->heap_cap_fired = s->heap_cap_refused > 0;
    s->budget_refused = ml__report_refused(ML_LIMIT_ALLOC);
    s->budget_fired = s->budget_refused > 0;
    s->tasks_ok = ml__task_ended(ML_OK);
    s->tasks_interrupted_memory = ml__task_ended(ML_MEMORY_LIMIT);
    s->tasks_interrupted_allocation = ml__task_ended(ML_ALLOCATION_LIMIT);
    s->tasks_interrupted_token = ml__task_ended(ML_TOKEN);
    s->tasks_interrupted_outer = ml__task_ended(ML_OUTER_LIMIT);
    s->tasks_heap_cap = ml__task_ended(ML_HEAP_CAP);
    s->tasks_run = s->tasks_ok + s->tasks_interrupted_memory + s->tasks_interrupted_allocation +
                   s->tasks_interrupted_token + s->tasks_interrupted_outer + s->tasks_heap_cap;
}

static void set_budget(ml_stats *s, uint64_t left)
{
    if (s->budget_total == ML_NONE) {
        s->budget_used = 0;
        s->budget_left = ML_NONE;
        return;
    }
    /* A lease taken while the pool was read can make the sum briefly exceed the total. */
    s->budget_left = ML_MIN(left, s->budget_total);
    s->budget_used = s->budget_total - s->budget_left;
}

/* What an inactive process reports: no counts, no limits (ml_active says why). */
static void inactive(ml_stats *s)
{
    s->heap_cap = s->budget_total = s->budget_left = s->global_memory_limit = ML_NONE;
}

/* Hands the full statistics `s` to the caller by the ABI rule of memlimits.h: the fields within
 * out->size, zeros past the library's own struct, and the size filled. */
static void copy_out(ml_stats *out, const ml_stats *s)
{
    uint64_t asked = out->size;
    if (asked < sizeof(uint64_t)) return;
    size_t filled =
        asked < sizeof *s ? (size_t)asked / sizeof(uint64_t) * sizeof(uint64_t) : sizeof *s;
    memcpy((char *)out + sizeof(uint64_t), (const char *)s + sizeof(uint64_t),
           filled - sizeof(uint64_t));
    if (asked > sizeof *s) memset((char *)out + sizeof *s, 0, (size_t)(asked - sizeof *s));
    out->size = filled;
}

void ml_stat(ml_stats *out)
{
    if (out == NULL) return;
    ml_stats s = ML_STATS_INIT;
    if (!ml_active()) {
        inactive(&s);
    } else {
        /* The reconcile and jemalloc's statistics, as mallinfo2 gathers them. */
        ml_info info;
        ml__info_collect(&info);
        gather_counts(&s);
        s.heap_live = info.live;
        s.heap_peak = info.peak;
        s.heap_mapped = info.system;
        s.heap_mapped_max = info.system_max;
        set_budget(&s, ml__budget_left(1));
    }
    copy_out(out, &s);
}

void ml_quick_stat(ml_stats *out)
{
    if (out == NULL) return;
    ml_stats s = ML_STATS_INIT;
    if (!ml_active()) {
        inactive(&s);
    } else {
        gather_counts(&s);
        s.heap_live = ml__heap_live();
        s.heap_peak = ml__heap_peak();
        set_budget(&s, ml__budget_left(0));
    }
    copy_out(out, &s);
}

/* The fields ml_print_stats prints, in the struct's order: name, offset, and whether it is a
 * limit (ML_UNLIMITED reads "unlimited"). */
#define STAT_FIELDS(X)                                                                             \
    X(allocated_bytes, 0)                                                                          \
    X(allocations, 0)                                                                              \
    X(allocated_usable, 0)                                                                         \
    X(freed_bytes, 0)                                                                              \
    X(heap_live, 0)                                                                                \
    X(heap_peak, 0)                                                                                \
    X(heap_cap, 1)                                                                                 \
    X(heap_mapped, 0)                                                                              \
    X(heap_mapped_max, 0)                                                                          \
    X(budget_total, 1)                                                                             \
    X(budget_used, 0)                                                                              \
    X(budget_left, 1)                                                                              \
    X(global_memory_limit, 1)                                                                      \
    X(samples, 0)                                                                                  \
    X(sample_mean_gap, 0)                                                                          \
    X(threads_live, 0)                                                                             \
    X(threads_registered, 0)                                                                       \
    X(heap_cap_fired, 0)                                                                           \
    X(heap_cap_refused, 0)                                                                         \
    X(budget_fired, 0)                                                                             \
    X(budget_refused, 0)                                                                           \
    X(tasks_run, 0)                                                                                \
    X(tasks_ok, 0)                                                                                 \
    X(tasks_interrupted_memory, 0)                                                                 \
    X(tasks_interrupted_allocation, 0)                                                             \
    X(tasks_interrupted_token, 0)                                                                  \
    X(tasks_interrupted_outer, 0)                                                                  \
    X(tasks_heap_cap, 0)

typedef struct stat_field {
    const char *name;
    size_t offset;
    int limit;
} stat_field;

static const stat_field fields[] = {
#define STAT_FIELD(name, limit) {#name, offsetof(ml_stats, name), limit},
    STAT_FIELDS(STAT_FIELD)
#undef STAT_FIELD
};

/* Every field but `size` is printed: a field added to ml_stats without a line here fails the
 * build. */
_Static_assert(sizeof fields / sizeof fields[0] == sizeof(ml_stats) / sizeof(uint64_t) - 1,
               "ml_print_stats must print every field of ml_stats");

/* The width of the name column: the longest name and its colon, then a space. */
#define NAME_COLUMN 30

void ml_print_stats(int fd)
{
    ml_stats s = ML_STATS_INIT;
    ml_stat(&s);
    /* 28 lines of at most 30 + 20 + 1 bytes: about 1.4 KiB, never truncated. */
    char storage[2048];
    ml_buf b = ML_BUF_INIT(storage);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&s + fields[i].offset, sizeof v);
        ml__buf_str(&b, fields[i].name);
        ml__buf_str(&b, ":");
        for (size_t n = strlen(fields[i].name) + 1; n < NAME_COLUMN; n++)
            ml__buf_mem(&b, " ", 1);
        if (fields[i].limit && v == ML_UNLIMITED)
            ml__buf_str(&b, "unlimited");
        else
            ml__buf_u64(&b, v);
        ml__buf_mem(&b, "\n", 1);
    }
    ml__buf_flush(&b, fd);
}
