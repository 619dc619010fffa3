/* Process limits set from the environment, observed from outside: the allocation budget
 * (MEMLIMITS_ALLOC) is exact and deterministic, the heap cap (MEMLIMITS_HEAP) holds, the counters
 * behind them (ml_thread_allocated, ml_heap_live, ml_heap_peak) are within their stated bounds,
 * every action does what it says, bad input fails closed before main, and reports are written.
 * Each case runs a target program from tests/targets/limits_*.c preloaded in a child process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child.h"
#include "options.h"

#define MIB ((uint64_t)1 << 20)
/* ml_heap_live's per-thread bound, in requested bytes (memlimits.h, lib/heap.h). */
#define ACCOUNTING_BOUND ((uint64_t)64 << 10)

/* Seconds after which a child is killed: every run takes well under a second, so this only
 * turns a hang into a failure. */
#define HANG_GUARD_S 20

/* Runs target `name` preloaded with `args` (NULL-terminated, may be NULL) and `env`. */
static void run(const char *name, const char *const *args, const char *const *env, ml_child *c)
{
    char target[4096];
    const char *argv[16] = {target};
    snprintf(target, sizeof target, "%s", ml_test_target(name));
    for (int i = 0; args != NULL && args[i] != NULL && i < 14; i++)
        argv[i + 1] = args[i];
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
}

/* The number after "key " at the start of a line of `text`; fails the test if absent. */
static unsigned long long field(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ')
            return strtoull(line + len + 1, 0, 10);
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return 0;
}

static int has_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *s = text; s != NULL && *s != '\0';) {
        if (strncmp(s, line, len) == 0 && (s[len] == '\n' || s[len] == '\0')) return 1;
        s = strchr(s, '\n');
        if (s != NULL) s++;
    }
    return 0;
}

/* --- The allocation budget ------------------------------------------------------------------ */

#define SEQUENCE_LENGTH 3000

/* The sizes of tests/targets/limits_budget.c's sequence (same LCG). */
static void sequence(size_t *sizes)
{
    uint64_t state = 42;
    for (unsigned i = 0; i < SEQUENCE_LENGTH; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        sizes[i] = 1 + (size_t)((state >> 33) % 4096);
        if (i % 97 == 0) sizes[i] += 200000;
    }
}

/* The first allocation of the sequence whose running total, counted from `base`, exceeds
 * `budget`; SEQUENCE_LENGTH if none does. */
static unsigned first_crossing(uint64_t base, uint64_t budget)
{
    static size_t sizes[SEQUENCE_LENGTH];
    sequence(sizes);
    uint64_t total = base;
    for (unsigned i = 0; i < SEQUENCE_LENGTH; i++) {
        total += sizes[i];
        if (total > budget) return i;
    }
    return SEQUENCE_LENGTH;
}

/* Bytes requested by the sequence up to and including allocation `last`. */
static uint64_t sequence_sum(unsigned last)
{
    static size_t sizes[SEQUENCE_LENGTH];
    sequence(sizes);
    uint64_t sum = 0;
    for (unsigned i = 0; i <= last; i++)
        sum += sizes[i];
    return sum;
}

/* The index and size of the last "a I SIZE" line: the allocation the program stopped at. */
static void last_allocation(const char *out, unsigned *index, size_t *size)
{
    const char *last = NULL;
    for (const char *s = out; s != NULL && *s != '\0';) {
        if (s[0] == 'a' && s[1] == ' ') last = s;
        s = strchr(s, '\n');
        if (s != NULL) s++;
    }
    cr_assert_not_null(last, "no allocation made:\n%s", out);
    cr_assert_eq(sscanf(last, "a %u %zu", index, size), 2);
}

/* Runs limits_budget over the whole sequence under MEMLIMITS_ALLOC=budget and `on_alloc`. */
static void run_budget(uint64_t budget, const char *on_alloc, const char *report, ml_child *c)
{
    static char budget_env[64], action_env[64], report_env[600];
    snprintf(budget_env, sizeof budget_env, "MEMLIMITS_ALLOC=%llu", (unsigned long long)budget);
    snprintf(action_env, sizeof action_env, "MEMLIMITS_ON_ALLOC=%s", on_alloc);
    snprintf(report_env, sizeof report_env, "MEMLIMITS_REPORT=%s", report ? report : "0");
    const char *env[] = {budget_env, action_env, report_env, NULL};
    char count[16];
    snprintf(count, sizeof count, "%d", SEQUENCE_LENGTH);
    const char *args[] = {count, NULL};
    run("limits_budget", args, env, c);
}

/* What a run of the whole sequence under an unreachable budget requests before the sequence
 * ("base") and in all ("total"). */
static void probe_budget(uint64_t *base, uint64_t *total)
{
    ml_child c;
    run_budget((uint64_t)1 << 40, "exit:77", NULL, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    *base = field(c.out, "base");
    *total = field(c.out, "total");
    cr_assert_eq(*total, *base + sequence_sum(SEQUENCE_LENGTH - 1),
                 "ml_thread_allocated is not the sum of the requested sizes");
    ml_child_free(&c);
}

/* The "#K" of "exceeded by allocation #K" in the action's message. */
static unsigned long long message_allocation(const char *err)
{
    const char *s = strstr(err, "allocation #");
    cr_assert_not_null(s, "no allocation index in: %s", err);
    return strtoull(s + strlen("allocation #"), NULL, 10);
}

Test(limits, budget_fires_at_the_first_crossing_allocation_on_every_run)
{
    const uint64_t budget = 3000000;
    unsigned long long first_k = 0;
    for (int run_no = 0; run_no < 3; run_no++) {
        ml_child c;
        run_budget(budget, "exit:77", NULL, &c);
        cr_assert(c.exited, "killed by signal %d", c.signal);
        cr_assert_eq(c.status, 77, "run %d: status %d\n%s", run_no, c.status, c.err);
        uint64_t base = field(c.out, "base");
        unsigned expected = first_crossing(base, budget);
        cr_assert_lt(expected, SEQUENCE_LENGTH, "the sequence must cross the budget");
        unsigned index;
        size_t size;
        last_allocation(c.out, &index, &size);
        cr_expect_eq(index, expected, "run %d stopped at allocation %u, not %u (base %llu)", run_no,
                     index, expected, (unsigned long long)base);
        cr_expect_eq(size, sequence_sum(index) - (index > 0 ? sequence_sum(index - 1) : 0),
                     "the target's sequence differs from the test's at allocation %u", index);
        cr_expect_eq(sequence_sum(index) + base > budget, 1);
        cr_expect_eq(index == 0 || sequence_sum(index - 1) + base <= budget, 1);
        /* One line on stderr naming the limit and the allocation. */
        char bytes[64];
        snprintf(bytes, sizeof bytes, "(%zu bytes)", size);
        cr_expect_not_null(strstr(c.err, "allocation budget"), "stderr: %s", c.err);
        cr_expect_not_null(strstr(c.err, bytes), "stderr lacks %s: %s", bytes, c.err);
        unsigned long long k = message_allocation(c.err);
        if (run_no == 0) first_k = k;
        cr_expect_eq(k, first_k, "run %d fired at allocation #%llu, run 0 at #%llu", run_no, k,
                     first_k);
        ml_child_free(&c);
    }
}

/* Under the enomem action, with a budget ending exactly after allocation `last`, allocation
 * last + 1 is refused with ENOMEM, the remaining budget can still be spent to the byte, and
 * one byte more is refused. */
static void expect_enomem_after(unsigned last, int minus_one)
{
    uint64_t base, total;
    probe_budget(&base, &total);
    uint64_t budget = base + sequence_sum(last) - (minus_one ? 1 : 0);
    ml_child c;
    run_budget(budget, "enomem", NULL, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_assert_eq(field(c.out, "base"), base, "the bytes requested before main changed");
    unsigned refused = (unsigned)field(c.out, "refused");
    unsigned expected = minus_one ? last : last + 1;
    cr_expect_eq(refused, expected, "refused allocation %u, expected %u", refused, expected);
    cr_expect_eq(first_crossing(base, budget), expected);
    char line[64];
    snprintf(line, sizeof line, "refused %u errno 12", expected);
    cr_expect(has_line(c.out, line), "expected '%s' in:\n%s", line, c.out);
    /* What is left fits exactly; a byte more does not. */
    uint64_t left = budget - (base + (expected ? sequence_sum(expected - 1) : 0));
    if (left > 0) {
        snprintf(line, sizeof line, "fit %llu ok", (unsigned long long)left);
        cr_expect(has_line(c.out, line), "expected '%s' in:\n%s", line, c.out);
    }
    cr_expect(has_line(c.out, "over errno 12"), "one byte over the budget:\n%s", c.out);
    cr_expect_eq(field(c.out, "total"), budget, "the budget is spent to the byte");
    cr_expect_eq(c.err_len, 0, "enomem prints nothing: %s", c.err);
    ml_child_free(&c);
}

Test(limits, budget_enomem_refuses_the_crossing_allocation)
{
    expect_enomem_after(500, 1);
}

Test(limits, budget_enomem_admits_an_allocation_ending_exactly_at_the_budget)
{
    expect_enomem_after(500, 0);
}

Test(limits, budget_equal_to_the_total_never_fires)
{
    uint64_t base, total;
    probe_budget(&base, &total);
    ml_child c;
    run_budget(total, "exit:77", NULL, &c);
    cr_expect(c.exited && c.status == 0, "budget == total: status %d signal %d: %s", c.status,
              c.signal, c.err);
    cr_expect_eq(field(c.out, "total"), total);
    ml_child_free(&c);
    /* One byte less: the very last allocation crosses it. */
    run_budget(total - 1, "exit:77", NULL, &c);
    cr_expect(c.exited && c.status == 77, "budget == total - 1: status %d signal %d", c.status,
              c.signal);
    unsigned index;
    size_t size;
    last_allocation(c.out, &index, &size);
    cr_expect_eq(index, SEQUENCE_LENGTH - 1);
    ml_child_free(&c);
}

/* --- The heap cap --------------------------------------------------------------------------- */

/* How many 1 MiB blocks limits_heap must get under MEMLIMITS_HEAP=64M, from the accounting of
 * README "Accounting, and its bound" (lib/heap.h):
 * - The cap is on the live heap, the sum of jemalloc's usable sizes of the blocks allocated and
 *   not freed: each block takes its usable size `usable` (1 MiB is one of jemalloc's size
 *   classes, so 1 MiB exactly; the target reports it), and what was live before the first block,
 *   `baseline` (what the program and the C library allocated through memlimits; the target
 *   reports ml_heap_live() there), takes its share too.
 * - jemalloc's metadata (extent headers, arenas, thread caches) is not a block handed out by
 *   malloc, so it is not in the live heap and takes nothing from under the cap.
 * - Each thread adds its balance to the process-wide sum only at its flushes, so the sum may lag
 *   by up to a flush interval of requests. That lag never refuses early: before refusing, the
 *   cap reconciles every thread exactly. A block is refused only when baseline + the blocks
 *   already allocated + this one would exceed the cap: at least floor((cap - baseline) / usable)
 *   blocks fit.
 * - The lag can only let the heap overshoot the cap: by at most 64 KiB of requests per thread
 *   allocating concurrently, and by nothing in a single-threaded program for allocations of
 *   64 KiB or more near the cap, which are each checked. limits_heap is single-threaded with
 *   1 MiB blocks, so no more than floor((cap + 0 - baseline) / usable) blocks fit either, and the
 *   live heap at the refusal is exactly baseline + blocks * usable, within the cap. */
#define HEAP_CAP (64 * MIB) /* MEMLIMITS_HEAP=64M */
#define HEAP_BLOCK MIB      /* limits_heap's request */
/* The cap's overshoot for one thread allocating blocks of 64 KiB or more. */
#define HEAP_CAP_OVERSHOOT_ONE_THREAD_LARGE ((uint64_t)0)

Test(limits, heap_cap_refuses_at_the_cap_and_admits_again_after_frees)
{
    const char *env[] = {"MEMLIMITS_HEAP=64M", NULL};
    ml_child c;
    run("limits_heap", NULL, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_eq(field(c.out, "cap"), HEAP_CAP);
    unsigned long long blocks = field(c.out, "blocks"), live = field(c.out, "live");
    unsigned long long baseline = field(c.out, "baseline"), usable = field(c.out, "usable");
    cr_expect_eq(field(c.out, "errno"), 12, "the refused malloc sets ENOMEM");
    cr_assert_eq(usable, HEAP_BLOCK, "1 MiB is not a size class of its own: usable size %llu",
                 usable);
    cr_assert_lt(baseline, HEAP_CAP, "%llu bytes live before the first block", baseline);
    unsigned long long at_least = (HEAP_CAP - baseline) / usable;
    unsigned long long at_most =
        (HEAP_CAP + HEAP_CAP_OVERSHOOT_ONE_THREAD_LARGE - baseline) / usable;
    cr_expect_geq(blocks, at_least,
                  "only %llu blocks of %llu bytes under a cap of %llu with %llu bytes live before",
                  blocks, usable, (unsigned long long)HEAP_CAP, baseline);
    cr_expect_leq(blocks, at_most, "%llu blocks of %llu bytes under a cap of %llu", blocks, usable,
                  (unsigned long long)HEAP_CAP);
    cr_expect_leq(blocks, HEAP_CAP / HEAP_BLOCK);
    /* Each 1 MiB request is examined by the cap, so the cap holds exactly. */
    cr_expect_leq(live, HEAP_CAP, "live heap %llu above the cap", live);
    cr_expect_geq(live, blocks * MIB);
    cr_expect_eq(live, baseline + blocks * usable, "the live heap is not exact for this thread");
    cr_expect(has_line(c.out, "calloc null errno 12"), "%s", c.out);
    cr_expect(has_line(c.out, "realloc null errno 12 kept 1"), "%s", c.out);
    cr_expect(has_line(c.out, "posix_memalign 12 kept 1"), "%s", c.out);
    unsigned long long freed = field(c.out, "freed");
    cr_expect_eq(field(c.out, "again"), freed, "after freeing %llu blocks:\n%s", freed, c.out);
    ml_child_free(&c);
}

/* --- Counters ------------------------------------------------------------------------------- */

/* One row of `limits_accounting counts`: a call and the bytes ml_thread_allocated must count. */
typedef struct count_row {
    const char *name;
    unsigned long long bytes;
} count_row;

static void expect_counts(const count_row *rows, size_t n)
{
    const char *args[] = {"counts", NULL};
    ml_child c;
    run("limits_accounting", args, NULL, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    for (size_t i = 0; i < n; i++) {
        unsigned long long got = field(c.out, rows[i].name);
        cr_expect_eq(got, rows[i].bytes, "%s counted %llu bytes, expected %llu", rows[i].name, got,
                     rows[i].bytes);
    }
    ml_child_free(&c);
}

Test(limits, thread_allocated_counts_requested_sizes_exactly)
{
    static const count_row rows[] = {
        {"malloc_100", 100},
        {"calloc_7x13", 91},
        {"realloc_to_5000", 5000},
        {"realloc_to_300000", 300000},
        {"realloc_shrink_to_10", 10},
        {"realloc_p_0", 0},
        {"posix_memalign_64_300", 300},
        {"memalign_4096_10", 10},
        {"aligned_alloc_64_128", 128},
        {"valloc_10", 10},
        {"malloc_1mib", MIB},
        {"free_all", 0},
    };
    expect_counts(rows, sizeof rows / sizeof rows[0]);
}

/* memlimits.h, ml_thread_allocated: "a zero-byte request counts 0". */
Test(limits, thread_allocated_counts_a_zero_byte_request_as_zero)
{
    static const count_row rows[] = {
        {"malloc_0", 0},
        {"calloc_0x5", 0},
        {"realloc_null_0", 0},
    };
    expect_counts(rows, sizeof rows / sizeof rows[0]);
}

Test(limits, thread_allocated_does_not_count_refused_allocations)
{
    static const count_row rows[] = {
        {"refused_calloc_overflow", 0},       {"refused_malloc_size_max", 0},
        {"refused_posix_memalign_einval", 0}, {"refused_malloc_unservable", 0},
        {"refused_calloc_unservable", 0},     {"refused_posix_memalign_unservable", 0},
        {"refused_realloc_unservable", 0},
    };
    expect_counts(rows, sizeof rows / sizeof rows[0]);
}

Test(limits, heap_live_and_peak_track_mallocs_and_frees)
{
    const char *args[] = {"heap", NULL};
    ml_child c;
    run("limits_accounting", args, NULL, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    uint64_t live0 = field(c.out, "live0"), peak_small = field(c.out, "peak_small");
    uint64_t live_small = field(c.out, "live_small"), live_start = field(c.out, "live_start");
    uint64_t live_8 = field(c.out, "live_8"), live_4 = field(c.out, "live_4");
    uint64_t live_0 = field(c.out, "live_0");
    uint64_t peak_8 = field(c.out, "peak_8"), peak_4 = field(c.out, "peak_4");
    /* 2000 KiB of small blocks were live at once, then freed. */
    /* Far from any cap a thread flushes every 1 MiB of requests, so the peak can miss up to that
     * much, plus the block being allocated (1 KiB blocks: usable size = requested). */
    cr_expect_geq(peak_small + MIB + 1024, live0 + 2000 * 1024,
                  "peak %llu misses 2000 KiB of small blocks on a %llu-byte heap",
                  (unsigned long long)peak_small, (unsigned long long)live0);
    cr_expect_leq(peak_small, live0 + 2000 * 1024 + MIB + ACCOUNTING_BOUND);
    cr_expect(live_small <= live0 + ACCOUNTING_BOUND && live_small + ACCOUNTING_BOUND >= live0,
              "all freed: live %llu -> %llu", (unsigned long long)live0,
              (unsigned long long)live_small);
    /* ml_heap_live is exact for the calling thread; allow the documented bound all the same. */
    cr_expect(live_8 >= live_start + 8 * MIB && live_8 <= live_start + 8 * MIB + ACCOUNTING_BOUND,
              "8 MiB allocated: live %llu -> %llu", (unsigned long long)live_start,
              (unsigned long long)live_8);
    cr_expect(live_4 + 4 * MIB >= live_8 && live_4 + 4 * MIB <= live_8 + ACCOUNTING_BOUND,
              "4 MiB freed: live %llu -> %llu", (unsigned long long)live_8,
              (unsigned long long)live_4);
    cr_expect(live_0 + 4 * MIB >= live_4 && live_0 + 4 * MIB <= live_4 + ACCOUNTING_BOUND,
              "4 MiB more freed: live %llu -> %llu", (unsigned long long)live_4,
              (unsigned long long)live_0);
    /* The peak: at least the highest live heap observed, less the bound; never more than it
     * plus 1 MiB of unaccounted frees and the bound. */
    cr_expect_geq(peak_8 + ACCOUNTING_BOUND, live_8, "peak %llu below the live heap %llu",
                  (unsigned long long)peak_8, (unsigned long long)live_8);
    cr_expect_leq(peak_8, live_8 + MIB + ACCOUNTING_BOUND);
    cr_expect_geq(peak_4, peak_8, "the peak never decreases");
    cr_expect_leq(peak_4, live_8 + MIB + ACCOUNTING_BOUND);
    ml_child_free(&c);
}

Test(limits, heap_peak_sees_a_large_block_freed_before_the_next_event)
{
    const char *args[] = {"peak_large", NULL};
    ml_child c;
    run("limits_accounting", args, NULL, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    uint64_t live0 = field(c.out, "live0"), peak1 = field(c.out, "peak1");
    /* A 32 MiB block was live: the peak may miss it by the documented bound, no more. */
    cr_expect_geq(peak1 + ACCOUNTING_BOUND, live0 + 32 * MIB,
                  "ml_heap_peak %llu after a 32 MiB block was live on a %llu-byte heap",
                  (unsigned long long)peak1, (unsigned long long)live0);
    ml_child_free(&c);
}

/* --- Actions -------------------------------------------------------------------------------- */

/* Runs limits_action under `limit` ("heap": MEMLIMITS_HEAP=16M, "alloc": MEMLIMITS_ALLOC=4M)
 * with `action` (NULL: the default) and an optional SIGUSR1 handler. */
static void run_action(const char *limit, const char *action, int handler, ml_child *c)
{
    int heap = strcmp(limit, "heap") == 0;
    static char action_env[64];
    snprintf(action_env, sizeof action_env, "%s=%s",
             heap ? "MEMLIMITS_ON_HEAP" : "MEMLIMITS_ON_ALLOC", action ? action : "");
    const char *env[] = {heap ? "MEMLIMITS_HEAP=16M" : "MEMLIMITS_ALLOC=4M",
                         action ? action_env : NULL, NULL};
    const char *args[] = {limit, handler ? "handler" : NULL, NULL};
    run("limits_action", args, env, c);
    cr_assert(has_line(c->out, "main ran"), "main did not run: %s", c->err);
}

static void expect_enomem(const char *limit, const char *action)
{
    ml_child c;
    run_action(limit, action, 0, &c);
    cr_expect(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect(has_line(c.out, "refused errno 12 handled 0"), "%s", c.out);
    ml_child_free(&c);
}

static void expect_abort(const char *limit)
{
    ml_child c;
    run_action(limit, "abort", 0, &c);
    cr_expect(!c.exited && c.signal == SIGABRT, "exited %d status %d signal %d", c.exited, c.status,
              c.signal);
    cr_expect_null(strstr(c.out, "refused"), "%s", c.out);
    ml_child_free(&c);
}

static void expect_exit(const char *limit, const char *action, int status, const char *name)
{
    ml_child c;
    run_action(limit, action, 0, &c);
    cr_expect(c.exited && c.status == status, "exited %d status %d signal %d", c.exited, c.status,
              c.signal);
    cr_expect_null(strstr(c.out, "refused"), "%s", c.out);
    cr_expect_not_null(strstr(c.err, name), "stderr does not name the %s: %s", name, c.err);
    const char *nl = strchr(c.err, '\n');
    cr_expect(nl != NULL && nl + 1 == c.err + c.err_len, "not one line on stderr: %s", c.err);
    ml_child_free(&c);
}

static void expect_signal(const char *limit)
{
    ml_child c;
    run_action(limit, "signal:USR1", 0, &c);
    cr_expect(!c.exited && c.signal == SIGUSR1, "exited %d status %d signal %d", c.exited, c.status,
              c.signal);
    ml_child_free(&c);
    /* A handler that returns: the allocation then fails with ENOMEM. */
    run_action(limit, "signal:USR1", 1, &c);
    cr_expect(c.exited && c.status == 0, "exited %d status %d signal %d: %s", c.exited, c.status,
              c.signal, c.err);
    cr_expect(has_line(c.out, "refused errno 12 handled 1"), "%s", c.out);
    ml_child_free(&c);
}

Test(limits, heap_action_enomem_is_the_default)
{
    expect_enomem("heap", NULL);
    expect_enomem("heap", "enomem");
}

Test(limits, heap_action_abort)
{
    expect_abort("heap");
}

Test(limits, heap_action_exit)
{
    expect_exit("heap", "exit:42", 42, "heap cap");
}

Test(limits, heap_action_signal)
{
    expect_signal("heap");
}

Test(limits, alloc_action_enomem)
{
    expect_enomem("alloc", "enomem");
}

Test(limits, alloc_action_abort)
{
    expect_abort("alloc");
}

Test(limits, alloc_action_exit_and_its_default)
{
    expect_exit("alloc", "exit:43", 43, "allocation budget");
    expect_exit("alloc", NULL, ML_EXIT_ALLOC_BUDGET, "allocation budget");
}

Test(limits, alloc_action_signal)
{
    expect_signal("alloc");
}

/* --- Bad input fails closed ----------------------------------------------------------------- */

/* Expects limits_main to stop before main, with status 125 and one line naming the variable
 * and the value, for each bad value of `name`. */
static void expect_fails_closed(const char *name, const char *const *values)
{
    for (size_t i = 0; values[i] != NULL; i++) {
        char env_entry[256];
        snprintf(env_entry, sizeof env_entry, "%s=%s", name, values[i]);
        const char *env[] = {env_entry, NULL};
        ml_child c;
        run("limits_main", NULL, env, &c);
        cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "%s: exited %d status %d signal %d",
                  env_entry, c.exited, c.status, c.signal);
        cr_expect_null(strstr(c.out, "main ran"), "%s: main ran", env_entry);
        char quoted[256];
        snprintf(quoted, sizeof quoted, "%s='%s'", name, values[i]);
        cr_expect_not_null(strstr(c.err, quoted), "%s: stderr does not name it: %s", env_entry,
                           c.err);
        const char *nl = strchr(c.err, '\n');
        cr_expect(nl != NULL && nl + 1 == c.err + c.err_len, "%s: not exactly one line: %s",
                  env_entry, c.err);
        ml_child_free(&c);
    }
}

Test(limits, bad_heap_fails_closed_before_main)
{
    const char *bad[] = {"",          "12Q",  "-5M", "0", "1.5G", "99999999999999999999",
                         "16777216T", "64 M", NULL};
    expect_fails_closed("MEMLIMITS_HEAP", bad);
}

Test(limits, bad_on_heap_fails_closed_before_main)
{
    const char *bad[] = {
        "",  "explode", "exit:", "exit:256", "exit:-1", "signal:NOPE", "exit:99999999999999999999",
        NULL};
    expect_fails_closed("MEMLIMITS_ON_HEAP", bad);
}

Test(limits, bad_alloc_fails_closed_before_main)
{
    const char *bad[] = {"", "-1", "1.5G", "18446744073709551616", "1X", NULL};
    expect_fails_closed("MEMLIMITS_ALLOC", bad);
}

Test(limits, bad_on_alloc_fails_closed_before_main)
{
    const char *bad[] = {"", "exit", "exit:1x", "signal:", "signal:65", "ENOMEM", NULL};
    expect_fails_closed("MEMLIMITS_ON_ALLOC", bad);
}

Test(limits, bad_global_fails_closed_before_main)
{
    const char *bad[] = {"", "-1", "1.5G", "99999999999999999999", "lots", NULL};
    expect_fails_closed("MEMLIMITS_GLOBAL", bad);
}

Test(limits, bad_sample_fails_closed_before_main)
{
    const char *bad[] = {"", "0", "-4096", "2T", "18446744073709551616", NULL};
    expect_fails_closed("MEMLIMITS_SAMPLE", bad);
}

Test(limits, bad_seed_fails_closed_before_main)
{
    const char *bad[] = {"", "-1", "18446744073709551616", "0x10", "seed", NULL};
    expect_fails_closed("MEMLIMITS_SEED", bad);
}

Test(limits, bad_report_fails_closed_before_main)
{
    const char *bad[] = {"", "json:", NULL};
    expect_fails_closed("MEMLIMITS_REPORT", bad);
}

Test(limits, bad_signal_fails_closed_before_main)
{
    const char *bad[] = {"", "KILL", "STOP", "NOSUCH", "-1", "0", "65", "RTMIN+99", NULL};
    expect_fails_closed("MEMLIMITS_SIGNAL", bad);
}

Test(limits, bad_verbose_fails_closed_before_main)
{
    const char *bad[] = {"", "yes", "2", "-1", NULL};
    expect_fails_closed("MEMLIMITS_VERBOSE", bad);
}

Test(limits, unwritable_report_path_fails_closed_before_main)
{
    const char *bad[] = {"/nonexistent/dir/r", "json:/nonexistent/dir/r", NULL};
    for (size_t i = 0; bad[i] != NULL; i++) {
        char env_entry[256];
        snprintf(env_entry, sizeof env_entry, "MEMLIMITS_REPORT=%s", bad[i]);
        const char *env[] = {env_entry, NULL};
        ml_child c;
        run("limits_main", NULL, env, &c);
        cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "%s: exited %d status %d signal %d",
                  env_entry, c.exited, c.status, c.signal);
        cr_expect_null(strstr(c.out, "main ran"), "%s: main ran", env_entry);
        cr_expect_not_null(strstr(c.err, "MEMLIMITS_REPORT"), "%s", c.err);
        cr_expect_not_null(strstr(c.err, "/nonexistent/dir/r"), "%s", c.err);
        const char *nl = strchr(c.err, '\n');
        cr_expect(nl != NULL && nl + 1 == c.err + c.err_len, "not one line: %s", c.err);
        ml_child_free(&c);
    }
}

Test(limits, valid_values_let_main_run)
{
    const char *env[] = {"MEMLIMITS_HEAP=1G",
                         "MEMLIMITS_ON_HEAP=exit:3",
                         "MEMLIMITS_ALLOC=16G",
                         "MEMLIMITS_ON_ALLOC=signal:USR2",
                         "MEMLIMITS_GLOBAL=512M",
                         "MEMLIMITS_SAMPLE=4096",
                         "MEMLIMITS_SEED=7",
                         "MEMLIMITS_REPORT=0",
                         "MEMLIMITS_SIGNAL=RTMIN+2",
                         "MEMLIMITS_VERBOSE=0",
                         NULL};
    ml_child c;
    run("limits_main", NULL, env, &c);
    cr_expect(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_str_eq(c.out, "main ran\n");
    cr_expect_eq(c.err_len, 0, "stderr: %s", c.err);
    ml_child_free(&c);
}

/* --- Reports -------------------------------------------------------------------------------- */

static char report_dir[64];

static void make_report_dir(void)
{
    snprintf(report_dir, sizeof report_dir, "/tmp/ml-limits-XXXXXX");
    cr_assert_not_null(mkdtemp(report_dir));
}

static void remove_report_dir(void)
{
    DIR *d = opendir(report_dir);
    if (d == NULL) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", report_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(report_dir);
}

/* Reads the report file into `text`, splitting it into at most `cap` lines. */
static size_t read_lines(const char *path, char *text, size_t size, char **lines, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no report at %s", path);
    size_t n = fread(text, 1, size - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t count = 0;
    for (char *line = strtok(text, "\n"); line != NULL && count < cap; line = strtok(NULL, "\n"))
        lines[count++] = line;
    return count;
}

/* The number after `"key":` inside the object that follows `"scope":{` in `line` (scope NULL:
 * anywhere in the line). Fails the test when absent. */
static unsigned long long json_number(const char *line, const char *scope, const char *key)
{
    char pattern[64];
    const char *from = line;
    if (scope != NULL) {
        snprintf(pattern, sizeof pattern, "\"%s\":{", scope);
        from = strstr(line, pattern);
        cr_assert_not_null(from, "no %s in %s", pattern, line);
    }
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(from, pattern);
    const char *end = scope != NULL ? strchr(from, '}') : NULL;
    cr_assert(at != NULL && (end == NULL || at < end), "no %s.%s in %s", scope ? scope : "", key,
              line);
    return strtoull(at + strlen(pattern), NULL, 10);
}

Test(limits, json_report_records_a_fired_heap_cap, .init = make_report_dir,
     .fini = remove_report_dir)
{
    char path[256], env_report[300];
    snprintf(path, sizeof path, "%s/report.json", report_dir);
    snprintf(env_report, sizeof env_report, "MEMLIMITS_REPORT=json:%s", path);
    const char *env[] = {"MEMLIMITS_HEAP=16M", env_report, NULL};
    const char *args[] = {"heap", NULL};
    ml_child c;
    run("limits_action", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    unsigned long long pid = field(c.out, "pid");
    static char text[65536];
    char *lines[8];
    size_t n = read_lines(path, text, sizeof text, lines, 8);
    /* enomem: one report, at exit, that records the refusal (none of its own at the refusal). */
    cr_assert_eq(n, 1, "%zu report lines", n);
    for (size_t i = 0; i < n; i++) {
        const char *line = lines[i];
        cr_expect_eq(strncmp(line, "{\"memlimits_report\":2,", 22), 0, "%s", line);
        cr_expect_eq(line[strlen(line) - 1], '}', "%s", line);
        cr_expect_eq(json_number(line, NULL, "pid"), pid, "%s", line);
        cr_expect_not_null(strstr(line, "\"heap\":{\"bytes\":16777216,\"fired\":true,"), "%s",
                           line);
        cr_expect_eq(json_number(line, "heap", "size"), MIB, "%s", line);
        cr_expect_eq(json_number(line, "heap", "thread"), 0, "%s", line);
        cr_expect_gt(json_number(line, "heap", "allocation"), 16, "%s", line);
        cr_expect_eq(json_number(line, "heap", "refused"), 1, "%s", line);
        cr_expect_not_null(strstr(line, "\"alloc\":{\"bytes\":null,\"fired\":false}"), "%s", line);
        cr_expect_leq(json_number(line, NULL, "heap_peak"), 16 * MIB + ACCOUNTING_BOUND, "%s",
                      line);
    }
    cr_expect_not_null(strstr(lines[0], "\"event\":\"exit\""), "%s", lines[0]);
    cr_expect_not_null(strstr(lines[0], "\"exit_status\":0"), "%s", lines[0]);
    ml_child_free(&c);
}

Test(limits, json_report_records_the_budget_allocation_index_and_size, .init = make_report_dir,
     .fini = remove_report_dir)
{
    /* Two budgets crossing at two allocations of the sequence: the reported allocation indices
     * differ by exactly the distance between them. */
    const uint64_t budgets[2] = {1000000, 3000000};
    unsigned long long index[2], reported[2];
    for (int b = 0; b < 2; b++) {
        char path[256], report[300];
        snprintf(path, sizeof path, "%s/budget-%d.json", report_dir, b);
        snprintf(report, sizeof report, "json:%s", path);
        ml_child c;
        run_budget(budgets[b], "exit:77", report, &c);
        cr_assert(c.exited && c.status == 77, "status %d signal %d: %s", c.status, c.signal, c.err);
        unsigned i;
        size_t size;
        last_allocation(c.out, &i, &size);
        cr_assert_eq(i, first_crossing(field(c.out, "base"), budgets[b]));
        static char text[65536];
        char *lines[4];
        size_t n = read_lines(path, text, sizeof text, lines, 4);
        cr_assert_eq(n, 1, "exit:N writes one report, at the limit");
        const char *line = lines[0];
        char fired[128];
        snprintf(fired, sizeof fired, "\"alloc\":{\"bytes\":%llu,\"fired\":true,",
                 (unsigned long long)budgets[b]);
        cr_expect_not_null(strstr(line, fired), "%s", line);
        cr_expect_eq(json_number(line, "alloc", "size"), size, "%s", line);
        cr_expect_eq(json_number(line, "alloc", "thread"), 0, "%s", line);
        cr_expect_not_null(strstr(line, "\"exit_status\":77"), "%s", line);
        cr_expect_not_null(strstr(line, "\"event\":\"limit\""), "%s", line);
        reported[b] = json_number(line, "alloc", "allocation");
        cr_expect_eq(reported[b], message_allocation(c.err), "report and message disagree");
        index[b] = i;
        ml_child_free(&c);
    }
    cr_expect_eq(reported[1] - reported[0], index[1] - index[0],
                 "allocations #%llu and #%llu reported for sequence indices %llu and %llu",
                 reported[0], reported[1], index[0], index[1]);
}

Test(limits, json_report_is_one_line_per_process, .init = make_report_dir,
     .fini = remove_report_dir)
{
    char path[256], env_report[300];
    snprintf(path, sizeof path, "%s/procs.json", report_dir);
    snprintf(env_report, sizeof env_report, "MEMLIMITS_REPORT=json:%s", path);
    const char *env[] = {env_report, NULL};
    const char *args[] = {"fork", NULL};
    ml_child c;
    run("limits_main", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    unsigned long long pids[2] = {field(c.out, "child"), field(c.out, "parent")};
    static char text[65536];
    char *lines[8];
    size_t n = read_lines(path, text, sizeof text, lines, 8);
    cr_expect_eq(n, 2, "%zu report lines for 2 processes", n);
    for (int p = 0; p < 2; p++) {
        int seen = 0;
        for (size_t i = 0; i < n; i++)
            seen += json_number(lines[i], NULL, "pid") == pids[p];
        cr_expect_eq(seen, 1, "pid %llu has %d reports", pids[p], seen);
    }
    for (size_t i = 0; i < n; i++) {
        cr_expect_not_null(strstr(lines[i], "\"event\":\"exit\""), "%s", lines[i]);
        cr_expect_not_null(strstr(lines[i], "\"heap\":{\"bytes\":null,\"fired\":false}"), "%s",
                           lines[i]);
    }
    ml_child_free(&c);
}

Test(limits, json_report_names_every_limit_with_its_size, .init = make_report_dir,
     .fini = remove_report_dir)
{
    /* Sizes above 4 GiB, so that a value truncated to 32 bits anywhere shows. */
    char path[256], env_report[300];
    snprintf(path, sizeof path, "%s/limits.json", report_dir);
    snprintf(env_report, sizeof env_report, "MEMLIMITS_REPORT=json:%s", path);
    const char *env[] = {"MEMLIMITS_HEAP=5G", "MEMLIMITS_ALLOC=6G", "MEMLIMITS_GLOBAL=8G",
                         env_report, NULL};
    ml_child c;
    run("limits_main", NULL, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    static char text[65536];
    char *lines[4];
    size_t n = read_lines(path, text, sizeof text, lines, 4);
    cr_assert_eq(n, 1, "%zu report lines", n);
    cr_expect_eq(json_number(lines[0], "heap", "bytes"), 5ull << 30, "%s", lines[0]);
    cr_expect_eq(json_number(lines[0], "alloc", "bytes"), 6ull << 30, "%s", lines[0]);
    cr_expect_eq(json_number(lines[0], "global", "bytes"), 8ull << 30, "%s", lines[0]);
    ml_child_free(&c);
}

Test(limits, verbose_prints_every_variable)
{
    static const char *const names[] = {
        "MEMLIMITS_HEAP",   "MEMLIMITS_ON_HEAP", "MEMLIMITS_ALLOC", "MEMLIMITS_ON_ALLOC",
        "MEMLIMITS_GLOBAL", "MEMLIMITS_SAMPLE",  "MEMLIMITS_SEED",  "MEMLIMITS_REPORT",
        "MEMLIMITS_SIGNAL", "MEMLIMITS_VERBOSE",
    };
    const char *env[] = {"MEMLIMITS_VERBOSE=1", "MEMLIMITS_HEAP=64M", NULL};
    ml_child c;
    run("limits_main", NULL, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_str_eq(c.out, "main ran\n");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s=", names[i]);
        cr_expect_not_null(strstr(c.err, key), "%s not printed:\n%s", names[i], c.err);
    }
    for (size_t i = 0; i < ml__option_count; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s=", ml__options[i].env);
        cr_expect_not_null(strstr(c.err, key), "%s not printed:\n%s", ml__options[i].env, c.err);
    }
    cr_expect_not_null(strstr(c.err, "MEMLIMITS_HEAP=64M\n"), "%s", c.err);
    cr_expect_not_null(strstr(c.err, "MEMLIMITS_VERBOSE=1\n"), "%s", c.err);
    ml_child_free(&c);
}
