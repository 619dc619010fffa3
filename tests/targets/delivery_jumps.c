/* Target for tests/test_delivery.c: task functions that leave ml_run without returning, by
 * longjmp, _longjmp, siglongjmp or __longjmp_chk (what _FORTIFY_SOURCE makes of longjmp), from
 * the task's code or from a signal handler. Afterwards the thread is outside the task: its
 * allocations are not limited by it, its count goes on, a new task works, an enclosing task
 * that the jump lands in keeps its limits, the cleanups of the frames the jump discarded ran
 * once, and no other thread touches the abandoned task's frame. Jumps that stay inside the task
 * (on an alternate signal stack, or back into the task's own frames) leave it alone.
 * See delivery_harness.h for the protocol. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tasks_common.h"

/* What `longjmp` becomes under _FORTIFY_SOURCE; <setjmp.h> declares it only then. */
extern void __longjmp_chk(struct __jmp_buf_tag env[1], int val) __attribute__((noreturn));

#define BLOCK 100

enum via { VIA_LONGJMP, VIA__LONGJMP, VIA_SIGLONGJMP, VIA_LONGJMP_CHK, VIA_COUNT };
static const char *const via_names[] = {"longjmp", "_longjmp", "siglongjmp", "__longjmp_chk"};

static sigjmp_buf out; /* set with sigsetjmp(out, 1): valid for every way of jumping */

static __attribute__((noreturn)) void jump_out(sigjmp_buf env, enum via via)
{
    switch (via) {
    case VIA_LONGJMP:
        longjmp(env, 1);
    case VIA__LONGJMP:
        _longjmp(env, 1);
    case VIA_SIGLONGJMP:
        siglongjmp(env, 1);
    default:
        __longjmp_chk(env, 1);
    }
}

static int cleanup_calls[4];

static void count_cleanup(void *arg)
{
    cleanup_calls[(intptr_t)arg]++;
}

/* Allocates `count` blocks of BLOCK bytes and frees them; returns how many were allocated
 * before the first NULL. */
static int allocate_blocks(int count)
{
    static void *keep[4096];
    int got = 0;
    for (; got < count && got < 4096; got++) {
        keep[got] = malloc(BLOCK);
        if (keep[got] == NULL) break;
    }
    for (int i = 0; i < got; i++)
        free(keep[i]);
    return got;
}

static void task_count_blocks(void *arg)
{
    *(int *)arg = allocate_blocks(101);
}

/* After the thread left a task without ml_run returning: it is outside any task; allocations
 * are not refused; the count goes on exactly; and a new task's limit applies exactly (it would
 * not if the mask depth the dead task left had stayed). */
static void expect_outside_tasks(const char *what)
{
    EXPECT(!ml_is_interrupted(), "%s: ml_is_interrupted() outside tasks", what);
    uint64_t before = ml_thread_allocated();
    int got = allocate_blocks(1000);
    EXPECT(got == 1000, "%s: %d of 1000 allocations outside tasks succeeded", what, got);
    EXPECT_U64(ml_thread_allocated() - before, 1000 * BLOCK);
    int in_task = 0;
    uint64_t allocated = 0;
    ml_limits limits = {100 * BLOCK, 0, NULL, 0};
    ml_status st = ml_run(&limits, task_count_blocks, &in_task, &allocated);
    EXPECT(st == ML_ALLOCATION_LIMIT && in_task == 100 && allocated == 100 * BLOCK,
           "%s: a new task under a %d-byte limit: status %s, %d blocks, %llu bytes", what,
           100 * BLOCK, ml_strstatus(st), in_task, (unsigned long long)allocated);
    ml_token *tok = ml_token_create();
    in_task = 0;
    st = ml_limit_with_token(tok, task_count_blocks, &in_task);
    EXPECT(st == ML_OK && in_task == 101, "%s: a new token task: status %s, %d blocks", what,
           ml_strstatus(st), in_task);
    ml_token_destroy(tok);
}

/* ---------------------------------------------------------------------------------------------
 * The task's function jumps out of ml_run, interrupted and masked, with a cleanup registered. */
typedef struct jumper {
    enum via via;
    ml_token *token;
    int reached; /* code after the jump ran (never) */
} jumper;

static jumper J;

static void task_jumps_out(void *arg)
{
    jumper *j = arg;
    allocate_blocks(10);
    ML_CLEANUP_PUSH(count_cleanup, (void *)(intptr_t)1);
    ml_token_set(j->token); /* the task is interrupted: its next allocation would be refused */
    ml_mask();
    jump_out(out, j->via);
    j->reached = 1;
    ML_CLEANUP_POP(0);
}

static void longjmp_out_of_task_leaves_it(void)
{
    for (volatile int via = 0; via < VIA_COUNT; via++) {
        memset(cleanup_calls, 0, sizeof cleanup_calls);
        J = (jumper){.via = (enum via)via, .token = ml_token_create()};
        volatile ml_status st = (ml_status)-100;
        if (sigsetjmp(out, 1) == 0) {
            ml_limits limits = {4 * KIB, 0, J.token, 0};
            st = ml_run(&limits, task_jumps_out, &J, NULL);
        }
        EXPECT(st == (ml_status)-100 && !J.reached, "%s: ml_run returned %d", via_names[via],
               (int)st);
        EXPECT(cleanup_calls[1] == 1, "%s: the discarded frame's cleanup ran %d times",
               via_names[via], cleanup_calls[1]);
        expect_outside_tasks(via_names[via]);
        ml_token_destroy(J.token);
    }
}

/* ---------------------------------------------------------------------------------------------
 * An inner task's function jumps to a point inside the outer task: the outer task goes on under
 * its own limit, exactly; the cleanup registered by the outer task in a frame the jump discarded
 * ran at the jump, the one in the frame the jump lands in did not. */
static sigjmp_buf into_outer;
static ml_status nested_outer_status, nested_inner_status;
static int nested_interrupted, nested_blocks;

static void task_inner_jumps(void *arg)
{
    jumper *j = arg;
    allocate_blocks(5);
    ML_CLEANUP_PUSH(count_cleanup, (void *)(intptr_t)2);
    ml_token_set(j->token);
    jump_out(into_outer, j->via);
    ML_CLEANUP_POP(0);
}

static __attribute__((noinline)) void outer_helper(jumper *j)
{
    ML_CLEANUP_PUSH(count_cleanup, (void *)(intptr_t)3);
    ml_limits inner = {0, 0, j->token, ML_UNWIND};
    nested_inner_status = ml_run(&inner, task_inner_jumps, j, NULL);
    ML_CLEANUP_POP(0);
}

static void task_outer(void *arg)
{
    jumper *j = arg;
    allocate_blocks(10);
    ML_CLEANUP_PUSH(count_cleanup, (void *)(intptr_t)1);
    if (sigsetjmp(into_outer, 1) == 0) outer_helper(j);
    nested_interrupted = ml_is_interrupted();
    static void *keep[4096];
    nested_blocks = 0;
    while (nested_blocks < 4096 && (keep[nested_blocks] = malloc(BLOCK)) != NULL)
        nested_blocks++;
    for (int i = 0; i < nested_blocks; i++)
        free(keep[i]);
    ML_CLEANUP_POP(0);
}

static void longjmp_from_inner_task_to_outer_task(void)
{
    for (int via = 0; via < VIA_COUNT; via++) {
        memset(cleanup_calls, 0, sizeof cleanup_calls);
        J = (jumper){.via = (enum via)via, .token = ml_token_create()};
        nested_inner_status = (ml_status)-100;
        uint64_t allocated = 0;
        ml_limits outer = {200 * BLOCK, 0, NULL, 0};
        nested_outer_status = ml_run(&outer, task_outer, &J, &allocated);
        const char *what = via_names[via];
        EXPECT(nested_inner_status == (ml_status)-100, "%s: the inner ml_run returned %d", what,
               (int)nested_inner_status);
        EXPECT(!nested_interrupted, "%s: the outer task is interrupted after the jump", what);
        /* 10 + 5 blocks before the jump: 185 more fit the outer limit */
        EXPECT(nested_blocks == 185, "%s: %d blocks after the jump, expected 185", what,
               nested_blocks);
        EXPECT_STATUS(nested_outer_status, ML_ALLOCATION_LIMIT);
        EXPECT_U64(allocated, 200 * BLOCK);
        EXPECT(cleanup_calls[2] == 1 && cleanup_calls[3] == 1 && cleanup_calls[1] == 0,
               "%s: cleanups ran: inner task's %d, discarded outer frame's %d, landing frame's %d",
               what, cleanup_calls[2], cleanup_calls[3], cleanup_calls[1]);
        ml_token_destroy(J.token);
        expect_outside_tasks(what);
    }
}

/* ---------------------------------------------------------------------------------------------
 * An ML_WAKE token and global-memory task abandoned by a jump must be off the process-wide list
 * at once: the waker (token set) and a thread that crosses the global limit walk that list, and
 * would read and write the abandoned frame, which the thread reuses for its next calls. The
 * frame is overwritten with a pattern (every word 1: as a task, a link to address 1); another
 * ML_WAKE task with the same token must then be woken, and the pattern must stay. */
typedef struct bystander {
    ml_token *token;
    int started;
    ml_status status;
} bystander;

static void task_sleeps_long(void *arg)
{
    bystander *b = arg;
    raise_flag(&b->started);
    struct timespec ts = {10, 0};
    nanosleep(&ts, NULL); /* EINTR when woken */
}

static void *bystander_main(void *arg)
{
    bystander *b = arg;
    ml_limits limits = {0, 0, b->token, ML_WAKE};
    b->status = ml_run(&limits, task_sleeps_long, b, NULL);
    return NULL;
}

static void *crosser_main(void *arg)
{
    void **crossing = arg;
    crossing[0] = malloc(32 * MIB); /* crosses the global limit */
    crossing[1] = malloc(1 * MIB);  /* an event after the crossing: marks the global tasks */
    return NULL;
}

#define PATTERN_WORDS 4096

static __attribute__((noinline)) void reuse_frame_and_walk(ml_token *tok)
{
    volatile uint64_t words[PATTERN_WORDS];
    for (int i = 0; i < PATTERN_WORDS; i++)
        words[i] = 1;

    ml_set_global_memory_limit(ml_heap_live() + 8 * MIB);
    void *crossing[2] = {NULL, NULL};
    pthread_t crosser;
    pthread_create(&crosser, NULL, crosser_main, crossing);
    pthread_join(crosser, NULL);
    EXPECT(crossing[0] != NULL && crossing[1] != NULL, "the crossing allocations failed");

    bystander b = {tok, 0, (ml_status)-100};
    pthread_t th;
    pthread_create(&th, NULL, bystander_main, &b);
    wait_flag(&b.started, 10);
    sleep_ms(20);
    ml_token_set(tok); /* the waker walks the list */
    pthread_join(th, NULL);
    EXPECT_STATUS(b.status, ML_TOKEN);

    int changed = 0;
    for (int i = 0; i < PATTERN_WORDS; i++)
        changed += words[i] != 1;
    EXPECT(changed == 0, "%d words of the reused frame were written by another thread", changed);
    free(crossing[0]);
    free(crossing[1]);
    ml_set_global_memory_limit(ML_UNLIMITED);
}

static void task_jumps_at_once(void *arg)
{
    jumper *j = arg;
    allocate_blocks(1);
    jump_out(out, j->via);
}

static void abandoned_task_not_touched_by_other_threads(void)
{
    J = (jumper){.via = VIA_LONGJMP, .token = ml_token_create()};
    if (sigsetjmp(out, 1) == 0) {
        ml_limits limits = {0, 1, J.token, ML_WAKE};
        ml_run(&limits, task_jumps_at_once, &J, NULL);
    }
    reuse_frame_and_walk(J.token);
    expect_outside_tasks("after the walks");
    ml_token_destroy(J.token);
}

/* ---------------------------------------------------------------------------------------------
 * A signal handler jumps out of the task (the classic timeout pattern): the same as from the
 * task's code. */
static void jump_out_handler(int sig)
{
    (void)sig;
    siglongjmp(out, 1);
}

static void task_raises(void *arg)
{
    (void)arg;
    allocate_blocks(10);
    ML_CLEANUP_PUSH(count_cleanup, (void *)(intptr_t)1);
    raise(SIGUSR1);
    ML_CLEANUP_POP(0);
}

static void siglongjmp_from_signal_handler_leaves_task(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = jump_out_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    memset(cleanup_calls, 0, sizeof cleanup_calls);
    ml_token *volatile tok = ml_token_create();
    volatile ml_status st = (ml_status)-100;
    if (sigsetjmp(out, 1) == 0) {
        ml_limits limits = {4 * KIB, 0, tok, ML_UNWIND};
        st = ml_run(&limits, task_raises, NULL, NULL);
    }
    EXPECT(st == (ml_status)-100, "ml_run returned %d", (int)st);
    EXPECT(cleanup_calls[1] == 1, "the discarded frame's cleanup ran %d times", cleanup_calls[1]);
    expect_outside_tasks("from a handler");
    ml_token_destroy(tok);
    signal(SIGUSR1, SIG_DFL);
}

/* ---------------------------------------------------------------------------------------------
 * Jumps that do not leave the task: a handler on an alternate signal stack that jumps within
 * that stack, and a handler that jumps back into the task's own frames (recovering from a fault).
 * The task's exact limit still applies afterwards, and a jump out of the task after them is still
 * seen. In the main thread and in another thread. */
static sigjmp_buf in_handler, in_task;
static int handler_mode; /* 0: jump within the handler; 1: back into the task; 2: 0, then out */

static void jumping_handler(int sig)
{
    (void)sig;
    if (handler_mode == 1) siglongjmp(in_task, 1);
    if (sigsetjmp(in_handler, 0) == 0) siglongjmp(in_handler, 1);
}

static int kept_blocks;

static void task_raises_and_continues(void *arg)
{
    (void)arg;
    static void *keep[4096];
    kept_blocks = 0;
    for (; kept_blocks < 10; kept_blocks++)
        keep[kept_blocks] = malloc(BLOCK);
    if (sigsetjmp(in_task, 1) == 0) raise(SIGUSR1);
    if (handler_mode == 2) {
        for (int i = 0; i < kept_blocks; i++)
            free(keep[i]);
        siglongjmp(out, 1);
    }
    while (kept_blocks < 4096 && (keep[kept_blocks] = malloc(BLOCK)) != NULL)
        kept_blocks++;
    for (int i = 0; i < kept_blocks; i++)
        free(keep[i]);
}

static void *jumps_inside_task_body(void *arg)
{
    (void)arg;
    stack_t ss = {.ss_sp = malloc(64 * KIB), .ss_size = 64 * KIB, .ss_flags = 0};
    EXPECT(sigaltstack(&ss, NULL) == 0, "sigaltstack: errno %d", errno);
    for (handler_mode = 0; handler_mode <= 2; handler_mode++) {
        uint64_t allocated = 0;
        volatile ml_status st = (ml_status)-100;
        ml_limits limits = {100 * BLOCK, 0, NULL, 0};
        if (sigsetjmp(out, 1) == 0)
            st = ml_run(&limits, task_raises_and_continues, NULL, &allocated);
        if (handler_mode == 2) {
            EXPECT(st == (ml_status)-100, "ml_run returned %d", (int)st);
            expect_outside_tasks("after a jump within the alternate stack");
            continue;
        }
        const char *what = handler_mode ? "back into the task" : "within the alternate stack";
        EXPECT(st == ML_ALLOCATION_LIMIT && kept_blocks == 100 && allocated == 100 * BLOCK,
               "%s: status %s, %d blocks, %llu bytes", what, ml_strstatus(st), kept_blocks,
               (unsigned long long)allocated);
    }
    void *alt = ss.ss_sp;
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(alt);
    return NULL;
}

static void jumps_inside_task_keep_it(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = jumping_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    jumps_inside_task_body(NULL);
    pthread_t th;
    pthread_create(&th, NULL, jumps_inside_task_body, NULL);
    pthread_join(th, NULL);
    signal(SIGUSR1, SIG_DFL);
}

/* ---------------------------------------------------------------------------------------------
 * A thread that left a task by a jump can still exit: ml_run's own cancellation cleanup must
 * not stay registered with the thread library after its frame is gone. */
static int thread_done;

static void *thread_jumps_then_exits(void *arg)
{
    (void)arg;
    J = (jumper){.via = VIA_SIGLONGJMP, .token = ml_token_create()};
    if (sigsetjmp(out, 1) == 0) {
        ml_limits limits = {0, 0, J.token, 0};
        ml_run(&limits, task_jumps_at_once, &J, NULL);
    }
    expect_outside_tasks("in a thread");
    ml_token_destroy(J.token);
    raise_flag(&thread_done);
    pthread_exit(NULL);
}

static void thread_exits_after_jumping_out_of_task(void)
{
    pthread_t th;
    pthread_create(&th, NULL, thread_jumps_then_exits, NULL);
    pthread_join(th, NULL);
    EXPECT(thread_done, "the thread did not get past the jump");
}

/* ---------------------------------------------------------------------------------------------
 * pthread_exit inside a task (memlimits.h: the task's cleanups run, and it is taken down as by an
 * unwind): the cleanups registered in the task's function and in a deeper frame run once each,
 * innermost first, while their frames still exist. */
static int exit_order[4], exit_calls;

static void record_exit_cleanup(void *arg)
{
    int which = (int)(intptr_t)arg;
    if (exit_calls < 4) exit_order[exit_calls] = which;
    exit_calls++;
}

static __attribute__((noinline)) void exit_deeper(void)
{
    volatile char pad[64];
    memset((char *)pad, 0, sizeof pad);
    ML_CLEANUP_PUSH(record_exit_cleanup, (void *)(intptr_t)2);
    pthread_exit(NULL);
    ML_CLEANUP_POP(0);
}

static void task_exits_thread(void *arg)
{
    (void)arg;
    allocate_blocks(10);
    ML_CLEANUP_PUSH(record_exit_cleanup, (void *)(intptr_t)1);
    exit_deeper();
    ML_CLEANUP_POP(0);
}

static void *thread_exits_in_task(void *arg)
{
    ml_limits limits = {4 * KIB, 0, (ml_token *)arg, 0};
    ml_run(&limits, task_exits_thread, NULL, NULL);
    return NULL;
}

static void thread_exit_in_task_runs_its_cleanups(void)
{
    ml_token *tok = ml_token_create();
    pthread_t th;
    pthread_create(&th, NULL, thread_exits_in_task, tok);
    pthread_join(th, NULL);
    EXPECT(exit_calls == 2 && exit_order[0] == 2 && exit_order[1] == 1,
           "cleanups: %d calls, order %d %d (expected 2 then 1)", exit_calls, exit_order[0],
           exit_order[1]);
    ml_token_set(tok); /* the task must be off the process-wide list */
    expect_outside_tasks("after a thread left its task");
    ml_token_destroy(tok);
}

static const scenario scenarios[] = {
    SCENARIO(longjmp_out_of_task_leaves_it),
    SCENARIO(longjmp_from_inner_task_to_outer_task),
    SCENARIO(abandoned_task_not_touched_by_other_threads),
    SCENARIO(siglongjmp_from_signal_handler_leaves_task),
    SCENARIO(jumps_inside_task_keep_it),
    SCENARIO(thread_exits_after_jumping_out_of_task),
    SCENARIO(thread_exit_in_task_runs_its_cleanups),
};

int main(int argc, char **argv)
{
    return scenarios_main(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
