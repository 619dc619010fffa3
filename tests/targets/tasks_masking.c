/* Target for tests/test_tasks.c: masking (ml_mask, ml_unmask) defers delivery and nests, and
 * ml_with_resource runs acquire and release masked, release exactly once, on return and on
 * unwind, innermost first. Linked with -lmemlimits, built with -fno-builtin; `tasks_masking NAME`
 * runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "tasks_common.h"

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

    /* The same in ENOMEM mode: scope's allocation gets NULL and scope returns; release runs
     * once, interrupted. */
    RR = (resrec){.scope_loop = 1};
    resource_rc = -12345;
    limits.flags = 0;
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

static const scenario scenarios[] = {
    SCENARIO(mask_nests_and_defers_delivery),
    SCENARIO(mask_unmask_without_mask_is_no_op),
    SCENARIO(resource_masked_acquire_and_release),
    SCENARIO(resource_release_once_on_unwind),
    SCENARIO(resource_release_once_on_check_unwind),
    SCENARIO(resource_release_on_return),
    SCENARIO(resource_acquire_failure_and_null_callbacks),
    SCENARIO(resource_nested_release_innermost_first),
};

SCENARIOS_MAIN(scenarios)
