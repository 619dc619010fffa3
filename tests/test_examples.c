/* The four examples of memprof-limits' documentation, in C (tests/examples/): each program
 * checks its own outcome and exits 0; these tests run each one in a child process, without
 * LD_PRELOAD (they link the library), and check its exit status and the lines that show the
 * outcome. The token example is sent a real SIGINT by the test, once it says "ready". */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* Like ml_child_run without LD_PRELOAD or input, but sends the child SIGINT as soon as its
 * stdout contains `line`: what a user pressing Ctrl+C at that point does. */
static int run_interrupting(const char *path, const char *line, int timeout_s, ml_child *out)
{
    int outp[2], errp[2];
    memset(out, 0, sizeof *out);
    out->out = calloc(1, 1);
    out->err = calloc(1, 1);
    if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(outp[1], 1);
        dup2(errp[1], 2);
        signal(SIGINT, SIG_DFL);
        execl(path, path, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    struct pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2, interrupted = 0, killed = 0;
    time_t deadline = time(NULL) + timeout_s;
    while (open_fds > 0) {
        int left = (int)(deadline - time(NULL));
        if (left <= 0) {
            if (!killed) kill(pid, SIGKILL);
            killed = 1;
            left = 1;
        }
        if (poll(fds, 2, left * 1000) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[65536];
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else if (i == 0) {
                append(&out->out, &out->out_len, buf, (size_t)n);
            } else {
                append(&out->err, &out->err_len, buf, (size_t)n);
            }
        }
        if (!interrupted && strstr(out->out, line) != NULL) {
            kill(pid, SIGINT);
            interrupted = 1;
        }
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    out->exited = WIFEXITED(st);
    out->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    out->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    return 0;
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
    cr_assert_eq(run_interrupting(example("token"), "ready\n", 30, &c), 0);
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
