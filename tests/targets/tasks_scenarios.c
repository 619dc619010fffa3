/* Target for tests/test_tasks.c: the task API of memlimits.h checked from inside a program linked
 * with -lmemlimits (so the library owns malloc without LD_PRELOAD). `tasks_scenarios NAME` runs
 * one scenario and prints "ok NAME", or "FAIL NAME: line N: why" lines and exits 1. Lines starting
 * with "info " carry measurements. Reporting goes through write(2) from a stack buffer: it never
 * allocates, so it may be used inside tasks.
 *
 * Built with -fno-builtin: the compiler must not elide or fold malloc/free pairs or strdup. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

#include "memlimits.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

static const char *current;
static int failed;
static pthread_mutex_t say_lock = PTHREAD_MUTEX_INITIALIZER;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            pthread_mutex_lock(&say_lock);                                                         \
            say("FAIL %s: line %d: %s: ", current, __LINE__, #cond);                               \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
            failed = 1;                                                                            \
            pthread_mutex_unlock(&say_lock);                                                       \
        }                                                                                          \
    } while (0)

#define EXPECT_STATUS(got, want)                                                                   \
    EXPECT((got) == (want), "status %d (%s), expected %d (%s)", (int)(got), ml_strstatus(got),     \
           (int)(want), ml_strstatus(want))

#define EXPECT_U64(got, want)                                                                      \
    EXPECT((uint64_t)(got) == (uint64_t)(want), "%s = %llu, expected %llu", #got,                  \
           (unsigned long long)(got), (unsigned long long)(want))

static int gettid_(void)
{
    return (int)syscall(SYS_gettid);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits up to `seconds` for *flag to become nonzero; returns its value. */
static int wait_flag(const int *flag, double seconds)
{
    double end = now_s() + seconds;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE) && now_s() < end)
        sleep_ms(1);
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

/* The system call thread `tid` of this process is blocked in (the first field of
 * /proc/self/task/TID/syscall), or -1 when it is running or cannot be read. */
static long blocked_syscall(int tid)
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

/* Waits up to 5 s until thread `tid` is blocked in one of `calls` (-1 terminated). Where the
 * kernel does not show a thread's system call, gives it 200 ms instead. */
static int proc_syscall_unreadable;

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
 * Allocation in blocks: the workhorse of the allocation-limit scenarios. */
#define MAX_BLOCKS 4096

typedef struct blocks {
    size_t size, count;      /* in: allocate `count` blocks of `size` bytes */
    size_t got;              /* out: blocks allocated before the first NULL */
    int err;                 /* out: errno of the first NULL (0: none) */
    int after_null;          /* out: a malloc(1) after the first NULL succeeded */
    uint64_t thread_at_null; /* out: ml_thread_allocated() - at start, at the first NULL */
    void *p[MAX_BLOCKS];
} blocks;

static void blocks_free(blocks *b)
{
    for (size_t i = 0; i < b->got; i++)
        free(b->p[i]);
    b->got = 0;
}

static void task_blocks(void *arg)
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

static blocks B1, B2;

/* A task allocating exactly L bytes under limit L returns ML_OK and reports L. */
static void allocation_limit_exact(void)
{
    uint64_t allocated = 0;
    B1 = (blocks){.size = 100, .count = 100};
    ml_status st = ml_limit_allocations(10000, task_blocks, &B1, &allocated);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(allocated, 10000);
    EXPECT_U64(B1.got, 100);
    EXPECT(B1.err == 0, "a NULL with errno %d", B1.err);
    blocks_free(&B1);

    /* The same through ml_run, and the next allocation after L is the one refused. */
    ml_limits limits = {10000, 0, NULL, 0};
    B1 = (blocks){.size = 100, .count = 101};
    st = ml_run(&limits, task_blocks, &B1, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, 10000);
    EXPECT_U64(B1.got, 100);
    blocks_free(&B1);
}

/* Under L-1 the crossing allocation is the refused one: NULL + ENOMEM, count of the bytes
 * before it; every later allocation is refused too. */
static void allocation_limit_crossing_is_refused(void)
{
    uint64_t allocated = 0;
    B1 = (blocks){.size = 100, .count = 100};
    ml_status st = ml_limit_allocations(9999, task_blocks, &B1, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(B1.got, 99);
    EXPECT(B1.err == ENOMEM, "errno %d, expected ENOMEM", B1.err);
    EXPECT_U64(allocated, 9900);
    EXPECT_U64(B1.thread_at_null, 9900);
    EXPECT(!B1.after_null, "an allocation after the refused one succeeded");
    blocks_free(&B1);

    /* One byte of limit: the first 100-byte block is refused, nothing counted. */
    B1 = (blocks){.size = 100, .count = 10};
    st = ml_limit_allocations(1, task_blocks, &B1, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(B1.got, 0);
    EXPECT_U64(allocated, 0);
    blocks_free(&B1);
}

/* calloc counts count*size, realloc the new size; a refused realloc keeps the block. */
typedef struct mixed {
    int step; /* out: the step that got NULL, 0: none */
    int err;
    int kept; /* the block a refused realloc was given still holds its bytes */
} mixed;

static void task_mixed(void *arg)
{
    mixed *m = arg;
    m->step = 0;
    char *p = malloc(100);
    if (p == NULL) {
        m->step = 1;
        m->err = errno;
        return;
    }
    memset(p, 'x', 100);
    char *q = calloc(3, 100);
    if (q == NULL) {
        m->step = 2;
        m->err = errno;
        free(p);
        return;
    }
    char *r = realloc(p, 500);
    if (r == NULL) {
        m->step = 3;
        m->err = errno;
        m->kept = p[0] == 'x' && p[99] == 'x';
        free(p);
        free(q);
        return;
    }
    free(r);
    free(q);
}

static void allocation_limit_counts_calloc_and_realloc(void)
{
    static mixed m;
    uint64_t allocated = 0;
    m = (mixed){0};
    ml_status st = ml_limit_allocations(900, task_mixed, &m, &allocated);
    EXPECT_STATUS(st, ML_OK);
    EXPECT(m.step == 0, "step %d refused", m.step);
    EXPECT_U64(allocated, 900);

    m = (mixed){0};
    st = ml_limit_allocations(899, task_mixed, &m, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(m.step == 3 && m.err == ENOMEM, "step %d errno %d: expected realloc refused", m.step,
           m.err);
    EXPECT(m.kept, "the block of a refused realloc lost its bytes");
    EXPECT_U64(allocated, 400);

    m = (mixed){0};
    st = ml_limit_allocations(399, task_mixed, &m, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(m.step == 2 && m.err == ENOMEM, "step %d errno %d: expected calloc refused", m.step,
           m.err);
    EXPECT_U64(allocated, 100);
}

/* A zero-byte request counts as one byte (memlimits.h, ml_thread_allocated). */
static int zero_first, zero_second, zero_err;

static void task_zero(void *arg)
{
    (void)arg;
    void *a = malloc(0);
    zero_first = a != NULL;
    errno = 0;
    void *b = malloc(0);
    zero_second = b != NULL;
    zero_err = errno;
    free(b);
    free(a);
}

/* A zero-byte request counts 0 bytes: two of them fit under a 1-byte limit. */
static void allocation_limit_zero_byte_counts_zero(void)
{
    uint64_t before = ml_thread_allocated();
    void *p = malloc(0);
    uint64_t delta = ml_thread_allocated() - before;
    free(p);
    EXPECT_U64(delta, 0);
    uint64_t allocated = 0;
    ml_status st = ml_limit_allocations(1, task_zero, NULL, &allocated);
    EXPECT(zero_first, "the first malloc(0) under a 1-byte limit was refused");
    EXPECT(zero_second && zero_err == 0, "the second malloc(0) under a 1-byte limit was refused");
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(allocated, 0);
}

/* Nested: an inner limit larger than the outer's remaining budget does not extend it. */
typedef struct nest {
    uint64_t inner_limit;
    size_t outer_before, outer_after; /* 100-byte blocks the outer allocates around the inner */
    size_t inner_count;
    ml_status inner_status;
    uint64_t inner_allocated;
    blocks *inner, *after;
    int inner_err;
} nest;

static void task_outer(void *arg)
{
    nest *n = arg;
    blocks *before = &B1;
    *before = (blocks){.size = 100, .count = n->outer_before};
    task_blocks(before);
    *n->inner = (blocks){.size = 100, .count = n->inner_count};
    n->inner_status =
        ml_limit_allocations(n->inner_limit, task_blocks, n->inner, &n->inner_allocated);
    *n->after = (blocks){.size = 100, .count = n->outer_after};
    task_blocks(n->after);
}

static void nested_inner_limit_does_not_extend_outer(void)
{
    static nest n;
    static blocks after;
    uint64_t allocated = 0;
    n = (nest){.inner_limit = 1000000,
               .outer_before = 50,
               .inner_count = 1000,
               .outer_after = 1,
               .inner = &B2,
               .after = &after};
    ml_status st = ml_limit_allocations(10000, task_outer, &n, &allocated);
    EXPECT_STATUS(n.inner_status, ML_ALLOCATION_LIMIT);
    EXPECT_U64(B1.got, 50);
    EXPECT_U64(B2.got, 50); /* the 51st inner block crosses the outer limit */
    EXPECT(B2.err == ENOMEM, "inner errno %d", B2.err);
    EXPECT_U64(n.inner_allocated, 5000);
    EXPECT_U64(after.got, 0); /* the outer is interrupted too */
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, 10000);
    blocks_free(&B1);
    blocks_free(&B2);
    blocks_free(&after);
}

/* Allocations in an inner task count against the outer limit. */
static void nested_allocations_count_against_every_limit(void)
{
    static nest n;
    static blocks after;
    uint64_t allocated = 0;
    /* outer 10000: 10 blocks, inner (limit 8000) 60 blocks, then 30 more fit and the 31st not */
    n = (nest){.inner_limit = 8000,
               .outer_before = 10,
               .inner_count = 60,
               .outer_after = 31,
               .inner = &B2,
               .after = &after};
    ml_status st = ml_limit_allocations(10000, task_outer, &n, &allocated);
    EXPECT_STATUS(n.inner_status, ML_OK);
    EXPECT_U64(n.inner_allocated, 6000);
    EXPECT_U64(B2.got, 60);
    EXPECT_U64(after.got, 30);
    EXPECT(after.err == ENOMEM, "errno %d", after.err);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, 10000);
    blocks_free(&B1);
    blocks_free(&B2);
    blocks_free(&after);

    /* The inner's own limit fires: only the inner is interrupted; the outer goes on. */
    n = (nest){.inner_limit = 2000,
               .outer_before = 10,
               .inner_count = 60,
               .outer_after = 20,
               .inner = &B2,
               .after = &after};
    st = ml_limit_allocations(10000, task_outer, &n, &allocated);
    EXPECT_STATUS(n.inner_status, ML_ALLOCATION_LIMIT);
    EXPECT_U64(B2.got, 20);
    EXPECT_U64(n.inner_allocated, 2000);
    EXPECT_U64(after.got, 20);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(allocated, 5000);
    blocks_free(&B1);
    blocks_free(&B2);
    blocks_free(&after);
}

/* An interrupt of an enclosing task (its token, set by another thread) interrupts the nested one.
 */
static ml_token *nest_token;
static int nest_inner_started, nest_inner_null_err, nest_inner_interrupted;
static ml_status nest_inner_status;
static int nest_outer_after_null;

static void task_nested_spin(void *arg)
{
    (void)arg;
    __atomic_store_n(&nest_inner_started, 1, __ATOMIC_RELEASE);
    double end = now_s() + 20;
    for (unsigned long i = 0;; i++) {
        void *volatile p = malloc(64);
        if (p == NULL) {
            nest_inner_null_err = errno;
            nest_inner_interrupted = ml_is_interrupted(); /* the enclosing task's interrupt */
            return;
        }
        free(p);
        if ((i & 0xffff) == 0 && now_s() > end) return; /* never interrupted: fail below */
    }
}

static void task_nested_outer(void *arg)
{
    (void)arg;
    ml_limits inner = {ML_UNLIMITED - 1, 0, NULL, 0};
    nest_inner_status = ml_run(&inner, task_nested_spin, NULL, NULL);
    void *p = malloc(16);
    nest_outer_after_null = p == NULL;
    free(p);
}

static void *set_when_started(void *arg)
{
    int *flag = arg;
    wait_flag(flag, 10);
    sleep_ms(20);
    ml_token_set(nest_token);
    return NULL;
}

static void nested_enclosing_interrupt_interrupts_inner(void)
{
    nest_token = ml_token_create();
    EXPECT(nest_token != NULL, "ml_token_create failed");
    pthread_t th;
    pthread_create(&th, NULL, set_when_started, &nest_inner_started);
    ml_status st = ml_limit_with_token(nest_token, task_nested_outer, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(nest_inner_status, ML_TOKEN);
    EXPECT(nest_inner_null_err == ENOMEM, "inner errno %d", nest_inner_null_err);
    EXPECT(nest_inner_interrupted, "ml_is_interrupted() in the inner task was 0");
    EXPECT(nest_outer_after_null, "the outer task's allocation succeeded after the interrupt");
    EXPECT_STATUS(st, ML_TOKEN);
    ml_token_destroy(nest_token);
}

/* ---------------------------------------------------------------------------------------------
 * Masking. */
typedef struct maskrec {
    int past_limit_ok, interrupted_masked, nested_ok, check_returned, after_outer_null, err;
    int after_check;
    int unmask_extra_ok;
    int unmask_returned;
} maskrec;

static maskrec MR;

static void task_mask(void *arg)
{
    int use_check = *(int *)arg;
    void *a = malloc(1000); /* exactly the limit */
    ml_mask();
    ml_mask();
    void *b = malloc(5000); /* past the limit, masked */
    MR.past_limit_ok = b != NULL;
    MR.interrupted_masked = ml_is_interrupted();
    ml_check(); /* nothing delivered while masked */
    MR.check_returned = 1;
    ml_unmask(); /* still masked once */
    void *c = malloc(100);
    MR.nested_ok = c != NULL;
    ml_check();
    ml_unmask(); /* outermost: the next allocation or ml_check delivers */
    MR.unmask_returned = 1;
    free(c);
    free(b);
    free(a);
    if (use_check) {
        ml_check();
        MR.after_check = 1; /* must not run */
        return;
    }
    errno = 0;
    void *d = malloc(1);
    MR.after_outer_null = d == NULL;
    MR.err = errno;
    free(d);
}

static void mask_nests_and_defers_delivery(void)
{
    int use_check = 0;
    uint64_t allocated = 0;
    MR = (maskrec){0};
    ml_status st = ml_limit_allocations(1000, task_mask, &use_check, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(MR.past_limit_ok, "a masked allocation past the limit was refused");
    EXPECT(MR.interrupted_masked, "ml_is_interrupted() was 0 after crossing the limit masked");
    EXPECT(MR.check_returned, "ml_check unwound while masked");
    EXPECT(MR.nested_ok, "an allocation at mask depth 1 was refused");
    EXPECT(MR.after_outer_null && MR.err == ENOMEM,
           "after the outermost ml_unmask: NULL %d errno %d", MR.after_outer_null, MR.err);
    /* masked allocations count; the refused one does not */
    EXPECT_U64(allocated, 6100);

    use_check = 1;
    MR = (maskrec){0};
    st = ml_limit_allocations(1000, task_mask, &use_check, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(MR.check_returned && MR.nested_ok, "delivered while masked");
    EXPECT(!MR.after_check, "ml_check after the outermost ml_unmask did not unwind");

    /* In ML_UNWIND mode the first allocation after the outermost ml_unmask unwinds. */
    use_check = 0;
    MR = (maskrec){0};
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    st = ml_run(&limits, task_mask, &use_check, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(MR.past_limit_ok && MR.check_returned && MR.nested_ok, "delivered while masked");
    EXPECT(MR.unmask_returned, "ml_unmask delivered by itself (unwound)");
    EXPECT(!MR.after_outer_null && MR.err == 0, "the allocation after ml_unmask returned");
}

/* ml_unmask without ml_mask has no effect: one ml_mask after it still masks. */
static void task_unmask_extra(void *arg)
{
    (void)arg;
    ml_unmask();
    ml_unmask();
    ml_mask();
    void *p = malloc(5000);
    MR.unmask_extra_ok = p != NULL;
    ml_unmask();
    free(p);
}

static void mask_unmask_without_mask_is_no_op(void)
{
    MR = (maskrec){0};
    ml_status st = ml_limit_allocations(1000, task_unmask_extra, NULL, NULL);
    EXPECT(MR.unmask_extra_ok, "a masked allocation was refused after stray ml_unmask calls");
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    /* outside tasks: no effect either */
    ml_unmask();
    ml_mask();
    ml_unmask();
    void *p = malloc(100);
    EXPECT(p != NULL, "malloc outside tasks failed");
    free(p);
    EXPECT(ml_is_interrupted() == 0, "ml_is_interrupted() outside tasks");
    ml_check(); /* no effect outside tasks */
}

/* ---------------------------------------------------------------------------------------------
 * ML_UNWIND and cleanups. */
typedef struct unwindrec {
    int order[8];
    int n;
    int calls[4];
    int interrupted[4];
    int alloc_ok[4];
    size_t mallocs_returned;
    int after;
    int strdup_null, strdup_err, asprintf_rc, asprintf_err, fopen_null, fopen_err;
    int pop0_ran;
} unwindrec;

static unwindrec UR;

static void cleanup_rec(void *arg)
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
static void task_unwind(void *arg)
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

static void unwind_runs_cleanups_innermost_first_once(void)
{
    UR = (unwindrec){0};
    uint64_t allocated = 0;
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_unwind, NULL, &allocated);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(UR.mallocs_returned, 10);
    EXPECT(!UR.after, "code after the unwinding malloc ran");
    EXPECT(UR.n == 2 && UR.order[0] == 2 && UR.order[1] == 1, "cleanups ran %d times, order %d %d",
           UR.n, UR.order[0], UR.order[1]);
    EXPECT(UR.calls[1] == 1 && UR.calls[2] == 1, "cleanup calls %d %d", UR.calls[1], UR.calls[2]);
    EXPECT(UR.interrupted[1] && UR.interrupted[2], "ml_is_interrupted() in cleanups: %d %d",
           UR.interrupted[1], UR.interrupted[2]);
    EXPECT(UR.alloc_ok[1] && UR.alloc_ok[2], "an allocation in a cleanup was refused (not masked)");
    EXPECT_U64(allocated, 1200); /* 10 blocks and the cleanups' masked blocks */

    /* The frames are gone with the task: a new task unwinding runs only its own cleanups. */
    UR = (unwindrec){0};
    st = ml_run(&limits, task_unwind, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(UR.n == 2, "cleanups ran %d times in the second task", UR.n);
}

/* Allocations made by libc on the task's behalf get NULL/ENOMEM instead of unwinding. */
static void task_libc(void *arg)
{
    (void)arg;
    void *own = malloc(1000); /* exactly the limit */
    (void)own;
    errno = 0;
    char *s = strdup("a string that strdup copies with malloc");
    UR.strdup_null = s == NULL;
    UR.strdup_err = errno;
    free(s);
    char *t = NULL;
    errno = 0;
    UR.asprintf_rc = asprintf(&t, "%s %d", "asprintf allocates", 12345);
    UR.asprintf_err = errno;
    if (UR.asprintf_rc >= 0) free(t);
    errno = 0;
    FILE *f = fopen("/dev/null", "r");
    UR.fopen_null = f == NULL;
    UR.fopen_err = errno;
    if (f) fclose(f);
    UR.mallocs_returned = 1;
    void *p = malloc(1); /* the task's own: unwinds */
    UR.after = 1;
    free(p);
}

static void unwind_libc_allocations_get_enomem(void)
{
    UR = (unwindrec){0};
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_libc, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(UR.strdup_null && UR.strdup_err == ENOMEM, "strdup: NULL %d errno %d", UR.strdup_null,
           UR.strdup_err);
    EXPECT(UR.asprintf_rc == -1 && UR.asprintf_err == ENOMEM, "asprintf: %d errno %d",
           UR.asprintf_rc, UR.asprintf_err);
    EXPECT(UR.fopen_null && UR.fopen_err == ENOMEM, "fopen: NULL %d errno %d", UR.fopen_null,
           UR.fopen_err);
    EXPECT(UR.mallocs_returned == 1, "the task was unwound out of libc");
    EXPECT(!UR.after, "the task's own allocation after the interrupt did not unwind");
}

/* The dynamic loader's allocations are on the task's behalf too: dlopen fails, no unwind. */
#include <dlfcn.h>
static int dlopen_null, dlopen_returned;

static void task_dlopen(void *arg)
{
    (void)arg;
    void *p = malloc(1000);
    ml_mask();
    void *q = malloc(100); /* crosses, masked: pending */
    ml_unmask();
    free(q);
    free(p);
    void *h = dlopen("libresolv.so.2", RTLD_NOW | RTLD_LOCAL);
    dlopen_null = h == NULL;
    dlopen_returned = 1;
    if (h != NULL) dlclose(h);
    void *r = malloc(1); /* the task's own: unwinds */
    UR.after = 1;
    free(r);
}

static void unwind_loader_allocations_get_enomem(void)
{
    UR = (unwindrec){0};
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_dlopen, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(dlopen_returned, "the task was unwound out of dlopen");
    EXPECT(dlopen_null, "dlopen succeeded although every allocation of the task is refused");
    EXPECT(!UR.after, "the task's own allocation after dlopen did not unwind");
    /* the loader is still sound: the same dlopen works outside the task */
    void *h = dlopen("libresolv.so.2", RTLD_NOW | RTLD_LOCAL);
    EXPECT(h != NULL, "dlopen after the task: %s", dlerror());
    if (h != NULL) dlclose(h);
}

/* ml_check() unwinds in the default ENOMEM mode too; before an interrupt it returns. */
static void task_check(void *arg)
{
    (void)arg;
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)1);
    ml_check(); /* nothing pending: returns */
    UR.mallocs_returned = 1;
    for (int i = 0; i < 20; i++) {
        void *p = malloc(100);
        if (p == NULL) {
            UR.strdup_err = errno;
            break;
        }
        UR.mallocs_returned++;
    }
    ml_check();
    UR.after = 1;
    ML_CLEANUP_POP(0);
}

static void check_unwinds_in_enomem_mode(void)
{
    UR = (unwindrec){0};
    ml_status st = ml_limit_allocations(1000, task_check, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(UR.mallocs_returned, 11);
    EXPECT(UR.strdup_err == ENOMEM, "errno %d", UR.strdup_err);
    EXPECT(!UR.after, "ml_check did not unwind");
    EXPECT(UR.calls[1] == 1 && UR.interrupted[1] && UR.alloc_ok[1],
           "cleanup: calls %d interrupted %d masked allocation %d", UR.calls[1], UR.interrupted[1],
           UR.alloc_ok[1]);
}

/* An ML_UNWIND inner task unwinds to its own ml_run; the outer's cleanups stay, and the outer
 * goes on. */
static ml_status inner_unwind_status;
static int outer_after_inner;

static void task_unwind_inner_body(void *arg)
{
    (void)arg;
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)2);
    for (int i = 0; i < 100; i++) {
        void *volatile p = malloc(100);
        free(p);
    }
    UR.after = 1;
    ML_CLEANUP_POP(0);
}

static void task_unwind_outer_body(void *arg)
{
    (void)arg;
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)1);
    ml_limits inner = {1000, 0, NULL, ML_UNWIND};
    inner_unwind_status = ml_run(&inner, task_unwind_inner_body, NULL, NULL);
    void *p = malloc(5000);
    outer_after_inner = p != NULL;
    free(p);
    ML_CLEANUP_POP(0);
}

static void unwind_stops_at_innermost_task(void)
{
    UR = (unwindrec){0};
    ml_limits outer = {1000000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&outer, task_unwind_outer_body, NULL, NULL);
    EXPECT_STATUS(inner_unwind_status, ML_ALLOCATION_LIMIT);
    EXPECT(!UR.after, "the inner task was not unwound");
    EXPECT(UR.calls[2] == 1, "inner cleanup ran %d times", UR.calls[2]);
    EXPECT(UR.calls[1] == 0, "the outer task's cleanup ran at the inner unwind");
    EXPECT(outer_after_inner, "the outer task did not go on after the inner unwound");
    EXPECT_STATUS(st, ML_OK);
}

/* ML_CLEANUP_POP(1) runs the cleanup masked on the normal path; POP(0) drops it for good. */
static void task_pop(void *arg)
{
    (void)arg;
    void *p = malloc(950);
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)3);
    ML_CLEANUP_POP(0);
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)1);
    ML_CLEANUP_POP(1); /* its 100-byte allocation crosses the limit, masked */
    UR.mallocs_returned = 1;
    free(p);
    void *q = malloc(1); /* delivers: unwinds */
    UR.after = 1;
    free(q);
}

static void cleanup_pop_executes_masked_or_drops(void)
{
    UR = (unwindrec){0};
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_pop, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(UR.calls[1] == 1 && UR.alloc_ok[1], "POP(1): calls %d masked allocation %d", UR.calls[1],
           UR.alloc_ok[1]);
    EXPECT(UR.calls[3] == 0, "a cleanup dropped by POP(0) ran %d times", UR.calls[3]);
    EXPECT(UR.mallocs_returned && !UR.after, "returned %zu after %d", UR.mallocs_returned,
           UR.after);

    /* Outside tasks: POP(1) runs it, POP(0) does not. */
    UR = (unwindrec){0};
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)1);
    ML_CLEANUP_POP(1);
    ML_CLEANUP_PUSH(cleanup_rec, (void *)(intptr_t)2);
    ML_CLEANUP_POP(0);
    EXPECT(UR.calls[1] == 1 && UR.calls[2] == 0, "outside tasks: calls %d %d", UR.calls[1],
           UR.calls[2]);
}

/* ---------------------------------------------------------------------------------------------
 * ml_with_resource. */
typedef struct resrec {
    int acquire_calls, scope_calls, release_calls;
    int acquire_alloc_ok, acquire_interrupted;
    int scope_alloc_null, scope_interrupted;
    int release_alloc_ok, release_interrupted;
    int acquire_rc;
    int scope_loop; /* scope allocates until NULL/unwind */
    int after;
    void *resource_seen;
} resrec;

static resrec RR;
static char resource_object[16];

static int res_acquire(void *arg, void **resource)
{
    (void)arg;
    RR.acquire_calls++;
    RR.acquire_interrupted = ml_is_interrupted();
    void *p = malloc(200);
    RR.acquire_alloc_ok = p != NULL;
    free(p);
    if (RR.acquire_rc != 0) return RR.acquire_rc;
    *resource = resource_object;
    return 0;
}

static void res_release(void *resource)
{
    RR.release_calls++;
    RR.resource_seen = resource;
    RR.release_interrupted = ml_is_interrupted();
    void *p = malloc(100);
    RR.release_alloc_ok = p != NULL;
    free(p);
}

static int res_scope(void *resource, void *ctx)
{
    (void)ctx;
    (void)resource;
    RR.scope_calls++;
    if (RR.scope_loop) {
        for (int i = 0; i < 1000; i++) {
            void *volatile p = malloc(100);
            if (p == NULL) break;
            free(p);
        }
    } else {
        void *p = malloc(1);
        RR.scope_alloc_null = p == NULL;
        free(p);
    }
    RR.scope_interrupted = ml_is_interrupted();
    return 42;
}

static int resource_rc;

/* Interrupted first, then the resource: acquire and release masked, scope not. */
static void task_resource_interrupted(void *arg)
{
    (void)arg;
    void *p = malloc(1000);
    void *q = malloc(1); /* crosses: NULL, the task is interrupted */
    free(q);
    resource_rc = ml_with_resource(res_acquire, NULL, res_release, res_scope, NULL);
    free(p);
}

static void resource_masked_acquire_and_release(void)
{
    RR = (resrec){0};
    ml_status st = ml_limit_allocations(1000, task_resource_interrupted, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(RR.acquire_calls == 1 && RR.scope_calls == 1 && RR.release_calls == 1,
           "calls: acquire %d scope %d release %d", RR.acquire_calls, RR.scope_calls,
           RR.release_calls);
    EXPECT(RR.acquire_interrupted, "ml_is_interrupted() in acquire");
    EXPECT(RR.acquire_alloc_ok, "an allocation in acquire was refused: not masked");
    EXPECT(RR.scope_alloc_null, "an allocation in scope succeeded: scope is masked");
    EXPECT(RR.release_alloc_ok, "an allocation in release was refused: not masked");
    EXPECT(RR.release_interrupted, "ml_is_interrupted() was 0 in release after an interrupt");
    EXPECT(RR.resource_seen == resource_object, "release got %p", RR.resource_seen);
    EXPECT(resource_rc == 42, "ml_with_resource returned %d, expected scope's 42", resource_rc);
}

/* Unwound out of scope: release runs once, masked, interrupted; nothing after runs. */
static void task_resource_unwind(void *arg)
{
    (void)arg;
    resource_rc = ml_with_resource(res_acquire, NULL, res_release, res_scope, NULL);
    RR.after = 1;
}

static void resource_release_once_on_unwind(void)
{
    RR = (resrec){.scope_loop = 1};
    resource_rc = -12345;
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_resource_unwind, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(!RR.after && resource_rc == -12345, "scope was not unwound");
    EXPECT(RR.acquire_calls == 1 && RR.scope_calls == 1 && RR.release_calls == 1,
           "calls: acquire %d scope %d release %d", RR.acquire_calls, RR.scope_calls,
           RR.release_calls);
    EXPECT(RR.release_interrupted, "ml_is_interrupted() was 0 in release after an interrupt");
    EXPECT(RR.release_alloc_ok, "an allocation in release was refused: not masked");

    /* ml_check unwinding out of scope in ENOMEM mode: the same. */
    RR = (resrec){.scope_loop = 1};
    resource_rc = -12345;
    limits.flags = 0;
    UR = (unwindrec){0};
    st = ml_run(&limits, task_resource_unwind, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(RR.after && resource_rc == 42, "ENOMEM mode: scope returned %d", resource_rc);
    EXPECT(RR.release_calls == 1 && RR.release_interrupted, "ENOMEM mode: release %d, int %d",
           RR.release_calls, RR.release_interrupted);
}

static int res_scope_check(void *resource, void *ctx)
{
    (void)resource;
    (void)ctx;
    RR.scope_calls++;
    for (int i = 0; i < 1000; i++) {
        void *volatile p = malloc(100);
        if (p == NULL) break;
        free(p);
    }
    ml_check();
    RR.after = 1;
    return 1;
}

static void task_resource_check(void *arg)
{
    (void)arg;
    resource_rc = ml_with_resource(res_acquire, NULL, res_release, res_scope_check, NULL);
    RR.after = 2;
}

static void resource_release_once_on_check_unwind(void)
{
    RR = (resrec){0};
    ml_status st = ml_limit_allocations(1000, task_resource_check, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(RR.after == 0, "ml_check in scope did not unwind (after %d)", RR.after);
    EXPECT(RR.release_calls == 1 && RR.release_interrupted && RR.release_alloc_ok,
           "release: calls %d interrupted %d masked allocation %d", RR.release_calls,
           RR.release_interrupted, RR.release_alloc_ok);
}

/* Normal return, no interrupt: release once, ml_is_interrupted() 0; its masked allocation past
 * the limit is not refused, and the interrupt it causes stays pending. */
static int res_scope_900(void *resource, void *ctx)
{
    (void)resource;
    (void)ctx;
    RR.scope_calls++;
    void *p = malloc(900);
    free(p);
    return 5;
}

static void res_release_500(void *resource)
{
    RR.release_calls++;
    RR.release_interrupted = ml_is_interrupted();
    void *p = malloc(500);
    RR.release_alloc_ok = p != NULL;
    free(p);
}

static int pending_after_release, null_after_release;

static void task_resource_plain(void *arg)
{
    (void)arg;
    resource_rc = ml_with_resource(res_acquire, NULL, res_release_500, res_scope_900, NULL);
    pending_after_release = ml_is_interrupted();
    void *p = malloc(1);
    null_after_release = p == NULL;
    free(p);
}

static void resource_release_on_return(void)
{
    RR = (resrec){0};
    /* acquire 200 + scope 900 + release 500 + 1: crossing in release, masked */
    ml_status st = ml_limit_allocations(1200, task_resource_plain, NULL, NULL);
    EXPECT(resource_rc == 5, "ml_with_resource returned %d, expected 5", resource_rc);
    EXPECT(RR.release_calls == 1, "release ran %d times", RR.release_calls);
    EXPECT(!RR.release_interrupted, "ml_is_interrupted() in release without an interrupt");
    EXPECT(RR.release_alloc_ok, "release's allocation past the limit was refused: not masked");
    EXPECT(pending_after_release, "the interrupt caused in release was not pending after it");
    EXPECT(null_after_release, "the allocation after release was not refused");
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);

    /* outside tasks */
    RR = (resrec){0};
    int rc = ml_with_resource(res_acquire, NULL, res_release, res_scope, NULL);
    EXPECT(rc == 42 && RR.acquire_calls == 1 && RR.scope_calls == 1 && RR.release_calls == 1,
           "outside tasks: rc %d calls %d %d %d", rc, RR.acquire_calls, RR.scope_calls,
           RR.release_calls);
}

static int count_scope(void *resource, void *ctx)
{
    (void)resource;
    (void)ctx;
    RR.scope_calls++;
    return 0;
}

static void count_release(void *resource)
{
    (void)resource;
    RR.release_calls++;
}

static void resource_acquire_failure_and_null_callbacks(void)
{
    RR = (resrec){.acquire_rc = 7};
    int rc = ml_with_resource(res_acquire, NULL, count_release, count_scope, NULL);
    EXPECT(rc == 7, "returned %d, expected acquire's 7", rc);
    EXPECT(RR.acquire_calls == 1 && RR.scope_calls == 0 && RR.release_calls == 0,
           "calls: acquire %d scope %d release %d", RR.acquire_calls, RR.scope_calls,
           RR.release_calls);
    RR = (resrec){.acquire_rc = -5};
    rc = ml_with_resource(res_acquire, NULL, count_release, count_scope, NULL);
    EXPECT(rc == -5 && RR.scope_calls == 0 && RR.release_calls == 0, "rc %d", rc);

    RR = (resrec){0};
    EXPECT(ml_with_resource(NULL, NULL, count_release, count_scope, NULL) == -1, "NULL acquire");
    EXPECT(ml_with_resource(res_acquire, NULL, NULL, count_scope, NULL) == -1, "NULL release");
    EXPECT(ml_with_resource(res_acquire, NULL, count_release, NULL, NULL) == -1, "NULL scope");
    EXPECT(RR.acquire_calls == 0 && RR.scope_calls == 0 && RR.release_calls == 0,
           "NULL callbacks: calls %d %d %d", RR.acquire_calls, RR.scope_calls, RR.release_calls);
}

/* Nested resources unwound together: releases innermost first. */
static int nested_order[4], nested_n;

static int acq_id(void *arg, void **resource)
{
    *resource = arg;
    return 0;
}

static void rel_id(void *resource)
{
    nested_order[nested_n++ & 3] = (int)(intptr_t)resource;
}

static int scope_leaf(void *resource, void *ctx)
{
    (void)resource;
    (void)ctx;
    for (;;) {
        void *volatile p = malloc(64);
        free(p);
    }
    return 0;
}

static int scope_mid(void *resource, void *ctx)
{
    (void)resource;
    (void)ctx;
    return ml_with_resource(acq_id, (void *)(intptr_t)2, rel_id, scope_leaf, NULL);
}

static void task_nested_resources(void *arg)
{
    (void)arg;
    ml_with_resource(acq_id, (void *)(intptr_t)1, rel_id, scope_mid, NULL);
}

static void resource_nested_release_innermost_first(void)
{
    nested_n = 0;
    ml_limits limits = {10000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_nested_resources, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(nested_n == 2 && nested_order[0] == 2 && nested_order[1] == 1,
           "releases: %d, order %d %d", nested_n, nested_order[0], nested_order[1]);
}

/* ---------------------------------------------------------------------------------------------
 * Tokens. */
typedef struct spin {
    int started;
    int *seen_flag; /* set by another thread right after it set the token */
    uint64_t at_seen, bytes_after_seen;
    int seen;
    int null_err;
    unsigned long iterations;
    uint64_t bytes_after_mark; /* ml_thread_allocated() from `mark` to the first NULL */
    int mark;                  /* set by the task itself (raise) when it set the token */
    uint64_t at_mark;
    int timed_out;
    int raise_at; /* raise(SIGUSR1) at this iteration (0: never) */
} spin;

/* Allocates and frees 64-byte blocks until an allocation fails (or 20 s pass). */
static void task_spin(void *arg)
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

static ml_token *signal_token;

static void set_token_handler(int sig)
{
    (void)sig;
    ml_token_set(signal_token);
}

typedef struct setter {
    ml_token *token;
    int *started;
    int use_kill; /* kill(getpid(), SIGUSR1) instead of ml_token_set */
    int *done;    /* set right after */
} setter;

static void *setter_main(void *arg)
{
    setter *s = arg;
    wait_flag(s->started, 10);
    sleep_ms(30);
    if (s->use_kill)
        kill(getpid(), SIGUSR1);
    else
        ml_token_set(s->token);
    if (s->done != NULL) __atomic_store_n(s->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void token_set_from_other_thread_stops_task(void)
{
    static spin s;
    static int set_done;
    set_done = 0;
    s = (spin){.seen_flag = &set_done};
    ml_token *tok = ml_token_create();
    EXPECT(tok != NULL && !ml_token_is_set(tok), "a new token");
    setter st_args = {tok, &s.started, 0, &set_done};
    pthread_t th;
    pthread_create(&th, NULL, setter_main, &st_args);
    ml_status st = ml_limit_with_token(tok, task_spin, &s);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out && s.null_err == ENOMEM, "timed out %d errno %d", s.timed_out, s.null_err);
    /* at its next allocation event: within 32 KiB of allocation (memlimits.h, ml_token_set) */
    EXPECT(s.bytes_after_seen <= 32 * KIB, "%llu bytes allocated after the token was set",
           (unsigned long long)s.bytes_after_seen);
    say("info bytes_after_set %llu\n", (unsigned long long)s.bytes_after_seen);
    EXPECT(ml_token_is_set(tok), "ml_token_is_set() after set");
    /* never unset: a task with it now starts interrupted */
    s = (spin){0};
    st = ml_limit_with_token(tok, task_spin, &s);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(s.iterations == 1, "a task with a set token allocated %lu times", s.iterations - 1);
    ml_token_destroy(tok);

    /* ML_UNWIND: the same, unwinding */
    tok = ml_token_create();
    s = (spin){0};
    st_args = (setter){tok, &s.started, 0, NULL};
    pthread_create(&th, NULL, setter_main, &st_args);
    ml_limits limits = {0, 0, tok, ML_UNWIND};
    st = ml_run(&limits, task_spin, &s, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out && s.iterations == 0, "not unwound: iterations %lu timed out %d",
           s.iterations, s.timed_out);
    ml_token_destroy(tok);
}

/* A SIGUSR1 handler sets the token: raised on the task's own thread (then the task stops within
 * 32 KiB of allocation), or sent to the process from another thread. */
static void token_set_from_signal_handler_stops_task(void)
{
    static spin s;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = set_token_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    signal_token = ml_token_create();
    s = (spin){.raise_at = 1000};
    ml_status st = ml_limit_with_token(signal_token, task_spin, &s);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(s.mark && !s.timed_out && s.null_err == ENOMEM, "mark %d timed out %d errno %d", s.mark,
           s.timed_out, s.null_err);
    EXPECT(s.bytes_after_mark <= 32 * KIB, "%llu bytes allocated after the token was set",
           (unsigned long long)s.bytes_after_mark);
    say("info bytes_after_set %llu\n", (unsigned long long)s.bytes_after_mark);
    ml_token_destroy(signal_token);

    signal_token = ml_token_create();
    s = (spin){0};
    setter args = {NULL, &s.started, 1, NULL};
    pthread_t th;
    pthread_create(&th, NULL, setter_main, &args);
    ml_limits limits = {0, 0, signal_token, ML_UNWIND};
    st = ml_run(&limits, task_spin, &s, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out, "kill(SIGUSR1) did not stop the task");
    ml_token_destroy(signal_token);
}

static int first_null, first_err, interrupted_at_start;

static void task_first(void *arg)
{
    (void)arg;
    interrupted_at_start = ml_is_interrupted();
    errno = 0;
    void *p = malloc(1);
    first_null = p == NULL;
    first_err = errno;
    free(p);
}

static void token_set_before_start_interrupts_at_once(void)
{
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    EXPECT(ml_token_is_set(tok), "ml_token_is_set");
    uint64_t allocated = 12345;
    ml_limits limits = {0, 0, tok, 0};
    ml_status st = ml_run(&limits, task_first, NULL, &allocated);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(interrupted_at_start, "ml_is_interrupted() at the task's start");
    EXPECT(first_null && first_err == ENOMEM, "first allocation: NULL %d errno %d", first_null,
           first_err);
    EXPECT_U64(allocated, 0);

    /* ml_is_interrupted() never delivers, even with ML_UNWIND: the malloc after it does */
    interrupted_at_start = 0;
    first_null = 0;
    first_err = 0;
    limits.flags = ML_UNWIND;
    st = ml_run(&limits, task_first, NULL, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(interrupted_at_start, "ml_is_interrupted() at the start of an ML_UNWIND task");
    EXPECT(!first_null && first_err == 0, "the first allocation of an ML_UNWIND task returned");

    UR = (unwindrec){0};
    st = ml_run(&limits, task_unwind, NULL, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(UR.mallocs_returned == 0 && UR.n == 2,
           "ML_UNWIND: %zu allocations returned, %d cleanups", UR.mallocs_returned, UR.n);
    ml_token_destroy(tok);
}

/* Several threads running tasks with one token all stop when it is set. */
#define SHARED_THREADS 4
static ml_token *shared_token;
static spin shared_spin[SHARED_THREADS];
static ml_status shared_status[SHARED_THREADS];

static void *shared_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    ml_limits limits = {0, 0, shared_token, i % 2 ? ML_UNWIND : 0};
    shared_status[i] = ml_run(&limits, task_spin, &shared_spin[i], NULL);
    return NULL;
}

static void token_shared_by_threads_stops_all(void)
{
    shared_token = ml_token_create();
    pthread_t th[SHARED_THREADS];
    for (int i = 0; i < SHARED_THREADS; i++) {
        shared_spin[i] = (spin){0};
        pthread_create(&th[i], NULL, shared_main, (void *)(intptr_t)i);
    }
    for (int i = 0; i < SHARED_THREADS; i++)
        EXPECT(wait_flag(&shared_spin[i].started, 10), "thread %d did not start", i);
    sleep_ms(30);
    ml_token_set(shared_token);
    for (int i = 0; i < SHARED_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(shared_status[i], ML_TOKEN);
        EXPECT(!shared_spin[i].timed_out, "thread %d was not stopped", i);
    }
    ml_token_destroy(shared_token);
}

static int ran;

static void task_mark_ran(void *arg)
{
    (void)arg;
    ran++;
}

static void token_destroyed_is_refused_safely(void)
{
    ml_token *tok = ml_token_create();
    EXPECT(tok != NULL, "create");
    ml_token_destroy(tok);
    ran = 0;
    ml_limits limits = {0, 0, tok, 0};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_EINVAL);
    EXPECT_STATUS(ml_limit_with_token(tok, task_mark_ran, NULL), ML_EINVAL);
    EXPECT(ran == 0, "the task ran %d times with a destroyed token", ran);
    /* safe no-ops */
    ml_token_set(tok);
    EXPECT(ml_token_is_set(tok) == 0, "a destroyed token reads as set");
    ml_token_destroy(tok);
    ml_token_set(NULL);
    EXPECT(ml_token_is_set(NULL) == 0, "NULL token reads as set");
    ml_token_destroy(NULL);
    EXPECT_STATUS(ml_limit_with_token(NULL, task_mark_ran, NULL), ML_EINVAL);
    EXPECT(ran == 0, "the task ran with a NULL token");
    /* a set, then destroyed token reads as unset */
    ml_token *t2 = ml_token_create();
    ml_token_set(t2);
    ml_token_destroy(t2);
    EXPECT(ml_token_is_set(t2) == 0, "a destroyed set token reads as set");
    /* a new token is unset, even in a recycled slot */
    ml_token *t3 = ml_token_create();
    EXPECT(t3 != NULL && ml_token_is_set(t3) == 0, "a new token in a recycled slot reads as set");
    ml_token_destroy(t3);
}

/* Destroying a token while its task runs: the task is not interrupted by it any more. */
static ml_token *destroy_token;
static blocks destroy_blocks;

static void task_destroy_own_token(void *arg)
{
    (void)arg;
    ml_token_set(destroy_token);
    ml_token_destroy(destroy_token);
    destroy_blocks = (blocks){.size = 256, .count = MAX_BLOCKS};
    task_blocks(&destroy_blocks);
}

static void token_destroyed_during_task_no_longer_interrupts(void)
{
    destroy_token = ml_token_create();
    ml_status st = ml_limit_with_token(destroy_token, task_destroy_own_token, NULL);
    EXPECT_U64(destroy_blocks.got, MAX_BLOCKS);
    EXPECT_STATUS(st, ML_OK);
    blocks_free(&destroy_blocks);
}

/* ---------------------------------------------------------------------------------------------
 * ML_WAKE. */
enum { BLOCK_READ, BLOCK_POLL, BLOCK_SLEEP };

typedef struct waiter {
    int kind;
    int fd[2];
    ml_token *token;
    int use_task;
    unsigned flags;
    int global;
    int tid, started, done;
    int rc, err;
    int eintr; /* EINTRs seen while looping (loop mode) */
    int loop;  /* read again after EINTR until a byte comes */
    int got_byte;
    ml_status status;
} waiter;

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

static void waiter_start(waiter *w, pthread_t *th)
{
    if (pipe(w->fd) != 0) EXPECT(0, "pipe: %s", strerror(errno));
    pthread_create(th, NULL, wait_main, w);
    EXPECT(wait_flag(&w->started, 10), "the waiting thread did not start");
    EXPECT(wait_blocked(w->tid, calls_of(w->kind)), "thread %d never blocked (syscall %ld)", w->tid,
           blocked_syscall(w->tid));
}

/* Unblocks a waiter that was not woken, so that the scenario can finish. */
static void waiter_finish(waiter *w, pthread_t th)
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

static void wake_one(int kind, const char *what)
{
    static waiter w;
    w = (waiter){.kind = kind, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    double t0 = now_s();
    ml_token_set(w.token);
    int woken = wait_flag(&w.done, 2.0);
    double dt = now_s() - t0;
    EXPECT(woken, "%s: the task was not woken within 2 s of ml_token_set", what);
    waiter_finish(&w, th);
    if (woken) {
        EXPECT(w.rc == -1 && w.err == EINTR, "%s returned %d errno %d, expected EINTR", what, w.rc,
               w.err);
        EXPECT_STATUS(w.status, ML_TOKEN);
        say("info %s_wake_seconds %.6f\n", what, dt);
    }
    ml_token_destroy(w.token);
}

static void wake_read_returns_eintr(void)
{
    wake_one(BLOCK_READ, "read");
}

static void wake_poll_returns_eintr(void)
{
    wake_one(BLOCK_POLL, "poll");
}

static void wake_nanosleep_returns_eintr(void)
{
    wake_one(BLOCK_SLEEP, "nanosleep");
}

/* Threads that did not ask are never signalled: one without a task, one with a task without
 * ML_WAKE on the same token, next to an ML_WAKE task that is woken. */
static void wake_only_tasks_that_asked(void)
{
    static waiter woken, plain, nowake;
    ml_token *tok = ml_token_create();
    woken = (waiter){.kind = BLOCK_READ, .token = tok, .use_task = 1, .flags = ML_WAKE};
    plain = (waiter){.kind = BLOCK_READ, .loop = 1};
    nowake = (waiter){.kind = BLOCK_READ, .token = tok, .use_task = 1, .loop = 1};
    pthread_t tw, tp, tn;
    waiter_start(&woken, &tw);
    waiter_start(&plain, &tp);
    waiter_start(&nowake, &tn);
    ml_token_set(tok);
    EXPECT(wait_flag(&woken.done, 2.0), "the ML_WAKE task was not woken");
    sleep_ms(200);
    EXPECT(!__atomic_load_n(&plain.done, __ATOMIC_ACQUIRE), "the thread without a task returned");
    EXPECT(!__atomic_load_n(&nowake.done, __ATOMIC_ACQUIRE), "the task without ML_WAKE returned");
    EXPECT(proc_syscall_unreadable || blocked_syscall(plain.tid) == SYS_read,
           "the thread without a task is not in read");
    EXPECT(proc_syscall_unreadable || blocked_syscall(nowake.tid) == SYS_read,
           "the task without ML_WAKE is not in read");
    waiter_finish(&woken, tw);
    waiter_finish(&plain, tp);
    waiter_finish(&nowake, tn);
    EXPECT(woken.rc == -1 && woken.err == EINTR, "ML_WAKE read returned %d errno %d", woken.rc,
           woken.err);
    EXPECT(plain.eintr == 0 && plain.got_byte, "thread without a task: %d EINTR, byte %d",
           plain.eintr, plain.got_byte);
    EXPECT(nowake.eintr == 0 && nowake.got_byte, "task without ML_WAKE: %d EINTR, byte %d",
           nowake.eintr, nowake.got_byte);
    ml_token_destroy(tok);
}

static volatile sig_atomic_t program_handler_calls;

static void program_handler(int sig)
{
    (void)sig;
    program_handler_calls++;
}

static void install_program_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = program_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static int handler_is_program(int sig)
{
    struct sigaction cur;
    sigaction(sig, NULL, &cur);
    return !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == program_handler;
}

/* Run with MEMLIMITS_SIGNAL=USR2: the program handles SIGUSR2, so ML_WAKE is refused. */
static void wake_signal_program_handler_refused(void)
{
    install_program_handler(SIGUSR2);
    ran = 0;
    ml_limits limits = {0, 0, NULL, ML_WAKE};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_ESIGNAL);
    EXPECT(ran == 0, "the task ran although ML_WAKE was refused");
    EXPECT(handler_is_program(SIGUSR2), "the program's SIGUSR2 handler was replaced");
    raise(SIGUSR2);
    EXPECT(program_handler_calls == 1, "the program's handler ran %d times",
           (int)program_handler_calls);
    /* without ML_WAKE the task runs */
    limits.flags = 0;
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_OK);
    EXPECT(ran == 1, "the task without ML_WAKE ran %d times", ran);
}

/* Run with MEMLIMITS_SIGNAL=USR2 and no program handler: ML_WAKE uses SIGUSR2. Then the program
 * installs its own handler on it: ML_WAKE is refused from then on, the handler left intact. */
static void wake_signal_configured_and_taken_over(void)
{
    static waiter w;
    w = (waiter){.kind = BLOCK_READ, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    struct sigaction cur;
    sigaction(SIGUSR2, NULL, &cur);
    EXPECT((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL,
           "SIGUSR2 has no handler while an ML_WAKE task runs with MEMLIMITS_SIGNAL=USR2");
    EXPECT(!(cur.sa_flags & SA_RESTART), "the wake-up signal is installed with SA_RESTART");
    ml_token_set(w.token);
    EXPECT(wait_flag(&w.done, 2.0), "the ML_WAKE task was not woken through SIGUSR2");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    ml_token_destroy(w.token);

    install_program_handler(SIGUSR2);
    ran = 0;
    ml_limits limits = {0, 0, NULL, ML_WAKE};
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_ESIGNAL);
    EXPECT(ran == 0, "the task ran");
    EXPECT(handler_is_program(SIGUSR2), "the program's SIGUSR2 handler was replaced");
    raise(SIGUSR2);
    EXPECT(program_handler_calls == 1, "the program's handler ran %d times",
           (int)program_handler_calls);
}

/* Default signal: a free real-time one; one the program handles is left alone. */
static void wake_default_signal_skips_program_handlers(void)
{
    install_program_handler(SIGRTMAX);
    static waiter w;
    w = (waiter){.kind = BLOCK_READ, .token = ml_token_create(), .use_task = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    ml_token_set(w.token);
    EXPECT(wait_flag(&w.done, 2.0), "the ML_WAKE task was not woken");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    EXPECT(handler_is_program(SIGRTMAX), "the program's SIGRTMAX handler was replaced");
    raise(SIGRTMAX);
    EXPECT(program_handler_calls == 1, "the program's handler ran %d times",
           (int)program_handler_calls);
    ml_token_destroy(w.token);
}

/* ---------------------------------------------------------------------------------------------
 * The global memory limit. */
typedef struct node {
    struct node *next;
} node;

static node *list_head;
static size_t list_built, list_cap;
static int list_err;

static void task_build_list(void *arg)
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

static void list_free(void)
{
    while (list_head != NULL) {
        node *n = list_head;
        list_head = n->next;
        free(n);
    }
    list_built = 0;
}

static void global_limit_interrupts_within_256k(void)
{
    const uint64_t limit = 64 * MIB;
    size_t block = 1000;
    void *probe = malloc(block);
    size_t usable = malloc_usable_size(probe);
    free(probe);
    EXPECT(ml_global_memory_limit() == ML_UNLIMITED, "default global limit %llu",
           (unsigned long long)ml_global_memory_limit());
    ml_set_global_memory_limit(limit);
    EXPECT_U64(ml_global_memory_limit(), limit);
    uint64_t baseline = ml_heap_live();
    EXPECT(baseline < limit / 2, "baseline %llu", (unsigned long long)baseline);
    size_t crossing = (size_t)((limit - baseline) / usable); /* live > limit after this one */
    list_cap = 2 * (size_t)(limit / block);
    list_err = 0;
    uint64_t allocated = 0;
    ml_limits limits = {0, 1, NULL, 0};
    ml_status st = ml_run(&limits, task_build_list, &block, &allocated);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(list_err == ENOMEM, "errno %d", list_err);
    size_t interrupt = list_built; /* index of the first NULL */
    EXPECT(interrupt > crossing, "interrupted at block %zu, before the heap crossed at block %zu",
           interrupt, crossing);
    uint64_t after = interrupt > crossing ? (uint64_t)(interrupt - crossing - 1) * block : 0;
    say("info usable %zu crossing %zu interrupt %zu bytes_after_crossing %llu\n", usable, crossing,
        interrupt, (unsigned long long)after);
    EXPECT(after < 256 * KIB, "%llu bytes allocated after the heap exceeded the limit",
           (unsigned long long)after);
    EXPECT_U64(allocated, (uint64_t)list_built * block);

    /* Still over the limit: a new task starts interrupted. */
    first_null = 0;
    st = ml_limit_global_memory(task_first, NULL);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(first_null && first_err == ENOMEM, "first allocation of a task started over the limit");

    /* Back under the limit: a new task runs normally. */
    list_free();
    list_cap = 1000;
    st = ml_limit_global_memory(task_build_list, &block);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(list_built, 1000);
    list_free();

    ml_set_global_memory_limit(ML_UNLIMITED);
    EXPECT_U64(ml_global_memory_limit(), ML_UNLIMITED);
}

/* Run with MEMLIMITS_GLOBAL=16M: the default global memory limit comes from the environment. */
static void global_limit_from_environment(void)
{
    EXPECT_U64(ml_global_memory_limit(), 16 * MIB);
    size_t block = 1000;
    list_cap = 64 * 1024; /* 64 MB: well past the limit */
    list_err = 0;
    ml_status st = ml_limit_global_memory(task_build_list, &block);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT(list_err == ENOMEM && list_built < 17 * 1024, "%zu blocks, errno %d", list_built,
           list_err);
    list_free();
}

/* Tasks on other threads are interrupted too, each before it allocates 256 KiB more. */
#define GLOBAL_THREADS 3
typedef struct gworker {
    int started, timed_out, done;
    int *crossed;
    uint64_t at_cross;    /* ml_thread_allocated() when the worker first saw `crossed` */
    uint64_t after_cross; /* bytes from then to the first NULL */
    int seen;
    ml_status status;
} gworker;

static int global_crossed;
static gworker gworkers[GLOBAL_THREADS];

static void task_gworker(void *arg)
{
    gworker *g = arg;
    __atomic_store_n(&g->started, 1, __ATOMIC_RELEASE);
    double end = now_s() + 20;
    for (unsigned long i = 0;; i++) {
        if (!g->seen && __atomic_load_n(g->crossed, __ATOMIC_ACQUIRE)) {
            g->seen = 1;
            g->at_cross = ml_thread_allocated();
        }
        void *volatile p = malloc(64);
        if (p == NULL) {
            if (g->seen) g->after_cross = ml_thread_allocated() - g->at_cross;
            return;
        }
        free(p);
        if ((i & 0xffff) == 0 && now_s() > end) {
            g->timed_out = 1;
            return;
        }
    }
}

static void *gworker_main(void *arg)
{
    gworker *g = arg;
    g->status = ml_limit_global_memory(task_gworker, g);
    __atomic_store_n(&g->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void global_limit_interrupts_every_thread(void)
{
    const uint64_t limit = ml_heap_live() + 32 * MIB;
    ml_set_global_memory_limit(limit);
    global_crossed = 0;
    pthread_t th[GLOBAL_THREADS];
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        gworkers[i] = (gworker){.crossed = &global_crossed};
        pthread_create(&th[i], NULL, gworker_main, &gworkers[i]);
    }
    for (int i = 0; i < GLOBAL_THREADS; i++)
        EXPECT(wait_flag(&gworkers[i].started, 10), "worker %d did not start", i);
    /* This thread has no task: it builds a list past the limit, looking closely near it. */
    size_t n = 0;
    for (;;) {
        node *b = malloc(1000);
        EXPECT(b != NULL, "the thread without a task got NULL");
        if (b == NULL) break;
        b->next = list_head;
        list_head = b;
        n++;
        /* over by more than the other threads' blocks in flight (64 bytes each), so that the
         * heap stays over the limit from here on */
        if ((uint64_t)n * 1024 + 2 * MIB >= 32 * MIB && ml_heap_live() > limit + 4 * KIB) break;
    }
    __atomic_store_n(&global_crossed, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(gworkers[i].status, ML_MEMORY_LIMIT);
        EXPECT(!gworkers[i].timed_out, "worker %d was not interrupted", i);
        EXPECT(gworkers[i].after_cross < 256 * KIB,
               "worker %d allocated %llu bytes after the heap crossed", i,
               (unsigned long long)gworkers[i].after_cross);
        say("info worker %d bytes_after_crossing %llu\n", i,
            (unsigned long long)gworkers[i].after_cross);
    }
    list_free();
    /* Back under: tasks on other threads run normally. */
    global_crossed = 0;
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        gworkers[i] = (gworker){.crossed = &global_crossed};
        pthread_create(&th[i], NULL, gworker_main, &gworkers[i]);
    }
    for (int i = 0; i < GLOBAL_THREADS; i++)
        wait_flag(&gworkers[i].started, 10);
    sleep_ms(50);
    for (int i = 0; i < GLOBAL_THREADS; i++)
        EXPECT(!__atomic_load_n(&gworkers[i].done, __ATOMIC_ACQUIRE),
               "worker %d, started after the heap was freed back under the limit, was "
               "interrupted (status %d)",
               i, (int)gworkers[i].status);
    /* set the global limit below the heap: every running task is interrupted */
    ml_set_global_memory_limit(ml_heap_live() / 2);
    for (int i = 0; i < GLOBAL_THREADS; i++) {
        pthread_join(th[i], NULL);
        EXPECT_STATUS(gworkers[i].status, ML_MEMORY_LIMIT);
        EXPECT(!gworkers[i].timed_out, "worker %d was not interrupted by a lowered limit", i);
    }
    ml_set_global_memory_limit(ML_UNLIMITED);
    list_cap = 100;
    size_t block = 1000;
    EXPECT_STATUS(ml_limit_global_memory(task_build_list, &block), ML_OK);
    list_free();
}

/* An ML_WAKE global-memory task blocked in read is woken when another thread crosses the limit. */
static void global_limit_wakes_blocked_task(void)
{
    static waiter w;
    ml_set_global_memory_limit(ml_heap_live() + 16 * MIB);
    w = (waiter){.kind = BLOCK_READ, .use_task = 1, .global = 1, .flags = ML_WAKE};
    pthread_t th;
    waiter_start(&w, &th);
    for (size_t i = 0; i < 24 * 1024; i++) { /* 24 MiB in 1 KiB blocks, no task */
        node *b = malloc(1000);
        if (b == NULL) break;
        b->next = list_head;
        list_head = b;
    }
    EXPECT(wait_flag(&w.done, 2.0), "the blocked global-memory task was not woken");
    waiter_finish(&w, th);
    EXPECT(w.rc == -1 && w.err == EINTR, "read returned %d errno %d", w.rc, w.err);
    EXPECT_STATUS(w.status, ML_MEMORY_LIMIT);
    list_free();
    ml_set_global_memory_limit(ML_UNLIMITED);
}

/* ---------------------------------------------------------------------------------------------
 * Threads. */
static int bystander_nulls, bystander_done, bystander_task_null;
static ml_token *bystander_token;

/* Allocates 16 MiB in 1 KiB blocks and frees them; counts NULLs. */
static void bystander_allocate(void)
{
    node *head = NULL;
    for (int i = 0; i < 16 * 1024; i++) {
        node *b = malloc(1024);
        if (b == NULL) {
            bystander_nulls++;
            continue;
        }
        b->next = head;
        head = b;
    }
    while (head != NULL) {
        node *b = head;
        head = b->next;
        free(b);
    }
}

/* Sets the token of the task running on the main thread, waits until that task is interrupted,
 * then allocates while it stays interrupted. */
static void *bystander_main(void *arg)
{
    spin *s = arg;
    wait_flag(&s->started, 10);
    ml_token_set(bystander_token);
    wait_flag(&bystander_task_null, 10);
    bystander_allocate();
    __atomic_store_n(&bystander_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void task_spin_hold(void *arg)
{
    spin *s = arg;
    task_spin(s);
    __atomic_store_n(&bystander_task_null, 1, __ATOMIC_RELEASE);
    wait_flag(&bystander_done, 20); /* stays interrupted while the other thread allocates */
}

static void *bystander_plain(void *arg)
{
    (void)arg;
    bystander_allocate();
    return NULL;
}

static void threads_without_task_unaffected(void)
{
    /* token: a task on another thread is interrupted while this one allocates */
    static spin s;
    bystander_token = ml_token_create();
    s = (spin){0};
    bystander_nulls = bystander_done = bystander_task_null = 0;
    pthread_t by;
    pthread_create(&by, NULL, bystander_main, &s);
    ml_status st = ml_limit_with_token(bystander_token, task_spin_hold, &s);
    pthread_join(by, NULL);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT(!s.timed_out && bystander_done, "timed out %d, bystander done %d", s.timed_out,
           bystander_done);
    EXPECT(bystander_nulls == 0, "a thread without a task got %d NULLs", bystander_nulls);
    ml_token_destroy(bystander_token);

    /* the global limit exceeded: a thread without a task and a task without global_memory go on */
    ml_set_global_memory_limit(ml_heap_live() + MIB);
    for (int i = 0; i < 4 * 1024; i++) { /* 4 MiB: over the limit */
        node *b = malloc(1000);
        EXPECT(b != NULL, "this thread has no task, yet got NULL over the global limit");
        if (b == NULL) break;
        b->next = list_head;
        list_head = b;
    }
    EXPECT_STATUS(ml_limit_global_memory(task_first, NULL), ML_MEMORY_LIMIT);
    bystander_nulls = 0;
    pthread_create(&by, NULL, bystander_plain, NULL);
    pthread_join(by, NULL);
    EXPECT(bystander_nulls == 0, "over the global limit, a thread without a task got %d NULLs",
           bystander_nulls);
    B1 = (blocks){.size = 1000, .count = MAX_BLOCKS};
    st = ml_limit_allocations(64 * MIB, task_blocks, &B1, NULL);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(B1.got, MAX_BLOCKS);
    blocks_free(&B1);
    list_free();
    ml_set_global_memory_limit(ML_UNLIMITED);
}

/* Threads created by a task do not inherit its limits. */
static int child_nulls, child_interrupted;
static uint64_t child_bytes;

static void *child_main(void *arg)
{
    (void)arg;
    child_interrupted = ml_is_interrupted();
    node *head = NULL;
    for (int i = 0; i < 8 * 1024; i++) { /* 8 MiB */
        node *b = malloc(1024);
        if (b == NULL) {
            child_nulls++;
            continue;
        }
        b->next = head;
        head = b;
    }
    child_bytes = ml_thread_allocated();
    while (head != NULL) {
        node *b = head;
        head = b->next;
        free(b);
    }
    return NULL;
}

static int create_rc;

static void task_create_thread(void *arg)
{
    int masked = *(int *)arg;
    pthread_t th;
    if (masked) ml_mask(); /* pthread_create allocates through libc */
    create_rc = pthread_create(&th, NULL, child_main, NULL);
    if (masked) ml_unmask();
    if (create_rc == 0) pthread_join(th, NULL);
}

static void threads_created_in_task_do_not_inherit(void)
{
    int masked = 0;
    uint64_t allocated = 0;
    child_nulls = 0;
    ml_status st = ml_limit_allocations(64 * KIB, task_create_thread, &masked, &allocated);
    EXPECT(create_rc == 0, "pthread_create in a task: %d", create_rc);
    EXPECT(child_nulls == 0, "a thread created in a task with a 64 KiB limit got %d NULLs",
           child_nulls);
    EXPECT(child_bytes >= 8 * MIB, "the child allocated %llu", (unsigned long long)child_bytes);
    EXPECT(allocated < 64 * KIB, "the task was charged %llu bytes", (unsigned long long)allocated);
    EXPECT_STATUS(st, ML_OK);

    /* A thread created by an interrupted task is not interrupted. */
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    masked = 1;
    child_nulls = 0;
    child_interrupted = -1;
    st = ml_limit_with_token(tok, task_create_thread, &masked);
    EXPECT(create_rc == 0, "pthread_create (masked) in an interrupted task: %d", create_rc);
    EXPECT(child_interrupted == 0, "the child thread of an interrupted task is interrupted");
    EXPECT(child_nulls == 0, "the child thread of an interrupted task got %d NULLs", child_nulls);
    EXPECT_STATUS(st, ML_TOKEN);
    ml_token_destroy(tok);
}

/* ---------------------------------------------------------------------------------------------
 * Failure injection: no address space left (RLIMIT_AS just above what is mapped). Token memory
 * and the waker thread cannot be had: ml_token_create returns NULL with ENOMEM, and the first
 * ML_WAKE task is refused with ML_ENOMEM without running; both work again once memory is back. */
#include <sys/resource.h>

static uint64_t mapped_bytes(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return strtoull(buf, NULL, 10) * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void setup_out_of_memory_is_enomem(void)
{
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    static ml_token *made[8192];
    size_t n = 0;
    int err = 0;
    struct rlimit tight = {mapped_bytes() + 16 * KIB, old.rlim_max};
    EXPECT(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit: %s", strerror(errno));
    /* the current chunk of token memory runs out, and no new one can be mapped */
    while (n < 8192) {
        errno = 0;
        ml_token *t = ml_token_create();
        if (t == NULL) {
            err = errno;
            break;
        }
        made[n++] = t;
    }
    ran = 0;
    ml_limits limits = {0, 0, NULL, ML_WAKE};
    ml_status st = ml_run(&limits, task_mark_ran, NULL, NULL);
    setrlimit(RLIMIT_AS, &old);
    EXPECT(n < 8192 && err == ENOMEM, "ml_token_create: %zu tokens, then errno %d", n, err);
    EXPECT_STATUS(st, ML_ENOMEM);
    EXPECT(ran == 0, "the task ran although its setup failed");
    for (size_t i = 0; i < n; i++)
        ml_token_destroy(made[i]);

    ml_token *t = ml_token_create();
    EXPECT(t != NULL, "ml_token_create after memory came back");
    ml_token_destroy(t);
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_OK);
    EXPECT(ran == 1, "the ML_WAKE task ran %d times after memory came back", ran);
}

/* "Nothing is ever unwound out of a signal handler": a handler that allocates on the thread of
 * an interrupted ML_UNWIND task gets NULL; the unwind comes at the task's own next allocation. */
static int handler_null, handler_returned, raise_returned, after_raise_alloc;

static void allocating_handler(int sig)
{
    (void)sig;
    void *p = malloc(100);
    handler_null = p == NULL;
    free(p);
    handler_returned = 1;
}

static void task_raise(void *arg)
{
    (void)arg;
    void *p = malloc(1000);
    ml_mask();
    void *q = malloc(100); /* crosses, masked: the interrupt is pending */
    ml_unmask();
    free(q);
    free(p);
    raise(SIGUSR1);
    raise_returned = 1;
    void *r = malloc(1);
    after_raise_alloc = 1;
    free(r);
}

static void unwind_never_out_of_signal_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = allocating_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    ml_status st = ml_run(&limits, task_raise, NULL, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(handler_returned, "the task was unwound out of the signal handler");
    EXPECT(handler_null, "the handler's allocation in an interrupted task succeeded");
    EXPECT(raise_returned, "raise() did not return");
    EXPECT(!after_raise_alloc, "the task's own allocation after the handler did not unwind");
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(!sigismember(&cur, SIGUSR1), "SIGUSR1 is left blocked in the thread after ml_run");
}

/* A thread cancelled (or calling pthread_exit) inside a task: its task frame goes with its
 * stack, so it must not stay on the process's lists of tasks. Afterwards new threads reuse the
 * stack memory, the token is set and the global limit crossed: nothing may crash, and a new
 * global-memory task runs normally. */
static ml_token *gone_token;
static int gone_fd[2], gone_started;

static void task_block_forever(void *arg)
{
    (void)arg;
    __atomic_store_n(&gone_started, 1, __ATOMIC_RELEASE);
    char c;
    for (;;) {
        ssize_t n = read(gone_fd[0], &c, 1); /* a cancellation point */
        (void)n;
    }
}

static void task_exit_thread(void *arg)
{
    (void)arg;
    pthread_exit(NULL);
}

static void *gone_main(void *arg)
{
    int how = *(int *)arg;
    ml_limits limits = {0, 1, gone_token, ML_WAKE};
    ml_run(&limits, how ? task_exit_thread : task_block_forever, NULL, NULL);
    return NULL;
}

static void *scribble_main(void *arg)
{
    (void)arg;
    volatile char buf[256 * 1024];
    memset((char *)buf, 0x5a, sizeof buf);
    return NULL;
}

static void task_spin_briefly(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        void *volatile p = malloc(64);
        if (p == NULL) return;
        free(p);
    }
}

static void threads_leaving_inside_a_task_leave_no_trace(void)
{
    EXPECT(pipe(gone_fd) == 0, "pipe");
    gone_token = ml_token_create();
    pthread_t th;
    int how = 0;
    pthread_create(&th, NULL, gone_main, &how);
    wait_flag(&gone_started, 10);
    sleep_ms(20);
    pthread_cancel(th);
    pthread_join(th, NULL);
    how = 1;
    pthread_create(&th, NULL, gone_main, &how);
    pthread_join(th, NULL);
    for (int i = 0; i < 4; i++) { /* new threads reuse the stacks of the gone ones */
        pthread_create(&th, NULL, scribble_main, NULL);
        pthread_join(th, NULL);
    }
    ml_limits limits = {0, 1, NULL, 0};
    EXPECT_STATUS(ml_run(&limits, task_spin_briefly, NULL, NULL), ML_OK);
    ml_token_set(gone_token);
    sleep_ms(100); /* the waker looks for ML_WAKE tasks with that token */
    ml_set_global_memory_limit(ml_heap_live() + MIB);
    void *big = malloc(4 * MIB); /* crosses: marks every global-memory task */
    memset(big, 1, 4 * MIB);
    free(big);
    ml_set_global_memory_limit(ML_UNLIMITED);
    EXPECT_STATUS(ml_run(&limits, task_spin_briefly, NULL, NULL), ML_OK);
    ml_token_destroy(gone_token);
}

/* ---------------------------------------------------------------------------------------------
 * Misuse. */
static void misuse_is_refused(void)
{
    ml_limits limits = {0, 0, NULL, 0};
    ran = 0;
    EXPECT_STATUS(ml_run(NULL, task_mark_ran, NULL, NULL), ML_EINVAL);
    EXPECT_STATUS(ml_run(&limits, NULL, NULL, NULL), ML_EINVAL);
    limits.flags = 1u << 2;
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_EINVAL);
    limits.flags = 0x80000000u | ML_UNWIND;
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_EINVAL);
    EXPECT_STATUS(ml_limit_allocations(100, NULL, NULL, NULL), ML_EINVAL);
    EXPECT_STATUS(ml_limit_global_memory(NULL, NULL), ML_EINVAL);
    ml_token *tok = ml_token_create();
    EXPECT_STATUS(ml_limit_with_token(tok, NULL, NULL), ML_EINVAL);
    ml_token_destroy(tok);
    EXPECT(ran == 0, "fn ran %d times on misuse", ran);

    /* the well-formed calls work, allocated may be NULL */
    EXPECT(ml_active() == 1, "ml_active() in a linked program");
    limits.flags = ML_UNWIND | ML_WAKE;
    EXPECT_STATUS(ml_run(&limits, task_mark_ran, NULL, NULL), ML_OK);
    EXPECT_STATUS(ml_limit_global_memory(task_mark_ran, NULL), ML_OK);
    B1 = (blocks){.size = 1000, .count = MAX_BLOCKS};
    EXPECT_STATUS(ml_limit_allocations(0, task_blocks, &B1, NULL), ML_OK); /* 0: no limit */
    EXPECT_U64(B1.got, MAX_BLOCKS);
    blocks_free(&B1);
    EXPECT(ran == 2, "fn ran %d times, expected 2", ran);
}

/* ---------------------------------------------------------------------------------------------*/
static const struct {
    const char *name;
    void (*fn)(void);
} scenarios[] = {
#define S(name)                                                                                    \
    {                                                                                              \
#name, name                                                                                \
    }
    S(allocation_limit_exact),
    S(allocation_limit_crossing_is_refused),
    S(allocation_limit_counts_calloc_and_realloc),
    S(allocation_limit_zero_byte_counts_zero),
    S(nested_inner_limit_does_not_extend_outer),
    S(nested_allocations_count_against_every_limit),
    S(nested_enclosing_interrupt_interrupts_inner),
    S(mask_nests_and_defers_delivery),
    S(mask_unmask_without_mask_is_no_op),
    S(unwind_runs_cleanups_innermost_first_once),
    S(unwind_libc_allocations_get_enomem),
    S(unwind_loader_allocations_get_enomem),
    S(check_unwinds_in_enomem_mode),
    S(unwind_stops_at_innermost_task),
    S(cleanup_pop_executes_masked_or_drops),
    S(resource_masked_acquire_and_release),
    S(resource_release_once_on_unwind),
    S(resource_release_once_on_check_unwind),
    S(resource_release_on_return),
    S(resource_acquire_failure_and_null_callbacks),
    S(resource_nested_release_innermost_first),
    S(token_set_from_other_thread_stops_task),
    S(token_set_from_signal_handler_stops_task),
    S(token_set_before_start_interrupts_at_once),
    S(token_shared_by_threads_stops_all),
    S(token_destroyed_is_refused_safely),
    S(token_destroyed_during_task_no_longer_interrupts),
    S(wake_read_returns_eintr),
    S(wake_poll_returns_eintr),
    S(wake_nanosleep_returns_eintr),
    S(wake_only_tasks_that_asked),
    S(wake_signal_program_handler_refused),
    S(wake_signal_configured_and_taken_over),
    S(wake_default_signal_skips_program_handlers),
    S(global_limit_interrupts_within_256k),
    S(global_limit_from_environment),
    S(global_limit_interrupts_every_thread),
    S(global_limit_wakes_blocked_task),
    S(threads_without_task_unaffected),
    S(threads_created_in_task_do_not_inherit),
    S(setup_out_of_memory_is_enomem),
    S(unwind_never_out_of_signal_handler),
    S(threads_leaving_inside_a_task_leave_no_trace),
    S(misuse_is_refused),
#undef S
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        say("usage: tasks_scenarios NAME\n");
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
            say("  %s\n", scenarios[i].name);
        return 2;
    }
    if (!ml_active()) {
        say("FAIL %s: memlimits does not own malloc\n", argv[1]);
        return 1;
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(scenarios[i].name, argv[1]) != 0) continue;
        current = scenarios[i].name;
        scenarios[i].fn();
        if (!failed) say("ok %s\n", current);
        return failed;
    }
    say("FAIL %s: no such scenario\n", argv[1]);
    return 2;
}
