/* tree_pid_reuse: a process of the tree ends with _exit, so that its slot is still live, and a new
 * process is then created with the same pid (clone3 with set_tid, which needs CAP_SYS_ADMIN) and
 * runs COMMAND. Keyed by pid alone, the new process would be taken for an exec of the old one.
 * The new one starts 50 ms later: start times are in clock ticks (10 ms), and a pid the kernel
 * hands out again has gone around all the others first. Prints "pid P P" for both, or "skip
 * REASON" when the pid cannot be chosen here. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    pid_t first = fork();
    if (first == 0) _exit(7); /* no exit handler: the slot stays live */
    int status;
    waitpid(first, &status, 0);
    struct timespec later = {0, 50 * 1000 * 1000};
    nanosleep(&later, NULL);
    pid_t tid[1] = {first};
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    args.set_tid = (uint64_t)(uintptr_t)tid;
    args.set_tid_size = 1;
    long second = syscall(SYS_clone3, &args, sizeof args);
    if (second == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    if (second < 0) {
        say("skip clone3 with set_tid: %s\n", strerror(errno));
        return 0;
    }
    waitpid((pid_t)second, &status, 0);
    say("pid %d %ld\n", (int)first, second);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
