/* The text builder of fmt.h: integers, sizes and JSON strings into a caller's buffer. */
#include "fmt.h"

#include <string.h>

#include "host.h"

void ml__buf_mem(ml_buf *b, const char *s, size_t n)
{
    size_t room = b->cap - b->len;
    if (n > room) {
        n = room;
        b->truncated = 1;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void ml__buf_str(ml_buf *b, const char *s)
{
    ml__buf_mem(b, s, strlen(s));
}

void ml__buf_u64(ml_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    ml__buf_mem(b, tmp + i, sizeof tmp - i);
}

void ml__buf_i64(ml_buf *b, int64_t v)
{
    if (v < 0) {
        ml__buf_mem(b, "-", 1);
        ml__buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        ml__buf_u64(b, (uint64_t)v);
    }
}

void ml__buf_size(ml_buf *b, uint64_t v)
{
    static const char suffix[] = "KMGT";
    int unit = -1;
    while (unit < 3 && v != 0 && v % 1024 == 0) {
        v /= 1024;
        unit++;
    }
    ml__buf_u64(b, v);
    if (unit >= 0) ml__buf_mem(b, &suffix[unit], 1);
}

void ml__buf_fixed(ml_buf *b, uint64_t v, int decimals)
{
    uint64_t scale = 1;
    for (int i = 0; i < decimals; i++)
        scale *= 10;
    ml__buf_u64(b, v / scale);
    if (decimals == 0) return;
    ml__buf_mem(b, ".", 1);
    uint64_t frac = v % scale;
    for (uint64_t s = scale / 10; s > 0; s /= 10) {
        char c = (char)('0' + (frac / s) % 10);
        ml__buf_mem(b, &c, 1);
    }
}

void ml__buf_json_str(ml_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    ml__buf_mem(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            ml__buf_mem(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ml__buf_mem(b, esc, 6);
        } else {
            ml__buf_mem(b, (const char *)&c, 1);
        }
    }
    ml__buf_mem(b, "\"", 1);
}

void ml__buf_flush(ml_buf *b, int fd)
{
    if (b->truncated) {
        /* Truncation filled the buffer (len == cap): the marker overwrites its tail. */
        static const char marker[] = ML_BUF_TRUNCATED;
        size_t n = sizeof marker - 1 < b->cap ? sizeof marker - 1 : b->cap;
        memcpy(b->data + b->cap - n, marker + sizeof marker - 1 - n, n);
        b->len = b->cap;
    }
    ml__write_all(fd, b->data, b->len);
    b->len = 0;
    b->truncated = 0;
}
