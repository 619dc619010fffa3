/* memlimit, the launcher: runs a command with libmemlimits.so preloaded and MEMLIMITS_* set from
 * its options. By default its limits bound the whole process tree the command starts: it stays
 * the command's parent and the tree's subreaper, shares the limits through a ledger (tree.c,
 * lib/ledger.c), writes one report for the tree (tree_report.c) and exits with the command's
 * status, or like timeout(1) with the budget action's. With --per-process it gets out of the way
 * with exec, every process having its own limits. Its options are the rows of the options table
 * (lib/options.c), checked by the same parsers as the variables, and a few of its own; its own
 * failures print one line, exit 125, 126 or 127, and never run the command. It links options.c,
 * fmt.c, host.c and ledger.c only: no engine, no constructor. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inspect.h"
#include "memlimits.h"
#include "options.h"
#include "tree.h"

#ifndef ML_VERSION
#define ML_VERSION "unknown"
#endif

extern char **environ;

/* Table flags whose value may be left out, and what the bare flag means. These take a value only
 * in the "--flag=VALUE" form, so that a bare flag never swallows the command after it. A bare
 * flag followed by one of its keywords ("--report json") is refused: the user meant
 * "--report=json", not a command named json. A keyword ending in '*' is a prefix. */
static const struct {
    const char *flag, *bare;
    const char *const *keywords;
} optional_values[] = {
    {"--report", "stderr", (const char *const[]){"0", "1", "stderr", "json", "json:*", NULL}},
    {"--verbose", "1", (const char *const[]){"0", "1", NULL}},
};

/* What the command line asked for: per row of ml__options[], the text given or NULL. */
typedef struct request {
    const char **value;
    int json;
    int per_process;     /* --per-process: every process its own limits; exec the command */
    int preserve_status; /* --preserve-status: the command's status even when a limit fired */
    int warned;          /* the command itself was warned about as out of the preload's reach */
    int measure;         /* --measure: end with the summary line and suggested limits */
    char **command;
} request;

/* The launcher's own flags, which set no variable. */
static const struct {
    const char *flag, *help;
    size_t offset; /* of the int it sets in request */
} own_flags[] = {
    {"--json",
     "write the report as JSON: to stderr, or to the file given by --report=PATH "
     "[MEMLIMITS_REPORT=json or json:PATH]",
     offsetof(request, json)},
    {"--per-process",
     "give every process its own limits and report, as LD_PRELOAD alone does, instead of "
     "limits on the sum over the whole process tree; memlimit execs COMMAND and is gone",
     offsetof(request, per_process)},
    {"--preserve-status",
     "exit with COMMAND's status even when a limit's exiting action (exit:N, abort) fired in a "
     "process of the tree",
     offsetof(request, preserve_status)},
    {"--measure",
     "end with one summary line: the tree's peak heap, total allocated, largest process, "
     "process count, wall time and --heap/--alloc values with a 25% margin",
     offsetof(request, measure)},
};

/* Writes "memlimit: MESSAGE" as one line on stderr. Every message of the launcher goes through
 * here, and the values it echoes (options, paths, commands) are the user's: their control
 * characters are escaped, so that a message is always one line. */
static void vsay(const char *format, va_list ap)
{
    char line[2 * PATH_MAX + 1024], shown[4 * sizeof line + 16];
    ml_buf b = ML_BUF_INIT(shown);
    vsnprintf(line, sizeof line, format, ap);
    ml__buf_str(&b, "memlimit: ");
    ml__buf_escaped(&b, line);
    fprintf(stderr, "%.*s\n", (int)b.len, shown);
}

static __attribute__((format(printf, 1, 2))) void say(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsay(format, ap);
    va_end(ap);
}

static ML_COLD __attribute__((noreturn, format(printf, 2, 3))) void die(int status,
                                                                        const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsay(format, ap);
    va_end(ap);
    exit(status);
}

static int optional_row(const char *flag)
{
    for (size_t i = 0; i < sizeof optional_values / sizeof optional_values[0]; i++)
        if (strcmp(optional_values[i].flag, flag) == 0) return (int)i;
    return -1;
}

static const char *bare_value(const char *flag)
{
    int i = optional_row(flag);
    return i >= 0 ? optional_values[i].bare : NULL;
}

/* Whether `word`, after a bare optional flag, is one of that flag's keywords. */
static int is_keyword(const char *flag, const char *word)
{
    int i = optional_row(flag);
    for (const char *const *k = i >= 0 ? optional_values[i].keywords : NULL; k && *k; k++) {
        size_t len = strlen(*k);
        if ((*k)[len - 1] == '*' ? strncmp(word, *k, len - 1) == 0 : strcmp(word, *k) == 0)
            return 1;
    }
    return 0;
}

static int row_of_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < ml__option_count; i++) {
        const char *flag = ml__options[i].flag;
        if (flag != NULL && strlen(flag) == len && strncmp(flag, name, len) == 0) return (int)i;
    }
    return -1;
}

static int row_of_env(const char *env)
{
    for (size_t i = 0; i < ml__option_count; i++)
        if (strcmp(ml__options[i].env, env) == 0) return (int)i;
    return -1;
}

/* ---- --help and --version ---------------------------------------------------------------- */

enum { HELP_COLUMN = 24, HELP_WIDTH = 79 };

/* Prints `lead` (indented by 2) and `text` word-wrapped in a column starting at HELP_COLUMN. */
static void print_entry(const char *lead, const char *text)
{
    int col = printf("  %s", lead);
    if (col > HELP_COLUMN - 2) {
        putchar('\n');
        col = 0;
    }
    for (const char *s = text; *s != '\0';) {
        size_t word = strcspn(s, " ");
        if (col > HELP_COLUMN && col + 1 + (int)word > HELP_WIDTH) {
            putchar('\n');
            col = 0;
        }
        if (col < HELP_COLUMN) {
            col += printf("%*s", HELP_COLUMN - col, "");
        } else {
            putchar(' ');
            col++;
        }
        col += printf("%.*s", (int)word, s);
        s += word;
        s += strspn(s, " ");
    }
    putchar('\n');
}

static void print_help(void)
{
    ml_config defaults;
    ml__config_defaults(&defaults);
    printf("Usage: memlimit [OPTIONS] [--] COMMAND [ARGS...]\n"
           "Run COMMAND with libmemlimits.so preloaded: a hard heap cap, an exact\n"
           "allocation budget and a report, for COMMAND and every process it starts.\n"
           "The limits bound the whole process tree: the sum of the live heaps of its\n"
           "processes, the sum of their allocations; one report covers the tree.\n"
           "Each option sets the environment variable shown with it; its value follows\n"
           "after '=' or as the next argument. Options shown with [=...] take a value\n"
           "only after '=' (--report=json); alone, they mean stderr and 1, and one\n"
           "followed by a word that is one of its values (--report json) is refused.\n\n"
           "Options:\n");
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        char lead[64], value[600], text[1024];
        if (o->flag == NULL) continue;
        if (bare_value(o->flag) != NULL)
            snprintf(lead, sizeof lead, "%s[=%s]", o->flag, o->metavar);
        else
            snprintf(lead, sizeof lead, "%s %s", o->flag, o->metavar);
        /* The default, as the library's verbose listing prints it, unless the help states it. */
        o->print((const char *)&defaults + o->offset, value, sizeof value);
        if (strstr(o->help, "(default:") != NULL)
            snprintf(text, sizeof text, "%s [%s]", o->help, o->env);
        else
            snprintf(text, sizeof text, "%s [%s; default: %s]", o->help, o->env, value);
        print_entry(lead, text);
    }
    for (size_t i = 0; i < sizeof own_flags / sizeof own_flags[0]; i++)
        print_entry(own_flags[i].flag, own_flags[i].help);
    print_entry("-h, --help", "print this help and exit");
    print_entry("-V, --version", "print the version and the library found, and exit");
    printf("\n"
           "SIZE is a byte count with a K, M, G or T suffix (powers of 1024), or with\n"
           "B for bytes (512B); a plain number of 64K or more is bytes too, one below\n"
           "is refused as a forgotten suffix; none is no limit. BYTES is a byte count\n"
           "that may be plain. ACTION is enomem, abort, exit:N or signal:NAME. SIGNAL\n"
           "is a name (USR2, SIGUSR2, RTMIN+2) or a number, never SEGV, BUS, FPE, ILL,\n"
           "TRAP or one without a name. In a report PATH, %%p stands for the pid and\n"
           "%%%% for %%. The tree's report is written once, by memlimit, when every\n"
           "process has ended, and appended with a single write; with --per-process\n"
           "every process writes its own (JSON: one line per report).\n"
           "Any other MEMLIMITS_* variable in the environment is refused.\n"
           "memlimit sets PYTHONMALLOC=malloc unless it is set, so that CPython's small\n"
           "objects come from malloc and the limits see them (--verbose shows it).\n\n"
           "Exit status: the status of COMMAND (memlimit dies by the signal that killed\n"
           "it), or, like timeout(1), when a limit's exiting action fired in any\n"
           "process of the tree, even one whose parent turned it into another status:\n"
           "  %d  the allocation budget was exceeded (the default --on-alloc action)\n"
           "  N    that limit's exit:N action; 134 for abort (--preserve-status: COMMAND's)\n"
           "  %d  memlimit failed: invalid option or variable, no command, no library\n"
           "  %d  COMMAND was found but could not be run\n"
           "  %d  COMMAND was not found\n\n"
           "libmemlimits.so is found from the launcher's own location, in the build tree\n"
           "or the install tree; MEMLIMIT_LIBRARY=PATH overrides. It must be a\n"
           "libmemlimits.so of this version (%d.%d.x), and is prepended to LD_PRELOAD.\n"
           "Statically linked and set-user-ID programs cannot be preloaded: memlimit\n"
           "warns and runs them without limits. See memlimit(1).\n",
           ML_EXIT_ALLOC_BUDGET, ML_EXIT_CONFIG, ML_EXIT_CANNOT_EXEC, ML_EXIT_NOT_FOUND,
           MEMLIMITS_VERSION_MAJOR, MEMLIMITS_VERSION_MINOR);
}

/* ---- Is it libmemlimits.so? ------------------------------------------------------------- */

/* The library's version from its identification text (ML_LIBRARY_IDENT_PREFIX "X.Y.Z" NUL),
 * searched in the bytes [p, end); returns 0 and the version in out, or -1 if there is none. */
static int find_ident(const char *p, const char *end, char *out, size_t cap)
{
    static const char prefix[] = ML_LIBRARY_IDENT_PREFIX;
    const size_t plen = sizeof prefix - 1;
    while ((p = memmem(p, (size_t)(end - p), prefix, plen)) != NULL) {
        const char *v = p + plen, *s = v;
        int dots = 0;
        for (; s < end && ((*s >= '0' && *s <= '9') || *s == '.'); s++)
            dots += *s == '.';
        if (s < end && *s == '\0' && dots == 2 && s > v && v[0] != '.' && (size_t)(s - v) < cap) {
            memcpy(out, v, (size_t)(s - v));
            out[s - v] = '\0';
            return 0;
        }
        p += plen;
    }
    return -1;
}

extern const ElfW(Ehdr) __ehdr_start; /* the launcher's own ELF header (GNU ld and lld) */

/* Checks that the file at `path` is a libmemlimits.so this launcher can drive: an ELF shared
 * object for the launcher's own class, byte order and machine, carrying the library's
 * identification text with the launcher's major and minor version. The file is read, never
 * loaded: dlopen would run its constructors, which read the configuration and act on it.
 * Returns 0, or -1 with a reason (no "memlimit: " prefix) in why. */
static int check_library(const char *path, char *why, size_t whycap)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(why, whycap, "cannot read it: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    const char *map =
        size >= sizeof(ElfW(Ehdr)) ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    const ElfW(Ehdr) *eh = (const void *)map;
    int status = -1;
    char version[32];
    if (map == MAP_FAILED || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_type != ET_DYN) {
        snprintf(why, whycap, "not an ELF shared library");
    } else if (eh->e_ident[EI_CLASS] != __ehdr_start.e_ident[EI_CLASS] ||
               eh->e_ident[EI_DATA] != __ehdr_start.e_ident[EI_DATA] ||
               eh->e_machine != __ehdr_start.e_machine) {
        snprintf(why, whycap, "an ELF shared library for another machine than memlimit's");
    } else if (find_ident(map, map + size, version, sizeof version) != 0) {
        snprintf(why, whycap,
                 "not libmemlimits: an ELF shared library without memlimits' identification");
    } else {
        unsigned major = 0, minor = 0;
        sscanf(version, "%u.%u", &major, &minor);
        if (major != MEMLIMITS_VERSION_MAJOR || minor != MEMLIMITS_VERSION_MINOR)
            snprintf(why, whycap, "libmemlimits %s, but this memlimit (%s) needs %d.%d.x", version,
                     ML_VERSION, MEMLIMITS_VERSION_MAJOR, MEMLIMITS_VERSION_MINOR);
        else
            status = 0;
    }
    if (map != MAP_FAILED) munmap((void *)map, size);
    return status;
}

/* Finds the library to preload and checks it (check_library), or ends with ML_EXIT_CONFIG. */
static void find_library(char *library, size_t cap)
{
    char why[PATH_MAX + 256], reason[512];
    if (ml_locate_library(library, cap, why, sizeof why) != 0) die(ML_EXIT_CONFIG, "%s", why);
    if (check_library(library, reason, sizeof reason) == 0) return;
    const char *override = getenv("MEMLIMIT_LIBRARY");
    if (override != NULL && override[0] != '\0')
        die(ML_EXIT_CONFIG, "MEMLIMIT_LIBRARY='%s': %s", override, reason);
    die(ML_EXIT_CONFIG, "library '%s': %s", library, reason);
}

static void print_version(void)
{
    char library[PATH_MAX], why[PATH_MAX + 256];
    printf("memlimit (memlimits) %s\n", ML_VERSION);
    if (ml_locate_library(library, sizeof library, why, sizeof why) != 0)
        printf("library: not found: %s\n", why);
    else if (check_library(library, why, sizeof why) != 0)
        printf("library: %s: refused: %s\n", library, why);
    else
        printf("library: %s\n", library);
}

/* ---- Options ----------------------------------------------------------------------------- */

/* Checks `text` with the row's own parser, as the library will when it reads the variable. */
static void check_value(const ml_option *o, const char *text)
{
    ml_config scratch;
    char line[2048];
    ml_buf why = {line, sizeof line - 1, 0, 0};
    ml__config_defaults(&scratch);
    if (ml__option_parse(o, text, &scratch, o->flag, " ", &why) != 0) {
        line[why.len] = '\0';
        die(ML_EXIT_CONFIG, "%s", line);
    }
}

/* Reads options up to "--" or the first argument that is not one. --help and --version act at
 * once; anything invalid ends the launcher with ML_EXIT_CONFIG. */
static void parse_options(int argc, char **argv, request *rq)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') break;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help();
            exit(fflush(stdout) == 0 ? 0 : ML_EXIT_CONFIG);
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            print_version();
            exit(fflush(stdout) == 0 ? 0 : ML_EXIT_CONFIG);
        }
        int own = 0;
        for (size_t k = 0; k < sizeof own_flags / sizeof own_flags[0] && !own; k++) {
            size_t len = strlen(own_flags[k].flag);
            if (strncmp(arg, own_flags[k].flag, len) != 0) continue;
            if (arg[len] == '=') die(ML_EXIT_CONFIG, "%s takes no value", own_flags[k].flag);
            if (arg[len] != '\0') continue;
            *(int *)((char *)rq + own_flags[k].offset) = 1;
            own = 1;
        }
        if (own) continue;
        const char *eq = strchr(arg, '=');
        size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        int row = row_of_flag(arg, len);
        if (row < 0) die(ML_EXIT_CONFIG, "unknown option '%s' (see memlimit --help)", arg);
        const ml_option *o = &ml__options[row];
        const char *text = eq != NULL ? eq + 1 : bare_value(o->flag);
        if (eq == NULL && text != NULL && i + 1 < argc && is_keyword(o->flag, argv[i + 1]))
            die(ML_EXIT_CONFIG,
                "%s '%s': expected %s=%s: a bare %s takes no separate value (put -- before a "
                "command named %s)",
                o->flag, argv[i + 1], o->flag, argv[i + 1], o->flag, argv[i + 1]);
        if (text == NULL) {
            if (i + 1 >= argc) die(ML_EXIT_CONFIG, "%s: missing %s", o->flag, o->metavar);
            text = argv[++i];
        }
        check_value(o, text);
        rq->value[row] = text;
    }
    rq->command = argv + i;
}

/* --json: the report goes as JSON to the path --report gave, or to stderr. */
static void apply_json(request *rq, char *buf, size_t cap)
{
    int row = row_of_env("MEMLIMITS_REPORT");
    if (!rq->json || row < 0) return;
    const char *text = rq->value[row] != NULL ? rq->value[row] : "stderr";
    ml_config scratch;
    const char *expected;
    ml__config_defaults(&scratch);
    ml__options[row].parse(text, (char *)&scratch + ml__options[row].offset, &expected);
    if (scratch.report.kind == ML_REPORT_OFF)
        die(ML_EXIT_CONFIG, "--json asks for a report, but --report '%s' turns it off", text);
    if (scratch.report.path[0] == '\0')
        snprintf(buf, cap, "json");
    else
        snprintf(buf, cap, "json:%s", scratch.report.path);
    rq->value[row] = buf;
}

/* Sets the variables the options gave and LD_PRELOAD, then checks the whole configuration the
 * library will read (the user's own MEMLIMITS_* included, and any unknown MEMLIMITS_* name)
 * with the library's loader. */
static ml_config export_environment(const request *rq, const char *library)
{
    for (size_t i = 0; i < ml__option_count; i++)
        if (rq->value[i] != NULL && setenv(ml__options[i].env, rq->value[i], 1) != 0)
            die(ML_EXIT_CONFIG, "cannot set %s: %s", ml__options[i].env, strerror(errno));

    const char *old = getenv("LD_PRELOAD");
    size_t liblen = strlen(library);
    if (old == NULL || old[strspn(old, ": ")] == '\0') {
        if (setenv("LD_PRELOAD", library, 1) != 0) die(ML_EXIT_CONFIG, "cannot set LD_PRELOAD");
    } else if (!(strncmp(old, library, liblen) == 0 && strchr(": ", old[liblen]) != NULL)) {
        /* Ours first, so that its malloc is the one every other object binds to. */
        char *joined;
        if (asprintf(&joined, "%s:%s", library, old) < 0 || setenv("LD_PRELOAD", joined, 1) != 0)
            die(ML_EXIT_CONFIG, "cannot set LD_PRELOAD");
        free(joined);
    }

    ml_config cfg;
    char err[1024];
    if (ml__config_load_env(&cfg, environ, err, sizeof err) != 0) {
        const char *line = strncmp(err, "memlimits: ", 11) == 0 ? err + 11 : err;
        die(ML_EXIT_CONFIG, "in the environment: %s", line);
    }
    return cfg;
}

/* Opens the report file as the library will in this same process after exec (same pid), so
 * that an unwritable path is refused before anything runs. */
static void check_report_path(const ml_config *cfg, const request *rq)
{
    if (cfg->report.kind == ML_REPORT_OFF || cfg->report.path[0] == '\0') return;
    int row = row_of_env("MEMLIMITS_REPORT");
    const char *name = row >= 0 && rq->value[row] != NULL ? "--report" : "MEMLIMITS_REPORT";
    char path[PATH_MAX];
    if (ml__report_path_expand(cfg->report.path, (long)getpid(), path, sizeof path) >= sizeof path)
        die(ML_EXIT_CONFIG, "%s '%s': the path is too long once %%p is expanded", name,
            cfg->report.path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
        return;
    }
    die(ML_EXIT_CONFIG, "%s '%s': cannot open for appending: %s", name, cfg->report.path,
        strerror(errno));
}

/* Ends the launcher as the tree ended: with its status, or by the signal that killed the
 * command (without a core dump of the launcher's own). */
static ML_COLD __attribute__((noreturn)) void end_as(int status)
{
    fflush(stdout);
    fflush(stderr);
    if (status >= 0) exit(status);
    int sig = -status;
    struct rlimit no_core = {0, 0};
    sigset_t set;
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    exit(128 + sig);
}

/* The tree's report, once, where --report says (%p: the launcher's pid). */
static void write_tree_report(const ml_tree *t, const ml_config *cfg)
{
    int fd = STDERR_FILENO;
    if (cfg->report.path[0] != '\0') {
        char path[PATH_MAX];
        ml__report_path_expand(cfg->report.path, (long)getpid(), path, sizeof path);
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            say("cannot write the report to '%s': %s", path, strerror(errno));
            return;
        }
    }
    fflush(stderr);
    if (ml_tree_report(t, cfg->report.kind, fd) != 0) say("cannot write the report: out of memory");
    if (fd != STDERR_FILENO) close(fd);
}

/* Processes of the tree that ran without limits are never passed over in silence: one line at the
 * end names them (the report, when asked for, has their rows). The command itself, warned about
 * before it ran, is not named again. */
static void warn_escapes(const ml_tree *t, int command_warned)
{
    char names[600] = "";
    size_t n = 0, len = 0;
    for (size_t i = 0; i < t->nrows; i++) {
        const ml_tree_row *r = &t->rows[i];
        if (r->serial != 0 && !r->escaped) continue;
        if (r->pid == t->command_pid && command_warned) continue;
        const char *argv = r->escaped ? r->escaped_argv : r->argv;
        size_t argv_len = r->escaped ? r->escaped_len : r->argv_len;
        size_t word = strnlen(argv, argv_len);
        const char *slash = memrchr(argv, '/', word);
        const char *base = slash != NULL ? slash + 1 : argv;
        if (n++ < 4 && len < sizeof names - 80)
            len += (size_t)snprintf(names + len, sizeof names - len, "%spid %d (%.*s)",
                                    n > 1 ? ", " : "", r->pid, (int)(argv + word - base), base);
    }
    if (n == 0) return;
    say("warning: %zu process%s of the tree ran without limits (LD_PRELOAD dropped or ignored): "
        "%s%s",
        n, n == 1 ? "" : "es", names, n > 4 ? ", ..." : "");
}

/* Tree mode: the launcher stays, as the tree's parent and subreaper, until every process of the
 * tree has ended; then it writes the tree's one report and ends as the tree did. */
static ML_COLD __attribute__((noreturn)) void run_tree(const request *rq, const ml_config *cfg)
{
    ml_tree t;
    memset(&t, 0, sizeof t);
    t.command = rq->command;
    t.heap = cfg->heap;
    t.alloc = cfg->alloc;
    t.on_heap = cfg->on_heap;
    t.on_alloc = cfg->on_alloc;
    t.preserve_status = rq->preserve_status;
    t.measure = rq->measure;
    t.verbose = cfg->verbose;
    /* The report is the launcher's: the processes of the tree write none of their own. */
    unsetenv("MEMLIMITS_REPORT");
    /* CPython takes arenas for its small objects with mmap, where no limit sees them. */
    t.pythonmalloc = getenv("PYTHONMALLOC");
    if (t.pythonmalloc == NULL) {
        if (setenv("PYTHONMALLOC", "malloc", 1) != 0)
            die(ML_EXIT_CONFIG, "cannot set PYTHONMALLOC");
        t.pythonmalloc = "malloc";
        t.pythonmalloc_ours = 1;
    }
    if (cfg->verbose) {
        say("tree mode: the limits bound the sum over every process %s starts (--per-process: "
            "each its own); one report at the end",
            rq->command[0]);
        say("PYTHONMALLOC=%s (%s)", t.pythonmalloc,
            t.pythonmalloc_ours ? "set by memlimit, so that CPython's small objects come from "
                                  "malloc and the limits see them"
                                : "yours, kept");
    }
    fflush(stderr);
    char why[PATH_MAX + 256];
    int status = ml_tree_run(&t, why, sizeof why);
    if (status != 0) die(status, "%s", why);
    if (cfg->verbose)
        say("the tree's ledger: %u slots used at once at most, %llu processes could not attach",
            t.slots_high_water, (unsigned long long)t.attach_failures);
    int text_on_stderr = cfg->report.kind == ML_REPORT_TEXT && cfg->report.path[0] == '\0';
    if (rq->measure && !text_on_stderr) {
        char line[1024];
        ml_tree_summary(&t, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    if (cfg->report.kind != ML_REPORT_OFF) write_tree_report(&t, cfg);
    warn_escapes(&t, rq->warned);
    end_as(t.status);
}

int main(int argc, char **argv)
{
    request rq = {0};
    char json_value[600], library[PATH_MAX], resolved[PATH_MAX];

    rq.value = calloc(ml__option_count, sizeof *rq.value);
    if (rq.value == NULL) die(ML_EXIT_CONFIG, "out of memory");
    parse_options(argc, argv, &rq);
    if (rq.command[0] == NULL)
        die(ML_EXIT_CONFIG, "no command given (usage: memlimit [OPTIONS] [--] COMMAND [ARGS...])");
    apply_json(&rq, json_value, sizeof json_value);
    find_library(library, sizeof library);
    ml_config cfg = export_environment(&rq, library);
    if (rq.measure && rq.per_process)
        die(ML_EXIT_CONFIG, "--measure sums over the tree: it cannot go with --per-process");
    /* Inside another memlimit's tree, this command's processes leave it for limits of their own:
     * a process attaches to one ledger only. */
    if (cfg.ledger.fd >= 0)
        say("warning: inside the process tree of memlimit pid %d: the processes of '%s' leave "
            "its limits for these",
            cfg.ledger.pid, rq.command[0]);
    unsetenv("MEMLIMITS_LEDGER");

    const char *command = rq.command[0];
    if (ml_resolve_command(command, resolved, sizeof resolved) == 0) {
        check_report_path(&cfg, &rq);
        rq.warned = ml_warn_unpreloadable(resolved, library) > 0;
    }
    if (cfg.verbose) say("LD_PRELOAD=%s; running %s", getenv("LD_PRELOAD"), command);
    fflush(stderr);
    if (!rq.per_process) run_tree(&rq, &cfg);

    execvp(command, rq.command);
    int status = errno == ENOENT || errno == ENOTDIR ? ML_EXIT_NOT_FOUND : ML_EXIT_CANNOT_EXEC;
    die(status, "cannot run '%s': %s", command, strerror(errno));
}
