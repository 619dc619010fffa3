/* A tiny text builder for diagnostics and reports: the allocator's slow path may not use stdio
 * (it allocates and locks), so messages are built in a fixed buffer and written with write(2).
 * Output past the buffer's capacity is dropped and the buffer marked truncated; flushing a
 * truncated buffer says so at the end of what it writes (ML_BUF_TRUNCATED). */
#ifndef ML_FMT_H
#define ML_FMT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ml_buf {
    char *data;
    size_t cap, len;
    int truncated;
} ml_buf;

#define ML_BUF_INIT(storage)                                                                       \
    {                                                                                              \
        (storage), sizeof(storage), 0, 0                                                           \
    }

void ml__buf_str(ml_buf *b, const char *s);
void ml__buf_mem(ml_buf *b, const char *s, size_t n);
void ml__buf_u64(ml_buf *b, uint64_t v);
void ml__buf_i64(ml_buf *b, int64_t v);
/* A byte count in the form the options accept back: "64M", "1536K", "123". */
void ml__buf_size(ml_buf *b, uint64_t v);
/* A fixed-point decimal: v / 10^decimals, e.g. (12345, 3) -> "12.345". */
void ml__buf_fixed(ml_buf *b, uint64_t v, int decimals);
/* A JSON string literal, with quotes and escapes. */
void ml__buf_json_str(ml_buf *b, const char *s);
/* What ends the output of a truncated buffer. */
#define ML_BUF_TRUNCATED "...[truncated]\n"
/* Writes the buffer to fd (host.h's ml__write_all) and empties it (len 0, not truncated). If
 * output was dropped, ML_BUF_TRUNCATED replaces the last bytes of the full buffer, so that the
 * write never exceeds the capacity; a buffer smaller than the marker ends with the marker's
 * last `cap` bytes. */
void ml__buf_flush(ml_buf *b, int fd);

#endif
