/* Example: a token limit set from a signal handler (memprof-limits' third example, in C).
 *
 * Five worker threads race to push their next number in an increasing sequence onto a shared
 * lock-free list (a compare-and-swap on the head pointer). Each worker is a task under one
 * shared token; the SIGINT handler sets the token (ml_token_set is async-signal-safe). When the
 * user presses Ctrl+C, all five stop at their next allocation, and the winner is the thread that
 * reached the highest number. Nothing is unwound from the signal handler: the workers see malloc
 * return NULL and return.
 *
 * The program prints "ready" once every worker has pushed at least READY_PUSHES numbers; the
 * test then sends it SIGINT. (Warning: unbounded memory consumption if not interrupted.)
 *
 * Build: cc example_token.c -lmemlimits -pthread. Exits 0 when every check below holds. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct worker {
    pthread_t id;
    int index;
    long pushed;      /* numbers this worker pushed: 0 .. pushed-1 */
    atomic_int ready; /* nonzero once it pushed READY_PUSHES numbers */
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
        if (j + 1 == READY_PUSHES) atomic_store(&w->ready, 1);
    }
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    w->status = ml_limit_with_token(token, push_numbers, w);
    atomic_store(&w->ready, 1); /* even if it was interrupted before it got there */
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

    static struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i].index = i;
        CHECK(pthread_create(&workers[i].id, NULL, worker_thread, &workers[i]) == 0);
    }
    /* Tell whoever sends the SIGINT that the race is on. */
    for (int i = 0; i < THREADS; i++)
        while (!atomic_load(&workers[i].ready))
            nanosleep(&(struct timespec){0, 100000}, NULL);
    printf("ready\n");
    fflush(stdout);

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
    CHECK(ml_token_is_set(token));
    ml_token_destroy(token);
    printf("%ld numbers in the list, each worker's exactly once\n", nodes);
    printf("token example: ok\n");
    return 0;
}
