/* Target for tests/test_limits.c: a program that only says that its main ran, to show that a
 * bad MEMLIMITS_* variable stops a preloaded program before main. With the argument `fork` it
 * also forks a child that exits normally: "child PID" and "parent PID" follow (reports are one
 * per process). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    void *p = malloc(100);
    printf("main ran\n");
    fflush(stdout);
    free(p);
    if (argc > 1 && strcmp(argv[1], "fork") == 0) {
        pid_t pid = fork();
        if (pid < 0) return 2;
        if (pid == 0) {
            printf("child %d\n", (int)getpid());
            exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 3;
        printf("parent %d\n", (int)getpid());
    }
    return 0;
}
