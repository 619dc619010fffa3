/* jemalloc's non-standard API exported by libmemlimits.so (preload/jemalloc_api.c): a program
 * linked with Debian's libjemalloc runs preloaded with one heap (no cross-allocator frees),
 * mallctl's statistics describe that heap, and mallocx, rallocx and xallocx are charged like the
 * standard API (counts, heap cap, task limit, process budget). Each case runs
 * tests/targets/fast_jemalloc.c in a child process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60
#define MIB (1ll << 20)

static void run(const char *mode, const char *const *env, int preload, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("fast_jemalloc"));
    const char *argv[] = {target, mode, NULL};
    cr_assert_eq(ml_child_run(argv, env, preload, NULL, HANG_GUARD_S, c), 0, "cannot start %s",
                 target);
}

/* The number after "key " at the start of a line of `text`; fails the test if absent. */
static long long number(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ')
            return strtoll(line + len + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return 0;
}

static void assert_clean(const ml_child *c)
{
    cr_assert(c->exited && c->status == 0, "exit %d signal %d\nstdout:\n%s\nstderr:\n%s", c->status,
              c->signal, c->out, c->err);
    cr_assert_eq(number(c->out, "failures"), 0, "%s", c->out);
}

Test(fast_jemalloc, the_target_really_links_debians_jemalloc)
{
    char cmd[4200], listing[8192];
    snprintf(cmd, sizeof cmd, "ldd '%s' 2>&1", ml_test_target("fast_jemalloc"));
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(listing, 1, sizeof listing - 1, p);
    listing[n] = '\0';
    pclose(p);
    cr_assert_not_null(strstr(listing, "libjemalloc.so.2"), "%s", listing);
}

Test(fast_jemalloc, a_jemalloc_linked_program_has_one_heap_and_its_statistics)
{
    ml_child c;
    run("basic", NULL, 1, &c);
    assert_clean(&c);
    cr_assert_geq(number(c.out, "stats_grew"), 63 * MIB, "%s", c.out);
    /* jemalloc's count and memlimits' agree, up to blocks held in thread caches (64 MiB were
     * malloc'd: at least 63 of them show, whatever the caches gave back meanwhile). */
    long long diff = number(c.out, "stats_minus_heap_live");
    cr_assert(diff > -4 * MIB && diff < 4 * MIB, "%s", c.out);
    ml_child_free(&c);
    /* The same program on Debian's jemalloc alone: the checks are jemalloc's own semantics. */
    run("basic", NULL, 0, &c);
    assert_clean(&c);
    cr_assert_geq(number(c.out, "stats_grew"), 63 * MIB, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_jemalloc, mallocx_rallocx_and_xallocx_are_counted_exactly)
{
    ml_child c;
    run("count", NULL, 1, &c);
    assert_clean(&c);
    cr_assert_eq(number(c.out, "counted"), number(c.out, "expected"), "%s", c.out);
    ml_child_free(&c);
}

Test(fast_jemalloc, the_heap_cap_stops_jemallocs_api)
{
    static const char *const env[] = {"MEMLIMITS_HEAP=64M", NULL};
    ml_child c;
    run("cap", env, 1, &c);
    assert_clean(&c);
    long long blocks = number(c.out, "mallocx_blocks");
    cr_assert(blocks >= 32 && blocks <= 64, "%s", c.out);
    cr_assert_leq(number(c.out, "live_mib"), 64, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_jemalloc, a_tasks_allocation_limit_stops_mallocx_exactly)
{
    ml_child c;
    run("task", NULL, 1, &c);
    assert_clean(&c);
    cr_assert_eq(number(c.out, "status"), 2, "ML_ALLOCATION_LIMIT expected: %s", c.out);
    cr_assert_eq(number(c.out, "blocks"), 256, "%s", c.out);
    cr_assert_eq(number(c.out, "used"), MIB, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_jemalloc, the_process_budget_stops_mallocx)
{
    static const char *const env[] = {"MEMLIMITS_ALLOC=16M", "MEMLIMITS_ON_ALLOC=enomem", NULL};
    ml_child c;
    run("budget", env, 1, &c);
    assert_clean(&c);
    long long total = number(c.out, "budget_total");
    cr_assert(total > 15 * MIB && total <= 16 * MIB, "%s", c.out);
    ml_child_free(&c);
}
