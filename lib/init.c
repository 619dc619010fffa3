/* Process initialisation (see init.h).
 *
 * Bootstrap: the dynamic loader and other libraries' constructors may call malloc before our
 * constructor runs, so initialisation is lazy: the first slow path of any thread runs ml__init.
 * It parses the environment (getenv is safe this early on Linux; we read environ directly), then
 * creates the thread-exit key, then makes jemalloc initialise itself with a malloc/free pair,
 * then registers our fork handlers: that order puts our key destructor before jemalloc's (fork
 * needs no order: jemalloc hands its fork handlers to ours, which call them, host.h). The
 * constructor runs it too, so that a program that never allocates still has its configuration
 * checked and printed. A second thread arriving while a first initialises waits for it; the
 * initialising thread's own nested allocations pass through the slow path (busy) without
 * waiting. */
#define _GNU_SOURCE
#include "init.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "fmt.h"
#include "heap.h"
#include "host.h"
#include "ledger.h"
#include "memprof.h"
#include "profile.h"
#include "report.h"
#include "sampler.h"
#include "task.h"
#include "thread.h"
#include "token.h"

static int init_state; /* 0: not started, 1: running, 2: done */
static ml_config config;

const ml_config *ml__config(void)
{
    return &config;
}

int ml__initialised(void)
{
    return __atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2;
}

/* What thread exit and fork need from the modules above the registry (thread.h). */
static void thread_exit_round(ml_thread *t)
{
    ml__memprof_drain();
    ml__heap_flush(t);
}

static void thread_retire(ml_thread *t)
{
    ml__memprof_thread_exit();
    ml__heap_flush(t);
    ml__budget_release(t);
}

static void fork_child(int multithreaded)
{
    if (multithreaded) ml__token_fork_child();
    ml__task_fork_child(multithreaded);
    ml__memprof_fork_child();
    ml__profile_fork_child();
    /* A process tree: the child takes a slot of its own and drops the parent's leases. */
    ml_thread *t = &ml__self;
    uint64_t allocated, allocations, samples;
    ml__totals(&allocated, &allocations, &samples);
    ml__ledger_fork_child(ml__heap_live(), allocated, t->allocated + ml__since_arm(t));
    ml__budget_fork_child(t);
}

/* The process's figures at its end, for the tree's ledger: exact when the thread can flush. */
static void tree_figures(ml_ledger_figures *f)
{
    ml_thread *t = &ml__self;
    uint64_t allocations, samples;
    if (t->state == ML_THREAD_READY && ml__busy_enter(t)) {
        ml__heap_flush(t);
        ml__busy_leave(t);
    }
    if (!t->busy) ml__heap_reconcile();
    ml__totals(&f->allocated, &allocations, &samples);
    f->live = ml__heap_live();
    f->peak = ml__heap_peak();
}

static void fork_lost(const ml_thread *t)
{
    ml__budget_fork_lost(t);
}

static const ml_thread_hooks thread_hooks = {
    thread_exit_round, thread_retire,          fork_child,
    fork_lost,         ml__token_fork_prepare, ml__token_fork_parent};

static ML_COLD void fatal(const char *line)
{
    ml__write_all(STDERR_FILENO, line, strlen(line));
    ml__write_all(STDERR_FILENO, "\n", 1);
    _exit(ML_EXIT_CONFIG);
}

static void print_config(void)
{
    char storage[4096];
    ml_buf b = ML_BUF_INIT(storage);
    if (ml__host_is_go_program("/proc/self/exe")) {
        /* Its malloc is ours, its heap is not: do not claim that the limits bound it. */
        ml__buf_str(&b, "memlimits: pid ");
        ml__buf_u64(&b, (uint64_t)getpid());
        ml__buf_str(&b, " is a Go program: its heap is Go's own, not malloc's, and is not "
                        "limited; configuration for what it mallocs:\n");
    } else {
        ml__buf_str(&b, "memlimits: active in pid ");
        ml__buf_u64(&b, (uint64_t)getpid());
        ml__buf_str(&b, "; effective configuration:\n");
    }
    ml__config_describe(&config, ml__getenv, &b);
    ml__buf_flush(&b, STDERR_FILENO);
}

static void init_once(void)
{
    char err[1024];
    if (ml__config_load_env(&config, ml__environment(), err, sizeof err) != 0) fatal(err);
    if (ml__report_setup(&config, err, sizeof err) != 0) fatal(err);
    /* Not fatal: a process that cannot reach its tree's ledger keeps the limits as its own. */
    if (ml__ledger_attach(&config.ledger, tree_figures, err, sizeof err) < 0) {
        ml__write_all(STDERR_FILENO, err, strlen(err));
        ml__write_all(STDERR_FILENO, "\n", 1);
    }
    if (ml__thread_setup_key(&thread_hooks) != 0) fatal("memlimits: cannot create a pthread key");
    int je = ml__host_jemalloc_init();
    if (je == -1)
        fatal("memlimits: the embedded jemalloc has no per-thread statistics (--enable-stats)");
    if (je != 0) fatal("memlimits: the embedded jemalloc registered no fork handlers");
    ml__thread_setup_fork();
    ml__sampler_set_mean(config.sample);
    ml__sampler_set_seed(config.seed.set ? config.seed.value : ml__os_entropy());
    ml__host_unwind_mode(config.unwind);
    if (config.heap != ML_NONE) ml__heap_set_cap(config.heap);
    if (config.alloc != ML_NONE) ml__budget_set(config.alloc);
    if (config.global != ML_NONE) ml__task_set_global_limit(config.global);
    if (config.verbose) print_config();
}

void ml__init(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&init_state, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        /* Allocations made while initialising (pthread_atfork's list, say) must pass through. */
        uint8_t busy = ml__self.busy;
        ml__self.busy = 1;
        init_once();
        ml__self.busy = busy;
        __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
        sched_yield();
}

static void report_at_exit(int status, void *arg)
{
    (void)arg;
    ml__report_write("exit", status, 0);
}

static void profile_at_exit(int status, void *arg)
{
    (void)status, (void)arg;
    ml__profile_write_exit();
}

static void tree_at_exit(int status, void *arg)
{
    (void)arg;
    ml__ledger_exit(status, 0);
}

__attribute__((constructor)) static void memlimits_constructor(void)
{
    ml__init();
    /* Whether malloc is ours, asked now (a malloc(0) that no limit refuses this early) rather
     * than first by the exit report, where a heap cap already reached would refuse the probe and
     * count it as a refusal. Not from init itself: there the thread may be busy, and the probe's
     * charge would leave a countdown that no event re-arms. */
    ml__host_owns_malloc(&ml__self.allocations_down);
    if (config.report.kind != ML_REPORT_OFF) on_exit(report_at_exit, NULL);
    /* Outside the allocator: the unwinder is set up here, and the heap profile started. */
    if (config.report.kind != ML_REPORT_OFF || config.profile[0] != '\0')
        ml__profile_firing_setup(config.profile[0] != '\0');
    if (config.profile[0] != '\0') {
        if (ml__profile_start(config.profile, config.sample) != 0)
            fatal("memlimits: MEMLIMITS_PROFILE: cannot start the heap profile");
        on_exit(profile_at_exit, NULL);
    }
    /* Registered after the report's, so it runs before it (on_exit's order is reversed). */
    if (ml__ledger_attached()) on_exit(tree_at_exit, NULL);
}
