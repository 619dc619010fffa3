/* ML_WAKE tasks in a forked child: a task blocked in a long sleep is woken when another thread of
 * the child sets its token, whichever thread runs it and whenever it started. Scenarios:
 *   new_thread     the task runs on a thread created in the child;
 *   after_fork     the task runs on the thread that forked, started after the fork;
 *   across_fork    the task runs on the thread that forked, started before the fork: the child
 *                  continues inside the parent's ml_run.
 *   pending_at_fork  as across_fork, but the token was set in the parent, whose wake-up signal
 *                  was pending (blocked) on the forking thread when it forked: the child does
 *                  not inherit pending signals, so its task must be signalled again.
 * Before forking, the parent runs an ML_WAKE task on the same thread, so that memlimits' waker
 * and the forking thread's registration exist in the parent (what the child inherits).
 *
 * The sleeper blocks the wake-up signal (MEMLIMITS_SIGNAL must be USR2), says it is ready, and
 * sleeps in ppoll with the signal unblocked: a wake-up signal sent before the sleep stays pending
 * and interrupts it as surely as one sent during it. The sleep is 20 s; the task must come back
 * with ML_TOKEN and the sleep with EINTR (the caller's timeout catches a child that hangs).
 *
 * usage: fork_wake SCENARIO; prints "ok SCENARIO" and exits 0, or prints why and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "memlimits.h"
#include "say.h"

#define WAKE_SIGNAL SIGUSR2
#define SLEEP_S 20
#define CHILD_DEADLINE_S 60

typedef struct sleeper {
    ml_token *token;
    int ready;
    int rc, err;
    ml_status status;
} sleeper;

static const char *scenario;
static int failed;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            say("FAIL %s (pid %d): line %d: ", scenario, (int)getpid(), __LINE__);                 \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
            failed = 1;                                                                            \
        }                                                                                          \
    } while (0)

/* The task's body: sleeps SLEEP_S seconds unless the wake-up signal interrupts it. */
static void sleep_body(void *arg)
{
    sleeper *s = arg;
    sigset_t wake, during, saved;
    sigemptyset(&wake);
    sigaddset(&wake, WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &wake, &saved);
    during = saved;
    sigdelset(&during, WAKE_SIGNAL);
    __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
    struct timespec ts = {SLEEP_S, 0};
    errno = 0;
    s->rc = ppoll(NULL, 0, &ts, &during);
    s->err = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

static void run_sleeper(sleeper *s)
{
    ml_limits limits = {0, 0, s->token, ML_WAKE};
    s->status = ml_run(&limits, sleep_body, s, NULL);
}

static void *sleeper_thread(void *arg)
{
    run_sleeper(arg);
    return NULL;
}

/* Sets the token once the sleeper is about to sleep. */
static void *setter_thread(void *arg)
{
    sleeper *s = arg;
    while (!__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE)) {
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    void *p = malloc(100); /* this thread allocates too: it is registered in the child */
    free(p);
    ml_token_set(s->token);
    return NULL;
}

static void check_woken(const sleeper *s)
{
    EXPECT(s->status == ML_TOKEN, "the task returned %d (%s), not ML_TOKEN", (int)s->status,
           ml_strstatus(s->status));
    EXPECT(s->rc == -1 && s->err == EINTR,
           "the sleep returned %d, errno %d (%s): it was not interrupted", s->rc, s->err,
           strerror(s->err));
}

/* In the child: the token is set by a new thread while the calling thread sleeps in a task. */
static void wake_here(sleeper *s)
{
    pthread_t setter;
    EXPECT(pthread_create(&setter, NULL, setter_thread, s) == 0, "pthread_create");
    run_sleeper(s);
    pthread_join(setter, NULL);
    check_woken(s);
}

static void child_new_thread(void)
{
    sleeper s = {ml_token_create(), 0, 0, 0, ML_OK};
    pthread_t sleeping, setter;
    EXPECT(pthread_create(&sleeping, NULL, sleeper_thread, &s) == 0, "pthread_create");
    EXPECT(pthread_create(&setter, NULL, setter_thread, &s) == 0, "pthread_create");
    pthread_join(setter, NULL);
    pthread_join(sleeping, NULL);
    check_woken(&s);
}

static void child_after_fork(void)
{
    sleeper s = {ml_token_create(), 0, 0, 0, ML_OK};
    wake_here(&s);
}

/* Waits for the child with a deadline; returns its exit status, or -1 if it had to be killed. */
static int wait_child(pid_t pid)
{
    time_t end = time(NULL) + CHILD_DEADLINE_S;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR) return -2;
        if (time(NULL) > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }
}

static void expect_child_ok(pid_t pid)
{
    EXPECT(pid >= 0, "fork: %s", strerror(errno));
    if (pid < 0) return;
    int st = wait_child(pid);
    EXPECT(st == 0, "the child %s %d", st == -1 ? "hung; killed after" : "exited with",
           st == -1 ? CHILD_DEADLINE_S : st);
}

/* across_fork and pending_at_fork: the parent's task forks; the child carries on inside it. */
typedef struct across {
    sleeper child_sleeper;
    pid_t pid;
} across;

static void fork_inside_task(void *arg)
{
    across *a = arg;
    a->pid = fork();
    if (a->pid != 0) return; /* parent: the task ends; the child is waited for outside it */
    alarm(CHILD_DEADLINE_S);
    sleeper *s = &a->child_sleeper;
    pthread_t setter;
    EXPECT(pthread_create(&setter, NULL, setter_thread, s) == 0, "pthread_create");
    sleep_body(s);
    pthread_join(setter, NULL);
}

/* The token is set and the wake-up signal sent to this thread, which blocks it, before the fork:
 * the signal is pending in the parent, and the child starts with none pending. */
static void fork_with_wake_pending(void *arg)
{
    across *a = arg;
    sigset_t wake, saved, pending;
    sigemptyset(&wake);
    sigaddset(&wake, WAKE_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &wake, &saved);
    ml_token_set(a->child_sleeper.token);
    time_t end = time(NULL) + 10;
    do {
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
        sigpending(&pending);
    } while (!sigismember(&pending, WAKE_SIGNAL) && time(NULL) < end);
    EXPECT(sigismember(&pending, WAKE_SIGNAL), "the wake-up signal was never sent in the parent");
    a->pid = fork();
    if (a->pid == 0) {
        alarm(CHILD_DEADLINE_S);
        sleep_body(&a->child_sleeper);
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

static void fork_in_task(void (*body)(void *), ml_status parent_status)
{
    ml_token *token = ml_token_create();
    across a = {{token, 0, 0, 0, ML_OK}, 0};
    ml_limits limits = {0, 0, token, ML_WAKE};
    ml_status status = ml_run(&limits, body, &a, NULL);
    if (a.pid == 0) { /* the child, back from the task it inherited */
        a.child_sleeper.status = status;
        check_woken(&a.child_sleeper);
        _exit(failed);
    }
    EXPECT(status == parent_status, "the parent's task returned %d (%s)", (int)status,
           ml_strstatus(status));
    expect_child_ok(a.pid);
}

/* A task with ML_WAKE in the parent, on the thread that will fork: the waker runs, and this
 * thread is registered with its tid, as in any program that used ML_WAKE before forking. */
static void parent_wakes_once(void)
{
    sleeper s = {ml_token_create(), 0, 0, 0, ML_OK};
    wake_here(&s);
    ml_token_destroy(s.token);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        say("usage: fork_wake new_thread|after_fork|across_fork|pending_at_fork\n");
        return 2;
    }
    scenario = argv[1];
    const char *sig = getenv("MEMLIMITS_SIGNAL");
    if (!ml_active() || sig == NULL || strcmp(sig, "USR2") != 0) {
        say("FAIL %s: needs memlimits owning malloc and MEMLIMITS_SIGNAL=USR2\n", scenario);
        return 2;
    }
    parent_wakes_once();
    if (failed) return 1;
    if (strcmp(scenario, "across_fork") == 0) {
        fork_in_task(fork_inside_task, ML_OK);
    } else if (strcmp(scenario, "pending_at_fork") == 0) {
        fork_in_task(fork_with_wake_pending, ML_TOKEN);
    } else if (strcmp(scenario, "new_thread") == 0 || strcmp(scenario, "after_fork") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(CHILD_DEADLINE_S);
            if (strcmp(scenario, "new_thread") == 0)
                child_new_thread();
            else
                child_after_fork();
            _exit(failed);
        }
        expect_child_ok(pid);
    } else {
        say("FAIL %s: no such scenario\n", scenario);
        return 2;
    }
    if (!failed) say("ok %s\n", scenario);
    return failed;
}
