/* Target for tests/test_delivery.c: when an interrupt raised outside the allocator reaches a task.
 *  - A token set on the task's own thread (its own token, an enclosing task's token, from the
 *    task's code or from a signal handler on its thread) is delivered at the task's very next
 *    allocation: refused (ENOMEM) or unwound (ML_UNWIND).
 *  - Whatever the task did, ml_run reports a token set, or the global memory limit crossed, while
 *    the task ran: a task that sleeps or computes without allocating is not reported ML_OK, and
 *    the status does not depend on whether the task polled ml_is_interrupted().
 * See delivery_harness.h for the protocol. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tasks_common.h"

/* ---------------------------------------------------------------------------------------------
 * A task sets a token on its own thread and keeps allocating 100-byte blocks. */
#define BLOCK 100
#define MAX_KEEP 1024

typedef struct own_set {
    ml_token *token;  /* the token the task sets */
    int set_after;    /* blocks allocated before the token is set */
    int from_handler; /* set it from a SIGUSR1 handler raised on this thread */
    int poll;         /* call ml_is_interrupted() right after setting it */
    int masked;       /* set it while masked, allocate 5 blocks masked, then unmask */
    int interrupted;  /* out: ml_is_interrupted() right after the set (when poll) */
    int masked_got;   /* out: blocks allocated while masked after the set */
    int after;        /* out: blocks allocated unmasked after the set */
    int err;          /* out: errno of the first refused allocation */
    int reached;      /* out: code after the first allocation after the set ran */
    int cleanups;     /* out: the task's cleanup ran (ML_UNWIND) */
    uint64_t at_set;  /* out: ml_thread_allocated() when the token was set */
    uint64_t at_end;  /* out: ml_thread_allocated() at the refusal */
    int kept;
    void *keep[MAX_KEEP];
} own_set;

static own_set S;
static ml_token *handler_token;

static void set_from_handler(int sig)
{
    (void)sig;
    ml_token_set(handler_token);
}

static void count_cleanup(void *arg)
{
    ((own_set *)arg)->cleanups++;
}

static void keep_block(own_set *s, void *p)
{
    if (s->kept < MAX_KEEP) s->keep[s->kept++] = p;
}

static void set_token(own_set *s)
{
    s->at_set = ml_thread_allocated();
    if (s->from_handler) {
        handler_token = s->token;
        raise(SIGUSR1);
    } else {
        ml_token_set(s->token);
    }
}

static void task_own_set(void *arg)
{
    own_set *s = arg;
    ML_CLEANUP_PUSH(count_cleanup, s);
    for (int i = 0; i < s->set_after; i++) {
        void *p = malloc(BLOCK);
        if (p == NULL) break;
        keep_block(s, p);
    }
    if (s->masked) {
        ml_mask();
        set_token(s);
        for (int i = 0; i < 5; i++) {
            void *p = malloc(BLOCK);
            if (p == NULL) break;
            keep_block(s, p);
            s->masked_got++;
        }
        ml_unmask();
    } else {
        set_token(s);
    }
    if (s->poll) s->interrupted = ml_is_interrupted();
    for (int i = 0; i < 400; i++) {
        errno = 0;
        void *p = malloc(BLOCK);
        s->reached = 1; /* not reached when the allocation unwinds */
        if (p == NULL) {
            s->err = errno;
            s->at_end = ml_thread_allocated();
            break;
        }
        keep_block(s, p);
        s->after++;
    }
    ML_CLEANUP_POP(0);
}

static void own_set_free(own_set *s)
{
    for (int i = 0; i < s->kept; i++)
        free(s->keep[i]);
    s->kept = 0;
}

static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = set_from_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
}

/* Checks one run of task_own_set: the first allocation after the set was refused (ENOMEM) or
 * unwound, and nothing was counted after the set. */
static void expect_refused_at_once(const own_set *s, int unwind, const char *what)
{
    if (unwind) {
        EXPECT(!s->reached && s->after == 0 && s->cleanups == 1,
               "%s: reached %d, %d blocks after the set, cleanups %d (expected an unwind at the "
               "first allocation)",
               what, s->reached, s->after, s->cleanups);
    } else {
        EXPECT(s->after == 0 && s->err == ENOMEM,
               "%s: %d blocks of %d bytes allocated after the token was set; errno %d", what,
               s->after, BLOCK, s->err);
        EXPECT(s->at_end == s->at_set, "%s: %llu bytes counted after the set", what,
               (unsigned long long)(s->at_end - s->at_set));
    }
    if (s->poll) EXPECT(s->interrupted, "%s: ml_is_interrupted() after the set", what);
}

/* The task's own token, set from its code, after 1, 10 and 200 blocks (anywhere in the 32 KiB
 * window between two checks of the token), with and without a poll, ENOMEM and ML_UNWIND. */
static void own_token_refused_within_one_block(void)
{
    static const int points[] = {1, 10, 200};
    for (int unwind = 0; unwind <= 1; unwind++)
        for (int poll = 0; poll <= 1; poll++)
            for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
                S = (own_set){.set_after = points[i], .poll = poll};
                S.token = ml_token_create();
                ml_limits limits = {0, 0, S.token, unwind ? ML_UNWIND : 0};
                uint64_t allocated = 0;
                ml_status st = ml_run(&limits, task_own_set, &S, &allocated);
                EXPECT_STATUS(st, ML_TOKEN);
                char what[96];
                snprintf(what, sizeof what, "%s, set after %d blocks%s",
                         unwind ? "ML_UNWIND" : "ENOMEM", points[i], poll ? ", polled" : "");
                expect_refused_at_once(&S, unwind, what);
                EXPECT(allocated == (uint64_t)points[i] * BLOCK, "%s: allocated %llu", what,
                       (unsigned long long)allocated);
                own_set_free(&S);
                ml_token_destroy(S.token);
            }
}

/* An enclosing task's token, set from a nested task: the nested task's next allocation is
 * refused (or unwinds the nested task), and so is the enclosing task's next one. */
typedef struct nest {
    ml_limits inner;
    ml_status inner_status;
    int outer_after; /* blocks the outer task allocated after the inner one returned */
    int outer_err;
} nest;

static nest N;

static void task_outer(void *arg)
{
    nest *n = arg;
    n->inner_status = ml_run(&n->inner, task_own_set, &S, NULL);
    errno = 0;
    void *p = malloc(BLOCK);
    if (p == NULL) {
        n->outer_err = errno;
        return;
    }
    n->outer_after++;
    free(p);
}

static void enclosing_token_refused_within_one_block(void)
{
    for (int unwind = 0; unwind <= 1; unwind++)
        for (int poll = 0; poll <= 1; poll++) {
            S = (own_set){.set_after = 10, .poll = poll};
            S.token = ml_token_create();
            /* The inner task has a generous allocation limit of its own and no token. */
            N = (nest){.inner = {1 * MIB, 0, NULL, unwind ? ML_UNWIND : 0}};
            ml_limits outer = {0, 0, S.token, 0};
            ml_status st = ml_run(&outer, task_outer, &N, NULL);
            char what[96];
            snprintf(what, sizeof what, "enclosing token, inner %s%s",
                     unwind ? "ML_UNWIND" : "ENOMEM", poll ? ", polled" : "");
            EXPECT_STATUS(N.inner_status, ML_OUTER_LIMIT); /* not its own token */
            expect_refused_at_once(&S, unwind, what);
            EXPECT(N.outer_after == 0 && N.outer_err == ENOMEM,
                   "%s: the enclosing task allocated %d blocks after; errno %d", what,
                   N.outer_after, N.outer_err);
            EXPECT_STATUS(st, ML_TOKEN);
            own_set_free(&S);
            ml_token_destroy(S.token);
        }
}

/* ml_token_set from a signal handler that runs on the task's own thread (raise): the task's next
 * allocation after the handler returns is refused. */
static void own_token_from_signal_handler_refused_within_one_block(void)
{
    install_handler();
    for (int unwind = 0; unwind <= 1; unwind++) {
        S = (own_set){.set_after = 10, .from_handler = 1};
        S.token = ml_token_create();
        ml_limits limits = {0, 0, S.token, unwind ? ML_UNWIND : 0};
        ml_status st = ml_run(&limits, task_own_set, &S, NULL);
        EXPECT_STATUS(st, ML_TOKEN);
        expect_refused_at_once(&S, unwind, unwind ? "handler, ML_UNWIND" : "handler, ENOMEM");
        own_set_free(&S);
        ml_token_destroy(S.token);
    }
}

/* Set while masked: masked allocations go ahead, and the first one after the outermost unmask is
 * refused. */
static void own_token_set_masked_refused_after_unmask(void)
{
    S = (own_set){.set_after = 10, .masked = 1};
    S.token = ml_token_create();
    ml_status st = ml_limit_with_token(S.token, task_own_set, &S);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(S.masked_got == 5, "%d of 5 masked blocks allocated", S.masked_got);
    EXPECT(S.after == 0 && S.err == ENOMEM, "%d blocks allocated after the unmask; errno %d",
           S.after, S.err);
    own_set_free(&S);
    ml_token_destroy(S.token);
}

/* ---------------------------------------------------------------------------------------------
 * ml_run reports what happened while the task ran, even if the task never allocated after it. */
typedef struct quiet {
    int started;  /* the task is running */
    int happened; /* the other thread set the token / crossed the limit */
    int finished; /* the task returned (the other thread may undo what it did) */
    int poll;     /* the task calls ml_is_interrupted() before returning */
    int polled;   /* out: what it returned */
    ml_token *token;
    void *block;
} quiet;

static quiet Q;

/* Sleeps until the other thread has acted, without allocating. */
static void task_sleeps(void *arg)
{
    quiet *q = arg;
    raise_flag(&q->started);
    wait_flag(&q->happened, 10);
    if (q->poll) q->polled = ml_is_interrupted();
}

static void *token_setter(void *arg)
{
    quiet *q = arg;
    wait_flag(&q->started, 10);
    ml_token_set(q->token);
    raise_flag(&q->happened);
    return NULL;
}

/* A task without ML_WAKE sleeps while another thread sets its token: ML_TOKEN, polled or not. */
static void token_set_while_task_sleeps_is_reported(void)
{
    for (int poll = 0; poll <= 1; poll++) {
        Q = (quiet){.poll = poll, .token = ml_token_create()};
        pthread_t th;
        pthread_create(&th, NULL, token_setter, &Q);
        ml_status st = ml_limit_with_token(Q.token, task_sleeps, &Q);
        pthread_join(th, NULL);
        EXPECT(Q.happened, "the token was not set within 10 s");
        EXPECT(st == ML_TOKEN, "%s: status %d (%s), expected ML_TOKEN",
               poll ? "polled" : "not polled", (int)st, ml_strstatus(st));
        if (poll) EXPECT(Q.polled, "ml_is_interrupted() after the token was set");
        ml_token_destroy(Q.token);
    }
}

/* Computes until the other thread has acted, without allocating or blocking. */
static void task_computes(void *arg)
{
    quiet *q = arg;
    raise_flag(&q->started);
    volatile uint64_t x = 1;
    double end = now_s() + 10;
    while (!__atomic_load_n(&q->happened, __ATOMIC_ACQUIRE) && now_s() < end)
        for (int i = 0; i < 1000; i++)
            x = x * 6364136223846793005u + 1442695040888963407u;
    if (q->poll) q->polled = ml_is_interrupted();
}

/* Crosses the global memory limit with one block, and keeps it until the task has returned:
 * afterwards it makes no allocation that could notice the crossing on the task's behalf. */
static void *limit_crosser(void *arg)
{
    quiet *q = arg;
    wait_flag(&q->started, 10);
    q->block = malloc(32 * MIB);
    raise_flag(&q->happened);
    wait_flag(&q->finished, 10);
    return NULL;
}

/* A global-memory task computes while another thread takes the live heap over the limit:
 * ML_MEMORY_LIMIT, polled or not. */
static void global_limit_crossed_while_task_computes_is_reported(void)
{
    for (int poll = 0; poll <= 1; poll++) {
        Q = (quiet){.poll = poll};
        ml_set_global_memory_limit(ml_heap_live() + 8 * MIB);
        pthread_t th;
        pthread_create(&th, NULL, limit_crosser, &Q);
        ml_status st = ml_limit_global_memory(task_computes, &Q);
        raise_flag(&Q.finished);
        pthread_join(th, NULL);
        EXPECT(Q.block != NULL && Q.happened, "the other thread did not allocate 32 MiB");
        EXPECT(st == ML_MEMORY_LIMIT, "%s: status %d (%s), expected ML_MEMORY_LIMIT",
               poll ? "polled" : "not polled", (int)st, ml_strstatus(st));
        if (poll) EXPECT(Q.polled, "ml_is_interrupted() after the crossing");
        free(Q.block);
        ml_set_global_memory_limit(ML_UNLIMITED);
    }
}

/* Waits for the crossing, polls, then allocates: once ml_is_interrupted() has said 1, the next
 * allocation is refused, as after a token set on the task's thread. */
static int poll_then_after, poll_then_err;

static void task_polls_then_allocates(void *arg)
{
    quiet *q = arg;
    free(malloc(BLOCK)); /* the task's first allocation is an event anyway: spend it */
    raise_flag(&q->started);
    wait_flag(&q->happened, 10);
    q->polled = ml_is_interrupted();
    for (int i = 0; i < 400; i++) {
        errno = 0;
        void *p = malloc(BLOCK);
        if (p == NULL) {
            poll_then_err = errno;
            return;
        }
        poll_then_after++;
        free(p);
    }
}

static void global_limit_seen_by_poll_refused_at_next_allocation(void)
{
    Q = (quiet){0};
    ml_set_global_memory_limit(ml_heap_live() + 8 * MIB);
    pthread_t th;
    pthread_create(&th, NULL, limit_crosser, &Q);
    ml_status st = ml_limit_global_memory(task_polls_then_allocates, &Q);
    raise_flag(&Q.finished);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(Q.polled, "ml_is_interrupted() after the crossing");
    EXPECT(poll_then_after == 0 && poll_then_err == ENOMEM,
           "%d blocks allocated after ml_is_interrupted() returned 1; errno %d", poll_then_after,
           poll_then_err);
    free(Q.block);
    ml_set_global_memory_limit(ML_UNLIMITED);
}

static const scenario scenarios[] = {
    SCENARIO(own_token_refused_within_one_block),
    SCENARIO(enclosing_token_refused_within_one_block),
    SCENARIO(own_token_from_signal_handler_refused_within_one_block),
    SCENARIO(own_token_set_masked_refused_after_unmask),
    SCENARIO(token_set_while_task_sleeps_is_reported),
    SCENARIO(global_limit_crossed_while_task_computes_is_reported),
    SCENARIO(global_limit_seen_by_poll_refused_at_next_allocation),
};

int main(int argc, char **argv)
{
    return scenarios_main(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
