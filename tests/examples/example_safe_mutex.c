/* Example: an interrupt-safe mutex with poisoning (memprof-limits' fourth example, in C).
 *
 * A safe mutex is a mutex whose acquisition fails when the state it protects might have been
 * left half-updated by an interrupt (like the poisoning of Rust's Mutex on unwind). It is made of
 * two resources, as in the OCaml original: the lock itself, and a guard that refuses to enter a
 * poisoned state and poisons it when released after an interrupt. Both are acquired and released
 * masked by ml_with_resource, so an interrupt never lands between lock and guard, and the mutex
 * is always unlocked, also when the task is unwound; the release functions assert it
 * (ml_is_masked, memprof-limits' Masking.is_blocked).
 *
 * The myth of Sisyphus: two threads keep pushing onto a shared stack, each push through the safe
 * mutex, as tasks under a 50 MiB global memory limit with ML_UNWIND delivery, until memory is
 * exhausted; the monitor then wipes the stack and starts again, ROUNDS times. It never
 * deadlocks, never fails prematurely (only once the heap is over 50 MiB), and never lets an
 * invalid state be read: every read of the stack checks its invariant, and the monitor checks
 * the whole stack whenever it is not poisoned. In practice rounds end poisoned: as in the OCaml
 * original, the pushes are where the allocations are, so that is where the interrupt lands; a
 * round ends valid only when the interrupt is delivered at the ml_check between two pushes.
 *
 * Build: cc -fno-builtin-malloc example_safe_mutex.c -lmemlimits -pthread. Exits 0 when every
 * check below holds. The flag matters for ML_UNWIND: GCC and Clang assume that their builtin
 * malloc returns and touches no program memory, so they may drop or delay the stores made before
 * it: without the flag, GCC drops `node->payload = NULL` below, a dead store if malloc returns.
 * When that malloc unwinds instead, the monitor frees whatever garbage the field held. */
#undef NDEBUG /* the asserts below are checks of the example: keep them in every build */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "memlimits.h"

#define MiB ((uint64_t)1 << 20)
#define LIMIT (50 * MiB)
#define ROUNDS 20
#define PAYLOAD 1024

/* ---- The safe mutex ------------------------------------------------------------------------ */

#define SAFE_MUTEX_POISONED (-1) /* with_safe_lock's value when the state may be corrupt */

struct safe_mutex {
    pthread_mutex_t mutex;
    int valid; /* 0: poisoned, an interrupt arrived while the state was being modified */
};

static int lock(void *arg, void **resource)
{
    pthread_mutex_t *m = arg;
    assert(ml_is_masked()); /* no interrupt between taking the lock and owning it */
    pthread_mutex_lock(m);
    *resource = m;
    return 0;
}

static void unlock(void *resource)
{
    assert(ml_is_masked()); /* on return and on unwind alike: nothing stops a release */
    pthread_mutex_unlock(resource);
}

static int guard(void *arg, void **resource)
{
    struct safe_mutex *m = arg;
    if (!m->valid) return SAFE_MUTEX_POISONED; /* acquisition fails: nothing to release */
    *resource = m;
    return 0;
}

static void unguard(void *resource)
{
    struct safe_mutex *m = resource;
    assert(ml_is_masked());
    if (ml_is_interrupted()) m->valid = 0; /* the scope may have stopped half-way */
}

struct scope {
    struct safe_mutex *m;
    int (*fn)(void *ctx);
    void *ctx;
};

static int call_scope(void *resource, void *ctx)
{
    (void)resource;
    const struct scope *s = ctx;
    return s->fn(s->ctx);
}

static int guarded(void *resource, void *ctx)
{
    (void)resource;
    const struct scope *s = ctx;
    return ml_with_resource(guard, s->m, unguard, call_scope, ctx);
}

/* Runs fn(ctx) holding the lock, unless the state is poisoned: returns fn's value, or
 * SAFE_MUTEX_POISONED without running fn. */
static int with_safe_lock(struct safe_mutex *m, int (*fn)(void *ctx), void *ctx)
{
    struct scope s = {m, fn, ctx};
    return ml_with_resource(lock, &m->mutex, unlock, guarded, &s);
}

/* ---- The stack it protects ----------------------------------------------------------------- */

/* Invariant: `count` is the number of nodes, the node at depth d (from the bottom) holds the
 * value d, and every node has its payload. */
struct node {
    struct node *next;
    char *payload;
    uint64_t value;
};

struct stack {
    struct node *top;
    uint64_t count;
};

static struct safe_mutex mutex = {PTHREAD_MUTEX_INITIALIZER, 1};
static struct stack stack;

static void invalid_state_read(void)
{
    fprintf(stderr, "invalid state read: count %llu, top %p\n", (unsigned long long)stack.count,
            (void *)stack.top);
    abort();
}

/* One push, in several steps with allocations in between: an interrupt at the second malloc
 * leaves a node linked but the count not updated, the state the poisoning keeps from being
 * read. Reading the state first checks the part of the invariant it relies on. */
static int push(void *ctx)
{
    struct stack *s = ctx;
    assert(!ml_is_masked()); /* the scope runs unmasked: this is where interrupts land */
    if (s->top == NULL ? s->count != 0 : s->top->value + 1 != s->count || s->top->payload == NULL)
        invalid_state_read();
    uint64_t n = s->count;
    struct node *node = malloc(sizeof *node); /* with ML_UNWIND, an interrupt unwinds here... */
    if (node == NULL) return 1;               /* (never here: only ENOMEM delivery returns NULL) */
    node->value = n;
    node->payload = NULL;
    node->next = s->top;
    s->top = node;
    node->payload = malloc(PAYLOAD); /* ...or here, with the stack half-updated */
    if (node->payload == NULL) return 1;
    node->payload[0] = (char)n;
    s->count = n + 1;
    return 0;
}

/* ---- Sisyphus ------------------------------------------------------------------------------ */

struct worker {
    pthread_t id;
    ml_status status;
    int saw_poison; /* it stopped because the stack was poisoned */
};

static void sisyphus(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        ml_check(); /* a cancellation point with nothing held */
        int rc = with_safe_lock(&mutex, push, &stack);
        if (rc == SAFE_MUTEX_POISONED) w->saw_poison = 1; /* OCaml's "exception Exit -> ()" */
        if (rc != 0) return;
    }
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    ml_limits limits = {.global_memory = 1, .flags = ML_UNWIND};
    w->status = ml_run(&limits, sisyphus, w, NULL);
    return NULL;
}

/* Checks the whole stack when it is valid; frees it, whatever its state, and resets it. */
static int check_and_wipe(int check)
{
    uint64_t depth = 0, expected = stack.count;
    int ok = 1;
    for (struct node *n = stack.top, *next; n != NULL; n = next) {
        next = n->next;
        if (check && (n->payload == NULL || expected == 0 || n->value != --expected)) ok = 0;
        depth++;
        free(n->payload);
        free(n);
    }
    if (check && (depth != stack.count || expected != 0)) ok = 0;
    stack.top = NULL;
    stack.count = 0;
    mutex.valid = 1;
    return ok;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                      \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void)
{
    CHECK(ml_active()); /* linked with -lmemlimits: memlimits owns malloc */
    ml_set_global_memory_limit(LIMIT);
    int poisoned_rounds = 0, turned_away = 0;
    for (int round = 1; round <= ROUNDS; round++) {
        struct worker workers[2] = {{0}, {0}};
        for (int i = 0; i < 2; i++)
            CHECK(pthread_create(&workers[i].id, NULL, worker_thread, &workers[i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(workers[i].id, NULL);

        /* Nothing was freed since the interrupt: the heap must still be over the limit, else the
         * workers were interrupted prematurely. (Thread exit may free a few small blocks.) */
        uint64_t live = ml_heap_live();
        CHECK(live + 64 * 1024 > LIMIT);
        /* A worker stops by its own interrupt, or on finding the stack poisoned. */
        for (int i = 0; i < 2; i++) {
            CHECK(workers[i].status == ML_MEMORY_LIMIT ||
                  (workers[i].status == ML_OK && workers[i].saw_poison));
            turned_away += workers[i].saw_poison;
        }
        /* Never left locked: no deadlock in the next round. */
        CHECK(pthread_mutex_trylock(&mutex.mutex) == 0);
        pthread_mutex_unlock(&mutex.mutex);

        int valid = mutex.valid;
        uint64_t count = stack.count;
        poisoned_rounds += !valid;
        CHECK(check_and_wipe(valid)); /* when not poisoned, the stack must be consistent */
        printf("round %2d: live heap %.2f MiB, %llu pushes, %s; start again\n", round,
               (double)live / MiB, (unsigned long long)count, valid ? "valid" : "poisoned");
        CHECK(ml_heap_live() <= LIMIT); /* wiped: the next round starts under the limit */
    }
    printf("%d rounds: %d poisoned, %d valid; %d times a worker found the stack poisoned\n", ROUNDS,
           poisoned_rounds, ROUNDS - poisoned_rounds, turned_away);
    printf("no deadlock, no premature interrupt, no invalid state read\n");
    printf("safe mutex example: ok\n");
    return 0;
}
