/* The entry points that end in a tail call to jemalloc (issue 12: realloc and the aligned
 * allocators check their arguments once and jump): under real exhaustion on the fast path they
 * fail as glibc's do, with errno as glibc leaves it. Each case runs tests/targets/fast_oom.c
 * preloaded, and the same program under glibc for the reference; small aligned requests, which
 * end in jemalloc's malloc, are run too. tests/targets/fast_aligned.c checks the blocks of the
 * aligned entry points against jemalloc's own aligned path. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60

/* Small: requests of 1000 bytes (aligned ones: jemalloc's malloc); otherwise 20000. */
static void run_sized(const char *entry, int small, int preload, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("fast_oom"));
    const char *argv[] = {target, entry, small ? "1000" : "20000", NULL};
    cr_assert_eq(ml_child_run(argv, NULL, preload, NULL, HANG_GUARD_S, c), 0);
    cr_assert(c->exited && c->status == 0, "%s: exit %d signal %d\n%s%s", entry, c->status,
              c->signal, c->out, c->err);
}

static void run(const char *entry, int preload, ml_child *c)
{
    run_sized(entry, 0, preload, c);
}

static long long number(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    cr_assert_not_null(at, "no '%s' in:\n%s", key, text);
    return strtoll(at + strlen(key) + 1, NULL, 10);
}

static void expect_null_enomem_sized(const char *entry, int small)
{
    for (int preload = 1; preload >= 0; preload--) {
        ml_child c;
        run_sized(entry, small, preload, &c);
        cr_assert_gt(number(c.out, "blocks"), 0, "%s", c.out);
        cr_assert_eq(number(c.out, "errno"), ENOMEM, "%s (preload %d): %s", entry, preload, c.out);
        ml_child_free(&c);
    }
}

static void expect_null_enomem(const char *entry)
{
    expect_null_enomem_sized(entry, 0);
}

Test(fast_entries, realloc_fails_with_enomem_and_keeps_its_block)
{
    expect_null_enomem("realloc");
    ml_child c;
    run("realloc", 1, &c);
    cr_assert_eq(number(c.out, "kept"), 1, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_entries, calloc_fails_with_enomem)
{
    expect_null_enomem("calloc");
}

Test(fast_entries, aligned_alloc_memalign_and_valloc_fail_with_enomem)
{
    expect_null_enomem("aligned_alloc");
    expect_null_enomem("memalign");
    expect_null_enomem("valloc");
    expect_null_enomem_sized("aligned_alloc", 1);
    expect_null_enomem_sized("memalign", 1);
    expect_null_enomem_sized("valloc", 1);
}

Test(fast_entries, posix_memalign_returns_enomem_and_leaves_its_pointer)
{
    for (int small = 0; small <= 1; small++) {
        for (int preload = 1; preload >= 0; preload--) {
            ml_child c;
            run_sized("posix_memalign", small, preload, &c);
            cr_assert_eq(number(c.out, "rc"), ENOMEM, "%s", c.out);
            cr_assert_eq(number(c.out, "untouched"), 1, "%s", c.out);
            /* errno: glibc leaves it alone, and so do jemalloc's posix_memalign and malloc. */
            cr_assert_eq(number(c.out, "errno"), 0, "small %d preload %d: %s", small, preload,
                         c.out);
            ml_child_free(&c);
        }
    }
}

/* Small aligned requests end in jemalloc's malloc of the size rounded up to the alignment: each
 * block is aligned, of jemalloc's own size class for the request, and counted as requested. */
Test(fast_entries, aligned_blocks_are_jemallocs_own_and_counted_as_requested)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("fast_aligned"));
    const char *argv[] = {target, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 1, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 0, "exit %d signal %d\n%s%s", c.status, c.signal, c.out,
              c.err);
    cr_assert_gt(number(c.out, "checked"), 1000, "%s", c.out);
    ml_child_free(&c);
}
