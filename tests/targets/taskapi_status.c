/* Target for tests/test_taskapi.c: what ml_run returns, by level. A task returns its own limit's
 * reason when its own limit fired, ML_OUTER_LIMIT when only an enclosing task's did, ML_HEAP_CAP
 * when neither did and the process heap cap refused one of its allocations, ML_OK otherwise.
 * Linked with -lmemlimits, built with -fno-builtin; `taskapi_status NAME` runs one scenario
 * (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tasks_common.h"

/* ---------------------------------------------------------------------------------------------
 * Levels. A nest of up to three tasks; each level's task allocates `before` blocks of 100
 * bytes, runs the next level (if any), then allocates `after` blocks; `set_token` makes the
 * level set that token before its blocks; `spin` makes the innermost level neither allocate nor
 * poll but wait for `release`. */
#define LEVELS 3

typedef struct level {
    ml_limits limits;
    int before, after;
    ml_token *set_token;       /* set by this level at its start (NULL: none) */
    int set_late;              /* ... after its `before` blocks instead */
    ml_status status;          /* what its ml_run returned */
    int got_before, got_after; /* blocks allocated */
    int err_before;            /* errno of its first NULL before the nested level */
    int null_after_nested;     /* its first allocation after the nested level failed */
} level;

static level L[LEVELS];
static int depth;

static int alloc_blocks(int count, int *err)
{
    int got = 0;
    for (int i = 0; i < count; i++) {
        errno = 0;
        void *p = malloc(100);
        if (p == NULL) {
            if (err != NULL) *err = errno;
            break;
        }
        free(p);
        got++;
    }
    return got;
}

static void run_level(void *arg)
{
    int i = (int)(intptr_t)arg;
    level *l = &L[i];
    if (l->set_token != NULL && !l->set_late) ml_token_set(l->set_token);
    l->got_before = alloc_blocks(l->before, &l->err_before);
    if (l->set_token != NULL && l->set_late) ml_token_set(l->set_token);
    if (i + 1 < depth) {
        L[i + 1].status = ml_run(&L[i + 1].limits, run_level, (void *)(intptr_t)(i + 1), NULL);
        void *p = malloc(1);
        l->null_after_nested = p == NULL;
        free(p);
    }
    l->got_after = alloc_blocks(l->after, NULL);
}

static ml_status run_levels(int n)
{
    depth = n;
    L[0].status = ml_run(&L[0].limits, run_level, (void *)(intptr_t)0, NULL);
    return L[0].status;
}

static void reset_levels(void)
{
    memset(L, 0, sizeof L);
}

/* Allocation limits at two levels: whichever fires is reported by its own level. */
static void own_limit_reported_by_its_own_level(void)
{
    /* the inner's own limit: the inner reports it, the outer goes on and returns ML_OK */
    reset_levels();
    L[0].limits = (ml_limits){100000, 0, NULL, 0};
    L[0].after = 10;
    L[1].limits = (ml_limits){1000, 0, NULL, 0};
    L[1].before = 20;
    EXPECT_STATUS(run_levels(2), ML_OK);
    EXPECT_STATUS(L[1].status, ML_ALLOCATION_LIMIT);
    EXPECT(L[1].got_before == 10 && L[0].got_after == 10 && !L[0].null_after_nested,
           "inner got %d, outer got %d after", L[1].got_before, L[0].got_after);

    /* the outer's limit fires inside the inner task: the inner says an enclosing limit fired,
     * the outer reports its own */
    reset_levels();
    L[0].limits = (ml_limits){1000, 0, NULL, 0};
    L[1].limits = (ml_limits){100000, 0, NULL, 0};
    L[1].before = 20;
    EXPECT_STATUS(run_levels(2), ML_ALLOCATION_LIMIT);
    EXPECT_STATUS(L[1].status, ML_OUTER_LIMIT);
    EXPECT(L[1].got_before == 10 && L[1].err_before == ENOMEM && L[0].null_after_nested,
           "inner got %d (errno %d); outer refused after: %d", L[1].got_before, L[1].err_before,
           L[0].null_after_nested);

    /* both limits fire at the same allocation: each reports its own */
    reset_levels();
    L[0].limits = (ml_limits){1000, 0, NULL, 0};
    L[1].limits = (ml_limits){1000, 0, NULL, 0};
    L[1].before = 20;
    EXPECT_STATUS(run_levels(2), ML_ALLOCATION_LIMIT);
    EXPECT_STATUS(L[1].status, ML_ALLOCATION_LIMIT);

    /* three levels, the middle one's limit fires in the innermost: innermost ML_OUTER_LIMIT,
     * middle its own, outermost not interrupted */
    reset_levels();
    L[0].limits = (ml_limits){0, 0, NULL, 0};
    L[0].after = 5;
    L[1].limits = (ml_limits){2000, 0, NULL, 0};
    L[2].limits = (ml_limits){0, 0, NULL, 0};
    L[2].before = 30;
    EXPECT_STATUS(run_levels(3), ML_OK);
    EXPECT_STATUS(L[1].status, ML_ALLOCATION_LIMIT);
    EXPECT_STATUS(L[2].status, ML_OUTER_LIMIT);
    EXPECT(L[2].got_before == 20 && L[0].got_after == 5, "innermost got %d, outermost %d after",
           L[2].got_before, L[0].got_after);
}

/* Tokens: an enclosing task's token is the enclosing task's to report. */
static void enclosing_token_is_outer_limit(void)
{
    for (int unwind = 0; unwind <= 1; unwind++) {
        /* set by the inner task itself */
        ml_token *tok = ml_token_create();
        reset_levels();
        L[0].limits = (ml_limits){0, 0, tok, 0};
        L[1].limits = (ml_limits){1 * MIB, 0, NULL, unwind ? ML_UNWIND : 0};
        L[1].set_token = tok;
        L[1].before = 5;
        EXPECT_STATUS(run_levels(2), ML_TOKEN);
        EXPECT_STATUS(L[1].status, ML_OUTER_LIMIT);
        EXPECT(L[1].got_before == 0, "unwind %d: the inner allocated %d blocks after the set",
               unwind, L[1].got_before);
        EXPECT(L[0].null_after_nested, "unwind %d: the outer allocated after its token", unwind);
        ml_token_destroy(tok);

        /* already set when the inner task starts: it starts interrupted */
        tok = ml_token_create();
        reset_levels();
        L[0].limits = (ml_limits){0, 0, tok, 0};
        L[0].set_token = tok;
        L[1].limits = (ml_limits){0, 0, NULL, unwind ? ML_UNWIND : 0};
        L[1].before = 1;
        EXPECT_STATUS(run_levels(2), ML_TOKEN);
        EXPECT_STATUS(L[1].status, ML_OUTER_LIMIT);
        EXPECT(L[1].got_before == 0, "unwind %d: the inner allocated under a set token", unwind);
        ml_token_destroy(tok);

        /* the same token at both levels: both report it as their own */
        tok = ml_token_create();
        reset_levels();
        L[0].limits = (ml_limits){0, 0, tok, 0};
        L[1].limits = (ml_limits){0, 0, tok, unwind ? ML_UNWIND : 0};
        L[1].set_token = tok;
        EXPECT_STATUS(run_levels(2), ML_TOKEN);
        EXPECT_STATUS(L[1].status, ML_TOKEN);
        ml_token_destroy(tok);

        /* the outer's allocation limit fires, then the inner task's own token is set: the
         * inner reports its own */
        tok = ml_token_create();
        reset_levels();
        L[0].limits = (ml_limits){500, 0, NULL, 0};
        L[1].limits = (ml_limits){0, 0, tok, 0};
        L[1].before = 10; /* crosses the outer limit at the 6th block */
        L[1].set_token = tok;
        L[1].set_late = 1;
        EXPECT_STATUS(run_levels(2), ML_ALLOCATION_LIMIT);
        EXPECT_STATUS(L[1].status, ML_TOKEN);
        EXPECT(L[1].got_before == 5, "the inner allocated %d blocks", L[1].got_before);
        ml_token_destroy(tok);
    }
}

/* An enclosing task's token set by another thread while the inner task neither allocates nor
 * polls: the inner's status does not depend on polling. */
static ml_token *quiet_token;
static int quiet_started, quiet_release;
static ml_status quiet_inner;

static void task_quiet(void *arg)
{
    (void)arg;
    __atomic_store_n(&quiet_started, 1, __ATOMIC_RELEASE);
    wait_flag(&quiet_release, 10);
}

static void task_quiet_outer(void *arg)
{
    (void)arg;
    ml_limits inner = {0, 0, NULL, 0};
    quiet_inner = ml_run(&inner, task_quiet, NULL, NULL);
}

static void *quiet_setter(void *arg)
{
    (void)arg;
    wait_flag(&quiet_started, 10);
    ml_token_set(quiet_token);
    __atomic_store_n(&quiet_release, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void enclosing_token_reported_without_polling(void)
{
    quiet_token = ml_token_create();
    pthread_t th;
    pthread_create(&th, NULL, quiet_setter, NULL);
    ml_status st = ml_limit_with_token(quiet_token, task_quiet_outer, NULL);
    pthread_join(th, NULL);
    EXPECT_STATUS(quiet_inner, ML_OUTER_LIMIT);
    EXPECT_STATUS(st, ML_TOKEN);
    ml_token_destroy(quiet_token);
}

/* The global memory limit at the outer level only. */
static void enclosing_global_limit_is_outer_limit(void)
{
    reset_levels();
    L[0].limits = (ml_limits){0, 1, NULL, 0};
    L[1].limits = (ml_limits){0, 0, NULL, 0};
    L[1].before = 1;
    void *keep = malloc(1 * MIB);
    EXPECT(keep != NULL && ml_heap_live() >= 1 * MIB, "1 MiB not in the live heap");
    ml_set_global_memory_limit(1 * MIB / 2); /* the heap is over it already */
    ml_status st = run_levels(2);
    ml_set_global_memory_limit(ML_UNLIMITED);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT_STATUS(L[1].status, ML_OUTER_LIMIT);
    /* at both levels: each its own */
    reset_levels();
    L[0].limits = (ml_limits){0, 1, NULL, 0};
    L[1].limits = (ml_limits){0, 1, NULL, 0};
    ml_set_global_memory_limit(1 * MIB / 2);
    st = run_levels(2);
    ml_set_global_memory_limit(ML_UNLIMITED);
    free(keep);
    EXPECT_STATUS(st, ML_MEMORY_LIMIT);
    EXPECT_STATUS(L[1].status, ML_MEMORY_LIMIT);
}

/* ---------------------------------------------------------------------------------------------
 * The heap cap. `big` is refused under a cap set 16 MiB above the live heap. */
#define BIG (64 * MIB)

typedef struct capped {
    int masked;         /* make the refused allocation masked */
    int refused, err;   /* the big allocation got NULL, errno */
    int small_after_ok; /* a small allocation after it succeeded */
    uint64_t allocated; /* ml_task_allocated() after */
} capped;

static void task_capped(void *arg)
{
    capped *c = arg;
    if (c->masked) ml_mask();
    errno = 0;
    void *p = malloc(BIG);
    c->refused = p == NULL;
    c->err = errno;
    if (c->masked) ml_unmask();
    free(p);
    void *q = malloc(100);
    c->small_after_ok = q != NULL;
    free(q);
    c->allocated = ml_task_allocated();
}

static void cap_near(void)
{
    ml_set_heap_cap(ml_heap_live() + 16 * MIB);
}

static void heap_cap_refusal_is_heap_cap(void)
{
    for (int flags = 0; flags <= ML_UNWIND; flags += ML_UNWIND)
        for (int masked = 0; masked <= 1; masked++) {
            capped c = {.masked = masked};
            uint64_t allocated = 0;
            cap_near();
            ml_status st =
                ml_run(&(ml_limits){0, 0, NULL, (unsigned)flags}, task_capped, &c, &allocated);
            ml_set_heap_cap(ML_UNLIMITED);
            EXPECT_STATUS(st, ML_HEAP_CAP);
            EXPECT(c.refused && c.err == ENOMEM && c.small_after_ok,
                   "flags %d masked %d: refused %d errno %d, then %d", flags, masked, c.refused,
                   c.err, c.small_after_ok);
            EXPECT_U64(allocated, 100); /* the refused request is not counted */
            EXPECT_U64(c.allocated, 100);
        }
    /* with the cap lifted, the same task is ML_OK: the status belongs to the run */
    capped c = {0};
    EXPECT_STATUS(ml_limit_allocations(0, task_capped, &c, NULL), ML_OK);
    EXPECT(!c.refused, "refused without a cap");
}

/* A task limit that fires takes precedence; a refusal outside the task, or in another thread's
 * task, is not the task's; a request no address space holds is not the heap cap's. */
static void task_cap_then_limit(void *arg)
{
    capped *c = arg;
    task_capped(c);
    void *p = malloc(2000); /* past the task's allocation limit */
    free(p);
}

static void task_huge(void *arg)
{
    int *refused = arg;
    void *p = malloc((size_t)-1 / 2);
    *refused = p == NULL;
    free(p);
}

typedef struct capped_run {
    capped c;
    ml_status status;
} capped_run;

static void *capped_thread(void *arg)
{
    capped_run *r = arg;
    r->status = ml_limit_allocations(0, task_capped, &r->c, NULL);
    return NULL;
}

static void heap_cap_is_reported_only_without_task_limit(void)
{
    capped c = {0};
    cap_near();
    EXPECT_STATUS(ml_limit_allocations(1000, task_cap_then_limit, &c, NULL), ML_ALLOCATION_LIMIT);
    EXPECT(c.refused, "the big block was not refused");

    /* refused outside any task: the next task is not concerned */
    void *p = malloc(BIG);
    EXPECT(p == NULL, "not refused outside tasks");
    free(p);
    EXPECT_STATUS(ml_limit_allocations(0, task_mark_ran, NULL, NULL), ML_OK);

    /* refused in another thread's task: this one is not concerned */
    static capped_run other;
    pthread_t th;
    pthread_create(&th, NULL, capped_thread, &other);
    pthread_join(th, NULL);
    EXPECT_STATUS(other.status, ML_HEAP_CAP);
    EXPECT_STATUS(ml_limit_allocations(0, task_mark_ran, NULL, NULL), ML_OK);
    ml_set_heap_cap(ML_UNLIMITED);

    /* no cap involved */
    int refused = 0;
    EXPECT_STATUS(ml_limit_allocations(0, task_huge, &refused, NULL), ML_OK);
    EXPECT(refused, "malloc(SIZE_MAX / 2) succeeded");
}

/* Nested: a refusal in the inner task is one of the outer's allocations too; an enclosing limit
 * that fired takes precedence for the inner task. */
typedef struct cnest {
    capped c;
    ml_limits inner;
    ml_status inner_status;
    int outer_blocks; /* allocate these 100-byte blocks after the inner task */
} cnest;

static void task_cap_outer(void *arg)
{
    cnest *n = arg;
    n->inner_status = ml_run(&n->inner, task_capped, &n->c, NULL);
    alloc_blocks(n->outer_blocks, NULL);
}

static void heap_cap_nested(void)
{
    cnest n = {.inner = {0, 0, NULL, 0}};
    cap_near();
    EXPECT_STATUS(ml_limit_allocations(0, task_cap_outer, &n, NULL), ML_HEAP_CAP);
    EXPECT_STATUS(n.inner_status, ML_HEAP_CAP);

    /* the outer's limit fires after the inner returned: the outer reports its own limit */
    n = (cnest){.inner = {0, 0, NULL, 0}, .outer_blocks = 20};
    EXPECT_STATUS(ml_limit_allocations(1000, task_cap_outer, &n, NULL), ML_ALLOCATION_LIMIT);
    EXPECT_STATUS(n.inner_status, ML_HEAP_CAP);

    /* the outer's token set before the inner refusal: the inner reports ML_OUTER_LIMIT (its
     * allocations were refused for the enclosing task's sake) */
    ml_token *tok = ml_token_create();
    ml_token_set(tok);
    n = (cnest){.inner = {0, 0, NULL, 0}};
    ml_status st = ml_limit_with_token(tok, task_cap_outer, &n);
    EXPECT_STATUS(st, ML_TOKEN);
    EXPECT_STATUS(n.inner_status, ML_OUTER_LIMIT);
    ml_token_destroy(tok);
    ml_set_heap_cap(ML_UNLIMITED);
}

static const scenario scenarios[] = {
    SCENARIO(own_limit_reported_by_its_own_level),
    SCENARIO(enclosing_token_is_outer_limit),
    SCENARIO(enclosing_token_reported_without_polling),
    SCENARIO(enclosing_global_limit_is_outer_limit),
    SCENARIO(heap_cap_refusal_is_heap_cap),
    SCENARIO(heap_cap_is_reported_only_without_task_limit),
    SCENARIO(heap_cap_nested),
};

SCENARIOS_MAIN(scenarios)
