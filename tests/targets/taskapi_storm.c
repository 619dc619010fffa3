/* Target for tests/test_taskapi.c: storms of token sets racing condition waits and descriptor
 * polls. Each round, a waiting thread enters its wait while another sets the token after a
 * random spin (sometimes before the wait starts, sometimes while it is being entered, sometimes
 * once it is blocked), in several ways (from another thread, from a signal handler on the
 * waiter, with spurious broadcasts and an enclosing task, ML_UNWIND). A wait that has not ended
 * 10 s after its set is a lost wake-up: the scenario fails at once. No timing is asserted
 * otherwise (latency is measured in bench/taskwait.c). Linked with -lmemlimits, built with
 * -fno-builtin; `taskapi_storm NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "tasks_common.h"

#define ROUNDS 3000

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Spins for `n` iterations (0 .. a few tens of microseconds). */
static void spin_for(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++) {
    }
}

/* Waits up to 10 s for `sem`; 0 when it did not come. */
static int sem_wait_10s(sem_t *sem)
{
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += 10;
    while (sem_timedwait(sem, &at) != 0)
        if (errno != EINTR) return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Condition waits. */
enum { V_PLAIN, V_HANDLER, V_NOISE, V_UNWIND, V_NESTED, V_TIMED, VARIANTS };
static const char *const variant_names[] = {"plain",  "handler", "noise",
                                            "unwind", "nested",  "timed"};

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int predicate;   /* never true, except to rescue a lost waiter */
    ml_token *token; /* this round's */
    int variant;
    sem_t start, done;
    int quit;
    /* results of the round */
    int rc, after_wait, cleanup_runs;
    ml_status status, inner_status;
} cw;

static void cw_unlock(void *arg)
{
    (void)arg;
    cw.cleanup_runs++;
    pthread_mutex_unlock(&cw.mutex);
}

static void cw_body(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cw.mutex);
    ML_CLEANUP_PUSH(cw_unlock, NULL);
    while (!cw.predicate) {
        if (cw.variant == V_TIMED) {
            struct timespec at;
            clock_gettime(CLOCK_REALTIME, &at);
            at.tv_sec += 60;
            cw.rc = ml_cond_timedwait(&cw.cond, &cw.mutex, &at);
        } else {
            cw.rc = ml_cond_wait(&cw.cond, &cw.mutex);
        }
        if (cw.rc != 0) break;
    }
    cw.after_wait = 1;
    ML_CLEANUP_POP(1);
}

static void cw_nested(void *arg)
{
    ml_limits inner = {64 * MIB, 0, NULL, 0};
    cw.inner_status = ml_run(&inner, cw_body, arg, NULL);
}

static void *cw_waiter(void *arg)
{
    (void)arg;
    for (;;) {
        sem_wait(&cw.start);
        if (cw.quit) return NULL;
        ml_limits limits = {0, 0, cw.token, cw.variant == V_UNWIND ? ML_UNWIND : 0};
        cw.status = ml_run(&limits, cw.variant == V_NESTED ? cw_nested : cw_body, NULL, NULL);
        sem_post(&cw.done);
    }
}

static void cw_set_in_handler(int sig)
{
    (void)sig;
    ml_token_set(cw.token);
}

static int noise_stop;

static void *cw_noise(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&noise_stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&cw.variant, __ATOMIC_RELAXED) != V_NOISE) {
            sleep_ms(1);
            continue;
        }
        pthread_cond_broadcast(&cw.cond); /* spurious wake-ups for the waiter */
        sched_yield();
    }
    return NULL;
}

static void cond_wait_storm_no_lost_wakeup(void)
{
    pthread_mutex_init(&cw.mutex, NULL);
    pthread_cond_init(&cw.cond, NULL);
    sem_init(&cw.start, 0, 0);
    sem_init(&cw.done, 0, 0);
    set_handler(SIGUSR1, cw_set_in_handler, SA_RESTART);
    pthread_t waiter_thread, noise;
    pthread_create(&waiter_thread, NULL, cw_waiter, NULL);
    noise_stop = 0;
    pthread_create(&noise, NULL, cw_noise, NULL);
    int per_variant[VARIANTS] = {0};
    for (int round = 0; round < ROUNDS; round++) {
        cw.variant = (int)(next_rand() % VARIANTS);
        cw.token = ml_token_create();
        cw.rc = -1;
        cw.after_wait = cw.cleanup_runs = 0;
        cw.status = cw.inner_status = (ml_status)-100;
        sem_post(&cw.start);
        /* the set: at once, after a short spin, or after the waiter has had time to block */
        unsigned r = (unsigned)(next_rand() % 8);
        if (r < 3)
            spin_for((unsigned)(next_rand() % 20000));
        else if (r == 3)
            sleep_ms(1);
        if (cw.variant == V_HANDLER)
            pthread_kill(waiter_thread, SIGUSR1);
        else
            ml_token_set(cw.token);
        if (!sem_wait_10s(&cw.done)) {
            EXPECT(0, "round %d (%s): lost wake-up, the waiter still waits 10 s after the set",
                   round, variant_names[cw.variant]);
            pthread_mutex_lock(&cw.mutex);
            cw.predicate = 1;
            pthread_cond_broadcast(&cw.cond);
            pthread_mutex_unlock(&cw.mutex);
            sem_wait(&cw.done);
            break;
        }
        per_variant[cw.variant]++;
        int unwound = cw.variant == V_UNWIND;
        EXPECT(cw.status == ML_TOKEN, "round %d (%s): status %d", round, variant_names[cw.variant],
               (int)cw.status);
        EXPECT(unwound ? !cw.after_wait : (cw.rc == ECANCELED && cw.after_wait),
               "round %d (%s): rc %d, after the wait %d", round, variant_names[cw.variant], cw.rc,
               cw.after_wait);
        EXPECT(cw.cleanup_runs == 1, "round %d (%s): the unlock ran %d times", round,
               variant_names[cw.variant], cw.cleanup_runs);
        if (cw.variant == V_NESTED)
            EXPECT(cw.inner_status == ML_OUTER_LIMIT, "round %d: inner status %d", round,
                   (int)cw.inner_status);
        ml_token_destroy(cw.token);
        if (scenario_failed) break;
    }
    __atomic_store_n(&noise_stop, 1, __ATOMIC_RELEASE);
    pthread_join(noise, NULL);
    cw.quit = 1;
    sem_post(&cw.start);
    pthread_join(waiter_thread, NULL);
    say("info rounds plain %d handler %d noise %d unwind %d nested %d timed %d\n", per_variant[0],
        per_variant[1], per_variant[2], per_variant[3], per_variant[4], per_variant[5]);
    signal(SIGUSR1, SIG_DFL);
}

/* ---------------------------------------------------------------------------------------------
 * Token descriptors: a poller waits in poll or epoll_wait on the token's descriptor, asked for
 * by itself (racing the set) or beforehand. */
enum { F_POLL, F_EPOLL, F_HANDLER, F_LATE_FD, FD_VARIANTS };
static const char *const fd_variant_names[] = {"poll", "epoll", "handler", "late fd"};

static struct {
    ml_token *token;
    int fd; /* asked for by the main thread, or -1: by the poller */
    int variant;
    sem_t start, done;
    int quit;
    int woke, err;
} fw;

static void fw_set_in_handler(int sig)
{
    (void)sig;
    ml_token_set(fw.token);
}

static void *fw_poller(void *arg)
{
    (void)arg;
    for (;;) {
        sem_wait(&fw.start);
        if (fw.quit) return NULL;
        int fd = fw.fd >= 0 ? fw.fd : ml_token_fd(fw.token);
        fw.woke = 0;
        fw.err = fd < 0 ? errno : 0;
        if (fd >= 0 && fw.variant == F_EPOLL) {
            int ep = epoll_create1(EPOLL_CLOEXEC);
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, out;
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            int n;
            while ((n = epoll_wait(ep, &out, 1, 20000)) < 0 && errno == EINTR) {
            }
            fw.woke = n == 1;
            close(ep);
        } else if (fd >= 0) {
            struct pollfd p = {fd, POLLIN, 0};
            int n;
            while ((n = poll(&p, 1, 20000)) < 0 && errno == EINTR) {
            }
            fw.woke = n == 1 && (p.revents & POLLIN);
        }
        sem_post(&fw.done);
    }
}

static void token_fd_storm_no_lost_wakeup(void)
{
    sem_init(&fw.start, 0, 0);
    sem_init(&fw.done, 0, 0);
    set_handler(SIGUSR1, fw_set_in_handler, SA_RESTART);
    pthread_t poller;
    pthread_create(&poller, NULL, fw_poller, NULL);
    int per_variant[FD_VARIANTS] = {0};
    for (int round = 0; round < ROUNDS; round++) {
        fw.variant = (int)(next_rand() % FD_VARIANTS);
        fw.token = ml_token_create();
        fw.fd = fw.variant == F_LATE_FD ? -1 : ml_token_fd(fw.token);
        sem_post(&fw.start);
        if (next_rand() % 2) spin_for((unsigned)(next_rand() % 20000));
        if (fw.variant == F_HANDLER)
            pthread_kill(poller, SIGUSR1);
        else
            ml_token_set(fw.token);
        if (!sem_wait_10s(&fw.done)) {
            EXPECT(0, "round %d (%s): the poller still waits 10 s after the set", round,
                   fd_variant_names[fw.variant]);
            break;
        }
        per_variant[fw.variant]++;
        EXPECT(fw.woke && fw.err == 0, "round %d (%s): woke %d errno %d", round,
               fd_variant_names[fw.variant], fw.woke, fw.err);
        ml_token_destroy(fw.token);
        if (scenario_failed) break;
    }
    fw.quit = 1;
    sem_post(&fw.start);
    pthread_join(poller, NULL);
    say("info rounds poll %d epoll %d handler %d late_fd %d\n", per_variant[0], per_variant[1],
        per_variant[2], per_variant[3]);
    signal(SIGUSR1, SIG_DFL);
}

/* The descriptor created exactly while the token is being set, on two threads released
 * together: whichever comes first, the descriptor ends up readable. */
static struct {
    ml_token *token;
    pthread_barrier_t go, done;
    int fd, quit;
    unsigned delay;
} fc;

static void *fc_creator(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&fc.go);
        if (fc.quit) return NULL;
        spin_for(fc.delay);
        fc.fd = ml_token_fd(fc.token);
        pthread_barrier_wait(&fc.done);
    }
}

static void token_fd_created_while_set(void)
{
    pthread_barrier_init(&fc.go, NULL, 2);
    pthread_barrier_init(&fc.done, NULL, 2);
    pthread_t creator;
    pthread_create(&creator, NULL, fc_creator, NULL);
    int missed = 0;
    for (int round = 0; round < 5 * ROUNDS; round++) {
        fc.token = ml_token_create();
        fc.delay = (unsigned)(next_rand() % 400);
        unsigned mine = (unsigned)(next_rand() % 400);
        pthread_barrier_wait(&fc.go);
        spin_for(mine);
        ml_token_set(fc.token);
        pthread_barrier_wait(&fc.done);
        struct pollfd p = {fc.fd, POLLIN, 0};
        if (fc.fd < 0 || poll(&p, 1, 0) != 1) missed++;
        ml_token_destroy(fc.token);
    }
    fc.quit = 1;
    pthread_barrier_wait(&fc.go);
    pthread_join(creator, NULL);
    EXPECT(missed == 0, "%d of %d descriptors were not readable after the set", missed, 5 * ROUNDS);
}

static const scenario scenarios[] = {
    SCENARIO(cond_wait_storm_no_lost_wakeup),
    SCENARIO(token_fd_storm_no_lost_wakeup),
    SCENARIO(token_fd_created_while_set),
};

SCENARIOS_MAIN(scenarios)
