/* C++'s operator new and delete exported by libmemlimits.so (preload/new.c): the standard's
 * failure semantics under a heap cap and under real exhaustion (std::bad_alloc, the
 * new-handler's loop, nothrow's NULL), alignment, exact counting, and no C++ runtime for C
 * programs. Each case runs tests/targets/fast_cxx.cc preloaded in a child process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60

static void run(const char *mode, const char *const *env, int preload, ml_child *c)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("fast_cxx"));
    const char *argv[] = {target, mode, NULL};
    cr_assert_eq(ml_child_run(argv, env, preload, NULL, HANG_GUARD_S, c), 0, "cannot start %s",
                 target);
}

/* The text after "key " at the start of a line of `text`; fails the test if absent. */
static const char *value(const char *text, const char *key)
{
    size_t len = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ') return line + len + 1;
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    cr_assert_fail("no '%s' in output:\n%s", key, text);
    return NULL;
}

static long long number(const char *text, const char *key)
{
    return strtoll(value(text, key), NULL, 10);
}

/* The run exited 0 and the target's own checks all passed. */
static void assert_clean(const ml_child *c)
{
    cr_assert(c->exited && c->status == 0, "exit %d signal %d\nstdout:\n%s\nstderr:\n%s", c->status,
              c->signal, c->out, c->err);
    cr_assert_eq(number(c->out, "failures"), 0, "%s", c->out);
}

static const char *const capped[] = {"MEMLIMITS_HEAP=64M", NULL};

Test(fast_cxx, every_operator_new_fails_as_the_standard_says_at_the_heap_cap)
{
    ml_child c;
    run("cap", capped, 1, &c);
    assert_clean(&c);
    long long filled = number(c.out, "filled_mib");
    cr_assert(filled >= 32 && filled <= 64, "filled %lld MiB under a 64 MiB cap", filled);
    cr_assert_gt(number(c.out, "small_blocks"), 0);
    /* Everything freed, the live heap is back where it was (blocks of the C++ runtime's own
     * aside: a few KiB). */
    long long leaked = number(c.out, "leaked");
    cr_assert(leaked > -(64 << 10) && leaked < (64 << 10), "leaked %lld bytes", leaked);
    ml_child_free(&c);
}

Test(fast_cxx, the_new_handler_is_called_in_the_standard_loop)
{
    ml_child c;
    run("handler", capped, 1, &c);
    assert_clean(&c);
    /* Called once, freed 4 MiB, and the 2 MiB block came from it. */
    cr_assert_eq(number(c.out, "freeing_handler_calls"), 1, "%s", c.out);
    /* Called until it uninstalled itself, then std::bad_alloc. */
    cr_assert_eq(number(c.out, "giving_up_handler_calls"), 3, "%s", c.out);
    cr_assert_eq(number(c.out, "aligned_giving_up_handler_calls"), 3, "%s", c.out);
    /* nothrow new calls the handler too, and turns what it throws into NULL. */
    cr_assert_eq(number(c.out, "nothrow_throwing_handler_calls"), 1, "%s", c.out);
    cr_assert_eq(number(c.out, "nothrow_freeing_handler_calls"), 1, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_cxx, aligned_new_returns_aligned_blocks_and_refuses_bad_alignments)
{
    ml_child c;
    run("aligned", NULL, 1, &c);
    assert_clean(&c);
    ml_child_free(&c);
    /* The same program under libstdc++'s own operators: the checks are the standard's. */
    run("aligned", NULL, 0, &c);
    assert_clean(&c);
    ml_child_free(&c);
}

Test(fast_cxx, new_and_new_arrays_are_counted_exactly_by_the_librarys_own_operators)
{
    ml_child c;
    run("count", NULL, 1, &c);
    assert_clean(&c);
    cr_assert_eq(number(c.out, "counted"), number(c.out, "expected"), "%s", c.out);
    cr_assert_eq(strncmp(value(c.out, "operator_new_from"), "libmemlimits.so", 15), 0, "%s", c.out);
    ml_child_free(&c);
}

Test(fast_cxx, real_exhaustion_on_the_fast_path_throws_bad_alloc)
{
    ml_child c;
    run("oom", NULL, 1, &c);
    assert_clean(&c);
    cr_assert_eq(number(c.out, "oom_threw"), 1, "%s", c.out);
    ml_child_free(&c);
}

/* Whether `ldd PATH` names a C++ runtime; fails the test if ldd cannot run. */
static int loads_cxx_runtime(const char *path, char *listing, size_t size)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ldd '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = fread(listing, 1, size - 1, p);
    listing[n] = '\0';
    cr_assert_eq(pclose(p), 0, "%s: %s", cmd, listing);
    return strstr(listing, "libstdc++") != NULL || strstr(listing, "libc++") != NULL;
}

Test(fast_cxx, c_programs_do_not_load_a_cpp_runtime)
{
    char listing[8192];
    cr_assert_not(loads_cxx_runtime(ml_test_lib(), listing, sizeof listing), "%s", listing);
    /* A C program linked with -lmemlimits. */
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target("api_linked"));
    cr_assert_not(loads_cxx_runtime(target, listing, sizeof listing), "%s", listing);
    cr_assert_not_null(strstr(listing, "libmemlimits"), "%s", listing);
}
