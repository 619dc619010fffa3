/* fork from a signal handler in a single-threaded program, while the program is inside malloc,
 * free, realloc or stdio. glibc's fork takes no malloc or stdio lock when the process is
 * single-threaded, so that fork stays usable in signal handlers; memlimits must not take one
 * either: the interrupted code may hold it, and nobody else will ever release it.
 *
 * The main thread (the only one) loops over malloc, calloc, realloc and free of blocks from a few
 * bytes to 2 MiB (thread-cache, bin and extent paths of jemalloc, each under its own locks) and,
 * now and then, a memory stream (realloc under a stream's lock). Signals come in one of two ways:
 *   timer   SIGALRM from a timer re-armed at random (0.1 to 1 ms). Every fourth child returns from
 * the handler, so that the code it interrupted finishes in the child, runs the loop a little more
 * and exits 0; the other children _exit(0) at once. sender  SIGUSR1 and SIGUSR2 from another
 * process, as fast as it can send them (glibc's tst-mallocfork2 pattern). Neither handler blocks
 * the other, so forks nest: a handler may fork while an outer handler is inside fork itself.
 * Children _exit(0) at once. Each handler waits for its child (with a deadline of its own: a child
 * stuck in fork's child half is killed and reported). A deadlock in the program itself is left to
 * the caller's timeout.
 *
 * usage: fork_signal timer|sender [FORKS]; prints the counts, exits 0 when every fork and every
 * child succeeded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

#define CHILD_DEADLINE_S 30
#define SLOTS 64

static int forks_wanted;
static int forks_done; /* handlers that forked and reaped their child */
static int continuing; /* timer mode: children that finish the interrupted code */
static volatile sig_atomic_t in_child;

/* Async-signal-safe failure report from a handler: message, then _exit. */
static void fail_now(const char *why)
{
    ssize_t w = write(STDERR_FILENO, why, strlen(why));
    (void)w;
    _exit(1);
}

/* Waits for `pid` (async-signal-safe): fails if it does not exit 0 within the deadline. */
static void reap(pid_t pid)
{
    struct timespec start, now, pause = {0, 50000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_now("fork_signal: a child failed or was killed\n");
            return;
        }
        if (r < 0 && errno != EINTR) fail_now("fork_signal: waitpid failed\n");
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > CHILD_DEADLINE_S) {
            kill(pid, SIGKILL);
            fail_now("fork_signal: a child did not exit: stuck in fork's child half\n");
        }
        nanosleep(&pause, NULL);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    if (__atomic_load_n(&forks_done, __ATOMIC_RELAXED) >= forks_wanted) return;
    pid_t pid = fork();
    if (pid < 0) fail_now("fork_signal: fork failed\n");
    if (pid == 0) {
        int n = __atomic_load_n(&forks_done, __ATOMIC_RELAXED);
        if (!continuing || n % 4 != 0) _exit(0);
        in_child = 1; /* back to the interrupted code, which finishes, then the loop exits */
        errno = saved;
        return;
    }
    reap(pid);
    __atomic_add_fetch(&forks_done, 1, __ATOMIC_RELAXED);
    if (continuing) { /* the next tick at random, so that the loop runs in between */
        static uint32_t lcg = 12345;
        lcg = lcg * 1103515245u + 12345u;
        struct itimerval once = {{0, 0}, {0, 100 + (long)(lcg >> 8) % 900}};
        setitimer(ITIMER_REAL, &once, NULL);
    }
    errno = saved;
}

static uint64_t next(uint64_t *rng)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return *rng;
}

/* One step of the allocation loop over `slot`. */
static void step(void **slot, uint64_t r)
{
    static const size_t classes[] = {64, 600, 9000, 70000, 300000, 2u << 20};
    size_t size = 1 + (size_t)(r >> 20) % classes[(r >> 8) % 6];
    switch (r % 5) {
    case 0:
        free(*slot);
        *slot = malloc(size);
        break;
    case 1:
        free(*slot);
        *slot = calloc(1, size);
        break;
    case 2:
    case 3: {
        void *p = realloc(*slot, size);
        if (p == NULL) abort();
        *slot = p;
        break;
    }
    default: {
        if ((r >> 40) % 16 != 0) {
            free(*slot);
            *slot = NULL;
            return;
        }
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m == NULL) abort();
        for (int i = 0; i < 40; i++)
            fprintf(m, "line %d of a memory stream %llu\n", i, (unsigned long long)r);
        fclose(m);
        free(buf);
        return;
    }
    }
    if (*slot == NULL) abort();
    memset(*slot, (int)r, size < 32 ? size : 32);
}

/* The other process of sender mode: signals the parent until it is killed. */
static void sender(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (;;) {
        uint64_t r = next(&rng);
        if (kill(parent, r & 1 ? SIGUSR1 : SIGUSR2) != 0) _exit(0);
        struct timespec pause = {0, (long)(r >> 40) % 1000000};
        nanosleep(&pause, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "timer") != 0 && strcmp(argv[1], "sender") != 0)) {
        say("usage: fork_signal timer|sender [FORKS]\n");
        return 2;
    }
    int (*active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ml_active");
    if (active == NULL || !active()) {
        say("fork_signal: not running under libmemlimits.so\n");
        return 2;
    }
    int timer = strcmp(argv[1], "timer") == 0;
    forks_wanted = argc > 2 ? atoi(argv[2]) : 2000;
    continuing = timer;

    pid_t other = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask); /* sender mode: each handler may interrupt the other */
    sa.sa_flags = SA_RESTART;
    if (timer) {
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval first = {{0, 0}, {0, 500}};
        setitimer(ITIMER_REAL, &first, NULL);
    } else {
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);
        pid_t parent = getpid();
        other = fork();
        if (other < 0) return 3;
        if (other == 0) sender(parent);
    }

    void *slots[SLOTS] = {0};
    uint64_t rng = 88172645463325252ull, iterations = 0;
    int left_in_child = 200;
    while (__atomic_load_n(&forks_done, __ATOMIC_RELAXED) < forks_wanted) {
        uint64_t r = next(&rng);
        step(&slots[r % SLOTS], r >> 6);
        iterations++;
        if (in_child && --left_in_child == 0) {
            for (int i = 0; i < SLOTS; i++)
                free(slots[i]);
            _exit(0);
        }
    }
    if (timer) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
    } else {
        kill(other, SIGKILL);
        while (waitpid(other, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    for (int i = 0; i < SLOTS; i++)
        free(slots[i]);
    say("fork_signal %s: %d forks from signal handlers (%d wanted), %llu allocation steps\n",
        argv[1], forks_done, forks_wanted, (unsigned long long)iterations);
    return 0;
}
