/* Leases of the process's allocation budget (see budget.h). */
#include "budget.h"

#include "ledger.h"

static uint64_t budget_total = ML_NONE;
static uint64_t pool; /* bytes not leased to any thread */

void ml__budget_set(uint64_t budget)
{
    budget_total = budget;
    ML_STORE(&pool, budget);
}

uint64_t ml__budget_total(void)
{
    return budget_total;
}

int ml__budget_extend(ml_thread *t, uint64_t need)
{
    if (ml__ledger_budget_shared()) {
        /* A process tree's budget: the thread leases from the tree's ledger, by the same rule. */
        uint64_t lent = ml__ledger_budget_lease(need);
        t->lease_left += lent;
        return lent != 0;
    }
    uint64_t have = ML_LOAD(&pool), take;
    do {
        if (have < need) return 0;
        uint64_t extra = ML_MIN(ML_LEASE_BYTES, (have - need) / 16);
        take = need + extra;
    } while (!__atomic_compare_exchange_n(&pool, &have, have - take, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    t->lease_left += take;
    return 1;
}

void ml__budget_release(ml_thread *t)
{
    if (budget_total == ML_NONE || t->lease_left == ML_NONE) return;
    if (ml__ledger_budget_shared()) {
        ml__ledger_budget_return(t->lease_left);
        t->lease_left = 0;
        return;
    }
    __atomic_add_fetch(&pool, t->lease_left, __ATOMIC_RELAXED);
    t->lease_left = 0;
}

void ml__budget_fork_child(ml_thread *t)
{
    if (!ml__ledger_budget_shared() || t->lease_left == ML_NONE) return;
    /* The lease is the parent's: the child keeps only what its countdown already spent of it
     * (the bytes since the last arming, which the parent allocated), and its next allocation is
     * an event that leases from the tree under the child's own slot. */
    t->lease_left = ml__since_arm(t);
    ml__thread_force_event(t);
}
