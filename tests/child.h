/* Running a program in a child process for tests of preloaded behaviour: the Criterion runner
 * itself never runs preloaded. The child gets LD_PRELOAD (when asked) and extra variables in
 * its own environment only; its stdout and stderr are captured. */
#ifndef ML_TEST_CHILD_H
#define ML_TEST_CHILD_H

#include <stddef.h>

typedef struct ml_child {
    int exited;      /* nonzero: exited normally with `status` */
    int status;      /* exit status */
    int signal;      /* terminating signal, when !exited */
    char *out, *err; /* captured output, NUL-terminated, malloc'd */
    size_t out_len, err_len;
} ml_child;

/* Paths the build passes in: the library, and the directory of the target programs. */
const char *ml_test_lib(void);
const char *ml_test_target(const char *name); /* static buffer: copy before the next call */

/* Runs argv[0] (searched in PATH) with the current environment plus `env` (NULL-terminated
 * "NAME=VALUE" strings, may be NULL), with LD_PRELOAD=ml_test_lib() if `preload`, stdin from
 * /dev/null or from `input` when not NULL, and a timeout in seconds (killed with SIGKILL).
 * Returns 0, or -1 if the child could not be started. */
int ml_child_run(const char *const argv[], const char *const env[], int preload, const char *input,
                 int timeout_s, ml_child *out);
/* The same, and sends the child `sig` (its disposition reset to the default in the child) as
 * soon as its stdout contains `ready`: what a user pressing Ctrl+C at that point does. */
int ml_child_run_signalling(const char *const argv[], const char *const env[], int preload,
                            const char *input, int timeout_s, const char *ready, int sig,
                            ml_child *out);
void ml_child_free(ml_child *c);

#endif
