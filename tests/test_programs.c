/* Real programs run preloaded produce the same output as without memlimits (design.md
 * "Robustness requirements"): python3 with threads, perl, sort, a C compile, git. Each program
 * runs twice in a child process, without and with LD_PRELOAD; the preloaded run also writes a
 * JSON report per process (MEMLIMITS_REPORT=json:PATH), which must show that memlimits was active
 * in the program itself, so that a run the preload silently missed cannot pass. Inputs are
 * generated deterministically into a temporary directory, removed afterwards. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "child.h"

#define TIMEOUT_S 90
#define MAX_ENV 16

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/ml-programs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    if (dir[0] != '\0') nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/name, in a static ring of buffers (a few may be in use at once). */
static const char *in_dir(const char *name)
{
    static char paths[8][256];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    char *text = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = 2 * cap + 65536 + 1;
            text = realloc(text, cap);
            cr_assert_not_null(text);
        }
        size_t got = fread(text + n, 1, 65536, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    text[n] = '\0';
    if (len != NULL) *len = n;
    return text;
}

/* Runs argv (with `env`, may be NULL) and asserts that it exited with status 0. `preload`: with
 * memlimits and a JSON report appended to dir/report.jsonl. */
static void run(const char *const argv[], const char *const env[], int preload, ml_child *c)
{
    const char *all[MAX_ENV + 2] = {0};
    char report[300];
    int n = 0;
    for (; env != NULL && env[n] != NULL; n++) {
        cr_assert_lt(n, MAX_ENV);
        all[n] = env[n];
    }
    if (preload) {
        snprintf(report, sizeof report, "MEMLIMITS_REPORT=json:%s", in_dir("report.jsonl"));
        all[n++] = report;
    }
    cr_assert_eq(ml_child_run(argv, all, preload, NULL, TIMEOUT_S, c), 0, "cannot start %s",
                 argv[0]);
    cr_assert(c->exited && c->status == 0,
              "%s (%s): %s %d (a timeout of %d s kills with signal 9)\nstderr:\n%s", argv[0],
              preload ? "preloaded" : "plain",
              c->exited ? "exited with status" : "killed by signal",
              c->exited ? c->status : c->signal, TIMEOUT_S, c->err);
}

/* Runs argv without and with memlimits and asserts identical standard output. */
static void run_same(const char *const argv[], const char *const env[])
{
    ml_child plain, pre;
    run(argv, env, 0, &plain);
    run(argv, env, 1, &pre);
    cr_assert_gt(plain.out_len, 0, "%s printed nothing", argv[0]);
    cr_assert(plain.out_len == pre.out_len && memcmp(plain.out, pre.out, plain.out_len) == 0,
              "%s: output differs under memlimits (%zu vs %zu bytes)\nplain:\n%.2000s\n"
              "preloaded:\n%.2000s\nstderr:\n%s",
              argv[0], plain.out_len, pre.out_len, plain.out, pre.out, pre.err);
    ml_child_free(&plain);
    ml_child_free(&pre);
}

/* Whether a report line's command (the process's arguments, an array) runs the program `name`. */
static int command_is(const char *line, const char *name)
{
    const char *cmd = strstr(line, "\"command\":[\"");
    if (cmd == NULL) return 0;
    cmd += strlen("\"command\":[\"");
    size_t len = strcspn(cmd, "\"");
    const char *base = cmd;
    for (size_t i = 0; i < len; i++)
        if (cmd[i] == '/') base = cmd + i + 1;
    return (size_t)(cmd + len - base) == strlen(name) && strncmp(base, name, strlen(name)) == 0;
}

/* Asserts that the preloaded runs' reports show memlimits active in every process that reported,
 * and that at least one of them ran the program `name`. */
static void assert_active(const char *name)
{
    char *text = read_file(in_dir("report.jsonl"), NULL);
    cr_assert_not_null(text, "no report: memlimits did not run in %s", name);
    int lines = 0, found = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        lines++;
        cr_assert_not_null(strstr(line, "\"active\":true"), "memlimits not active: %s", line);
        found += command_is(line, name);
    }
    cr_log_info("%s: %d process report(s), %d of them %s", name, lines, found, name);
    cr_assert_gt(found, 0, "no report from %s among %d", name, lines);
    free(text);
}

/* Deterministic pseudo-random numbers for generated inputs. */
static uint64_t next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

TestSuite(programs, .init = make_dir, .fini = remove_dir);

Test(programs, python3_threads_output_unchanged)
{
    static const char script[] =
        "import hashlib, threading\n"
        "results = [None] * 8\n"
        "def work(i):\n"
        "    d = {}\n"
        "    for j in range(30000):\n"
        "        d['k%d' % ((j * 7919 + i) % 10007)] = [j, str(j * i), (j, i), {'n': j}]\n"
        "    items = sorted((k, v[0], v[1]) for k, v in d.items())\n"
        "    digest = hashlib.sha256(repr(items).encode()).hexdigest()\n"
        "    results[i] = (i, len(d), sum(v[0] for v in d.values()), digest)\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "for r in results: print(*r)\n"
        "print('total', sum(r[2] for r in results))\n";
    write_file(in_dir("threads.py"), script, sizeof script - 1);
    const char *argv[] = {"/usr/bin/python3", "-I", in_dir("threads.py"), NULL};
    const char *env[] = {"PYTHONHASHSEED=0", NULL};
    run_same(argv, env);
    assert_active("python3");
}

Test(programs, perl_hashes_and_sorting_output_unchanged)
{
    const char *argv[] = {
        "perl", "-e",
        "my %h; for my $i (1 .. 100000) { $h{'key' . ($i * 7919 % 100003)} .= \"$i,\"; }"
        "my @k = sort { length($h{$b}) <=> length($h{$a}) || $a cmp $b } keys %h;"
        "print scalar(@k), \"\\n\"; print \"$_ \", length($h{$_}), \"\\n\" for @k[0 .. 99];"
        "my $s = 0; $s += length($h{$_}) for @k; print \"$s\\n\";"
        "my @n = sort { $a <=> $b } map { ($_ * 104729) % 1000003 } 1 .. 100000;"
        "print join(',', @n[0 .. 20]), \"\\n\";",
        NULL};
    run_same(argv, NULL);
    assert_active("perl");
}

Test(programs, sort_of_200k_lines_output_unchanged)
{
    enum { LINES = 200000 };
    size_t cap = (size_t)LINES * 34, len = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    uint64_t rng = 42;
    for (int i = 0; i < LINES; i++) {
        int n = 1 + (int)(next_random(&rng) % 30);
        for (int j = 0; j < n; j++)
            text[len++] = (char)('a' + next_random(&rng) % 26);
        len += (size_t)sprintf(text + len, " %u\n", (unsigned)(next_random(&rng) % 1000));
    }
    write_file(in_dir("lines.txt"), text, len);
    free(text);
    const char *argv[] = {"/usr/bin/sort", in_dir("lines.txt"), NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    ml_child plain;
    run(argv, env, 0, &plain);
    cr_assert_eq(plain.out_len, len, "sort lost lines");
    ml_child_free(&plain);
    run_same(argv, env);
    assert_active("sort");
}

Test(programs, cc_compile_unchanged)
{
    static const char source[] =
        "#include <stdio.h>\n"
        "#include <stdlib.h>\n"
        "#include <string.h>\n"
        "#define N 1000\n"
        "struct item { unsigned key; char name[16]; };\n"
        "static int by_key(const void *a, const void *b)\n"
        "{\n"
        "    const struct item *x = a, *y = b;\n"
        "    return (x->key > y->key) - (x->key < y->key);\n"
        "}\n"
        "int main(void)\n"
        "{\n"
        "    struct item *items = malloc(N * sizeof *items);\n"
        "    unsigned state = 1, sum = 0;\n"
        "    for (int i = 0; i < N; i++) {\n"
        "        state = state * 1103515245u + 12345u;\n"
        "        items[i].key = state >> 8;\n"
        "        snprintf(items[i].name, sizeof items[i].name, \"item%d\", i);\n"
        "    }\n"
        "    qsort(items, N, sizeof *items, by_key);\n"
        "    for (int i = 0; i < N; i++) sum = sum * 31u + items[i].key + "
        "(unsigned)strlen(items[i].name);\n"
        "    printf(\"%s %s %u\\n\", items[0].name, items[N - 1].name, sum);\n"
        "    free(items);\n"
        "    return 0;\n"
        "}\n";
    write_file(in_dir("prog.c"), source, sizeof source - 1);
    const char *prog_c = in_dir("prog.c");

    /* The preprocessor's output. */
    const char *preprocess[] = {"cc", "-E", prog_c, NULL};
    run_same(preprocess, NULL);

    /* A whole compile and link (driver, cc1, as, collect2, ld): the same executable. */
    char plain_exe[256], pre_exe[256];
    snprintf(plain_exe, sizeof plain_exe, "%s", in_dir("prog-plain"));
    snprintf(pre_exe, sizeof pre_exe, "%s", in_dir("prog-preloaded"));
    ml_child c;
    run((const char *[]){"cc", "-O2", "-o", plain_exe, prog_c, NULL}, NULL, 0, &c);
    ml_child_free(&c);
    run((const char *[]){"cc", "-O2", "-o", pre_exe, prog_c, NULL}, NULL, 1, &c);
    ml_child_free(&c);
    size_t plain_len, pre_len;
    char *plain_bin = read_file(plain_exe, &plain_len);
    char *pre_bin = read_file(pre_exe, &pre_len);
    cr_assert_not_null(plain_bin);
    cr_assert_not_null(pre_bin);
    cr_assert(plain_len == pre_len && memcmp(plain_bin, pre_bin, plain_len) == 0,
              "the executable compiled under memlimits differs (%zu vs %zu bytes)", pre_len,
              plain_len);
    free(plain_bin);
    free(pre_bin);

    /* And it behaves the same (run without memlimits). */
    ml_child a, b;
    run((const char *[]){plain_exe, NULL}, NULL, 0, &a);
    run((const char *[]){pre_exe, NULL}, NULL, 0, &b);
    cr_assert_str_eq(a.out, b.out);
    cr_assert_not_null(strstr(a.out, "item"), "%s", a.out);
    ml_child_free(&a);
    ml_child_free(&b);
    assert_active("cc1");
}

/* git init, two commits and a log in dir/name; returns git log's output (malloc'd). */
static char *git_history(const char *name, int preload)
{
    static const char *const env[] = {"GIT_CONFIG_NOSYSTEM=1",
                                      "GIT_CONFIG_GLOBAL=/dev/null",
                                      "GIT_AUTHOR_NAME=Memlimits Test",
                                      "GIT_AUTHOR_EMAIL=test@memlimits.invalid",
                                      "GIT_AUTHOR_DATE=2024-01-02T03:04:05Z",
                                      "GIT_COMMITTER_NAME=Memlimits Test",
                                      "GIT_COMMITTER_EMAIL=test@memlimits.invalid",
                                      "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
                                      "LC_ALL=C",
                                      NULL};
    char home[300], repo[300], path[400];
    snprintf(home, sizeof home, "HOME=%s", dir);
    snprintf(repo, sizeof repo, "%s", in_dir(name));
    const char *envh[16];
    int n = 0;
    for (; env[n] != NULL; n++)
        envh[n] = env[n];
    envh[n++] = home;
    envh[n] = NULL;

    ml_child c;
    run((const char *[]){"git", "init", "-q", "-b", "main", repo, NULL}, envh, preload, &c);
    ml_child_free(&c);
    /* Files: a few hundred lines each, in a subdirectory too. */
    snprintf(path, sizeof path, "%s/src", repo);
    cr_assert_eq(mkdir(path, 0755), 0);
    for (int f = 0; f < 20; f++) {
        char text[20000];
        size_t len = 0;
        for (int l = 0; l < 400; l++)
            len += (size_t)snprintf(text + len, sizeof text - len, "file %d line %d %d\n", f, l,
                                    (f * 7919 + l * 104729) % 1000);
        snprintf(path, sizeof path, "%s/%s%d.txt", repo, f % 2 ? "src/" : "", f);
        write_file(path, text, len);
    }
    run((const char *[]){"git", "-C", repo, "add", ".", NULL}, envh, preload, &c);
    ml_child_free(&c);
    run((const char *[]){"git", "-C", repo, "commit", "-q", "-m", "first", NULL}, envh, preload,
        &c);
    ml_child_free(&c);
    snprintf(path, sizeof path, "%s/src/1.txt", repo);
    write_file(path, "changed\n", 8);
    run((const char *[]){"git", "-C", repo, "commit", "-q", "-a", "-m", "second", NULL}, envh,
        preload, &c);
    ml_child_free(&c);
    run((const char *[]){"git", "-C", repo, "log", "--format=%H %T %s", NULL}, envh, preload, &c);
    char *log = strdup(c.out);
    ml_child_free(&c);
    return log;
}

Test(programs, git_commits_unchanged)
{
    char *plain = git_history("repo-plain", 0);
    char *pre = git_history("repo-preloaded", 1);
    cr_assert_not_null(strstr(plain, " second\n"), "git log: %s", plain);
    cr_assert_str_eq(plain, pre, "commit ids differ under memlimits");
    free(plain);
    free(pre);
    assert_active("git");
}
