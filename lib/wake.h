/* The wake-up signal and the waker thread: how an interrupt raised on one thread (a token set,
 * possibly from a signal handler; the global memory limit crossed) reaches a task with ML_WAKE
 * blocked on another. The signal's handler only forces the thread's next allocation to be an
 * event; installed without SA_RESTART, it also makes the blocked system call return EINTR. Only
 * threads running an ML_WAKE task are ever sent it. The waker also wakes tasks waiting in
 * ml_cond_wait, by broadcasting their condition (task.c's scan). */
#ifndef ML_WAKE_H
#define ML_WAKE_H

/* What the waker calls under the registry lock each time it is poked: the caller's function
 * that finds and wakes the tasks to wake (task.c). It returns nonzero when it must be called
 * again soon although nobody pokes (a condition waiter it woke has not left its wait yet): the
 * waker then calls it again after 20 us, doubling up to 10 ms, until it returns 0. */
typedef int (*ml_wake_scan)(void);

/* Installs the handler on `signal` (0: the highest free real-time signal; once per process;
 * refuses a signal the program handles) and starts the waker thread (again after fork).
 * Returns 0 or an ml_status error. Not from the allocator. */
int ml__wake_setup(int signal, ml_wake_scan scan);
/* Starts the waker thread only, without the signal (condition waits need no signal). Returns 0
 * or ML_ENOMEM. Cheap once the waker runs. Not from the allocator. */
int ml__wake_start(ml_wake_scan scan);
/* Asks the waker to look for ML_WAKE tasks to signal. Async-signal-safe. */
void ml__wake_poke(void);
/* Sends the wake-up signal to a thread, if the handler is still ours. */
void ml__wake_send(int tid);
/* In the child of a multithreaded fork: forgets the parent's waker, and starts one for the child
 * when `restart` (the forking thread carries on inside ML_WAKE tasks), which scans at once. */
void ml__wake_fork_child(int restart);

#endif
