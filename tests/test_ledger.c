/* The tree ledger (lib/ledger.c) in process: how heap room and budget are lent and refused, how
 * a slot is keyed (a reused pid is another process; an exec is the same one), what a process
 * gives back at its end and what is taken back from a dead one, the recovery of a lock whose
 * holder was killed, and the reuse of slots. The test process plays both the launcher (it
 * creates the ledger) and a process of the tree (it attaches); other processes of the tree are
 * slots fabricated with the pid and start time of real processes. Criterion runs each test in a
 * process of its own, so the attachment starts fresh in each. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "options.h"
#include "thread.h"

#define MIB ((uint64_t)1 << 20)

static ml_ledger *make(uint64_t heap, uint64_t budget, ml_ledger_spec *spec)
{
    char why[256];
    int fd;
    ml_ledger *l = ml__ledger_create(heap, budget, &fd, why, sizeof why);
    cr_assert_not_null(l, "%s", why);
    spec->fd = fd;
    spec->pid = getpid();
    spec->id = l->id;
    return l;
}

static uint64_t fake_allocated, fake_peak;

static void gather(ml_ledger_figures *f)
{
    f->allocated = fake_allocated;
    f->live = 0;
    f->peak = fake_peak;
}

static ml_ledger_slot *attach(ml_ledger *l, const ml_ledger_spec *spec)
{
    char why[256];
    cr_assert_eq(ml__ledger_attach(spec, gather, why, sizeof why), 1, "%s", why);
    /* The newest slot with this pid. */
    ml_ledger_slot *mine = NULL;
    for (uint32_t i = 0; i < l->high_water; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (s->state == ML_SLOT_LIVE && s->pid == getpid() &&
            (mine == NULL || s->serial > mine->serial))
            mine = s;
    }
    cr_assert_not_null(mine);
    return mine;
}

static uint64_t start_time_of(int pid)
{
    uint64_t start = 0;
    cr_assert_eq(ml__proc_stat(pid, NULL, NULL, &start), 0, "no /proc/%d/stat", pid);
    return start;
}

/* A slot as another process of the tree would hold it: LIVE, keyed by its pid and start time. */
static ml_ledger_slot *fabricate(ml_ledger *l, int pid, uint64_t start, uint64_t heap_lease,
                                 uint64_t budget_leased)
{
    ml__ledger_lock(l);
    ml_ledger_slot *s = ml__ledger_slot(l, l->high_water++);
    memset(s, 0, sizeof *s);
    s->pid = pid;
    s->start_time = start;
    s->serial = ++l->serial;
    s->images = 1;
    s->exit_status = -1;
    s->heap_lease = heap_lease;
    s->budget_leased = budget_leased;
    l->heap_leased += heap_lease;
    l->budget_spent += budget_leased;
    s->state = ML_SLOT_LIVE;
    ml__ledger_unlock(l);
    return s;
}

/* A process that stays alive until killed. */
static pid_t sleeper(void)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    return pid;
}

/* ---- Heap room --------------------------------------------------------------------------- */

Test(ledger, heap_room_is_lent_with_a_top_up_and_refused_past_the_cap)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_room(), 0, "a new process holds no room");
    cr_assert_eq(ml__ledger_heap_grow(10 * MIB), 1);
    /* need + min(4 MiB, a sixteenth of what then remains) */
    cr_assert_eq(s->heap_lease, 10 * MIB + 54 * MIB / 16);
    cr_assert_eq(l->heap_leased, s->heap_lease);
    cr_assert_eq(ml__ledger_heap_room(), s->heap_lease);
    uint64_t before = s->heap_lease;
    cr_assert_eq(ml__ledger_heap_grow(64 * MIB + 1), 0, "past the cap");
    cr_assert_eq(s->heap_lease, before, "a refusal lends nothing");
    cr_assert_eq(ml__ledger_heap_grow(64 * MIB), 1, "exactly the cap");
    cr_assert_eq(s->heap_lease, 64 * MIB, "no top-up is left at the cap");
}

Test(ledger, near_the_cap_the_top_up_is_a_sixteenth_of_what_remains)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    /* Our parent, a running process, holds 60 MiB: it is not taken back. */
    fabricate(l, getppid(), start_time_of(getppid()), 60 * MIB, 0);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_grow(1 * MIB), 1);
    cr_assert_eq(s->heap_lease, 1 * MIB + 3 * MIB / 16);
    cr_assert_eq(ml__ledger_heap_grow(4 * MIB + 1), 0, "the parent's room is not lent twice");
}

Test(ledger, a_dead_process_room_is_taken_back_when_another_needs_it)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, 32 * MIB, &spec);
    pid_t victim = sleeper();
    ml_ledger_slot *dead = fabricate(l, victim, start_time_of(victim), 50 * MIB, 8 * MIB);
    attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_grow(30 * MIB), 0, "the room is held by a running process");
    kill(victim, SIGKILL);
    waitpid(victim, NULL, 0);
    cr_assert_eq(ml__ledger_heap_grow(30 * MIB), 1, "the killed process's room came back");
    cr_assert_eq(dead->state, ML_SLOT_ENDED);
    cr_assert(dead->flags & ML_SLOT_RECLAIMED);
    cr_assert_eq(dead->heap_lease, 0);
    /* What it leased of the budget stays spent: nobody knows how much it used. */
    cr_assert_eq(dead->budget_leased, 8 * MIB);
    cr_assert_eq(l->budget_spent, 8 * MIB);
}

/* ---- Keys: pid and start time ------------------------------------------------------------ */

Test(ledger, a_reused_pid_is_not_taken_for_the_process_that_had_it)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    /* An earlier process had our pid; it started at another time and ended with _exit. */
    ml_ledger_slot *old = fabricate(l, getpid(), start_time_of(getpid()) + 1, 20 * MIB, 0);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_neq(s, old, "a new process took over the slot of the pid's earlier owner");
    cr_assert_eq(s->images, 1);
    cr_assert_eq(old->state, ML_SLOT_LIVE, "untouched until found dead");
    cr_assert_eq(ml__ledger_reclaim(l, 0, 0), 1, "its pid now runs another process");
    cr_assert_eq(old->heap_lease, 0);
    cr_assert_eq(l->heap_leased, s->heap_lease);
}

Test(ledger, an_exec_takes_over_the_slot_of_its_earlier_image)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    ml_ledger_slot *old = fabricate(l, getpid(), start_time_of(getpid()), 20 * MIB, 0);
    old->allocated = 5 * MIB;
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(s, old, "an exec'd image is the same process");
    cr_assert_eq(s->images, 2);
    cr_assert_eq(s->heap_lease, 0, "the earlier image's heap is gone");
    cr_assert_eq(l->heap_leased, 0);
    cr_assert_eq(s->allocated, 5 * MIB, "its allocations stay counted");
    fake_allocated = 3 * MIB;
    ml__ledger_exit(0, 0);
    cr_assert_eq(s->allocated, 8 * MIB);
}

/* ---- Budget ------------------------------------------------------------------------------ */

Test(ledger, budget_is_lent_exactly_up_to_the_limit)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(ML_NONE, 16 * MIB, &spec);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert(ml__ledger_budget_shared());
    uint64_t lent = 0, got, need = 100 << 10;
    while ((got = ml__ledger_budget_lease(need)) != 0) {
        cr_assert_geq(got, need);
        cr_assert_leq(got - need, ML_LEDGER_BUDGET_EXTRA);
        lent += got;
    }
    cr_assert_leq(lent, 16 * MIB);
    uint64_t left = 16 * MIB - lent;
    cr_assert_lt(left, need, "refused while %lu bytes were left", left);
    if (left > 0) cr_assert_eq(ml__ledger_budget_lease(left), left, "the rest, exactly");
    cr_assert_eq(l->budget_spent, 16 * MIB);
    cr_assert_eq(s->budget_leased, 16 * MIB);
    ml__ledger_budget_return(3 * MIB);
    cr_assert_eq(l->budget_spent, 13 * MIB);
    cr_assert_eq(ml__ledger_budget_lease(3 * MIB + 1), 0);
}

Test(ledger, exit_gives_back_all_heap_room_and_the_unspent_budget_exactly)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, 16 * MIB, &spec);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_grow(10 * MIB), 1);
    cr_assert_geq(ml__ledger_budget_lease(1 * MIB), 1 * MIB);
    fake_allocated = 1536 << 10;
    fake_peak = 9 * MIB;
    ml__ledger_exit(5, 0);
    cr_assert_eq(s->state, ML_SLOT_ENDED);
    cr_assert(s->flags & ML_SLOT_ACCOUNTED);
    cr_assert_eq(s->exit_status, 5);
    cr_assert_eq(s->allocated, 1536 << 10);
    cr_assert_eq(s->heap_peak, 9 * MIB);
    cr_assert_eq(l->heap_leased, 0);
    cr_assert_eq(l->budget_spent, 1536 << 10, "spent: what it allocated, no more");
    cr_assert_not(ml__ledger_attached());
    cr_assert_eq(ml__ledger_heap_room(), UINT64_MAX, "after its end the process is alone");
}

/* ---- Fork -------------------------------------------------------------------------------- */

/* The engine linked into this test registered its fork handlers at start, as in a preloaded
 * process: the child's slot is claimed by the real hook (init.c's fork_child). */
Test(ledger, a_fork_child_claims_its_own_slot_and_is_charged_only_for_what_it_adds)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, 16 * MIB, &spec);
    ml_ledger_slot *parent = attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_grow(10 * MIB), 1);
    uint64_t at_fork, allocations, samples;
    ml__totals(&at_fork, &allocations, &samples); /* the parent's doing, not the child's */
    pid_t pid = fork();
    if (pid == 0) {
        ml_ledger_slot *mine = NULL;
        for (uint32_t i = 0; i < l->high_water; i++)
            if (ml__ledger_slot(l, i)->pid == getpid()) mine = ml__ledger_slot(l, i);
        uint64_t inherited = ml__ledger_heap_room();
        int ok = mine != NULL && mine != parent && mine->images == 0 &&
                 (mine->flags & ML_SLOT_FORKED) && mine->ppid == getppid() &&
                 mine->heap_lease == 0 && inherited < 10 * MIB;
        ok = ok && ml__ledger_heap_grow(inherited + 2 * MIB) && mine->heap_lease >= 2 * MIB &&
             mine->heap_lease <= 2 * MIB + ML_LEDGER_HEAP_EXTRA;
        fake_allocated = at_fork + 2 * MIB;
        ml__ledger_exit(0, 0);
        ok = ok && mine->allocated == 2 * MIB && (mine->flags & ML_SLOT_ACCOUNTED);
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's view was wrong");
    cr_assert_eq(parent->state, ML_SLOT_LIVE, "the parent's slot is untouched");
    cr_assert_eq(l->heap_leased, parent->heap_lease, "the child gave its room back");
}

/* ---- The lock, the slots, the way in ------------------------------------------------------ */

Test(ledger, a_lock_holder_killed_midway_is_recovered_from_the_slots)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(ml__ledger_heap_grow(10 * MIB), 1);
    pid_t pid = fork();
    if (pid == 0) {
        ml__ledger_lock(l);
        l->heap_leased += 12345; /* half an update */
        raise(SIGKILL);
    }
    waitpid(pid, NULL, 0);
    ml__ledger_lock(l);
    cr_assert_eq(l->repairs, 1);
    cr_assert_eq(l->heap_leased, s->heap_lease, "the sum was recomputed from the slots");
    ml__ledger_unlock(l);
}

Test(ledger, released_slots_are_reused)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, 16 * MIB, &spec);
    for (int i = 0; i < 1000; i++) {
        attach(l, &spec);
        cr_assert_geq(ml__ledger_budget_lease(1000), 1000);
        fake_allocated = 1000;
        ml__ledger_exit(0, 0);
        ml_ledger_slot copy;
        cr_assert_eq(ml__ledger_release(l, 0, &copy), 1);
        cr_assert_eq(copy.serial, (uint64_t)i + 1);
    }
    cr_assert_eq(l->high_water, 1, "slots leaked");
    cr_assert_eq(l->budget_spent, 1000 * 1000);
    cr_assert_eq(l->budget_retired, 1000 * 1000);
}

Test(ledger, a_descriptor_that_is_not_the_ledger_is_refused)
{
    ml_ledger_spec spec;
    make(64 * MIB, ML_NONE, &spec);
    char path[] = "/tmp/ml_ledger_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_assert_eq(ftruncate(fd, 4 << 20), 0);
    ml_ledger_spec wrong = spec;
    wrong.fd = fd;
    char why[256];
    cr_assert_eq(ml__ledger_attach(&wrong, gather, why, sizeof why), -1);
    cr_assert(strstr(why, "cannot reach the tree's ledger") != NULL, "%s", why);
    cr_assert(strstr(why, "apply to this process alone") != NULL, "%s", why);
    wrong = spec;
    wrong.id ^= 1;
    cr_assert_eq(ml__ledger_attach(&wrong, gather, why, sizeof why), -1, "another tree's id");
    cr_assert_not(ml__ledger_attached());
}

Test(ledger, a_closed_descriptor_is_reached_through_the_launchers_proc_entry)
{
    ml_ledger_spec spec;
    ml_ledger *l = make(64 * MIB, ML_NONE, &spec);
    pid_t holder = sleeper(); /* keeps the descriptor, as the launcher does */
    int null = open("/dev/null", O_RDWR);
    cr_assert_geq(dup2(null, spec.fd), 0); /* our descriptor is something else now */
    spec.pid = holder;
    ml_ledger_slot *s = attach(l, &spec);
    cr_assert_eq(s->pid, getpid());
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
}

Test(ledger, the_variable_round_trips_and_refuses_what_memlimit_never_writes)
{
    const ml_option *row = NULL;
    for (size_t i = 0; i < ml__option_count; i++)
        if (strcmp(ml__options[i].env, "MEMLIMITS_LEDGER") == 0) row = &ml__options[i];
    cr_assert_not_null(row);
    cr_assert_null(row->flag, "not a launcher option");
    ml_ledger_spec spec;
    const char *why;
    cr_assert_eq(row->parse("5:1234:00000000deadbeef", &spec, &why), 0);
    cr_assert_eq(spec.fd, 5);
    cr_assert_eq(spec.pid, 1234);
    cr_assert_eq(spec.id, 0xdeadbeefu);
    char printed[64];
    row->print(&spec, printed, sizeof printed);
    cr_assert_str_eq(printed, "5:1234:00000000deadbeef");
    /* The launcher writes it fixed-width (the environment's size must not vary by run). */
    cr_assert_eq(row->parse("00005:0000001234:00000000deadbeef", &spec, &why), 0);
    cr_assert(spec.fd == 5 && spec.pid == 1234 && spec.id == 0xdeadbeefu);
    cr_assert_eq(row->parse("none", &spec, &why), 0);
    cr_assert_eq(spec.fd, -1);
    static const char *const bad[] = {"",
                                      "5",
                                      "5:1234",
                                      "5:1234:deadbeef",
                                      "5:0:00000000deadbeef",
                                      "-1:1234:00000000deadbeef",
                                      "5:1234:0000000000000000",
                                      "5:1234:00000000deadbeefx",
                                      "5:1234:00000000deadbeeg",
                                      "70000:1234:00000000deadbeef"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(row->parse(bad[i], &spec, &why), -1, "accepted '%s'", bad[i]);
}
