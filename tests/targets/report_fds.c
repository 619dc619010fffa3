/* Target for tests/test_report.c: a program that does to its file descriptors what real programs
 * do before they exit, to show that its report still arrives (or that its loss is said). MODE:
 *   lowfd         says which descriptor its first open gets ("lowfd 3")
 *   exhaust       lowers RLIMIT_NOFILE to 64 and opens /dev/null until EMFILE, as a program that
 *                 used up its descriptors
 *   closefrom     closes every descriptor above 2, as daemons do (closefrom, close_range)
 *   clobber       dup2's /dev/null onto every descriptor from 3 to 1023, then closes 3 to 9: a
 *                 program that reuses descriptor numbers it believes free
 *   lost          closefrom, then exhaust: the report file can be neither kept nor reopened
 *   close-stderr  closes stderr in an atexit handler, as coreutils' close_stdout does
 *   unlink PATH   removes PATH (its own report file) before it exits
 * It says "main ran" first, and exits 0. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "say.h"

static void exhaust(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) exit(2);
    rl.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) exit(3);
    int n = 0;
    while (open("/dev/null", O_RDONLY) >= 0)
        n++;
    say("exhausted after %d opens\n", n);
}

static void close_stderr(void)
{
    fclose(stderr);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    void *p = malloc(100);
    say("main ran\n");
    free(p);
    if (strcmp(mode, "lowfd") == 0) {
        say("lowfd %d\n", open("/dev/null", O_RDONLY));
    } else if (strcmp(mode, "exhaust") == 0) {
        exhaust();
    } else if (strcmp(mode, "closefrom") == 0) {
        closefrom(3);
    } else if (strcmp(mode, "clobber") == 0) {
        int null = open("/dev/null", O_RDWR);
        for (int fd = 3; fd < 1024; fd++)
            if (fd != null) dup2(null, fd);
        for (int fd = 3; fd < 10; fd++)
            close(fd);
    } else if (strcmp(mode, "lost") == 0) {
        closefrom(3);
        exhaust();
    } else if (strcmp(mode, "close-stderr") == 0) {
        atexit(close_stderr);
    } else if (strcmp(mode, "unlink") == 0 && argc > 2) {
        if (unlink(argv[2]) != 0) return 4;
    }
    return 0;
}
