/* libFuzzer harness for the option parsers (run by tests/fuzz.sh for a bounded time).
 * Invariants checked on every input: a parser either refuses and leaves its output alone, or
 * accepts a value that prints back to text the same parser accepts with the same value; this
 * holds for every row of the options table. The report path expansion and the escaper keep
 * their contracts on any input. */
#include <signal.h>
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

static int fault_signal(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP;
}

/* A signal a parser may accept: named or real-time, and no fault signal. */
static void check_signal(int sig)
{
    CHECK(sig >= 1 && sig <= SIGRTMAX);
    CHECK(!fault_signal(sig));
    CHECK(sig >= SIGRTMIN || ml__signal_name(sig) != NULL);
}

/* Every row: refused leaves the configuration alone; accepted prints back to the same. */
static void check_rows(const char *text)
{
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        ml_config cfg, before, again;
        const char *why = NULL;
        ml__config_defaults(&cfg);
        before = cfg;
        if (o->parse(text, (char *)&cfg + o->offset, &why) != 0) {
            CHECK(why != NULL && memcmp(&cfg, &before, sizeof cfg) == 0);
            continue;
        }
        char printed[600];
        o->print((const char *)&cfg + o->offset, printed, sizeof printed);
        ml__config_defaults(&again);
        CHECK(o->parse(printed, (char *)&again + o->offset, &why) == 0);
        CHECK(memcmp(&cfg, &again, sizeof cfg) == 0);
    }
}

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
            CHECK(strchr("0123456789kKmMgGtTB", *s) != NULL);
    } else {
        CHECK(v == 7 && why != NULL);
    }

    ml_action a = {ML_ACTION_ABORT, 99};
    if (ml__parse_action(text, &a, &why) == 0) {
        CHECK(a.kind <= ML_ACTION_SIGNAL);
        if (a.kind == ML_ACTION_EXIT) CHECK(a.arg >= 0 && a.arg <= 255);
        if (a.kind == ML_ACTION_SIGNAL) check_signal(a.arg);
    } else {
        CHECK(a.kind == ML_ACTION_ABORT && a.arg == 99);
    }

    int sig = -5;
    if (ml__parse_signal(text, &sig, &why) == 0)
        check_signal(sig);
    else
        CHECK(sig == -5);

    check_rows(text);

    /* The expansion: the length returned does not depend on cap, and the output is cut. */
    char small[8], big[1024];
    size_t full = ml__report_path_expand(text, 12345, big, sizeof big);
    CHECK(full < sizeof big && strlen(big) == full);
    CHECK(ml__report_path_expand(text, 12345, small, sizeof small) == full);
    CHECK(strlen(small) == (full < sizeof small ? full : sizeof small - 1));
    CHECK(strncmp(small, big, strlen(small)) == 0);

    /* Escaped text holds no control character, and only those change. */
    char escaped[4 * sizeof text + 1];
    ml_buf e = ML_BUF_INIT(escaped);
    ml__buf_escaped(&e, text);
    CHECK(!e.truncated);
    for (size_t i = 0; i < e.len; i++)
        CHECK((unsigned char)escaped[i] >= 0x20 && escaped[i] != 0x7f);
    return 0;
}
