/* The built-in heap profile and the heap-profile writer (see profile.h).
 *
 * The built-in tracker interns each sampled block's callstack in a table of stacks and keeps,
 * per stack, the sampled blocks and bytes live and ever allocated; a tracked block's value is a
 * small record (its stack and size). Everything lives in mmap'd memory of its own, under one
 * lock, so that the profile neither allocates through the interposed malloc nor perturbs what
 * it measures. The writer prints the raw sampled figures, as gperftools does: readers unbias
 * each stack by 1 / (1 - exp(-avg/T)), with avg its bytes per block and T the mean gap in the
 * `heap_v2/T` header, which is exact for a per-byte geometric sampler. */
#define _GNU_SOURCE
#include "profile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host.h"
#include "memprof.h"

typedef struct stack {
    struct stack *next;
    uint64_t hash;
    uint64_t live_objs, live_bytes, alloc_objs, alloc_bytes;
    unsigned depth;
    void *frames[];
} stack;

typedef struct record {
    stack *where;
    uint64_t size;
    struct record *next_free;
} record;

#define STACK_BUCKETS 4096
static stack *stacks[STACK_BUCKETS];
static char *arena_next, *arena_end;
static record *free_records;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ml_profile *builtin;
static uint64_t builtin_gap;
static char builtin_path[512];
static int limit_written;

static void *carve(size_t len)
{
    len = (len + 15) & ~(size_t)15;
    if (arena_next == NULL || (size_t)(arena_end - arena_next) < len) {
        size_t chunk = len > ((size_t)1 << 20) ? len : (size_t)1 << 20;
        char *m = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        arena_next = m;
        arena_end = m + chunk;
    }
    void *p = arena_next;
    arena_next += len;
    return p;
}

static stack *intern(void *const *frames, unsigned depth)
{
    uint64_t h = 0xcbf29ce484222325ull ^ depth;
    for (unsigned i = 0; i < depth; i++)
        h = (h ^ (uint64_t)(uintptr_t)frames[i]) * 0x100000001b3ull;
    stack **b = &stacks[h % STACK_BUCKETS], *s;
    for (s = *b; s != NULL; s = s->next)
        if (s->hash == h && s->depth == depth &&
            memcmp(s->frames, frames, depth * sizeof *frames) == 0)
            return s;
    s = carve(sizeof *s + depth * sizeof *frames);
    if (s == NULL) return NULL;
    memset(s, 0, sizeof *s);
    s->hash = h;
    s->depth = depth;
    memcpy(s->frames, frames, depth * sizeof *frames);
    s->next = *b;
    *b = s;
    return s;
}

/* Counts record r's block of `size` bytes at stack s; detach takes it off its stack's live
 * figures. Under the lock. */
static void attach(record *r, stack *s, size_t size)
{
    s->live_objs++;
    s->live_bytes += size;
    s->alloc_objs++;
    s->alloc_bytes += size;
    r->where = s;
    r->size = size;
}

static void detach(record *r)
{
    r->where->live_objs--;
    r->where->live_bytes -= r->size;
}

static void *on_alloc(const ml_allocation *a, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&lock);
    stack *s = intern(a->callstack, a->callstack_len);
    record *r = free_records;
    if (r != NULL)
        free_records = r->next_free;
    else
        r = carve(sizeof *r);
    if (s != NULL && r != NULL) {
        attach(r, s, a->size);
    } else {
        r = NULL;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static void on_free(void *tracked, void *ctx)
{
    (void)ctx;
    record *r = tracked;
    pthread_mutex_lock(&lock);
    detach(r);
    r->next_free = free_records;
    free_records = r;
    pthread_mutex_unlock(&lock);
}

static void *on_realloc(void *tracked, const ml_allocation *a, void *ctx)
{
    (void)ctx;
    record *r = tracked;
    pthread_mutex_lock(&lock);
    stack *s = intern(a->callstack, a->callstack_len);
    if (s != NULL) {
        detach(r);
        attach(r, s, a->size);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static const ml_tracker tracker = {on_alloc, on_realloc, on_free, NULL};

void ml__profile_fork_child(void)
{
    if (builtin == NULL) return;
    /* The parent's profile is gone in the child (memprof.c reset it): start afresh, so that the
     * child writes a profile of its own blocks, not a copy of its parent's. */
    pthread_mutex_init(&lock, NULL);
    memset(stacks, 0, sizeof stacks);
    free_records = NULL;
    limit_written = 0;
    builtin = ml_memprof_start(builtin_gap, ML_PROFILE_DEPTH, &tracker);
}

int ml__profile_start(const char *path, uint64_t mean_gap)
{
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof builtin_path) {
        errno = EINVAL;
        return -1;
    }
    memcpy(builtin_path, path, len + 1);
    builtin_gap = mean_gap;
    builtin = ml_memprof_start(mean_gap, ML_PROFILE_DEPTH, &tracker);
    return builtin == NULL ? -1 : 0;
}

/* Expands "%p" to the pid and "%%" to "%"; appends `suffix`. */
static void expand(const char *path, const char *suffix, char *out, size_t cap)
{
    ml_buf b = {out, cap - 1, 0, 0};
    for (const char *s = path; *s != '\0'; s++) {
        if (s[0] == '%' && (s[1] == 'p' || s[1] == '%')) {
            if (s[1] == 'p')
                ml__buf_u64(&b, (uint64_t)getpid());
            else
                ml__buf_mem(&b, "%", 1);
            s++;
        } else {
            ml__buf_mem(&b, s, 1);
        }
    }
    ml__buf_str(&b, suffix);
    out[b.len] = '\0';
}

static void buf_hex(ml_buf *b, uint64_t v)
{
    char tmp[19];
    int i = (int)sizeof tmp;
    do {
        tmp[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    ml__buf_mem(b, tmp + i, sizeof tmp - (size_t)i);
}

static void counts(ml_buf *b, uint64_t lo, uint64_t lb, uint64_t ao, uint64_t ab)
{
    ml__buf_u64(b, lo);
    ml__buf_str(b, ": ");
    ml__buf_u64(b, lb);
    ml__buf_str(b, " [");
    ml__buf_u64(b, ao);
    ml__buf_str(b, ": ");
    ml__buf_u64(b, ab);
    ml__buf_str(b, "]");
}

/* Flushes when fewer than `room` bytes are left. */
static void room(ml_buf *b, int fd, size_t need)
{
    if (b->cap - b->len < need) ml__buf_flush(b, fd);
}

/* Writes the profile to fd. The caller holds the lock. */
static void write_profile(int fd)
{
    static char storage[1 << 16];
    ml_buf b = ML_BUF_INIT(storage);
    uint64_t lo = 0, lb = 0, ao = 0, ab = 0;
    for (int i = 0; i < STACK_BUCKETS; i++)
        for (const stack *s = stacks[i]; s != NULL; s = s->next) {
            lo += s->live_objs;
            lb += s->live_bytes;
            ao += s->alloc_objs;
            ab += s->alloc_bytes;
        }
    ml__buf_str(&b, "heap profile: ");
    counts(&b, lo, lb, ao, ab);
    ml__buf_str(&b, " @ heap_v2/");
    ml__buf_u64(&b, builtin_gap);
    ml__buf_str(&b, "\n");
    for (int i = 0; i < STACK_BUCKETS; i++)
        for (const stack *s = stacks[i]; s != NULL; s = s->next) {
            if (s->alloc_objs == 0) continue;
            room(&b, fd, 128 + 20 * (size_t)s->depth);
            counts(&b, s->live_objs, s->live_bytes, s->alloc_objs, s->alloc_bytes);
            ml__buf_str(&b, " @");
            for (unsigned k = 0; k < s->depth; k++) {
                ml__buf_str(&b, " ");
                buf_hex(&b, (uint64_t)(uintptr_t)s->frames[k]);
            }
            ml__buf_str(&b, "\n");
        }
    ml__buf_str(&b, "\nMAPPED_LIBRARIES:\n");
    ml__buf_flush(&b, fd);
    int maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    ssize_t n;
    while (maps >= 0 && (n = read(maps, storage, sizeof storage)) > 0)
        ml__write_all(fd, storage, (size_t)n);
    if (maps >= 0) close(maps);
}

static int write_to(const char *path, const char *suffix, int wait)
{
    char full[1100];
    expand(path, suffix, full, sizeof full);
    if (wait)
        pthread_mutex_lock(&lock);
    else if (pthread_mutex_trylock(&lock) != 0)
        return -1;
    int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = errno;
    if (fd >= 0) {
        write_profile(fd);
        close(fd);
    }
    pthread_mutex_unlock(&lock);
    errno = err;
    return fd >= 0 ? 0 : -1;
}

ML_EXPORT int ml_heap_profile_write(const char *path)
{
    if (path == NULL || path[0] == '\0') {
        errno = EINVAL;
        return -1;
    }
    if (builtin == NULL) {
        errno = ENOENT;
        return -1;
    }
    ml__memprof_drain();
    return write_to(path, "", 1);
}

void ml__profile_write_exit(void)
{
    if (builtin == NULL) return;
    ml__memprof_drain();
    write_to(builtin_path, "", 1);
}

void ml__profile_write_limit(void)
{
    if (builtin == NULL || __atomic_exchange_n(&limit_written, 1, __ATOMIC_RELAXED)) return;
    write_to(builtin_path, ".limit", 0);
}

/* ---- the firing's callstack ---- */

static struct {
    int set;
    unsigned len;
    void *frames[ML_PROFILE_DEPTH];
} firings[2];
static int unwinder_ready;

void ml__profile_firing_setup(int profiling)
{
    if (profiling) ml__host_backtrace_setup(); /* libunwind; otherwise libgcc's unwinder */
    ml__host_backtrace_warm();
    __atomic_store_n(&unwinder_ready, 1, __ATOMIC_RELEASE);
}

void ml__profile_note_firing(int kind)
{
    if (kind < 0 || kind > 1 || !__atomic_load_n(&unwinder_ready, __ATOMIC_ACQUIRE)) return;
    int unset = 0; /* the first firing only: 2 while it is being taken, 1 once taken */
    if (!__atomic_compare_exchange_n(&firings[kind].set, &unset, 2, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return;
    firings[kind].len = ml__memprof_capture(firings[kind].frames, ML_PROFILE_DEPTH, NULL);
    __atomic_store_n(&firings[kind].set, 1, __ATOMIC_RELEASE);
}

/* "symbol+0xOFF (object)" or "0xADDR (object+0xOFF)" for one return address. */
static void frame_text(ml_buf *b, void *addr)
{
    const char *object, *symbol;
    uintptr_t off;
    if (ml__host_symbolize(addr, &object, &symbol, &off) != 0) {
        buf_hex(b, (uint64_t)(uintptr_t)addr);
        return;
    }
    if (symbol != NULL) {
        ml__buf_str(b, symbol);
        ml__buf_str(b, "+");
        buf_hex(b, off);
        ml__buf_str(b, " (");
        ml__buf_str(b, object);
        ml__buf_str(b, ")");
    } else {
        buf_hex(b, (uint64_t)(uintptr_t)addr);
        ml__buf_str(b, " (");
        ml__buf_str(b, object);
        ml__buf_str(b, "+");
        buf_hex(b, off);
        ml__buf_str(b, ")");
    }
}

void ml__profile_firing_text(ml_buf *b, int kind)
{
    if (kind < 0 || kind > 1 || __atomic_load_n(&firings[kind].set, __ATOMIC_ACQUIRE) != 1) return;
    ml__buf_str(b, "    callstack of the allocation that fired it:\n");
    for (unsigned i = 0; i < firings[kind].len; i++) {
        ml__buf_str(b, "      #");
        ml__buf_u64(b, i);
        ml__buf_str(b, " ");
        frame_text(b, firings[kind].frames[i]);
        ml__buf_str(b, "\n");
    }
}

void ml__profile_firing_json(ml_buf *b, int kind)
{
    if (kind < 0 || kind > 1 || __atomic_load_n(&firings[kind].set, __ATOMIC_ACQUIRE) != 1) return;
    char tmp[512];
    ml__buf_str(b, ",\"callstack\":[");
    for (unsigned i = 0; i < firings[kind].len; i++) {
        ml_buf f = ML_BUF_INIT(tmp);
        frame_text(&f, firings[kind].frames[i]);
        tmp[f.len < sizeof tmp ? f.len : sizeof tmp - 1] = '\0';
        if (i > 0) ml__buf_str(b, ",");
        ml__buf_json_str(b, tmp);
    }
    ml__buf_str(b, "]");
}

int ml__profile_untracked(uint64_t *blocks, uint64_t *samples)
{
    if (builtin == NULL) return 0;
    *blocks = ml_memprof_untracked(builtin, samples);
    return 1;
}
