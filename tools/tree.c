/* The launcher's tree mode (see tree.h): the ledger, the subreaper and its loop.
 *
 * The loop wakes on a signalfd (SIGCHLD, and the termination signals it forwards) and at least
 * every TICK_MS. Each round it reaps its children (the command, and every orphan of the tree,
 * which the kernel reparents to a subreaper), reclaims the slots of processes found dead (its
 * own children when reaped; others when /proc says their pid is gone, reused or a zombie),
 * copies ended slots into rows and frees them, and every SCAN_EVERY rounds lists the tree from
 * /proc, to name processes that never attached to the ledger. It ends when no child is left:
 * a subreaper's tree is then empty. */
#define _GNU_SOURCE
#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host.h"

enum { TICK_MS = 50, SCAN_EVERY = 4 };

/* A process seen in /proc without a slot (it may attach later, or never), or, `escaped`, with a
 * slot but running an image that did not attach: an exec that dropped LD_PRELOAD (env -i) or
 * that the loader would not preload (set-user-ID, static). */
typedef struct sighting {
    int pid, ppid;
    uint64_t start_time;
    char argv[ML_LEDGER_ARGV];
    uint32_t argv_len;
    int argv_cut;
    int escaped; /* scans that saw it so: two make it sure (an exec attaches within a moment) */
} sighting;

typedef struct supervisor {
    ml_tree *tree;
    ml_ledger *ledger;
    sighting *seen;
    size_t nseen, seen_cap;
    int no_children;
} supervisor;

static void *grow(void *array, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return array;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(array, n * size);
    if (p == NULL) {
        fputs("memlimit: out of memory\n", stderr);
        exit(ML_EXIT_CONFIG);
    }
    *cap = n;
    return p;
}

static ml_tree_row *new_row(ml_tree *t)
{
    t->rows = grow(t->rows, &t->rows_cap, t->nrows + 1, sizeof *t->rows);
    ml_tree_row *r = &t->rows[t->nrows++];
    memset(r, 0, sizeof *r);
    r->ppid = -1;
    r->exit_status = -1;
    return r;
}

static void set_wait_status(ml_tree_row *r, int status)
{
    r->ended_known = 1;
    r->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* A slot the ledger has released becomes a row. */
static ml_tree_row *row_from_slot(ml_tree *t, const ml_ledger_slot *s)
{
    ml_tree_row *r = new_row(t);
    r->pid = s->pid;
    r->ppid = s->ppid;
    r->start_time = s->start_time;
    r->serial = s->serial;
    r->argv_len = ML_MIN(s->argv_len, (uint32_t)sizeof r->argv);
    memcpy(r->argv, s->argv, r->argv_len);
    r->argv_cut = (s->flags & ML_SLOT_ARGV_CUT) != 0;
    r->images = s->images;
    r->flags = s->flags;
    r->heap_peak = s->heap_peak;
    r->allocated = s->allocated;
    memcpy(r->fired, s->fired, sizeof r->fired);
    if (s->flags & ML_SLOT_ACCOUNTED) {
        r->ended_known = 1;
        r->exit_status = s->exit_status;
        r->signal = s->signal;
    }
    return r;
}

static void release_slot(supervisor *sv, uint32_t i)
{
    ml_ledger_slot copy;
    if (ml__ledger_release(sv->ledger, i, &copy)) row_from_slot(sv->tree, &copy);
}

/* Reclaims the slots of dead processes and turns ended slots into rows. */
static void sweep(supervisor *sv)
{
    ml_ledger *l = sv->ledger;
    uint32_t high = __atomic_load_n(&l->high_water, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        uint32_t state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        if (state == ML_SLOT_FREE) continue;
        if (state == ML_SLOT_LIVE) ml__ledger_reclaim(l, i, 0);
        release_slot(sv, i);
    }
    if (high > sv->tree->slots_high_water) sv->tree->slots_high_water = high;
}

static const sighting *find_sighting(const supervisor *sv, int pid)
{
    for (size_t i = sv->nseen; i-- > 0;)
        if (sv->seen[i].pid == pid && !sv->seen[i].escaped) return &sv->seen[i];
    return NULL;
}

/* A child was reaped with `status`: its slot (if any) is dead for sure. */
static void reaped(supervisor *sv, int pid, int status)
{
    ml_tree *t = sv->tree;
    ml_ledger *l = sv->ledger;
    uint32_t high = __atomic_load_n(&l->high_water, __ATOMIC_ACQUIRE);
    int found = 0;
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ML_SLOT_FREE || s->pid != pid) continue;
        /* Checked in /proc all the same: the pid may already be another process's. */
        ml__ledger_reclaim(l, i, 0);
        ml_ledger_slot copy;
        if (ml__ledger_release(l, i, &copy)) {
            set_wait_status(row_from_slot(t, &copy), status);
            found = 1;
        }
    }
    /* Ended and released already: the latest row of that pid without a wait status. */
    for (size_t i = t->nrows; !found && i-- > 0;) {
        ml_tree_row *r = &t->rows[i];
        if (r->pid != pid) continue;
        if (r->serial != 0) set_wait_status(r, status);
        found = 1;
    }
    if (found) return;
    /* It never attached: a static or set-user-ID program, a scrubbed environment. */
    ml_tree_row *r = new_row(t);
    r->pid = pid;
    set_wait_status(r, status);
    const sighting *seen = find_sighting(sv, pid);
    if (seen != NULL) {
        r->ppid = seen->ppid;
        r->start_time = seen->start_time;
        memcpy(r->argv, seen->argv, seen->argv_len);
        r->argv_len = seen->argv_len;
        r->argv_cut = seen->argv_cut;
    } else if (pid == t->command_pid) {
        r->ppid = getpid();
        for (char **a = t->command; *a != NULL; a++) {
            size_t n = strlen(*a) + 1;
            if (r->argv_len + n > sizeof r->argv) {
                r->argv_cut = 1;
                break;
            }
            memcpy(r->argv + r->argv_len, *a, n);
            r->argv_len += (uint32_t)n;
        }
        if (r->argv_len > 0 && !r->argv_cut) r->argv_len--; /* no NUL after the last word */
    }
}

static void reap(supervisor *sv)
{
    ml_tree *t = sv->tree;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
        if (pid == 0) return;
        if (pid < 0) {
            if (errno == EINTR) continue;
            sv->no_children = errno == ECHILD;
            return;
        }
        if (pid == t->command_pid) {
            t->command_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            t->command_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        }
        reaped(sv, pid, status);
    }
}

/* ---- Listing the tree from /proc --------------------------------------------------------- */

typedef struct proc_entry {
    int pid, ppid;
    uint64_t start;
    int in_tree;
    char comm[ML_LEDGER_COMM];
} proc_entry;

static ml_ledger_slot *slot_of(ml_ledger *l, int pid, uint64_t start)
{
    uint32_t high = __atomic_load_n(&l->high_water, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != ML_SLOT_FREE && s->pid == pid &&
            s->start_time == start)
            return s;
    }
    return NULL;
}

/* Whether the process maps libmemlimits (an image that changed its name may still be ours).
 * A process whose maps cannot be read (set-user-ID) does not. */
static int maps_library(int pid)
{
    static const char needle[] = "libmemlimits";
    char path[64], buf[65536 + sizeof needle];
    size_t keep = 0;
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC), found = 0;
    ssize_t n;
    while (fd >= 0 && !found && (n = read(fd, buf + keep, sizeof buf - keep - 1)) > 0) {
        buf[keep + (size_t)n] = '\0';
        found = memmem(buf, keep + (size_t)n, needle, sizeof needle - 1) != NULL;
        keep = ML_MIN(keep + (size_t)n, sizeof needle - 1);
        memmove(buf, buf + (size_t)n, keep); /* the tail, for a name cut between reads */
    }
    if (fd >= 0) close(fd);
    return found;
}

static sighting *sighting_of(supervisor *sv, int pid, uint64_t start, int escaped)
{
    for (size_t k = 0; k < sv->nseen; k++)
        if (sv->seen[k].pid == pid && sv->seen[k].start_time == start &&
            (sv->seen[k].escaped != 0) == (escaped != 0))
            return &sv->seen[k];
    sv->seen = grow(sv->seen, &sv->seen_cap, sv->nseen + 1, sizeof *sv->seen);
    sighting *s = &sv->seen[sv->nseen++];
    memset(s, 0, sizeof *s);
    s->pid = pid;
    s->start_time = start;
    return s;
}

/* Notes every descendant of the launcher that has no slot: seen once, it is named in the report
 * unless it attaches later (same pid and start time). */
static void scan_proc(supervisor *sv)
{
    static proc_entry *all;
    static size_t cap;
    size_t n = 0;
    DIR *d = opendir("/proc");
    if (d == NULL) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0) continue;
        proc_entry p = {(int)pid, 0, 0, 0, ""};
        char state;
        if (ml__proc_stat_comm(p.pid, &state, &p.ppid, &p.start, p.comm) != 0 || state == 'Z')
            continue;
        all = grow(all, &cap, n + 1, sizeof *all);
        all[n++] = p;
    }
    closedir(d);
    /* Descendants: marked from their parents until nothing changes. */
    int self = getpid(), changed = 1;
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (all[i].in_tree) continue;
            int in_tree = all[i].ppid == self;
            for (size_t k = 0; !in_tree && k < n; k++)
                in_tree = all[k].in_tree && all[k].pid == all[i].ppid;
            if (in_tree) all[i].in_tree = 1, changed = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!all[i].in_tree) continue;
        ml_ledger_slot *slot = slot_of(sv->ledger, all[i].pid, all[i].start);
        int escaped = 0;
        if (slot != NULL) {
            /* Attached; its image still the one that attached? */
            char comm[ML_LEDGER_COMM];
            memcpy(comm, slot->comm, sizeof comm);
            comm[sizeof comm - 1] = '\0';
            if (strcmp(comm, all[i].comm) == 0 || maps_library(all[i].pid)) continue;
            escaped = 1;
        }
        sighting *s = sighting_of(sv, all[i].pid, all[i].start, escaped);
        s->escaped += escaped;
        s->ppid = all[i].ppid;
        s->argv_len = (uint32_t)ml__proc_cmdline(s->pid, s->argv, sizeof s->argv, &s->argv_cut);
    }
}

/* Sightings that never became a slot and were not reaped by the launcher: rows of their own. */
static void add_unattached(supervisor *sv)
{
    ml_tree *t = sv->tree;
    for (size_t i = 0; i < sv->nseen; i++) {
        const sighting *s = &sv->seen[i];
        if (s->escaped) {
            /* Seen twice running an image that did not attach: the slot's row says so. */
            for (size_t k = 0; s->escaped >= 2 && k < t->nrows; k++) {
                ml_tree_row *r = &t->rows[k];
                if (r->pid != s->pid || r->start_time != s->start_time || r->serial == 0) continue;
                memcpy(r->escaped_argv, s->argv, s->argv_len);
                r->escaped_len = s->argv_len;
                r->escaped = 1;
            }
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < t->nrows && !known; k++) {
            const ml_tree_row *r = &t->rows[k];
            known = r->pid == s->pid && (r->start_time == s->start_time || r->start_time == 0);
        }
        if (known) continue;
        ml_tree_row *r = new_row(t);
        r->pid = s->pid;
        r->ppid = s->ppid;
        r->start_time = s->start_time;
        memcpy(r->argv, s->argv, s->argv_len);
        r->argv_len = s->argv_len;
        r->argv_cut = s->argv_cut;
    }
}

/* ---- Signals ----------------------------------------------------------------------------- */

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

/* A signal sent to the launcher by a process (kill; not the terminal, which signals the whole
 * foreground process group, the command included) goes, as timeout(1) sends its signal to its
 * process group, to the command and to every other process of the tree still running (checked
 * by start time: a pid may have been reused since its slot was claimed). */
static void forward(supervisor *sv, const struct signalfd_siginfo *si)
{
    ml_tree *t = sv->tree;
    int sig = (int)si->ssi_signo;
    if (si->ssi_code == SI_KERNEL) return;
    if (t->command_status < 0 && t->command_signal == 0) kill(t->command_pid, sig);
    ml_ledger *l = sv->ledger;
    uint32_t high = __atomic_load_n(&l->high_water, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ML_SLOT_LIVE &&
            s->pid != t->command_pid && ml__proc_running(s->pid, s->start_time))
            kill(s->pid, sig);
    }
}

/* ---- The run ----------------------------------------------------------------------------- */

/* Rows in the order the processes started (unknown start times first), then of their slots. */
static int by_start(const void *a, const void *b)
{
    const ml_tree_row *x = a, *y = b;
    if (x->start_time != y->start_time) return x->start_time < y->start_time ? -1 : 1;
    if (x->serial != y->serial) return x->serial < y->serial ? -1 : 1;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

static int fail(char *why, size_t cap, int status, const char *what, int err)
{
    snprintf(why, cap, "%s: %s", what, strerror(err));
    return status;
}

/* The outcome: the first firing of a limit with an exiting action, unless --preserve-status;
 * otherwise the command's own status or signal. */
static void settle(ml_tree *t)
{
    ml_ledger_firing *first = NULL;
    t->first_kind = -1;
    for (int k = 0; k < 2; k++) {
        if (t->first_row[k] == SIZE_MAX) continue;
        ml_ledger_firing *f = &t->rows[t->first_row[k]].fired[k];
        if (first == NULL || f->seq < first->seq) first = f, t->first_kind = k;
    }
    t->status_by_limit = 0;
    if (first != NULL && !t->preserve_status) {
        if (first->action_kind == ML_ACTION_EXIT) {
            t->status = first->action_arg;
            t->status_by_limit = 1;
            return;
        }
        if (first->action_kind == ML_ACTION_ABORT) {
            t->status = 128 + SIGABRT;
            t->status_by_limit = 1;
            return;
        }
    }
    t->status = t->command_signal != 0 ? -t->command_signal : t->command_status;
}

int ml_tree_run(ml_tree *t, char *why, size_t whycap)
{
    supervisor sv = {t, NULL, NULL, 0, 0, 0};
    int fd, errpipe[2];
    sv.ledger = ml__ledger_create(t->heap, t->alloc, &fd, why, whycap);
    if (sv.ledger == NULL) return ML_EXIT_CONFIG;
    /* Fixed width, so that the environment has the same size on every run: a program's
     * allocations (and so where a budget stops it) may depend on it. */
    char spec[96];
    snprintf(spec, sizeof spec, "%05d:%010d:%016llx", fd, (int)getpid(),
             (unsigned long long)sv.ledger->id);
    if (setenv("MEMLIMITS_LEDGER", spec, 1) != 0)
        return fail(why, whycap, ML_EXIT_CONFIG, "cannot set MEMLIMITS_LEDGER", errno);
    /* Orphans of the tree become the launcher's children, so that it sees every process end. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        return fail(why, whycap, ML_EXIT_CONFIG, "cannot become the tree's subreaper", errno);

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaddset(&set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &set, &old);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || pipe2(errpipe, O_CLOEXEC) != 0)
        return fail(why, whycap, ML_EXIT_CONFIG, "cannot set up the tree's signals", errno);

    t->command_status = -1;
    t->command_signal = 0;
    t->first_row[0] = t->first_row[1] = SIZE_MAX;
    uint64_t start = ml__now_ns();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return fail(why, whycap, ML_EXIT_CANNOT_EXEC, "cannot fork", errno);
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        close(sfd);
        execvp(t->command[0], t->command);
        int err = errno;
        if (write(errpipe[1], &err, sizeof err) < 0) _exit(ML_EXIT_CANNOT_EXEC);
        _exit(ML_EXIT_CANNOT_EXEC);
    }
    t->command_pid = pid;
    close(errpipe[1]);
    int err = 0;
    ssize_t got;
    while ((got = read(errpipe[0], &err, sizeof err)) < 0 && errno == EINTR) {
    }
    close(errpipe[0]);
    if (got == (ssize_t)sizeof err) {
        waitpid(pid, NULL, 0);
        int status = err == ENOENT || err == ENOTDIR ? ML_EXIT_NOT_FOUND : ML_EXIT_CANNOT_EXEC;
        snprintf(why, whycap, "cannot run '%s': %s", t->command[0], strerror(err));
        return status;
    }

    for (unsigned round = 0; !sv.no_children; round++) {
        struct pollfd p = {sfd, POLLIN, 0};
        poll(&p, 1, TICK_MS);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
            if (si.ssi_signo != SIGCHLD) forward(&sv, &si);
        reap(&sv);
        sweep(&sv);
        if (round % SCAN_EVERY == 0 && !sv.no_children) scan_proc(&sv);
    }
    /* No child left: every process of the tree has ended. A slot still live belongs to a
     * process that reached the ledger from outside the tree (through /proc): it is listed as it
     * is now. */
    uint32_t high = __atomic_load_n(&sv.ledger->high_water, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(sv.ledger, i);
        ml__ledger_reclaim(sv.ledger, i, 0);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ML_SLOT_LIVE)
            row_from_slot(t, s);
        else
            release_slot(&sv, i);
    }
    add_unattached(&sv);
    t->wall_ns = ml__now_ns() - start;
    t->tree_peak = __atomic_load_n(&sv.ledger->tree_peak, __ATOMIC_RELAXED);
    t->attach_failures = sv.ledger->attach_failures;
    t->lock_repairs = sv.ledger->repairs;
    qsort(t->rows, t->nrows, sizeof *t->rows, by_start);
    for (int k = 0; k < 2; k++) {
        uint64_t serial = sv.ledger->first_fired[k];
        for (size_t i = 0; serial != 0 && i < t->nrows; i++)
            if (t->rows[i].serial == serial) t->first_row[k] = i;
    }
    settle(t);
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(sfd);
    free(sv.seen);
    return 0;
}
