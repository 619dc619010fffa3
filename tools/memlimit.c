/* memlimit, the launcher: runs a command with libmemlimits.so preloaded and MEMLIMITS_* set from
 * its options, then gets out of the way with exec, so that the exit status and the signals are
 * the command's own. Its options are the rows of the options table (lib/options.c), checked by
 * the same parsers as the variables; its own failures print one line, exit 125, 126 or 127, and
 * never run the command. It links options.c, fmt.c and host.c only: no engine, no constructor. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"
#include "options.h"

#ifndef ML_VERSION
#define ML_VERSION "unknown"
#endif

/* Table flags whose value may be left out, and what the bare flag means. These take a value only
 * in the "--flag=VALUE" form, so that a bare flag never swallows the command after it. */
static const struct {
    const char *flag, *bare;
} optional_values[] = {
    {"--report", "stderr"},
    {"--verbose", "1"},
};

/* What the command line asked for: per row of ml__options[], the text given or NULL. */
typedef struct request {
    const char **value;
    int json;
    char **command;
} request;

static ML_COLD __attribute__((noreturn, format(printf, 2, 3))) void die(int status,
                                                                        const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    fputs("memlimit: ", stderr);
    vfprintf(stderr, format, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

/* A value echoed in a message, with control characters shown as '?' so that the message
 * stays on one line. Returns a static buffer. */
static const char *shown(const char *text)
{
    static char buf[256];
    size_t i;
    for (i = 0; text[i] != '\0' && i < sizeof buf - 4; i++)
        buf[i] = (unsigned char)text[i] < 0x20 ? '?' : text[i];
    if (text[i] != '\0') {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static const char *bare_value(const char *flag)
{
    for (size_t i = 0; i < sizeof optional_values / sizeof optional_values[0]; i++)
        if (strcmp(optional_values[i].flag, flag) == 0) return optional_values[i].bare;
    return NULL;
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
           "Each option sets the environment variable shown with it; its value follows\n"
           "after '=' or as the next argument (options shown with [=...] take only the\n"
           "'=' form).\n\n"
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
    print_entry("--json", "write the report as JSON Lines: to stderr, or to the file given by "
                          "--report=PATH [MEMLIMITS_REPORT=json or json:PATH]");
    print_entry("-h, --help", "print this help and exit");
    print_entry("-V, --version", "print the version and the library found, and exit");
    printf("\n"
           "SIZE is a byte count with an optional K, M, G or T suffix (powers of 1024).\n"
           "ACTION is enomem, abort, exit:N or signal:NAME. In a report PATH, %%p stands\n"
           "for the pid. Every process started under memlimit writes its own report; in a\n"
           "file, each is appended with a single write (JSON: one line per report).\n\n"
           "Exit status: the status of COMMAND, or\n"
           "  %d  the allocation budget was exceeded (the default --on-alloc action)\n"
           "  %d  memlimit failed: invalid option or variable, no command, no library\n"
           "  %d  COMMAND was found but could not be run\n"
           "  %d  COMMAND was not found\n\n"
           "libmemlimits.so is found from the launcher's own location, in the build tree\n"
           "or the install tree; MEMLIMIT_LIBRARY=PATH overrides. It is prepended to\n"
           "LD_PRELOAD. Statically linked and set-user-ID programs cannot be preloaded:\n"
           "memlimit warns and runs them without limits. See memlimit(1).\n",
           ML_EXIT_ALLOC_BUDGET, ML_EXIT_CONFIG, ML_EXIT_CANNOT_EXEC, ML_EXIT_NOT_FOUND);
}

static void print_version(void)
{
    char library[PATH_MAX], why[PATH_MAX + 256];
    printf("memlimit (memlimits) %s\n", ML_VERSION);
    if (ml_locate_library(library, sizeof library, why, sizeof why) == 0)
        printf("library: %s\n", library);
    else
        printf("library: not found: %s\n", why);
}

/* ---- Options ----------------------------------------------------------------------------- */

/* Checks `text` with the row's own parser, as the library will when it reads the variable. */
static void check_value(const ml_option *o, const char *text)
{
    ml_config scratch;
    const char *expected = "a valid value";
    ml__config_defaults(&scratch);
    if (o->parse(text, (char *)&scratch + o->offset, &expected) != 0)
        die(ML_EXIT_CONFIG, "%s '%s': expected %s", o->flag, shown(text), expected);
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
        if (strcmp(arg, "--json") == 0) {
            rq->json = 1;
            continue;
        }
        if (strncmp(arg, "--json=", 7) == 0) die(ML_EXIT_CONFIG, "--json takes no value");
        const char *eq = strchr(arg, '=');
        size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        int row = row_of_flag(arg, len);
        if (row < 0) die(ML_EXIT_CONFIG, "unknown option '%s' (see memlimit --help)", shown(arg));
        const ml_option *o = &ml__options[row];
        const char *text = eq != NULL ? eq + 1 : bare_value(o->flag);
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
        die(ML_EXIT_CONFIG, "--json asks for a report, but --report '%s' turns it off",
            shown(text));
    if (scratch.report.path[0] == '\0')
        snprintf(buf, cap, "json");
    else
        snprintf(buf, cap, "json:%s", scratch.report.path);
    rq->value[row] = buf;
}

static const char *getenv_const(const char *name)
{
    return getenv(name);
}

/* Sets the variables the options gave and LD_PRELOAD, then checks the whole configuration the
 * library will read (the user's own MEMLIMITS_* included) with the library's loader. */
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
    if (ml__config_load(&cfg, getenv_const, err, sizeof err) != 0) {
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
    char path[PATH_MAX];
    size_t n = 0;
    for (const char *s = cfg->report.path; *s != '\0' && n < sizeof path - 24; s++) {
        if (s[0] == '%' && s[1] == 'p') {
            n += (size_t)snprintf(path + n, sizeof path - n, "%d", (int)getpid());
            s++;
        } else {
            if (s[0] == '%' && s[1] == '%') s++;
            path[n++] = *s;
        }
    }
    path[n] = '\0';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
        return;
    }
    const char *reason = strerror(errno);
    int row = row_of_env("MEMLIMITS_REPORT");
    int from_flag = row >= 0 && rq->value[row] != NULL;
    die(ML_EXIT_CONFIG, "%s '%s': cannot open for appending: %s",
        from_flag ? "--report" : "MEMLIMITS_REPORT", shown(cfg->report.path), reason);
}

int main(int argc, char **argv)
{
    request rq = {0};
    char json_value[600], library[PATH_MAX], why[PATH_MAX + 256], resolved[PATH_MAX];

    rq.value = calloc(ml__option_count, sizeof *rq.value);
    if (rq.value == NULL) die(ML_EXIT_CONFIG, "out of memory");
    parse_options(argc, argv, &rq);
    if (rq.command[0] == NULL)
        die(ML_EXIT_CONFIG, "no command given (usage: memlimit [OPTIONS] [--] COMMAND [ARGS...])");
    apply_json(&rq, json_value, sizeof json_value);
    if (ml_locate_library(library, sizeof library, why, sizeof why) != 0)
        die(ML_EXIT_CONFIG, "%s", why);
    ml_config cfg = export_environment(&rq, library);

    const char *command = rq.command[0];
    if (ml_resolve_command(command, resolved, sizeof resolved) == 0) {
        check_report_path(&cfg, &rq);
        ml_warn_unpreloadable(resolved, library);
    }
    if (cfg.verbose)
        fprintf(stderr, "memlimit: LD_PRELOAD=%s; running %s\n", getenv("LD_PRELOAD"), command);
    fflush(stderr);

    execvp(command, rq.command);
    int status = errno == ENOENT || errno == ENOTDIR ? ML_EXIT_NOT_FOUND : ML_EXIT_CANNOT_EXEC;
    die(status, "cannot run '%s': %s", shown(command), strerror(errno));
}
