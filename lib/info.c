/* glibc's statistics calls and mallopt over memlimits' accounting (see info.h). One model maps
 * glibc's fields: the whole heap is one arena — jemalloc's mapped extents — and every block,
 * large ones included, is in it. No block is mmapped on its own, so glibc's mmap figures are 0,
 * and the usual sum "in use = uordblks + hblkhd" counts each block once. */
#define _GNU_SOURCE
#include "info.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "memlimits.h"

#include "budget.h"
#include "fmt.h"
#include "host.h"
#include "thread.h"

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* The highest `system` seen by any call so far. jemalloc keeps no high-water mark of its
 * mappings; they rarely shrink (lazily-freed pages stay mapped, see host_runtime.c), so the
 * highest value seen is close to the real one, and never above it. */
static uint64_t system_seen;

void ml__info_collect(ml_info *info)
{
    ml_host_heap_stats js;
    uint64_t samples;
    info->live = ml_heap_live();
    info->peak = max_u64(ml_heap_peak(), info->live);
    ml__host_jemalloc_stats(&js);
    /* Blocks freed where no counter sees them (README "Robustness") can leave the live heap a
     * few bytes above what jemalloc maps; free space is never negative. */
    info->system = max_u64(js.mapped, info->live);
    info->aspace = info->system + js.retained;
    uint64_t seen = ML_LOAD(&system_seen);
    while (info->system > seen &&
           !__atomic_compare_exchange_n(&system_seen, &seen, info->system, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    info->system_max = max_u64(max_u64(seen, info->system), info->peak);
    info->heap_cap = ml_heap_cap();
    info->budget = ml__budget_total();
    info->global = ml_global_memory_limit();
    ml__totals(&info->allocated, &info->allocations, &samples);
}

struct mallinfo2 ml__info_mallinfo2(void)
{
    ml_info info;
    ml__info_collect(&info);
    struct mallinfo2 m = {0};
    m.arena = info.system;                /* the heap's mapped bytes: in use and free */
    m.uordblks = info.live;               /* in use: usable sizes of the live blocks */
    m.fordblks = info.system - info.live; /* held but not in a live block */
    m.usmblks = info.peak;                /* glibc: always 0; here the peak live heap */
    /* ordblks, smblks, fsmblks (free chunks, fastbins): jemalloc keeps no such lists.
     * hblks, hblkhd (blocks mmapped on their own): none, every block is in `arena`.
     * keepcost (the top chunk malloc_trim could release): jemalloc has no top chunk. */
    return m;
}

static int clamp_int(size_t v)
{
    return v > INT_MAX ? INT_MAX : (int)v;
}

struct mallinfo ml__info_mallinfo(void)
{
    struct mallinfo2 w = ml__info_mallinfo2();
    struct mallinfo m;
    m.arena = clamp_int(w.arena);
    m.ordblks = clamp_int(w.ordblks);
    m.smblks = clamp_int(w.smblks);
    m.hblks = clamp_int(w.hblks);
    m.hblkhd = clamp_int(w.hblkhd);
    m.usmblks = clamp_int(w.usmblks);
    m.fsmblks = clamp_int(w.fsmblks);
    m.uordblks = clamp_int(w.uordblks);
    m.fordblks = clamp_int(w.fordblks);
    m.keepcost = clamp_int(w.keepcost);
    return m;
}

/* One line of malloc_stats in glibc's layout: the label padded to 16 columns, " = ", the value
 * right-aligned in 10 (glibc's "%10u"; wider values push the column, never cut). ML_NONE, for a
 * limit, reads "unlimited". */
static void stats_line(ml_buf *b, const char *label, uint64_t v, int limit)
{
    char digits[24];
    ml_buf d = ML_BUF_INIT(digits);
    if (limit && v == ML_NONE)
        ml__buf_str(&d, "unlimited");
    else
        ml__buf_u64(&d, v);
    ml__buf_str(b, label);
    for (size_t n = strlen(label); n < 16; n++)
        ml__buf_mem(b, " ", 1);
    ml__buf_str(b, " = ");
    for (size_t n = d.len; n < 10; n++)
        ml__buf_mem(b, " ", 1);
    ml__buf_mem(b, d.data, d.len);
    ml__buf_mem(b, "\n", 1);
}

void ml__info_malloc_stats(void)
{
    ml_info info;
    ml__info_collect(&info);
    char storage[2048];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "Arena 0:\n");
    stats_line(&b, "system bytes", info.system, 0);
    stats_line(&b, "in use bytes", info.live, 0);
    ml__buf_str(&b, "Total (incl. mmap):\n");
    stats_line(&b, "system bytes", info.system, 0);
    stats_line(&b, "in use bytes", info.live, 0);
    stats_line(&b, "max mmap regions", 0, 0);
    stats_line(&b, "max mmap bytes", 0, 0);
    ml__buf_str(&b, "memlimits:\n");
    stats_line(&b, "heap cap", info.heap_cap, 1);
    stats_line(&b, "alloc budget", info.budget, 1);
    stats_line(&b, "global limit", info.global, 1);
    stats_line(&b, "live heap", info.live, 0);
    stats_line(&b, "peak live heap", info.peak, 0);
    stats_line(&b, "allocated bytes", info.allocated, 0);
    stats_line(&b, "allocations", info.allocations, 0);
    /* What the program wrote to stderr comes first. Like glibc's, the call is not a
     * cancellation point (write(2) is one). */
    int fd = fileno(stderr);
    fflush(stderr);
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    ml__buf_flush(&b, fd >= 0 ? fd : STDERR_FILENO);
    pthread_setcancelstate(cancel, NULL);
}

/* <NAME type="TYPE" [count="COUNT"] size="SIZE"/> and a newline; count < 0: none. */
static void xml_elem(ml_buf *b, const char *name, const char *type, int64_t count, uint64_t size)
{
    ml__buf_str(b, "<");
    ml__buf_str(b, name);
    ml__buf_str(b, " type=\"");
    ml__buf_str(b, type);
    if (count >= 0) {
        ml__buf_str(b, "\" count=\"");
        ml__buf_i64(b, count);
    }
    ml__buf_str(b, "\" size=\"");
    ml__buf_u64(b, size);
    ml__buf_str(b, "\"/>\n");
}

/* The totals glibc writes for one heap and again for the process, for our one arena. */
static void xml_system(ml_buf *b, const ml_info *info)
{
    xml_elem(b, "system", "current", -1, info->system);
    xml_elem(b, "system", "max", -1, info->system_max);
    xml_elem(b, "aspace", "total", -1, info->aspace);
    xml_elem(b, "aspace", "mprotect", -1, info->system);
}

int ml__info_malloc_info(int options, FILE *fp)
{
    if (options != 0 || fp == NULL) {
        errno = EINVAL;
        return -1;
    }
    ml_info info;
    ml__info_collect(&info);
    uint64_t free_bytes = info.system - info.live;
    char storage[4096];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n");
    xml_elem(&b, "total", "fast", 0, 0);
    xml_elem(&b, "total", "rest", 0, free_bytes);
    xml_system(&b, &info);
    ml__buf_str(&b, "</heap>\n");
    xml_elem(&b, "total", "fast", 0, 0);
    xml_elem(&b, "total", "rest", 0, free_bytes);
    xml_elem(&b, "total", "mmap", 0, 0);
    xml_system(&b, &info);
    ml__buf_str(&b, "<memlimits>\n");
    xml_elem(&b, "heap", "live", -1, info.live);
    xml_elem(&b, "heap", "peak", -1, info.peak);
    if (info.heap_cap != ML_NONE) xml_elem(&b, "limit", "heap", -1, info.heap_cap);
    if (info.budget != ML_NONE) xml_elem(&b, "limit", "alloc", -1, info.budget);
    if (info.global != ML_NONE) xml_elem(&b, "limit", "global", -1, info.global);
    xml_elem(&b, "allocated", "requested", (int64_t)info.allocations, info.allocated);
    ml__buf_str(&b, "</memlimits>\n</malloc>\n");
    /* The buffer holds about 1 KiB of a 4 KiB capacity: it is never truncated. */
    if (fwrite(b.data, 1, b.len, fp) != b.len) return -1;
    return 0;
}

/* glibc's bound on M_MXFAST: MAX_FAST_SIZE, 80 * sizeof(size_t) / 4 bytes (measured: 160 on
 * x86-64 accepted, 161 refused). */
#define GLIBC_MAX_FAST (80 * sizeof(size_t) / 4)

int ml__info_mallopt(int param, int value)
{
    switch (param) {
    case M_MXFAST:
        return value >= 0 && (size_t)value <= GLIBC_MAX_FAST;
    case M_NLBLKS:         /* unused by glibc too */
    case M_GRAIN:          /* unused by glibc too */
    case M_KEEP:           /* unused by glibc too */
    case M_TRIM_THRESHOLD: /* jemalloc returns pages by its own decay */
    case M_TOP_PAD:        /* jemalloc has no top chunk */
    case M_MMAP_THRESHOLD: /* no block is mmapped on its own */
    case M_MMAP_MAX:
    case M_CHECK_ACTION: /* glibc's own heap checks */
    case M_PERTURB:      /* jemalloc's junk filling is set when it starts, or never */
    case M_ARENA_TEST:   /* jemalloc's arenas are set when it starts */
    case M_ARENA_MAX:
        return 1;
    default:
        return 0;
    }
}
