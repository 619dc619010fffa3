/* The launcher, tools/memlimit, run in child processes (never preloaded itself) on real programs
 * and on tests/targets/launcher_*.c: limits reach python3, the budget stops it at the same
 * allocation every run, LD_PRELOAD is kept, bad input is refused without running anything, and
 * with --per-process every process of a pipeline writes its own report. Process trees (the
 * default) are tested in test_tree.c. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "child.h"
#include "memlimits.h"
#include "options.h"

#define PYTHON "/usr/bin/python3" /* Debian's, not a pyenv shim (a shell script) */

extern char **environ;

/* The runner's environment must not leak limits or preloads of its own into the children. */
static void clean_environment(void)
{
    unsetenv("LD_PRELOAD");
    unsetenv("MEMLIMIT_LIBRARY");
    for (size_t i = 0; i < ml__option_count; i++)
        unsetenv(ml__options[i].env);
}

TestSuite(launcher, .init = clean_environment);

/* ---- Helpers ----------------------------------------------------------------------------- */

static char scratch_dir[PATH_MAX];

/* A fresh temporary directory, removed by remove_scratch(). */
static const char *make_scratch(void)
{
    snprintf(scratch_dir, sizeof scratch_dir, "/tmp/ml_launcher_XXXXXX");
    cr_assert_not_null(mkdtemp(scratch_dir), "mkdtemp: %s", strerror(errno));
    return scratch_dir;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void remove_scratch(void)
{
    if (scratch_dir[0] != '\0') nftw(scratch_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    scratch_dir[0] = '\0';
}

static char *path_in(const char *dir, const char *name)
{
    char *p;
    cr_assert_geq(asprintf(&p, "%s/%s", dir, name), 0);
    return p;
}

static ml_child run(const char *const argv[], const char *const env[])
{
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 0, NULL, 60, &c), 0, "cannot start %s", argv[0]);
    return c;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (n < 0) {
        free(text);
        return strdup("");
    }
    return text;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; *text != '\0'; text++)
        n += *text == '\n';
    return n;
}

/* The integer after "key": in the object that follows `scope` (e.g. "\"alloc\":{"), or -1. */
static long long json_int(const char *doc, const char *scope, const char *key)
{
    const char *s = scope != NULL ? strstr(doc, scope) : doc;
    char pattern[64];
    if (s == NULL) return -1;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *end = strchr(s, '}');
    s = strstr(s, pattern);
    if (s == NULL || (end != NULL && s > end)) return -1;
    s += strlen(pattern);
    if (*s < '0' || *s > '9') return -1;
    return strtoll(s, NULL, 10);
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Runs `memlimit ARGS... -- touch MARKER` with `env` added to the environment and checks the
 * refusal: status 125, one line on stderr starting with `prefix` (and holding `also`, unless
 * NULL), and the command not run. */
static void refused_in(const char *const args[], const char *const env[], const char *prefix,
                       const char *also)
{
    const char *dir = make_scratch();
    char *marker = path_in(dir, "ran");
    const char *argv[16];
    size_t n = 0;
    argv[n++] = ML_TEST_LAUNCHER;
    for (size_t i = 0; args[i] != NULL; i++)
        argv[n++] = args[i];
    argv[n++] = "--";
    argv[n++] = "touch";
    argv[n++] = marker;
    argv[n] = NULL;
    ml_child c = run(argv, env);
    const char *what = args[0] != NULL ? args[0] : env[0];
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "%s %s: status %d (signal %d), want 125",
              what, args[0] && args[1] ? args[1] : "", c.status, c.signal);
    cr_expect_eq(count_lines(c.err), 1, "%s: want one line, got: %s", what, c.err);
    cr_expect(strncmp(c.err, prefix, strlen(prefix)) == 0, "want '%s...', got: %s", prefix, c.err);
    if (also != NULL) cr_expect(strstr(c.err, also) != NULL, "want '%s' in: %s", also, c.err);
    cr_expect_not(file_exists(marker), "%s: the command ran although the launcher refused", what);
    ml_child_free(&c);
    free(marker);
    remove_scratch();
}

static void refused(const char *const args[], const char *prefix)
{
    refused_in(args, NULL, prefix, NULL);
}

/* ---- A heap cap on python3 --------------------------------------------------------------- */

Test(launcher, python_under_heap_cap_gets_memory_error_and_exits_1)
{
    const char *dir = make_scratch();
    char *report = path_in(dir, "heap.json");
    char *report_arg;
    cr_assert_geq(asprintf(&report_arg, "--report=json:%s", report), 0);
    const char *argv[] = {ML_TEST_LAUNCHER,
                          "--per-process",
                          "--heap",
                          "100M",
                          report_arg,
                          "--",
                          PYTHON,
                          "-I",
                          "-c",
                          "data = [bytes(1 << 20) for _ in range(300)]",
                          NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 1, "status %d signal %d, stderr: %s", c.status, c.signal,
              c.err);
    cr_expect(strstr(c.err, "MemoryError") != NULL, "no MemoryError in: %s", c.err);

    char *doc = read_text(report);
    cr_assert_not_null(doc, "no report at %s", report);
    cr_expect_geq(count_lines(doc), 1);
    cr_expect(strstr(doc, "\"heap\":{\"bytes\":104857600,\"fired\":true") != NULL,
              "the heap cap did not fire: %s", doc);
    cr_expect_geq(json_int(doc, "\"heap\":{", "size"), 1 << 20, "not a 1 MiB object: %s", doc);
    cr_expect(strstr(doc, "\"event\":\"exit\"") != NULL, "no exit report: %s", doc);
    cr_expect(strstr(doc, "\"exit_status\":1") != NULL, "exit status not reported: %s", doc);
    free(doc);
    free(report_arg);
    free(report);
    ml_child_free(&c);
    remove_scratch();
}

Test(launcher, text_report_on_stderr_names_the_fired_cap)
{
    const char *argv[] = {ML_TEST_LAUNCHER,
                          "--per-process",
                          "--heap=100M",
                          "--report",
                          "--",
                          PYTHON,
                          "-I",
                          "-c",
                          "x = [0] * (64 << 20)",
                          NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 1, "status %d, stderr: %s", c.status, c.err);
    cr_expect(strstr(c.err, "MemoryError") != NULL, "%s", c.err);
    cr_expect(strstr(c.err, "memlimits report (exit)") != NULL, "%s", c.err);
    cr_expect(strstr(c.err, "heap cap:          100M, FIRED at allocation #") != NULL, "%s", c.err);
    ml_child_free(&c);
}

/* ---- An allocation budget is a deterministic timeout ------------------------------------- */

/* Mixed sizes and dictionaries (hashing: PYTHONHASHSEED fixes python's own randomness). */
static const char budget_script[] = "chunks = []\n"
                                    "for i in range(100000):\n"
                                    "    chunks.append(bytearray(1000 + i % 5000))\n"
                                    "    d = {str(j): j for j in range(i % 50)}\n"
                                    "print('finished')\n";

Test(launcher, alloc_budget_stops_python_at_the_same_allocation_every_run)
{
    const char *dir = make_scratch();
    const char *env[] = {"PYTHONHASHSEED=0", NULL};
    long long first_index = -1, first_size = -1, first_thread = -1;
    for (int run_no = 0; run_no < 3; run_no++) {
        char name[16], *report, *report_arg;
        snprintf(name, sizeof name, "r%d.json", run_no); /* same length: same environment size */
        report = path_in(dir, name);
        cr_assert_geq(asprintf(&report_arg, "--report=json:%s", report), 0);
        const char *argv[] = {ML_TEST_LAUNCHER,
                              "--per-process",
                              "--alloc",
                              "20M",
                              "--on-alloc",
                              "exit:42",
                              report_arg,
                              "--",
                              PYTHON,
                              "-I",
                              "-c",
                              budget_script,
                              NULL};
        ml_child c = run(argv, env);
        cr_expect(c.exited && c.status == 42, "run %d: status %d signal %d, stderr: %s", run_no,
                  c.status, c.signal, c.err);
        cr_expect(strstr(c.out, "finished") == NULL, "run %d: the budget did not stop it", run_no);
        cr_expect(strstr(c.err, "memlimits: allocation budget of 20M exceeded by allocation #") !=
                      NULL,
                  "%s", c.err);

        char *doc = read_text(report);
        cr_assert_not_null(doc, "run %d: no report", run_no);
        cr_expect(strstr(doc, "\"alloc\":{\"bytes\":20971520,\"fired\":true") != NULL, "%s", doc);
        cr_expect(strstr(doc, "\"exit_status\":42") != NULL, "%s", doc);
        long long index = json_int(doc, "\"alloc\":{", "allocation");
        long long size = json_int(doc, "\"alloc\":{", "size");
        long long thread = json_int(doc, "\"alloc\":{", "thread");
        cr_expect_gt(index, 0, "%s", doc);
        cr_expect_gt(size, 0, "%s", doc);
        if (run_no == 0) {
            first_index = index;
            first_size = size;
            first_thread = thread;
        } else {
            cr_expect_eq(index, first_index, "run %d stopped at allocation %lld, run 0 at %lld",
                         run_no, index, first_index);
            cr_expect_eq(size, first_size, "run %d: size %lld, run 0: %lld", run_no, size,
                         first_size);
            cr_expect_eq(thread, first_thread);
        }
        free(doc);
        free(report_arg);
        free(report);
        ml_child_free(&c);
    }
    remove_scratch();
}

/* ---- Environment --------------------------------------------------------------------------- */

static const char *line_value(const char *out, const char *name, char *buf, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "%s=", name);
    for (const char *s = out; s != NULL && *s != '\0'; s = strchr(s, '\n'), s = s ? s + 1 : s) {
        if (strncmp(s, key, strlen(key)) == 0) {
            s += strlen(key);
            size_t len = strcspn(s, "\n");
            snprintf(buf, cap, "%.*s", (int)len, s);
            return buf;
        }
    }
    return NULL;
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

Test(launcher, keeps_the_users_ld_preload_after_the_library)
{
    char *preload_env, target[PATH_MAX], value[PATH_MAX * 2];
    snprintf(target, sizeof target, "%s", ml_test_target("launcher_env"));
    cr_assert_geq(asprintf(&preload_env, "LD_PRELOAD=%s", ML_TEST_MARKER_LIB), 0);
    const char *env[] = {preload_env, "MEMLIMITS_SAMPLE=4096", "MEMLIMITS_HEAP=1G", NULL};
    const char *argv[] = {ML_TEST_LAUNCHER,   "--heap",          "64M", target, "MEMLIMITS_HEAP",
                          "MEMLIMITS_SAMPLE", "MEMLIMITS_ALLOC", NULL};
    ml_child c = run(argv, env);
    cr_assert(c.exited && c.status == 0, "status %d, stderr: %s", c.status, c.err);

    cr_assert_not_null(line_value(c.out, "LD_PRELOAD", value, sizeof value), "%s", c.out);
    char *colon = strchr(value, ':');
    cr_assert_not_null(colon, "LD_PRELOAD=%s: the user's entry is gone", value);
    *colon = '\0';
    cr_expect_eq(value[0], '/', "the library path must be absolute: %s", value);
    cr_expect(same_file(value, ml_test_lib()), "first entry %s is not %s", value, ml_test_lib());
    cr_expect_str_eq(colon + 1, ML_TEST_MARKER_LIB);

    cr_expect_str_eq(line_value(c.out, "ML_LAUNCHER_MARKER", value, sizeof value), "1",
                     "the user's library did not load: %s", c.out);
    cr_expect_str_eq(line_value(c.out, "ACTIVE", value, sizeof value), "1", "%s", c.out);
    /* The option overrides its variable; the user's other variables are kept; no others set. */
    cr_expect_str_eq(line_value(c.out, "MEMLIMITS_HEAP", value, sizeof value), "64M");
    cr_expect_str_eq(line_value(c.out, "MEMLIMITS_SAMPLE", value, sizeof value), "4096");
    cr_expect_str_eq(line_value(c.out, "MEMLIMITS_ALLOC", value, sizeof value), "(unset)");
    ml_child_free(&c);
    free(preload_env);
}

Test(launcher, exit_status_and_signal_are_the_commands_own)
{
    const char *exit7[] = {ML_TEST_LAUNCHER, "--heap", "64M", "sh", "-c", "exit 7", NULL};
    ml_child c = run(exit7, NULL);
    cr_expect(c.exited && c.status == 7, "status %d", c.status);
    ml_child_free(&c);

    const char *term[] = {ML_TEST_LAUNCHER, "--", "sh", "-c", "kill -TERM $$", NULL};
    c = run(term, NULL);
    cr_expect(!c.exited && c.signal == SIGTERM, "exited %d status %d signal %d", c.exited, c.status,
              c.signal);
    ml_child_free(&c);
}

Test(launcher, arguments_after_the_command_belong_to_it)
{
    const char *argv[] = {ML_TEST_LAUNCHER, "echo", "--heap", "12Q", "--", NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d, stderr: %s", c.status, c.err);
    cr_expect_str_eq(c.out, "--heap 12Q --\n");
    ml_child_free(&c);
}

/* ---- Bad input is refused, nothing runs --------------------------------------------------- */

Test(launcher, every_malformed_value_is_refused_with_125)
{
    static const char *const sizes[] = {"12Q",  "-5",   "99999999999999999999", "",   "0",
                                        "1.5M", "0x10", "17179869184G",         " 5", "5 ",
                                        "16TB", "k",    "18446744073709551615"};
    static const char *const actions[] = {"explode",  "exit:",   "exit:x",  "exit:-1",
                                          "exit:256", "exit:1x", "signal:", "signal:NOPE",
                                          "EXIT:1",   "",        "abort:1"};
    static const struct {
        const char *flag, *value;
    } others[] = {
        {"--sample", "2T"},
        {"--seed", "-1"},
        {"--seed", "abc"},
        {"--seed", ""},
        {"--seed", "18446744073709551616"},
        {"--signal", "NOPE"},
        {"--signal", "KILL"},
        {"--signal", "0"},
        {"--signal", "65"},
        {"--signal", ""},
        {"--report", ""},
        {"--report", "json:"},
        {"--verbose", "2"},
        {"--verbose", "yes"},
        {"--verbose", ""},
    };
    static const char *const size_flags[] = {"--heap", "--alloc", "--global", "--sample"};
    static const char *const action_flags[] = {"--on-heap", "--on-alloc"};

    struct {
        const char *flag, *value;
    } cases[128];
    size_t n = 0;
    for (size_t f = 0; f < 4; f++)
        for (size_t v = 0; v < sizeof sizes / sizeof sizes[0]; v++)
            cases[n].flag = size_flags[f], cases[n++].value = sizes[v];
    for (size_t f = 0; f < 2; f++)
        for (size_t v = 0; v < sizeof actions / sizeof actions[0]; v++)
            cases[n].flag = action_flags[f], cases[n++].value = actions[v];
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        cases[n].flag = others[i].flag, cases[n++].value = others[i].value;
    cr_assert_leq(n, sizeof cases / sizeof cases[0]);

    for (size_t i = 0; i < n; i++) {
        char joined[128], prefix[128];
        snprintf(joined, sizeof joined, "%s=%s", cases[i].flag, cases[i].value);
        snprintf(prefix, sizeof prefix, "memlimit: %s '%s': expected ", cases[i].flag,
                 cases[i].value);
        const char *with_equals[] = {joined, NULL};
        refused(with_equals, prefix);
        /* --report and --verbose take their value only after '=': a bare one must not eat
         * the next argument. */
        if (strcmp(cases[i].flag, "--report") == 0 || strcmp(cases[i].flag, "--verbose") == 0)
            continue;
        const char *separate[] = {cases[i].flag, cases[i].value, NULL};
        refused(separate, prefix);
    }
}

Test(launcher, launcher_usage_errors_are_refused_with_125)
{
    const char *unknown[] = {"--hepa=1M", NULL};
    refused(unknown, "memlimit: unknown option '--hepa=1M'");
    const char *json_value[] = {"--json=1", NULL};
    refused(json_value, "memlimit: --json takes no value");
    const char *json_off[] = {"--report=0", "--json", NULL};
    refused(json_off, "memlimit: --json asks for a report");
    const char *unwritable[] = {"--report=/nonexistent/dir/r.txt", NULL};
    refused(unwritable, "memlimit: --report '/nonexistent/dir/r.txt': cannot open");

    const char *missing_value[] = {ML_TEST_LAUNCHER, "--heap", NULL};
    ml_child c = run(missing_value, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d", c.status);
    cr_expect_str_eq(c.err, "memlimit: --heap: missing SIZE\n");
    ml_child_free(&c);

    const char *no_command[] = {ML_TEST_LAUNCHER, "--heap", "1M", "--", NULL};
    c = run(no_command, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d", c.status);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    cr_expect(strstr(c.err, "memlimit: no command given") == c.err, "%s", c.err);
    ml_child_free(&c);
}

Test(launcher, a_bad_variable_in_the_environment_is_refused_with_125)
{
    const char *dir = make_scratch();
    char *marker = path_in(dir, "ran");
    const char *env[] = {"MEMLIMITS_ON_HEAP=exit:", NULL};
    const char *argv[] = {ML_TEST_LAUNCHER, "--heap", "1G", "touch", marker, NULL};
    ml_child c = run(argv, env);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d", c.status);
    static const char want[] = "memlimit: in the environment: MEMLIMITS_ON_HEAP='exit:': expected ";
    cr_expect(strncmp(c.err, want, strlen(want)) == 0, "%s", c.err);
    cr_expect_eq(count_lines(c.err), 1);
    cr_expect_not(file_exists(marker));
    ml_child_free(&c);
    free(marker);
    remove_scratch();
}

Test(launcher, unusable_wake_signals_are_refused_before_anything_runs)
{
    /* Before: --signal 32 --verbose ran the command, which crashed before main printing the
     * configuration (32 has no name). */
    static const char *const bad[] = {"32",  "33", "SEGV", "SIGBUS", "8",
                                      "ILL", "5",  "STOP", "SIGKILL"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "memlimit: --signal '%s': expected ", bad[i]);
        const char *args[] = {"--verbose", "--signal", bad[i], NULL};
        refused(args, prefix);
    }
    const char *verbose[] = {"--verbose", NULL};
    const char *env[] = {"MEMLIMITS_SIGNAL=33", NULL};
    refused_in(verbose, env, "memlimit: in the environment: MEMLIMITS_SIGNAL='33': expected ",
               NULL);
    const char *action[] = {"--on-heap", "signal:SEGV", NULL};
    refused(action, "memlimit: --on-heap 'signal:SEGV': expected ");
}

Test(launcher, unknown_memlimits_variable_in_the_environment_is_refused)
{
    const char *none[] = {NULL};
    const char *typo[] = {"MEMLIMITS_HAEP=1M", NULL};
    refused_in(none, typo, "memlimit: in the environment: MEMLIMITS_HAEP='1M': expected ",
               "did you mean MEMLIMITS_HEAP?");
    const char *with_options[] = {"--heap", "1G", NULL};
    const char *lower[] = {"MEMLIMITS_on_alloc=abort", NULL};
    refused_in(with_options, lower,
               "memlimit: in the environment: MEMLIMITS_on_alloc='abort': expected ",
               "did you mean MEMLIMITS_ON_ALLOC?");
    /* Not ours: MEMLIMIT_LIBRARY (the launcher's own) and names without the underscore. */
    char *library, target[PATH_MAX], value[PATH_MAX];
    cr_assert_geq(asprintf(&library, "MEMLIMIT_LIBRARY=%s", ml_test_lib()), 0);
    snprintf(target, sizeof target, "%s", ml_test_target("launcher_env"));
    const char *env[] = {library, "MEMLIMITSX=1", NULL};
    const char *argv[] = {ML_TEST_LAUNCHER, "--", target, "MEMLIMITSX", NULL};
    ml_child c = run(argv, env);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(line_value(c.out, "ACTIVE", value, sizeof value), "1", "%s", c.out);
    ml_child_free(&c);
    free(library);
}

Test(launcher, a_library_that_is_not_libmemlimits_is_refused_before_anything_runs)
{
    const char *dir = make_scratch();
    /* The identification text in a file that is not a shared library. */
    char *text_file = path_in(dir, "libmemlimits.so");
    FILE *f = fopen(text_file, "w");
    cr_assert_not_null(f);
    fprintf(f, "memlimits-library-ident %s", ML_TEST_VERSION);
    fputc('\0', f);
    fclose(f);
    static const char jemalloc[] = "/usr/lib/" ML_TEST_MULTIARCH "/libjemalloc.so.2";
    const struct {
        const char *path, *also;
    } cases[] = {
        {"/etc/passwd", "not an ELF"},   {ML_TEST_MARKER_LIB, "not libmemlimits"},
        {ML_TEST_FOREIGN_LIB, "99.0.0"}, {ML_TEST_LAUNCHER, "not libmemlimits"},
        {text_file, "not an ELF"},       {jemalloc, "not libmemlimits"},
    };
    char *texts[6];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        texts[i] = NULL;
        if (!file_exists(cases[i].path)) continue; /* jemalloc's shared library is optional */
        char prefix[PATH_MAX + 64];
        snprintf(prefix, sizeof prefix, "memlimit: MEMLIMIT_LIBRARY='%s': ", cases[i].path);
        cr_assert_geq(asprintf(&texts[i], "MEMLIMIT_LIBRARY=%s", cases[i].path), 0);
        const char *env[] = {texts[i], NULL};
        const char *args[] = {"--heap", "1M", NULL};
        refused_in(args, env, prefix, cases[i].also);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        free(texts[i]);
    free(text_file);
    remove_scratch();
}

Test(launcher, header_version_is_the_project_version)
{
    /* The library identifies itself with MEMLIMITS_VERSION_STRING; the launcher checks it. */
    cr_assert_str_eq(MEMLIMITS_VERSION_STRING, ML_TEST_VERSION);
}

Test(launcher, control_characters_are_escaped_in_every_message)
{
    const char *value[] = {"--heap=1\n2", NULL};
    refused(value, "memlimit: --heap '1\\n2': expected ");
    const char *separate[] = {"--on-alloc", "exit:\t1", NULL};
    refused(separate, "memlimit: --on-alloc 'exit:\\t1': expected ");
    const char *option[] = {"--he\x01p=1M", NULL};
    refused(option, "memlimit: unknown option '--he\\x01p=1M'");
    const char *report[] = {"--report=/nonexistent/a\nb", NULL};
    refused(report, "memlimit: --report '/nonexistent/a\\nb': cannot open");
    const char *none[] = {NULL};
    const char *variable[] = {"MEMLIMITS_ON_HEAP=abort\n", NULL};
    refused_in(none, variable, "memlimit: in the environment: MEMLIMITS_ON_HEAP='abort\\n'", NULL);
    const char *library[] = {"MEMLIMIT_LIBRARY=/nonexistent/a\nb.so", NULL};
    refused_in(none, library, "memlimit: MEMLIMIT_LIBRARY='/nonexistent/a\\nb.so': ", NULL);

    const char *command[] = {ML_TEST_LAUNCHER, "--", "ml-no\nsuch", NULL};
    ml_child c = run(command, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_NOT_FOUND, "status %d", c.status);
    cr_expect_str_eq(c.err, "memlimit: cannot run 'ml-no\\nsuch': No such file or directory\n");
    ml_child_free(&c);
}

Test(launcher, a_report_keyword_after_a_bare_report_is_refused_with_a_hint)
{
    /* Before: "--report json -- cmd" reported to stderr and ran a command named json. */
    static const char *const words[] = {"json", "stderr", "1", "0", "json:/tmp/r.json"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "memlimit: --report '%s': expected --report=%s", words[i],
                 words[i]);
        const char *args[] = {"--report", words[i], NULL};
        refused(args, prefix);
    }
    const char *verbose[] = {"--verbose", "1", NULL};
    refused(verbose, "memlimit: --verbose '1': expected --verbose=1");

    /* Any other word is the command; "--" makes a keyword one too. */
    const char *cmd[] = {ML_TEST_LAUNCHER, "--report", "false", NULL};
    ml_child c = run(cmd, NULL);
    cr_expect(c.exited && c.status == 1, "status %d: %s", c.status, c.err);
    cr_expect(strstr(c.err, "memlimits tree report") != NULL, "%s", c.err);
    ml_child_free(&c);
    const char *dashes[] = {ML_TEST_LAUNCHER, "--report", "--", "json", NULL};
    c = run(dashes, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_NOT_FOUND, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(c.err, "memlimit: cannot run 'json': No such file or directory\n");
    ml_child_free(&c);
}

Test(launcher, limit_size_without_unit_is_refused_with_a_suggestion)
{
    const char *heap[] = {"--heap", "512", NULL};
    refused_in(heap, NULL, "memlimit: --heap '512': expected ", "512M");
    refused_in(heap, NULL, "memlimit: --heap '512': expected ", "512B");
    const char *none[] = {NULL};
    const char *env[] = {"MEMLIMITS_ALLOC=4096", NULL};
    refused_in(none, env, "memlimit: in the environment: MEMLIMITS_ALLOC='4096': expected ",
               "4096B");

    char target[PATH_MAX], value[64];
    snprintf(target, sizeof target, "%s", ml_test_target("launcher_env"));
    const char *argv[] = {ML_TEST_LAUNCHER, "--heap=512B",    "--sample",         "512", "--",
                          target,           "MEMLIMITS_HEAP", "MEMLIMITS_SAMPLE", NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(line_value(c.out, "MEMLIMITS_HEAP", value, sizeof value), "512B");
    cr_expect_str_eq(line_value(c.out, "MEMLIMITS_SAMPLE", value, sizeof value), "512");
    ml_child_free(&c);
}

Test(launcher, a_missing_command_exits_127)
{
    const char *byname[] = {ML_TEST_LAUNCHER, "--heap", "1G", "--", "ml-no-such-command", NULL};
    ml_child c = run(byname, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_NOT_FOUND, "status %d", c.status);
    cr_expect_str_eq(c.err,
                     "memlimit: cannot run 'ml-no-such-command': No such file or directory\n");
    ml_child_free(&c);

    const char *bypath[] = {ML_TEST_LAUNCHER, "/nonexistent/ml-command", NULL};
    c = run(bypath, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_NOT_FOUND, "status %d", c.status);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    ml_child_free(&c);
}

Test(launcher, a_command_that_cannot_run_exits_126)
{
    const char *dir = make_scratch();
    char *plain = path_in(dir, "not-executable");
    int fd = open(plain, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    const char *file[] = {ML_TEST_LAUNCHER, "--heap", "1G", "--", plain, NULL};
    ml_child c = run(file, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_CANNOT_EXEC, "status %d", c.status);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    cr_expect(strstr(c.err, "memlimit: cannot run '") == c.err, "%s", c.err);
    ml_child_free(&c);

    const char *directory[] = {ML_TEST_LAUNCHER, "--", dir, NULL};
    c = run(directory, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_CANNOT_EXEC, "status %d", c.status);
    ml_child_free(&c);
    free(plain);
    remove_scratch();
}

/* ---- Finding the library ------------------------------------------------------------------ */

Test(launcher, library_is_found_in_an_install_tree_and_missing_is_125)
{
    const char *dir = make_scratch();
    char *bin = path_in(dir, "bin"), *launcher = path_in(dir, "bin/memlimit");
    char *lib = path_in(dir, "lib"), *installed = path_in(dir, "lib/libmemlimits.so");
    cr_assert_eq(mkdir(bin, 0755), 0);
    cr_assert_eq(symlink(ML_TEST_LAUNCHER, launcher), 0);
    char target[PATH_MAX], value[PATH_MAX * 2];
    snprintf(target, sizeof target, "%s", ml_test_target("launcher_env"));
    const char *argv[] = {launcher, "--", target, NULL};

    /* A symlink resolves to the build tree: /proc/self/exe is the real file. */
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "%s", c.err);
    ml_child_free(&c);

    /* A copy with no library near it: 125, one line, nothing run. */
    cr_assert_eq(unlink(launcher), 0);
    char *copy_cmd;
    cr_assert_geq(asprintf(&copy_cmd, "cp '%s' '%s'", ML_TEST_LAUNCHER, launcher), 0);
    cr_assert_eq(system(copy_cmd), 0);
    c = run(argv, NULL);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d", c.status);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    cr_expect(strstr(c.err, "memlimit: cannot find libmemlimits.so") == c.err, "%s", c.err);
    cr_expect_str_eq(c.out, "");
    ml_child_free(&c);

    /* PREFIX/bin/memlimit with PREFIX/lib/libmemlimits.so. */
    cr_assert_eq(mkdir(lib, 0755), 0);
    cr_assert_eq(symlink(ml_test_lib(), installed), 0);
    c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(line_value(c.out, "LD_PRELOAD", value, sizeof value), installed);
    cr_expect_str_eq(line_value(c.out, "ACTIVE", value, sizeof value), "1");
    ml_child_free(&c);

    /* PREFIX/lib/<multiarch>/, as GNUInstallDirs lays out a /usr install on Debian. */
    if (ML_TEST_MULTIARCH[0] != '\0') {
        char *arch = path_in(lib, ML_TEST_MULTIARCH);
        char *arch_lib = path_in(arch, "libmemlimits.so");
        cr_assert_eq(unlink(installed), 0);
        cr_assert_eq(mkdir(arch, 0755), 0);
        cr_assert_eq(symlink(ml_test_lib(), arch_lib), 0);
        c = run(argv, NULL);
        cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
        cr_expect_str_eq(line_value(c.out, "LD_PRELOAD", value, sizeof value), arch_lib);
        ml_child_free(&c);
        free(arch_lib);
        free(arch);
    }

    /* MEMLIMIT_LIBRARY overrides; a wrong one is refused. */
    char *override;
    cr_assert_geq(asprintf(&override, "MEMLIMIT_LIBRARY=%s", ml_test_lib()), 0);
    const char *good_env[] = {override, NULL};
    c = run(argv, good_env);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(line_value(c.out, "LD_PRELOAD", value, sizeof value), ml_test_lib());
    ml_child_free(&c);
    const char *bad_env[] = {"MEMLIMIT_LIBRARY=/nonexistent/libmemlimits.so", NULL};
    c = run(argv, bad_env);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d", c.status);
    cr_expect_str_eq(c.err, "memlimit: MEMLIMIT_LIBRARY='/nonexistent/libmemlimits.so': No such "
                            "file or directory\n");
    cr_expect_str_eq(c.out, "");
    ml_child_free(&c);

    free(override);
    free(copy_cmd);
    free(installed);
    free(lib);
    free(launcher);
    free(bin);
    remove_scratch();
}

/* ---- --help, --version, documentation ------------------------------------------------------ */

Test(launcher, help_lists_every_option_of_the_table)
{
    const char *argv[] = {ML_TEST_LAUNCHER, "--help", NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0);
    cr_expect(strncmp(c.out, "Usage: memlimit [OPTIONS] [--] COMMAND [ARGS...]\n", 49) == 0, "%s",
              c.out);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        if (o->flag == NULL) continue;
        cr_expect(strstr(c.out, o->flag) != NULL, "--help lacks %s", o->flag);
        cr_expect(strstr(c.out, o->env) != NULL, "--help lacks %s", o->env);
        cr_expect(strstr(c.out, o->metavar) != NULL, "--help lacks %s", o->metavar);
    }
    static const char *const own[] = {"--json", "--help", "--version", "125", "126", "127",
                                      "MEMLIMIT_LIBRARY",
                                      /* the grammar of sizes and of --report */
                                      "B for bytes", "none", "--report=json"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        cr_expect(strstr(c.out, own[i]) != NULL, "--help lacks %s", own[i]);
    const char *line = c.out;
    for (const char *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1)
        cr_expect_leq(nl - line, 79, "a --help line is wider than 79 columns: %.*s",
                      (int)(nl - line), line);
    ml_child_free(&c);
}

Test(launcher, version_prints_the_version_and_the_library)
{
    const char *argv[] = {ML_TEST_LAUNCHER, "--version", NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0);
    cr_expect(strncmp(c.out, "memlimit (memlimits) " ML_TEST_VERSION "\n",
                      strlen("memlimit (memlimits) " ML_TEST_VERSION "\n")) == 0,
              "%s", c.out);
    cr_expect(strstr(c.out, "\nlibrary: /") != NULL, "%s", c.out);
    ml_child_free(&c);
}

/* The man page and the completion name every option too (roff escapes '-' as "\-"). */
Test(launcher, man_page_and_completion_name_every_option)
{
    char *man = read_text(ML_TEST_SOURCE_DIR "/tools/memlimit.1");
    char *completion = read_text(ML_TEST_SOURCE_DIR "/tools/memlimit.bash-completion");
    cr_assert_not_null(man);
    cr_assert_not_null(completion);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        char roff[64];
        size_t n = 0;
        if (o->flag == NULL) continue;
        for (const char *f = o->flag; *f != '\0' && n < sizeof roff - 3; f++) {
            if (*f == '-') roff[n++] = '\\';
            roff[n++] = *f;
        }
        roff[n] = '\0';
        cr_expect(strstr(man, roff) != NULL, "memlimit.1 lacks %s", roff);
        cr_expect(strstr(man, o->env) != NULL, "memlimit.1 lacks %s", o->env);
        cr_expect(strstr(completion, o->flag) != NULL, "completion lacks %s", o->flag);
    }
    free(man);
    free(completion);
}

/* ---- Several processes --------------------------------------------------------------------- */

Test(launcher, per_process_pipeline_writes_one_report_per_process)
{
    const char *dir = make_scratch();
    char *report = path_in(dir, "r.jsonl"), *report_arg;
    cr_assert_geq(asprintf(&report_arg, "--report=json:%s", report), 0);
    const char *argv[] = {ML_TEST_LAUNCHER,
                          "--per-process",
                          report_arg,
                          "--",
                          "sh",
                          "-c",
                          "seq 1 1000 | sort -n | tail -1",
                          NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect_str_eq(c.out, "1000\n");

    char *doc = read_text(report);
    cr_assert_not_null(doc);
    long long pids[16];
    size_t n = 0;
    for (char *line = doc; *line != '\0' && n < 16;) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "a report line is not terminated: %s", line);
        *nl = '\0';
        cr_expect(strncmp(line, "{\"memlimits_report\":2,", 22) == 0, "not a report: %s", line);
        cr_expect_eq(line[nl - line - 1], '}', "not one JSON object: %s", line);
        pids[n] = json_int(line, NULL, "pid");
        cr_expect_gt(pids[n], 0, "%s", line);
        for (size_t k = 0; k < n; k++)
            cr_expect_neq(pids[k], pids[n], "two reports from pid %lld", pids[n]);
        n++;
        line = nl + 1;
    }
    cr_expect_geq(n, 3, "%zu reports for seq, sort and tail (and sh)", n);
    free(doc);
    doc = read_text(report);
    cr_expect(strstr(doc, "\"command\":[\"sort\",\"-n\"]") != NULL, "%s", doc);
    cr_expect(strstr(doc, "\"command\":[\"tail\",\"-1\"]") != NULL, "%s", doc);
    cr_expect(strstr(doc, "\"command\":[\"seq\",\"1\",\"1000\"]") != NULL, "%s", doc);
    free(doc);
    free(report_arg);
    free(report);
    ml_child_free(&c);
    remove_scratch();
}

Test(launcher, json_goes_to_stderr_or_to_the_report_path)
{
    const char *to_stderr[] = {ML_TEST_LAUNCHER, "--per-process", "--json", "--", "true", NULL};
    ml_child c = run(to_stderr, NULL);
    cr_expect(c.exited && c.status == 0);
    cr_expect(strncmp(c.err, "{\"memlimits_report\":2,", 22) == 0, "%s", c.err);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    ml_child_free(&c);

    /* The tree's report: one document, from the launcher. */
    const char *tree[] = {ML_TEST_LAUNCHER, "--json", "--", "true", NULL};
    c = run(tree, NULL);
    cr_expect(c.exited && c.status == 0);
    cr_expect(strncmp(c.err, "{\"memlimits_tree_report\":1,", 27) == 0, "%s", c.err);
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    ml_child_free(&c);

    const char *dir = make_scratch();
    char *report = path_in(dir, "r.%p.json"), *report_arg;
    cr_assert_geq(asprintf(&report_arg, "--report=%s", report), 0);
    const char *to_file[] = {
        ML_TEST_LAUNCHER, "--per-process", report_arg, "--json", "--", "true", NULL};
    c = run(to_file, NULL);
    cr_expect(c.exited && c.status == 0, "%s", c.err);
    cr_expect_str_eq(c.err, "");
    ml_child_free(&c);
    /* %p is the pid: the one file in the directory holds the JSON report. */
    char *listing_cmd, *listing = path_in(dir, "listing");
    cr_assert_geq(asprintf(&listing_cmd, "cat %s/r.*.json > %s", dir, listing), 0);
    cr_assert_eq(system(listing_cmd), 0);
    char *doc = read_text(listing);
    cr_expect(strncmp(doc, "{\"memlimits_report\":2,", 22) == 0, "%s", doc);
    free(doc);
    free(listing_cmd);
    free(listing);
    free(report_arg);
    free(report);
    remove_scratch();
}

Test(launcher, verbose_prints_the_preload_and_the_configuration)
{
    const char *argv[] = {ML_TEST_LAUNCHER, "--verbose", "--heap", "64M", "true", NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0);
    cr_expect(strstr(c.err, "memlimit: LD_PRELOAD=/") == c.err, "%s", c.err);
    cr_expect(strstr(c.err, "MEMLIMITS_HEAP=64M") != NULL, "%s", c.err);
    ml_child_free(&c);
}

/* ---- Programs the limits cannot reach ------------------------------------------------------ */

Test(launcher, static_executable_is_run_with_a_warning)
{
#if ML_TEST_HAVE_STATIC
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s", ml_test_target("launcher_static"));
    const char *argv[] = {
        ML_TEST_LAUNCHER, "--per-process", "--heap", "1M", "--report", "--", target, NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d", c.status);
    cr_expect_str_eq(c.out, "static ok\n");
    cr_expect(strstr(c.err, "memlimit: warning: '") == c.err, "%s", c.err);
    cr_expect(strstr(c.err, "is statically linked") != NULL, "%s", c.err);
    cr_expect_eq(count_lines(c.err), 1, "a static program writes no report: %s", c.err);
    ml_child_free(&c);
#else
    cr_skip("no static C library (libc.a) at configure time: static target not built");
#endif
}

Test(launcher, setuid_executable_is_run_with_a_warning)
{
    if (geteuid() != 0) cr_skip("needs root to make a set-user-ID file owned by someone else");
    const char *dir = make_scratch();
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_NOSUID)) {
        remove_scratch();
        cr_skip("%s is on a nosuid file system", dir);
    }
    chmod(dir, 0755);
    char *copy = path_in(dir, "suid_env"), *cmd;
    cr_assert_geq(asprintf(&cmd, "cp '%s' '%s'", ml_test_target("launcher_env"), copy), 0);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(chown(copy, 65534, 65534), 0);
    cr_assert_eq(chmod(copy, 04755), 0);
    const char *argv[] = {ML_TEST_LAUNCHER, "--heap", "64M", "--", copy, NULL};
    ml_child c = run(argv, NULL);
    cr_expect(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
    cr_expect(strstr(c.err, "is set-user-ID") != NULL, "%s", c.err);
    cr_expect(strstr(c.out, "ACTIVE=-1") != NULL, "the loader preloaded anyway? %s", c.out);
    ml_child_free(&c);
    free(cmd);
    free(copy);
    remove_scratch();
}
