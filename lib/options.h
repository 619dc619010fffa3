/* The options table: every MEMLIMITS_* variable, its launcher flag, parser, default and help.
 * The environment parser, MEMLIMITS_VERBOSE's listing, `memlimit --help` and the README's table
 * all come from ml__options[]; the parsers here are the only ones (tests/test_options.c, and
 * the libFuzzer harness tests/fuzz_options.c). Nothing here depends on engine state. */
#ifndef ML_OPTIONS_H
#define ML_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "fmt.h"

/* Exit statuses of memlimits itself (README "Exit statuses"). */
enum {
    ML_EXIT_ALLOC_BUDGET = 124, /* default MEMLIMITS_ON_ALLOC action: exit:124 */
    ML_EXIT_CONFIG = 125,       /* a MEMLIMITS_* variable (or launcher option) is invalid */
    ML_EXIT_CANNOT_EXEC = 126,  /* launcher: the command was found but could not be run */
    ML_EXIT_NOT_FOUND = 127,    /* launcher: the command was not found */
};

typedef enum ml_action_kind {
    ML_ACTION_ENOMEM, /* the allocation fails: NULL and errno ENOMEM */
    ML_ACTION_ABORT,  /* abort(3) after the report */
    ML_ACTION_EXIT,   /* _exit(N) after the report */
    ML_ACTION_SIGNAL, /* raise the signal; if the process survives it, the allocation fails */
} ml_action_kind;

typedef struct ml_action {
    ml_action_kind kind;
    int arg; /* exit status or signal number */
} ml_action;

typedef enum ml_report_kind { ML_REPORT_OFF, ML_REPORT_TEXT, ML_REPORT_JSON } ml_report_kind;

typedef struct ml_report_spec {
    ml_report_kind kind;
    char path[512]; /* "" for stderr; "%p" expands to the pid when the file is opened */
} ml_report_spec;

/* MEMLIMITS_LEDGER, set by the launcher for the processes of a tree (lib/ledger.h): the ledger's
 * descriptor, the launcher's pid (for /proc/PID/fd/FD when the descriptor was closed) and the
 * tree's id, which tells the ledger from whatever else a reused descriptor may hold. */
typedef struct ml_ledger_spec {
    int fd; /* -1: not in a tree */
    int pid;
    uint64_t id;
} ml_ledger_spec;

typedef struct ml_config {
    uint64_t heap; /* ML_NONE: no cap */
    ml_action on_heap;
    uint64_t alloc; /* ML_NONE: no budget */
    ml_action on_alloc;
    uint64_t global; /* ML_NONE: no global memory limit */
    uint64_t sample; /* mean sampling gap in bytes */
    struct {
        uint64_t value;
        int set; /* 0: seeded from the OS */
    } seed;
    ml_report_spec report;
    int signal; /* 0: the default wake-up signal */
    int verbose;
    char profile[512]; /* MEMLIMITS_PROFILE: heap profile path ("%p": the pid); "": none */
    int unwind;        /* MEMLIMITS_UNWIND: ML_HOST_UNWIND_AUTO, _FP or _LIBUNWIND (host.h) */
    ml_ledger_spec ledger;
} ml_config;

/* Variables that memlimits itself sets for the processes a run starts, not options: the loader
 * knows them and never refuses them as misspellings. ML_REPORT_RESOLVED_ENV: report.c's mark of
 * a report path resolved for the tree. */
#define ML_REPORT_RESOLVED_ENV "MEMLIMITS_REPORT_RESOLVED"
extern const char *const ml__internal_variables[];

typedef int (*ml_option_parser)(const char *text, void *field, const char **expected);
typedef void (*ml_option_printer)(const void *field, char *out, size_t cap);

typedef struct ml_option {
    const char *env;      /* MEMLIMITS_HEAP */
    const char *flag;     /* --heap (launcher) */
    const char *metavar;  /* SIZE */
    const char *fallback; /* default, as text accepted by the parser; NULL: none */
    const char *help;
    size_t offset; /* of the field in ml_config */
    ml_option_parser parse;
    ml_option_printer print;
} ml_option;

extern const ml_option ml__options[];
extern const size_t ml__option_count;

/* Fills cfg with the defaults of the table. */
void ml__config_defaults(ml_config *cfg);
/* Parses every variable through getter (e.g. ml__getenv). On the first invalid one, returns -1
 * and writes "memlimits: MEMLIMITS_X='value': expected ..." (one line, no newline) to err. */
int ml__config_load(ml_config *cfg, const char *(*getter)(const char *name), char *err,
                    size_t errcap);
/* The same over an environment block (NULL-terminated "NAME=VALUE" strings, e.g. environ; NULL
 * is empty), and first refuses every MEMLIMITS_* name that is not a row of the table: "memlimits:
 * MEMLIMITS_HAEP='1M': expected ...; did you mean MEMLIMITS_HEAP?", naming the closest row by
 * edit distance. Names without the underscore (MEMLIMIT_LIBRARY) are not ours. */
int ml__config_load_env(ml_config *cfg, char *const *env, char *err, size_t errcap);
/* Parses `text` into row o's field of cfg. On refusal returns -1, leaves cfg alone and appends
 * to `why` one line (no newline): `name`, `sep`, the text quoted with its control characters
 * escaped, and what was expected, e.g. "MEMLIMITS_HEAP='512': expected ..." (name o->env, sep
 * "=") or "--heap '512': expected ..." (name o->flag, sep " "). */
int ml__option_parse(const ml_option *o, const char *text, ml_config *cfg, const char *name,
                     const char *sep, ml_buf *why);

/* Appends MEMLIMITS_VERBOSE's listing of cfg to b, one line per row of the table:
 *     "memlimits:   MEMLIMITS_HEAP=64M\n"
 *     "memlimits:   MEMLIMITS_SEED=os   # default\n"     (getter returns NULL for it)
 * Each value is what the row's parser accepts back to the same field (control characters,
 * which only a report path can hold, are escaped and do not round-trip). */
void ml__config_describe(const ml_config *cfg, const char *(*getter)(const char *name), ml_buf *b);

/* Expands a report path: "%p" becomes pid, "%%" becomes "%", any other character (a lone '%'
 * included) is copied. Writes at most cap - 1 characters and a NUL when cap > 0, and returns the
 * length of the whole expansion, as snprintf does: the result was cut when it is >= cap. */
size_t ml__report_path_expand(const char *pattern, long pid, char *out, size_t cap);

/* Appends text with its control characters escaped (\n, \t, \r, other bytes below 0x20 and
 * 0x7f as \xNN), so that a message echoing user input stays one line. */
void ml__buf_escaped(ml_buf *b, const char *text);

/* The parsers. Each returns 0 and stores the value, or -1 with *expected describing what would
 * have been accepted; the field is left untouched on error. ml__parse_signal refuses what no
 * option may name: the fault signals (SEGV, BUS, FPE, ILL, TRAP) and numbers without a name
 * (glibc's reserved 32 and 33); the wake-up signal also refuses KILL and STOP. */
int ml__parse_size(const char *text, uint64_t *out, const char **expected);
int ml__parse_action(const char *text, ml_action *out, const char **expected);
int ml__parse_signal(const char *text, int *out, const char **expected);
/* Signal name without "SIG" for a number, or NULL (real-time signals, unknown numbers). */
const char *ml__signal_name(int sig);
/* Appends a signal as ml__parse_signal accepts it back: "USR1", "RTMIN+2", or the number when
 * it has no name. Never fails, whatever sig is. */
void ml__buf_signal(ml_buf *b, int sig);

/* libmemlimits.so carries ML_LIBRARY_IDENT_PREFIX followed by its version (MEMLIMITS_VERSION_
 * STRING) and a NUL, as ml__library_ident; the launcher looks for it in the file before it
 * preloads it. Defined in the library only (not when ML_LAUNCHER is defined). */
#define ML_LIBRARY_IDENT_PREFIX "memlimits-library-ident "
extern const char ml__library_ident[];

#endif
