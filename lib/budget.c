/* Leases of the process's allocation budget (see budget.h). */
#include "budget.h"

#include "ledger.h"

static uint64_t budget_total = ML_NONE;
uint64_t ml__budget_pool; /* budget.h */

void ml__budget_set(uint64_t budget)
{
    budget_total = budget;
    ML_STORE(&ml__budget_pool, budget);
}

uint64_t ml__budget_total(void)
{
    return budget_total;
}

int ml__budget_extend_shared(ml_thread *t, uint64_t need)
{
    if (!ml__ledger_budget_shared()) return ml__budget_lease_pool(t, need); /* no tree budget */
    uint64_t lent = ml__ledger_budget_lease(need);
    t->lease_left += lent;
    return lent != 0;
}

void ml__budget_release(ml_thread *t)
{
    if (budget_total == ML_NONE || t->lease_left == ML_NONE) return;
    /* lease_left is as of the thread's last event: what it allocated since came out of it. */
    uint64_t spent = ml__since_arm(t);
    uint64_t unspent = t->lease_left > spent ? t->lease_left - spent : 0;
    t->lease_left = 0;
    if (ml__ledger_budget_shared())
        ml__ledger_budget_return(unspent);
    else
        __atomic_add_fetch(&ml__budget_pool, unspent, __ATOMIC_RELAXED);
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

/* A thread's unspent lease: what it leased, less what it allocated since its last event
 * (ml__since_arm), which the countdown kept within the lease. */
static uint64_t unspent(const ml_thread *t)
{
    uint64_t lease = ML_LOAD(&t->lease_left);
    if (lease == ML_NONE) return 0; /* registered before its lease was set: holds none */
    uint64_t spent = ml__since_arm(t);
    return lease > spent ? lease - spent : 0;
}

static void add_unspent(ml_thread *t, void *ctx)
{
    *(uint64_t *)ctx += unspent(t);
}

void ml__budget_fork_lost(const ml_thread *t)
{
    if (budget_total == ML_NONE || ml__ledger_budget_shared()) return;
    ML_STORE(&ml__budget_pool, ML_LOAD(&ml__budget_pool) + unspent(t)); /* the child's one thread */
}

uint64_t ml__budget_left(int exact)
{
    if (budget_total == ML_NONE) return ML_NONE;
    /* A process tree's budget: what no process holds, plus (exact) this process's unspent
     * leases. The pool is not used then. */
    uint64_t base =
        ml__ledger_budget_shared() ? ml__ledger_budget_unlent() : ML_LOAD(&ml__budget_pool);
    if (!exact) return base;
    ml__registry_lock();
    uint64_t left = base;
    ml__thread_each_locked(add_unspent, &left);
    ml__registry_unlock();
    return left;
}
