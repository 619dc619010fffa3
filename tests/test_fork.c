/* fork (lib/thread.c's fork handlers, lib/host_runtime.c's capture of jemalloc's, the fork child
 * of lib/task.c and lib/wake.c):
 * - a single-threaded program may fork from a signal handler that interrupted malloc, free,
 *   realloc or stdio, as it may under glibc's malloc: memlimits takes no lock then
 *   (tests/targets/fork_signal.c, run preloaded), and jemalloc's lock statistics show that none
 *   of its locks is taken, while a multithreaded fork runs its handlers (fork_locks.c);
 * - in a forked child, an ML_WAKE task is woken when another thread sets its token, on a new
 *   thread, and on the thread that forked, whether its task started before or after the fork
 *   (tests/targets/fork_wake.c, linked with -lmemlimits).
 * The fork tests of a multithreaded parent (stdio, 200 forks from threads) are in test_robust.c.
 * A hang shows as the child runner's timeout killing the target. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <string.h>

#include "child.h"

#define TIMEOUT_S 150

/* Runs target `name` with `arg` (preloaded or not, with extra environment `env`), and expects
 * exit 0 with `want` in its output. */
static void expect_target(const char *name, const char *arg, int preload, const char *const env[],
                          const char *want)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", ml_test_target(name));
    const char *argv[] = {path, arg, NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, preload, NULL, TIMEOUT_S, &c), 0, "cannot start %s", path);
    cr_log_info("%s %s: %s%s", name, arg, c.out, c.err);
    cr_expect(c.exited && c.status == 0,
              "%s %s: %s %d (a hang is killed after %d s with signal 9)\nstdout:\n%s\nstderr:\n%s",
              name, arg, c.exited ? "exited with status" : "killed by signal",
              c.exited ? c.status : c.signal, TIMEOUT_S, c.out, c.err);
    cr_expect(strstr(c.out, want) != NULL, "%s %s: no \"%s\" in its output:\n%s\n%s", name, arg,
              want, c.out, c.err);
    ml_child_free(&c);
}

/* 2000 forks from a SIGALRM handler while the only thread allocates; every fourth child returns
 * from the handler into the code it interrupted and carries on allocating. Before the fix, the
 * fork's prepare handler waited for a lock held by the code the handler interrupted. */
Test(fork, signal_handler_forks_while_only_thread_allocates)
{
    expect_target("fork_signal", "timer", 1, NULL, "forks from signal handlers (2000 wanted)");
}

/* glibc's tst-mallocfork2 pattern: another process sends SIGUSR1 and SIGUSR2 as fast as it can,
 * both handlers fork, and forks nest inside forks. */
Test(fork, nested_signal_handlers_fork_while_only_thread_allocates)
{
    expect_target("fork_signal", "sender", 1, NULL, "forks from signal handlers (2000 wanted)");
}

/* In a process that has only ever had one thread, fork takes none of jemalloc's locks. Before the
 * fix, jemalloc's own prepare handler took them all, always. */
Test(fork, single_threaded_fork_takes_no_jemalloc_lock)
{
    expect_target("fork_locks", "single", 0, NULL, "ok single");
}

/* Once a thread was created, fork runs jemalloc's handlers (memlimits calls them). */
Test(fork, multithreaded_fork_runs_jemalloc_handlers)
{
    expect_target("fork_locks", "multi", 0, NULL, "ok multi");
}

static const char *const wake_env[] = {"MEMLIMITS_SIGNAL=USR2", NULL};

/* The sleeping task runs on a thread created in the child. */
Test(fork, wake_task_on_thread_created_in_child)
{
    expect_target("fork_wake", "new_thread", 0, wake_env, "ok new_thread");
}

/* The sleeping task runs on the thread that forked, started in the child. Before the fix, the
 * task carried the thread id the thread had in the parent, and the signal never reached it. */
Test(fork, wake_task_on_forking_thread_started_after_fork)
{
    expect_target("fork_wake", "after_fork", 0, wake_env, "ok after_fork");
}

/* The child continues inside the parent's ML_WAKE task and sleeps there. Before the fix, the
 * task kept the parent's thread id, and no waker thread ran in the child to signal it. */
Test(fork, wake_task_on_forking_thread_across_fork)
{
    expect_target("fork_wake", "across_fork", 0, wake_env, "ok across_fork");
}

/* The token was set in the parent and its wake-up signal was pending on the forking thread at the
 * fork: the child starts with no signal pending, and its task must be signalled again. */
Test(fork, wake_task_signalled_again_when_fork_drops_pending_signal)
{
    expect_target("fork_wake", "pending_at_fork", 0, wake_env, "ok pending_at_fork");
}

/* A fork while another thread holds the tokens' lock (inside ml_token_create, ml_token_fd or
 * ml_token_destroy). Before the fix, the lock stayed held in the child, whose first token call
 * hung. */
Test(fork, token_lock_is_not_inherited_held)
{
    expect_target("fork_state", "tokens", 0, NULL, "ok tokens");
}

/* A fork while another thread is inside ml_token_set: the token's count of sets in flight, which
 * ml_token_destroy waits to drain, must not stay raised in the child, where that thread is gone.
 * Before the fix, the child's destroy hung (its alarm killed it). */
Test(fork, token_set_in_flight_is_not_inherited, .timeout = 60)
{
    expect_target("fork_state", "setters", 0, NULL, "ok setters");
}

static const char *const lease_env[] = {"MEMLIMITS_ALLOC=64M", "MEMLIMITS_ON_ALLOC=enomem", NULL};

/* A per-process budget across a multithreaded fork: the unspent leases of the threads that do not
 * survive it are the child's to spend. Before the fix, they were lost: the child's exact
 * budget_left was short by the other thread's lease. */
Test(fork, child_keeps_lost_threads_unspent_leases)
{
    expect_target("fork_state", "leases", 0, lease_env, "ok leases");
}
