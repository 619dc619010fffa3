/* Which of the embedded jemalloc's locks a fork takes, seen from jemalloc's own lock statistics:
 * this program links the engine and its private jemalloc (its malloc stays glibc's), whose
 * constructor sets up memlimits' fork handlers, and counts the acquisitions of jemalloc's `ctl`
 * mutex (stats.mutexes.ctl.num_ops), which jemalloc's prepare handler locks once per fork.
 *   single  the process has only ever had one thread: a fork must take none of jemalloc's locks
 *           (it may come from a signal handler that interrupted their holder);
 *   multi   after a thread was created: a fork must run jemalloc's handlers, once.
 * Reading the statistics locks `ctl` itself, so the count across a fork is compared with the
 * count across no fork.
 *
 * usage: fork_locks single|multi; prints "ok MODE" and exits 0, or why and exits 1. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host.h"
#include "say.h"

static uint64_t ctl_lock_count(void)
{
    uint64_t epoch = 1, count = 0;
    size_t len = sizeof epoch;
    mlje_mallctl("epoch", &epoch, &len, &epoch, len);
    len = sizeof count;
    if (mlje_mallctl("stats.mutexes.ctl.num_ops", &count, &len, NULL, 0) != 0) return UINT64_MAX;
    return count;
}

/* Acquisitions of `ctl` across one fork (or none), statistics reads included. */
static uint64_t ctl_locks_across(int do_fork)
{
    uint64_t before = ctl_lock_count();
    if (do_fork) {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
    }
    return ctl_lock_count() - before;
}

static void *nothing(void *arg)
{
    return arg;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "single") != 0 && strcmp(argv[1], "multi") != 0)) {
        say("usage: fork_locks single|multi\n");
        return 2;
    }
    if (ctl_lock_count() == UINT64_MAX) {
        say("FAIL %s: jemalloc has no mutex statistics\n", argv[1]);
        return 1;
    }
    int multi = strcmp(argv[1], "multi") == 0;
    if (multi) {
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) != 0) return 1;
        pthread_join(t, NULL);
    }
    uint64_t reads = ctl_locks_across(0), forked = ctl_locks_across(1);
    uint64_t want = reads + (multi ? 1 : 0);
    if (forked != want) {
        say("FAIL %s: a fork took jemalloc's ctl lock %lld times (want %d)\n", argv[1],
            (long long)(forked - reads), multi);
        return 1;
    }
    say("ok %s\n", argv[1]);
    return 0;
}
