/* Target for tests/test_tasks.c: allocation limits of tasks (ml_run, ml_limit_allocations) are
 * exact, refuse the crossing allocation, count calloc and realloc, nest without extending an
 * enclosing limit; and ml_run refuses misuse. Linked with -lmemlimits, built with -fno-builtin;
 * `tasks_allocation NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tasks_common.h"

static blocks B1;

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

/* Two zero-byte requests, each recorded: whether it returned a block, and errno. */
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

/* Nested tasks: an outer task under a limit of OUTER_LIMIT bytes allocates `outer_before`
 * 100-byte blocks (in `before`), runs an inner task under `inner_limit` that allocates
 * `inner_count` of them (in `inner`), then allocates `outer_after` more (in `after`). */
#define OUTER_LIMIT 10000

typedef struct nest {
    uint64_t inner_limit;
    size_t outer_before, inner_count, outer_after;
    ml_status inner_status;
    uint64_t inner_allocated;
    blocks before, inner, after;
} nest;

static nest N;

static void task_outer(void *arg)
{
    nest *n = arg;
    n->before = (blocks){.size = 100, .count = n->outer_before};
    task_blocks(&n->before);
    n->inner = (blocks){.size = 100, .count = n->inner_count};
    n->inner_status =
        ml_limit_allocations(n->inner_limit, task_blocks, &n->inner, &n->inner_allocated);
    n->after = (blocks){.size = 100, .count = n->outer_after};
    task_blocks(&n->after);
}

/* Runs the outer task, recorded in N; returns its status and, in *allocated, its count. */
static ml_status run_nested(uint64_t inner_limit, size_t outer_before, size_t inner_count,
                            size_t outer_after, uint64_t *allocated)
{
    N = (nest){.inner_limit = inner_limit,
               .outer_before = outer_before,
               .inner_count = inner_count,
               .outer_after = outer_after};
    return ml_limit_allocations(OUTER_LIMIT, task_outer, &N, allocated);
}

static void nest_free(void)
{
    blocks_free(&N.before);
    blocks_free(&N.inner);
    blocks_free(&N.after);
}

/* An inner limit larger than the outer's remaining budget does not extend it. */
static void nested_inner_limit_does_not_extend_outer(void)
{
    uint64_t allocated = 0;
    ml_status st = run_nested(1000000, 50, 1000, 1, &allocated);
    EXPECT_STATUS(N.inner_status, ML_OUTER_LIMIT); /* the outer's limit, not its own */
    EXPECT_U64(N.before.got, 50);
    EXPECT_U64(N.inner.got, 50); /* the 51st inner block crosses the outer limit */
    EXPECT(N.inner.err == ENOMEM, "inner errno %d", N.inner.err);
    EXPECT_U64(N.inner_allocated, 5000);
    EXPECT_U64(N.after.got, 0); /* the outer is interrupted too */
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, OUTER_LIMIT);
    nest_free();
}

/* Allocations in an inner task count against the outer limit. */
static void nested_allocations_count_against_every_limit(void)
{
    uint64_t allocated = 0;
    /* outer 10000: 10 blocks, inner (limit 8000) 60 blocks, then 30 more fit and the 31st not */
    ml_status st = run_nested(8000, 10, 60, 31, &allocated);
    EXPECT_STATUS(N.inner_status, ML_OK);
    EXPECT_U64(N.inner_allocated, 6000);
    EXPECT_U64(N.inner.got, 60);
    EXPECT_U64(N.after.got, 30);
    EXPECT(N.after.err == ENOMEM, "errno %d", N.after.err);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, OUTER_LIMIT);
    nest_free();

    /* The inner's own limit fires: only the inner is interrupted; the outer goes on. */
    st = run_nested(2000, 10, 60, 20, &allocated);
    EXPECT_STATUS(N.inner_status, ML_ALLOCATION_LIMIT);
    EXPECT_U64(N.inner.got, 20);
    EXPECT_U64(N.inner_allocated, 2000);
    EXPECT_U64(N.after.got, 20);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(allocated, 5000);
    nest_free();
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
    EXPECT_STATUS(nest_inner_status, ML_OUTER_LIMIT); /* the enclosing task's token */
    EXPECT(nest_inner_null_err == ENOMEM, "inner errno %d", nest_inner_null_err);
    EXPECT(nest_inner_interrupted, "ml_is_interrupted() in the inner task was 0");
    EXPECT(nest_outer_after_null, "the outer task's allocation succeeded after the interrupt");
    EXPECT_STATUS(st, ML_TOKEN);
    ml_token_destroy(nest_token);
}

/* ---------------------------------------------------------------------------------------------
 * Misuse, where memlimits owns malloc. */
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

static const scenario scenarios[] = {
    SCENARIO(allocation_limit_exact),
    SCENARIO(allocation_limit_crossing_is_refused),
    SCENARIO(allocation_limit_counts_calloc_and_realloc),
    SCENARIO(allocation_limit_zero_byte_counts_zero),
    SCENARIO(nested_inner_limit_does_not_extend_outer),
    SCENARIO(nested_allocations_count_against_every_limit),
    SCENARIO(nested_enclosing_interrupt_interrupts_inner),
    SCENARIO(misuse_is_refused),
};

SCENARIOS_MAIN(scenarios)
