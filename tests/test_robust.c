/* Robustness of the preloaded library (design.md "Robustness requirements"): thousands of threads
 * with cross-thread frees, fork from a multithreaded parent busy in malloc and stdio, allocation in
 * TLS destructors, dlopen/dlclose, allocation before constructors, malloc in signal handlers,
 * threads that only free, a non-PIE executable that takes malloc's address, and jemalloc's purge
 * at thread exit. Each scenario is a target program (tests/targets/robust_*.c) that checks its
 * own invariants, run preloaded in a child process with a timeout. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <string.h>

#include "child.h"

#define TIMEOUT_S 90

/* Runs the target `name` preloaded with the given arguments (NULL-terminated, at most 6) and
 * extra environment (may be NULL), and asserts that it exited 0; logs its output (the measured
 * figures) either way. */
static void run_target_env(const char *name, const char *const args[], const char *const env[])
{
    char path[4096];
    snprintf(path, sizeof path, "%s", ml_test_target(name));
    const char *argv[8] = {path};
    for (int i = 0; args != NULL && args[i] != NULL && i < 6; i++)
        argv[i + 1] = args[i];
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, TIMEOUT_S, &c), 0, "cannot start %s", path);
    cr_log_info("%s: %s%s", name, c.out, c.err);
    cr_assert(c.exited && c.status == 0,
              "%s %s: %s %d (a timeout of %d s kills it with signal 9)\nstdout:\n%s\nstderr:\n%s",
              name, args && args[0] ? args[0] : "",
              c.exited ? "exited with status" : "killed by signal", c.exited ? c.status : c.signal,
              TIMEOUT_S, c.out, c.err);
    ml_child_free(&c);
}

static void run_target(const char *name, const char *const args[])
{
    run_target_env(name, args, NULL);
}

/* The bounds on jemalloc's purging (lib/host.h, "Purging"; see robust_purge.c). A thread that
 * leaves its arena with dirty memory leaves at most 4 MiB of it for the next thread. */
Test(robust, an_exiting_thread_leaves_its_arena_at_most_4_mib_of_dirty_pages)
{
    run_target("robust_purge", (const char *[]){"exit", NULL});
}

/* An arena about to take new pages first purges the dirty ones that would take it past 5/4 of its
 * peak, and only those. */
Test(robust, an_arena_that_grows_keeps_its_resident_pages_within_5_4_of_its_peak)
{
    run_target("robust_purge", (const char *[]){"grow", NULL});
}

Test(robust, an_arena_set_never_to_purge_is_not_purged_when_it_grows)
{
    run_target_env("robust_purge", (const char *[]){"never", NULL},
                   (const char *[]){"MALLOC_CONF=dirty_decay_ms:-1", NULL});
}

Test(robust, thousands_of_threads_with_cross_thread_frees_return_heap_to_baseline)
{
    /* 4000 threads in waves of 100; drift bound 1 MiB (see robust_threads.c). */
    run_target("robust_threads", (const char *[]){"4000", "100", NULL});
}

Test(robust, fork_from_threads_busy_in_malloc_and_stdio_never_deadlocks)
{
    run_target("robust_fork", (const char *[]){"200", NULL});
}

Test(robust, tls_destructors_allocate_in_every_round_and_after_teardown)
{
    run_target("robust_tls_dtor", (const char *[]){"rounds", NULL});
}

Test(robust, frees_in_tls_destructors_reach_the_live_heap)
{
    run_target("robust_tls_dtor", (const char *[]){"accounting", NULL});
}

Test(robust, dlopen_dlclose_of_an_allocating_library_is_served_and_accounted)
{
    run_target("robust_dlopen", (const char *[]){ML_TEST_ROBUST_DL, "40", NULL});
}

Test(robust, allocation_before_constructors_is_served_and_accounted)
{
    run_target("robust_early", NULL);
}

Test(robust, malloc_in_signal_handler_of_a_sleeping_thread)
{
    run_target("robust_signal", (const char *[]){"2000", NULL});
}

Test(robust, frees_of_an_exited_thread_reach_the_live_heap)
{
    run_target("robust_free_only", (const char *[]){"registered", NULL});
}

Test(robust, frees_of_a_live_thread_are_reconciled)
{
    run_target("robust_free_only", (const char *[]){"alive", NULL});
}

Test(robust, frees_of_a_thread_that_never_allocates_reach_the_live_heap)
{
    run_target("robust_free_only", (const char *[]){"pure", NULL});
}

Test(robust, frees_of_a_thread_that_never_allocates_make_room_under_the_heap_cap)
{
    run_target_env("robust_free_only", (const char *[]){"capped", NULL},
                   (const char *[]){"MEMLIMITS_HEAP=32M", NULL});
}

Test(robust, active_in_a_non_pie_executable_that_takes_malloc_address)
{
    run_target("robust_nopie", NULL);
}
