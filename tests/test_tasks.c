/* Tasks (lib/task.c, lib/token.c, lib/wake.c): ml_run under allocation, global-memory and token
 * limits, masking, ML_UNWIND and cleanups, ml_with_resource, ML_WAKE and the wake-up signal,
 * threads, misuse. Each scenario runs in a child process, in the target program of its concern
 * (tests/targets/tasks_CONCERN.c, linked with -lmemlimits so that the library owns malloc
 * without LD_PRELOAD); it prints "ok NAME" or "FAIL NAME: line N: why". What needs no owned malloc
 * (ml_strstatus, refusals when memlimits is not active, which is the case in this Criterion binary)
 * is checked in-process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"
#include "memlimits.h"

/* Runs scenario `name` of target program `program` (with extra environment `env`, may be NULL)
 * and expects "ok NAME", exit 0. */
static void expect_scenario_env(const char *program, const char *name, const char *const env[])
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target(program));
    const char *argv[] = {target, name, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, 120, &c), 0, "cannot start %s", target);
    char want[256];
    snprintf(want, sizeof want, "ok %s\n", name);
    cr_expect(c.exited, "%s: killed by signal %d; stdout:\n%s\nstderr:\n%s", name, c.signal, c.out,
              c.err);
    cr_expect_eq(c.status, 0, "%s: exit %d (output below)", name, c.status);
    cr_expect(strstr(c.out, want) != NULL && strstr(c.out, "FAIL") == NULL, "%s: output:\n%s\n%s",
              name, c.out, c.err);
    ml_child_free(&c);
}

/* A test of the tasks suite named after its scenario, run in tests/targets/tasks_CONCERN. */
#define SCENARIO(concern, name)                                                                    \
    Test(tasks, name)                                                                              \
    {                                                                                              \
        expect_scenario_env("tasks_" #concern, #name, NULL);                                       \
    }

/* Allocation limits: exact, refusal at the crossing allocation, nested tasks. */
SCENARIO(allocation, allocation_limit_exact)
SCENARIO(allocation, allocation_limit_crossing_is_refused)
SCENARIO(allocation, allocation_limit_counts_calloc_and_realloc)
SCENARIO(allocation, allocation_limit_zero_byte_counts_zero)
SCENARIO(allocation, nested_inner_limit_does_not_extend_outer)
SCENARIO(allocation, nested_allocations_count_against_every_limit)
SCENARIO(allocation, nested_enclosing_interrupt_interrupts_inner)

/* Masking. */
SCENARIO(masking, mask_nests_and_defers_delivery)
SCENARIO(masking, mask_unmask_without_mask_is_no_op)

/* ML_UNWIND, ml_check and cleanups. */
SCENARIO(unwind, unwind_runs_cleanups_innermost_first_once)
SCENARIO(unwind, unwind_libc_allocations_get_enomem)
SCENARIO(unwind, unwind_loader_allocations_get_enomem)
SCENARIO(unwind, check_unwinds_in_enomem_mode)
SCENARIO(unwind, unwind_stops_at_innermost_task)
SCENARIO(unwind, cleanup_pop_executes_masked_or_drops)

/* ml_with_resource. */
SCENARIO(masking, resource_masked_acquire_and_release)
SCENARIO(masking, resource_release_once_on_unwind)
SCENARIO(masking, resource_release_once_on_check_unwind)
SCENARIO(masking, resource_release_on_return)
SCENARIO(masking, resource_acquire_failure_and_null_callbacks)
SCENARIO(masking, resource_nested_release_innermost_first)

/* Tokens. */
SCENARIO(tokens, token_set_from_other_thread_stops_task)
SCENARIO(tokens, token_set_from_signal_handler_stops_task)
SCENARIO(tokens, token_set_before_start_interrupts_at_once)
SCENARIO(tokens, token_shared_by_threads_stops_all)
SCENARIO(tokens, token_destroyed_is_refused_safely)
SCENARIO(tokens, token_destroyed_during_task_no_longer_interrupts)

/* ML_WAKE and the wake-up signal. */
SCENARIO(wake, wake_read_returns_eintr)
SCENARIO(wake, wake_poll_returns_eintr)
SCENARIO(wake, wake_nanosleep_returns_eintr)
SCENARIO(wake, wake_only_tasks_that_asked)
SCENARIO(wake, wake_default_signal_skips_program_handlers)

Test(tasks, wake_signal_program_handler_refused)
{
    const char *env[] = {"MEMLIMITS_SIGNAL=USR2", NULL};
    expect_scenario_env("tasks_wake", "wake_signal_program_handler_refused", env);
}

Test(tasks, wake_signal_configured_and_taken_over)
{
    const char *env[] = {"MEMLIMITS_SIGNAL=USR2", NULL};
    expect_scenario_env("tasks_wake", "wake_signal_configured_and_taken_over", env);
}

/* The global memory limit. */
SCENARIO(global, global_limit_interrupts_within_256k)
SCENARIO(global, global_limit_interrupts_every_thread)

Test(tasks, global_limit_from_environment)
{
    const char *env[] = {"MEMLIMITS_GLOBAL=16M", NULL};
    expect_scenario_env("tasks_global", "global_limit_from_environment", env);
}
SCENARIO(global, global_limit_wakes_blocked_task)

/* Threads. */
SCENARIO(threads, threads_without_task_unaffected)
SCENARIO(threads, threads_created_in_task_do_not_inherit)

/* Failure injection: no memory for token slots or the waker thread. */
SCENARIO(tokens, setup_out_of_memory_is_enomem)

/* Delivery never unwinds out of a signal handler. */
SCENARIO(unwind, unwind_never_out_of_signal_handler)

/* A thread cancelled or exiting inside a task leaves nothing behind. */
SCENARIO(threads, threads_leaving_inside_a_task_leave_no_trace)

/* Misuse, where memlimits owns malloc. */
SCENARIO(allocation, misuse_is_refused)

/* ---------------------------------------------------------------------------------------------
 * In-process: this binary links the engine's objects, but its malloc is glibc's. */
static int ran;

static void mark_ran(void *arg)
{
    (void)arg;
    ran++;
}

Test(tasks, not_active_in_this_binary_is_enotactive)
{
    cr_assert_eq(ml_active(), 0, "memlimits owns malloc in the Criterion binary?");
    ml_limits limits = {1000, 1, NULL, 0};
    uint64_t allocated = 777;
    ran = 0;
    cr_expect_eq(ml_run(&limits, mark_ran, NULL, &allocated), ML_ENOTACTIVE);
    cr_expect_eq(ml_limit_allocations(1000, mark_ran, NULL, NULL), ML_ENOTACTIVE);
    cr_expect_eq(ml_limit_global_memory(mark_ran, NULL), ML_ENOTACTIVE);
    limits.flags = ML_WAKE | ML_UNWIND;
    cr_expect_eq(ml_run(&limits, mark_ran, NULL, NULL), ML_ENOTACTIVE);
    ml_token *tok = ml_token_create();
    cr_assert_not_null(tok);
    cr_expect_eq(ml_limit_with_token(tok, mark_ran, NULL), ML_ENOTACTIVE);
    ml_token_destroy(tok);
    cr_expect_eq(ran, 0, "the task ran %d times although memlimits is not active", ran);
    cr_expect_eq(allocated, 777, "allocated was written on an error");
}

Test(tasks, misuse_is_einval_in_process)
{
    ml_limits limits = {0, 0, NULL, 0};
    ran = 0;
    cr_expect_eq(ml_run(NULL, mark_ran, NULL, NULL), ML_EINVAL);
    cr_expect_eq(ml_run(&limits, NULL, NULL, NULL), ML_EINVAL);
    limits.flags = 4;
    cr_expect_eq(ml_run(&limits, mark_ran, NULL, NULL), ML_EINVAL);
    cr_expect_eq(ml_limit_with_token(NULL, mark_ran, NULL), ML_EINVAL);
    cr_expect_eq(ml_limit_allocations(1, NULL, NULL, NULL), ML_EINVAL);
    ml_token *tok = ml_token_create();
    ml_token_destroy(tok);
    limits.flags = 0;
    limits.token = tok;
    cr_expect_eq(ml_run(&limits, mark_ran, NULL, NULL), ML_EINVAL);
    cr_expect_eq(ran, 0);
}

Test(tasks, polling_outside_tasks_is_harmless)
{
    cr_expect_eq(ml_is_interrupted(), 0);
    ml_check();
    ml_mask();
    ml_unmask();
    ml_unmask();
    cr_expect_eq(ml_is_interrupted(), 0);
    ml_token_set(NULL);
    cr_expect_eq(ml_token_is_set(NULL), 0);
    ml_token_destroy(NULL);
    ml_token *tok = ml_token_create();
    cr_assert_not_null(tok);
    cr_expect_eq(ml_token_is_set(tok), 0);
    ml_token_set(tok);
    cr_expect_neq(ml_token_is_set(tok), 0);
    ml_token_set(tok); /* setting twice: still set */
    cr_expect_neq(ml_token_is_set(tok), 0);
    ml_token_destroy(tok);
    cr_expect_eq(ml_token_is_set(tok), 0);
    ml_token_set(tok);
    cr_expect_eq(ml_token_is_set(tok), 0, "a destroyed token was set again");
    ml_token_destroy(tok);
}

/* The header's status table, ML_STATUS_MAP, expanded here so that a status added to it is
 * checked too: each status and its symbol (the table's strings are left out on purpose). */
#define ML_STATUS_ROW(name, code, text) {name, #name},
static const struct {
    ml_status status;
    const char *symbol;
} status_map[] = {ML_STATUS_MAP(ML_STATUS_ROW)};
#undef ML_STATUS_ROW
#define STATUS_MAP_SIZE (sizeof status_map / sizeof status_map[0])

/* ml_strstatus(value) for a value outside the table is `fallback`. */
static void expect_fallback(int value, const char *fallback)
{
    for (size_t i = 0; i < STATUS_MAP_SIZE; i++)
        if ((int)status_map[i].status == value) return; /* in the table */
    const char *s = ml_strstatus((ml_status)value);
    cr_assert_not_null(s, "status %d", value);
    cr_assert_str_eq(s, fallback, "status %d, outside the table", value);
}

/* Not compared with the table's strings (that would only say they were copied): what the header
 * promises of the names. Never NULL, a static string; for every status in the table a non-empty
 * name of its own, distinct from every other and from the fallback for values outside the
 * table, which says "unknown"; ML_OK's says success and no other does; non-negative codes say
 * why a task ended, negative ones are the errors, the ML_E* statuses, and only they. */
Test(tasks, strstatus_names_every_status)
{
    int lowest = 0, highest = 0;
    for (size_t i = 0; i < STATUS_MAP_SIZE; i++) {
        lowest = (int)status_map[i].status < lowest ? (int)status_map[i].status : lowest;
        highest = (int)status_map[i].status > highest ? (int)status_map[i].status : highest;
    }

    /* The fallback, from just above the table; every value outside it gives the same: from
     * 1000 below the table to 1000 above it, and the extremes. */
    const char *fallback = ml_strstatus((ml_status)(highest + 1));
    cr_assert_not_null(fallback);
    cr_expect_neq(fallback[0], '\0', "empty fallback");
    cr_expect_not_null(strstr(fallback, "unknown"), "fallback \"%s\"", fallback);
    for (int v = lowest - 1000; v <= highest + 1000; v++)
        expect_fallback(v, fallback);
    expect_fallback(1 << 30, fallback);
    expect_fallback(INT_MAX, fallback);
    expect_fallback(INT_MIN, fallback);

    for (size_t i = 0; i < STATUS_MAP_SIZE; i++) {
        ml_status status = status_map[i].status;
        const char *symbol = status_map[i].symbol, *s = ml_strstatus(status);
        cr_assert_not_null(s, "%s", symbol);
        cr_expect_eq(s, ml_strstatus(status), "%s: not a static string", symbol);
        cr_expect_neq(s[0], '\0', "%s has an empty name", symbol);
        cr_expect_str_neq(s, fallback, "%s is named as an unknown status", symbol);
        for (size_t j = 0; j < i; j++) {
            cr_expect_neq((int)status, (int)status_map[j].status, "%s and %s share code %d", symbol,
                          status_map[j].symbol, (int)status);
            cr_expect_str_neq(s, ml_strstatus(status_map[j].status),
                              "%s and %s share the name \"%s\"", symbol, status_map[j].symbol, s);
        }
        cr_expect_eq((int)status < 0, strncmp(symbol, "ML_E", 4) == 0,
                     "%s = %d: negative codes are the errors, ML_E*, and only they", symbol,
                     (int)status);
        if (status != ML_OK) cr_expect_null(strstr(s, "success"), "%s is named \"%s\"", symbol, s);
    }
    cr_expect_not_null(strstr(ml_strstatus(ML_OK), "success"), "ML_OK is named \"%s\"",
                       ml_strstatus(ML_OK));

    /* the design's codes: success is 0, the reasons a task is interrupted are positive */
    cr_expect_eq(ML_OK, 0);
    cr_expect_eq(ML_MEMORY_LIMIT, 1);
    cr_expect_eq(ML_ALLOCATION_LIMIT, 2);
    cr_expect_eq(ML_TOKEN, 3);
    cr_expect_eq(ML_OUTER_LIMIT, 4);
    cr_expect_eq(ML_HEAP_CAP, 5);
}
