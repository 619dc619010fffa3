/* Target for tests/test_delivery.c, in C++: a C++ exception out of a task's function leaves
 * ml_run, and the thread is then outside the task (memlimits.h, ml_run): its allocations are not
 * limited by it, its count goes on, a new task works, an enclosing task that catches the
 * exception keeps its limits, and the cleanups registered in the frames the exception unwound are
 * not run (their frames are gone). Built only when a C++ compiler is found (tests/delivery.cmake).
 * See delivery_harness.h for the protocol. */
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "tasks_common.h"

static const int BLOCK = 100;

static int allocate_blocks(int count)
{
    static void *keep[4096];
    int got = 0;
    for (; got < count && got < 4096; got++) {
        keep[got] = std::malloc(BLOCK);
        if (keep[got] == nullptr) break;
    }
    for (int i = 0; i < got; i++)
        std::free(keep[i]);
    return got;
}

static void task_count_blocks(void *arg)
{
    *static_cast<int *>(arg) = allocate_blocks(101);
}

static void expect_outside_tasks(const char *what)
{
    EXPECT(!ml_is_interrupted(), "%s: ml_is_interrupted() outside tasks", what);
    uint64_t before = ml_thread_allocated();
    int got = allocate_blocks(1000);
    EXPECT(got == 1000, "%s: %d of 1000 allocations outside tasks succeeded", what, got);
    EXPECT_U64(ml_thread_allocated() - before, 1000 * BLOCK);
    int in_task = 0;
    uint64_t allocated = 0;
    ml_limits limits = {100 * BLOCK, 0, nullptr, 0};
    ml_status st = ml_run(&limits, task_count_blocks, &in_task, &allocated);
    EXPECT(st == ML_ALLOCATION_LIMIT && in_task == 100 && allocated == 100 * BLOCK,
           "%s: a new task: status %s, %d blocks, %llu bytes", what, ml_strstatus(st), in_task,
           (unsigned long long)allocated);
}

static int cleanup_calls;

static void count_cleanup(void *)
{
    cleanup_calls++;
}

/* Interrupted (token set), masked, with a cleanup registered: then throws. */
static void task_throws(void *arg)
{
    allocate_blocks(10);
    ML_CLEANUP_PUSH(count_cleanup, nullptr);
    ml_token_set(static_cast<ml_token *>(arg));
    ml_mask();
    throw std::runtime_error("out of the task");
    ML_CLEANUP_POP(0);
}

static void exception_out_of_task_leaves_it()
{
    ml_token *tok = ml_token_create();
    cleanup_calls = 0;
    int caught = 0;
    try {
        ml_limits limits = {4 * KIB, 0, tok, ML_UNWIND};
        ml_run(&limits, task_throws, tok, nullptr);
    } catch (const std::runtime_error &) {
        caught = 1;
    }
    EXPECT(caught, "the exception did not come out of ml_run");
    EXPECT(cleanup_calls == 0, "a cleanup whose frame the exception unwound ran %d times",
           cleanup_calls);
    expect_outside_tasks("after an exception");
    ml_token_destroy(tok);
}

/* The inner task throws; the outer task's function catches and goes on under its own limit. */
static int outer_blocks, outer_caught;

static void task_inner_throws(void *)
{
    allocate_blocks(5);
    throw std::runtime_error("out of the inner task");
}

static void task_outer_catches(void *arg)
{
    allocate_blocks(10);
    try {
        ml_limits inner = {0, 0, static_cast<ml_token *>(arg), 0};
        ml_token_set(static_cast<ml_token *>(arg));
        ml_run(&inner, task_inner_throws, nullptr, nullptr);
    } catch (...) { /* std::bad_alloc: the inner task cannot allocate the runtime_error's text */
        outer_caught = 1;
    }
    static void *keep[4096];
    outer_blocks = 0;
    while (outer_blocks < 4096 && (keep[outer_blocks] = std::malloc(BLOCK)) != nullptr)
        outer_blocks++;
    for (int i = 0; i < outer_blocks; i++)
        std::free(keep[i]);
}

static void exception_from_inner_task_caught_in_outer_task()
{
    ml_token *tok = ml_token_create();
    uint64_t allocated = 0;
    ml_limits outer = {200 * BLOCK, 0, nullptr, 0};
    ml_status st = ml_run(&outer, task_outer_catches, tok, &allocated);
    EXPECT(outer_caught, "the outer task did not catch the exception");
    /* The inner task's token was set before it started: its 5 blocks were refused and it threw
     * anyway. 10 blocks before: 190 more fit the outer limit. */
    EXPECT(outer_blocks == 190, "%d blocks after the exception, expected 190", outer_blocks);
    EXPECT_STATUS(st, ML_ALLOCATION_LIMIT);
    EXPECT_U64(allocated, 200 * BLOCK);
    expect_outside_tasks("after the outer task");
    ml_token_destroy(tok);
}

static const scenario scenarios[] = {
    SCENARIO(exception_out_of_task_leaves_it),
    SCENARIO(exception_from_inner_task_caught_in_outer_task),
};

int main(int argc, char **argv)
{
    return scenarios_main(argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
