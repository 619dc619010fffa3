/* Reports and the records of limits that fired: a short human block or one JSON object, written
 * with a single write(2) at exit and when a limit's action fires (README "Reports"), and the
 * one-line announcement of an action. The configuration is handed over at init, so this module
 * sits below init and the slow path, which both write reports. */
#ifndef ML_REPORT_H
#define ML_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "fmt.h"
#include "options.h"

/* The process-wide limits whose firing is recorded. */
typedef enum ml_limit_kind { ML_LIMIT_HEAP, ML_LIMIT_ALLOC, ML_LIMIT_KINDS } ml_limit_kind;

/* ML_REPORT_RESOLVED_ENV (options.h) is set by the process that resolved the report destination
 * of a process tree, for its descendants: the MEMLIMITS_REPORT value it published (README
 * "Reports"). */

/* Takes the configuration (which must outlive the process) and opens the destination once, at
 * start, on private descriptors that the report keeps until exit (stderr is duplicated). The
 * first process of a tree to see a MEMLIMITS_REPORT path makes it absolute against its working
 * directory and publishes it in environ for its children, with ML_REPORT_RESOLVED_ENV; when it
 * cannot open the path it returns -1 with one line (no newline) in err, so that the program
 * stops before main. A process that inherited a resolved path and cannot open it says so on
 * stderr and returns 0: a report never stops a child. Init only: allocates nothing. */
int ml__report_setup(const ml_config *cfg, char *err, size_t errcap);

/* Records that a limit refused allocation number `allocation` (from 1) of the thread registered
 * as `thread`, of `size` requested bytes. Returns 1 for the limit's first firing, 0 after. Any
 * thread, lock-free. */
int ml__report_record(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size);
/* How many allocations the limit refused so far (it fired at the first). Any thread,
 * lock-free. */
uint64_t ml__report_refused(ml_limit_kind kind);
/* Writes the one line that says a limit's action is about to be taken (not for enomem). */
void ml__report_announce(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size,
                         const ml_action *action);
/* Writes a report now, if one was asked for. `event`: "exit" or "limit"; status: the exit
 * status, or -1 when the process is not exiting; sig: the signal an action is about to raise,
 * or 0. One report at a time; a second concurrent call returns without writing. */
void ml__report_write(const char *event, int status, int sig);

/* The command line in the report, from a buffer laid out as /proc/self/cmdline (each argument
 * ended by a NUL, the last one's possibly missing). JSON: an array of strings, with bytes that
 * are not UTF-8 as U+FFFD. Text: one line a POSIX shell (bash, for $'...') reads back, each
 * argument quoted when it needs it. Exposed for tests. */
void ml__report_command_json(ml_buf *b, const char *cmdline, size_t len);
void ml__report_command_text(ml_buf *b, const char *cmdline, size_t len);
/* Makes the report path pattern `path` absolute against `cwd`, doubling each '%' of cwd so that
 * expanding the pattern gives cwd back. Returns 0, or -1 when the result and its NUL do not fit
 * in cap bytes. */
int ml__report_absolute(const char *path, const char *cwd, char *out, size_t cap);

#endif
