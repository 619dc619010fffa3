/* The configuration as the preloaded library reads it (lib/init.c over lib/options.c): an
 * unknown MEMLIMITS_* name or a size without a unit stops the program before main with status
 * 125 and one line, and MEMLIMITS_VERBOSE's listing is accepted back by the library itself. The
 * parsers' own tests are in test_options.c; these run a real program preloaded. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child.h"

static void run_main(const char *const env[], ml_child *c)
{
    const char *argv[] = {ml_test_target("limits_main"), NULL};
    cr_assert_eq(ml_child_run(argv, env, 1, NULL, 30, c), 0);
}

static size_t lines(const char *text)
{
    size_t n = 0;
    for (const char *s = text; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

Test(config, a_misspelled_variable_stops_the_program_before_main)
{
    const char *env[] = {"MEMLIMITS_HAEP=1M", NULL};
    ml_child c;
    run_main(env, &c);
    cr_expect(c.exited && c.status == 125, "status %d signal %d", c.status, c.signal);
    cr_expect_str_empty(c.out, "main ran without the cap it was asked for");
    cr_expect_not_null(strstr(c.err, "MEMLIMITS_HAEP"), "%s", c.err);
    cr_expect_not_null(strstr(c.err, "did you mean MEMLIMITS_HEAP?"), "%s", c.err);
    cr_expect_eq(lines(c.err), 1, "%s", c.err);
    ml_child_free(&c);
}

Test(config, a_cap_without_a_unit_stops_the_program_with_a_suggestion)
{
    const char *env[] = {"MEMLIMITS_HEAP=512", NULL};
    ml_child c;
    run_main(env, &c);
    cr_expect(c.exited && c.status == 125, "status %d signal %d", c.status, c.signal);
    cr_expect_str_empty(c.out);
    cr_expect_not_null(strstr(c.err, "512M"), "%s", c.err);
    cr_expect_not_null(strstr(c.err, "512B"), "%s", c.err);
    ml_child_free(&c);
}

/* The "NAME=VALUE" settings of a verbose listing, in order, without the "# default" notes. */
static size_t listed(const char *err, char out[][256], size_t cap)
{
    size_t n = 0;
    for (const char *s = strstr(err, "memlimits:   "); s != NULL && n < cap;
         s = strstr(s, "memlimits:   ")) {
        s += strlen("memlimits:   ");
        size_t len = strcspn(s, " \n");
        cr_assert_lt(len, 256);
        memcpy(out[n], s, len);
        out[n++][len] = '\0';
    }
    return n;
}

static void expect_round_trip(const char *const env[])
{
    ml_child first, second;
    run_main(env, &first);
    cr_assert(first.exited && first.status == 0, "status %d: %s", first.status, first.err);
    char settings[32][256];
    size_t n = listed(first.err, settings, 32);
    cr_assert_geq(n, 10, "listing:\n%s", first.err);
    const char *again[33];
    for (size_t i = 0; i < n; i++)
        again[i] = settings[i];
    again[n] = NULL;
    run_main(again, &second);
    cr_expect(second.exited && second.status == 0, "the listing was refused: %s", second.err);
    char settings2[32][256];
    cr_assert_eq(listed(second.err, settings2, 32), n, "%s", second.err);
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(settings2[i], settings[i]);
    ml_child_free(&first);
    ml_child_free(&second);
}

Test(config, the_verbose_listing_of_the_defaults_is_accepted_back)
{
    const char *env[] = {"MEMLIMITS_VERBOSE=1", NULL};
    expect_round_trip(env);
}

Test(config, the_verbose_listing_of_set_values_is_accepted_back)
{
    const char *env[] = {"MEMLIMITS_VERBOSE=1",
                         "MEMLIMITS_HEAP=1536K",
                         "MEMLIMITS_ON_HEAP=exit:3",
                         "MEMLIMITS_ALLOC=70000B",
                         "MEMLIMITS_SEED=42",
                         "MEMLIMITS_SIGNAL=USR2",
                         "MEMLIMITS_GLOBAL=1G",
                         "MEMLIMITS_ON_ALLOC=signal:TERM",
                         NULL};
    expect_round_trip(env);
}
