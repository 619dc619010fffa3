/* libFuzzer harness for the option parsers (run by tests/fuzz.cmake for a bounded time).
 * Invariants checked on every input: a parser either refuses and leaves its output alone, or
 * accepts a value that prints back to text the same parser accepts with the same value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "options.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[256];
    if (size >= sizeof text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    const char *why;

    uint64_t v = 7, again = 0;
    if (ml__parse_size(text, &v, &why) == 0) {
        char out[64];
        ml_buf b = ML_BUF_INIT(out);
        CHECK(v != 0 && v != ML_NONE);
        ml__buf_size(&b, v);
        out[b.len] = '\0';
        CHECK(ml__parse_size(out, &again, &why) == 0 && again == v);
        for (const char *s = text; *s; s++)
            CHECK(strchr("0123456789kKmMgGtT", *s) != NULL);
    } else {
        CHECK(v == 7 && why != NULL);
    }

    ml_action a = {ML_ACTION_ABORT, 99};
    if (ml__parse_action(text, &a, &why) == 0) {
        CHECK(a.kind <= ML_ACTION_SIGNAL);
        if (a.kind == ML_ACTION_EXIT) CHECK(a.arg >= 0 && a.arg <= 255);
        if (a.kind == ML_ACTION_SIGNAL) CHECK(a.arg >= 1 && a.arg <= 64);
    } else {
        CHECK(a.kind == ML_ACTION_ABORT && a.arg == 99);
    }

    int sig = -5;
    if (ml__parse_signal(text, &sig, &why) == 0)
        CHECK(sig >= 1 && sig <= 64);
    else
        CHECK(sig == -5);
    return 0;
}
