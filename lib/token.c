/* Tokens: a flag set once, read by tasks at their events and by the waker, and optionally an
 * eventfd that becomes readable when the flag is set (for poll loops).
 *
 * Handles. A token lives in a 256-byte slot of memory memlimits maps itself and never unmaps,
 * in a few regions whose bounds are kept in a fixed table. Each hand-out of a slot increments
 * its generation, and the handle given to the user is the slot's address plus the generation
 * modulo 256: an opaque pointer that is never dereferenced as such. Decoding a handle is a
 * look-up in the region table (nothing outside token memory is ever read), then one atomic load
 * of the slot's state word, which holds the live bit, the set bit and the generation together,
 * so a handle is valid only for the incarnation it was made for. Destroyed slots wait in a FIFO
 * quarantine of QUARANTINE slots before they are handed out again (sooner only when no memory
 * for a new slot can be had): together, a stale handle stays refused for at least 256 hand-outs
 * of its slot, each after QUARANTINE destroys. memlimits.h states the window.
 *
 * Setting races with destroying. ml_token_set sets the flag with a compare-and-swap on the state
 * word, so it sets only the incarnation it checked; and it counts itself in the slot's `setters`
 * from before its check until after its write to the descriptor, so ml_token_destroy, which
 * clears the live bit first, waits for the setters it may have raced with before it closes the
 * descriptor: a set never writes to a descriptor number that was closed and reused. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "memlimits.h"
#include "thread.h"
#include "token.h"
#include "wake.h"

#define SLOT_SIZE 256 /* also the number of generations a handle tells apart */
#define QUARANTINE 1024
#define MAX_REGIONS 48
#define FIRST_REGION ((size_t)64 << 10)
#define LARGEST_REGION ((size_t)16 << 20)

/* The state word: the generation in the low 32 bits, and two flags. */
#define STATE_LIVE ((uint64_t)1 << 32)
#define STATE_SET ((uint64_t)1 << 33)
#define STATE_GENERATION ((uint64_t)0xffffffffu)

/* What eventfd's count is raised by when the token is set: readable for good, semaphore reads
 * take 1 each. Two such writes at most (ml_token_set's and ml_token_fd's) stay far from the
 * count's maximum, so a write never fails or blocks. */
#define FD_COUNT ((uint64_t)1 << 40)

typedef struct slot {
    uint64_t state;
    int fd;                 /* the token's eventfd, -1: none yet; written under token_lock */
    int setters;            /* ml_token_set calls between their check and their write to fd */
    struct slot *next_free; /* quarantine link, under token_lock */
} slot;

_Static_assert(sizeof(slot) <= SLOT_SIZE, "a slot must fit its stride");

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uintptr_t base, end;
} regions[MAX_REGIONS]; /* entries below region_count are written once, before it grows */
static int region_count;
static char *bump_next, *bump_end; /* the unused part of the last region, under token_lock */
static slot *quarantine_head, *quarantine_tail;
static size_t quarantine_length;

/* The slot a handle points into, and the generation it carries (the offset in the slot), or
 * NULL when the pointer is not in token memory. Reads only the region table. Async-signal-safe. */
static slot *decode(const ml_token *token, uint64_t *tag)
{
    uintptr_t p = (uintptr_t)token;
    int n = __atomic_load_n(&region_count, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++) {
        if (p < regions[i].base || p >= regions[i].end) continue;
        uintptr_t offset = p - regions[i].base;
        *tag = offset % SLOT_SIZE;
        return (slot *)(regions[i].base + offset - *tag);
    }
    return NULL;
}

/* Whether a state word is the live incarnation a handle's tag names. */
static int state_names(uint64_t state, uint64_t tag)
{
    return (state & STATE_LIVE) && (state & STATE_GENERATION) % SLOT_SIZE == tag;
}

/* The slot of a live token's handle, or NULL. */
static slot *live_slot(const ml_token *token, uint64_t *state)
{
    uint64_t tag;
    slot *s = decode(token, &tag);
    if (s == NULL) return NULL;
    *state = __atomic_load_n(&s->state, __ATOMIC_SEQ_CST);
    return state_names(*state, tag) ? s : NULL;
}

int ml__token_valid(const ml_token *token)
{
    uint64_t state;
    return live_slot(token, &state) != NULL;
}

/* A fresh slot from a new region, or NULL when no memory can be had. Under token_lock. */
static slot *bump(void)
{
    if (bump_next == bump_end) {
        int n = region_count;
        if (n == MAX_REGIONS) return NULL;
        size_t size = FIRST_REGION << (n < 8 ? n : 8);
        if (size > LARGEST_REGION) size = LARGEST_REGION;
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        regions[n].base = (uintptr_t)p;
        regions[n].end = (uintptr_t)p + size;
        __atomic_store_n(&region_count, n + 1, __ATOMIC_RELEASE);
        bump_next = p;
        bump_end = (char *)p + size;
    }
    slot *s = (slot *)bump_next;
    bump_next += SLOT_SIZE;
    return s;
}

static slot *quarantine_pop(void)
{
    slot *s = quarantine_head;
    quarantine_head = s->next_free;
    if (quarantine_head == NULL) quarantine_tail = NULL;
    quarantine_length--;
    return s;
}

static void quarantine_push(slot *s)
{
    s->next_free = NULL;
    if (quarantine_tail != NULL)
        quarantine_tail->next_free = s;
    else
        quarantine_head = s;
    quarantine_tail = s;
    quarantine_length++;
}

ml_token *ml_token_create(void)
{
    pthread_mutex_lock(&token_lock);
    slot *s = quarantine_length > QUARANTINE ? quarantine_pop() : bump();
    if (s == NULL && quarantine_length > 0) s = quarantine_pop(); /* no memory: reuse early */
    if (s == NULL) {
        pthread_mutex_unlock(&token_lock);
        errno = ENOMEM;
        return NULL;
    }
    uint64_t generation = ((s->state & STATE_GENERATION) + 1) & STATE_GENERATION;
    s->fd = -1;
    s->next_free = NULL;
    __atomic_store_n(&s->state, STATE_LIVE | generation, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&token_lock);
    return (ml_token *)((char *)s + generation % SLOT_SIZE);
}

/* Raises a token's eventfd so that it is readable for good. Async-signal-safe. */
static void raise_fd(int fd)
{
    int saved = errno;
    uint64_t count = FD_COUNT;
    ssize_t n = write(fd, &count, sizeof count);
    (void)n;
    errno = saved;
}

void ml_token_set(ml_token *token)
{
    uint64_t tag;
    slot *s = decode(token, &tag);
    if (s == NULL) return;
    __atomic_add_fetch(&s->setters, 1, __ATOMIC_SEQ_CST);
    uint64_t state = __atomic_load_n(&s->state, __ATOMIC_SEQ_CST);
    int first = 0;
    while (state_names(state, tag) && !(state & STATE_SET) && !first)
        first = __atomic_compare_exchange_n(&s->state, &state, state | STATE_SET, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    int valid = first || state_names(state, tag);
    if (first) {
        int fd = __atomic_load_n(&s->fd, __ATOMIC_SEQ_CST);
        if (fd >= 0) raise_fd(fd);
    }
    __atomic_sub_fetch(&s->setters, 1, __ATOMIC_SEQ_CST);
    if (!valid) return;
    /* A task of this thread may hold the token (its own, or an enclosing task's): its next
     * allocation must deliver, not the one that ends its 32 KiB window between two looks at its
     * tokens. Any task will do: a token that is not in the chain costs one extra event. From a
     * signal handler that interrupted the slow path, this leaves the note the slow path honours
     * on its way out, after its last look at the tokens. */
    ml_thread *t = &ml__self;
    if (ML_LOAD(&t->task) != NULL) ml__thread_force_event_self(t);
    ml__wake_poke(); /* ML_WAKE tasks and condition waits with this token: the waker */
}

int ml_token_is_set(const ml_token *token)
{
    uint64_t state;
    return live_slot(token, &state) != NULL && (state & STATE_SET) != 0;
}

void ml_token_destroy(ml_token *token)
{
    pthread_mutex_lock(&token_lock);
    uint64_t tag, state;
    slot *s = decode(token, &tag);
    if (s == NULL) goto out;
    state = __atomic_load_n(&s->state, __ATOMIC_SEQ_CST);
    do {
        if (!state_names(state, tag)) goto out; /* destroyed already, or not this incarnation */
    } while (!__atomic_compare_exchange_n(&s->state, &state, state & STATE_GENERATION, 0,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    int fd = s->fd;
    __atomic_store_n(&s->fd, -1, __ATOMIC_SEQ_CST);
    /* A set that checked the state before it went dead may still be about to write to fd. Sets
     * never block and never wait for this lock, so this wait is short. */
    while (__atomic_load_n(&s->setters, __ATOMIC_SEQ_CST) != 0)
        sched_yield();
    if (fd >= 0) close(fd);
    quarantine_push(s);
out:
    pthread_mutex_unlock(&token_lock);
}

int ml_token_fd(ml_token *token)
{
    pthread_mutex_lock(&token_lock);
    uint64_t state;
    slot *s = live_slot(token, &state);
    if (s == NULL) {
        pthread_mutex_unlock(&token_lock);
        errno = EINVAL;
        return -1;
    }
    int fd = s->fd;
    if (fd < 0) {
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
        if (fd >= 0) {
            __atomic_store_n(&s->fd, fd, __ATOMIC_SEQ_CST);
            /* A set that came before the store did not see the descriptor: raise it here. If
             * the set also saw it, the count is raised twice, which is harmless. */
            if (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) & STATE_SET) raise_fd(fd);
        }
    }
    int saved = errno;
    pthread_mutex_unlock(&token_lock);
    errno = saved;
    return fd;
}

void ml__token_fork_prepare(void)
{
    pthread_mutex_lock(&token_lock);
}

void ml__token_fork_parent(void)
{
    pthread_mutex_unlock(&token_lock);
}

/* In the child only the forking thread is left: a set another thread was making at the fork
 * (between its count in `setters` and the count's release) will never end, and ml_token_destroy
 * would wait for it forever. Every slot handed out so far has its count cleared. (A set the
 * forking thread itself was making, from a signal handler that forked in the middle of it, is
 * not told apart: a fork there is outside what this supports.) */
void ml__token_fork_child(void)
{
    pthread_mutex_init(&token_lock, NULL);
    for (int i = 0; i < region_count; i++) {
        uintptr_t end = i == region_count - 1 ? (uintptr_t)bump_next : regions[i].end;
        for (uintptr_t p = regions[i].base; p < end; p += SLOT_SIZE) {
            slot *s = (slot *)p;
            if (s->setters != 0) s->setters = 0;
        }
    }
}
