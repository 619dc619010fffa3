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
