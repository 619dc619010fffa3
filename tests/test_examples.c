/* The four examples of memprof-limits' documentation, in C (tests/examples/): each program
 * checks its own outcome and exits 0; these tests run each one in a child process, without
 * LD_PRELOAD (they link the library), and check its exit status and the lines that show the
 * outcome. The token example is sent a real SIGINT by the test, once it says "ready". */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

static const char *example(const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/example_%s", ML_EXAMPLES_DIR, name);
    return path;
}

static void run(const char *name, int timeout_s, ml_child *c)
{
    const char *argv[] = {example(name), NULL};
    cr_assert_eq(ml_child_run(argv, NULL, 0, NULL, timeout_s, c), 0, "cannot start %s", argv[0]);
}

/* The example exited 0 and printed each of the NULL-terminated `lines`. */
static void expect_success(const ml_child *c, const char *const lines[])
{
    cr_assert(c->exited && c->status == 0,
              "exited %d status %d signal %d\nstdout:\n%s\nstderr:\n%s", c->exited, c->status,
              c->signal, c->out, c->err);
    for (size_t i = 0; lines[i] != NULL; i++)
        cr_assert(strstr(c->out, lines[i]) != NULL, "no \"%s\" in:\n%s", lines[i], c->out);
}

/* (a) 100 million nodes under a 1 GiB global memory limit: interrupted past 1 GiB, recovered,
 * and a second task succeeds. */
Test(examples, global_memory_interrupts_then_recovers, .timeout = 120)
{
    ml_child c;
    run("global_memory", 60, &c);
    const char *lines[] = {"first task: the global memory limit was exceeded after ",
                           "live heap at interrupt: ",
                           "under the limit",
                           "second task: success, 10000000 of 10000000 nodes",
                           "global memory example: ok",
                           NULL};
    expect_success(&c, lines);
    ml_child_free(&c);
}

/* (b) 2.4 GB allocated in 24-byte nodes: succeeds under 330 Mw with the exact count, and is
 * interrupted under 290 Mw at the allocation that crosses the limit. */
Test(examples, allocation_limit_exact_count, .timeout = 120)
{
    ml_child c;
    run("allocation_limit", 60, &c);
    const char *lines[] = {
        "limit 330 Mw: success (alloc. 2400000000 bytes = 300000 kw, 100000 lists)",
        "limit 290 Mw: out of fuel: the task's allocation limit was exceeded (alloc. 2319999984 "
        "bytes",
        "allocation limit example: ok", NULL};
    expect_success(&c, lines);
    ml_child_free(&c);
}

/* (c) Five racing threads under one token, stopped by a SIGINT sent by this test. */
Test(examples, token_set_by_sigint_stops_all_threads, .timeout = 60)
{
    ml_child c;
    const char *argv[] = {example("token"), NULL};
    cr_assert_eq(ml_child_run_signalling(argv, NULL, 0, NULL, 30, "ready\n", SIGINT, &c), 0);
    const char *lines[] = {"ready\n",           "All threads stopped.\n",
                           "winning thread = ", "each worker's exactly once",
                           "token example: ok", NULL};
    expect_success(&c, lines);
    /* Every one of the five was stopped by the token. */
    size_t stopped = 0;
    for (const char *p = c.out; (p = strstr(p, "the task's token was set")) != NULL; p++)
        stopped++;
    cr_assert_eq(stopped, 5, "%s", c.out);
    ml_child_free(&c);
}

/* (d) Sisyphus with the safe mutex: 20 rounds, no deadlock (the timeout), no premature
 * interrupt, no invalid state read. */
Test(examples, safe_mutex_never_deadlocks_nor_reads_invalid_state, .timeout = 120)
{
    ml_child c;
    run("safe_mutex", 60, &c);
    const char *lines[] = {"round  1: ",
                           "round 20: ",
                           "20 rounds: ",
                           "no deadlock, no premature interrupt, no invalid "
                           "state read",
                           "safe mutex example: ok",
                           NULL};
    expect_success(&c, lines);
    ml_child_free(&c);
}
