/* Reports (lib/report.c, README "Reports"): nothing silently dropped. The destination is opened
 * once at start and kept on private descriptors, so that a program that uses up, closes or
 * reuses its descriptors, or closes stderr, still gets its report, and a report that cannot be
 * written is said on stderr; a relative path is resolved once for a whole process tree; the JSON
 * command keeps argument boundaries. Preloaded behaviour runs tests/targets/report_*.c in child
 * processes; the forms are unit-tested in process. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "child.h"
#include "fmt.h"
#include "host.h"
#include "options.h"
#include "report.h"

/* Seconds after which a child is killed: every run takes well under a second. */
#define HANG_GUARD_S 20

/* ---- Helpers ------------------------------------------------------------------------------- */

static char scratch[PATH_MAX];

static void make_scratch(void)
{
    /* realpath: /tmp may be a symbolic link, and reports name the resolved directory. */
    char tmpl[] = "/tmp/ml-report-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    cr_assert_not_null(realpath(tmpl, scratch));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_scratch(void)
{
    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(report, .init = make_scratch, .fini = remove_scratch);

/* A path under the scratch directory; static buffer, one of four in rotation. */
static const char *in_scratch(const char *name)
{
    static char paths[4][PATH_MAX + 64];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, PATH_MAX + 64, "%s/%s", scratch, name);
    return p;
}

/* Runs target `name` preloaded, with `args` (NULL-terminated, may be NULL) and `env`. */
static void run(const char *name, const char *const *args, const char *const *env, ml_child *c)
{
    char target[4096];
    const char *argv[16] = {target};
    snprintf(target, sizeof target, "%s", ml_test_target(name));
    for (int i = 0; args != NULL && args[i] != NULL && i < 14; i++)
        argv[i + 1] = args[i];
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, c), 0, "cannot start %s", target);
}

/* The whole file at `path`, malloc'd, or NULL when there is none. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (size_t r; (r = fread(text + n, 1, cap - 1 - n, f)) > 0;) {
        n += r;
        if (n == cap - 1) text = realloc(text, cap *= 2);
    }
    fclose(f);
    text[n] = '\0';
    return text;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; text != NULL && *text != '\0'; text++)
        n += *text == '\n';
    return n;
}

/* The number after "key " in `text`, or -1. */
static long number_after(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    return at == NULL ? -1 : strtol(at + strlen(key), NULL, 10);
}

/* Asserts that `path` holds exactly `lines` JSON exit reports, each from a distinct pid. */
static void expect_reports(const char *path, size_t lines)
{
    char *text = read_text(path);
    cr_assert_not_null(text, "no report file %s", path);
    cr_expect_eq(count_lines(text), lines, "%zu reports expected in %s:\n%s", lines, path, text);
    for (const char *line = text; *line != '\0'; line = strchr(line, '\n') + 1) {
        cr_expect_eq(strncmp(line, "{\"memlimits_report\":", 20), 0, "not a report: %s", line);
        if (strchr(line, '\n') == NULL) break;
    }
    free(text);
}

static char env_report[PATH_MAX + 64];

/* The environment entry MEMLIMITS_REPORT=json:<scratch>/name. */
static const char *json_report_to(const char *name)
{
    snprintf(env_report, sizeof env_report, "MEMLIMITS_REPORT=json:%s", in_scratch(name));
    return env_report;
}

/* ---- Item: descriptors used up, closed or reused by the program ---------------------------- */

Test(report, file_report_survives_descriptors_used_up)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"exhaust", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "exhausted after"), "%s", c.out);
    expect_reports(in_scratch("r.json"), 1);
    cr_expect_eq(c.err_len, 0, "stderr: %s", c.err);
    ml_child_free(&c);
}

Test(report, file_report_survives_closefrom)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"closefrom", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    expect_reports(in_scratch("r.json"), 1);
    cr_expect_eq(c.err_len, 0, "stderr: %s", c.err);
    ml_child_free(&c);
}

Test(report, file_report_survives_its_descriptor_number_reused)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"clobber", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    expect_reports(in_scratch("r.json"), 1);
    cr_expect_eq(c.err_len, 0, "stderr: %s", c.err);
    ml_child_free(&c);
}

Test(report, file_report_removed_by_the_program_is_written_again)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"unlink", in_scratch("r.json"), NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    expect_reports(in_scratch("r.json"), 1);
    ml_child_free(&c);
}

Test(report, lost_file_report_is_said_on_stderr)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"lost", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_eq(count_lines(c.err), 1, "one line on stderr expected: '%s'", c.err);
    cr_expect_eq(strncmp(c.err, "memlimits: ", 11), 0, "%s", c.err);
    cr_expect_not_null(strstr(c.err, in_scratch("r.json")), "the path is not named: %s", c.err);
    cr_expect_not_null(strstr(c.err, "lost"), "%s", c.err);
    ml_child_free(&c);
}

Test(report, private_descriptors_leave_the_low_numbers_to_the_program)
{
    const char *file_env[] = {json_report_to("r.json"), NULL};
    const char *stderr_env[] = {"MEMLIMITS_REPORT=1", NULL};
    const char *const *envs[] = {file_env, stderr_env};
    const char *args[] = {"lowfd", NULL};
    for (int i = 0; i < 2; i++) {
        ml_child c;
        run("report_fds", args, envs[i], &c);
        cr_assert(c.exited && c.status == 0, "status %d: %s", c.status, c.err);
        cr_expect_not_null(strstr(c.out, "lowfd 3\n"), "%s: %s", envs[i][0], c.out);
        ml_child_free(&c);
    }
}

Test(report, forked_child_writes_its_own_percent_p_file)
{
    const char *env[] = {json_report_to("r.%p.json"), NULL};
    const char *args[] = {"fork", NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    long pids[2] = {number_after(c.out, "child "), number_after(c.out, "parent ")};
    for (int i = 0; i < 2; i++) {
        char name[64], pid_key[64];
        snprintf(name, sizeof name, "r.%ld.json", pids[i]);
        snprintf(pid_key, sizeof pid_key, "\"pid\":%ld,", pids[i]);
        char *text = read_text(in_scratch(name));
        cr_assert_not_null(text, "no %s", in_scratch(name));
        cr_expect_eq(count_lines(text), 1, "%s", text);
        cr_expect_not_null(strstr(text, pid_key), "%s", text);
        free(text);
    }
    ml_child_free(&c);
}

/* ---- Item: a report to stderr when the program closes stderr ------------------------------- */

Test(report, stderr_report_survives_a_program_closing_stderr)
{
    const char *env[] = {"MEMLIMITS_REPORT=1", NULL};
    const char *args[] = {"close-stderr", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.err, "memlimits report (exit)"), "no report: '%s'", c.err);
    ml_child_free(&c);
}

Test(report, stderr_report_of_cat_arrives)
{
    /* cat closes stdout and stderr at exit (gnulib's close_stdout), before the report. */
    const char *argv[] = {"cat", "/dev/null", NULL};
    const char *env[] = {"MEMLIMITS_REPORT=json", NULL};
    ml_child c;
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, HANG_GUARD_S, &c), 0);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_eq(strncmp(c.err, "{\"memlimits_report\":", 20), 0, "no report: '%s'", c.err);
    ml_child_free(&c);
}

Test(report, stderr_report_survives_closefrom)
{
    const char *env[] = {"MEMLIMITS_REPORT=1", NULL};
    const char *args[] = {"closefrom", NULL};
    ml_child c;
    run("report_fds", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.err, "memlimits report (exit)"), "no report: '%s'", c.err);
    ml_child_free(&c);
}

/* ---- Item: the command, as an array ---------------------------------------------------------- */

/* Arguments that joining with spaces would merge or that need escapes in JSON. */
static const char *const awkward_args[] = {"leaf",        "a b",  "",         "q\"b\\s",
                                           "t\tn\nc\x01", "\xff", "\xc3\xa9", NULL};

Test(report, json_command_is_an_array_of_the_arguments)
{
    const char *env[] = {"MEMLIMITS_REPORT=json", NULL};
    ml_child c;
    run("report_tree", awkward_args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_eq(strncmp(c.err, "{\"memlimits_report\":2,", 22), 0, "%s", c.err);
    char expected[4096];
    snprintf(expected, sizeof expected,
             "\"command\":[\"%s\",\"leaf\",\"a b\",\"\",\"q\\\"b\\\\s\",\"t\\tn\\nc\\u0001\","
             "\"\\ufffd\",\"\xc3\xa9\"],\"command_truncated\":false,",
             ml_test_target("report_tree"));
    cr_expect_not_null(strstr(c.err, expected), "expected %s in\n%s", expected, c.err);
    ml_child_free(&c);
}

Test(report, text_command_is_one_shell_quoted_line)
{
    const char *env[] = {"MEMLIMITS_REPORT=1", NULL};
    ml_child c;
    run("report_tree", awkward_args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    char expected[4096];
    snprintf(expected, sizeof expected,
             ", command: %s leaf 'a b' '' 'q\"b\\s' $'t\\tn\\nc\\x01' $'\\xff' '\xc3\xa9'\n",
             ml_test_target("report_tree"));
    cr_expect_not_null(strstr(c.err, expected), "expected %s in\n%s", expected, c.err);
    ml_child_free(&c);
}

/* ---- Item: a relative path, resolved once for the whole tree ------------------------------- */

Test(report, relative_path_is_resolved_once_for_the_tree)
{
    cr_assert_eq(chdir(scratch), 0);
    cr_assert_eq(mkdir("elsewhere", 0755), 0);
    const char *env[] = {"MEMLIMITS_REPORT=json:r.json", NULL};
    const char *args[] = {"spawn", "elsewhere", NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "child status 0\n"), "%s", c.out);
    char seen[PATH_MAX + 64];
    snprintf(seen, sizeof seen, "MEMLIMITS_REPORT=json:%s\n", in_scratch("r.json"));
    cr_expect_not_null(strstr(c.out, seen), "the child does not see %s:\n%s", seen, c.out);
    expect_reports(in_scratch("r.json"), 2);
    cr_expect_null(read_text(in_scratch("elsewhere/r.json")), "a report in the child's directory");
    ml_child_free(&c);
}

Test(report, child_in_a_directory_it_cannot_write_still_runs)
{
    cr_assert_eq(chdir(scratch), 0);
    const char *env[] = {"MEMLIMITS_REPORT=json:r.json", NULL};
    const char *args[] = {"spawn", "/proc", NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "leaf ran"), "%s\n%s", c.out, c.err);
    cr_expect_not_null(strstr(c.out, "child status 0\n"), "%s\n%s", c.out, c.err);
    expect_reports(in_scratch("r.json"), 2);
    ml_child_free(&c);
}

Test(report, child_exec_with_mains_envp_gets_the_absolute_path)
{
    cr_assert_eq(chdir(scratch), 0);
    cr_assert_eq(mkdir("elsewhere", 0755), 0);
    const char *env[] = {"MEMLIMITS_REPORT=json:r.json", NULL};
    const char *args[] = {"envp", "elsewhere", NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "child status 0\n"), "%s", c.out);
    expect_reports(in_scratch("r.json"), 2);
    ml_child_free(&c);
}

Test(report, first_process_refuses_a_relative_path_it_cannot_open)
{
    cr_assert_eq(chdir("/proc"), 0);
    const char *env[] = {"MEMLIMITS_REPORT=json:r.json", NULL};
    ml_child c;
    run("report_fds", NULL, env, &c);
    cr_expect(c.exited && c.status == ML_EXIT_CONFIG, "status %d signal %d", c.status, c.signal);
    cr_expect_null(strstr(c.out, "main ran"), "main ran");
    cr_expect_eq(count_lines(c.err), 1, "%s", c.err);
    cr_expect_not_null(strstr(c.err, "MEMLIMITS_REPORT='json:r.json'"), "%s", c.err);
    ml_child_free(&c);
}

Test(report, child_runs_when_the_inherited_destination_is_gone)
{
    cr_assert_eq(mkdir(in_scratch("sub"), 0755), 0);
    const char *env[] = {json_report_to("sub/r.json"), NULL};
    const char *args[] = {"orphan", in_scratch("sub"), in_scratch("sub/r.json"), NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "leaf ran"), "%s\n%s", c.out, c.err);
    cr_expect_not_null(strstr(c.out, "child status 0\n"), "%s\n%s", c.out, c.err);
    /* The leaf says that it runs without its report; then both reports are said lost. */
    long leaf = number_after(c.out, "leaf ran, pid ");
    char leaf_pid[64];
    snprintf(leaf_pid, sizeof leaf_pid, "pid %ld", leaf);
    cr_expect_not_null(strstr(c.err, leaf_pid), "the leaf says nothing: %s", c.err);
    for (const char *line = c.err; *line != '\0'; line = strchr(line, '\n') + 1) {
        cr_expect_eq(strncmp(line, "memlimits: ", 11), 0, "%s", c.err);
        cr_expect_not_null(strstr(line, in_scratch("sub/r.json")), "%s", line);
        if (strchr(line, '\n') == NULL) break;
    }
    ml_child_free(&c);
}

Test(report, changed_destination_is_checked_by_the_first_process_to_see_it)
{
    const char *env[] = {json_report_to("r.json"), NULL};
    const char *args[] = {"setenv", "json:/proc/no/r.json", "/", NULL};
    ml_child c;
    run("report_tree", args, env, &c);
    cr_assert(c.exited && c.status == 0, "status %d signal %d: %s", c.status, c.signal, c.err);
    cr_expect_not_null(strstr(c.out, "child status 125\n"), "%s\n%s", c.out, c.err);
    cr_expect_null(strstr(c.out, "leaf ran"), "%s", c.out);
    ml_child_free(&c);
}

/* ---- In process: the forms of the command line ---------------------------------------------- */

/* The JSON array of a /proc/self/cmdline-like buffer of `len` bytes. Static buffer. */
static const char *json_of(const char *cmdline, size_t len)
{
    static char out[4096];
    ml_buf b = {out, sizeof out - 1, 0, 0};
    ml__report_command_json(&b, cmdline, len);
    out[b.len] = '\0';
    return out;
}

static const char *text_of(const char *cmdline, size_t len)
{
    static char out[4096];
    ml_buf b = {out, sizeof out - 1, 0, 0};
    ml__report_command_text(&b, cmdline, len);
    out[b.len] = '\0';
    return out;
}

/* A literal and its length without the NUL that C adds: the NULs written in it end the
 * arguments, as the kernel lays argv out. */
#define CMDLINE(s) s, sizeof(s) - 1

Test(report, json_command_keeps_argument_boundaries)
{
    cr_expect_str_eq(json_of(CMDLINE("prog\0a b\0\0c\0")), "[\"prog\",\"a b\",\"\",\"c\"]");
    cr_expect_str_eq(json_of(CMDLINE("")), "[]");
    cr_expect_str_eq(json_of(CMDLINE("\0")), "[\"\"]");
    /* A program that rewrote its argv area may leave the last NUL out. */
    cr_expect_str_eq(json_of(CMDLINE("prog\0last")), "[\"prog\",\"last\"]");
}

Test(report, json_command_escapes_quotes_backslashes_and_control_bytes)
{
    cr_expect_str_eq(json_of(CMDLINE("q\"b\\s\0")), "[\"q\\\"b\\\\s\"]");
    cr_expect_str_eq(json_of(CMDLINE("\n\t\r\b\x01\x1f\x7f\0")),
                     "[\"\\n\\t\\r\\u0008\\u0001\\u001f\x7f\"]");
}

Test(report, json_command_keeps_utf8_and_replaces_other_bytes)
{
    /* é, €, U+1F600, U+10FFFF: kept as they are. */
    cr_expect_str_eq(json_of(CMDLINE("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\0")),
                     "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"]");
    /* A lone byte, an overlong '/', a surrogate, above U+10FFFF, a sequence cut short: one
     * U+FFFD per byte, and the bytes after them are read again from the start. */
    cr_expect_str_eq(json_of(CMDLINE("\xff\0")), "[\"\\ufffd\"]");
    cr_expect_str_eq(json_of(CMDLINE("\xc0\xaf\0")), "[\"\\ufffd\\ufffd\"]");
    cr_expect_str_eq(json_of(CMDLINE("\xed\xa0\x80\0")), "[\"\\ufffd\\ufffd\\ufffd\"]");
    cr_expect_str_eq(json_of(CMDLINE("\xf4\x90\x80\x80\0")), "[\"\\ufffd\\ufffd\\ufffd\\ufffd\"]");
    cr_expect_str_eq(json_of(CMDLINE("\xe2\x82x\0")), "[\"\\ufffd\\ufffdx\"]");
    cr_expect_str_eq(json_of(CMDLINE("a\xe2\x82")), "[\"a\\ufffd\\ufffd\"]");
}

Test(report, text_command_quotes_only_the_arguments_that_need_it)
{
    cr_expect_str_eq(text_of(CMDLINE("/bin/prog\0-x=1,2\0a@b:c%d+e_f\0")),
                     "/bin/prog -x=1,2 a@b:c%d+e_f");
    cr_expect_str_eq(text_of(CMDLINE("p\0a b\0\0*\0~\0$HOME\0it's\0")),
                     "p 'a b' '' '*' '~' '$HOME' 'it'\\''s'");
    cr_expect_str_eq(text_of(CMDLINE("p\0\xc3\xa9\0")), "p '\xc3\xa9'");
    cr_expect_str_eq(text_of(CMDLINE("p\0a\nb\0it's\x7f\0\xff\\\0")),
                     "p $'a\\nb' $'it\\'s\\x7f' $'\\xff\\\\'");
    cr_expect_str_eq(text_of(CMDLINE("")), "");
}

/* ---- In process: resolving the destination --------------------------------------------------- */

Test(report, absolute_path_keeps_the_directorys_percent_signs)
{
    char out[64];
    cr_expect_eq(ml__report_absolute("r.%p.json", "/tmp/100%p", out, sizeof out), 0);
    cr_expect_str_eq(out, "/tmp/100%%p/r.%p.json");
    cr_expect_eq(ml__report_absolute("r", "/", out, sizeof out), 0);
    cr_expect_str_eq(out, "/r");
    cr_expect_eq(ml__report_absolute("sub/r", "/a", out, sizeof out), 0);
    cr_expect_str_eq(out, "/a/sub/r");
    /* The result and its NUL must fit. */
    cr_expect_eq(ml__report_absolute("r", "/12345", out, 9), 0);
    cr_expect_str_eq(out, "/12345/r");
    cr_expect_eq(ml__report_absolute("r", "/123456", out, 9), -1);
}

/* Loads the configuration from the environment and sets the report up, as init does. */
static int setup_from_environment(char *err, size_t errcap)
{
    static ml_config cfg;
    cr_assert_eq(ml__config_load(&cfg, ml__getenv, err, errcap), 0, "%s", err);
    return ml__report_setup(&cfg, err, errcap);
}

Test(report, setup_publishes_the_absolute_path_and_its_mark)
{
    char err[1024], expected[PATH_MAX + 64];
    cr_assert_eq(chdir(scratch), 0);
    cr_assert_eq(setenv("MEMLIMITS_REPORT", "json:r.%p.json", 1), 0);
    unsetenv(ML_REPORT_RESOLVED_ENV);
    cr_assert_eq(setup_from_environment(err, sizeof err), 0, "%s", err);
    snprintf(expected, sizeof expected, "json:%s/r.%%p.json", scratch);
    cr_expect_str_eq(getenv("MEMLIMITS_REPORT"), expected);
    cr_expect_str_eq(getenv(ML_REPORT_RESOLVED_ENV), expected);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/r.%d.json", scratch, (int)getpid());
    cr_expect_eq(access(path, F_OK), 0, "%s was not created at setup", path);
}

Test(report, setup_refuses_only_a_destination_no_ancestor_resolved)
{
    char err[1024];
    cr_assert_eq(setenv("MEMLIMITS_REPORT", "json:/proc/no/r.json", 1), 0);
    unsetenv(ML_REPORT_RESOLVED_ENV);
    cr_expect_eq(setup_from_environment(err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "MEMLIMITS_REPORT='json:/proc/no/r.json'"), "%s", err);
    cr_expect_null(strchr(err, '\n'), "%s", err);

    /* The mark of another value does not count: only the one published with this value. */
    cr_assert_eq(setenv(ML_REPORT_RESOLVED_ENV, "json:/tmp/other.json", 1), 0);
    cr_expect_eq(setup_from_environment(err, sizeof err), -1);
    /* Resolved by an ancestor: this process runs on, and says so in one line on stderr. */
    cr_assert_eq(setenv(ML_REPORT_RESOLVED_ENV, "json:/proc/no/r.json", 1), 0);
    FILE *said = tmpfile();
    cr_assert_not_null(said);
    int saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(said), STDERR_FILENO);
    int result = setup_from_environment(err, sizeof err);
    dup2(saved_stderr, STDERR_FILENO);
    cr_expect_eq(result, 0, "%s", err);
    char line[1024] = "";
    rewind(said);
    cr_expect_not_null(fgets(line, sizeof line, said));
    cr_expect_not_null(strstr(line, "MEMLIMITS_REPORT='json:/proc/no/r.json'"), "%s", line);
    cr_expect_not_null(strstr(line, "runs on"), "%s", line);
    cr_expect_null(fgets(line, sizeof line, said), "a second line: %s", line);
    fclose(said);
}
