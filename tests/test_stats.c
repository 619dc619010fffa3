/* Statistics (lib/stats.c; include/memlimits.h: ml_stat, ml_quick_stat, ml_print_stats). The
 * figures of an active process are checked in child processes: target programs from
 * tests/targets/stats_*.c, run preloaded, print snapshots taken around known allocations, tasks
 * and refusals, and the assertions are here. The ABI rule of ml_stats and what an inactive
 * process reports are checked in-process (this Criterion binary links the engine without the
 * entry points, so memlimits is not active here).
 *
 * The bounds these tests use. ml_stat reconciles every registered thread, so its figures are
 * exact for threads that do not allocate during the call; each target allocates only from
 * threads that are parked, exited, or the caller when it measures, and prints only afterwards:
 * the expected changes are exact (bound 0). ml_quick_stat's live heap lags each thread by the
 * requests since its last flush: at most ML_FLUSH_FAR charged units (256 Ki, under the 1 MiB
 * these tests allow) plus the one allocation that ended the interval, which is under 64 KiB here
 * (larger ones are flushed after they succeed), in blocks of 64 bytes or more, whose usable size
 * is at most 1.25 times the request; after an exact snapshot, with no frees since, it never
 * leads. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "memlimits.h"

#define KIB ((unsigned long long)1 << 10)
#define MIB ((unsigned long long)1 << 20)
/* Seconds after which a child is killed: each run takes well under a second. */
#define HANG_GUARD_S 60
/* The most ml_quick_stat's live heap can lag one allocating thread in these targets (above). */
#define QUICK_LAG_PER_THREAD ((MIB + 64 * KIB) * 5 / 4)

typedef unsigned long long ull;

/* The index of a field in a snapshot's "WHEN.INDEX VALUE" lines. */
#define F(field) (offsetof(ml_stats, field) / sizeof(uint64_t))

/* Runs target `name` preloaded with one argument (may be NULL) and `env` (may be NULL), and
 * asserts that it exited 0. */
static void run(const char *name, const char *arg, const char *const *env, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target(name));
    const char *argv[] = {target, arg, NULL};
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
    cr_assert(c->exited && c->status == 0, "%s %s: %s %d\nstdout:\n%s\nstderr:\n%s", name,
              arg ? arg : "", c->exited ? "exited with status" : "killed by signal",
              c->exited ? c->status : c->signal, c->out, c->err);
}

/* The number after "key " at the start of a line of `text`; fails the test if absent. */
static ull field(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ')
            return strtoull(line + len + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return 0;
}

/* Field number `index` of snapshot `when`. */
static ull snap(const char *text, const char *when, size_t index)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%zu", when, index);
    return field(text, key);
}

/* ---- Allocation, freeing and the live heap, one thread -------------------------------------- */

Test(stats, allocated_bytes_and_allocations_exact_in_one_thread)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    ull requested = field(c.out, "requested"), count = field(c.out, "count");
    cr_expect_eq(snap(c.out, "full", F(allocated_bytes)) - snap(c.out, "base", F(allocated_bytes)),
                 requested, "allocated_bytes must grow by the %llu bytes requested", requested);
    cr_expect_eq(snap(c.out, "full", F(allocations)) - snap(c.out, "base", F(allocations)), count,
                 "allocations must grow by the %llu calls made", count);
    cr_expect_eq(snap(c.out, "full", F(allocated_usable)) -
                     snap(c.out, "base", F(allocated_usable)),
                 field(c.out, "usable"), "allocated_usable must grow by the usable sizes");
    /* Freeing allocates nothing: the counts do not move. */
    cr_expect_eq(snap(c.out, "end", F(allocated_bytes)), snap(c.out, "full", F(allocated_bytes)));
    cr_expect_eq(snap(c.out, "end", F(allocations)), snap(c.out, "full", F(allocations)));
    ml_child_free(&c);
}

Test(stats, freed_bytes_grow_by_the_usable_sizes_of_freed_blocks)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    ull freed = field(c.out, "freed");
    cr_expect_eq(freed, field(c.out, "usable"), "the target frees what it allocated");
    cr_expect_eq(snap(c.out, "full", F(freed_bytes)), snap(c.out, "base", F(freed_bytes)),
                 "nothing was freed while the blocks were allocated");
    cr_expect_eq(snap(c.out, "end", F(freed_bytes)) - snap(c.out, "full", F(freed_bytes)), freed,
                 "freed_bytes must grow by the %llu usable bytes freed", freed);
    ml_child_free(&c);
}

Test(stats, realloc_counts_its_new_size_and_frees_the_old_block)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    const char *a = "after_realloc", *b = "before_realloc";
    cr_expect_eq(snap(c.out, a, F(allocated_bytes)) - snap(c.out, b, F(allocated_bytes)), 5000);
    cr_expect_eq(snap(c.out, a, F(allocations)) - snap(c.out, b, F(allocations)), 1);
    cr_expect_eq(snap(c.out, a, F(allocated_usable)) - snap(c.out, b, F(allocated_usable)),
                 field(c.out, "new_usable"));
    cr_expect_eq(snap(c.out, a, F(freed_bytes)) - snap(c.out, b, F(freed_bytes)),
                 field(c.out, "old_usable"));
    ml_child_free(&c);
}

Test(stats, stat_live_heap_is_exact_in_a_quiescent_process)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    ull usable = field(c.out, "usable");
    ull base = snap(c.out, "base", F(heap_live)), full = snap(c.out, "full", F(heap_live));
    cr_expect_geq(usable, 30 * MIB, "the target should hold about 32 MiB");
    cr_expect_eq(full - base, usable, "live heap moved by %lld for %llu usable bytes allocated",
                 (long long)(full - base), usable);
    cr_expect_eq(snap(c.out, "end", F(heap_live)), base, "freeing every block restores the base");
    cr_expect_geq(snap(c.out, "full", F(heap_peak)), full, "ml_stat's peak is at least live");
    cr_expect_geq(snap(c.out, "end", F(heap_peak)), full, "the peak outlives the frees");
    cr_expect_geq(snap(c.out, "full", F(heap_mapped)), full, "jemalloc maps the live heap");
    cr_expect_geq(snap(c.out, "full", F(heap_mapped_max)), snap(c.out, "full", F(heap_peak)));
    ml_child_free(&c);
}

Test(stats, quick_stat_live_heap_within_the_flush_bound_in_one_thread)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    ull quick = snap(c.out, "quick", F(heap_live)), exact = snap(c.out, "full", F(heap_live));
    cr_expect_leq(quick, exact, "no frees since the baseline: quick must not lead");
    cr_expect_leq(exact - quick, QUICK_LAG_PER_THREAD, "quick lags by %llu > %llu", exact - quick,
                  QUICK_LAG_PER_THREAD);
    cr_expect_eq(snap(c.out, "quick", F(heap_mapped)), 0, "quick_stat does not ask jemalloc");
    /* Every count but the heap's is as exact as ml_stat's. */
    size_t same[] = {F(allocated_bytes), F(allocations),        F(allocated_usable), F(freed_bytes),
                     F(threads_live),    F(threads_registered), F(samples)};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        cr_expect_eq(snap(c.out, "quick", same[i]), snap(c.out, "full", same[i]), "field %zu",
                     same[i]);
    ml_child_free(&c);
}

Test(stats, stat_allocates_nothing_and_repeats_itself)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    for (size_t i = 0; i < sizeof(ml_stats) / sizeof(uint64_t); i++)
        cr_expect_eq(snap(c.out, "again", i), snap(c.out, "full", i),
                     "field %zu changed between two ml_stat calls", i);
    ml_child_free(&c);
}

/* ---- Threads ----------------------------------------------------------------------------- */

Test(stats, counts_include_threads_that_exited)
{
    ml_child c;
    run("stats_counts", "threads", NULL, &c);
    ull requested = field(c.out, "requested"), count = field(c.out, "count");
    ull usable = field(c.out, "usable");
    cr_expect_eq(snap(c.out, "full", F(allocated_bytes)) - snap(c.out, "base", F(allocated_bytes)),
                 requested, "bytes requested by the threads, after they exited");
    cr_expect_eq(snap(c.out, "full", F(allocations)) - snap(c.out, "base", F(allocations)), count);
    cr_expect_eq(snap(c.out, "full", F(allocated_usable)) -
                     snap(c.out, "base", F(allocated_usable)),
                 usable);
    /* The same while they were alive. */
    cr_expect_eq(snap(c.out, "mid", F(allocated_bytes)) - snap(c.out, "base", F(allocated_bytes)),
                 requested);
    /* Exited threads' blocks stay live until the main thread frees them. */
    ull base = snap(c.out, "base", F(heap_live));
    cr_expect_eq(snap(c.out, "mid", F(heap_live)) - base, usable, "threads parked");
    cr_expect_eq(snap(c.out, "full", F(heap_live)) - base, usable, "threads exited");
    cr_expect_eq(snap(c.out, "end", F(heap_live)), base);
    cr_expect_eq(snap(c.out, "end", F(freed_bytes)) - snap(c.out, "full", F(freed_bytes)),
                 field(c.out, "freed"));
    cr_expect_eq(field(c.out, "freed"), usable);
    ml_child_free(&c);
}

Test(stats, quick_stat_live_heap_within_the_flush_bound_across_threads)
{
    ml_child c;
    run("stats_counts", "threads", NULL, &c);
    ull threads = field(c.out, "threads");
    ull quick = snap(c.out, "quick", F(heap_live)), exact = snap(c.out, "mid", F(heap_live));
    cr_expect_leq(quick, exact, "no frees since the baseline: quick must not lead");
    cr_expect_leq(exact - quick, threads * QUICK_LAG_PER_THREAD, "quick lags by %llu > %llu",
                  exact - quick, threads * QUICK_LAG_PER_THREAD);
    ml_child_free(&c);
}

Test(stats, threads_live_and_ever_registered)
{
    ml_child c;
    run("stats_counts", "threads", NULL, &c);
    ull threads = field(c.out, "threads");
    ull live = snap(c.out, "pre", F(threads_live));
    ull ever = snap(c.out, "pre", F(threads_registered));
    cr_expect_geq(live, 1, "the main thread is registered");
    cr_expect_geq(ever, live);
    cr_expect_eq(snap(c.out, "base", F(threads_live)), live + threads, "threads started");
    cr_expect_eq(snap(c.out, "base", F(threads_registered)), ever + threads);
    cr_expect_eq(snap(c.out, "quick", F(threads_live)), live + threads);
    cr_expect_eq(snap(c.out, "full", F(threads_live)), live, "threads joined");
    cr_expect_eq(snap(c.out, "full", F(threads_registered)), ever + threads,
                 "exited threads stay counted as registered");
    ml_child_free(&c);
}

/* ---- The budget ---------------------------------------------------------------------------- */

static const char *const budget_env[] = {"MEMLIMITS_ALLOC=1G", NULL};

Test(stats, budget_used_and_left_exact)
{
    ml_child c;
    run("stats_counts", "budget", budget_env, &c);
    const char *whens[] = {"base", "mid", "end"};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(snap(c.out, whens[i], F(budget_total)), 1ull << 30, "%s", whens[i]);
        cr_expect_eq(snap(c.out, whens[i], F(budget_used)) + snap(c.out, whens[i], F(budget_left)),
                     1ull << 30, "%s: used + left", whens[i]);
    }
    ull main_req = field(c.out, "main_requested"), thread_req = field(c.out, "thread_requested");
    cr_expect_eq(snap(c.out, "mid", F(budget_used)) - snap(c.out, "base", F(budget_used)), main_req,
                 "the main thread's requests");
    cr_expect_eq(snap(c.out, "end", F(budget_used)) - snap(c.out, "mid", F(budget_used)),
                 thread_req, "an exited thread's requests");
    /* Used is what the budget counted: every request since the process started. */
    cr_expect_eq(snap(c.out, "end", F(budget_used)), snap(c.out, "end", F(allocated_bytes)));
    cr_expect_eq(snap(c.out, "end", F(budget_fired)), 0);
    ml_child_free(&c);
}

Test(stats, quick_stat_budget_left_within_the_leases)
{
    ml_child c;
    run("stats_counts", "budget", budget_env, &c);
    const char *pairs[][2] = {{"base_quick", "base"}, {"mid_quick", "mid"}};
    for (int i = 0; i < 2; i++) {
        ull quick = snap(c.out, pairs[i][0], F(budget_left));
        ull exact = snap(c.out, pairs[i][1], F(budget_left));
        ull threads = snap(c.out, pairs[i][1], F(threads_live));
        cr_expect_leq(quick, exact, "%s: leases count as spent", pairs[i][0]);
        cr_expect_leq(exact - quick, threads * MIB, "%s: low by %llu, more than 1 MiB a thread",
                      pairs[i][0], exact - quick);
        cr_expect_eq(snap(c.out, pairs[i][0], F(budget_used)) +
                         snap(c.out, pairs[i][0], F(budget_left)),
                     1ull << 30);
    }
    ml_child_free(&c);
}

Test(stats, no_budget_reads_unlimited_and_nothing_used)
{
    ml_child c;
    run("stats_counts", "one", NULL, &c);
    cr_expect_eq(snap(c.out, "full", F(budget_total)), UINT64_MAX);
    cr_expect_eq(snap(c.out, "full", F(budget_left)), UINT64_MAX);
    cr_expect_eq(snap(c.out, "full", F(budget_used)), 0);
    cr_expect_eq(snap(c.out, "full", F(heap_cap)), UINT64_MAX);
    cr_expect_eq(snap(c.out, "full", F(global_memory_limit)), UINT64_MAX);
    ml_child_free(&c);
}

/* ---- Limits that fired ---------------------------------------------------------------------- */

Test(stats, heap_cap_firing_counted_with_its_refusals)
{
    const char *env[] = {"MEMLIMITS_HEAP=16M", NULL};
    ml_child c;
    run("stats_counts", "refusals", env, &c);
    ull nulls = field(c.out, "nulls");
    cr_expect_eq(nulls, 3, "every attempt after the first refusal is refused too");
    cr_expect_eq(snap(c.out, "before", F(heap_cap)), 16 * MIB);
    cr_expect_eq(snap(c.out, "before", F(heap_cap_fired)), 0);
    cr_expect_eq(snap(c.out, "before", F(heap_cap_refused)), 0);
    cr_expect_eq(snap(c.out, "after", F(heap_cap_fired)), 1);
    cr_expect_eq(snap(c.out, "after", F(heap_cap_refused)), 1 + nulls,
                 "the first refusal and the %llu after it", nulls);
    cr_expect_eq(snap(c.out, "after", F(budget_fired)), 0);
    cr_expect_eq(snap(c.out, "after", F(budget_refused)), 0);
    cr_expect_leq(snap(c.out, "after", F(heap_live)), 16 * MIB);
    ml_child_free(&c);
}

Test(stats, budget_firing_counted_with_its_refusals)
{
    const char *env[] = {"MEMLIMITS_ALLOC=8M", "MEMLIMITS_ON_ALLOC=enomem", NULL};
    ml_child c;
    run("stats_counts", "refusals", env, &c);
    ull nulls = field(c.out, "nulls");
    cr_expect_eq(nulls, 3);
    cr_expect_eq(snap(c.out, "before", F(budget_fired)), 0);
    cr_expect_eq(snap(c.out, "before", F(budget_refused)), 0);
    cr_expect_eq(snap(c.out, "after", F(budget_fired)), 1);
    cr_expect_eq(snap(c.out, "after", F(budget_refused)), 1 + nulls);
    cr_expect_lt(snap(c.out, "after", F(budget_left)), 256 * KIB, "what is left cannot cover one");
    cr_expect_eq(snap(c.out, "after", F(heap_cap_fired)), 0);
    cr_expect_eq(snap(c.out, "after", F(heap_cap_refused)), 0);
    ml_child_free(&c);
}

/* ---- Tasks ------------------------------------------------------------------------------------
 */

Test(stats, tasks_run_and_interrupted_counted_per_reason)
{
    ml_child c;
    run("stats_tasks", NULL, NULL, &c);
    /* What the target ran, in order (stats_tasks.c), and what each call must return. */
    const int want[] = {ML_OK,
                        ML_OK,
                        ML_ALLOCATION_LIMIT,
                        ML_ALLOCATION_LIMIT,
                        ML_ALLOCATION_LIMIT,
                        ML_ALLOCATION_LIMIT,
                        ML_OUTER_LIMIT,
                        ML_TOKEN,
                        ML_MEMORY_LIMIT,
                        ML_MEMORY_LIMIT,
                        ML_HEAP_CAP,
                        ML_EINVAL,
                        ML_EINVAL,
                        ML_EINVAL};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char key[32];
        snprintf(key, sizeof key, "status.%zu", i);
        cr_expect_eq((int)field(c.out, key), want[i], "call %zu returned %d, expected %d", i,
                     (int)field(c.out, key), want[i]);
    }
    struct {
        size_t index;
        ull count;
        const char *what;
    } counts[] = {{F(tasks_run), 11, "tasks run (errors ran none)"},
                  {F(tasks_ok), 2, "ML_OK"},
                  {F(tasks_interrupted_allocation), 4, "ML_ALLOCATION_LIMIT"},
                  {F(tasks_interrupted_token), 1, "ML_TOKEN"},
                  {F(tasks_interrupted_memory), 2, "ML_MEMORY_LIMIT"},
                  {F(tasks_interrupted_outer), 1, "ML_OUTER_LIMIT (the nested task)"},
                  {F(tasks_heap_cap), 1, "ML_HEAP_CAP"}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        ull base = snap(c.out, "base", counts[i].index), end = snap(c.out, "end", counts[i].index);
        cr_expect_eq(end - base, counts[i].count, "%s: %llu, expected %llu", counts[i].what,
                     end - base, counts[i].count);
    }
    ml_child_free(&c);
}

/* ---- The sampler ---------------------------------------------------------------------------- */

Test(stats, samples_follow_the_binomial_law)
{
    /* About 33 MiB requested at a mean gap of 4096 bytes: Binomial(n, 1/4096) samples, mean
     * n/4096 (about 8200), standard deviation under sqrt(mean) (about 91). Six deviations is a
     * bound a correct sampler misses with probability 2e-9 (the seed also fixes the draw). */
    const char *env[] = {"MEMLIMITS_SAMPLE=4096", "MEMLIMITS_SEED=7", NULL};
    ml_child c;
    run("stats_counts", "one", env, &c);
    cr_expect_eq(snap(c.out, "full", F(sample_mean_gap)), 4096);
    double n =
        (double)(snap(c.out, "full", F(allocated_bytes)) - snap(c.out, "base", F(allocated_bytes)));
    double got = (double)(snap(c.out, "full", F(samples)) - snap(c.out, "base", F(samples)));
    double mean = n / 4096, sd = sqrt(mean * (1 - 1.0 / 4096));
    cr_expect(fabs(got - mean) <= 6 * sd, "%.0f samples for %.0f bytes: mean %.0f, sd %.1f", got, n,
              mean, sd);
    ml_child_free(&c);
}

/* ---- ml_print_stats ------------------------------------------------------------------------- */

/* The names of every field of ml_stats but `size`, with their indices: a field added to the
 * struct without a line here fails print_stats_has_every_field_and_parses. */
#define NAMED(field)                                                                               \
    {                                                                                              \
#field, F(field)                                                                           \
    }
static const struct {
    const char *name;
    size_t index;
} names[] = {NAMED(allocated_bytes),
             NAMED(allocations),
             NAMED(allocated_usable),
             NAMED(freed_bytes),
             NAMED(heap_live),
             NAMED(heap_peak),
             NAMED(heap_cap),
             NAMED(heap_mapped),
             NAMED(heap_mapped_max),
             NAMED(budget_total),
             NAMED(budget_used),
             NAMED(budget_left),
             NAMED(global_memory_limit),
             NAMED(samples),
             NAMED(sample_mean_gap),
             NAMED(threads_live),
             NAMED(threads_registered),
             NAMED(heap_cap_fired),
             NAMED(heap_cap_refused),
             NAMED(budget_fired),
             NAMED(budget_refused),
             NAMED(tasks_run),
             NAMED(tasks_ok),
             NAMED(tasks_interrupted_memory),
             NAMED(tasks_interrupted_allocation),
             NAMED(tasks_interrupted_token),
             NAMED(tasks_interrupted_outer),
             NAMED(tasks_heap_cap)};
#define NNAMES (sizeof names / sizeof names[0])

/* Parses ml_print_stats's lines ("name:" padded with spaces, then a decimal number or
 * "unlimited") from `text`, skipping the target's "raw.N V" lines; checks each against the raw
 * snapshot taken just before, and returns how many lines were read. */
static size_t check_printed(const char *text)
{
    size_t lines = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        cr_assert_not_null(end, "unterminated line: %s", line);
        if (strncmp(line, "raw.", 4) != 0) {
            const char *colon = memchr(line, ':', (size_t)(end - line));
            cr_assert_not_null(colon, "not a 'name: value' line: %.*s", (int)(end - line), line);
            size_t k = 0;
            while (k < NNAMES && !(strlen(names[k].name) == (size_t)(colon - line) &&
                                   strncmp(names[k].name, line, (size_t)(colon - line)) == 0))
                k++;
            cr_assert_lt(k, NNAMES, "unknown field: %.*s", (int)(end - line), line);
            cr_expect_eq(k, lines, "field %s out of the struct's order", names[k].name);
            const char *v = colon + 1;
            cr_assert(*v == ' ', "no space after the colon: %.*s", (int)(end - line), line);
            while (*v == ' ')
                v++;
            ull value;
            if (strncmp(v, "unlimited\n", 10) == 0) {
                value = UINT64_MAX;
            } else {
                char *stop;
                cr_assert(*v >= '0' && *v <= '9', "not a number: %.*s", (int)(end - line), line);
                value = strtoull(v, &stop, 10);
                cr_assert_eq(stop, end, "trailing text: %.*s", (int)(end - line), line);
            }
            cr_expect_eq(value, snap(text, "raw", names[k].index), "%s: printed %llu",
                         names[k].name, value);
            lines++;
        }
        line = end + 1;
    }
    return lines;
}

Test(stats, print_stats_has_every_field_and_parses)
{
    cr_assert_eq(NNAMES, sizeof(ml_stats) / sizeof(uint64_t) - 1,
                 "the test must name every field of ml_stats");
    const char *envs[][3] = {{NULL},
                             {"MEMLIMITS_HEAP=512M", "MEMLIMITS_ALLOC=2G", NULL},
                             {"MEMLIMITS_GLOBAL=1G", "MEMLIMITS_SAMPLE=1000", NULL}};
    for (size_t e = 0; e < sizeof envs / sizeof envs[0]; e++) {
        ml_child c;
        run("stats_counts", "print", envs[e], &c);
        cr_expect_eq(check_printed(c.out), NNAMES, "every field printed, once:\n%s", c.out);
        ml_child_free(&c);
    }
}

Test(stats, print_stats_writes_limits_as_set)
{
    const char *env[] = {"MEMLIMITS_HEAP=512M", "MEMLIMITS_ALLOC=2G", NULL};
    ml_child c;
    run("stats_counts", "print", env, &c);
    cr_expect(strstr(c.out, "heap_cap:                     536870912\n") != NULL, "%s", c.out);
    cr_expect(strstr(c.out, "budget_total:                 2147483648\n") != NULL, "%s", c.out);
    cr_expect(strstr(c.out, "global_memory_limit:          unlimited\n") != NULL, "%s", c.out);
    ml_child_free(&c);
}

/* ---- The ABI rule and inactive processes (in-process: memlimits is not active here) --------- */

/* A buffer as a caller built against another header would pass: ml_stats and room after it,
 * filled with a pattern that shows which bytes were written. */
typedef struct padded {
    ml_stats s;
    uint64_t tail[4];
} padded;

static void fill_pattern(padded *p)
{
    memset(p, 0xa5, sizeof *p);
}

#define PATTERN UINT64_C(0xa5a5a5a5a5a5a5a5)

Test(stats, inactive_process_reports_zero_counts_and_no_limits)
{
    cr_assert_eq(ml_active(), 0);
    void (*calls[])(ml_stats *) = {ml_stat, ml_quick_stat};
    for (int i = 0; i < 2; i++) {
        padded p;
        fill_pattern(&p);
        p.s.size = sizeof(ml_stats);
        calls[i](&p.s);
        cr_expect_eq(p.s.size, sizeof(ml_stats));
        for (size_t k = 0; k < NNAMES; k++) {
            uint64_t v;
            memcpy(&v, (const char *)&p.s + names[k].index * sizeof v, sizeof v);
            int limit = names[k].index == F(heap_cap) || names[k].index == F(budget_total) ||
                        names[k].index == F(budget_left) ||
                        names[k].index == F(global_memory_limit);
            cr_expect_eq(v, limit ? UINT64_MAX : 0, "%s: %llu", names[k].name, (ull)v);
        }
        cr_expect_eq(p.tail[0], PATTERN, "nothing written past the caller's size");
    }
}

Test(stats, older_caller_gets_only_the_fields_it_knows)
{
    /* A caller compiled when ml_stats ended before heap_live, and one whose size is not a
     * multiple of 8: only whole fields within it are written. */
    size_t sizes[] = {offsetof(ml_stats, heap_live), offsetof(ml_stats, heap_live) + 5};
    for (int i = 0; i < 2; i++) {
        padded p;
        fill_pattern(&p);
        p.s.size = sizes[i];
        ml_stat(&p.s);
        cr_expect_eq(p.s.size, offsetof(ml_stats, heap_live), "size %zu", sizes[i]);
        cr_expect_eq(p.s.freed_bytes, 0, "a field within size is filled");
        cr_expect_eq(p.s.heap_live, PATTERN, "the first field past size is untouched");
        cr_expect_eq(p.s.tasks_interrupted_token, PATTERN);
    }
}

Test(stats, newer_caller_gets_the_unknown_fields_zeroed)
{
    padded p;
    fill_pattern(&p);
    p.s.size = sizeof p - sizeof(uint64_t); /* three fields this library does not know */
    ml_quick_stat(&p.s);
    cr_expect_eq(p.s.size, sizeof(ml_stats), "size says which fields are valid");
    cr_expect_eq(p.tail[0], 0);
    cr_expect_eq(p.tail[1], 0);
    cr_expect_eq(p.tail[2], 0);
    cr_expect_eq(p.tail[3], PATTERN, "nothing past the caller's size");
    cr_expect_eq(p.s.heap_cap, UINT64_MAX);
}

Test(stats, size_below_one_field_writes_nothing_and_null_is_ignored)
{
    for (uint64_t size = 0; size < 8; size++) {
        padded p;
        fill_pattern(&p);
        p.s.size = size;
        ml_stat(&p.s);
        cr_expect_eq(p.s.size, size);
        cr_expect_eq(p.s.allocated_bytes, PATTERN, "size %llu", (ull)size);
    }
    ml_stat(NULL);
    ml_quick_stat(NULL);
}
