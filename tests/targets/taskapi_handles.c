/* Target for tests/test_taskapi.c: token handles and token descriptors. A destroyed token's
 * handle stays refused through the quarantine and the generations, until the documented window;
 * pointers that were never tokens are refused without a crash; a set racing a destroy never
 * sets the next token in the slot nor writes to a reused descriptor; ml_token_fd gives an
 * eventfd readable once the token is set, for good. Linked with -lmemlimits, built with
 * -fno-builtin; `taskapi_handles NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <unistd.h>

#include "tasks_common.h"

/* The window memlimits.h documents: 256 generations, a quarantine of 1024 slots. */
#define GENERATIONS 256
#define QUARANTINE 1024

/* A handle that must be refused everywhere: no effect, not set, no descriptor, no task. */
static int refused_everywhere(ml_token *h, const char *what)
{
    int ok = 1;
    ml_token_set(h);
    if (ml_token_is_set(h)) {
        EXPECT(0, "%s: reads as set", what);
        ok = 0;
    }
    errno = 0;
    int fd = ml_token_fd(h);
    if (fd != -1 || errno != EINVAL) {
        EXPECT(0, "%s: ml_token_fd %d errno %d", what, fd, errno);
        ok = 0;
    }
    ran = 0;
    ml_limits limits = {0, 0, h, 0};
    ml_status st = ml_run(&limits, task_mark_ran, NULL, NULL);
    ml_status st2 = ml_limit_with_token(h, task_mark_ran, NULL);
    if (st != ML_EINVAL || st2 != ML_EINVAL || ran != 0) {
        EXPECT(0, "%s: ml_run %d, ml_limit_with_token %d, ran %d", what, (int)st, (int)st2, ran);
        ok = 0;
    }
    ml_token_destroy(h);
    return ok;
}

/* A destroyed token's handle is refused while its slot waits in the quarantine and through the
 * slot's next 255 generations; the slot comes back with the same handle only after at least
 * 256 x 1024 destroys (memlimits.h), and from then on the handle names the new token. */
static void stale_handle_refused_until_the_window(void)
{
    ml_token *stale = ml_token_create();
    EXPECT(stale != NULL, "create");
    ml_token_set(stale);
    ml_token_destroy(stale);
    EXPECT(refused_everywhere(stale, "just destroyed"), "refused");

    const long window = (long)GENERATIONS * QUARANTINE;
    const long bound = (long)GENERATIONS * (QUARANTINE + 1) + QUARANTINE + 1;
    long cycles = 0, seen_set = 0, came_back = -1;
    for (; cycles < bound && came_back < 0; cycles++) {
        ml_token *t = ml_token_create();
        if (t == NULL) {
            EXPECT(0, "create failed at cycle %ld", cycles);
            break;
        }
        if (t == stale) {
            came_back = cycles;
            break;
        }
        ml_token_set(stale); /* must not reach t, nor any other */
        if (ml_token_is_set(t)) seen_set++;
        if ((cycles & 1023) == 0 && ml_token_is_set(stale)) EXPECT(0, "stale reads set");
        ml_token_destroy(t);
    }
    EXPECT(seen_set == 0, "%ld new tokens were set through the stale handle", seen_set);
    EXPECT(came_back >= window, "the stale handle came back after %ld destroys (< %ld)", came_back,
           window);
    EXPECT(came_back >= 0, "the handle never came back in %ld cycles", cycles);
    say("info stale_handle_back_after %ld\n", came_back);
    if (came_back >= 0) {
        /* the window's end: the handle now names the new token */
        EXPECT(!ml_token_is_set(stale), "the new token in the slot starts set");
        ml_token_set(stale);
        EXPECT(ml_token_is_set(stale), "the handle does not name the token in its slot");
        ml_token_destroy(stale);
    }
}

/* Pointers that were never tokens, anywhere: the stack, the heap, unmapped and out-of-range
 * addresses, inside token memory next to live tokens, a region unmapped since. */
static void never_a_token_is_refused(void)
{
    ml_token *live[3];
    for (int i = 0; i < 3; i++)
        live[i] = ml_token_create();
    int local = 0;
    void *heap = malloc(64);
    void *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(gone, 4096);
    struct {
        const char *what;
        ml_token *h;
    } forged[] = {
        {"a stack address", (ml_token *)&local},
        {"a heap block", heap},
        {"address 1", (ml_token *)(uintptr_t)1},
        {"address 4096", (ml_token *)(uintptr_t)4096},
        {"the last address", (ml_token *)UINTPTR_MAX},
        {"an unmapped page", gone},
        {"a non-canonical address", (ml_token *)(uintptr_t)0x8000000000000000ull},
        {"a live handle + 1", (ml_token *)((char *)live[1] + 1)},
        {"a live handle - 1", (ml_token *)((char *)live[1] - 1)},
        {"a function", (ml_token *)(uintptr_t)&refused_everywhere},
        {"an unused slot", (ml_token *)((char *)live[2] + 64 * 256)},
    };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        refused_everywhere(forged[i].h, forged[i].what);
    EXPECT(local == 0, "the stack variable was written");
    for (int i = 0; i < 3; i++) {
        EXPECT(!ml_token_is_set(live[i]), "live token %d was set by a forged handle", i);
        EXPECT(ml_limit_with_token(live[i], task_mark_ran, NULL) == ML_OK, "live token %d", i);
        ml_token_destroy(live[i]);
    }
    free(heap);
}

/* Sets racing destroys. One thread keeps creating a token (with a descriptor), publishing it,
 * destroying it, then making a probe eventfd (which tends to get the destroyed descriptor's
 * number); another keeps setting whatever handle is published. A set never reaches a token
 * created after the one it aimed at, nor a probe descriptor. */
#define RACE_ROUNDS 20000
static ml_token *race_published;
static int race_stop;

static void *race_setter(void *arg)
{
    (void)arg;
    unsigned long sets = 0;
    while (!__atomic_load_n(&race_stop, __ATOMIC_ACQUIRE)) {
        ml_token *t = __atomic_load_n(&race_published, __ATOMIC_ACQUIRE);
        if (t != NULL) ml_token_set(t);
        sets++;
    }
    return (void *)sets;
}

static void set_racing_destroy_reaches_nothing_new(void)
{
    pthread_t th;
    race_stop = 0;
    pthread_create(&th, NULL, race_setter, NULL);
    int born_set = 0, probe_raised = 0, no_fd = 0;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        ml_token *t = ml_token_create();
        if (ml_token_is_set(t)) born_set++; /* before it is published: nobody may set it */
        if (ml_token_fd(t) < 0) no_fd++;
        __atomic_store_n(&race_published, t, __ATOMIC_RELEASE);
        if (i % 3 == 0) sched_yield();
        ml_token_destroy(t); /* the setter may be inside ml_token_set(t) */
        int probe = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        for (int k = 0; k < 4; k++)
            sched_yield();
        uint64_t count;
        if (read(probe, &count, sizeof count) == (ssize_t)sizeof count) probe_raised++;
        close(probe);
    }
    __atomic_store_n(&race_stop, 1, __ATOMIC_RELEASE);
    void *sets;
    pthread_join(th, &sets);
    EXPECT(born_set == 0, "%d new tokens were set before anyone had their handle", born_set);
    EXPECT(probe_raised == 0, "%d probe descriptors were written to", probe_raised);
    EXPECT(no_fd == 0, "ml_token_fd failed %d times", no_fd);
    say("info race_sets %lu\n", (unsigned long)(uintptr_t)sets);
}

/* ---------------------------------------------------------------------------------------------
 * ml_token_fd. */
static int readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void token_fd_readable_once_set_for_good(void)
{
    ml_token *t = ml_token_create();
    int fd = ml_token_fd(t);
    EXPECT(fd >= 0, "ml_token_fd: %s", strerror(errno));
    EXPECT(ml_token_fd(t) == fd, "a second call gave another descriptor");
    EXPECT(fcntl(fd, F_GETFD) == FD_CLOEXEC, "not close-on-exec");
    EXPECT((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "blocking");
    EXPECT(!readable(fd), "readable before the token is set");
    uint64_t count = 0;
    errno = 0;
    EXPECT(read(fd, &count, sizeof count) == -1 && errno == EAGAIN, "read before set: errno %d",
           errno);
    ml_token_set(t);
    EXPECT(readable(fd), "not readable once set");
    /* reads do not clear it: the token is never unset */
    for (int i = 0; i < 1000; i++) {
        count = 0;
        if (read(fd, &count, sizeof count) != (ssize_t)sizeof count || count != 1) {
            EXPECT(0, "read %d: count %llu errno %d", i, (unsigned long long)count, errno);
            break;
        }
    }
    EXPECT(readable(fd), "not readable after 1000 reads");
    ml_token_set(t); /* setting again changes nothing */
    EXPECT(readable(fd), "not readable after a second set");

    /* select and epoll see it too */
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    struct timeval zero = {0, 0};
    EXPECT(select(fd + 1, &set, NULL, NULL, &zero) == 1, "select");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    EXPECT(epoll_wait(ep, &out, 1, 0) == 1 && out.data.fd == fd, "epoll");
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(ep);

    /* destroyed: the descriptor is closed, the handle refused */
    ml_token_destroy(t);
    errno = 0;
    EXPECT(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "the descriptor outlived its token");
    errno = 0;
    EXPECT(ml_token_fd(t) == -1 && errno == EINVAL, "ml_token_fd of a destroyed token");
    errno = 0;
    EXPECT(ml_token_fd(NULL) == -1 && errno == EINVAL, "ml_token_fd(NULL)");

    /* asked for after the set: readable at once */
    t = ml_token_create();
    ml_token_set(t);
    fd = ml_token_fd(t);
    EXPECT(fd >= 0 && readable(fd), "a token set before ml_token_fd: fd %d not readable", fd);
    ml_token_destroy(t);

    /* a destroyed token without a descriptor closes nothing */
    int canary = eventfd(0, EFD_CLOEXEC);
    t = ml_token_create();
    ml_token_destroy(t);
    EXPECT(fcntl(canary, F_GETFD) == FD_CLOEXEC, "destroying a token closed another descriptor");
    close(canary);
}

/* Set from a signal handler, on this thread or on another: the descriptor becomes readable. */
static ml_token *handler_token;

static void set_in_handler(int sig)
{
    (void)sig;
    ml_token_set(handler_token);
}

static void *blocked_poller(void *arg)
{
    int fd = *(int *)arg;
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, 20000);
    return (void *)(intptr_t)(n == 1 && (p.revents & POLLIN));
}

static void token_fd_set_from_signal_handler(void)
{
    set_handler(SIGUSR1, set_in_handler, SA_RESTART);
    handler_token = ml_token_create();
    int fd = ml_token_fd(handler_token);
    raise(SIGUSR1);
    EXPECT(readable(fd), "set by a handler on this thread: not readable");
    ml_token_destroy(handler_token);

    /* another thread blocked in poll wakes when the handler runs here */
    handler_token = ml_token_create();
    fd = ml_token_fd(handler_token);
    pthread_t th;
    pthread_create(&th, NULL, blocked_poller, &fd);
    sleep_ms(50);
    raise(SIGUSR1);
    void *woke;
    pthread_join(th, &woke);
    EXPECT(woke == (void *)1, "the blocked poll did not see the set");
    ml_token_destroy(handler_token);
    signal(SIGUSR1, SIG_DFL);
}

/* Failure injection: no descriptor left. ml_token_fd fails with eventfd's EMFILE and leaves the
 * token working; a later call, with descriptors back, succeeds. */
static void token_fd_without_descriptors_fails_cleanly(void)
{
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    ml_token *t = ml_token_create();
    int hog[64], n = 0;
    struct rlimit tight = {16, old.rlim_max};
    setrlimit(RLIMIT_NOFILE, &tight);
    while (n < 64 && (hog[n] = eventfd(0, 0)) >= 0)
        n++;
    errno = 0;
    int fd = ml_token_fd(t);
    int err = errno;
    for (int i = 0; i < n; i++)
        close(hog[i]);
    setrlimit(RLIMIT_NOFILE, &old);
    EXPECT(fd == -1 && err == EMFILE, "without descriptors: fd %d errno %d", fd, err);
    ml_token_set(t); /* no descriptor yet: still a plain token */
    EXPECT(ml_token_is_set(t), "the token no longer sets");
    fd = ml_token_fd(t);
    EXPECT(fd >= 0 && readable(fd), "with descriptors back: fd %d", fd);
    ml_token_destroy(t);
}

static const scenario scenarios[] = {
    SCENARIO(stale_handle_refused_until_the_window),
    SCENARIO(never_a_token_is_refused),
    SCENARIO(set_racing_destroy_reaches_nothing_new),
    SCENARIO(token_fd_readable_once_set_for_good),
    SCENARIO(token_fd_set_from_signal_handler),
    SCENARIO(token_fd_without_descriptors_fails_cleanly),
};

SCENARIOS_MAIN(scenarios)
