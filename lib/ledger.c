/* The tree ledger (see ledger.h): a memfd shared by every process of a tree, a header of sums
 * and one slot per process. Leases and the ends of processes take the ledger's lock, a robust
 * process-shared mutex: a process killed while holding it leaves the sums half-updated, and the
 * next locker recomputes them from the slots, which are the truth (each slot field is written
 * with one store). The tree's live heap and peak, and a process's published figures, are
 * atomics outside the lock: they feed the report, never a decision.
 *
 * Nothing here allocates or touches stdio: the engine calls it from the allocator's slow path,
 * with the thread busy. The /proc readers use stack buffers and keep errno. */
#define _GNU_SOURCE
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "fmt.h"
#include "host.h"

#define HEADER_SIZE 4096
#define LEDGER_BYTES (HEADER_SIZE + (size_t)ML_LEDGER_SLOTS * sizeof(ml_ledger_slot))

_Static_assert(sizeof(ml_ledger) <= HEADER_SIZE, "the ledger's header outgrew its page");
_Static_assert(sizeof(ml_ledger_slot) % 64 == 0, "slots are whole cache lines");

/* ---- This process's attachment ----------------------------------------------------------- */

static ml_ledger *ledger;
ml_ledger_slot *ml__ledger_self; /* NULL: not attached, or ended (ledger.h) */
static void (*gather_figures)(ml_ledger_figures *out);
/* The live heap a fork child inherited and is not charged for; lowered to the live heap when the
 * child frees below it, so that what it allocates after is charged. 0 in an exec'd image. */
static uint64_t heap_base;
static int forked_image; /* this image began as a fork child (heap_base was its parent's) */
/* Budget lent to this image's threads, net of returns (under the lock). */
static uint64_t image_leased;
/* The process's allocation count that is not this image's (a fork child's parent's), and the
 * slot's count from earlier images (an exec). */
static uint64_t alloc_base, prior_allocated;
/* What this thread's exact count was when it last added to the slot's. */
static ML_TLS uint64_t thread_published;

ml_ledger_slot *ml__ledger_slot(ml_ledger *l, uint32_t index)
{
    return (ml_ledger_slot *)((char *)l + HEADER_SIZE) + index;
}

static uint64_t saturating_sub(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static void atomic_max(uint64_t *p, uint64_t v)
{
    uint64_t old = ML_LOAD(p);
    while (v > old &&
           !__atomic_compare_exchange_n(p, &old, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* ---- /proc ------------------------------------------------------------------------------- */

static size_t proc_path(char *out, size_t cap, int pid, const char *leaf)
{
    ml_buf b = {out, cap - 1, 0, 0};
    ml__buf_str(&b, "/proc/");
    if (pid > 0)
        ml__buf_u64(&b, (uint64_t)pid);
    else
        ml__buf_str(&b, "self");
    ml__buf_str(&b, leaf);
    out[b.len] = '\0';
    return b.len;
}

static int parse_u64(const char **s, uint64_t *out)
{
    uint64_t v = 0;
    if (**s < '0' || **s > '9') return -1;
    for (; **s >= '0' && **s <= '9'; (*s)++)
        v = v * 10 + (uint64_t)(**s - '0');
    *out = v;
    return 0;
}

int ml__proc_stat(int pid, char *state, int *ppid, uint64_t *start_time)
{
    return ml__proc_stat_comm(pid, state, ppid, start_time, NULL);
}

int ml__proc_stat_comm(int pid, char *state, int *ppid, uint64_t *start_time,
                       char comm[ML_LEDGER_COMM])
{
    char path[64], buf[1024];
    int saved = errno;
    proc_path(path, sizeof path, pid, "/stat");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    errno = saved;
    if (n <= 0) return -1;
    buf[n] = '\0';
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses, so fields are counted
     * from the last ')'. Field 3 is the state, 4 the parent, 22 the start time. */
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') return -1;
    if (comm != NULL) {
        const char *open_paren = strchr(buf, '(');
        size_t len = open_paren != NULL && open_paren < p ? (size_t)(p - open_paren - 1) : 0;
        len = ML_MIN(len, (size_t)ML_LEDGER_COMM - 1);
        memcpy(comm, open_paren != NULL ? open_paren + 1 : "", len);
        comm[len] = '\0';
    }
    p += 2;
    uint64_t v = 0;
    if (state != NULL) *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) return -1;
        p++;
        if (field + 1 == 4 && ppid != NULL) {
            const char *q = p;
            if (parse_u64(&q, &v) != 0) return -1;
            *ppid = (int)v;
        }
    }
    if (parse_u64(&p, &v) != 0) return -1;
    if (start_time != NULL) *start_time = v;
    return 0;
}

int ml__proc_running(int pid, uint64_t start_time)
{
    char state;
    uint64_t start;
    if (pid <= 0 || ml__proc_stat(pid, &state, NULL, &start) != 0) return 0;
    return start == start_time && state != 'Z' && state != 'X' && state != 'x';
}

size_t ml__proc_cmdline(int pid, char *out, size_t cap, int *cut)
{
    char path[64], extra;
    int saved = errno;
    size_t len = 0;
    *cut = 0;
    proc_path(path, sizeof path, pid, "/cmdline");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved;
        return 0;
    }
    while (len < cap) {
        ssize_t n = read(fd, out + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    if (len == cap && read(fd, &extra, 1) == 1) *cut = 1;
    close(fd);
    errno = saved;
    while (len > 0 && out[len - 1] == '\0' && !*cut)
        len--;
    return len;
}

/* ---- The lock and the sums --------------------------------------------------------------- */

void ml__ledger_repair(ml_ledger *l)
{
    uint64_t leased = 0, spent = l->budget_retired;
    for (uint32_t i = 0; i < ML_LOAD(&l->high_water); i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (ML_LOAD(&s->state) == ML_SLOT_FREE) continue;
        leased += ML_LOAD(&s->heap_lease);
        spent += ML_LOAD(&s->budget_leased);
    }
    l->heap_leased = leased;
    l->budget_spent = spent;
}

void ml__ledger_lock(ml_ledger *l)
{
    if (pthread_mutex_lock(&l->lock) == EOWNERDEAD) {
        ml__ledger_repair(l);
        l->repairs++;
        pthread_mutex_consistent(&l->lock);
    }
}

void ml__ledger_unlock(ml_ledger *l)
{
    pthread_mutex_unlock(&l->lock);
}

/* Ends a LIVE slot under the lock: its heap room goes back to the tree and its live heap leaves
 * the tree's sum (its heap is gone); its budget leases stay spent. */
static void end_slot(ml_ledger *l, ml_ledger_slot *s, uint32_t flags)
{
    l->heap_leased -= ML_LOAD(&s->heap_lease);
    ML_STORE(&s->heap_lease, 0);
    int64_t live = __atomic_exchange_n(&s->heap_live, 0, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&l->tree_live, live, __ATOMIC_RELAXED);
    ML_STORE(&s->flags, s->flags | flags);
    __atomic_store_n(&s->state, ML_SLOT_ENDED, __ATOMIC_RELEASE);
}

int ml__ledger_reclaim(ml_ledger *l, uint32_t index, int known_dead)
{
    ml_ledger_slot *s = ml__ledger_slot(l, index);
    if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != ML_SLOT_LIVE) return 0;
    int pid = ML_LOAD(&s->pid);
    uint64_t start = ML_LOAD(&s->start_time);
    if (!known_dead && ml__proc_running(pid, start)) return 0;
    ml__ledger_lock(l);
    int done = s->state == ML_SLOT_LIVE && s->pid == pid && s->start_time == start;
    if (done) end_slot(l, s, ML_SLOT_RECLAIMED);
    ml__ledger_unlock(l);
    return done;
}

int ml__ledger_release(ml_ledger *l, uint32_t index, ml_ledger_slot *copy)
{
    ml_ledger_slot *s = ml__ledger_slot(l, index);
    if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != ML_SLOT_ENDED) return 0;
    ml__ledger_lock(l);
    *copy = *s;
    l->budget_retired += s->budget_leased; /* budget_spent is unchanged: it moves to retired */
    memset(s, 0, sizeof *s);
    ml__ledger_unlock(l);
    return 1;
}

/* ---- Claiming a slot --------------------------------------------------------------------- */

static void fill_argv(ml_ledger_slot *s)
{
    int cut;
    size_t len = ml__proc_cmdline(0, s->argv, sizeof s->argv, &cut);
    s->argv_len = (uint32_t)len;
    s->flags = cut ? s->flags | ML_SLOT_ARGV_CUT : s->flags & ~(uint32_t)ML_SLOT_ARGV_CUT;
}

/* The slot of (pid, start) if LIVE: an exec'd image takes over its earlier image's slot. Else a
 * free one. NULL when the table is full. Sets *took_over. Under the lock. */
static ml_ledger_slot *claim_locked(ml_ledger *l, int pid, uint64_t start, int *took_over)
{
    ml_ledger_slot *free_slot = NULL;
    uint32_t high = l->high_water;
    *took_over = 0;
    for (uint32_t i = 0; i < high; i++) {
        ml_ledger_slot *s = ml__ledger_slot(l, i);
        if (s->state == ML_SLOT_LIVE && s->pid == pid && s->start_time == start) {
            *took_over = 1;
            return s;
        }
        if (s->state == ML_SLOT_FREE && free_slot == NULL) free_slot = s;
    }
    if (free_slot == NULL && high < l->slot_count) {
        free_slot = ml__ledger_slot(l, high);
        l->high_water = high + 1;
    }
    if (free_slot == NULL) l->full++;
    return free_slot;
}

/* Claims this process's slot. `forked`: a fork child, whose parent's image it still runs. */
static ml_ledger_slot *claim(ml_ledger *l, int forked)
{
    int pid = getpid(), took_over;
    uint64_t start = 0;
    char comm[ML_LEDGER_COMM];
    if (ml__proc_stat_comm(pid, NULL, NULL, &start, comm) != 0) return NULL;
    ml__ledger_lock(l);
    ml_ledger_slot *s = claim_locked(l, pid, start, &took_over);
    if (s != NULL && took_over) {
        /* An exec: the earlier image's heap is gone, its allocations and budget stay counted. */
        l->heap_leased -= s->heap_lease;
        ML_STORE(&s->heap_lease, 0);
        int64_t live = __atomic_exchange_n(&s->heap_live, 0, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&l->tree_live, live, __ATOMIC_RELAXED);
        s->images++;
        s->flags &= ~(uint32_t)ML_SLOT_FORKED;
        memcpy(s->comm, comm, sizeof s->comm);
        fill_argv(s);
        prior_allocated = ML_LOAD(&s->allocated);
    } else if (s != NULL) {
        memset(s, 0, sizeof *s);
        s->pid = pid;
        s->ppid = getppid();
        s->start_time = start;
        s->serial = ++l->serial;
        s->images = forked ? 0 : 1;
        s->flags = forked ? ML_SLOT_FORKED : 0;
        s->exit_status = -1;
        memcpy(s->comm, comm, sizeof s->comm);
        fill_argv(s);
        prior_allocated = 0;
        __atomic_store_n(&s->state, ML_SLOT_LIVE, __ATOMIC_RELEASE);
    } else {
        l->attach_failures++;
    }
    ml__ledger_unlock(l);
    return s;
}

/* Maps the ledger behind fd if it is the one `spec` names; NULL otherwise. The header is read
 * before anything is mapped writable: a reused descriptor number may hold any file. */
static ml_ledger *map_checked(int fd, const ml_ledger_spec *spec)
{
    ml_ledger head;
    struct stat st;
    if (pread(fd, &head, sizeof head, 0) != (ssize_t)sizeof head) return NULL;
    if (head.magic != ML_LEDGER_MAGIC || head.version != ML_LEDGER_VERSION || head.id != spec->id ||
        head.slot_count != ML_LEDGER_SLOTS || head.slot_size != sizeof(ml_ledger_slot) ||
        head.header_size != HEADER_SIZE)
        return NULL;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < LEDGER_BYTES) return NULL;
    void *map = mmap(NULL, LEDGER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return map == MAP_FAILED ? NULL : map;
}

int ml__ledger_attach(const ml_ledger_spec *spec, void (*gather)(ml_ledger_figures *out), char *why,
                      size_t whycap)
{
    if (spec->fd < 0) return 0;
    int saved = errno;
    ml_ledger *l = map_checked(spec->fd, spec);
    if (l == NULL) {
        char path[64];
        ml_buf b = ML_BUF_INIT(path);
        ml__buf_str(&b, "/proc/");
        ml__buf_u64(&b, (uint64_t)spec->pid);
        ml__buf_str(&b, "/fd/");
        ml__buf_u64(&b, (uint64_t)spec->fd);
        path[ML_MIN(b.len, sizeof path - 1)] = '\0';
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            l = map_checked(fd, spec);
            close(fd);
        }
    }
    ml_ledger_slot *s = l != NULL ? claim(l, 0) : NULL;
    errno = saved;
    if (s == NULL) {
        ml_buf b = {why, whycap - 1, 0, 0};
        ml__buf_str(&b, "memlimits: pid ");
        ml__buf_u64(&b, (uint64_t)getpid());
        uint64_t start;
        ml__buf_str(&b, l == NULL ? " cannot reach the tree's ledger (descriptor "
                        : ml__proc_stat(getpid(), NULL, NULL, &start) != 0
                            ? " cannot read /proc/self/stat for its slot in the tree's ledger "
                              "(descriptor "
                            : " finds the tree's ledger full (descriptor ");
        ml__buf_u64(&b, (uint64_t)spec->fd);
        ml__buf_str(&b, " of memlimit pid ");
        ml__buf_u64(&b, (uint64_t)spec->pid);
        ml__buf_str(&b, "): the tree's limits apply to this process alone");
        why[b.len] = '\0';
        if (l != NULL) munmap(l, LEDGER_BYTES);
        return -1;
    }
    ledger = l;
    gather_figures = gather;
    heap_base = 0;
    forked_image = 0;
    image_leased = 0;
    alloc_base = 0;
    thread_published = 0;
    __atomic_store_n(&ml__ledger_self, s, __ATOMIC_RELEASE);
    return 1;
}

void ml__ledger_fork_child(uint64_t live, uint64_t allocated_total, uint64_t thread_allocated)
{
    if (ML_LOAD(&ml__ledger_self) == NULL) return;
    ML_STORE(&ml__ledger_self, NULL); /* the parent's: never touched from here */
    heap_base = live;
    forked_image = 1;
    image_leased = 0;
    alloc_base = allocated_total;
    thread_published = thread_allocated;
    ml_ledger_slot *s = claim(ledger, 1);
    if (s == NULL) {
        static const char line[] = "memlimits: a fork child finds the tree's ledger full: the "
                                   "tree's limits apply to it alone\n";
        ml__write_all(STDERR_FILENO, line, sizeof line - 1);
        return;
    }
    __atomic_store_n(&ml__ledger_self, s, __ATOMIC_RELEASE);
}

void ml__ledger_exit(int status, int sig)
{
    ml_ledger_slot *s = __atomic_exchange_n(&ml__ledger_self, NULL, __ATOMIC_ACQ_REL);
    if (s == NULL) return;
    ml_ledger *l = ledger;
    ml_ledger_figures f = {0, 0, 0};
    if (gather_figures != NULL) gather_figures(&f);
    uint64_t image_allocated = saturating_sub(f.allocated, alloc_base);
    ml__ledger_lock(l);
    if (l->budget != ML_NONE) {
        /* What its threads leased and did not spend goes back, exactly. */
        uint64_t unspent = ML_MIN(saturating_sub(image_leased, image_allocated), s->budget_leased);
        l->budget_spent -= unspent;
        ML_STORE(&s->budget_leased, s->budget_leased - unspent);
    }
    ML_STORE(&s->allocated, prior_allocated + image_allocated);
    if (!forked_image) atomic_max(&s->heap_peak, f.peak);
    ML_STORE(&s->exit_status, status);
    ML_STORE(&s->signal, sig);
    end_slot(l, s, ML_SLOT_ACCOUNTED);
    ml__ledger_unlock(l);
}

/* ---- Heap room --------------------------------------------------------------------------- */

uint64_t ml__ledger_heap_room(void)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    if (s == NULL || ledger->heap_cap == ML_NONE) return UINT64_MAX;
    return ML_LOAD(&heap_base) + ML_LOAD(&s->heap_lease);
}

static uint64_t heap_unlent(const ml_ledger *l)
{
    return saturating_sub(l->heap_cap, ML_LOAD(&l->heap_leased));
}

/* Lends s what its room lacks to reach `want` (in the process's live-heap units), plus a top-up.
 * A `soft` request (room ahead of need) is granted only while it is small beside what the tree
 * has left: near the cap, room is lent when an allocation needs it, and no sooner. Under the
 * lock. Returns whether the room now covers want. */
static int lend_heap(ml_ledger *l, ml_ledger_slot *s, uint64_t want, int soft)
{
    uint64_t room = ML_LOAD(&heap_base) + s->heap_lease;
    if (room >= want) return 1;
    uint64_t need = want - room, unlent = heap_unlent(l);
    if (need > unlent || (soft && need > unlent / 8)) return 0;
    uint64_t take = need + (soft ? 0 : ML_MIN(ML_LEDGER_HEAP_EXTRA, (unlent - need) / 16));
    l->heap_leased += take;
    ML_STORE(&s->heap_lease, s->heap_lease + take);
    return 1;
}

/* Takes back the room of every process of the tree found dead (killed, or ended through _exit
 * before the launcher saw it). Returns how many. */
static int reclaim_dead(ml_ledger *l, const ml_ledger_slot *self)
{
    int n = 0;
    for (uint32_t i = 0; i < ML_LOAD(&l->high_water); i++)
        if (ml__ledger_slot(l, i) != self) n += ml__ledger_reclaim(l, i, 0);
    return n;
}

int ml__ledger_heap_grow(uint64_t want)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    ml_ledger *l = ledger;
    if (s == NULL || l->heap_cap == ML_NONE) return 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        ml__ledger_lock(l);
        int ok = lend_heap(l, s, want, 0);
        ml__ledger_unlock(l);
        if (ok) return 1;
        if (attempt == 0 && reclaim_dead(l, s) == 0) break;
    }
    return 0;
}

/* Publishes the process's live heap (less what it inherited at fork) to its slot and, in steps of
 * ML_LEDGER_LIVE_STEP, to the tree's sum and peak. */
static void publish_live(ml_ledger *l, ml_ledger_slot *s, uint64_t used)
{
    int64_t old = ML_LOAD(&s->heap_live);
    int64_t delta = (int64_t)used - old;
    if (delta < (int64_t)ML_LEDGER_LIVE_STEP && delta > -(int64_t)ML_LEDGER_LIVE_STEP) return;
    /* Another thread of the process may publish at the same time: one of them wins. */
    if (!__atomic_compare_exchange_n(&s->heap_live, &old, (int64_t)used, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return;
    int64_t tree = __atomic_add_fetch(&l->tree_live, delta, __ATOMIC_RELAXED);
    atomic_max(&s->heap_peak, used);
    if (tree > 0) atomic_max(&l->tree_peak, (uint64_t)tree);
}

void ml__ledger_heap_note(int64_t live, uint64_t keep, uint64_t thread_allocated)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    if (s == NULL) return;
    ml_ledger *l = ledger;
    uint64_t added = thread_allocated - thread_published;
    if (added != 0 && thread_allocated > thread_published) {
        __atomic_add_fetch(&s->allocated, added, __ATOMIC_RELAXED);
        thread_published = thread_allocated;
    }
    uint64_t now = live > 0 ? (uint64_t)live : 0, base = ML_LOAD(&heap_base);
    while (now < base && !__atomic_compare_exchange_n(&heap_base, &base, now, 1, __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED)) {
    }
    base = ML_MIN(base, now);
    uint64_t used = now - base;
    publish_live(l, s, used);
    if (l->heap_cap == ML_NONE) return;

    /* The room must keep `keep` above the live heap for the threads' far flush intervals to fit
     * in it (heap.h): below that the process runs near intervals, which is exact but slower, so
     * room is taken ahead while the tree has plenty. What lies beyond keep and a hysteresis of
     * twice the top-up goes back: near the cap the top-up is small, so room returns quickly. */
    uint64_t lease = ML_LOAD(&s->heap_lease), unlent = heap_unlent(l);
    uint64_t step = ML_MIN(ML_LEDGER_HEAP_EXTRA, unlent / 16);
    if (lease < used + keep) {
        /* Near the cap a soft request is refused: do not take the lock to hear it. */
        if (used + keep + step - lease > unlent / 8) return;
        ml__ledger_lock(l);
        lend_heap(l, s, base + used + keep + step, 1);
        ml__ledger_unlock(l);
    } else if (lease > used + keep + 2 * step + ML_LEDGER_LIVE_STEP) {
        ml__ledger_lock(l);
        uint64_t target = used + keep + step;
        if (s->heap_lease > target) {
            l->heap_leased -= s->heap_lease - target;
            ML_STORE(&s->heap_lease, target);
        }
        ml__ledger_unlock(l);
    }
}

/* ---- Budget ------------------------------------------------------------------------------ */

int ml__ledger_budget_shared(void)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    return s != NULL && ledger->budget != ML_NONE;
}

uint64_t ml__ledger_budget_lease(uint64_t need)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    ml_ledger *l = ledger;
    if (s == NULL || l->budget == ML_NONE) return 0;
    ml__ledger_lock(l);
    uint64_t left = saturating_sub(l->budget, l->budget_spent), take = 0;
    if (need <= left) {
        take = need + ML_MIN(ML_LEDGER_BUDGET_EXTRA, (left - need) / 16);
        l->budget_spent += take;
        ML_STORE(&s->budget_leased, s->budget_leased + take);
        image_leased += take;
    }
    ml__ledger_unlock(l);
    return take;
}

uint64_t ml__ledger_budget_unlent(void)
{
    ml_ledger *l = ledger;
    return saturating_sub(l->budget, ML_LOAD(&l->budget_spent));
}

void ml__ledger_budget_return(uint64_t bytes)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    ml_ledger *l = ledger;
    if (s == NULL || bytes == 0) return;
    ml__ledger_lock(l);
    bytes = ML_MIN(bytes, s->budget_leased);
    l->budget_spent -= bytes;
    ML_STORE(&s->budget_leased, s->budget_leased - bytes);
    image_leased = saturating_sub(image_leased, bytes);
    ml__ledger_unlock(l);
}

/* ---- Firings ----------------------------------------------------------------------------- */

void ml__ledger_fired(int kind, uint32_t thread, uint64_t allocation, uint64_t size,
                      const ml_action *action)
{
    ml_ledger_slot *s = ML_LOAD(&ml__ledger_self);
    if (s == NULL || kind < 0 || kind > 1) return;
    ml_ledger *l = ledger;
    ml_ledger_firing *f = &s->fired[kind];
    if (__atomic_fetch_add(&f->count, 1, __ATOMIC_RELAXED) == 0) {
        f->allocation = allocation;
        f->size = size;
        f->thread = thread;
        f->action_kind = (int32_t)action->kind;
        f->action_arg = action->arg;
        __atomic_store_n(&f->seq, __atomic_add_fetch(&l->fire_seq, 1, __ATOMIC_RELAXED),
                         __ATOMIC_RELEASE);
        uint64_t none = 0;
        __atomic_compare_exchange_n(&l->first_fired[kind], &none, s->serial, 0, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED);
    }
    /* No exit handler runs after these: account for the process now. */
    if (action->kind == ML_ACTION_EXIT) ml__ledger_exit(action->arg, 0);
    if (action->kind == ML_ACTION_ABORT) ml__ledger_exit(-1, SIGABRT);
}

/* ---- Creating it (the launcher) ---------------------------------------------------------- */

ml_ledger *ml__ledger_create(uint64_t heap_cap, uint64_t budget, int *fd_out, char *why,
                             size_t whycap)
{
    const char *failed = "memfd_create";
    /* Not close-on-exec: every process of the tree inherits it. */
    int fd = memfd_create("memlimits-ledger", 0);
    void *map = MAP_FAILED;
    if (fd >= 0) {
        failed = "ftruncate";
        if (ftruncate(fd, (off_t)LEDGER_BYTES) == 0) {
            failed = "mmap";
            map = mmap(NULL, LEDGER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
    }
    if (map == MAP_FAILED) {
        ml_buf b = {why, whycap - 1, 0, 0};
        ml__buf_str(&b, "cannot create the tree's ledger: ");
        ml__buf_str(&b, failed);
        ml__buf_str(&b, ": ");
        ml__buf_str(&b, strerror(errno));
        why[b.len] = '\0';
        if (fd >= 0) close(fd);
        return NULL;
    }
    ml_ledger *l = map;
    l->magic = ML_LEDGER_MAGIC;
    l->version = ML_LEDGER_VERSION;
    do
        l->id = ml__os_entropy();
    while (l->id == 0);
    l->slot_count = ML_LEDGER_SLOTS;
    l->slot_size = sizeof(ml_ledger_slot);
    l->header_size = HEADER_SIZE;
    l->launcher_pid = getpid();
    l->heap_cap = heap_cap;
    l->budget = budget;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&l->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    *fd_out = fd;
    return l;
}
