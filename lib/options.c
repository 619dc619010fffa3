/* The options table and its parsers (see options.h). Each MEMLIMITS_* variable is one row of
 * ml__options[]; adding a variable means adding a row, and the launcher's --help, the verbose
 * listing, the unknown-name check and the README check (tests/test_options.c) follow. Also here,
 * because the launcher links this file and not the engine: the one-line refusal of a value, the
 * report path's %p expansion, and the identification text of the library. */
#define _GNU_SOURCE
#include "options.h"

#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "common.h"
#include "fmt.h"
#include "host.h"
#include "memlimits.h"

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

/* ---- Sizes ------------------------------------------------------------------------------- */

static const char size_expected[] =
    "a positive byte count: digits with an optional K, M, G or T suffix (powers of 1024) or B "
    "(bytes), below 16E";

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
    case 'B':
        s++;
        break;
    case 'k':
    case 'K':
        shift = 10, s++;
        break;
    case 'm':
    case 'M':
        shift = 20, s++;
        break;
    case 'g':
    case 'G':
        shift = 30, s++;
        break;
    case 't':
    case 'T':
        shift = 40, s++;
        break;
    default:
        return -1;
    }
    if (*s != '\0') return -1;
    if (v == 0 || v > (UINT64_MAX >> shift)) return -1;
    v <<= shift;
    if (v == ML_NONE) return -1; /* reserved for "no limit" */
    *out = v;
    return 0;
}

/* ---- Signals ----------------------------------------------------------------------------- */

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

void ml__buf_signal(ml_buf *b, int sig)
{
    const char *name = ml__signal_name(sig);
    if (name != NULL) {
        ml__buf_str(b, name);
    } else if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
        ml__buf_str(b, "RTMIN+");
        ml__buf_u64(b, (uint64_t)(sig - SIGRTMIN));
    } else {
        ml__buf_i64(b, sig);
    }
}

/* Signals that report a fault of the instruction that raised them. A handler for them (a crash
 * reporter, a JIT, a sanitizer) takes one for a real crash and inspects the faulting address;
 * raised by hand on an allocation, or sent to wake a task, they would be misread. */
static int is_fault_signal(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP;
}

static const char signal_expected[] =
    "a signal: a name such as TERM, SIGUSR1 or RTMIN+2, or its number; not SEGV, BUS, FPE, ILL "
    "or TRAP (they report faults), nor a number without a name (such as 32)";

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
    /* A number below SIGRTMIN without a name is the C library's own (glibc: 32 and 33, for
     * thread cancellation and setxid): no program may take it. */
    if (v < (uint64_t)SIGRTMIN && ml__signal_name((int)v) == NULL) return -1;
    if (is_fault_signal((int)v)) return -1;
    *out = (int)v;
    return 0;
}

/* ---- Actions ----------------------------------------------------------------------------- */

static const char action_expected[] =
    "one of enomem, abort, exit:N (N from 0 to 255), signal:NAME (a signal name or number; not "
    "SEGV, BUS, FPE, ILL, TRAP or one without a name)";

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

/* ---- Field parsers of the table: each adapts a parser above, adding its range ------------- */

/* A plain number below this, given for a limit, is taken for a forgotten unit: "--heap 512" is
 * far likelier to mean 512M than a 512-byte heap. */
#define PLAIN_LIMIT_MIN ((uint64_t)64 << 10)

static const char limit_expected[] =
    "a byte count with a K, M, G or T suffix (powers of 1024) or B (bytes), a plain number of "
    "bytes from 64K up, or none";
/* Recognised by ml__option_parse, which adds the suggestion built from the value. */
static const char limit_unit_expected[] =
    "a size with a unit: a plain number below 64K is taken for a forgotten suffix";

static int field_limit(const char *text, void *field, const char **expected)
{
    uint64_t v;
    if (strcmp(text, "none") == 0) {
        *(uint64_t *)field = ML_NONE;
        return 0;
    }
    if (ml__parse_size(text, &v, expected) != 0) {
        *expected = limit_expected;
        return -1;
    }
    char last = text[strlen(text) - 1];
    if (last >= '0' && last <= '9' && v < PLAIN_LIMIT_MIN) {
        *expected = limit_unit_expected;
        return -1;
    }
    *(uint64_t *)field = v;
    return 0;
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

typedef __typeof__(((ml_config *)0)->seed) seed_field;

static int field_seed(const char *text, void *field, const char **expected)
{
    uint64_t v = 0;
    const char *s = text;
    *expected = "a decimal integer from 0 to 18446744073709551615, or os (drawn from the OS)";
    int from_os = strcmp(text, "os") == 0;
    if (!from_os && (parse_digits(&s, &v) != 0 || *s != '\0')) return -1;
    seed_field *seed = field;
    seed->value = v;
    seed->set = !from_os;
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
    int sig = 0;
    if (strcmp(text, "default") != 0 &&
        (ml__parse_signal(text, &sig, expected) != 0 || sig == SIGKILL || sig == SIGSTOP)) {
        *expected = "a signal that can be caught: a name such as USR2 or RTMIN+2, its number, or "
                    "default; not KILL or STOP, not SEGV, BUS, FPE, ILL or TRAP (they report "
                    "faults), nor a number without a name (such as 32)";
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

/* "none", or "FD:PID:ID": a descriptor, a pid and 16 hexadecimal digits (not all zero). */
static int field_ledger(const char *text, void *field, const char **expected)
{
    ml_ledger_spec spec = {-1, 0, 0};
    uint64_t fd, pid;
    const char *s = text;
    *expected = "none, or FD:PID:ID as memlimit sets it (a descriptor, the launcher's pid and 16 "
                "hexadecimal digits)";
    if (strcmp(text, "none") != 0) {
        if (parse_digits(&s, &fd) != 0 || *s++ != ':' || fd > 65535) return -1;
        if (parse_digits(&s, &pid) != 0 || *s++ != ':' || pid == 0 || pid > INT32_MAX) return -1;
        for (int i = 0; i < 16; i++, s++) {
            int digit = *s >= '0' && *s <= '9'   ? *s - '0'
                        : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
                        : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
                                                 : -1;
            if (digit < 0) return -1;
            spec.id = spec.id << 4 | (uint64_t)digit;
        }
        if (*s != '\0' || spec.id == 0) return -1;
        spec.fd = (int)fd;
        spec.pid = (int)pid;
    }
    *(ml_ledger_spec *)field = spec;
    return 0;
}

/* ---- Printers: the effective value, as text the row's parser accepts back ------------------ */

static void print_text(char *out, size_t cap, ml_buf *b)
{
    size_t n = ML_MIN(b->len, cap - 1);
    memcpy(out, b->data, n);
    out[n] = '\0';
}

static void print_limit(const void *field, char *out, size_t cap)
{
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    uint64_t v = *(const uint64_t *)field;
    if (v == ML_NONE) {
        ml__buf_str(&b, "none");
    } else {
        ml__buf_size(&b, v);
        /* No suffix was printed (v is not a multiple of 1024): field_limit wants a unit. */
        if (v % 1024 != 0 && v < PLAIN_LIMIT_MIN) ml__buf_str(&b, "B");
    }
    print_text(out, cap, &b);
}

static void print_size(const void *field, char *out, size_t cap)
{
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    ml__buf_size(&b, *(const uint64_t *)field);
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
    case ML_ACTION_SIGNAL:
        ml__buf_str(&b, "signal:");
        ml__buf_signal(&b, a->arg);
        break;
    }
    print_text(out, cap, &b);
}

static void print_seed(const void *field, char *out, size_t cap)
{
    const seed_field *seed = field;
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    if (seed->set)
        ml__buf_u64(&b, seed->value);
    else
        ml__buf_str(&b, "os");
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
    if (sig == 0)
        ml__buf_str(&b, "default");
    else
        ml__buf_signal(&b, sig);
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
    *expected = "none, or a file to write the heap profile to (%p stands for the pid), below 512 "
                "bytes";
    if (len == 0 || len >= sizeof(((ml_config *)0)->profile)) return -1;
    if (strcmp(text, "none") == 0) len = 0; /* what the verbose listing prints for no profile */
    memcpy(field, text, len);
    ((char *)field)[len] = '\0';
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

static const char *const unwinders[] = {"auto", "fp", "libunwind"}; /* ML_HOST_UNWIND_* */

static int field_unwind(const char *text, void *field, const char **expected)
{
    *expected = "auto, fp or libunwind";
    for (int i = 0; i < 3; i++)
        if (strcmp(text, unwinders[i]) == 0) {
            *(int *)field = i;
            return 0;
        }
    return -1;
}

static void print_unwind(const void *field, char *out, size_t cap)
{
    int v = *(const int *)field;
    char tmp[32];
    ml_buf b = ML_BUF_INIT(tmp);
    ml__buf_str(&b, v >= 0 && v < 3 ? unwinders[v] : "?");
    print_text(out, cap, &b);
}

static void print_ledger(const void *field, char *out, size_t cap)
{
    const ml_ledger_spec *spec = field;
    static const char hex[] = "0123456789abcdef";
    char tmp[64];
    ml_buf b = ML_BUF_INIT(tmp);
    if (spec->fd < 0) {
        ml__buf_str(&b, "none");
    } else {
        ml__buf_u64(&b, (uint64_t)spec->fd);
        ml__buf_str(&b, ":");
        ml__buf_u64(&b, (uint64_t)spec->pid);
        ml__buf_str(&b, ":");
        for (int shift = 60; shift >= 0; shift -= 4)
            ml__buf_mem(&b, &hex[(spec->id >> shift) & 15], 1);
    }
    print_text(out, cap, &b);
}

/* ---- The table --------------------------------------------------------------------------- */

#define FIELD(name) offsetof(ml_config, name)

const ml_option ml__options[] = {
    {"MEMLIMITS_HEAP", "--heap", "SIZE", "none",
     "hard cap on the live heap: an allocation that would take it above SIZE fails (or runs "
     "MEMLIMITS_ON_HEAP)",
     FIELD(heap), field_limit, print_limit},
    {"MEMLIMITS_ON_HEAP", "--on-heap", "ACTION", "enomem",
     "what crossing the heap cap does: enomem, abort, exit:N or signal:NAME", FIELD(on_heap),
     field_action, print_action},
    {"MEMLIMITS_ALLOC", "--alloc", "SIZE", "none",
     "allocation budget of the process: total bytes it may request, counted exactly", FIELD(alloc),
     field_limit, print_limit},
    {"MEMLIMITS_ON_ALLOC", "--on-alloc", "ACTION", "exit:124",
     "what crossing the allocation budget does: exit:N, abort, signal:NAME or enomem",
     FIELD(on_alloc), field_action, print_action},
    {"MEMLIMITS_GLOBAL", "--global", "SIZE", "none",
     "global memory limit for tasks run under it (client API): they are interrupted above it",
     FIELD(global), field_limit, print_limit},
    {"MEMLIMITS_SAMPLE", "--sample", "BYTES", "80000",
     "mean gap between sampled bytes of the allocation sampler", FIELD(sample), field_sample,
     print_size},
    {"MEMLIMITS_SEED", "--seed", "N", "os",
     "seed of the sampler, for reproducible samples (default: os, drawn from the OS)", FIELD(seed),
     field_seed, print_seed},
    {"MEMLIMITS_REPORT", "--report", "WHERE", "0",
     "report at exit and when a limit action fires: 1 or stderr, PATH, json, json:PATH",
     FIELD(report), field_report, print_report},
    {"MEMLIMITS_SIGNAL", "--signal", "SIGNAL", "default",
     "signal used to wake tasks on other threads (default: default, the highest free real-time "
     "signal)",
     FIELD(signal), field_wake_signal, print_signal},
    {"MEMLIMITS_VERBOSE", "--verbose", "0|1", "0",
     "print the effective configuration to stderr at start", FIELD(verbose), field_flag, print_int},
    {"MEMLIMITS_PROFILE", "--profile", "PATH", NULL,
     "write a heap profile (gperftools format, for jeprof/pprof) to PATH at exit and PATH.limit "
     "when a limit fires; %p stands for the pid",
     FIELD(profile), field_profile, print_profile},
    {"MEMLIMITS_UNWIND", "--unwind", "MODE", "auto",
     "how profiles' callstacks are taken: auto (frame pointers where the unwind tables say they "
     "are exact, libunwind from the first frame where not), fp (frame pointers only: a stack ends "
     "at the first such frame) or libunwind",
     FIELD(unwind), field_unwind, print_unwind},
    {"MEMLIMITS_LEDGER", NULL, "FD:PID:ID", "none",
     "set by memlimit for the processes of a tree: the shared ledger of the tree's limits (not "
     "for users)",
     FIELD(ledger), field_ledger, print_ledger},
};

const size_t ml__option_count = sizeof ml__options / sizeof ml__options[0];

/* ---- Messages ---------------------------------------------------------------------------- */

static void escape_mem(ml_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t plain = 0; /* start of the run of characters copied as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f) continue;
        ml__buf_mem(b, s + plain, i - plain);
        char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
        size_t len = 4;
        if (c == '\n' || c == '\t' || c == '\r') {
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
            len = 2;
        }
        ml__buf_mem(b, esc, len);
        plain = i + 1;
    }
    ml__buf_mem(b, s + plain, n - plain);
}

void ml__buf_escaped(ml_buf *b, const char *text)
{
    escape_mem(b, text, strlen(text));
}

int ml__option_parse(const ml_option *o, const char *text, ml_config *cfg, const char *name,
                     const char *sep, ml_buf *why)
{
    const char *expected = "a valid value";
    if (o->parse(text, (char *)cfg + o->offset, &expected) == 0) return 0;
    ml__buf_str(why, name);
    ml__buf_str(why, sep);
    ml__buf_str(why, "'");
    ml__buf_escaped(why, text);
    ml__buf_str(why, "': expected ");
    ml__buf_str(why, expected);
    if (expected == limit_unit_expected) {
        /* The text is plain digits here, so it is echoed as it is. */
        const char *parts[] = {"; write ", text,     "M for ", text,    " MiB, or ",
                               text,       "B for ", text,     " bytes"};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
            ml__buf_str(why, parts[i]);
    }
    return -1;
}

/* ---- Loading ----------------------------------------------------------------------------- */

void ml__config_defaults(ml_config *cfg)
{
    const char *ignored;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        if (o->fallback != NULL) o->parse(o->fallback, (char *)cfg + o->offset, &ignored);
    }
}

/* The value of `name` in an environment block: the first entry "name=...", as getenv does. */
static const char *env_value(char *const *env, const char *name)
{
    size_t len = strlen(name);
    for (; env != NULL && *env != NULL; env++)
        if (strncmp(*env, name, len) == 0 && (*env)[len] == '=') return *env + len + 1;
    return NULL;
}

/* Exactly one of getter and env is used: getter when it is not NULL. */
static int load(ml_config *cfg, const char *(*getter)(const char *name), char *const *env,
                char *err, size_t errcap)
{
    ml__config_defaults(cfg);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        const char *text = getter != NULL ? getter(o->env) : env_value(env, o->env);
        ml_buf b = {err, errcap - 1, 0, 0};
        if (text == NULL) continue;
        ml__buf_str(&b, "memlimits: ");
        if (ml__option_parse(o, text, cfg, o->env, "=", &b) != 0) {
            err[b.len] = '\0';
            return -1;
        }
    }
    return 0;
}

int ml__config_load(ml_config *cfg, const char *(*getter)(const char *name), char *err,
                    size_t errcap)
{
    return load(cfg, getter, NULL, err, errcap);
}

/* Case-blind optimal-string-alignment distance (insertions, deletions, substitutions and
 * swaps of neighbours, each costing 1) between a[0..n) and b, both cut at NAME_MAX_CMP. */
enum { NAME_MAX_CMP = 48 };

static unsigned name_distance(const char *a, size_t n, const char *b)
{
    unsigned rows[3][NAME_MAX_CMP + 1]; /* the rows of i-2, i-1 and i */
    size_t m = ML_MIN(strlen(b), (size_t)NAME_MAX_CMP);
    n = ML_MIN(n, (size_t)NAME_MAX_CMP);
    for (size_t j = 0; j <= m; j++)
        rows[0][j] = (unsigned)j;
    for (size_t i = 1; i <= n; i++) {
        unsigned *two = rows[(i + 1) % 3], *up = rows[(i + 2) % 3], *row = rows[i % 3];
        char ca = (char)(a[i - 1] | 0x20);
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= m; j++) {
            char cb = (char)(b[j - 1] | 0x20);
            unsigned best = up[j - 1] + (ca != cb);
            best = ML_MIN(best, up[j] + 1);
            best = ML_MIN(best, row[j - 1] + 1);
            if (i > 1 && j > 1 && ca == (char)(b[j - 2] | 0x20) && (char)(a[i - 2] | 0x20) == cb)
                best = ML_MIN(best, two[j - 2] + 1);
            row[j] = best;
        }
    }
    return rows[n % 3][m];
}

static const char var_prefix[] = "MEMLIMITS_";

const char *const ml__internal_variables[] = {ML_REPORT_RESOLVED_ENV, NULL};

static int is_internal(const char *entry, size_t len)
{
    for (const char *const *v = ml__internal_variables; *v != NULL; v++)
        if (strlen(*v) == len && strncmp(*v, entry, len) == 0) return 1;
    return 0;
}

/* Refuses the first MEMLIMITS_* name of env that is not a row, naming the closest row. */
static int check_names(char *const *env, char *err, size_t errcap)
{
    const size_t plen = sizeof var_prefix - 1;
    for (; env != NULL && *env != NULL; env++) {
        const char *entry = *env;
        if (strncmp(entry, var_prefix, plen) != 0) continue;
        size_t len = strcspn(entry, "=");
        if (is_internal(entry, len)) continue;
        const ml_option *closest = NULL;
        unsigned best = ~0u;
        for (size_t i = 0; i < ml__option_count; i++) {
            const char *name = ml__options[i].env;
            if (strlen(name) == len && strncmp(name, entry, len) == 0) {
                closest = NULL;
                break;
            }
            unsigned d = name_distance(entry + plen, len - plen, name + plen);
            if (d < best) best = d, closest = &ml__options[i];
        }
        if (closest == NULL) continue;
        ml_buf b = {err, errcap - 1, 0, 0};
        ml__buf_str(&b, "memlimits: ");
        escape_mem(&b, entry, len);
        ml__buf_str(&b, "='");
        ml__buf_escaped(&b, entry[len] == '=' ? entry + len + 1 : "");
        ml__buf_str(&b, "': expected a known MEMLIMITS_* variable; did you mean ");
        ml__buf_str(&b, closest->env);
        ml__buf_str(&b, "?");
        err[b.len] = '\0';
        return -1;
    }
    return 0;
}

int ml__config_load_env(ml_config *cfg, char *const *env, char *err, size_t errcap)
{
    ml__config_defaults(cfg);
    if (check_names(env, err, errcap) != 0) return -1;
    return load(cfg, NULL, env, err, errcap);
}

/* ---- The verbose listing ----------------------------------------------------------------- */

void ml__config_describe(const ml_config *cfg, const char *(*getter)(const char *name), ml_buf *b)
{
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        char value[600];
        o->print((const char *)cfg + o->offset, value, sizeof value);
        ml__buf_str(b, "memlimits:   ");
        ml__buf_str(b, o->env);
        ml__buf_str(b, "=");
        ml__buf_escaped(b, value);
        if (getter != NULL && getter(o->env) == NULL) ml__buf_str(b, "   # default");
        ml__buf_str(b, "\n");
    }
}

/* ---- Report paths ------------------------------------------------------------------------ */

size_t ml__report_path_expand(const char *pattern, long pid, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *s = pattern; *s != '\0'; s++) {
        char digits[24];
        ml_buf piece = ML_BUF_INIT(digits);
        if (s[0] == '%' && s[1] == 'p') {
            ml__buf_i64(&piece, pid);
            s++;
        } else {
            ml__buf_mem(&piece, s, 1);
            if (s[0] == '%' && s[1] == '%') s++;
        }
        for (size_t i = 0; i < piece.len; i++, n++)
            if (n + 1 < cap) out[n] = digits[i];
    }
    if (cap > 0) out[ML_MIN(n, cap - 1)] = '\0';
    return n;
}

/* ---- Identification ---------------------------------------------------------------------- */

#ifndef ML_LAUNCHER
/* Read by the launcher from the library's file, never by the program (hence `used`): it tells
 * libmemlimits.so, and its version, from any other file without loading it. The launcher, which
 * links this file too, leaves it out so as not to pass for the library itself. */
__attribute__((used)) const char ml__library_ident[] =
    ML_LIBRARY_IDENT_PREFIX MEMLIMITS_VERSION_STRING;
#endif
