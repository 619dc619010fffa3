/* The tracker API (include/memlimits.h, "Memprof"): each sentence of its semantics is a check of
 * tests/targets/memprof_api.c, run in a child process with a fixed MEMLIMITS_SEED; the target
 * prints "ok NAME" or what failed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "child.h"

#define HANG_GUARD_S 60

static void run_check(const char *name, const char *seed, ml_child *c)
{
    char target[4096], env_seed[64];
    snprintf(target, sizeof target, "%s", ml_test_target("memprof_api"));
    snprintf(env_seed, sizeof env_seed, "MEMLIMITS_SEED=%s", seed);
    const char *argv[] = {target, name, NULL};
    const char *env[] = {env_seed, NULL};
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
}

static void expect_check(const char *name)
{
    ml_child c;
    run_check(name, "12345", &c);
    char want[256];
    snprintf(want, sizeof want, "ok %s\n", name);
    cr_expect(c.exited, "%s: killed by signal %d; stdout:\n%s\nstderr:\n%s", name, c.signal, c.out,
              c.err);
    cr_expect_eq(c.status, 0, "%s: %d failures:\n%s%s", name, c.status, c.out, c.err);
    cr_expect(strstr(c.out, want) != NULL, "%s: output:\n%s\nstderr:\n%s", name, c.out, c.err);
    ml_child_free(&c);
}

Test(memprof, block_carries_binomial_samples)
{
    expect_check("binomial");
}

Test(memprof, samples_reproducible_with_seed)
{
    ml_child a, b, d;
    run_check("binomial", "7", &a);
    run_check("binomial", "7", &b);
    run_check("binomial", "8", &d);
    cr_expect_str_eq(a.out, b.out, "same seed, different samples");
    cr_expect_str_neq(a.out, d.out, "different seeds, same samples");
    ml_child_free(&a);
    ml_child_free(&b);
    ml_child_free(&d);
}

Test(memprof, free_callback_exactly_once_through_every_free)
{
    expect_check("free_once");
}

Test(memprof, free_callback_exactly_once_through_jemallocs_api)
{
    expect_check("jemalloc_api");
}

Test(memprof, cxx_new_is_tracked_and_freed_once_through_every_delete)
{
    expect_check("cxx_new");
}

Test(memprof, free_callback_on_the_freeing_thread)
{
    expect_check("cross_thread");
}

Test(memprof, callback_allocations_counted_not_sampled)
{
    expect_check("in_callback");
}

Test(memprof, refuse_fails_with_enomem_uncounted)
{
    expect_check("refuse");
}

Test(memprof, stop_ends_allocs_discard_ends_all)
{
    expect_check("stop_discard");
}

Test(memprof, two_profiles_sample_independently)
{
    expect_check("two_profiles");
}

Test(memprof, fork_child_inherits_no_profile)
{
    expect_check("fork");
}

Test(memprof, threads_created_later_are_covered)
{
    expect_check("later_thread");
}

Test(memprof, callstack_starts_at_the_caller)
{
    expect_check("callstack");
}

Test(memprof, limits_built_on_the_tracker)
{
    expect_check("limits_client");
}

Test(memprof, tracked_blocks_counted_at_their_size)
{
    expect_check("accounting");
}

Test(memprof, stop_and_discard_from_another_thread)
{
    expect_check("other_thread");
}

Test(memprof, aligned_blocks_carry_binomial_samples_of_their_bytes)
{
    expect_check("aligned_binomial");
}

Test(memprof, every_aligned_entry_points_blocks_are_tracked_and_freed_once)
{
    expect_check("aligned_tracked");
}

Test(memprof, mallocx_blocks_carry_binomial_samples)
{
    expect_check("mallocx_binomial");
}

Test(memprof, mallocx_blocks_tracked_with_their_flags_and_freed_once)
{
    expect_check("mallocx_tracked");
}

Test(memprof, rallocx_of_a_sampled_request_tracks_the_new_block)
{
    expect_check("rallocx_sampled");
}

Test(memprof, refuse_fails_mallocx_and_rallocx)
{
    expect_check("mallocx_refuse");
}

Test(memprof, arena_blocks_stay_untracked_and_are_counted)
{
    expect_check("mallocx_arena");
}

Test(memprof, free_callbacks_run_at_the_next_mallocx_rallocx_or_xallocx)
{
    expect_check("mallocx_free_callbacks");
}

Test(memprof, no_tracked_block_counted_and_moved_blocks_freed_once)
{
    expect_check("no_tracked_block");
}

Test(memprof, mallocx_callstack_starts_at_the_caller)
{
    expect_check("mallocx_callstack");
}
