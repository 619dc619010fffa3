/* The wake-up signal and the waker thread: how an interrupt raised on one thread (a token set,
 * possibly from a signal handler; the global memory limit crossed) reaches a task with ML_WAKE
 * blocked on another. The signal's handler only forces the thread's next allocation to be an
 * event; installed without SA_RESTART, it also makes the blocked system call return EINTR. Only
 * threads running an ML_WAKE task are ever sent it. */
#ifndef ML_WAKE_H
#define ML_WAKE_H

/* Installs the handler (once; refuses a signal the program handles) and starts the waker
 * thread (again after fork). Returns 0 or an ml_status error. Not from the allocator. */
int ml__wake_setup(void);
/* Asks the waker to look for ML_WAKE tasks to signal. Async-signal-safe. */
void ml__wake_poke(void);
/* Sends the wake-up signal to a thread, if the handler is still ours. */
void ml__wake_send(int tid);
void ml__wake_fork_child(void);
/* Called by the waker, under the registry lock: signals the tasks that need it (task.c). */
void ml__task_wake_scan(void);

#endif
