/* GGUF reader: mmap the file, parse header, metadata and tensor table with every read
 * bounds-checked, and leave tensor data in place in the mapping.
 *
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x      { string key | u32 type | value }        string = u64 len | bytes
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data (offsets relative to here)
 *
 * A corrupt file must give one error line, never a crash: lengths and counts are checked
 * against the bytes that remain before anything is read or allocated.
 */
#define _GNU_SOURCE
#include "tk_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_KV (1u << 20)
#define GGUF_MAX_TENSORS (1u << 20)

typedef struct {
    const uint8_t *p, *end;
    char *err;
} cursor;

/* Write one line naming the problem into err; returns TK_ERR so callers can return it. */
int tk_fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TK_ERR_LEN, fmt, ap);
    va_end(ap);
    return TK_ERR;
}

static int take(cursor *c, size_t n, const uint8_t **out, const char *what) {
    if ((size_t)(c->end - c->p) < n)
        return tk_fail(c->err, "GGUF truncated: %s needs %zu bytes, %zu are left", what, n,
                    (size_t)(c->end - c->p));
    *out = c->p;
    c->p += n;
    return TK_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    const uint8_t *p = NULL;
    if (take(c, 4, &p, what)) return TK_ERR;
    memcpy(v, p, 4);
    return TK_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    const uint8_t *p = NULL;
    if (take(c, 8, &p, what)) return TK_ERR;
    memcpy(v, p, 8);
    return TK_OK;
}

static int rd_str(cursor *c, const char **s, uint64_t *len, const char *what) {
    const uint8_t *p = NULL;
    if (rd_u64(c, len, what)) return TK_ERR;
    if (*len > (uint64_t)(c->end - c->p))
        return tk_fail(c->err, "GGUF corrupt: %s length %llu exceeds the %zu bytes left", what,
                    (unsigned long long)*len, (size_t)(c->end - c->p));
    if (take(c, (size_t)*len, &p, what)) return TK_ERR;
    *s = (const char *)p;
    return TK_OK;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case TK_GV_UINT8: case TK_GV_INT8: case TK_GV_BOOL: return 1;
    case TK_GV_UINT16: case TK_GV_INT16: return 2;
    case TK_GV_UINT32: case TK_GV_INT32: case TK_GV_FLOAT32: return 4;
    case TK_GV_UINT64: case TK_GV_INT64: case TK_GV_FLOAT64: return 8;
    default: return 0;
    }
}

/* Block size and bytes per block of the tensor types the kernels support. */
static int type_layout(uint32_t type, uint64_t *blk, uint64_t *bytes) {
    switch (type) {
    case TK_F32: *blk = 1; *bytes = 4; return TK_OK;
    case TK_F16: *blk = 1; *bytes = 2; return TK_OK;
    case TK_Q4_0: *blk = 32; *bytes = 18; return TK_OK;
    case TK_Q4_1: *blk = 32; *bytes = 20; return TK_OK;
    case TK_Q8_0: *blk = 32; *bytes = 34; return TK_OK;
    default: return TK_ERR;
    }
}

const char *tk_type_name(uint32_t type) {
    static const char *names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1",
                                  "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
                                  "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                  "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
                                  "BF16"};
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

/* Parse one metadata entry (key, type, value) at the cursor, recording where its value is.
 * Called twice over the same bytes: first with offsets == NULL to count the elements of all
 * string arrays, so their offset table is one allocation; then with that table, into which
 * element i of each string array gets its offset from the array's start (the tokenizer reads
 * ~100k strings, O(1) each). *n_strings counts the elements seen so far. */
static int parse_kv(cursor *c, tk_gguf_kv *kv, uint64_t *offsets, uint64_t *n_strings) {
    if (rd_str(c, &kv->key, &kv->key_len, "metadata key") || rd_u32(c, &kv->type, "metadata type"))
        return TK_ERR;
    kv->val = c->p;
    if (kv->type == TK_GV_STRING) {
        const char *s;
        uint64_t n;
        return rd_str(c, &s, &n, "metadata string");
    }
    if (kv->type == TK_GV_ARRAY) {
        uint32_t at;
        uint64_t n;
        if (rd_u32(c, &at, "array type") || rd_u64(c, &n, "array length")) return TK_ERR;
        kv->arr_type = at;
        kv->arr_n = n;
        kv->val = c->p;
        if (at == TK_GV_STRING) {
            /* each element needs at least its 8-byte length */
            if (n > (uint64_t)(c->end - c->p) / 8)
                return tk_fail(c->err, "GGUF corrupt: string array of %llu elements cannot fit",
                            (unsigned long long)n);
            uint64_t *off = offsets ? offsets + *n_strings : NULL;
            for (uint64_t i = 0; i < n; i++) {
                const char *s;
                uint64_t len;
                if (off) off[i] = (uint64_t)(c->p - kv->val);
                if (rd_str(c, &s, &len, "array string")) return TK_ERR;
            }
            kv->str_off = off;
            *n_strings += n;
            return TK_OK;
        }
        size_t es = scalar_size(at);
        if (es == 0) return tk_fail(c->err, "GGUF corrupt: unsupported array element type %u", at);
        if (n > (uint64_t)(c->end - c->p) / es)
            return tk_fail(c->err, "GGUF corrupt: array of %llu elements exceeds the file",
                        (unsigned long long)n);
        c->p += n * es;
        return TK_OK;
    }
    size_t es = scalar_size(kv->type);
    if (es == 0) return tk_fail(c->err, "GGUF corrupt: unknown metadata value type %u", kv->type);
    const uint8_t *p = NULL;
    return take(c, es, &p, "metadata value");
}

static int key_eq(const char *s, uint64_t len, const char *key) {
    return strlen(key) == len && memcmp(s, key, len) == 0;
}

int tk_gguf_open(tk_gguf *g, const char *path, char err[TK_ERR_LEN]) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    g->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (g->fd < 0) return tk_fail(err, "cannot open model %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(g->fd, &st) != 0) {
        tk_fail(err, "cannot stat model %s: %s", path, strerror(errno));
        goto bad;
    }
    if (!S_ISREG(st.st_mode)) {
        tk_fail(err, "model %s is not a regular file", path);
        goto bad;
    }
    if (st.st_size < 24) {
        tk_fail(err, "model %s is not a GGUF file: %lld bytes is shorter than a GGUF header", path,
             (long long)st.st_size);
        goto bad;
    }
    g->size = (size_t)st.st_size;
    /* private: an upset in RAM (or a flip written through /proc/PID/mem) changes this process's
     * copy, never the file, and the scrubber repairs it from the file (tk_scrub.c) */
    void *map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, g->fd, 0);
    if (map == MAP_FAILED) {
        tk_fail(err, "cannot map model %s: %s", path, strerror(errno));
        goto bad;
    }
    g->map = map;

    cursor c = {g->map, g->map + g->size, err};
    if (memcmp(g->map, "GGUF", 4) != 0) {
        tk_fail(err, "model %s is not a GGUF file (bad magic)", path);
        goto bad;
    }
    c.p += 4;
    if (rd_u32(&c, &g->version, "version")) goto bad;
    if (g->version < 2 || g->version > 3) {
        tk_fail(err, "model %s: unsupported GGUF version %u (need 2 or 3)", path, g->version);
        goto bad;
    }
    if (rd_u64(&c, &g->n_tensors, "tensor count") || rd_u64(&c, &g->n_kv, "metadata count")) goto bad;
    if (g->n_kv > GGUF_MAX_KV || g->n_tensors > GGUF_MAX_TENSORS) {
        tk_fail(err, "GGUF corrupt: %llu metadata entries and %llu tensors is beyond any model",
             (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors);
        goto bad;
    }

    uint64_t n_strings = 0;
    cursor counting = c;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        tk_gguf_kv scratch;
        if (parse_kv(&counting, &scratch, NULL, &n_strings)) goto bad;
    }
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->str_offsets = malloc((n_strings ? n_strings : 1) * sizeof *g->str_offsets);
    if (!g->kv || !g->tensors || !g->str_offsets) {
        tk_fail(err, "out of memory reading the GGUF tables");
        goto bad;
    }
    uint64_t n_recorded = 0;
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        tk_gguf_kv *kv = &g->kv[i];
        if (parse_kv(&c, kv, g->str_offsets, &n_recorded)) goto bad;
        if (key_eq(kv->key, kv->key_len, "general.alignment")) {
            int64_t a;
            if (tk_gguf_get_i64(g, "general.alignment", &a) != TK_OK || a <= 0 || a > 65536 ||
                (a & (a - 1)) != 0) {
                tk_fail(err, "GGUF corrupt: general.alignment must be a power of two up to 65536");
                goto bad;
            }
            g->alignment = (uint64_t)a;
        }
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        tk_gguf_tensor *t = &g->tensors[i];
        if (rd_str(&c, &t->name, &t->name_len, "tensor name") ||
            rd_u32(&c, &t->n_dims, "tensor dims"))
            goto bad;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
            tk_fail(err, "GGUF corrupt: tensor %.*s has %u dimensions", (int)t->name_len, t->name,
                 t->n_dims);
            goto bad;
        }
        uint64_t n_el = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (rd_u64(&c, &t->ne[d], "tensor shape")) goto bad;
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 40) || n_el > ((uint64_t)1 << 40) / t->ne[d]) {
                tk_fail(err, "GGUF corrupt: tensor %.*s has an impossible shape", (int)t->name_len,
                     t->name);
                goto bad;
            }
            n_el *= t->ne[d];
        }
        uint64_t offset, blk, bpb;
        if (rd_u32(&c, &t->type, "tensor type") || rd_u64(&c, &offset, "tensor offset")) goto bad;
        if (type_layout(t->type, &blk, &bpb) != TK_OK) {
            tk_fail(err, "unsupported tensor type %s (%u) for %.*s: supported are F32, F16, Q4_0, Q4_1, Q8_0",
                 tk_type_name(t->type), t->type, (int)t->name_len, t->name);
            goto bad;
        }
        if (t->ne[0] % blk != 0) {
            tk_fail(err, "GGUF corrupt: tensor %.*s row length %llu is not a multiple of the %s block (%llu)",
                 (int)t->name_len, t->name, (unsigned long long)t->ne[0], tk_type_name(t->type),
                 (unsigned long long)blk);
            goto bad;
        }
        t->n_bytes = n_el / blk * bpb;
        /* data pointer resolved once the data section start is known */
        t->data = (const void *)(uintptr_t)offset;
    }

    size_t header_end = (size_t)(c.p - g->map);
    size_t data_start = (header_end + g->alignment - 1) / g->alignment * g->alignment;
    if (data_start > g->size) {
        tk_fail(err, "GGUF truncated: no tensor data section");
        goto bad;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        tk_gguf_tensor *t = &g->tensors[i];
        uint64_t offset = (uint64_t)(uintptr_t)t->data;
        if (offset % g->alignment != 0) {
            tk_fail(err, "GGUF corrupt: tensor %.*s offset %llu is not aligned to %llu",
                 (int)t->name_len, t->name, (unsigned long long)offset,
                 (unsigned long long)g->alignment);
            goto bad;
        }
        if (offset > g->size - data_start || t->n_bytes > g->size - data_start - offset) {
            tk_fail(err, "GGUF truncated: tensor %.*s (%llu bytes at %llu) runs past the end of the file",
                 (int)t->name_len, t->name, (unsigned long long)t->n_bytes,
                 (unsigned long long)offset);
            goto bad;
        }
        t->data = g->map + data_start + offset;
    }
    return TK_OK;
bad:
    tk_gguf_close(g);
    return TK_ERR;
}

void tk_gguf_close(tk_gguf *g) {
    if (g->map) munmap((void *)g->map, g->size);
    if (g->fd >= 0) close(g->fd);
    free(g->kv);
    free(g->tensors);
    free(g->str_offsets);
    memset(g, 0, sizeof *g);
    g->fd = -1;
}

const tk_gguf_kv *tk_gguf_find(const tk_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (key_eq(g->kv[i].key, g->kv[i].key_len, key)) return &g->kv[i];
    return NULL;
}

const tk_gguf_tensor *tk_gguf_tensor_find(const tk_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (key_eq(g->tensors[i].name, g->tensors[i].name_len, name)) return &g->tensors[i];
    return NULL;
}

static int scalar_i64(uint32_t type, const uint8_t *p, int64_t *out) {
    switch (type) {
    case TK_GV_UINT8: *out = *p; return TK_OK;
    case TK_GV_INT8: *out = (int8_t)*p; return TK_OK;
    case TK_GV_BOOL: *out = *p != 0; return TK_OK;
    case TK_GV_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return TK_OK; }
    case TK_GV_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return TK_OK; }
    case TK_GV_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return TK_OK; }
    case TK_GV_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return TK_OK; }
    case TK_GV_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > INT64_MAX) return TK_ERR;
        *out = (int64_t)v;
        return TK_OK;
    }
    case TK_GV_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return TK_OK; }
    default: return TK_ERR;
    }
}

int tk_gguf_get_i64(const tk_gguf *g, const char *key, int64_t *out) {
    const tk_gguf_kv *kv = tk_gguf_find(g, key);
    return kv ? scalar_i64(kv->type, kv->val, out) : TK_ERR;
}

int tk_gguf_get_f64(const tk_gguf *g, const char *key, double *out) {
    const tk_gguf_kv *kv = tk_gguf_find(g, key);
    if (!kv) return TK_ERR;
    if (kv->type == TK_GV_FLOAT32) {
        float v;
        memcpy(&v, kv->val, 4);
        *out = v;
        return TK_OK;
    }
    if (kv->type == TK_GV_FLOAT64) {
        memcpy(out, kv->val, 8);
        return TK_OK;
    }
    int64_t i;
    if (scalar_i64(kv->type, kv->val, &i) != TK_OK) return TK_ERR;
    *out = (double)i;
    return TK_OK;
}

int tk_gguf_get_str(const tk_gguf *g, const char *key, const char **s, uint64_t *len) {
    const tk_gguf_kv *kv = tk_gguf_find(g, key);
    if (!kv || kv->type != TK_GV_STRING) return TK_ERR;
    memcpy(len, kv->val, 8);
    *s = (const char *)kv->val + 8;
    return TK_OK;
}

int tk_gguf_arr_str(const tk_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len) {
    if (kv->type != TK_GV_ARRAY || kv->arr_type != TK_GV_STRING || i >= kv->arr_n) return TK_ERR;
    const uint8_t *p = kv->val + kv->str_off[i];
    memcpy(len, p, 8);
    *s = (const char *)p + 8;
    return TK_OK;
}

int tk_gguf_arr_i64(const tk_gguf_kv *kv, uint64_t i, int64_t *out) {
    if (kv->type != TK_GV_ARRAY || i >= kv->arr_n) return TK_ERR;
    size_t es = scalar_size(kv->arr_type);
    if (es == 0) return TK_ERR;
    return scalar_i64(kv->arr_type, kv->val + i * es, out);
}
