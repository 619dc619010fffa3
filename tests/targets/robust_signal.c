/* malloc, calloc, realloc and free from a signal handler, in threads that receive the signal
 * only while they sleep in sigsuspend (the interrupted code is never inside malloc: POSIX does not
 * allow malloc in a handler, but real programs do it). Each worker's first allocation ever is made
 * in the handler, so memlimits registers the thread there. The main thread sends the signals one
 * at a time and waits for each handler with a deadline; afterwards the live heap is back at its
 * baseline within 1 MiB (the bound of robust_threads; the handlers allocate about 1 GiB).
 *
 * usage: robust_signal [SIGNALS]; exits nonzero on failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKERS 2
#define KEEP 16
#define DRIFT_BOUND ((int64_t)1 << 20)

typedef uint64_t (*u64_fn)(void);

static sem_t handled;
static int stop; /* set before the last signal to each worker */
static __thread int self_id;
static __thread unsigned long self_count;
static __thread volatile sig_atomic_t self_done; /* set by the handler of the last signal */
static void *kept[WORKERS][KEEP];
static unsigned long handler_runs[WORKERS];
static int failures;

static void handler(int sig)
{
    (void)sig;
    static const size_t sizes[] = {1, 100, 4000, 100000, 1 << 20, 24};
    int saved = errno;
    unsigned long n = self_count++;
    size_t size = sizes[n % (sizeof sizes / sizeof sizes[0])];
    unsigned char *p = n % 3 == 0 ? calloc(1, size) : malloc(size);
    if (p != NULL && n % 4 == 1) {
        unsigned char *q = realloc(p, size * 2 + 10);
        if (q == NULL) free(p);
        p = q;
    }
    if (p == NULL) {
        failures++;
    } else {
        memset(p, (int)n, size < 4096 ? size : 4096);
        void *old = kept[self_id][n % KEEP];
        kept[self_id][n % KEEP] = p;
        free(old);
    }
    handler_runs[self_id]++;
    if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) self_done = 1;
    sem_post(&handled);
    errno = saved;
}

static void *worker(void *arg)
{
    self_id = (int)(intptr_t)arg;
    sigset_t wait_mask; /* SIGUSR1 is blocked (inherited); only sigsuspend lets it in */
    pthread_sigmask(SIG_SETMASK, NULL, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    while (!self_done)
        sigsuspend(&wait_mask);
    for (int i = 0; i < KEEP; i++)
        free(kept[self_id][i]);
    return NULL;
}

static int wait_handled(void)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    while (sem_timedwait(&handled, &deadline) != 0) {
        if (errno == EINTR) continue;
        fprintf(stderr, "robust_signal: a handler did not run within 20 s (deadlock?)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int signals = argc > 1 ? atoi(argv[1]) : 2000;
    u64_fn heap_live = (u64_fn)dlsym(RTLD_DEFAULT, "ml_heap_live");
    if (heap_live == NULL) {
        fprintf(stderr, "robust_signal: not running under libmemlimits.so\n");
        return 2;
    }
    sem_init(&handled, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, NULL);

    uint64_t baseline = heap_live();
    pthread_t tid[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&tid[i], NULL, worker, (void *)(intptr_t)i) != 0) return 3;
    for (int n = 0; n < signals; n++) {
        pthread_kill(tid[n % WORKERS], SIGUSR1);
        if (wait_handled() != 0) return 1;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < WORKERS; i++) {
        pthread_kill(tid[i], SIGUSR1);
        if (wait_handled() != 0) return 1;
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(tid[i], NULL);
    uint64_t after = heap_live();
    int64_t drift = (int64_t)(after - baseline);
    printf("signals=%d runs=%lu+%lu baseline=%" PRIu64 " after=%" PRIu64 " drift=%" PRId64 "\n",
           signals + WORKERS, handler_runs[0], handler_runs[1], baseline, after, drift);
    if (failures != 0) {
        fprintf(stderr, "robust_signal: %d allocation(s) in the handler failed\n", failures);
        return 1;
    }
    if (handler_runs[0] + handler_runs[1] != (unsigned long)(signals + WORKERS)) {
        fprintf(stderr, "robust_signal: %lu handler runs for %d signals\n",
                handler_runs[0] + handler_runs[1], signals + WORKERS);
        return 1;
    }
    if (drift > DRIFT_BOUND || drift < -DRIFT_BOUND) {
        fprintf(stderr, "robust_signal: live heap drifted by %" PRId64 " bytes\n", drift);
        return 1;
    }
    return 0;
}
