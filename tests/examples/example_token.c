/* Example: a token limit set from a signal handler (memprof-limits' third example, in C).
 *
 * Five worker threads race to push their next number in an increasing sequence onto a shared
 * lock-free list (a compare-and-swap on the head pointer). Each worker is a task under one
 * shared token; the SIGINT handler sets the token (ml_token_set is async-signal-safe). When the
 * user presses Ctrl+C, all five stop at their next allocation, and the winner is the thread that
 * reached the highest number. Nothing is unwound from the signal handler: the workers see malloc
 * return NULL and return.
 *
 * The main thread is an event loop (poll) over two descriptors: a pipe on which each worker
 * reports once it has pushed READY_PUSHES numbers, and the token's own descriptor
 * (ml_token_fd), which becomes readable when the token is set. It prints "ready" once every
 * worker has reported, and stops when the token is set: the same Ctrl+C that stops the workers
 * stops the loop, without a flag to poll or a signal of its own. (Warning: unbounded memory
 * consumption if not interrupted.)
 *
 * Build: cc example_token.c -lmemlimits -pthread. Exits 0 when every check below holds. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memlimits.h"

#define THREADS 5
#define READY_PUSHES 10000

struct node {
    struct node *next;
    int thread;
    long number;
};

static _Atomic(struct node *) list; /* the shared lock-free list */
static ml_token *token;
static int progress[2]; /* a pipe: each worker writes one byte once it is well under way */

struct worker {
    pthread_t id;
    int index;
    long pushed; /* numbers this worker pushed: 0 .. pushed-1 */
    ml_status status;
};

/* The task: push 0, 1, 2, ... until an allocation is refused because the token was set. */
static void push_numbers(void *arg)
{
    struct worker *w = arg;
    for (long j = 0;; j++) {
        struct node *node = malloc(sizeof *node);
        if (node == NULL) return; /* interrupted */
        node->thread = w->index;
        node->number = j;
        node->next = atomic_load(&list);
        while (!atomic_compare_exchange_weak(&list, &node->next, node))
            continue; /* lost the race: node->next now holds the new head, try again */
        w->pushed = j + 1;
        if (j + 1 == READY_PUSHES && write(progress[1], "r", 1) != 1) abort();
    }
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    w->status = ml_limit_with_token(token, push_numbers, w);
    return NULL;
}

static void on_sigint(int sig)
{
    (void)sig;
    ml_token_set(token); /* the only thing the handler does */
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                      \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    CHECK(ml_active()); /* linked with -lmemlimits: memlimits owns malloc */
    token = ml_token_create();
    CHECK(token != NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGINT, &sa, NULL) == 0);

    CHECK(pipe(progress) == 0);
    int token_fd = ml_token_fd(token); /* readable once the token is set */
    CHECK(token_fd >= 0);

    static struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i].index = i;
        CHECK(pthread_create(&workers[i].id, NULL, worker_thread, &workers[i]) == 0);
    }
    /* The event loop: progress reports until all are under way (then tell whoever sends the
     * SIGINT that the race is on), until the token's descriptor says stop. */
    struct pollfd fds[2] = {{progress[0], POLLIN, 0}, {token_fd, POLLIN, 0}};
    int under_way = 0;
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            CHECK(errno == EINTR); /* the SIGINT itself */
            continue;
        }
        if (fds[1].revents & POLLIN) break; /* the token is set */
        char c;
        if ((fds[0].revents & POLLIN) && read(progress[0], &c, 1) == 1 && ++under_way == THREADS) {
            printf("ready\n");
            fflush(stdout);
        }
    }
    printf("The event loop stopped: the token is set.\n");

    for (int i = 0; i < THREADS; i++)
        pthread_join(workers[i].id, NULL);
    printf("All threads stopped.\n");

    /* The winner: the highest number in the list (on a tie, the first found). */
    int winner = -1;
    long max = -1;
    for (struct node *n = atomic_load(&list); n != NULL; n = n->next)
        if (n->number > max) {
            max = n->number;
            winner = n->thread;
        }
    printf("max = %ld, winning thread = %d.\n", max, winner);

    /* Checks: every worker was stopped by the token, and the list holds each worker's numbers
     * exactly once, most recent first: no push was lost or duplicated by the race. */
    long expect[THREADS], total = 0, longest = -1;
    for (int i = 0; i < THREADS; i++) {
        printf("thread %d: %ld numbers pushed, %s\n", i, workers[i].pushed,
               ml_strstatus(workers[i].status));
        CHECK(workers[i].status == ML_TOKEN);
        expect[i] = workers[i].pushed - 1;
        total += workers[i].pushed;
        if (workers[i].pushed - 1 > longest) longest = workers[i].pushed - 1;
    }
    long nodes = 0;
    for (struct node *n = atomic_load(&list), *next; n != NULL; n = next) {
        next = n->next;
        CHECK(n->thread >= 0 && n->thread < THREADS && n->number == expect[n->thread]--);
        nodes++;
        free(n);
    }
    for (int i = 0; i < THREADS; i++)
        CHECK(expect[i] == -1);
    CHECK(nodes == total && max == longest && winner >= 0);
    CHECK(ml_token_is_set(token) && under_way == THREADS);
    ml_token_destroy(token); /* closes token_fd too */
    close(progress[0]);
    close(progress[1]);
    printf("%ld numbers in the list, each worker's exactly once\n", nodes);
    printf("token example: ok\n");
    return 0;
}
