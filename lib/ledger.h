/* The tree ledger: one heap cap and one allocation budget shared by every process that the
 * launcher (memlimit, tools/tree.c) starts. The launcher creates it in a memfd that the children
 * inherit across fork and exec (MEMLIMITS_LEDGER names its descriptor, the launcher's pid for
 * /proc/PID/fd/N when the descriptor was closed, and the tree's id). It holds atomic counters and
 * one slot per process, keyed by pid and start time so that a reused pid is never taken for the
 * process that had it.
 *
 * Processes lease from it as threads lease the process budget (budget.h): heap room and budget
 * in chunks, so that the shared counters are touched rarely far from a limit, and in pieces of
 * at most 1/16 of what remains near it. A process's heap lease is its process-level cap
 * (heap.c asks for more when an allocation does not fit, and gives back at its flushes what it
 * holds beyond its live heap and the headroom its threads' flush intervals need); its threads
 * take their budget leases straight from the ledger. What a process holds comes back when it
 * ends: from its own exit handler (exact), or from whoever finds it dead (the launcher, or a
 * process short of room): its heap room entirely (its heap is gone), its budget leases counted
 * as spent. README "Process trees" states the bounds that follow.
 *
 * This file never calls up: the engine hands in its figures (live heap, allocated bytes) and a
 * gatherer for the end of the process. The launcher links it too, for creating the ledger,
 * finding dead processes and reading the slots into its report. */
#ifndef ML_LEDGER_H
#define ML_LEDGER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "options.h"

#define ML_LEDGER_MAGIC UINT64_C(0x316567646c6c6d6c) /* "lmlldge1" */
#define ML_LEDGER_VERSION 1
#define ML_LEDGER_SLOTS 4096
#define ML_LEDGER_ARGV 312 /* bytes of a process's argv kept, NUL-separated */
#define ML_LEDGER_COMM 16  /* the kernel's command name: the executable's base name, cut */

/* Room lent to a process beyond what it asked for, at most (and at most 1/16 of what remains). */
#define ML_LEDGER_HEAP_EXTRA ((uint64_t)4 << 20)
/* A budget lease's top-up, as a thread's lease of the process budget (ML_LEASE_BYTES). */
#define ML_LEDGER_BUDGET_EXTRA ((uint64_t)1 << 20)
/* A process's live heap reaches the tree's sum (for the tree's peak) in steps of this much. */
#define ML_LEDGER_LIVE_STEP ((uint64_t)64 << 10)

/* A slot's life: FREE -> LIVE when a process claims it (under the lock); LIVE -> ENDED when the
 * process's exit handler accounts for it, or when it is found dead (under the lock); ENDED ->
 * FREE when the launcher has copied it into its report. */
enum ml_slot_state { ML_SLOT_FREE = 0, ML_SLOT_LIVE, ML_SLOT_ENDED };

enum ml_slot_flags {
    ML_SLOT_ACCOUNTED = 1u << 0, /* its own exit handler (or exit action) gave exact figures */
    ML_SLOT_RECLAIMED = 1u << 1, /* found dead: what it held was taken back by another */
    ML_SLOT_FORKED = 1u << 2,    /* claimed by a fork child that has not exec'd */
    ML_SLOT_ARGV_CUT = 1u << 3,  /* argv was longer than ML_LEDGER_ARGV */
};

/* The first time a process-wide limit refused an allocation in a process, and how often. */
typedef struct ml_ledger_firing {
    uint64_t count;      /* allocations refused */
    uint64_t seq;        /* tree-wide order of this first firing, from 1; 0: never fired */
    uint64_t allocation; /* the refusing thread's allocation number, from 1 */
    uint64_t size;       /* requested bytes */
    uint32_t thread;     /* the thread's registration index */
    int32_t action_kind; /* ml_action_kind of the process's action for the limit */
    int32_t action_arg;
    int32_t pad;
} ml_ledger_firing;

typedef struct ml_ledger_slot {
    uint32_t state; /* enum ml_slot_state */
    uint32_t flags; /* enum ml_slot_flags */
    int32_t pid, ppid;
    uint64_t start_time; /* clock ticks after boot: field 22 of /proc/PID/stat */
    uint64_t serial;     /* tree-wide order of claims, from 1 */
    uint32_t images;     /* program images that attached: 0 for a fork child not yet exec'd */
    int32_t exit_status; /* ACCOUNTED: the status passed to exit (or the exit action's); -1 */
    int32_t signal;      /* ACCOUNTED by an abort action: SIGABRT; else 0 */
    uint32_t argv_len;   /* bytes of argv used */
    uint64_t heap_lease; /* heap room lent to the process (under the lock) */
    int64_t heap_live;   /* its live heap as last added to the tree's sum (owner) */
    uint64_t heap_peak;  /* the highest live heap it published (owner) */
    uint64_t allocated;  /* requested bytes, all its images: published at flushes, exact at exit */
    uint64_t budget_leased;    /* budget lent to its threads, net of what they gave back (lock) */
    ml_ledger_firing fired[2]; /* [0] heap cap, [1] allocation budget (report.h's order) */
    char comm[ML_LEDGER_COMM]; /* of the image that attached: an exec that does not attach
                                  changes /proc/PID/stat's, which the launcher notices */
    char argv[ML_LEDGER_ARGV];
} ml_ledger_slot;

typedef struct ml_ledger {
    uint64_t magic, id;
    uint32_t version, slot_count, slot_size, header_size;
    int32_t launcher_pid, pad;
    uint64_t heap_cap, budget; /* the tree's limits; ML_NONE: none */
    pthread_mutex_t lock;      /* robust and process-shared: a holder killed is recovered */
    /* Under the lock. heap_leased and budget_spent are sums over the slots, kept so that a lease
     * costs O(1); a lock found abandoned recomputes them from the slots (ml__ledger_repair). */
    uint64_t heap_leased;    /* sum of the slots' heap_lease */
    uint64_t budget_spent;   /* budget_retired + the slots' budget_leased */
    uint64_t budget_retired; /* budget_leased of slots the launcher has freed */
    uint64_t serial;         /* the last serial given */
    uint32_t high_water;     /* slots [0, high_water) have been claimed at least once */
    uint32_t full;           /* claims refused for want of a free slot */
    uint64_t repairs;        /* locks recovered from a dead holder */
    /* Atomics. */
    int64_t tree_live;        /* sum of the slots' heap_live */
    uint64_t tree_peak;       /* the highest tree_live */
    uint64_t fire_seq;        /* the last firing sequence number given */
    uint64_t first_fired[2];  /* serial of the slot of each limit's first firing; 0: none */
    uint64_t attach_failures; /* processes that found the ledger and could not claim a slot */
} ml_ledger;

/* ---- The engine's side: this process's attachment -------------------------------------- */

/* What the engine knows about the process at its end. */
typedef struct ml_ledger_figures {
    uint64_t allocated; /* requested bytes, all threads, exact */
    uint64_t live;      /* live heap, reconciled */
    uint64_t peak;      /* peak live heap */
} ml_ledger_figures;

/* Attaches the process to the ledger `spec` names (fd < 0: none; returns 0): maps it through the
 * descriptor, or /proc/PID/fd/N when the descriptor is not the ledger any more, and claims the
 * slot of this pid and start time (an exec: the earlier image's slot is taken over, its heap
 * room returned, its allocations kept) or a free one. `gather` gives the figures at the end
 * (exit, exit action). Returns 1 when attached, or -1 with one line (no newline) in why: the
 * process then keeps its limits as its own. Init only (no allocation, no stdio). */
int ml__ledger_attach(const ml_ledger_spec *spec, void (*gather)(ml_ledger_figures *out), char *why,
                      size_t whycap);
/* This process's slot in the tree's ledger; NULL: not attached, or ended. Whether the process is
 * attached is read at every large block's event: inline. */
extern ML_HIDDEN ml_ledger_slot *ml__ledger_self;
static inline int ml__ledger_attached(void)
{
    return ML_LOAD(&ml__ledger_self) != NULL;
}
/* In a fork child (one thread left): claims a slot of its own, so that the parent's leases are
 * not spent twice. The child's heap at fork (`live`) is the parent's, whose pages it shares
 * until written: it is charged only for what it adds. `allocated_total` is the process's count
 * at the fork and `thread_allocated` the forking thread's, which are the parent's doing. */
void ml__ledger_fork_child(uint64_t live, uint64_t allocated_total, uint64_t thread_allocated);
/* The process ends through exit (status) or an abort action (sig): gives back what it holds,
 * with exact figures, and marks its slot accounted. Later calls do nothing. */
void ml__ledger_exit(int status, int sig);

/* The process's heap room in its own live-heap units: its fork-inherited heap plus its lease;
 * UINT64_MAX when the tree has no heap cap or the process is not attached. One load. */
uint64_t ml__ledger_heap_room(void);
/* Makes the room at least `want` if the tree's unlent room allows (first taking back the room of
 * processes found dead), with a top-up of min(ML_LEDGER_HEAP_EXTRA, 1/16 of what remains).
 * Returns 1 when the room covers `want`. The refusing path of heap.c's admission. */
int ml__ledger_heap_grow(uint64_t want);
/* At each flush of the owner thread's heap balance: `live` is the process's live heap, `keep`
 * the headroom its threads' flush intervals need (heap.c's near zone), `thread_allocated` the
 * thread's exact requested bytes. Publishes the process's figures, grows the room ahead of need
 * while the tree is far from its cap (so the process stays in far intervals), and gives back
 * what it holds beyond live + keep and a hysteresis. */
void ml__ledger_heap_note(int64_t live, uint64_t keep, uint64_t thread_allocated);

/* Whether the threads' budget leases come from the tree's ledger. */
int ml__ledger_budget_shared(void);
/* A lease for a thread that needs `need` bytes more: need plus min(ML_LEDGER_BUDGET_EXTRA, 1/16
 * of what then remains). Returns the bytes lent, or 0 when the tree's budget cannot cover need. */
uint64_t ml__ledger_budget_lease(uint64_t need);
/* A thread's unspent lease goes back (thread exit). */
void ml__ledger_budget_return(uint64_t bytes);
/* The tree's budget that no process holds or spent (the leases count as spent). Lock-free. */
uint64_t ml__ledger_budget_unlent(void);

/* A process-wide limit (0 heap cap, 1 budget) refused allocation number `allocation` of thread
 * `thread`, of `size` bytes; `action` is the process's action for it. Records it in the slot and,
 * for the tree's first firing of that limit, in the header. An action that ends the process
 * (exit:N, abort) accounts for it first, since no exit handler will run. */
void ml__ledger_fired(int kind, uint32_t thread, uint64_t allocation, uint64_t size,
                      const ml_action *action);

/* ---- The launcher's side ------------------------------------------------------------------ */

/* Creates a ledger for a tree with these limits in a new memfd (not close-on-exec), mapped.
 * Returns it with the descriptor in *fd, or NULL with one line in why. */
ml_ledger *ml__ledger_create(uint64_t heap_cap, uint64_t budget, int *fd, char *why, size_t whycap);
ml_ledger_slot *ml__ledger_slot(ml_ledger *l, uint32_t index);
/* Takes back what slot `index` holds if it is LIVE and its process is not running (or
 * `known_dead`, for a pid the caller has just reaped): its heap room, its live heap from the
 * tree's sum; its budget leases stay spent. Marks it ENDED and RECLAIMED. Returns 1 if it did. */
int ml__ledger_reclaim(ml_ledger *l, uint32_t index, int known_dead);
/* Copies slot `index` into *copy if it is ENDED, and frees it. Returns 1 if it did. */
int ml__ledger_release(ml_ledger *l, uint32_t index, ml_ledger_slot *copy);
/* Recomputes the sums of the header from the slots (a lock holder died mid-update). Under the
 * lock; exposed for tests. */
void ml__ledger_repair(ml_ledger *l);
/* The lock, recovering it from a dead holder. */
void ml__ledger_lock(ml_ledger *l);
void ml__ledger_unlock(ml_ledger *l);

/* Reads /proc/PID/stat: the state letter, the parent's pid and the start time. Returns 0, or -1
 * when there is no such process. No allocation. */
int ml__proc_stat(int pid, char *state, int *ppid, uint64_t *start_time);
/* The same, and the command name (field 2, NUL-terminated) into comm when not NULL. */
int ml__proc_stat_comm(int pid, char *state, int *ppid, uint64_t *start_time,
                       char comm[ML_LEDGER_COMM]);
/* Whether the process `pid` that started at `start_time` is running (not gone, not reused, not a
 * zombie). */
int ml__proc_running(int pid, uint64_t start_time);
/* Reads /proc/PID/cmdline (pid 0: self) into out: NUL-separated words, at most cap bytes.
 * Returns the bytes used; *cut is set when it was longer. */
size_t ml__proc_cmdline(int pid, char *out, size_t cap, int *cut);

#endif
