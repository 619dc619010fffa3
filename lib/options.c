/* The options table and its parsers (see options.h). Each MEMLIMITS_* variable is one row of
 * ml__options[]; adding a variable means adding a row, and the launcher's --help, the verbose
 * listing and the README check (tests/test_options.c) follow. */
#define _GNU_SOURCE
#include "options.h"

#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "common.h"
#include "fmt.h"

/* Parses decimal digits into *out; rejects empty input, signs, spaces and overflow. */
static int parse_digits(const char **text, uint64_t *out)
{
    const char *s = *text;
    uint64_t v = 0;
    if (*s < '0' || *s > '9') return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *text = s;
    *out = v;
    return 0;
}

static const char size_expected[] =
    "a positive byte count: digits with an optional K, M, G or T suffix (powers of 1024), "
    "below 16E";

int ml__parse_size(const char *text, uint64_t *out, const char **expected)
{
    uint64_t v;
    const char *s = text;
    *expected = size_expected;
    if (parse_digits(&s, &v) != 0) return -1;
    int shift = 0;
    switch (*s) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        return -1;
    }
    if (shift != 0 && *++s != '\0') return -1;
    if (v == 0 || v > (UINT64_MAX >> shift)) return -1;
    v <<= shift;
    if (v == ML_NONE) return -1; /* reserved for "no limit" */
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    int number;
} signal_names[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},     {"BUS", SIGBUS},   {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT},
    {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
    {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
    {"IO", SIGIO},     {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

const char *ml__signal_name(int sig)
{
    for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
        if (signal_names[i].number == sig) return signal_names[i].name;
    return NULL;
}

static const char signal_expected[] =
    "a signal: a name such as TERM, SIGUSR1 or RTMIN+2, or a number from 1 to 64";

int ml__parse_signal(const char *text, int *out, const char **expected)
{
    const char *s = text;
    uint64_t v;
    *expected = signal_expected;
    if (strncmp(s, "SIG", 3) == 0) s += 3;
    if (*s >= '0' && *s <= '9') {
        if (s != text || parse_digits(&s, &v) != 0 || *s != '\0') return -1;
    } else if (strncmp(s, "RTMIN", 5) == 0 || strncmp(s, "RTMAX", 5) == 0) {
        int max = s[4] == 'X';
        uint64_t off = 0;
        s += 5;
        if (*s == (max ? '-' : '+')) {
            s++;
            if (parse_digits(&s, &off) != 0) return -1;
        }
        if (*s != '\0' || off > (uint64_t)(SIGRTMAX - SIGRTMIN)) return -1;
        v = max ? (uint64_t)SIGRTMAX - off : (uint64_t)SIGRTMIN + off;
    } else {
        size_t i, n = sizeof signal_names / sizeof signal_names[0];
        for (i = 0; i < n && strcmp(s, signal_names[i].name) != 0; i++) {
        }
        if (i == n) return -1;
        v = (uint64_t)signal_names[i].number;
    }
    if (v < 1 || v > (uint64_t)SIGRTMAX) return -1;
    *out = (int)v;
    return 0;
}

static const char action_expected[] = "one of enomem, abort, exit:N (N from 0 to 255), "
                                      "signal:NAME (a signal name or number)";

int ml__parse_action(const char *text, ml_action *out, const char **expected)
{
    ml_action a = {ML_ACTION_ENOMEM, 0};
    *expected = action_expected;
    if (strcmp(text, "enomem") == 0) {
        a.kind = ML_ACTION_ENOMEM;
    } else if (strcmp(text, "abort") == 0) {
        a.kind = ML_ACTION_ABORT;
    } else if (strncmp(text, "exit:", 5) == 0) {
        const char *s = text + 5;
        uint64_t v;
        if (parse_digits(&s, &v) != 0 || *s != '\0' || v > 255) return -1;
        a.kind = ML_ACTION_EXIT;
        a.arg = (int)v;
    } else if (strncmp(text, "signal:", 7) == 0) {
        const char *ignored;
        a.kind = ML_ACTION_SIGNAL;
        if (ml__parse_signal(text + 7, &a.arg, &ignored) != 0) return -1;
    } else {
        return -1;
    }
    *out = a;
    return 0;
}

/* Field parsers of the table: each adapts one of the parsers above, adding its range. */

static int field_size(const char *text, void *field, const char **expected)
{
    return ml__parse_size(text, field, expected);
}

static int field_sample(const char *text, void *field, const char **expected)
{
    uint64_t v;
    if (ml__parse_size(text, &v, expected) != 0 || v > ((uint64_t)1 << 40)) {
        *expected = "a mean sampling gap in bytes from 1 to 1T (K, M, G, T suffixes allowed)";
        return -1;
    }
    *(uint64_t *)field = v;
    return 0;
}

static int field_action(const char *text, void *field, const char **expected)
{
    return ml__parse_action(text, field, expected);
}

static int field_seed(const char *text, void *field, const char **expected)
{
    uint64_t v;
    const char *s = text;
    *expected = "a decimal integer from 0 to 18446744073709551615";
    if (parse_digits(&s, &v) != 0 || *s != '\0') return -1;
    __typeof__(((ml_config *)0)->seed) *seed = field;
    seed->value = v;
    seed->set = 1;
    return 0;
}

static int field_flag(const char *text, void *field, const char **expected)
{
    *expected = "0 or 1";
    if (strcmp(text, "0") != 0 && strcmp(text, "1") != 0) return -1;
    *(int *)field = text[0] == '1';
    return 0;
}

static int field_wake_signal(const char *text, void *field, const char **expected)
{
    int sig;
    if (ml__parse_signal(text, &sig, expected) != 0 || sig == SIGKILL || sig == SIGSTOP) {
        *expected = "a signal that can be caught: a name such as USR2 or RTMIN+2, or a number";
        return -1;
    }
    *(int *)field = sig;
    return 0;
}

static int field_report(const char *text, void *field, const char **expected)
{
    ml_report_spec r = {ML_REPORT_OFF, ""};
    const char *path = NULL;
    *expected = "0, 1, stderr, json, json:PATH or PATH (a file; %p stands for the pid)";
    if (strcmp(text, "0") == 0) {
        r.kind = ML_REPORT_OFF;
    } else if (strcmp(text, "1") == 0 || strcmp(text, "stderr") == 0) {
        r.kind = ML_REPORT_TEXT;
    } else if (strcmp(text, "json") == 0) {
        r.kind = ML_REPORT_JSON;
    } else if (strncmp(text, "json:", 5) == 0) {
        r.kind = ML_REPORT_JSON;
        path = text + 5;
    } else {
        r.kind = ML_REPORT_TEXT;
        path = text;
    }
    if (path != NULL) {
        size_t len = strlen(path);
        if (len == 0 || len >= sizeof r.path) return -1;
        memcpy(r.path, path, len + 1);
    }
    *(ml_report_spec *)field = r;
    return 0;
}

/* Printers for MEMLIMITS_VERBOSE: the effective value, in a form the parser accepts back. */

static void print_text(char *out, size_t cap, ml_buf *b)
{
    size_t n = ML_MIN(b->len, cap - 1);
    memcpy(out, b->data, n);
    out[n] = '\0';
}

static void print_size(const void *field, char *out, size_t cap)
{
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    uint64_t v = *(const uint64_t *)field;
    if (v == ML_NONE)
        ml__buf_str(&b, "none");
    else
        ml__buf_size(&b, v);
    print_text(out, cap, &b);
}

static void print_action(const void *field, char *out, size_t cap)
{
    const ml_action *a = field;
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    switch (a->kind) {
    case ML_ACTION_ENOMEM:
        ml__buf_str(&b, "enomem");
        break;
    case ML_ACTION_ABORT:
        ml__buf_str(&b, "abort");
        break;
    case ML_ACTION_EXIT:
        ml__buf_str(&b, "exit:");
        ml__buf_u64(&b, (uint64_t)a->arg);
        break;
    case ML_ACTION_SIGNAL: {
        const char *name = ml__signal_name(a->arg);
        ml__buf_str(&b, "signal:");
        if (name != NULL)
            ml__buf_str(&b, name);
        else
            ml__buf_u64(&b, (uint64_t)a->arg);
        break;
    }
    }
    print_text(out, cap, &b);
}

static void print_seed(const void *field, char *out, size_t cap)
{
    const __typeof__(((ml_config *)0)->seed) *seed = field;
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    if (seed->set)
        ml__buf_u64(&b, seed->value);
    else
        ml__buf_str(&b, "from the OS");
    print_text(out, cap, &b);
}

static void print_int(const void *field, char *out, size_t cap)
{
    char tmp[32];
    ml_buf b = ML_BUF_INIT(tmp);
    ml__buf_i64(&b, *(const int *)field);
    print_text(out, cap, &b);
}

static void print_signal(const void *field, char *out, size_t cap)
{
    int sig = *(const int *)field;
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    if (sig == 0) {
        ml__buf_str(&b, "default (a free real-time signal)");
    } else if (sig >= SIGRTMIN) {
        ml__buf_str(&b, "RTMIN+");
        ml__buf_u64(&b, (uint64_t)(sig - SIGRTMIN));
    } else {
        ml__buf_str(&b, ml__signal_name(sig));
    }
    print_text(out, cap, &b);
}

static void print_report(const void *field, char *out, size_t cap)
{
    const ml_report_spec *r = field;
    char tmp[600];
    ml_buf b = ML_BUF_INIT(tmp);
    if (r->kind == ML_REPORT_OFF)
        ml__buf_str(&b, "0");
    else if (r->kind == ML_REPORT_JSON)
        ml__buf_str(&b, r->path[0] ? "json:" : "json");
    else if (r->path[0] == '\0')
        ml__buf_str(&b, "stderr");
    ml__buf_str(&b, r->path);
    print_text(out, cap, &b);
}

static int field_profile(const char *text, void *field, const char **expected)
{
    size_t len = strlen(text);
    *expected = "a file to write the heap profile to (%p stands for the pid), below 512 bytes";
    if (len == 0 || len >= sizeof(((ml_config *)0)->profile)) return -1;
    memcpy(field, text, len + 1);
    return 0;
}

static void print_profile(const void *field, char *out, size_t cap)
{
    const char *path = field;
    char tmp[600];
    ml_buf b = ML_BUF_INIT(tmp);
    ml__buf_str(&b, path[0] ? path : "none");
    print_text(out, cap, &b);
}

#define FIELD(name) offsetof(ml_config, name)

const ml_option ml__options[] = {
    {"MEMLIMITS_HEAP", "--heap", "SIZE", NULL,
     "hard cap on the live heap: an allocation that would take it above SIZE fails (or runs "
     "MEMLIMITS_ON_HEAP)",
     FIELD(heap), field_size, print_size},
    {"MEMLIMITS_ON_HEAP", "--on-heap", "ACTION", "enomem",
     "what crossing the heap cap does: enomem, abort, exit:N or signal:NAME", FIELD(on_heap),
     field_action, print_action},
    {"MEMLIMITS_ALLOC", "--alloc", "SIZE", NULL,
     "allocation budget of the process: total bytes it may request, counted exactly", FIELD(alloc),
     field_size, print_size},
    {"MEMLIMITS_ON_ALLOC", "--on-alloc", "ACTION", "exit:124",
     "what crossing the allocation budget does: exit:N, abort, signal:NAME or enomem",
     FIELD(on_alloc), field_action, print_action},
    {"MEMLIMITS_GLOBAL", "--global", "SIZE", NULL,
     "global memory limit for tasks run under it (client API): they are interrupted above it",
     FIELD(global), field_size, print_size},
    {"MEMLIMITS_SAMPLE", "--sample", "BYTES", "80000",
     "mean gap between sampled bytes of the allocation sampler", FIELD(sample), field_sample,
     print_size},
    {"MEMLIMITS_SEED", "--seed", "N", NULL,
     "seed of the sampler, for reproducible samples (default: from the OS)", FIELD(seed),
     field_seed, print_seed},
    {"MEMLIMITS_REPORT", "--report", "WHERE", "0",
     "report at exit and when a limit action fires: 1 or stderr, PATH, json, json:PATH",
     FIELD(report), field_report, print_report},
    {"MEMLIMITS_SIGNAL", "--signal", "SIGNAL", NULL,
     "signal used to wake tasks on other threads (default: a free real-time signal)", FIELD(signal),
     field_wake_signal, print_signal},
    {"MEMLIMITS_VERBOSE", "--verbose", "0|1", "0",
     "print the effective configuration to stderr at start", FIELD(verbose), field_flag, print_int},
    {"MEMLIMITS_PROFILE", "--profile", "PATH", NULL,
     "write a heap profile (gperftools format, for jeprof/pprof) to PATH at exit and PATH.limit "
     "when a limit fires; %p stands for the pid",
     FIELD(profile), field_profile, print_profile},
};

const size_t ml__option_count = sizeof ml__options / sizeof ml__options[0];

void ml__config_defaults(ml_config *cfg)
{
    const char *ignored;
    memset(cfg, 0, sizeof *cfg);
    cfg->heap = cfg->alloc = cfg->global = ML_NONE;
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        if (o->fallback != NULL) o->parse(o->fallback, (char *)cfg + o->offset, &ignored);
    }
}

int ml__config_load(ml_config *cfg, const char *(*getter)(const char *name), char *err,
                    size_t errcap)
{
    ml__config_defaults(cfg);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        const char *text = getter(o->env);
        const char *expected;
        if (text == NULL) continue;
        if (o->parse(text, (char *)cfg + o->offset, &expected) != 0) {
            ml_buf b = {err, errcap - 1, 0, 0};
            ml__buf_str(&b, "memlimits: ");
            ml__buf_str(&b, o->env);
            ml__buf_str(&b, "='");
            ml__buf_str(&b, text);
            ml__buf_str(&b, "': expected ");
            ml__buf_str(&b, expected);
            err[b.len] = '\0';
            return -1;
        }
    }
    return 0;
}
