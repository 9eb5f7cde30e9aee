/* The llama model: hyper-parameters from GGUF metadata, tensors bound in place from the
 * mapping, every buffer allocated once at load, and the forward pass.
 *
 * A forward pass takes n rows (token, slot, pos). Decode of one stream is n = 1; batched decode
 * is one row per sequence (each its own KV-cache slot); prefill is a chunk of one sequence's
 * prompt. The same code serves all three, and since every kernel computes each row the same way
 * whatever the others are, a sequence gets bit-identical logits alone or in a batch.
 */
#define _GNU_SOURCE
#include "tk_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 256
#define MAX_SLOTS 1024
#define PREFILL_CHUNK 64        /* prompt rows per forward: enough reuse of each weight row */
#define MAX_ALLOC ((size_t)16 << 30)

typedef struct {
    const tk_gguf_tensor *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} tk_layer;

struct tk_model {
    tk_gguf gguf;
    tk_config c;
    tk_kernels k;
    tk_pool *pool;
    int n_threads, n_ctx, n_slots, max_rows;
    const tk_gguf_tensor *tok_embd, *output_norm, *output;
    tk_layer *layers;       /* [n_layers] */

    /* activations, one row per forward row */
    float *x;               /* [max_rows][dim] residual stream */
    float *xb;              /* [n_threads][max_rows][dim] normed residual, each thread's own copy */
    float *q;               /* [max_rows][n_heads * head_dim] */
    float *k_new, *v_new;   /* [max_rows][kv_dim] this pass's keys and values */
    float *att;             /* [max_rows][n_heads * head_dim] attention output */
    float *hb, *hb2;        /* [max_rows][ffn_dim] gate (then silu(gate) * up) and up */
    float *tmp;             /* [max_rows][dim] output of wo / w_down before the residual add */
    tk_q8 *xq;              /* [n_threads][max_rows][xq_ld] quantized input of the current matmul */
    int xq_ld;              /* blocks per row of xq */
    float *scores;          /* [n_threads][n_ctx] attention scores, one buffer per thread */
    float *q16;             /* [n_threads][head_dim] the query head rounded to fp16 values */
    float *rope_cos, *rope_sin; /* [n_ctx][rope_dim / 2] */
    uint16_t *k_cache, *v_cache; /* [n_layers][n_slots][n_ctx][kv_dim] fp16, as llama.cpp keeps it */
    float *logits;          /* [max_rows][vocab] */
    int *logit_rows;        /* [max_rows] forward row of each logits row */
    size_t alloc_bytes, weight_bytes;

    /* the pass in progress, read by every worker */
    const tk_row *rows;
    int n_rows, n_logits;
    char err[TK_ERR_LEN];
};

/* ----------------------------------------------------------------------------------------- */
/* Load */

static int get_int(tk_model *m, const char *arch, const char *name, int required, int def,
                   int *out, char *err) {
    char key[128];
    int64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (tk_gguf_get_i64(&m->gguf, key, &v) != TK_OK) {
        if (tk_gguf_find(&m->gguf, key)) return tk_fail(err, "metadata %s is not an integer", key);
        if (required) return tk_fail(err, "metadata %s is missing", key);
        *out = def;
        return TK_OK;
    }
    if (v < 1 || v > (1 << 24)) return tk_fail(err, "metadata %s = %lld is out of range", key, (long long)v);
    *out = (int)v;
    return TK_OK;
}

static int get_float(tk_model *m, const char *arch, const char *name, double def, float *out,
                     char *err) {
    char key[128];
    double v;
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (tk_gguf_get_f64(&m->gguf, key, &v) != TK_OK) {
        if (tk_gguf_find(&m->gguf, key)) return tk_fail(err, "metadata %s is not a number", key);
        v = def;
    }
    if (!(v > 0.0) || !isfinite(v)) return tk_fail(err, "metadata %s = %g is out of range", key, v);
    *out = (float)v;
    return TK_OK;
}

static int read_config(tk_model *m, char *err) {
    tk_config *c = &m->c;
    const char *s;
    uint64_t len;
    if (tk_gguf_get_str(&m->gguf, "general.architecture", &s, &len) != TK_OK)
        return tk_fail(err, "metadata general.architecture is missing");
    if (len != 5 || memcmp(s, "llama", 5) != 0)
        return tk_fail(err, "unsupported architecture '%.*s': this engine runs llama", (int)(len < 64 ? len : 64), s);
    const char *a = "llama";
    if (get_int(m, a, "block_count", 1, 0, &c->n_layers, err) ||
        get_int(m, a, "embedding_length", 1, 0, &c->dim, err) ||
        get_int(m, a, "feed_forward_length", 1, 0, &c->ffn_dim, err) ||
        get_int(m, a, "attention.head_count", 1, 0, &c->n_heads, err) ||
        get_int(m, a, "attention.head_count_kv", 0, c->n_heads, &c->n_kv_heads, err) ||
        get_int(m, a, "context_length", 0, 2048, &c->train_ctx, err) ||
        get_float(m, a, "rope.freq_base", 10000.0, &c->rope_base, err) ||
        get_float(m, a, "attention.layer_norm_rms_epsilon", 1e-5, &c->norm_eps, err))
        return TK_ERR;
    if (c->dim % c->n_heads != 0)
        return tk_fail(err, "embedding_length %d is not a multiple of head_count %d", c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    if (get_int(m, a, "attention.key_length", 0, c->head_dim, &c->head_dim, err)) return TK_ERR;
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return tk_fail(err, "head_count %d is not a multiple of head_count_kv %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) return tk_fail(err, "head size %d is odd: RoPE needs pairs", c->head_dim);
    if (get_int(m, a, "rope.dimension_count", 0, c->head_dim, &c->rope_dim, err)) return TK_ERR;
    if (c->rope_dim > c->head_dim || c->rope_dim % 2 != 0)
        return tk_fail(err, "rope.dimension_count %d does not fit head size %d", c->rope_dim, c->head_dim);
    c->kv_dim = c->n_kv_heads * c->head_dim;
    return TK_OK;
}

/* Find a tensor and check its type and shape [ne0, ne1] (ne1 = 0 for a vector). */
static int bind(tk_model *m, const char *name, int ne0, int ne1, int optional,
                const tk_gguf_tensor **out, char *err) {
    const tk_gguf_tensor *t = tk_gguf_tensor_find(&m->gguf, name);
    *out = t;
    if (!t) return optional ? TK_OK : tk_fail(err, "tensor %s is missing", name);
    int is_vec = ne1 == 0;
    uint64_t want1 = is_vec ? 1 : (uint64_t)ne1;
    if (t->ne[0] != (uint64_t)ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1)
        return tk_fail(err, "tensor %s has shape [%llu, %llu], expected [%d, %d]", name,
                    (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], ne0, is_vec ? 1 : ne1);
    if (is_vec && t->type != TK_F32)
        return tk_fail(err, "tensor %s is %s: norm weights must be F32", name, tk_type_name(t->type));
    if (!is_vec && !m->k.matmul[t->type])
        return tk_fail(err, "tensor %s type %s has no %s kernel", name, tk_type_name(t->type),
                    tk_simd_name(m->k.simd));
    m->weight_bytes += t->n_bytes;
    return TK_OK;
}

static int bind_tensors(tk_model *m, char *err) {
    const tk_config *c = &m->c;
    const tk_gguf_tensor *embd = tk_gguf_tensor_find(&m->gguf, "token_embd.weight");
    if (!embd) return tk_fail(err, "tensor token_embd.weight is missing");
    if (embd->ne[1] < 1 || embd->ne[1] > (1u << 24)) return tk_fail(err, "token_embd.weight has an impossible vocabulary");
    m->c.vocab = (int)embd->ne[1];
    int64_t meta_vocab;
    if (tk_gguf_get_i64(&m->gguf, "llama.vocab_size", &meta_vocab) == TK_OK && meta_vocab != m->c.vocab)
        return tk_fail(err, "llama.vocab_size %lld disagrees with token_embd.weight's %d rows",
                    (long long)meta_vocab, m->c.vocab);
    if (bind(m, "token_embd.weight", c->dim, c->vocab, 0, &m->tok_embd, err) ||
        bind(m, "output_norm.weight", c->dim, 0, 0, &m->output_norm, err) ||
        bind(m, "output.weight", c->dim, c->vocab, 1, &m->output, err))
        return TK_ERR;
    if (!m->output) m->output = m->tok_embd; /* tied embeddings: the output reads token_embd */
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return tk_fail(err, "out of memory binding %d layers", c->n_layers);
    const int qd = c->n_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        tk_layer *L = &m->layers[l];
        char n[96];
#define B(field, part, ne0, ne1)                                                           \
        snprintf(n, sizeof n, "blk.%d.%s.weight", l, part);                               \
        if (bind(m, n, ne0, ne1, 0, &L->field, err)) return TK_ERR;
        B(attn_norm, "attn_norm", c->dim, 0)
        B(wq, "attn_q", c->dim, qd)
        B(wk, "attn_k", c->dim, c->kv_dim)
        B(wv, "attn_v", c->dim, c->kv_dim)
        B(wo, "attn_output", qd, c->dim)
        B(ffn_norm, "ffn_norm", c->dim, 0)
        B(w_gate, "ffn_gate", c->dim, c->ffn_dim)
        B(w_up, "ffn_up", c->dim, c->ffn_dim)
        B(w_down, "ffn_down", c->ffn_dim, c->dim)
#undef B
    }
    return TK_OK;
}

static void *alloc_buf(tk_model *m, size_t count, size_t size) {
    void *p = NULL;
    if (count == 0) count = 1;
    if (count > MAX_ALLOC / size || m->alloc_bytes + count * size > MAX_ALLOC) return NULL;
    if (posix_memalign(&p, 64, count * size) != 0) return NULL;
    memset(p, 0, count * size);
    m->alloc_bytes += count * size;
    return p;
}

static int alloc_buffers(tk_model *m, char *err) {
    const tk_config *c = &m->c;
    const size_t R = (size_t)m->max_rows, qd = (size_t)c->n_heads * c->head_dim;
    int max_in = c->dim > c->ffn_dim ? c->dim : c->ffn_dim;
    if ((int)qd > max_in) max_in = (int)qd;
    m->xq_ld = (max_in + TK_QK - 1) / TK_QK;
    size_t kv = (size_t)c->n_layers * m->n_slots * m->n_ctx * c->kv_dim;
    if (kv / c->n_layers / m->n_slots / m->n_ctx != (size_t)c->kv_dim || kv > MAX_ALLOC / 4)
        return tk_fail(err, "KV cache for n_ctx %d x %d slots would exceed %zu GiB", m->n_ctx,
                    m->n_slots, MAX_ALLOC >> 30);
    const size_t T = (size_t)m->n_threads;
    if (!(m->x = alloc_buf(m, R * c->dim, 4)) || !(m->xb = alloc_buf(m, T * R * c->dim, 4)) ||
        !(m->q = alloc_buf(m, R * qd, 4)) || !(m->k_new = alloc_buf(m, R * c->kv_dim, 4)) ||
        !(m->v_new = alloc_buf(m, R * c->kv_dim, 4)) || !(m->att = alloc_buf(m, R * qd, 4)) ||
        !(m->hb = alloc_buf(m, R * c->ffn_dim, 4)) || !(m->hb2 = alloc_buf(m, R * c->ffn_dim, 4)) ||
        !(m->tmp = alloc_buf(m, R * c->dim, 4)) ||
        !(m->xq = alloc_buf(m, T * R * m->xq_ld, sizeof(tk_q8))) ||
        !(m->scores = alloc_buf(m, (size_t)m->n_threads * m->n_ctx, 4)) ||
        !(m->q16 = alloc_buf(m, (size_t)m->n_threads * c->head_dim, 4)) ||
        !(m->rope_cos = alloc_buf(m, (size_t)m->n_ctx * c->rope_dim / 2, 4)) ||
        !(m->rope_sin = alloc_buf(m, (size_t)m->n_ctx * c->rope_dim / 2, 4)) ||
        !(m->k_cache = alloc_buf(m, kv, 2)) || !(m->v_cache = alloc_buf(m, kv, 2)) ||
        !(m->logits = alloc_buf(m, R * c->vocab, 4)) ||
        !(m->logit_rows = alloc_buf(m, R, sizeof(int))))
        return tk_fail(err, "out of memory allocating buffers (n_ctx %d, %d slots)", m->n_ctx, m->n_slots);
    /* GGUF llama RoPE rotates adjacent pairs (2i, 2i+1) by pos * base^(-2i / rope_dim) */
    const int half = c->rope_dim / 2;
    for (int p = 0; p < m->n_ctx; p++)
        for (int i = 0; i < half; i++) {
            double theta = p * pow((double)c->rope_base, -2.0 * i / c->rope_dim);
            m->rope_cos[(size_t)p * half + i] = (float)cos(theta);
            m->rope_sin[(size_t)p * half + i] = (float)sin(theta);
        }
    return TK_OK;
}

int tk_model_load(tk_model **out, const char *path, const tk_load_params *p, char err[TK_ERR_LEN]) {
    *out = NULL;
    if (p->n_threads < 1 || p->n_threads > MAX_THREADS)
        return tk_fail(err, "threads must be between 1 and %d, got %d", MAX_THREADS, p->n_threads);
    if (p->n_slots < 1 || p->n_slots > MAX_SLOTS)
        return tk_fail(err, "batch size (sequence slots) must be between 1 and %d, got %d", MAX_SLOTS, p->n_slots);
    if (p->n_ctx < 1) return tk_fail(err, "context length must be at least 1, got %d", p->n_ctx);
    tk_model *m = calloc(1, sizeof *m);
    if (!m) return tk_fail(err, "out of memory");
    m->gguf.fd = -1;
    if (tk_kernels_init(&m->k, p->simd) != TK_OK) {
        tk_fail(err, "SIMD path '%s' is not available on this CPU", tk_simd_name(p->simd));
        goto bad;
    }
    if (tk_gguf_open(&m->gguf, path, err) != TK_OK) goto bad;
    if (read_config(m, err) || bind_tensors(m, err)) goto bad;
    if (p->n_ctx > m->c.train_ctx) {
        tk_fail(err, "context length %d exceeds the model's %d", p->n_ctx, m->c.train_ctx);
        goto bad;
    }
    m->n_threads = p->n_threads;
    m->n_ctx = p->n_ctx;
    m->n_slots = p->n_slots;
    m->max_rows = p->n_slots > PREFILL_CHUNK ? p->n_slots : PREFILL_CHUNK;
    if (alloc_buffers(m, err)) goto bad;
    if (tk_pool_new(&m->pool, m->n_threads) != TK_OK) {
        tk_fail(err, "cannot start %d worker threads", m->n_threads);
        goto bad;
    }
    *out = m;
    return TK_OK;
bad:
    tk_model_free(m);
    return TK_ERR;
}

void tk_model_free(tk_model *m) {
    if (!m) return;
    tk_pool_free(m->pool);
    void *bufs[] = {m->x, m->xb, m->q, m->k_new, m->v_new, m->att, m->hb, m->hb2, m->tmp, m->xq,
                    m->scores, m->q16, m->rope_cos, m->rope_sin, m->k_cache, m->v_cache, m->logits,
                    m->logit_rows, m->layers};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    if (m->gguf.fd >= 0 || m->gguf.map) tk_gguf_close(&m->gguf);
    free(m);
}

const tk_config *tk_model_config(const tk_model *m) { return &m->c; }
const tk_gguf *tk_model_gguf(const tk_model *m) { return &m->gguf; }
const char *tk_model_error(const tk_model *m) { return m->err; }
int tk_model_simd(const tk_model *m) { return m->k.simd; }
int tk_model_threads(const tk_model *m) { return m->n_threads; }
int tk_model_n_ctx(const tk_model *m) { return m->n_ctx; }
int tk_model_n_slots(const tk_model *m) { return m->n_slots; }
int tk_model_max_rows(const tk_model *m) { return m->max_rows; }
size_t tk_model_alloc_bytes(const tk_model *m) { return m->alloc_bytes; }
size_t tk_model_weight_bytes(const tk_model *m) { return m->weight_bytes; }
const float *tk_model_logits(const tk_model *m) { return m->logits; }

/* ----------------------------------------------------------------------------------------- */
/* Forward */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Rotate the pairs (r, r+1) of dims [r0, r1) of one row of heads of size hd; r0 is even (row
 * splits are multiples of 4), so a pair never straddles two threads. */
static void rope_rows(float *v, int r0, int r1, int hd, int rope_dim, const float *cs, const float *sn) {
    for (int r = r0; r < r1; r += 2) {
        const int j = r % hd;
        if (j >= rope_dim) continue;
        const float a = v[r], b = v[r + 1];
        v[r] = a * cs[j / 2] - b * sn[j / 2];
        v[r + 1] = a * sn[j / 2] + b * cs[j / 2];
    }
}

/* This thread's share [*r0, *r1) of n output rows, cut on multiples of 4 (the kernels' tile). */
static void split(int n, int tid, int nt, int *r0, int *r1) {
    int units = (n + 3) / 4;
    *r0 = (int)((long)units * tid / nt) * 4;
    *r1 = (int)((long)units * (tid + 1) / nt) * 4;
    if (*r0 > n) *r0 = n;
    if (*r1 > n) *r1 = n;
}

/* What one thread works with: its row share of every matmul, and its private matmul inputs. */
typedef struct {
    tk_model *m;
    int tid;
    float *xb;     /* [max_rows][dim] this thread's normed rows */
    tk_q8 *xq;     /* [max_rows][xq_ld] this thread's quantized rows */
} worker;

/* y[i][r] = W x_i for this thread's rows r, from float rows xf (ld n_in) or, for a
 * block-quantized W, from the thread's quantized copy made by prepare_input. */
static void matmul(const worker *w, const tk_gguf_tensor *W, const float *xf, int ncols, float *y,
                   int ldy, int *r0, int *r1) {
    tk_model *m = w->m;
    int n_in = (int)W->ne[0];
    split((int)W->ne[1], w->tid, m->n_threads, r0, r1);
    if (*r0 >= *r1) return;
    if (tk_type_is_blocked(W->type))
        m->k.matmul[W->type](W->data, n_in, *r0, *r1, w->xq, m->xq_ld, ncols, y, ldy);
    else
        m->k.matmul[W->type](W->data, n_in, *r0, *r1, xf, n_in, ncols, y, ldy);
}

/* Quantize n rows of x (length len, stride ld) into the thread's xq when a consumer needs it.
 * Every thread quantizes every row: a few microseconds of duplicate work instead of a barrier. */
static void prepare_input(const worker *w, const float *x, int len, int ld, int n, int needed) {
    if (!needed) return;
    for (int i = 0; i < n; i++)
        w->m->k.quantize_q8(x + (size_t)i * ld, w->xq + (size_t)i * w->m->xq_ld, len);
}

static void norm_rows(const worker *w, const float *weight, int n, const int *row_of) {
    tk_model *m = w->m;
    const int dim = m->c.dim;
    for (int i = 0; i < n; i++)
        rmsnorm(w->xb + (size_t)i * dim, m->x + (size_t)(row_of ? row_of[i] : i) * dim, weight, dim,
                m->c.norm_eps);
}

static uint16_t *cache_at(const tk_model *m, uint16_t *cache, int l, int slot, int pos) {
    return cache + (((size_t)l * m->n_slots + slot) * m->n_ctx + pos) * m->c.kv_dim;
}

/* One head of one row over its slot's cache. Keys, values, the query and the attention
 * weights are rounded to fp16 where llama.cpp's default (non-flash) CPU path rounds them. */
static void attention(tk_model *m, int l, int i, int h, float *scores, float *q16) {
    const tk_config *c = &m->c;
    const tk_row *row = &m->rows[i];
    const int hd = c->head_dim, kvh = h / (c->n_heads / c->n_kv_heads), T = row->pos + 1;
    const float *qh = m->q + (size_t)i * c->n_heads * hd + h * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const uint16_t *kc = cache_at(m, m->k_cache, l, row->slot, 0) + kvh * hd;
    const uint16_t *vc = cache_at(m, m->v_cache, l, row->slot, 0) + kvh * hd;
    for (int d = 0; d < hd; d++) q16[d] = tk_fp16_round(qh[d]);
    float mx = -INFINITY;
    for (int t = 0; t < T; t++) {
        scores[t] = m->k.dot_f16(kc + (size_t)t * c->kv_dim, q16, hd) * scale;
        if (scores[t] > mx) mx = scores[t];
    }
    float sum = 0.0f;
    for (int t = 0; t < T; t++) {
        scores[t] = expf(scores[t] - mx);
        sum += scores[t];
    }
    float *out = m->att + (size_t)i * c->n_heads * hd + h * hd;
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int t = 0; t < T; t++)
        m->k.axpy_f16(tk_fp16_round(scores[t] / sum), vc + (size_t)t * c->kv_dim, out, hd);
}

/* forward_worker: the hot function. Every thread walks all layers; matmuls are split by
 * output row, attention by (row, head). Five barriers a layer, one after each step whose
 * output the next step reads across threads. */
static void forward_worker(void *arg, int tid) {
    tk_model *m = arg;
    const tk_config *c = &m->c;
    const int n = m->n_rows, nt = m->n_threads, dim = c->dim, qd = c->n_heads * c->head_dim;
    const int half = c->rope_dim / 2;
    const worker w = {m, tid, m->xb + (size_t)tid * m->max_rows * dim,
                      m->xq + (size_t)tid * m->max_rows * m->xq_ld};
    float *scores = m->scores + (size_t)tid * m->n_ctx, *q16 = m->q16 + (size_t)tid * c->head_dim;
    int r0, r1;

    for (int i = n * tid / nt; i < n * (tid + 1) / nt; i++)
        tk_dequant_row(m->tok_embd->type,
                       (const uint8_t *)m->tok_embd->data + tk_row_bytes(m->tok_embd->type, dim) * m->rows[i].token,
                       m->x + (size_t)i * dim, dim);
    tk_pool_barrier(m->pool);

    for (int l = 0; l < c->n_layers; l++) {
        const tk_layer *L = &m->layers[l];
        /* attention block: q, k, v of this thread's rows, rotated and cached right away */
        norm_rows(&w, L->attn_norm->data, n, NULL);
        prepare_input(&w, w.xb, dim, dim, n,
                      tk_type_is_blocked(L->wq->type) || tk_type_is_blocked(L->wk->type) ||
                      tk_type_is_blocked(L->wv->type));
        matmul(&w, L->wq, w.xb, n, m->q, qd, &r0, &r1);
        for (int i = 0; i < n; i++) {
            const int p = m->rows[i].pos;
            rope_rows(m->q + (size_t)i * qd, r0, r1, c->head_dim, c->rope_dim,
                      m->rope_cos + (size_t)p * half, m->rope_sin + (size_t)p * half);
        }
        matmul(&w, L->wk, w.xb, n, m->k_new, c->kv_dim, &r0, &r1);
        for (int i = 0; i < n; i++) {
            const tk_row *row = &m->rows[i];
            float *k = m->k_new + (size_t)i * c->kv_dim;
            rope_rows(k, r0, r1, c->head_dim, c->rope_dim, m->rope_cos + (size_t)row->pos * half,
                      m->rope_sin + (size_t)row->pos * half);
            uint16_t *kc = cache_at(m, m->k_cache, l, row->slot, row->pos);
            for (int r = r0; r < r1; r++) kc[r] = tk_fp32_to_fp16(k[r]);
        }
        matmul(&w, L->wv, w.xb, n, m->v_new, c->kv_dim, &r0, &r1);
        for (int i = 0; i < n; i++) {
            const tk_row *row = &m->rows[i];
            const float *v = m->v_new + (size_t)i * c->kv_dim;
            uint16_t *vc = cache_at(m, m->v_cache, l, row->slot, row->pos);
            for (int r = r0; r < r1; r++) vc[r] = tk_fp32_to_fp16(v[r]);
        }
        tk_pool_barrier(m->pool);
        const int pairs = n * c->n_heads;
        for (int p = pairs * tid / nt; p < pairs * (tid + 1) / nt; p++)
            attention(m, l, p / c->n_heads, p % c->n_heads, scores, q16);
        tk_pool_barrier(m->pool);
        prepare_input(&w, m->att, qd, qd, n, tk_type_is_blocked(L->wo->type));
        matmul(&w, L->wo, m->att, n, m->tmp, dim, &r0, &r1);
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++) m->x[(size_t)i * dim + r] += m->tmp[(size_t)i * dim + r];
        tk_pool_barrier(m->pool);

        /* feed-forward block: down(silu(gate(x)) * up(x)) */
        norm_rows(&w, L->ffn_norm->data, n, NULL);
        prepare_input(&w, w.xb, dim, dim, n,
                      tk_type_is_blocked(L->w_gate->type) || tk_type_is_blocked(L->w_up->type));
        matmul(&w, L->w_gate, w.xb, n, m->hb, c->ffn_dim, &r0, &r1);
        matmul(&w, L->w_up, w.xb, n, m->hb2, c->ffn_dim, &r0, &r1);
        for (int i = 0; i < n; i++) {
            float *g = m->hb + (size_t)i * c->ffn_dim, *u = m->hb2 + (size_t)i * c->ffn_dim;
            for (int r = r0; r < r1; r++) g[r] = g[r] / (1.0f + expf(-g[r])) * u[r];
        }
        tk_pool_barrier(m->pool);
        prepare_input(&w, m->hb, c->ffn_dim, c->ffn_dim, n, tk_type_is_blocked(L->w_down->type));
        matmul(&w, L->w_down, m->hb, n, m->tmp, dim, &r0, &r1);
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++) m->x[(size_t)i * dim + r] += m->tmp[(size_t)i * dim + r];
        tk_pool_barrier(m->pool);
    }

    /* final norm and output projection, only for the rows whose logits are wanted */
    norm_rows(&w, m->output_norm->data, m->n_logits, m->logit_rows);
    prepare_input(&w, w.xb, dim, dim, m->n_logits, tk_type_is_blocked(m->output->type));
    matmul(&w, m->output, w.xb, m->n_logits, m->logits, c->vocab, &r0, &r1);
}

int tk_model_forward(tk_model *m, const tk_row *rows, int n) {
    if (n < 1 || n > m->max_rows)
        return tk_fail(m->err, "forward of %d rows: must be between 1 and %d", n, m->max_rows);
    int nl = 0;
    for (int i = 0; i < n; i++) {
        const tk_row *r = &rows[i];
        if (r->token < 0 || r->token >= m->c.vocab)
            return tk_fail(m->err, "token id %d is outside the vocabulary of %d", r->token, m->c.vocab);
        if (r->slot < 0 || r->slot >= m->n_slots)
            return tk_fail(m->err, "sequence slot %d is outside 0..%d", r->slot, m->n_slots - 1);
        if (r->pos < 0 || r->pos >= m->n_ctx)
            return tk_fail(m->err, "position %d is outside the context of %d", r->pos, m->n_ctx);
        if (r->want_logits) m->logit_rows[nl++] = i;
    }
    m->rows = rows;
    m->n_rows = n;
    m->n_logits = nl;
    tk_pool_run(m->pool, forward_worker, m);
    return TK_OK;
}
