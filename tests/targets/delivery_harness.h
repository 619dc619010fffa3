/* The harness shared by the delivery targets (tests/test_delivery.c): `PROGRAM NAME` runs one
 * scenario and prints "ok NAME", or "FAIL NAME: line N: why" lines and exits 1. Reporting goes
 * through say() (one write(2) from a stack buffer), so it never allocates and may be used inside
 * tasks. The targets are linked with -lmemlimits and built with -fno-builtin
 * (tests/delivery.cmake), so that the library owns malloc and no malloc/free pair is folded away.
 */
#ifndef ML_DELIVERY_HARNESS_H
#define ML_DELIVERY_HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "say.h"

#include "memlimits.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)

static const char *current;
static int failed;
static pthread_mutex_t say_lock = PTHREAD_MUTEX_INITIALIZER;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            pthread_mutex_lock(&say_lock);                                                         \
            say("FAIL %s: line %d: %s: ", current, __LINE__, #cond);                               \
            say(__VA_ARGS__);                                                                      \
            say("\n");                                                                             \
            failed = 1;                                                                            \
            pthread_mutex_unlock(&say_lock);                                                       \
        }                                                                                          \
    } while (0)

#define EXPECT_STATUS(got, want)                                                                   \
    EXPECT((got) == (want), "status %d (%s), expected %d (%s)", (int)(got), ml_strstatus(got),     \
           (int)(want), ml_strstatus(want))

#define EXPECT_U64(got, want)                                                                      \
    EXPECT((uint64_t)(got) == (uint64_t)(want), "%s = %llu, expected %llu", #got,                  \
           (unsigned long long)(got), (unsigned long long)(want))

__attribute__((unused)) static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

__attribute__((unused)) static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits up to `seconds` for *flag to become nonzero, without allocating; returns its value. */
__attribute__((unused)) static int wait_flag(const int *flag, double seconds)
{
    double end = now_s() + seconds;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE) && now_s() < end)
        sleep_ms(1);
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

__attribute__((unused)) static void raise_flag(int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

typedef struct scenario {
    const char *name;
    void (*fn)(void);
} scenario;

#define SCENARIO_ENTRY(name)                                                                       \
    {                                                                                              \
#name, name                                                                                \
    }

/* The program's main: runs the scenario named on the command line. */
__attribute__((unused)) static int run_scenario(const scenario *table, size_t count, int argc,
                                                char **argv)
{
    if (argc != 2) {
        say("usage: %s NAME\n", argv[0]);
        for (size_t i = 0; i < count; i++)
            say("  %s\n", table[i].name);
        return 2;
    }
    if (!ml_active()) {
        say("FAIL %s: memlimits does not own malloc\n", argv[1]);
        return 1;
    }
    for (size_t i = 0; i < count; i++) {
        if (strcmp(table[i].name, argv[1]) != 0) continue;
        current = table[i].name;
        table[i].fn();
        if (!failed) say("ok %s\n", current);
        return failed;
    }
    say("FAIL %s: no such scenario\n", argv[1]);
    return 2;
}

#endif
