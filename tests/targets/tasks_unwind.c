/* Target for tests/test_tasks.c: ML_UNWIND delivery and cleanups. The task's own allocations
 * unwind to its ml_run, running the cleanups innermost first, once, masked; allocations libc and
 * the dynamic loader make on its behalf get ENOMEM instead; ml_check unwinds in every mode; an
 * unwind stops at the innermost task, and never leaves a signal handler. Linked with
 * -lmemlimits, built with -fno-builtin; `tasks_unwind NAME` runs one scenario
 * (tasks_common.h). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasks_common.h"

/* Runs `task` with a fresh record UR under a 1000-byte allocation limit with ML_UNWIND; returns
 * its status, and through `allocated` (may be NULL) the bytes it allocated. */
static ml_status run_unwinding(void (*task)(void *), uint64_t *allocated)
{
    UR = (unwindrec){0};
    ml_limits limits = {1000, 0, NULL, ML_UNWIND};
    return ml_run(&limits, task, NULL, allocated);
}

/* Under a 1000-byte limit, the 11th of task_unwind's 100-byte blocks unwinds: its cleanups run,
 * innermost first, once each, interrupted and masked. */
static void unwind_runs_cleanups_innermost_first_once(void)
{
    uint64_t allocated = 0;
    ml_status st = run_unwinding(task_unwind, &allocated);
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
    st = run_unwinding(task_unwind, NULL);
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
    ml_status st = run_unwinding(task_libc, NULL);
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
    ml_status st = run_unwinding(task_dlopen, NULL);
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
    ml_status st = run_unwinding(task_pop, NULL);
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
 * Signal handlers. */
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
    set_handler(SIGUSR1, allocating_handler, 0);
    ml_status st = run_unwinding(task_raise, NULL);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT(handler_returned, "the task was unwound out of the signal handler");
    EXPECT(handler_null, "the handler's allocation in an interrupted task succeeded");
    EXPECT(raise_returned, "raise() did not return");
    EXPECT(!after_raise_alloc, "the task's own allocation after the handler did not unwind");
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    EXPECT(!sigismember(&cur, SIGUSR1), "SIGUSR1 is left blocked in the thread after ml_run");
}

static const scenario scenarios[] = {
    SCENARIO(unwind_runs_cleanups_innermost_first_once),
    SCENARIO(unwind_libc_allocations_get_enomem),
    SCENARIO(unwind_loader_allocations_get_enomem),
    SCENARIO(check_unwinds_in_enomem_mode),
    SCENARIO(unwind_stops_at_innermost_task),
    SCENARIO(cleanup_pop_executes_masked_or_drops),
    SCENARIO(unwind_never_out_of_signal_handler),
};

SCENARIOS_MAIN(scenarios)
