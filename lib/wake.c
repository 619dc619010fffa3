/* The wake-up signal and the waker thread (see wake.h).
 *
 * Why a thread: ml_token_set must be async-signal-safe, so it cannot take the lock that guards
 * the list of tasks to wake, nor call pthread_cond_broadcast. It writes to an eventfd instead;
 * the waker, blocked on it with every signal masked, takes the lock and calls the scan, which
 * finds the tasks whose interrupt is pending and sends the threads of the ML_WAKE ones the
 * signal with tgkill, and broadcasts the conditions the others wait on in ml_cond_wait. A
 * broadcast can come before the waiter is inside pthread_cond_wait, and be lost: the scan then
 * asks to be called again, and the waker repeats it, backing off, until the waiter has left its
 * wait. The waker exists only once an ML_WAKE task or a condition wait needed it.
 *
 * The handler: runs on the task's thread, between two instructions. If the thread is inside
 * memlimits' slow path (busy) it leaves a note the slow path reads on its way out; otherwise it
 * moves the countdown's remaining bytes off `armed` and zeroes the countdown, which keeps the
 * allocation count exact and makes the next allocation an event. */
#define _GNU_SOURCE
#include "wake.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host.h"
#include "memlimits.h"
#include "common.h"
#include "thread.h"

static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;
static int wake_signal;   /* 0 until installed */
static int event_fd = -1; /* the waker's eventfd; -1: no waker */

static void on_wake(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    (void)context;
    int saved = errno;
    ml_thread *t = &ml__self;
    if (t->busy)
        t->wake_pending = 1;
    else if (t->state == ML_THREAD_READY)
        ml__thread_force_event(t);
    errno = saved;
}

static int handler_is_ours(int sig)
{
    struct sigaction cur;
    return sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
           cur.sa_sigaction == on_wake;
}

static int install(int sig)
{
    struct sigaction old, sa;
    if (sig != 0) {
        if (sigaction(sig, NULL, &old) != 0) return ML_ESIGNAL;
        int is_default = !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL;
        if (!is_default && !handler_is_ours(sig)) return ML_ESIGNAL;
    } else {
        /* A free real-time signal: the highest one still at its default disposition. */
        for (int s = SIGRTMAX; s >= SIGRTMIN && sig == 0; s--)
            if (sigaction(s, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
                old.sa_handler == SIG_DFL)
                sig = s;
        if (sig == 0) return ML_ESIGNAL;
    }
    sa.sa_sigaction = on_wake;
    sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: blocked calls return EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) return ML_ESIGNAL;
    wake_signal = sig;
    return 0;
}

static ml_wake_scan waker_scan;

/* Waits for a poke, or `retry_ns` nanoseconds when not 0. Returns -1 once the descriptor is
 * gone (closed after fork: this copy of the waker is gone anyway). */
static int wait_poke(int fd, long retry_ns)
{
    uint64_t count;
    if (retry_ns > 0) {
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec ts = {0, retry_ns};
        int n = ppoll(&p, 1, &ts, NULL);
        if (n < 0 && errno != EINTR) return -1;
        if (n <= 0) return 0;
        if (p.revents & (POLLERR | POLLNVAL)) return -1;
    }
    for (;;) {
        ssize_t n = read(fd, &count, sizeof count); /* readable, or blocking: the poke itself */
        if (n < 0 && errno == EINTR) continue;
        return n == (ssize_t)sizeof count ? 0 : -1;
    }
}

static void *waker_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    long retry_ns = 0;
    for (;;) {
        if (wait_poke(fd, retry_ns) != 0) break;
        ml__registry_lock();
        int again = waker_scan();
        ml__registry_unlock();
        if (!again)
            retry_ns = 0;
        else
            retry_ns = retry_ns == 0 ? 20000 : ML_MIN(retry_ns * 2, 10000000L);
    }
    return NULL;
}

static int start_waker(void)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    if (fd < 0) return ML_ENOMEM;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the waker inherits a full mask */
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 << 10);
    /* The real pthread_create: the waker is memlimits' own thread, not the program's. */
    int rc = ml__host_pthread_create(&thread, &attr, waker_main, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(fd);
        return ML_ENOMEM;
    }
    __atomic_store_n(&event_fd, fd, __ATOMIC_SEQ_CST);
    return 0;
}

int ml__wake_start(ml_wake_scan scan)
{
    if (__atomic_load_n(&event_fd, __ATOMIC_ACQUIRE) >= 0) return 0;
    int rc = 0;
    pthread_mutex_lock(&setup_lock);
    waker_scan = scan;
    if (ML_LOAD(&event_fd) < 0) rc = start_waker();
    pthread_mutex_unlock(&setup_lock);
    return rc;
}

int ml__wake_setup(int signal, ml_wake_scan scan)
{
    int rc = 0;
    pthread_mutex_lock(&setup_lock);
    waker_scan = scan;
    if (wake_signal == 0)
        rc = install(signal);
    else if (!handler_is_ours(wake_signal))
        rc = ML_ESIGNAL; /* the program took it over */
    if (rc == 0 && ML_LOAD(&event_fd) < 0) rc = start_waker();
    pthread_mutex_unlock(&setup_lock);
    return rc;
}

void ml__wake_poke(void)
{
    /* Sequentially consistent, as the caller's store of what it pokes about (a token's flag):
     * a waiter that started the waker before it last looked at the flag is then poked. */
    int fd = __atomic_load_n(&event_fd, __ATOMIC_SEQ_CST);
    if (fd < 0) return;
    int saved = errno;
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n;
    errno = saved;
}

void ml__wake_send(int tid)
{
    int sig = ML_LOAD(&wake_signal);
    if (sig == 0 || !handler_is_ours(sig)) return; /* never let a default action kill it */
    syscall(SYS_tgkill, getpid(), tid, sig);
}

void ml__wake_fork_child(int restart)
{
    /* The waker did not survive the fork, and its eventfd is shared with the parent's. */
    if (event_fd >= 0) close(event_fd);
    event_fd = -1;
    pthread_mutex_init(&setup_lock, NULL);
    /* A first scan finds the tasks whose signal was lost in the fork. */
    if (restart && wake_signal != 0 && start_waker() == 0) ml__wake_poke();
}
