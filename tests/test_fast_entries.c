/* The entry points that end in a tail call to jemalloc (issue 12: realloc and the aligned
 * allocators check their arguments once and jump): under real exhaustion on the fast path they
 * fail as glibc's do, with errno as glibc leaves it. Each case runs tests/targets/fast_oom.c
 * preloaded, and the same program under glibc for the reference. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60

static void run(const char *entry, int preload, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("fast_oom"));
    const char *argv[] = {target, entry, NULL};
    cr_assert_eq(ml_child_run(argv, NULL, preload, NULL, HANG_GUARD_S, c), 0);
    cr_assert(c->exited && c->status == 0, "%s: exit %d signal %d\n%s%s", entry, c->status,
              c->signal, c->out, c->err);
}

static long long number(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    cr_assert_not_null(at, "no '%s' in:\n%s", key, text);
    return strtoll(at + strlen(key) + 1, NULL, 10);
}

static void expect_null_enomem(const char *entry)
{
    for (int preload = 1; preload >= 0; preload--) {
        ml_child c;
        run(entry, preload, &c);
        cr_assert_gt(number(c.out, "blocks"), 0, "%s", c.out);
        cr_assert_eq(number(c.out, "errno"), ENOMEM, "%s (preload %d): %s", entry, preload, c.out);
        ml_child_free(&c);
    }
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
}

Test(fast_entries, posix_memalign_returns_enomem_and_leaves_its_pointer)
{
    for (int preload = 1; preload >= 0; preload--) {
        ml_child c;
        run("posix_memalign", preload, &c);
        cr_assert_eq(number(c.out, "rc"), ENOMEM, "%s", c.out);
        cr_assert_eq(number(c.out, "untouched"), 1, "%s", c.out);
        /* errno: glibc leaves it alone, and so does the tail call to jemalloc. */
        cr_assert_eq(number(c.out, "errno"), 0, "preload %d: %s", preload, c.out);
        ml_child_free(&c);
    }
}
