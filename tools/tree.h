/* Tree mode of the launcher: memlimit stays the parent of the command, as the subreaper of every
 * process it starts, with a ledger (lib/ledger.h) through which they share one heap cap and one
 * allocation budget. tree.c runs the tree and collects a row per process; tree_report.c writes
 * the one report for the tree and the measuring run's summary line. */
#ifndef ML_TREE_H
#define ML_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "options.h"

/* One process of the tree, from its slot in the ledger and what the launcher saw of it. */
typedef struct ml_tree_row {
    int pid, ppid;       /* ppid -1: unknown */
    uint64_t start_time; /* 0: unknown */
    uint64_t serial;     /* its slot's serial; 0: it never attached to the ledger */
    char argv[ML_LEDGER_ARGV];
    uint32_t argv_len;
    int argv_cut;
    uint32_t images; /* program images that attached (0: a fork child that never exec'd) */
    uint32_t flags;  /* the slot's ML_SLOT_* flags */
    uint64_t heap_peak, allocated;
    int ended_known; /* how it ended is known: */
    int exit_status; /* -1 when it was killed */
    int signal;      /* the killing signal, 0 when it exited */
    ml_ledger_firing fired[2];
    /* It exec'd an image the preload did not reach (env -i, set-user-ID, static): its argv. */
    int escaped;
    char escaped_argv[ML_LEDGER_ARGV];
    uint32_t escaped_len;
} ml_tree_row;

typedef struct ml_tree {
    /* What to run, and how. */
    char **command;
    uint64_t heap, alloc; /* ML_NONE: none */
    ml_action on_heap, on_alloc;
    int preserve_status, measure, verbose;
    const char *pythonmalloc; /* the value the tree runs with; NULL: unset */
    int pythonmalloc_ours;    /* set by memlimit (the user had not set it) */

    /* What happened. */
    ml_tree_row *rows;
    size_t nrows, rows_cap;
    int command_pid;
    int command_status; /* the command's own exit status, or -1 when killed */
    int command_signal; /* the signal that killed it, or 0 */
    uint64_t wall_ns;
    uint64_t tree_peak;        /* highest sum of the live heaps, from the ledger */
    int first_kind;            /* the limit whose firing came first (0 heap, 1 budget); -1 */
    size_t first_row[2];       /* the row of each limit's first firing; SIZE_MAX: none */
    uint32_t slots_high_water; /* slots ever used at once, at most */
    uint64_t attach_failures, lock_repairs;
    int status;          /* the launcher's exit status, or -signal to die by */
    int status_by_limit; /* status came from a limit's exiting action */
} ml_tree;

/* Runs the command as a tree: creates the ledger and puts it in the environment, becomes the
 * subreaper, forks and execs the command, forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to
 * the launcher (to the command and every other running process of the tree), reaps and reclaims
 * until no process of the tree is left, and fills the outcome in t. Returns 0, or the launcher's
 * own failure status (125 no ledger, 126 cannot run, 127 not found) with one line in why, the
 * command not having run. */
int ml_tree_run(ml_tree *t, char *why, size_t whycap);

/* The measuring summary, one line without a newline, in human units: "memlimit: tree peak heap
 * 81.2 MiB, allocated 1.9 GiB, largest process 80.1 MiB (pid 123 python3), 5 processes, 2.31 s;
 * suggested limits with 25% margin: --heap 102M --alloc 2432M". */
void ml_tree_summary(const ml_tree *t, char *out, size_t cap);
/* Writes the tree's report to fd: JSON (one document, "memlimits_tree_report": 1) or text that
 * opens with the summary line. Returns 0, or -1 on a write error. */
int ml_tree_report(const ml_tree *t, ml_report_kind kind, int fd);

#endif
