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

/* The line of `out` that starts with `prefix`, up to its newline (a static buffer), or NULL. */
static const char *line_starting(const char *out, const char *prefix)
{
    static char line[512];
    size_t len = strlen(prefix);
    for (const char *p = out; p != NULL && *p != '\0';) {
        const char *eol = strchr(p, '\n');
        size_t n = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (n >= len && strncmp(p, prefix, len) == 0) {
            snprintf(line, sizeof line, "%.*s", (int)n, p);
            return line;
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    return NULL;
}

/* The live heap, in bytes, on the example's line "WHEN: live heap N bytes ..."; fails the test
 * when the line is absent, and checks that it says "over" the limit when N is, "under" when not:
 * the word the example prints must agree with the number it saw. */
static unsigned long long heap_at(const char *out, const char *when, unsigned long long limit)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s: live heap ", when);
    const char *line = line_starting(out, prefix);
    cr_assert_not_null(line, "no line \"%s...\" in:\n%s", prefix, out);
    unsigned long long live = strtoull(line + strlen(prefix), NULL, 10);
    const char *side = live > limit ? ", over the limit by " : ", under the limit by ";
    cr_assert(strstr(line, side) != NULL, "%llu bytes against a limit of %llu, yet: %s", live,
              limit, line);
    return live;
}

/* (a) 100 million nodes under a 1 GiB global memory limit: the task is interrupted with the live
 * heap over the limit; once the list is freed the heap is under it, and a second task runs to
 * completion, not interrupted, with the heap still under the limit. */
Test(examples, global_memory_interrupts_then_recovers, .timeout = 120)
{
    ml_child c;
    run("global_memory", 60, &c);
    const char *lines[] = {
        "first task: interrupted (the global memory limit was exceeded) after ",
        "second task: not interrupted (success) after 10000000 of 10000000 nodes\n",
        "global memory example: ok\n", NULL};
    expect_success(&c, lines);
    const char *limit_line = line_starting(c.out, "global memory limit: ");
    cr_assert_not_null(limit_line, "%s", c.out);
    unsigned long long limit = strtoull(limit_line + strlen("global memory limit: "), NULL, 10);
    cr_assert_eq(limit, 1ull << 30, "%s", limit_line);
    cr_expect_gt(heap_at(c.out, "at the interrupt", limit), limit,
                 "the task was interrupted with the heap under the limit");
    cr_expect_leq(heap_at(c.out, "after freeing the list", limit), limit);
    cr_expect_leq(heap_at(c.out, "after the second task", limit), limit);
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

/* (c) Five racing threads under one token, stopped by a SIGINT sent by this test; the main
 * thread's event loop, polling the token's descriptor, stops with them. */
Test(examples, token_set_by_sigint_stops_all_threads, .timeout = 60)
{
    ml_child c;
    const char *argv[] = {example("token"), NULL};
    cr_assert_eq(ml_child_run_signalling(argv, NULL, 0, NULL, 30, "ready\n", SIGINT, &c), 0);
    const char *lines[] = {"ready\n",
                           "The event loop stopped: the token is set.\n",
                           "All threads stopped.\n",
                           "winning thread = ",
                           "each worker's exactly once",
                           "token example: ok",
                           NULL};
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
