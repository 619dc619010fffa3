/* Target for tests/test_tasks.c: tasks and threads. Threads without a task are never refused
 * nor interrupted, threads created in a task inherit none of its limits, and a thread cancelled
 * or exiting inside a task leaves nothing behind. Linked with -lmemlimits, built with
 * -fno-builtin; `tasks_threads NAME` runs one scenario (tasks_common.h). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tasks_common.h"

static int bystander_nulls, bystander_done, bystander_task_null;
static ml_token *bystander_token;

/* Allocates `mib` MiB in 1 KiB blocks, all live at once, then frees them; returns how many of
 * the allocations got NULL. */
static int allocate_mib_and_free(int mib)
{
    node *head = NULL;
    int nulls = 0;
    for (int i = 0; i < mib * 1024; i++) {
        node *b = malloc(1024);
        if (b == NULL) {
            nulls++;
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
    return nulls;
}

static void bystander_allocate(void)
{
    bystander_nulls += allocate_mib_and_free(16);
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
    static blocks limited;
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
    limited = (blocks){.size = 1000, .count = MAX_BLOCKS};
    st = ml_limit_allocations(64 * MIB, task_blocks, &limited, NULL);
    EXPECT_STATUS(st, ML_OK);
    EXPECT_U64(limited.got, MAX_BLOCKS);
    blocks_free(&limited);
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
    child_nulls += allocate_mib_and_free(8);
    child_bytes = ml_thread_allocated(); /* frees take nothing off it */
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

static const scenario scenarios[] = {
    SCENARIO(threads_without_task_unaffected),
    SCENARIO(threads_created_in_task_do_not_inherit),
    SCENARIO(threads_leaving_inside_a_task_leave_no_trace),
};

SCENARIOS_MAIN(scenarios)
