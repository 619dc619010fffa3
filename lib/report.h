/* Reports and the records of limits that fired: a short human block or one JSON object, written
 * with a single write(2) at exit and when a limit's action fires (README "Reports"), and the
 * one-line announcement of an action. The configuration is handed over at init, so this module
 * sits below init and the slow path, which both write reports. */
#ifndef ML_REPORT_H
#define ML_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "options.h"

/* The process-wide limits whose firing is recorded. */
typedef enum ml_limit_kind { ML_LIMIT_HEAP, ML_LIMIT_ALLOC, ML_LIMIT_KINDS } ml_limit_kind;

/* Takes the configuration (which must outlive the process) and checks the destination once, at
 * start, so that a path that cannot be written stops the program before main. Returns 0, or -1
 * with one line (no newline) in err. Init only. */
int ml__report_setup(const ml_config *cfg, char *err, size_t errcap);

/* Records that a limit refused allocation number `allocation` (from 1) of the thread registered
 * as `thread`, of `size` requested bytes. Returns 1 for the limit's first firing, 0 after. Any
 * thread, lock-free. */
int ml__report_record(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size);
/* Writes the one line that says a limit's action is about to be taken (not for enomem). */
void ml__report_announce(ml_limit_kind kind, uint32_t thread, uint64_t allocation, uint64_t size,
                         const ml_action *action);
/* Writes a report now, if one was asked for. `event`: "exit" or "limit"; status: the exit
 * status, or -1 when the process is not exiting; sig: the signal an action is about to raise,
 * or 0. One report at a time; a second concurrent call returns without writing. */
void ml__report_write(const char *event, int status, int sig);

#endif
