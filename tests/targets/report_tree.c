/* Target for tests/test_report.c: a process tree whose processes share one report destination.
 *   leaf [ARGS...]      says "leaf ran" and the MEMLIMITS_REPORT it sees, and exits 0
 *   spawn DIR [ARGS...] forks a child that changes to DIR and execs `report_tree leaf ARGS`
 *   envp DIR            the same, the child exec'ing with main's third argument as environment
 *   orphan DIR FILE     removes FILE, then the directory DIR, then spawns a leaf in "/": the
 *                       report destination the leaf inherits cannot be opened any more
 *   setenv VALUE DIR    sets MEMLIMITS_REPORT=VALUE, then spawns a leaf in DIR
 *   fork                forks; the child, the same image, says "child PID" and exits 0
 * Every mode but leaf then says "child status N" (128 + signal when killed) and exits 0. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "say.h"

static int wait_child(pid_t pid)
{
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs `self leaf args...` in a child working in dir, with environment envp (NULL: environ). */
static int spawn(const char *self, const char *dir, char **args, int nargs, char **envp)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[64] = {(char *)self, "leaf"};
        for (int i = 0; i < nargs && i < 60; i++)
            argv[2 + i] = args[i];
        if (chdir(dir) != 0) _exit(90);
        if (envp != NULL)
            execve(self, argv, envp);
        else
            execv(self, argv);
        _exit(91);
    }
    return wait_child(pid);
}

int main(int argc, char **argv, char **envp)
{
    const char *mode = argc > 1 ? argv[1] : "";
    void *p = malloc(100);
    free(p);
    int status;
    if (strcmp(mode, "leaf") == 0) {
        const char *report = getenv("MEMLIMITS_REPORT");
        say("leaf ran, pid %d, MEMLIMITS_REPORT=%s\n", (int)getpid(), report ? report : "(unset)");
        return 0;
    } else if (strcmp(mode, "spawn") == 0 && argc > 2) {
        status = spawn(argv[0], argv[2], argv + 3, argc - 3, NULL);
    } else if (strcmp(mode, "envp") == 0 && argc > 2) {
        status = spawn(argv[0], argv[2], NULL, 0, envp);
    } else if (strcmp(mode, "orphan") == 0 && argc > 3) {
        if (unlink(argv[3]) != 0 || rmdir(argv[2]) != 0) return 2;
        status = spawn(argv[0], "/", NULL, 0, NULL);
    } else if (strcmp(mode, "setenv") == 0 && argc > 3) {
        if (setenv("MEMLIMITS_REPORT", argv[2], 1) != 0) return 2;
        status = spawn(argv[0], argv[3], NULL, 0, NULL);
    } else if (strcmp(mode, "fork") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            say("child %d\n", (int)getpid());
            exit(0);
        }
        status = wait_child(pid);
        say("parent %d\n", (int)getpid());
    } else {
        return 2;
    }
    say("child status %d\n", status);
    return 0;
}
