/* The reporting, clocks and shared tasks of the task-API target programs (tasks_common.h). */
#define _GNU_SOURCE
#include "tasks_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const char *scenario_name;
int scenario_failed;
pthread_mutex_t scenario_say_lock = PTHREAD_MUTEX_INITIALIZER;

int scenarios_main(int argc, char **argv, const scenario *table, size_t n)
{
    const char *program = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (argc != 2) {
        say("usage: %s NAME\n", program);
        for (size_t i = 0; i < n; i++)
            say("  %s\n", table[i].name);
        return 2;
    }
    if (!ml_active()) {
        say("FAIL %s: memlimits does not own malloc\n", argv[1]);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, argv[1]) != 0) continue;
        scenario_name = table[i].name;
        table[i].fn();
        if (!scenario_failed) say("ok %s\n", scenario_name);
        return scenario_failed;
    }
    say("FAIL %s: no such scenario in %s\n", argv[1], program);
    return 2;
}

/* ---------------------------------------------------------------------------------------------
 * Clocks and threads. */
int gettid_(void)
{
    return (int)syscall(SYS_gettid);
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int wait_flag(const int *flag, double seconds)
{
    double end = now_s() + seconds;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE) && now_s() < end)
        sleep_ms(1);
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

long blocked_syscall(int tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    if (buf[0] < '0' || buf[0] > '9') return -1; /* "running" */
    return strtol(buf, NULL, 10);
}

int proc_syscall_unreadable;

void set_handler(int sig, void (*handler)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* Waits up to 5 s until thread `tid` is blocked in one of `calls` (-1 terminated). Where the
 * kernel does not show a thread's system call, gives it 200 ms instead. */
static int wait_blocked(int tid, const long *calls)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char probe[8];
    if (fd < 0 || read(fd, probe, sizeof probe) <= 0) {
        if (fd >= 0) close(fd);
        proc_syscall_unreadable = 1;
        sleep_ms(200);
        return 1;
    }
    close(fd);
    double end = now_s() + 5;
    while (now_s() < end) {
        long sc = blocked_syscall(tid);
        for (int i = 0; calls[i] >= 0; i++)
            if (sc == calls[i]) {
                sleep_ms(20); /* let it settle in the kernel */
                return 1;
            }
        sleep_ms(1);
    }
    return 0;
}

static const long READ_CALLS[] = {SYS_read, -1};
static const long POLL_CALLS[] = {SYS_poll, SYS_ppoll, -1};
static const long SLEEP_CALLS[] = {SYS_nanosleep, SYS_clock_nanosleep, -1};

/* ---------------------------------------------------------------------------------------------
 * Allocation in blocks. */
void blocks_free(blocks *b)
{
    for (size_t i = 0; i < b->got; i++)
        free(b->p[i]);
    b->got = 0;
}

void task_blocks(void *arg)
{
    blocks *b = arg;
    uint64_t start = ml_thread_allocated();
    b->got = 0;
    b->err = 0;
    b->after_null = 0;
    for (size_t i = 0; i < b->count; i++) {
        errno = 0;
        void *p = malloc(b->size);
        if (p == NULL) {
            b->err = errno;
            b->thread_at_null = ml_thread_allocated() - start;
            void *q = malloc(1);
            b->after_null = q != NULL;
            free(q);
            return;
        }
        b->p[b->got++] = p;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Small tasks. */
int ran;

void task_mark_ran(void *arg)
{
    (void)arg;
    ran++;
}

int first_null, first_err, interrupted_at_start;

void task_first(void *arg)
{
    (void)arg;
    interrupted_at_start = ml_is_interrupted();
    errno = 0;
    void *p = malloc(1);
    first_null = p == NULL;
    first_err = errno;
    free(p);
}

void task_spin(void *arg)
{
    spin *s = arg;
    __atomic_store_n(&s->started, 1, __ATOMIC_RELEASE);
    double end = now_s() + 20;
    for (unsigned long i = 1;; i++) {
        if (s->raise_at != 0 && i == (unsigned long)s->raise_at) {
            s->at_mark = ml_thread_allocated();
            raise(SIGUSR1);
            s->mark = 1;
        }
        if (s->seen_flag != NULL && !s->seen && __atomic_load_n(s->seen_flag, __ATOMIC_ACQUIRE)) {
            s->seen = 1;
            s->at_seen = ml_thread_allocated();
        }
        void *volatile p = malloc(64);
        if (p == NULL) {
            s->null_err = errno;
            s->iterations = i;
            if (s->mark) s->bytes_after_mark = ml_thread_allocated() - s->at_mark;
            if (s->seen) s->bytes_after_seen = ml_thread_allocated() - s->at_seen;
            return;
        }
        free(p);
        if ((i & 0xffff) == 0 && now_s() > end) {
            s->timed_out = 1;
            return;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Cleanups. */
unwindrec UR;

void cleanup_rec(void *arg)
{
    int id = (int)(intptr_t)arg;
    UR.order[UR.n++ & 7] = id;
    UR.calls[id]++;
    UR.interrupted[id] = ml_is_interrupted();
    void *p = malloc(100); /* masked: never refused */
    UR.alloc_ok[id] = p != NULL;
    free(p);
}

/* Two frames in one function: the second ML_CLEANUP_PUSH's frame shadows the first's under
 * -Wshadow (as nested pthread_cleanup_push does). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
void task_unwind(void *arg)
{
    (void)arg;
    static void *keep[64];
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)1);
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)2);
    for (int i = 0; i < 64; i++) {
        keep[i] = malloc(100);
        UR.mallocs_returned++; /* not reached by the unwinding allocation */
    }
    UR.after = keep[0] != NULL;
    ML_CLEANUP_POP(0);
    ML_CLEANUP_POP(0);
}
#pragma GCC diagnostic pop

/* ---------------------------------------------------------------------------------------------
 * The list. */
node *list_head;
size_t list_built, list_cap;
int list_err;

void task_build_list(void *arg)
{
    size_t block = *(size_t *)arg;
    for (size_t i = 0; i < list_cap; i++) {
        node *n = malloc(block);
        if (n == NULL) {
            list_err = errno;
            return;
        }
        n->next = list_head;
        list_head = n;
        list_built++;
    }
}

void list_free(void)
{
    while (list_head != NULL) {
        node *n = list_head;
        list_head = n->next;
        free(n);
    }
    list_built = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Waiters. */
static void wait_body(void *arg)
{
    waiter *w = arg;
    w->tid = gettid_();
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    char c;
    for (;;) {
        errno = 0;
        if (w->kind == BLOCK_READ) {
            w->rc = (int)read(w->fd[0], &c, 1);
        } else if (w->kind == BLOCK_POLL) {
            struct pollfd p = {w->fd[0], POLLIN, 0};
            w->rc = poll(&p, 1, -1);
        } else {
            struct timespec ts = {10, 0};
            w->rc = nanosleep(&ts, NULL);
        }
        w->err = errno;
        if (w->loop && w->rc < 0 && w->err == EINTR) {
            w->eintr++;
            continue;
        }
        break;
    }
    w->got_byte = w->kind == BLOCK_READ && w->rc == 1;
}

static void *wait_main(void *arg)
{
    waiter *w = arg;
    if (w->use_task) {
        ml_limits limits = {0, w->global, w->token, w->flags};
        w->status = ml_run(&limits, wait_body, w, NULL);
    } else {
        wait_body(w);
    }
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static const long *calls_of(int kind)
{
    return kind == BLOCK_READ ? READ_CALLS : kind == BLOCK_POLL ? POLL_CALLS : SLEEP_CALLS;
}

void waiter_start(waiter *w, pthread_t *th)
{
    if (pipe(w->fd) != 0) EXPECT(0, "pipe: %s", strerror(errno));
    pthread_create(th, NULL, wait_main, w);
    EXPECT(wait_flag(&w->started, 10), "the waiting thread did not start");
    EXPECT(wait_blocked(w->tid, calls_of(w->kind)), "thread %d never blocked (syscall %ld)", w->tid,
           blocked_syscall(w->tid));
}

void waiter_finish(waiter *w, pthread_t th)
{
    if (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE)) {
        char c = 'x';
        ssize_t n = write(w->fd[1], &c, 1);
        (void)n;
    }
    pthread_join(th, NULL);
    close(w->fd[0]);
    close(w->fd[1]);
}
