/* The options table and its parsers: sizes, actions, signals, reports, and the fail-closed
 * loading of MEMLIMITS_* variables. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

static uint64_t size_ok(const char *text)
{
    uint64_t v = 0;
    const char *why;
    cr_assert_eq(ml__parse_size(text, &v, &why), 0, "'%s' should parse", text);
    return v;
}

static void size_bad(const char *text)
{
    uint64_t v = 42;
    const char *why = NULL;
    cr_assert_eq(ml__parse_size(text, &v, &why), -1, "'%s' should be refused", text);
    cr_assert_eq(v, 42, "refused input must leave the value alone");
    cr_assert_not_null(why);
}

Test(options, size_parser_accepts_binary_suffixes)
{
    cr_assert_eq(size_ok("1"), 1);
    cr_assert_eq(size_ok("512"), 512);
    cr_assert_eq(size_ok("4k"), 4096);
    cr_assert_eq(size_ok("64M"), 64ull << 20);
    cr_assert_eq(size_ok("3G"), 3ull << 30);
    cr_assert_eq(size_ok("2t"), 2ull << 40);
    cr_assert_eq(size_ok("18446744073709551614"), UINT64_MAX - 1);
    cr_assert_eq(size_ok("16777215T"), 16777215ull << 40);
}

Test(options, size_parser_refuses_malformed_negative_and_overflowing)
{
    const char *bad[] = {"",
                         "0",
                         "0K",
                         "-1",
                         "+1",
                         " 1",
                         "1 ",
                         "1KB",
                         "1Kb",
                         "1X",
                         "1.5G",
                         "K",
                         "0x10",
                         "18446744073709551615",
                         "18446744073709551616",
                         "99999999999999999999999",
                         "16777216T",
                         "1e9",
                         "1MM",
                         "10 M"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        size_bad(bad[i]);
}

Test(options, action_parser)
{
    ml_action a;
    const char *why;
    cr_assert_eq(ml__parse_action("enomem", &a, &why), 0);
    cr_assert_eq(a.kind, ML_ACTION_ENOMEM);
    cr_assert_eq(ml__parse_action("abort", &a, &why), 0);
    cr_assert_eq(a.kind, ML_ACTION_ABORT);
    cr_assert_eq(ml__parse_action("exit:0", &a, &why), 0);
    cr_assert_eq(a.kind, ML_ACTION_EXIT);
    cr_assert_eq(a.arg, 0);
    cr_assert_eq(ml__parse_action("exit:255", &a, &why), 0);
    cr_assert_eq(a.arg, 255);
    cr_assert_eq(ml__parse_action("signal:TERM", &a, &why), 0);
    cr_assert_eq(a.kind, ML_ACTION_SIGNAL);
    cr_assert_eq(a.arg, SIGTERM);
    cr_assert_eq(ml__parse_action("signal:SIGUSR1", &a, &why), 0);
    cr_assert_eq(a.arg, SIGUSR1);
    cr_assert_eq(ml__parse_action("signal:9", &a, &why), 0);
    cr_assert_eq(a.arg, 9);
    const char *bad[] = {"",         "exit",
                         "exit:",    "exit:-1",
                         "exit:256", "exit:1x",
                         "signal:",  "signal:NOPE",
                         "signal:0", "signal:65",
                         "ENOMEM",   "abort ",
                         "kill",     "exit:99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a.kind = ML_ACTION_ABORT;
        cr_assert_eq(ml__parse_action(bad[i], &a, &why), -1, "'%s' should be refused", bad[i]);
        cr_assert_eq(a.kind, ML_ACTION_ABORT);
    }
}

Test(options, signal_parser_names_numbers_and_realtime)
{
    int s;
    const char *why;
    cr_assert_eq(ml__parse_signal("USR2", &s, &why), 0);
    cr_assert_eq(s, SIGUSR2);
    cr_assert_eq(ml__parse_signal("SIGINT", &s, &why), 0);
    cr_assert_eq(s, SIGINT);
    cr_assert_eq(ml__parse_signal("RTMIN", &s, &why), 0);
    cr_assert_eq(s, SIGRTMIN);
    cr_assert_eq(ml__parse_signal("RTMIN+3", &s, &why), 0);
    cr_assert_eq(s, SIGRTMIN + 3);
    cr_assert_eq(ml__parse_signal("SIGRTMAX-1", &s, &why), 0);
    cr_assert_eq(s, SIGRTMAX - 1);
    cr_assert_eq(ml__parse_signal("15", &s, &why), 0);
    cr_assert_eq(s, 15);
    const char *bad[] = {"",        "SIG", "usr1", "RTMIN+", "RTMIN+99",
                         "RTMAX+1", "0",   "65",   "SIG15",  "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(ml__parse_signal(bad[i], &s, &why), -1, "'%s' should be refused", bad[i]);
}

static const char *fake_env[32][2];

static const char *fake_getenv(const char *name)
{
    for (int i = 0; fake_env[i][0] != NULL; i++)
        if (strcmp(fake_env[i][0], name) == 0) return fake_env[i][1];
    return NULL;
}

static int load_one(const char *name, const char *value, ml_config *cfg, char *err, size_t cap)
{
    memset(fake_env, 0, sizeof fake_env);
    fake_env[0][0] = name;
    fake_env[0][1] = value;
    return ml__config_load(cfg, fake_getenv, err, cap);
}

Test(options, defaults_of_the_table)
{
    ml_config cfg;
    char err[512];
    memset(fake_env, 0, sizeof fake_env);
    cr_assert_eq(ml__config_load(&cfg, fake_getenv, err, sizeof err), 0);
    cr_assert_eq(cfg.heap, ML_NONE);
    cr_assert_eq(cfg.alloc, ML_NONE);
    cr_assert_eq(cfg.global, ML_NONE);
    cr_assert_eq(cfg.on_heap.kind, ML_ACTION_ENOMEM);
    cr_assert_eq(cfg.on_alloc.kind, ML_ACTION_EXIT);
    cr_assert_eq(cfg.on_alloc.arg, ML_EXIT_ALLOC_BUDGET);
    cr_assert_eq(cfg.sample, 80000);
    cr_assert_eq(cfg.seed.set, 0);
    cr_assert_eq(cfg.report.kind, ML_REPORT_OFF);
    cr_assert_eq(cfg.verbose, 0);
}

Test(options, every_variable_refuses_bad_input_with_one_clear_line)
{
    /* For each variable, a value that must be refused; the message names variable and value. */
    static const char *cases[][2] = {
        {"MEMLIMITS_HEAP", "12Q"},
        {"MEMLIMITS_HEAP", "-5M"},
        {"MEMLIMITS_HEAP", ""},
        {"MEMLIMITS_ON_HEAP", "explode"},
        {"MEMLIMITS_ALLOC", "99999999999999999999"},
        {"MEMLIMITS_ON_ALLOC", "exit:"},
        {"MEMLIMITS_GLOBAL", "1.5G"},
        {"MEMLIMITS_SAMPLE", "0"},
        {"MEMLIMITS_SAMPLE", "2T"},
        {"MEMLIMITS_SEED", "-1"},
        {"MEMLIMITS_SEED", "18446744073709551616"},
        {"MEMLIMITS_REPORT", ""},
        {"MEMLIMITS_REPORT", "json:"},
        {"MEMLIMITS_SIGNAL", "KILL"},
        {"MEMLIMITS_SIGNAL", "NOSUCH"},
        {"MEMLIMITS_VERBOSE", "yes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ml_config cfg;
        char err[512];
        cr_assert_eq(load_one(cases[i][0], cases[i][1], &cfg, err, sizeof err), -1,
                     "%s='%s' should be refused", cases[i][0], cases[i][1]);
        char expect[256];
        snprintf(expect, sizeof expect, "memlimits: %s='%s': expected ", cases[i][0], cases[i][1]);
        cr_assert(strncmp(err, expect, strlen(expect)) == 0, "message: %s", err);
        cr_assert_null(strchr(err, '\n'), "one line");
    }
}

Test(options, valid_values_reach_the_config)
{
    ml_config cfg;
    char err[512];
    memset(fake_env, 0, sizeof fake_env);
    const char *pairs[][2] = {{"MEMLIMITS_HEAP", "64M"},
                              {"MEMLIMITS_ON_HEAP", "exit:3"},
                              {"MEMLIMITS_ALLOC", "1G"},
                              {"MEMLIMITS_ON_ALLOC", "enomem"},
                              {"MEMLIMITS_SAMPLE", "4096"},
                              {"MEMLIMITS_SEED", "0"},
                              {"MEMLIMITS_REPORT", "json:/tmp/r-%p.json"},
                              {"MEMLIMITS_SIGNAL", "RTMIN+2"},
                              {"MEMLIMITS_VERBOSE", "1"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        fake_env[i][0] = pairs[i][0];
        fake_env[i][1] = pairs[i][1];
    }
    cr_assert_eq(ml__config_load(&cfg, fake_getenv, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cfg.heap, 64ull << 20);
    cr_assert_eq(cfg.on_heap.kind, ML_ACTION_EXIT);
    cr_assert_eq(cfg.on_heap.arg, 3);
    cr_assert_eq(cfg.alloc, 1ull << 30);
    cr_assert_eq(cfg.on_alloc.kind, ML_ACTION_ENOMEM);
    cr_assert_eq(cfg.sample, 4096);
    cr_assert_eq(cfg.seed.set, 1);
    cr_assert_eq(cfg.seed.value, 0);
    cr_assert_eq(cfg.report.kind, ML_REPORT_JSON);
    cr_assert_str_eq(cfg.report.path, "/tmp/r-%p.json");
    cr_assert_eq(cfg.signal, SIGRTMIN + 2);
    cr_assert_eq(cfg.verbose, 1);
}

Test(options, printers_round_trip_through_parsers)
{
    /* What MEMLIMITS_VERBOSE prints for a value is accepted back by the same parser. */
    ml_config cfg;
    char err[512];
    memset(fake_env, 0, sizeof fake_env);
    fake_env[0][0] = "MEMLIMITS_HEAP";
    fake_env[0][1] = "1536K";
    fake_env[1][0] = "MEMLIMITS_ON_ALLOC";
    fake_env[1][1] = "signal:USR1";
    cr_assert_eq(ml__config_load(&cfg, fake_getenv, err, sizeof err), 0);
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        if (strcmp(o->env, "MEMLIMITS_HEAP") && strcmp(o->env, "MEMLIMITS_ON_ALLOC")) continue;
        char text[600];
        o->print((const char *)&cfg + o->offset, text, sizeof text);
        ml_config again;
        const char *why;
        cr_assert_eq(o->parse(text, (char *)&again + o->offset, &why), 0, "%s", text);
        cr_assert_eq(
            memcmp((char *)&again + o->offset, (char *)&cfg + o->offset,
                   strcmp(o->env, "MEMLIMITS_HEAP") == 0 ? sizeof(uint64_t) : sizeof(ml_action)),
            0);
    }
}

Test(options, readme_documents_every_variable_and_flag)
{
    FILE *f = fopen(ML_TEST_SOURCE_DIR "/README.md", "r");
    cr_assert_not_null(f, "README.md");
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    for (size_t i = 0; i < ml__option_count; i++) {
        const ml_option *o = &ml__options[i];
        char row[128];
        snprintf(row, sizeof row, "| `%s` |", o->env);
        cr_assert_not_null(strstr(text, row), "README's options table lacks %s", o->env);
        cr_assert_not_null(strstr(text, o->help), "README lacks the help text of %s", o->env);
    }
}

/* ---- Signals: only what can be sent by hand and has a name --------------------------------- */

Test(options, signal_parser_refuses_fault_signals_and_unnamed_numbers)
{
    /* SEGV, BUS, FPE, ILL and TRAP report faults of an instruction: raised by hand, they fool
     * crash handlers. 32 and 33 are glibc's own (threads and cancellation); they have no name. */
    static const char *const bad[] = {"SEGV", "SIGSEGV", "11", "BUS",  "SIGBUS", "7",  "FPE",
                                      "8",    "ILL",     "4",  "TRAP", "5",      "32", "33"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int s = -5;
        const char *why = NULL;
        cr_expect_eq(ml__parse_signal(bad[i], &s, &why), -1, "'%s' should be refused", bad[i]);
        cr_expect_eq(s, -5, "'%s': refused input must leave the value alone", bad[i]);
        cr_expect_not_null(why);
    }
    int s;
    const char *why;
    cr_assert_eq(ml__parse_signal("KILL", &s, &why), 0, "KILL is a valid action signal");
    cr_assert_eq(ml__parse_signal("34", &s, &why), 0);
    cr_assert_eq(s, SIGRTMIN);
}

Test(options, wake_signal_refuses_uncatchable_fault_and_unnamed_signals)
{
    static const char *const bad[] = {"KILL", "SIGKILL", "9",   "STOP", "SIGSTOP", "19",
                                      "SEGV", "11",      "BUS", "FPE",  "ILL",     "TRAP",
                                      "5",    "32",      "33",  "SIG32"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ml_config cfg;
        char err[512];
        cr_expect_eq(load_one("MEMLIMITS_SIGNAL", bad[i], &cfg, err, sizeof err), -1,
                     "MEMLIMITS_SIGNAL=%s should be refused", bad[i]);
        char expect[128];
        snprintf(expect, sizeof expect, "memlimits: MEMLIMITS_SIGNAL='%s': expected ", bad[i]);
        cr_expect(strncmp(err, expect, strlen(expect)) == 0, "message: %s", err);
    }
}

Test(options, action_signal_refuses_fault_signals_and_keeps_kill)
{
    ml_action a = {ML_ACTION_ABORT, 0};
    const char *why;
    static const char *const bad[] = {"signal:SEGV", "signal:11", "signal:BUS",
                                      "signal:FPE",  "signal:32", "signal:33"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(ml__parse_action(bad[i], &a, &why), -1, "'%s' should be refused", bad[i]);
    cr_assert_eq(ml__parse_action("signal:KILL", &a, &why), 0);
    cr_assert_eq(a.arg, SIGKILL);
    cr_assert_eq(ml__parse_action("signal:STOP", &a, &why), 0);
    cr_assert_eq(a.arg, SIGSTOP);
}

Test(options, printers_survive_a_signal_without_a_name)
{
    /* A configuration no parser produces any more, as an older parser did: 32 has no name. */
    ml_config cfg;
    ml__config_defaults(&cfg);
    cfg.signal = 32;
    cfg.on_heap.kind = ML_ACTION_SIGNAL;
    cfg.on_heap.arg = 33;
    for (size_t i = 0; i < ml__option_count; i++) {
        char text[600];
        ml__options[i].print((const char *)&cfg + ml__options[i].offset, text, sizeof text);
        cr_expect_neq(text[0], '\0', "%s printed nothing", ml__options[i].env);
    }
    char storage[4096];
    ml_buf b = ML_BUF_INIT(storage);
    ml__config_describe(&cfg, fake_getenv, &b);
    cr_expect_gt(b.len, 0);
}

/* ---- Unknown variables -------------------------------------------------------------------- */

static int load_env(const char *const *env, ml_config *cfg, char *err, size_t cap)
{
    return ml__config_load_env(cfg, (char *const *)env, err, cap);
}

Test(options, unknown_variable_is_refused_naming_the_closest)
{
    static const char *const cases[][3] = {
        {"MEMLIMITS_HAEP", "1M", "MEMLIMITS_HEAP"},
        {"MEMLIMITS_heap", "1M", "MEMLIMITS_HEAP"},
        {"MEMLIMITS_ONHEAP", "abort", "MEMLIMITS_ON_HEAP"},
        {"MEMLIMITS_ON_ALOC", "enomem", "MEMLIMITS_ON_ALLOC"},
        {"MEMLIMITS_SAMPEL", "4096", "MEMLIMITS_SAMPLE"},
        {"MEMLIMITS_VERBOS", "1", "MEMLIMITS_VERBOSE"},
        {"MEMLIMITS_REPORTS", "1", "MEMLIMITS_REPORT"},
        {"MEMLIMITS_SIGNALS", "USR2", "MEMLIMITS_SIGNAL"},
        {"MEMLIMITS_", "x", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char entry[128], expect[160], err[512];
        snprintf(entry, sizeof entry, "%s=%s", cases[i][0], cases[i][1]);
        const char *env[] = {"PATH=/bin", "MEMLIMIT_LIBRARY=/x.so", "MEMLIMITS_HEAP=64M", entry,
                             NULL};
        ml_config cfg;
        cr_expect_eq(load_env(env, &cfg, err, sizeof err), -1, "%s should be refused", entry);
        snprintf(expect, sizeof expect, "memlimits: %s='%s': expected ", cases[i][0], cases[i][1]);
        cr_expect(strncmp(err, expect, strlen(expect)) == 0, "message: %s", err);
        if (cases[i][2] != NULL) {
            char hint[64];
            snprintf(hint, sizeof hint, "did you mean %s?", cases[i][2]);
            cr_expect_not_null(strstr(err, hint), "%s: no '%s' in: %s", entry, hint, err);
        }
        cr_expect_null(strchr(err, '\n'), "one line");
    }
}

Test(options, environment_loader_reads_known_variables_and_ignores_other_prefixes)
{
    const char *env[] = {
        "MEMLIMIT_LIBRARY=/x.so", "MEMLIMITSX=1",     "MEMLIMITS=1",    "memlimits_heap=1",
        "MEMLIMITS_HEAP=64M",     "MEMLIMITS_SEED=7", "NO_EQUALS_SIGN", NULL};
    ml_config cfg;
    char err[512] = "";
    cr_assert_eq(load_env(env, &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.heap, 64ull << 20);
    cr_expect_eq(cfg.seed.set, 1);
    cr_expect_eq(cfg.seed.value, 7);
    cr_assert_eq(ml__config_load_env(&cfg, NULL, err, sizeof err), 0, "NULL is an empty block");
    cr_expect_eq(cfg.heap, ML_NONE);
    /* A name without '=' in the block is still a name. */
    const char *bare[] = {"MEMLIMITS_HAEP", NULL};
    cr_expect_eq(load_env(bare, &cfg, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "MEMLIMITS_HEAP"), "%s", err);
}

/* ---- Messages that echo input stay on one line -------------------------------------------- */

Test(options, control_characters_in_a_value_are_escaped)
{
    static const char *const cases[][3] = {
        {"MEMLIMITS_HEAP", "1\n2", "'1\\n2'"},
        {"MEMLIMITS_ON_HEAP", "abort\t", "'abort\\t'"},
        {"MEMLIMITS_SEED", "\x01x\x7f", "'\\x01x\\x7f'"},
        {"MEMLIMITS_REPORT", "json:", "'json:'"},
        {"MEMLIMITS_VERBOSE", "1\r", "'1\\r'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ml_config cfg;
        char err[512];
        cr_assert_eq(load_one(cases[i][0], cases[i][1], &cfg, err, sizeof err), -1);
        cr_expect_not_null(strstr(err, cases[i][2]), "want %s in: %s", cases[i][2], err);
        for (const char *s = err; *s != '\0'; s++)
            cr_expect((unsigned char)*s >= 0x20 && *s != 0x7f, "raw control byte in: %s", err);
    }
    /* The same through the unknown-name check: the name is echoed too. */
    const char *env[] = {"MEMLIMITS_H\nEAP=1\tM", NULL};
    ml_config cfg;
    char err[512];
    cr_assert_eq(load_env(env, &cfg, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "MEMLIMITS_H\\nEAP='1\\tM'"), "%s", err);
}

Test(options, escaper_writes_c_style_escapes)
{
    char storage[64];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_escaped(&b, "a\nb\tc\rd\x1b\x7f\\e\xc3\xa9");
    cr_assert_eq(b.len, strlen("a\\nb\\tc\\rd\\x1b\\x7f\\e\xc3\xa9"));
    cr_expect(memcmp(storage, "a\\nb\\tc\\rd\\x1b\\x7f\\e\xc3\xa9", b.len) == 0, "%.*s", (int)b.len,
              storage);
}

/* ---- Sizes of limits need a unit below 64K ------------------------------------------------- */

Test(options, limit_size_without_unit_below_64k_is_refused_with_a_suggestion)
{
    static const char *const vars[] = {"MEMLIMITS_HEAP", "MEMLIMITS_ALLOC", "MEMLIMITS_GLOBAL"};
    static const char *const plain[][3] = {
        {"512", "512M", "512B"}, {"1", "1M", "1B"}, {"65535", "65535M", "65535B"}};
    for (size_t v = 0; v < 3; v++) {
        for (size_t i = 0; i < 3; i++) {
            ml_config cfg;
            char err[512];
            cr_expect_eq(load_one(vars[v], plain[i][0], &cfg, err, sizeof err), -1,
                         "%s=%s should be refused", vars[v], plain[i][0]);
            cr_expect_not_null(strstr(err, plain[i][1]), "no %s in: %s", plain[i][1], err);
            cr_expect_not_null(strstr(err, plain[i][2]), "no %s in: %s", plain[i][2], err);
        }
        static const struct {
            const char *text;
            uint64_t value;
        } good[] = {{"512B", 512},  {"1B", 1},        {"65536", 65536},     {"64K", 65536},
                    {"64k", 65536}, {"70000", 70000}, {"1048576", 1 << 20}, {"none", ML_NONE}};
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            ml_config cfg;
            char err[512] = "";
            cr_expect_eq(load_one(vars[v], good[i].text, &cfg, err, sizeof err), 0, "%s=%s: %s",
                         vars[v], good[i].text, err);
            uint64_t got = v == 0 ? cfg.heap : v == 1 ? cfg.alloc : cfg.global;
            cr_expect_eq(got, good[i].value, "%s=%s", vars[v], good[i].text);
        }
    }
    /* The sampler's mean gap legitimately takes small plain numbers. */
    static const char *const sample[] = {"1", "512", "4096"};
    for (size_t i = 0; i < 3; i++) {
        ml_config cfg;
        char err[512] = "";
        cr_expect_eq(load_one("MEMLIMITS_SAMPLE", sample[i], &cfg, err, sizeof err), 0, "%s", err);
        cr_expect_eq(cfg.sample, strtoull(sample[i], NULL, 10));
    }
}

Test(options, size_parser_takes_a_b_suffix_for_bytes)
{
    cr_assert_eq(size_ok("512B"), 512);
    cr_assert_eq(size_ok("1B"), 1);
    cr_assert_eq(size_ok("18446744073709551614B"), UINT64_MAX - 1);
    const char *bad[] = {"B", "0B", "1BB", "1KB", "1b", "1 B", "B1", "-1B"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        size_bad(bad[i]);
}

/* ---- MEMLIMITS_VERBOSE prints what the parsers accept back --------------------------------- */

/* Reads a listing back: each "memlimits:   NAME=VALUE[   # default]" line into the fake
 * environment (backing store: `store`), and loads it. */
static int load_listing(const char *listing, ml_config *out, char *err, size_t cap)
{
    static char store[8192];
    snprintf(store, sizeof store, "%s", listing);
    memset(fake_env, 0, sizeof fake_env);
    int n = 0;
    for (char *line = store; *line != '\0' && n < 31;) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "unterminated line: %s", line);
        *nl = '\0';
        static const char lead[] = "memlimits:   ";
        cr_assert(strncmp(line, lead, strlen(lead)) == 0, "not a listing line: %s", line);
        char *name = line + strlen(lead), *eq = strchr(name, '=');
        cr_assert_not_null(eq, "no '=' in: %s", line);
        *eq = '\0';
        char *mark = strstr(eq + 1, "   # default");
        if (mark != NULL) {
            cr_assert_str_eq(mark, "   # default", "the marker ends the line");
            *mark = '\0';
        }
        fake_env[n][0] = name;
        fake_env[n][1] = eq + 1;
        n++;
        line = nl + 1;
    }
    cr_assert_eq((size_t)n, ml__option_count, "one line per variable");
    return ml__config_load(out, fake_getenv, err, cap);
}

Test(options, verbose_listing_is_accepted_back_by_the_loader)
{
    static const char *const configs[][16] = {
        {NULL}, /* every default */
        {"MEMLIMITS_HEAP=512B", "MEMLIMITS_ON_HEAP=signal:KILL", "MEMLIMITS_ALLOC=70000",
         "MEMLIMITS_ON_ALLOC=abort", "MEMLIMITS_GLOBAL=1536K", "MEMLIMITS_SAMPLE=1",
         "MEMLIMITS_SEED=0", "MEMLIMITS_REPORT=stderr", "MEMLIMITS_SIGNAL=USR2",
         "MEMLIMITS_VERBOSE=1", NULL},
        {"MEMLIMITS_HEAP=none", "MEMLIMITS_ON_HEAP=exit:0", "MEMLIMITS_ALLOC=16777215T",
         "MEMLIMITS_ON_ALLOC=signal:RTMIN+3", "MEMLIMITS_SAMPLE=1T",
         "MEMLIMITS_SEED=18446744073709551615", "MEMLIMITS_REPORT=json:/tmp/r-%p.json",
         "MEMLIMITS_SIGNAL=RTMAX", NULL},
        {"MEMLIMITS_HEAP=64M", "MEMLIMITS_ON_HEAP=signal:SIGUSR1", "MEMLIMITS_SEED=os",
         "MEMLIMITS_REPORT=/tmp/memlimits report.txt", "MEMLIMITS_SIGNAL=default",
         "MEMLIMITS_SAMPLE=80001", NULL},
        {"MEMLIMITS_REPORT=json", "MEMLIMITS_SIGNAL=RTMIN", "MEMLIMITS_GLOBAL=65537", NULL},
        {"MEMLIMITS_REPORT=./json:x", "MEMLIMITS_SIGNAL=HUP", "MEMLIMITS_ON_ALLOC=exit:255", NULL},
    };
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        memset(fake_env, 0, sizeof fake_env);
        static char names[16][64];
        for (int i = 0; configs[c][i] != NULL; i++) {
            const char *eq = strchr(configs[c][i], '=');
            snprintf(names[i], sizeof names[i], "%.*s", (int)(eq - configs[c][i]), configs[c][i]);
            fake_env[i][0] = names[i];
            fake_env[i][1] = eq + 1;
        }
        ml_config cfg, again;
        char err[512] = "";
        cr_assert_eq(ml__config_load(&cfg, fake_getenv, err, sizeof err), 0, "config %zu: %s", c,
                     err);
        char listing[4096];
        ml_buf b = ML_BUF_INIT(listing);
        ml__config_describe(&cfg, fake_getenv, &b);
        cr_assert_eq(b.truncated, 0);
        listing[b.len] = '\0';
        /* Unset variables, and only those, are marked as defaults. */
        for (size_t i = 0; i < ml__option_count; i++) {
            char line[128];
            snprintf(line, sizeof line, "   %s=", ml__options[i].env);
            const char *at = strstr(listing, line);
            cr_assert_not_null(at, "%s not listed:\n%s", ml__options[i].env, listing);
            const char *end = strchr(at, '\n');
            int marked = end - at > 12 && strncmp(end - 12, "   # default", 12) == 0;
            cr_expect_eq(marked, fake_getenv(ml__options[i].env) == NULL,
                         "config %zu: %s marked wrongly:\n%s", c, ml__options[i].env, listing);
        }
        cr_assert_eq(load_listing(listing, &again, err, sizeof err), 0,
                     "config %zu: the listing is refused: %s\n%s", c, err, listing);
        cr_expect_eq(memcmp(&cfg, &again, sizeof cfg), 0,
                     "config %zu: the listing loads to another configuration:\n%s", c, listing);
    }
}

Test(options, keywords_of_the_defaults_are_accepted)
{
    ml_config cfg;
    char err[512] = "";
    cr_assert_eq(load_one("MEMLIMITS_SEED", "os", &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.seed.set, 0);
    cr_assert_eq(load_one("MEMLIMITS_SIGNAL", "default", &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.signal, 0);
    cr_assert_eq(load_one("MEMLIMITS_GLOBAL", "none", &cfg, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.global, ML_NONE);
    /* "none" is no sampling gap. */
    cr_expect_eq(load_one("MEMLIMITS_SAMPLE", "none", &cfg, err, sizeof err), -1);
}

/* ---- Report paths ------------------------------------------------------------------------- */

Test(options, report_path_expands_pid_and_percent)
{
    static const struct {
        const char *pattern, *expanded;
    } cases[] = {
        {"r-%p.json", "r-4321.json"},
        {"%p%p", "43214321"},
        {"100%%", "100%"},
        {"%%p", "%p"},
        {"%%%p", "%4321"},
        {"a%xb", "a%xb"},
        {"end%", "end%"},
        {"", ""},
        {"/plain/path", "/plain/path"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        memset(out, 'X', sizeof out);
        size_t n = ml__report_path_expand(cases[i].pattern, 4321, out, sizeof out);
        cr_expect_str_eq(out, cases[i].expanded, "'%s'", cases[i].pattern);
        cr_expect_eq(n, strlen(cases[i].expanded), "'%s'", cases[i].pattern);
    }
}

Test(options, report_path_expansion_is_cut_like_snprintf)
{
    char out[8];
    memset(out, 'X', sizeof out);
    cr_expect_eq(ml__report_path_expand("/tmp/r-%p.txt", 123456, out, sizeof out), 17);
    cr_expect_str_eq(out, "/tmp/r-");
    memset(out, 'X', sizeof out);
    cr_expect_eq(ml__report_path_expand("abc%p", 99999, out, 6), 8);
    cr_expect_str_eq(out, "abc99");
    cr_expect_eq(out[6], 'X', "nothing past cap");
    cr_expect_eq(ml__report_path_expand("%p", 7, out, 1), 1);
    cr_expect_str_eq(out, "");
    out[0] = 'X';
    cr_expect_eq(ml__report_path_expand("%p", 7, out, 0), 1);
    cr_expect_eq(out[0], 'X', "cap 0 writes nothing");
    cr_expect_eq(ml__report_path_expand("%p", 0, out, sizeof out), 1);
    cr_expect_str_eq(out, "0");
}
