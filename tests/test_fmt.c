/* The text builder of lib/fmt.c: integers at their edges, sizes in the form the options parse
 * back, fixed-point decimals, JSON escaping, and what happens at the buffer's capacity. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fmt.h"
#include "options.h"

/* The buffer holds exactly `want` (ml_buf's data is not NUL-terminated). */
static void expect(const ml_buf *b, const char *want)
{
    cr_assert(b->len == strlen(want) && memcmp(b->data, want, b->len) == 0,
              "buffer holds '%.*s' (%zu bytes), expected '%s'", (int)b->len, b->data, b->len, want);
}

/* What ml__buf_flush writes, read back through a pipe, NUL-terminated. */
static size_t flushed(ml_buf *b, char *out, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    ml__buf_flush(b, fds[1]);
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fds[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    out[n] = '\0';
    return n;
}

Test(fmt, strings_and_memory_append_in_order)
{
    char storage[64];
    ml_buf b = ML_BUF_INIT(storage);
    cr_assert_eq(b.cap, sizeof storage);
    ml__buf_str(&b, "");
    expect(&b, "");
    ml__buf_str(&b, "heap ");
    ml__buf_mem(&b, "live: 12", 5);
    ml__buf_str(&b, "!");
    expect(&b, "heap live:!");
    cr_assert_eq(b.truncated, 0);
}

Test(fmt, unsigned_integers_at_their_edges)
{
    static const struct {
        uint64_t v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {9, "9"},
        {10, "10"},
        {1000000, "1000000"},
        {UINT32_MAX, "4294967295"},
        {(uint64_t)UINT32_MAX + 1, "4294967296"},
        {UINT64_MAX - 1, "18446744073709551614"},
        {UINT64_MAX, "18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char storage[32];
        ml_buf b = ML_BUF_INIT(storage);
        ml__buf_u64(&b, cases[i].v);
        expect(&b, cases[i].text);
    }
}

Test(fmt, signed_integers_at_their_edges)
{
    static const struct {
        int64_t v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {-1, "-1"},
        {-10, "-10"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN + 1, "-9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char storage[32];
        ml_buf b = ML_BUF_INIT(storage);
        ml__buf_i64(&b, cases[i].v);
        expect(&b, cases[i].text);
    }
}

Test(fmt, sizes_take_the_largest_exact_binary_suffix)
{
    static const struct {
        uint64_t v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {1023, "1023"},
        {1024, "1K"},
        {1025, "1025"},
        {1536 << 10, "1536K"},
        {64 << 20, "64M"},
        {(uint64_t)3 << 30, "3G"},
        {(uint64_t)1 << 40, "1T"},
        {(uint64_t)1 << 50, "1024T"}, /* T is the largest suffix */
        {((uint64_t)1 << 40) + 1024, "1073741825K"},
        {UINT64_MAX, "18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char storage[32];
        ml_buf b = ML_BUF_INIT(storage);
        ml__buf_size(&b, cases[i].v);
        expect(&b, cases[i].text);
    }
}

/* Every size the options accept (1 .. 2^64 - 2) comes back from the size parser unchanged. */
static void round_trip(uint64_t v)
{
    char storage[32];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_size(&b, v);
    cr_assert_lt(b.len, sizeof storage);
    storage[b.len] = '\0';
    uint64_t back = 0;
    const char *expected;
    cr_assert_eq(ml__parse_size(storage, &back, &expected), 0, "'%s' (from %lu) is refused",
                 storage, v);
    cr_assert_eq(back, v, "'%s' parses to %lu, not %lu", storage, back, v);
}

Test(fmt, sizes_round_trip_through_the_option_parser)
{
    for (int shift = 0; shift < 64; shift++) {
        uint64_t p = (uint64_t)1 << shift;
        round_trip(p);
        if (p > 1) round_trip(p - 1);
        round_trip(p + 1);
        for (uint64_t k = 3; k < 1024 && k <= UINT64_MAX >> shift; k += 2)
            round_trip(k << shift); /* odd multiples: exactly one suffix fits */
    }
    round_trip(UINT64_MAX - 1);
    /* Arbitrary values from a fixed-seed 64-bit LCG (Knuth's MMIX constants). */
    uint64_t x = 12345;
    for (int i = 0; i < 10000; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        uint64_t v = x >> (x & 63);
        if (v != 0 && v != UINT64_MAX) round_trip(v);
    }
}

Test(fmt, fixed_point_pads_the_fraction)
{
    static const struct {
        uint64_t v;
        int decimals;
        const char *text;
    } cases[] = {
        {12345, 3, "12.345"},
        {5, 3, "0.005"},
        {100, 2, "1.00"},
        {0, 2, "0.00"},
        {0, 0, "0"},
        {7, 0, "7"},
        {999, 1, "99.9"},
        {UINT64_MAX, 0, "18446744073709551615"},
        {UINT64_MAX, 19, "1.8446744073709551615"}, /* 10^19 is the largest scale in 64 bits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char storage[32];
        ml_buf b = ML_BUF_INIT(storage);
        ml__buf_fixed(&b, cases[i].v, cases[i].decimals);
        expect(&b, cases[i].text);
    }
}

Test(fmt, json_strings_escape_quotes_backslashes_and_control_characters)
{
    char storage[128];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_json_str(&b, "");
    expect(&b, "\"\"");

    b.len = 0;
    ml__buf_json_str(&b, "a\"b\\c/d");
    expect(&b, "\"a\\\"b\\\\c/d\"");

    b.len = 0;
    ml__buf_json_str(&b, "\x01\t\n\r\x1f ~\x7f");
    expect(&b, "\"\\u0001\\u0009\\u000a\\u000d\\u001f ~\x7f\"");
}

Test(fmt, json_strings_pass_utf8_through)
{
    /* "é", "€" and U+1F600: bytes >= 0x80 are copied as they are. */
    const char *s = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    char storage[64], want[64];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_json_str(&b, s);
    strcpy(want, "\"");
    strcat(want, s);
    strcat(want, "\"");
    expect(&b, want);
}

Test(fmt, output_past_capacity_is_dropped_and_marked)
{
    char storage[8];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "1234567");
    ml__buf_mem(&b, "8", 1); /* exactly full is not truncated */
    expect(&b, "12345678");
    cr_assert_eq(b.truncated, 0);

    ml__buf_str(&b, "9");
    expect(&b, "12345678");
    cr_assert_eq(b.truncated, 1);

    b.len = 5;
    ml__buf_u64(&b, 98765); /* a number is cut, not skipped */
    expect(&b, "12345987");
    ml__buf_json_str(&b, "x");
    cr_assert_eq(b.len, b.cap);
}

Test(fmt, flush_writes_the_buffer_and_empties_it)
{
    char storage[32], out[64];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "memlimits: hello\n");
    cr_assert_eq(flushed(&b, out, sizeof out), 17);
    cr_assert_str_eq(out, "memlimits: hello\n");
    cr_assert_eq(b.len, 0);
    cr_assert_eq(flushed(&b, out, sizeof out), 0);
}

Test(fmt, flush_of_a_truncated_buffer_ends_with_the_marker_within_capacity)
{
    char storage[32], out[64];
    ml_buf b = ML_BUF_INIT(storage);
    for (int i = 0; i < 5; i++)
        ml__buf_str(&b, "abcdefghij");
    cr_assert_eq(b.truncated, 1);
    size_t n = flushed(&b, out, sizeof out);
    const size_t m = sizeof ML_BUF_TRUNCATED - 1;
    cr_assert_eq(n, sizeof storage, "wrote %zu bytes: '%s'", n, out);
    cr_assert_eq(memcmp(out, "abcdefghijabcdefg", n - m), 0, "'%s'", out);
    cr_assert_str_eq(out + n - m, ML_BUF_TRUNCATED);

    /* Flushing clears the mark: the next message is whole. */
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.truncated, 0);
    ml__buf_str(&b, "next\n");
    flushed(&b, out, sizeof out);
    cr_assert_str_eq(out, "next\n");
}

Test(fmt, flush_of_a_truncated_buffer_smaller_than_the_marker_keeps_its_end)
{
    char storage[4], out[16];
    ml_buf b = ML_BUF_INIT(storage);
    ml__buf_str(&b, "too long");
    cr_assert_eq(flushed(&b, out, sizeof out), 4);
    cr_assert_str_eq(out, "ed]\n");
}
