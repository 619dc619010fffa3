/* fork from a multithreaded parent whose other threads are busy in malloc/free and in stdio:
 * fopen/fprintf/fflush/fclose and printf, open_memstream, malloc while holding a stream's lock
 * (flockfile), and fflush(NULL), which holds stdio's list lock while it waits for each stream's
 * lock. Stock jemalloc's fork handler takes its locks before fork takes the list lock, so the
 * forking thread can wait for the list lock while holding jemalloc's locks, whose next user holds
 * the stream lock the list lock's holder waits for: with libjemalloc.so.2 preloaded instead of
 * memlimits, this program deadlocks in fork within the first 5 to 20 forks.
 *
 * Each child allocates, uses stdio, asks memlimits for the live heap (its registry lock was
 * reset), sometimes starts a thread, and exits 0 through exit() (flushing stdio). The parent
 * waits for every child with a deadline of its own, kills a child that does not finish, and
 * checks every status; a deadlock in the parent itself is left to the caller's timeout.
 *
 * usage: robust_fork [FORKS]; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_DEADLINE_S 20

typedef uint64_t (*u64_fn)(void);

static u64_fn heap_live;
static int stop;
#define THREADS 6
static unsigned long iterations[THREADS];

static void *churn(void *arg)
{
    int id = (int)(intptr_t)arg;
    void *keep[64] = {0};
    uint64_t rng = 88172645463325252ull + (uint64_t)id;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t i = rng % 64, size = 1 + (size_t)(rng >> 40) % (rng & 1 ? 200000 : 2000);
        free(keep[i]);
        keep[i] = malloc(size);
        if (keep[i] == NULL) abort();
        memset(keep[i], id, size < 64 ? size : 64);
        __atomic_add_fetch(&iterations[id], 1, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < 64; i++)
        free(keep[i]);
    return NULL;
}

static void *files(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        FILE *f = fopen("/dev/null", "w");
        if (f == NULL) abort();
        fprintf(f, "iteration %lu of thread %d: %s\n", iterations[id], id, "some text");
        fflush(f);
        fclose(f);
        printf("iteration %lu %g\n", iterations[id], 1.5 * (double)iterations[id]);
        if (iterations[id] % 16 == 0) fflush(stdout);
        __atomic_add_fetch(&iterations[id], 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *memstreams(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m == NULL) abort();
        for (int i = 0; i < 100; i++) {
            fprintf(m, "line %d of a memory stream that keeps growing %lu\n", i, iterations[id]);
            if (i % 10 == 0) fflush(NULL); /* list lock held while the stream reallocates */
        }
        fclose(m);
        free(buf);
        __atomic_add_fetch(&iterations[id], 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Allocates while holding a stream's lock (flockfile, as a parser reading with getc_unlocked
 * does; glibc's getdelim and memory streams do the same internally), with blocks beyond jemalloc's
 * thread cache, so from the arena under its locks. Yields between rounds so that fflush(NULL),
 * which waits for this stream's lock while holding the list lock, gets its turn. */
static void *locked_allocs(void *arg)
{
    int id = (int)(intptr_t)arg;
    FILE *f = fopen("/dev/null", "w");
    if (f == NULL) abort();
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        flockfile(f);
        for (int i = 0; i < 4; i++) {
            char *p = malloc(64 * 1024 + (size_t)i * 4096);
            if (p == NULL) abort();
            p[0] = 'x';
            p[1] = '\0';
            fputs_unlocked(p, f);
            free(p);
        }
        funlockfile(f);
        __atomic_add_fetch(&iterations[id], 1, __ATOMIC_RELAXED);
        sched_yield();
    }
    fclose(f);
    return NULL;
}

/* fflush(NULL): holds stdio's list lock while it takes every stream's lock in turn. */
static void *flush_all(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        fflush(NULL);
        __atomic_add_fetch(&iterations[id], 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *child_thread(void *arg)
{
    char *s = NULL;
    if (asprintf(&s, "child thread %d", (int)(intptr_t)arg) < 0) return (void *)1;
    void *big = malloc(1 << 20);
    if (big == NULL) return (void *)1;
    memset(big, 1, 1 << 20);
    free(big);
    free(s);
    return NULL;
}

/* The child: only the forking thread exists. Exits 0 when everything worked. */
static void child(int n)
{
    alarm(CHILD_DEADLINE_S);
    char *blocks[32];
    for (int i = 0; i < 32; i++) {
        blocks[i] = malloc((size_t)(i + 1) * 1000);
        if (blocks[i] == NULL) _exit(10);
        memset(blocks[i], i, (size_t)(i + 1) * 1000);
    }
    FILE *f = fopen("/dev/null", "w");
    if (f == NULL) _exit(11);
    for (int i = 0; i < 32; i++)
        fprintf(f, "%d %c\n", i, blocks[i][i]);
    if (fclose(f) != 0) _exit(12);
    char *text = NULL;
    if (asprintf(&text, "child %d of pid %d", n, (int)getppid()) < 0) _exit(13);
    if (heap_live() == 0) _exit(14);
    if (n % 10 == 0) {
        pthread_t t;
        void *ret = (void *)1;
        if (pthread_create(&t, NULL, child_thread, (void *)(intptr_t)n) != 0) _exit(15);
        pthread_join(t, &ret);
        if (ret != NULL) _exit(16);
    }
    for (int i = 0; i < 32; i++)
        free(blocks[i]);
    free(text);
    printf("child %d done\n", n); /* stdout is /dev/null; exit() flushes it */
    exit(0);
}

/* Waits for `pid` up to the deadline; returns its status, or -1 after killing it. */
static int wait_child(pid_t pid)
{
    struct timespec start, now, pause = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        if (r < 0 && errno != EINTR) return -2;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > CHILD_DEADLINE_S + 5) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        nanosleep(&pause, NULL);
    }
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    if (heap_live == NULL) {
        fprintf(stderr, "robust_fork: not running under libmemlimits.so\n");
        return 2;
    }
    if (freopen("/dev/null", "w", stdout) == NULL) return 2;

    void *(*bodies[THREADS])(void *) = {churn, churn, files, memstreams, locked_allocs, flush_all};
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&tid[i], NULL, bodies[i], (void *)(intptr_t)i) != 0) return 3;
    /* Forks start once every thread is in its loop. */
    for (int i = 0; i < THREADS; i++)
        while (__atomic_load_n(&iterations[i], __ATOMIC_RELAXED) == 0)
            sched_yield();

    int failed = 0;
    for (int n = 0; n < forks; n++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "robust_fork: fork #%d: %s\n", n, strerror(errno));
            failed++;
            break;
        }
        if (pid == 0) child(n);
        int st = wait_child(pid);
        if (failed >= 10) { /* enough said */
            failed += st != 0;
        } else if (st == -1) {
            fprintf(stderr, "robust_fork: child #%d did not finish in %d s: killed (deadlock)\n", n,
                    CHILD_DEADLINE_S + 5);
            failed++;
        } else if (st < 0) {
            fprintf(stderr, "robust_fork: waitpid for child #%d failed\n", n);
            failed++;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (WIFSIGNALED(st))
                fprintf(stderr, "robust_fork: child #%d killed by signal %d\n", n, WTERMSIG(st));
            else
                fprintf(stderr, "robust_fork: child #%d exited with %d\n", n, WEXITSTATUS(st));
            failed++;
        }
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);
    fprintf(stderr,
            "robust_fork: %d forks, %d failed; thread iterations: malloc %lu %lu, fopen %lu, "
            "memstream %lu, malloc under flockfile %lu, fflush(NULL) %lu\n",
            forks, failed, iterations[0], iterations[1], iterations[2], iterations[3],
            iterations[4], iterations[5]);
    return failed != 0;
}
