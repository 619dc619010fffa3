/* What a forked child of a multithreaded process inherits of memlimits' shared state. Scenarios:
 *   tokens   another thread creates, opens (ml_token_fd) and destroys tokens without pause while
 *            the main thread forks 300 times; each child creates, opens and destroys a token of
 *            its own. Before the fix, a fork that fell while the other thread held the tokens'
 *            lock left it locked in the child for good, and the child hung (its alarm kills it).
 *   setters  another thread sets one token without pause while the main thread forks 300 times;
 *            each child destroys that token. Before the fix, a fork that fell while the other
 *            thread was inside ml_token_set left the token's count of sets in flight above zero
 *            in the child for good, and ml_token_destroy, which waits for it, hung there.
 *   leases   run with MEMLIMITS_ALLOC and MEMLIMITS_ON_ALLOC=enomem (per process): another
 *            thread holds an unspent lease of the budget and waits; the main thread forks. The
 * child's budget must be the parent's: ml_stat's exact budget_left the same, and the child can
 * allocate exactly that much. Before the fix, the other thread's unspent lease (up to 1 MiB) was
 * lost in the child.
 *
 * usage: fork_state SCENARIO; prints "ok SCENARIO" and exits 0, or prints why and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memlimits.h"
#include "say.h"

#define FORKS 300
#define CHILD_ALARM_S 10
#define STEP (64 * 1024)

static volatile int stop;

static void *churn_tokens(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        ml_token *t = ml_token_create();
        if (t == NULL) continue;
        (void)ml_token_fd(t); /* an eventfd made under the lock: a long hold */
        ml_token_destroy(t);  /* a close under the lock */
    }
    return NULL;
}

static int tokens(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, churn_tokens, NULL) != 0) return say("pthread_create\n"), 1;
    int hung = 0, failed = 0;
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        if (pid < 0) return say("fork: %s\n", strerror(errno)), 1;
        if (pid == 0) {
            alarm(CHILD_ALARM_S);
            ml_token *t = ml_token_create();
            if (t == NULL || ml_token_fd(t) < 0) _exit(2);
            ml_token_destroy(t);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) return say("waitpid: %s\n", strerror(errno)), 1;
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            hung++;
            break; /* one is enough to know */
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    if (hung != 0 || failed != 0) {
        say("tokens: a child hung on the tokens' lock (%d hung, %d failed)\n", hung, failed);
        return 1;
    }
    say("ok tokens\n");
    return 0;
}

static ml_token *shared;

static void *set_shared(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
        ml_token_set(shared);
    return NULL;
}

static int setters(void)
{
    shared = ml_token_create();
    if (shared == NULL || ml_token_fd(shared) < 0) return say("ml_token_create\n"), 1;
    pthread_t th;
    if (pthread_create(&th, NULL, set_shared, NULL) != 0) return say("pthread_create\n"), 1;
    while (!ml_token_is_set(shared))
        sched_yield();
    int hung = 0, failed = 0;
    for (int i = 0; i < FORKS && hung == 0; i++) {
        pid_t pid = fork();
        if (pid < 0) return say("fork: %s\n", strerror(errno)), 1;
        if (pid == 0) {
            alarm(CHILD_ALARM_S);
            if (!ml_token_is_set(shared)) _exit(2);
            ml_token_destroy(shared);
            _exit(ml_token_is_set(shared) ? 3 : 0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) return say("waitpid: %s\n", strerror(errno)), 1;
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
            hung++;
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    ml_token_destroy(shared);
    if (hung != 0 || failed != 0) {
        say("setters: a child hung destroying a token set across the fork (%d hung, %d failed)\n",
            hung, failed);
        return 1;
    }
    say("ok setters\n");
    return 0;
}

static int lease_fd[2], release_fd[2];

/* Allocates once (which leases from the process budget), says so, and waits to be released. */
static void *hold_lease(void *arg)
{
    (void)arg;
    void *volatile p = malloc(100);
    free(p);
    char c = 1;
    if (write(lease_fd[1], &c, 1) != 1) return NULL;
    while (read(release_fd[0], &c, 1) < 0 && errno == EINTR) {
    }
    return NULL;
}

static uint64_t budget_left(void)
{
    ml_stats s = ML_STATS_INIT;
    ml_stat(&s);
    return s.budget_left;
}

static int leases(void)
{
    if (pipe(lease_fd) != 0 || pipe(release_fd) != 0) return say("pipe\n"), 1;
    pthread_t th;
    if (pthread_create(&th, NULL, hold_lease, NULL) != 0) return say("pthread_create\n"), 1;
    char c;
    if (read(lease_fd[0], &c, 1) != 1) return say("read\n"), 1;
    uint64_t left = budget_left();
    if (left == ML_UNLIMITED) return say("leases: run with MEMLIMITS_ALLOC\n"), 1;
    pid_t pid = fork();
    if (pid < 0) return say("fork: %s\n", strerror(errno)), 1;
    if (pid == 0) {
        uint64_t child_left = budget_left();
        if (child_left != left) {
            say("leases: the child's budget left is %llu, the parent's was %llu\n",
                (unsigned long long)child_left, (unsigned long long)left);
            _exit(1);
        }
        uint64_t got = 0; /* blocks of STEP bytes, each freed: the budget counts allocations */
        for (void *p; (p = malloc(STEP)) != NULL; got += STEP)
            free(p);
        if (got > left || left - got >= STEP) {
            say("leases: the child allocated %llu bytes of a budget of %llu left\n",
                (unsigned long long)got, (unsigned long long)left);
            _exit(1);
        }
        _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) return say("waitpid: %s\n", strerror(errno)), 1;
    c = 1;
    if (write(release_fd[1], &c, 1) != 1) return say("write\n"), 1;
    pthread_join(th, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    say("ok leases\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "tokens") == 0) return tokens();
    if (argc == 2 && strcmp(argv[1], "leases") == 0) return leases();
    if (argc == 2 && strcmp(argv[1], "setters") == 0) return setters();
    say("usage: fork_state tokens|setters|leases\n");
    return 2;
}
