/* Task delivery (lib/task.c, lib/token.c): when an interrupt raised outside the
 * allocator reaches a task, what ml_run reports, and a task function that leaves ml_run by
 * longjmp or a C++ exception. Each scenario runs in a child process: a target program of
 * tests/targets/delivery_*.c, linked with -lmemlimits so that the library owns malloc without
 * LD_PRELOAD; it prints "ok NAME" or "FAIL NAME: line N: why". */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

/* Runs scenario `name` of target `program` and expects "ok NAME" and exit status 0. */
static void expect_scenario(const char *program, const char *name)
{
    char target[4096];
    snprintf(target, sizeof target, "%s", ml_test_target(program));
    const char *argv[] = {target, name, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, 120, &c), 0, "cannot start %s", target);
    char want[256];
    snprintf(want, sizeof want, "ok %s\n", name);
    cr_expect(c.exited, "%s: killed by signal %d; stdout:\n%s\nstderr:\n%s", name, c.signal, c.out,
              c.err);
    cr_expect_eq(c.status, 0, "%s: exit %d; stdout:\n%s\nstderr:\n%s", name, c.status, c.out,
                 c.err);
    cr_expect(strstr(c.out, want) != NULL && strstr(c.out, "FAIL") == NULL, "%s: output:\n%s\n%s",
              name, c.out, c.err);
    ml_child_free(&c);
}

#define INTERRUPTS(name)                                                                           \
    Test(delivery, name)                                                                           \
    {                                                                                              \
        expect_scenario("delivery_interrupts", #name);                                             \
    }

/* A token set on the task's own thread is delivered at its next allocation (issue 9, item 1). */
INTERRUPTS(own_token_refused_within_one_block)
INTERRUPTS(enclosing_token_refused_within_one_block)
INTERRUPTS(own_token_from_signal_handler_refused_within_one_block)
INTERRUPTS(own_token_set_masked_refused_after_unmask)
INTERRUPTS(global_limit_seen_by_poll_refused_at_next_allocation)

/* ml_run reports a token set, or the global limit crossed, while the task ran (item 2). */
INTERRUPTS(token_set_while_task_sleeps_is_reported)
INTERRUPTS(global_limit_crossed_while_task_computes_is_reported)

#define JUMPS(name)                                                                                \
    Test(delivery, name)                                                                           \
    {                                                                                              \
        expect_scenario("delivery_jumps", #name);                                                  \
    }

/* A task function that leaves ml_run by a jump leaves the task (item 3). */
JUMPS(longjmp_out_of_task_leaves_it)
JUMPS(longjmp_from_inner_task_to_outer_task)
JUMPS(abandoned_task_not_touched_by_other_threads)
JUMPS(siglongjmp_from_signal_handler_leaves_task)
JUMPS(jumps_inside_task_keep_it)
JUMPS(thread_exits_after_jumping_out_of_task)
JUMPS(thread_exit_in_task_runs_its_cleanups)

/* A C++ exception out of a task's function leaves the task (item 3). Built only with a C++
 * compiler (tests/delivery.cmake). */
#ifdef ML_TEST_HAVE_CXX
Test(delivery, exception_out_of_task_leaves_it)
{
    expect_scenario("delivery_exceptions", "exception_out_of_task_leaves_it");
}

Test(delivery, exception_from_inner_task_caught_in_outer_task)
{
    expect_scenario("delivery_exceptions", "exception_from_inner_task_caught_in_outer_task");
}
#endif
