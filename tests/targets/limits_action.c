/* Target for tests/test_limits.c: runs into a process limit so that the test can observe its
 * action. `limits_action heap` keeps 1 MiB blocks until an allocation fails (run it under
 * MEMLIMITS_HEAP); `limits_action alloc` allocates and frees 64 KiB blocks until one fails (run
 * it under MEMLIMITS_ALLOC). With a third argument `handler`, a SIGUSR1 handler that returns is
 * installed first. When an allocation fails and the program survives, it prints
 * "refused errno E handled H" and exits 0; "main ran" and "pid N" are printed first. Core dumps are
 * off (the abort action). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void *blocks[100000]; /* keeps the heap blocks live */

static void on_usr1(int sig)
{
    (void)sig;
    handled++;
}

static void say(const char *text)
{
    if (write(STDOUT_FILENO, text, strlen(text)) < 0) _exit(101);
}

int main(int argc, char **argv)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (argc < 2) return 100;
    int heap = strcmp(argv[1], "heap") == 0;
    if (argc > 2 && strcmp(argv[2], "handler") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
    }
    char pid[64];
    snprintf(pid, sizeof pid, "main ran\npid %d\n", (int)getpid());
    say(pid);
    size_t size = heap ? (size_t)1 << 20 : (size_t)64 << 10;
    for (int i = 0; i < 100000; i++) {
        errno = 0;
        void *p = malloc(size);
        if (p == NULL) {
            int err = errno;
            char line[128];
            snprintf(line, sizeof line, "refused errno %d handled %d\n", err, (int)handled);
            say(line);
            return 0;
        }
        memset(p, 1, 64);
        if (heap)
            blocks[i] = p;
        else
            free(p);
    }
    say("never refused\n");
    return 1;
}
