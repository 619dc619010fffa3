/* Shared by the target programs of tests/test_tasks.c (tests/targets/tasks_*.c; defined in
 * tasks_common.c, built like them with -fno-builtin): each program runs the scenario of the task
 * API named on its command line and prints "ok NAME", or "FAIL NAME: line N: why" lines and exits
 * 1; lines starting with "info " carry measurements. Here: that reporting, clocks, and the tasks
 * and records that scenarios of several programs use (tasks_stress uses the clocks and
 * set_handler). Reporting goes through write(2) from a stack buffer: it never allocates, so it
 * may be used inside tasks. */
#ifndef ML_TASKS_COMMON_H
#define ML_TASKS_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "say.h"

#include "memlimits.h"

#ifdef __cplusplus
extern "C" { /* tests/targets/delivery_exceptions.cc */
#endif

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

/* ---------------------------------------------------------------------------------------------
 * Reporting, and the scenario table each program's main hands to scenarios_main. */
extern const char *scenario_name; /* the scenario running */
extern int scenario_failed;       /* an EXPECT failed */
extern pthread_mutex_t scenario_say_lock;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            pthread_mutex_lock(&scenario_say_lock);                                                \
            say("FAIL %s: line %d: %s: ", scenario_name, __LINE__, #cond);                         \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
            scenario_failed = 1;                                                                   \
            pthread_mutex_unlock(&scenario_say_lock);                                              \
        }                                                                                          \
    } while (0)

#define EXPECT_STATUS(got, want)                                                                   \
    EXPECT((got) == (want), "status %d (%s), expected %d (%s)", (int)(got), ml_strstatus(got),     \
           (int)(want), ml_strstatus(want))

#define EXPECT_U64(got, want)                                                                      \
    EXPECT((uint64_t)(got) == (uint64_t)(want), "%s = %llu, expected %llu", #got,                  \
           (unsigned long long)(got), (unsigned long long)(want))

typedef struct scenario {
    const char *name;
    void (*fn)(void);
} scenario;

#define SCENARIO(fn)                                                                               \
    {                                                                                              \
#fn, fn                                                                                    \
    }

/* Defines the program's main over `table`, its array of scenarios. */
#define SCENARIOS_MAIN(table)                                                                      \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return scenarios_main(argc, argv, table, sizeof table / sizeof table[0]);                  \
    }

/* The main of every program: runs the scenario named by argv[1] from `table` (`n` entries) and
 * returns the exit status: 0 when every EXPECT held, 1 when one failed, 2 for an unknown name
 * (a usage listing the scenarios when there is no name). Fails at once when memlimits does not
 * own malloc. */
int scenarios_main(int argc, char **argv, const scenario *table, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Clocks and threads. */
int gettid_(void);
void sleep_ms(long ms);
double now_s(void);
/* Waits up to `seconds` for *flag to become nonzero; returns its value. */
int wait_flag(const int *flag, double seconds);
/* Sets *flag for wait_flag. */
static inline void raise_flag(int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}
/* The system call thread `tid` of this process is blocked in (the first field of
 * /proc/self/task/TID/syscall), or -1 when it is running or cannot be read. */
long blocked_syscall(int tid);
/* Set when the kernel does not show threads' system calls: checks that rely on them are
 * skipped, and waiting for a thread to block is a 200 ms pause instead. */
extern int proc_syscall_unreadable;
/* Installs `handler` for signal `sig`, with sa_flags `flags` and nothing else blocked while it
 * runs. */
void set_handler(int sig, void (*handler)(int), int flags);

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

/* A task (arg: a blocks): allocates b->count blocks of b->size bytes, or up to the first NULL. */
void task_blocks(void *arg);
void blocks_free(blocks *b);

/* ---------------------------------------------------------------------------------------------
 * Small tasks. */

/* Counts its runs in `ran`. */
extern int ran;
void task_mark_ran(void *arg);

/* Records ml_is_interrupted() at its start, then whether its malloc(1) got NULL, and errno. */
extern int first_null, first_err, interrupted_at_start;
void task_first(void *arg);

/* A task (arg: a spin) allocating and freeing 64-byte blocks until an allocation fails, or 20 s
 * pass (timed_out). */
typedef struct spin {
    int started;
    int *seen_flag; /* set by another thread right after it caused the interrupt */
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

void task_spin(void *arg);

/* ---------------------------------------------------------------------------------------------
 * Cleanups: cleanup_rec (arg: an id from 1 to 3) records in UR when and how it ran, and makes a
 * 100-byte allocation that must succeed, being masked. task_unwind pushes cleanups 1 then 2 and
 * allocates 64 blocks of 100 bytes, counting in UR.mallocs_returned those that returned. */
typedef struct unwindrec {
    int order[8];
    int n;
    int calls[4];
    int interrupted[4];
    int alloc_ok[4];
    size_t mallocs_returned;
    int after;
    int strdup_null, strdup_err, asprintf_rc, asprintf_err, fopen_null, fopen_err;
} unwindrec;

extern unwindrec UR;
void cleanup_rec(void *arg);
void task_unwind(void *arg);

/* ---------------------------------------------------------------------------------------------
 * A list built by tasks and by threads without one, freed by list_free. task_build_list (arg: a
 * size_t block size) prepends up to list_cap blocks to list_head, counting them in list_built,
 * and keeps the errno of its first NULL in list_err. */
typedef struct node {
    struct node *next;
} node;

extern node *list_head;
extern size_t list_built, list_cap;
extern int list_err;
void task_build_list(void *arg);
void list_free(void);

/* ---------------------------------------------------------------------------------------------
 * A thread blocked in read, poll or nanosleep, inside a task (use_task: ml_run with its token,
 * global and flags) or not. */
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

/* Opens w's pipe and starts its thread; returns once the thread is blocked in its call. */
void waiter_start(waiter *w, pthread_t *th);
/* Unblocks a waiter that was not woken, so that the scenario can finish, and joins it. */
void waiter_finish(waiter *w, pthread_t th);

#ifdef __cplusplus
}
#endif

#endif
