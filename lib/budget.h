/* The process's allocation budget (MEMLIMITS_ALLOC): a pool of bytes that threads lease from in
 * chunks, so that counting stays on the fast path's countdown. A lease is at most
 * ML_LEASE_BYTES and at most 1/16 of what remains in the pool, so leases shrink as the budget
 * runs out. With one allocating thread the budget is exact: the allocation refused is the first
 * whose running total would exceed the budget. With several, unspent leases held by other
 * threads count as spent (README "Allocation budget"). */
#ifndef ML_BUDGET_H
#define ML_BUDGET_H

#include <stdint.h>

#include "ledger.h"
#include "thread.h"

#define ML_LEASE_BYTES ((uint64_t)1 << 20)

void ml__budget_set(uint64_t budget);
uint64_t ml__budget_total(void);
/* Makes t's lease cover an allocation of `need` bytes more than it holds, topped up for the
 * allocations that follow. Returns 0 if the pool cannot cover it: the budget is exceeded. Inline:
 * every block larger than a lease extends it (event.c). */
extern ML_HIDDEN uint64_t ml__budget_pool; /* bytes not leased to any thread */
static inline int ml__budget_lease_pool(ml_thread *t, uint64_t need)
{
    uint64_t have = ML_LOAD(&ml__budget_pool), take;
    do {
        if (have < need) return 0;
        take = need + ML_MIN(ML_LEASE_BYTES, (have - need) / 16);
    } while (!__atomic_compare_exchange_n(&ml__budget_pool, &have, have - take, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    t->lease_left += take;
    return 1;
}
/* A process tree's budget: the thread leases from the tree's ledger, by the same rule. */
int ml__budget_extend_shared(ml_thread *t, uint64_t need);
static inline int ml__budget_extend(ml_thread *t, uint64_t need)
{
    if (ML_UNLIKELY(ml__ledger_attached())) return ml__budget_extend_shared(t, need);
    return ml__budget_lease_pool(t, need);
}
/* Returns t's unspent lease to the pool (thread exit). */
void ml__budget_release(ml_thread *t);
/* Bytes of the budget not yet allocated (ML_NONE: no budget). Exact (`exact` nonzero): the pool
 * plus every registered thread's unspent lease, under the registry lock; exact for threads that
 * are not allocating or exiting during the call. Otherwise the pool alone, lock-free: leases
 * count as spent, so it is low by at most ML_LEASE_BYTES per thread. Any thread. In a process
 * tree the tree's unlent budget stands for the pool: "exact" then counts this process's unspent
 * leases as left and other processes' as spent. */
uint64_t ml__budget_left(int exact);
/* In a fork child, for the forking thread t: in a process tree its lease belongs to the parent,
 * which may still spend it; the child drops it. (Per process, the child keeps a copy of the
 * parent's budget, as it keeps a copy of its heap.) */
void ml__budget_fork_child(ml_thread *t);
/* In the fork child of a multithreaded process, for a thread t that did not survive the fork:
 * per process, the child's copy of the budget gets t's unspent lease back (t will never spend
 * it); in a process tree the lease is the parent's, whose thread still holds it. */
void ml__budget_fork_lost(const ml_thread *t);

#endif
