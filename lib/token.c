/* Tokens: a flag set once, read by tasks at their events and by the waker. They are carved from
 * pages memlimits maps itself and never unmaps, so that a pointer to a destroyed token still
 * points at readable memory whose magic says "destroyed": misuse is refused, never a crash. A
 * destroyed slot goes on a free list and may be handed out again by ml_token_create. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include "common.h"
#include "memlimits.h"
#include "thread.h"
#include "token.h"
#include "wake.h"

#define TOKEN_LIVE 0x6d6c746bu /* "mltk" */
#define TOKEN_DEAD 0x64656164u /* "dead" */

struct ml_token {
    uint32_t magic;
    int set;
    struct ml_token *next_free;
};

static pthread_mutex_t token_lock = PTHREAD_MUTEX_INITIALIZER;
static ml_token *free_tokens;
static ml_token *chunk_next, *chunk_end;

int ml__token_valid(const ml_token *token)
{
    return token != NULL && __atomic_load_n(&token->magic, __ATOMIC_ACQUIRE) == TOKEN_LIVE;
}

ml_token *ml_token_create(void)
{
    ml_token *t;
    pthread_mutex_lock(&token_lock);
    if (free_tokens != NULL) {
        t = free_tokens;
        free_tokens = t->next_free;
    } else {
        if (chunk_next == chunk_end) {
            size_t size = 64 << 10;
            void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                pthread_mutex_unlock(&token_lock);
                errno = ENOMEM;
                return NULL;
            }
            chunk_next = p;
            chunk_end = chunk_next + size / sizeof(ml_token);
        }
        t = chunk_next++;
    }
    t->next_free = NULL;
    ML_STORE(&t->set, 0);
    __atomic_store_n(&t->magic, TOKEN_LIVE, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&token_lock);
    return t;
}

void ml_token_set(ml_token *token)
{
    if (!ml__token_valid(token)) return;
    __atomic_store_n(&token->set, 1, __ATOMIC_RELEASE);
    /* A task of this thread may hold the token (its own, or an enclosing task's): its next
     * allocation must deliver, not the one that ends its 32 KiB window between two looks at its
     * tokens. Any task will do: a token that is not in the chain costs one extra event. From a
     * signal handler that interrupted the slow path, this leaves the note the slow path honours
     * on its way out, after its last look at the tokens. */
    ml_thread *t = &ml__self;
    if (ML_LOAD(&t->task) != NULL) ml__thread_force_event_self(t);
    ml__wake_poke(); /* ML_WAKE tasks with this token get their signal from the waker */
}

int ml_token_is_set(const ml_token *token)
{
    return ml__token_valid(token) && __atomic_load_n(&token->set, __ATOMIC_ACQUIRE);
}

void ml_token_destroy(ml_token *token)
{
    if (token == NULL) return;
    pthread_mutex_lock(&token_lock);
    uint32_t live = TOKEN_LIVE;
    if (__atomic_compare_exchange_n(&token->magic, &live, TOKEN_DEAD, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
        token->next_free = free_tokens;
        free_tokens = token;
    }
    pthread_mutex_unlock(&token_lock);
}
