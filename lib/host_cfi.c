/* The host seam's reader of call frame information (see host_cfi.h): where, in one loaded
 * object, a frame-pointer step is exact. It interprets each FDE's CFA instructions from the
 * object's .eh_frame (found through .eh_frame_hdr) just far enough to follow three rules: the
 * CFA's (register and offset), rbp's and the return address's. Everything it does not know
 * (expressions, unknown instructions or augmentations, signal frames) ends the function's
 * intervals: unknown is never exact. */
#define _GNU_SOURCE
#include "host_cfi.h"

#include <string.h>
#include <sys/mman.h>

static int add_range(ml_fp_intervals *o, uintptr_t lo, uintptr_t hi)
{
    if (o->count > 0 && o->pairs[2 * o->count - 1] == lo) { /* contiguous: merge */
        o->pairs[2 * o->count - 1] = hi;
        return 0;
    }
    if (o->count == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256, bytes = cap * 2 * sizeof(uintptr_t);
        void *p = o->pairs ? mremap(o->pairs, o->cap * 2 * sizeof(uintptr_t), bytes, MREMAP_MAYMOVE)
                           : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                  -1, 0);
        if (p == MAP_FAILED) return -1;
        o->pairs = p;
        o->cap = cap;
    }
    o->pairs[2 * o->count] = lo;
    o->pairs[2 * o->count + 1] = hi;
    o->count++;
    return 0;
}

/* DWARF readers over [*p, end); each returns -1 past the end. */
typedef struct reader {
    const uint8_t *p, *end;
} reader;

static int uleb(reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; r->p < r->end && shift < 64; shift += 7) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int sleb(reader *r, int64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    uint8_t b = 0x80;
    while (r->p < r->end && (b & 0x80) && shift < 64) {
        b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    }
    if (b & 0x80) return -1;
    if (shift < 64 && (b & 0x40)) v |= ~(uint64_t)0 << shift;
    *out = (int64_t)v;
    return 0;
}

static int fixed(reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return -1;
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

/* A pointer in DW_EH_PE encoding `enc` (only what GCC and LLVM emit for x86-64: absolute or
 * pc-relative, 2, 4 or 8 bytes, LEB128); with `apply` 0 the value only (an FDE's range). */
static int pointer(reader *r, uint8_t enc, int apply, uintptr_t *out)
{
    const uint8_t *at = r->p;
    uint64_t v = 0;
    if (enc == 0xff) return -1; /* DW_EH_PE_omit */
    switch (enc & 0x0f) {
    case 0x00: /* absptr */
    case 0x04:
    case 0x0c: {
        uint64_t x;
        if (fixed(r, &x, 8) != 0) return -1;
        v = x;
        break;
    }
    case 0x01:
        if (uleb(r, &v) != 0) return -1;
        break;
    case 0x09: {
        int64_t x;
        if (sleb(r, &x) != 0) return -1;
        v = (uint64_t)x;
        break;
    }
    case 0x02: {
        uint16_t x;
        if (fixed(r, &x, 2) != 0) return -1;
        v = x;
        break;
    }
    case 0x0a: {
        int16_t x;
        if (fixed(r, &x, 2) != 0) return -1;
        v = (uint64_t)(int64_t)x;
        break;
    }
    case 0x03: {
        uint32_t x;
        if (fixed(r, &x, 4) != 0) return -1;
        v = x;
        break;
    }
    case 0x0b: {
        int32_t x;
        if (fixed(r, &x, 4) != 0) return -1;
        v = (uint64_t)(int64_t)x;
        break;
    }
    default:
        return -1;
    }
    if (apply) {
        if ((enc & 0x70) == 0x10)
            v += (uintptr_t)at;
        else if ((enc & 0x70) != 0)
            return -1;
        if (enc & 0x80) return -1; /* indirect: never in an FDE's pc_begin */
    }
    *out = (uintptr_t)v;
    return 0;
}

/* The rules a row keeps: the CFA's register and offset (reg -1: an expression), and whether
 * rbp is saved at CFA - 16 and the return address at CFA - 8. */
typedef struct cfi_row {
    int cfa_reg;
    int64_t cfa_off;
    uint8_t rbp_saved, ra_saved;
} cfi_row;

typedef struct cie_info {
    uint64_t code_align;
    int64_t data_align;
    uint8_t fde_enc, has_z, signal;
    reader init; /* the initial instructions */
} cie_info;

static int exact(const cfi_row *row)
{
    return row->cfa_reg == 6 && row->cfa_off == 16 && row->rbp_saved && row->ra_saved;
}

/* Sets a register's rule to "saved at CFA + off" (saved = 1) or anything else (saved = 0). */
static void set_rule(cfi_row *row, uint64_t reg, int saved, int64_t off)
{
    if (reg == 6) row->rbp_saved = saved && off == -16;
    if (reg == 16) row->ra_saved = saved && off == -8;
}

/* Runs CFA instructions from `r`, adding the exact intervals of [*loc, end) to o when `o` is
 * not NULL (the CIE's initial instructions run with o NULL). `initial`: the row after the CIE,
 * for DW_CFA_restore. Returns -1 on an instruction it does not know; the rest of the function
 * then has no interval. */
static int run_cfi(reader *r, const cie_info *cie, cfi_row *row, const cfi_row *initial,
                   uintptr_t *loc, uintptr_t end, ml_fp_intervals *o)
{
    cfi_row stack[8];
    unsigned depth = 0;
    while (r->p < r->end) {
        uint8_t op = *r->p++;
        uint64_t a, b, adv = 0;
        int64_t s;
        switch (op >> 6) {
        case 1:
            adv = (uint64_t)(op & 0x3f) * cie->code_align;
            break;
        case 2:
            if (uleb(r, &a) != 0) return -1;
            set_rule(row, op & 0x3f, 1, (int64_t)a * cie->data_align);
            continue;
        case 3: /* restore */
            if ((op & 0x3f) == 6) row->rbp_saved = initial->rbp_saved;
            if ((op & 0x3f) == 16) row->ra_saved = initial->ra_saved;
            continue;
        default:
            switch (op) {
            case 0x00: /* nop */
                continue;
            case 0x02:
            case 0x03:
            case 0x04: {
                uint8_t b1 = 0;
                uint16_t b2 = 0;
                uint32_t b4 = 0;
                if (op == 0x02   ? fixed(r, &b1, 1)
                    : op == 0x03 ? fixed(r, &b2, 2)
                                 : fixed(r, &b4, 4))
                    return -1;
                adv = (op == 0x02 ? b1 : op == 0x03 ? b2 : b4) * cie->code_align;
                break;
            }
            case 0x05: /* offset_extended */
                if (uleb(r, &a) != 0 || uleb(r, &b) != 0) return -1;
                set_rule(row, a, 1, (int64_t)b * cie->data_align);
                continue;
            case 0x11: /* offset_extended_sf */
                if (uleb(r, &a) != 0 || sleb(r, &s) != 0) return -1;
                set_rule(row, a, 1, s * cie->data_align);
                continue;
            case 0x06: /* restore_extended */
                if (uleb(r, &a) != 0) return -1;
                if (a == 6) row->rbp_saved = initial->rbp_saved;
                if (a == 16) row->ra_saved = initial->ra_saved;
                continue;
            case 0x07: /* undefined */
            case 0x08: /* same_value */
                if (uleb(r, &a) != 0) return -1;
                set_rule(row, a, 0, 0);
                continue;
            case 0x09: /* register */
            case 0x14: /* val_offset */
                if (uleb(r, &a) != 0 || uleb(r, &b) != 0) return -1;
                set_rule(row, a, 0, 0);
                continue;
            case 0x15: /* val_offset_sf */
                if (uleb(r, &a) != 0 || sleb(r, &s) != 0) return -1;
                set_rule(row, a, 0, 0);
                continue;
            case 0x10: /* expression */
            case 0x16: /* val_expression */
                if (uleb(r, &a) != 0 || uleb(r, &b) != 0 || (uint64_t)(r->end - r->p) < b)
                    return -1;
                r->p += b;
                set_rule(row, a, 0, 0);
                continue;
            case 0x0a: /* remember_state */
                if (depth == 8) return -1;
                stack[depth++] = *row;
                continue;
            case 0x0b: /* restore_state */
                if (depth == 0) return -1;
                *row = stack[--depth];
                continue;
            case 0x0c: /* def_cfa */
                if (uleb(r, &a) != 0 || uleb(r, &b) != 0) return -1;
                row->cfa_reg = (int)a, row->cfa_off = (int64_t)b;
                continue;
            case 0x12: /* def_cfa_sf */
                if (uleb(r, &a) != 0 || sleb(r, &s) != 0) return -1;
                row->cfa_reg = (int)a, row->cfa_off = s * cie->data_align;
                continue;
            case 0x0d: /* def_cfa_register */
                if (uleb(r, &a) != 0) return -1;
                row->cfa_reg = (int)a;
                continue;
            case 0x0e: /* def_cfa_offset */
                if (uleb(r, &a) != 0) return -1;
                row->cfa_off = (int64_t)a;
                continue;
            case 0x13: /* def_cfa_offset_sf */
                if (sleb(r, &s) != 0) return -1;
                row->cfa_off = s * cie->data_align;
                continue;
            case 0x0f: /* def_cfa_expression */
                if (uleb(r, &b) != 0 || (uint64_t)(r->end - r->p) < b) return -1;
                r->p += b;
                row->cfa_reg = -1;
                continue;
            case 0x2e: /* GNU_args_size */
                if (uleb(r, &a) != 0) return -1;
                continue;
            default: /* set_loc, GNU_negative_offset_extended, vendor extensions */
                return -1;
            }
        }
        /* An advance: the row held over [*loc, *loc + adv). */
        uintptr_t next = *loc + adv > end ? end : *loc + adv;
        if (o != NULL && exact(row) && next > *loc && add_range(o, *loc, next) != 0) return -1;
        *loc = next;
    }
    return 0;
}

static int parse_cie(const uint8_t *cie, const uint8_t *eh_end, cie_info *out)
{
    uint32_t len;
    reader r = {cie, eh_end};
    if (fixed(&r, &len, 4) != 0 || len == 0 || len == 0xffffffffu) return -1;
    r.end = r.p + len;
    if (r.end > eh_end) return -1;
    uint32_t id;
    uint8_t version;
    if (fixed(&r, &id, 4) != 0 || id != 0 || fixed(&r, &version, 1) != 0) return -1;
    const char *aug = (const char *)r.p;
    size_t alen = strnlen(aug, (size_t)(r.end - r.p));
    r.p += alen + 1;
    if (r.p > r.end) return -1;
    uint64_t ra;
    if (uleb(&r, &out->code_align) != 0 || sleb(&r, &out->data_align) != 0) return -1;
    if (version == 1) {
        uint8_t b;
        if (fixed(&r, &b, 1) != 0) return -1;
        ra = b;
    } else if (uleb(&r, &ra) != 0) {
        return -1;
    }
    if (ra != 16) return -1;
    out->fde_enc = 0;
    out->has_z = aug[0] == 'z';
    out->signal = 0;
    if (out->has_z) {
        uint64_t zlen;
        if (uleb(&r, &zlen) != 0 || (uint64_t)(r.end - r.p) < zlen) return -1;
        reader z = {r.p, r.p + zlen};
        for (size_t i = 1; i < alen; i++) {
            uint8_t enc;
            uintptr_t ignored;
            switch (aug[i]) {
            case 'L':
                if (fixed(&z, &enc, 1) != 0) return -1;
                break;
            case 'R':
                if (fixed(&z, &out->fde_enc, 1) != 0) return -1;
                break;
            case 'P':
                if (fixed(&z, &enc, 1) != 0 || pointer(&z, enc & 0x7f, 0, &ignored) != 0) return -1;
                break;
            case 'S':
                out->signal = 1;
                break;
            default:
                return -1;
            }
        }
        r.p += zlen;
    } else if (alen != 0) {
        return -1;
    }
    out->init = r;
    return 0;
}

/* One FDE: adds its exact intervals to o. Errors only cut this function's intervals short. */
static void parse_fde(const uint8_t *fde, const uint8_t *eh_lo, const uint8_t *eh_end,
                      ml_fp_intervals *o)
{
    uint32_t len, cie_off;
    reader r = {fde, eh_end};
    if (fixed(&r, &len, 4) != 0 || len == 0 || len == 0xffffffffu) return;
    r.end = r.p + len;
    if (r.end > eh_end) return;
    const uint8_t *id_at = r.p;
    if (fixed(&r, &cie_off, 4) != 0 || cie_off == 0) return;
    const uint8_t *cie_at = id_at - cie_off;
    cie_info cie;
    if (cie_at < eh_lo || parse_cie(cie_at, eh_end, &cie) != 0 || cie.signal) return;
    uintptr_t begin, range;
    if (pointer(&r, cie.fde_enc, 1, &begin) != 0 || pointer(&r, cie.fde_enc & 0x0f, 0, &range) != 0)
        return;
    if (cie.has_z) {
        uint64_t zlen;
        if (uleb(&r, &zlen) != 0 || (uint64_t)(r.end - r.p) < zlen) return;
        r.p += zlen;
    }
    cfi_row row = {7, 8, 0, 1}, initial; /* rsp + 8 until the CIE says otherwise */
    uintptr_t loc = begin, end = begin + range;
    reader init = cie.init;
    if (run_cfi(&init, &cie, &row, &row, &loc, end, NULL) != 0) return;
    loc = begin;
    initial = row;
    if (run_cfi(&r, &cie, &row, &initial, &loc, end, o) != 0) return;
    if (exact(&row) && loc < end) add_range(o, loc, end);
}

int ml__host_fp_intervals(const uint8_t *hdr, ml_fp_intervals *out)
{
    memset(out, 0, sizeof *out);
    /* .eh_frame_hdr: version 1, then the encodings of eh_frame_ptr, fde_count and the table
     * (the binary-search table in the form GNU ld and lld write). The table is sorted by
     * address, so the intervals come out sorted. */
    if (hdr[0] != 1 || hdr[2] != 0x03 || hdr[3] != 0x3b) return -1;
    reader r = {hdr + 4, hdr + 4 + 16};
    uintptr_t eh;
    uint32_t count;
    if (pointer(&r, hdr[1], 1, &eh) != 0 || fixed(&r, &count, 4) != 0) return -1;
    const int32_t *search = (const int32_t *)r.p;
    for (uint32_t i = 0; i < count; i++)
        parse_fde(hdr + search[2 * i + 1], (const uint8_t *)eh, (const uint8_t *)UINTPTR_MAX, out);
    return 0;
}

void ml__host_fp_intervals_free(ml_fp_intervals *iv)
{
    if (iv->pairs != NULL) munmap(iv->pairs, iv->cap * 2 * sizeof(uintptr_t));
    memset(iv, 0, sizeof *iv);
}
