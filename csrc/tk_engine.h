/* tokensat onboard LLM engine: the public C API.
 *
 * Portable C11, no Python. One top-down pass, in the manner of llama2.c:
 *   tk_gguf.c    GGUF file: mmap, bounds-checked parse, metadata and tensor table
 *   tk_kernels.c quantized dot products / matmuls: scalar, AVX2+FMA (x86-64), NEON (aarch64)
 *   tk_pool.c    persistent worker pool and spin barrier
 *   tk_model.c   llama hyper-parameters, tensor binding, buffers, the forward pass
 *   tk_sample.c  greedy / temperature / top-k / top-p sampling with a seeded RNG
 *   tk_decode.c  the decode loop (single stream with callback) and the batched decoder
 *
 * Conventions: every function that can fail returns an int status (TK_OK = 0) and, on failure,
 * writes one line naming the problem into the object's `err` buffer (or the caller's buffer
 * for loading). Nothing is allocated after tk_model_load returns.
 */
#ifndef TK_ENGINE_H
#define TK_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define TK_OK 0
#define TK_ERR (-1)
#define TK_ERR_LEN 256

/* ----------------------------------------------------------------------------------------- */
/* GGUF */

enum tk_ggml_type {
    TK_F32 = 0, TK_F16 = 1, TK_Q4_0 = 2, TK_Q4_1 = 3, TK_Q8_0 = 8,
};

enum tk_gguf_vtype {
    TK_GV_UINT8 = 0, TK_GV_INT8 = 1, TK_GV_UINT16 = 2, TK_GV_INT16 = 3, TK_GV_UINT32 = 4,
    TK_GV_INT32 = 5, TK_GV_FLOAT32 = 6, TK_GV_BOOL = 7, TK_GV_STRING = 8, TK_GV_ARRAY = 9,
    TK_GV_UINT64 = 10, TK_GV_INT64 = 11, TK_GV_FLOAT64 = 12,
};

typedef struct {
    const char *key;        /* points into the mapping; not NUL-terminated */
    uint64_t key_len;
    uint32_t type;          /* enum tk_gguf_vtype */
    uint32_t arr_type;      /* element type when type == ARRAY */
    uint64_t arr_n;         /* element count when type == ARRAY */
    const uint8_t *val;     /* the value (or the first array element) in the mapping */
    const uint64_t *str_off;/* for string arrays: offset of element i from val, [arr_n] */
} tk_gguf_kv;

typedef struct {
    const char *name;       /* points into the mapping; not NUL-terminated */
    uint64_t name_len;
    uint32_t n_dims;
    uint64_t ne[4];         /* ne[0] is the fastest-varying dimension (row length) */
    uint32_t type;          /* enum tk_ggml_type (validated as supported) */
    uint64_t n_bytes;
    const void *data;       /* in place in the mapping */
} tk_gguf_tensor;

typedef struct {
    int fd;
    const uint8_t *map;     /* [size] private read-only mapping of the whole file */
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    tk_gguf_kv *kv;         /* [n_kv] */
    tk_gguf_tensor *tensors;/* [n_tensors] */
    uint64_t *str_offsets;  /* backing store for every string array's str_off */
    uint64_t alignment;
} tk_gguf;

int  tk_gguf_open(tk_gguf *g, const char *path, char err[TK_ERR_LEN]);
void tk_gguf_close(tk_gguf *g);
const tk_gguf_kv *tk_gguf_find(const tk_gguf *g, const char *key);
const tk_gguf_tensor *tk_gguf_tensor_find(const tk_gguf *g, const char *name);
/* Typed reads of a scalar value; return TK_ERR if absent or of a non-numeric type. */
int tk_gguf_get_i64(const tk_gguf *g, const char *key, int64_t *out);
int tk_gguf_get_f64(const tk_gguf *g, const char *key, double *out);
/* A string value (or element i of a string array) as pointer + length into the mapping. */
int tk_gguf_get_str(const tk_gguf *g, const char *key, const char **s, uint64_t *len);
int tk_gguf_arr_str(const tk_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len);
int tk_gguf_arr_i64(const tk_gguf_kv *kv, uint64_t i, int64_t *out);
const char *tk_type_name(uint32_t type);

/* ----------------------------------------------------------------------------------------- */
/* Kernels */

enum tk_simd { TK_SIMD_AUTO = 0, TK_SIMD_SCALAR = 1, TK_SIMD_AVX2 = 2, TK_SIMD_NEON = 3 };
const char *tk_simd_name(int simd);
/* Resolve AUTO to the best path this CPU has; TK_ERR when the requested path is unavailable. */
int tk_simd_resolve(int requested, int *resolved);

/* ----------------------------------------------------------------------------------------- */
/* Model */

typedef struct {
    int n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim, kv_dim, rope_dim;
    int vocab, train_ctx;
    float rope_base, norm_eps;
} tk_config;

typedef struct tk_model tk_model;

typedef struct {
    int n_ctx;      /* positions per sequence slot (KV-cache length) */
    int n_slots;    /* independent sequences held at once (batched decode) */
    int n_threads;  /* worker pool size, caller included */
    int simd;       /* enum tk_simd */
} tk_load_params;

/* One row of a forward pass: token `token` at position `pos` of sequence slot `slot`. */
typedef struct {
    int token, slot, pos, want_logits;
} tk_row;

int  tk_model_load(tk_model **out, const char *path, const tk_load_params *p, char err[TK_ERR_LEN]);
void tk_model_free(tk_model *m);
const tk_config *tk_model_config(const tk_model *m);
const tk_gguf *tk_model_gguf(const tk_model *m);
const char *tk_model_error(const tk_model *m);
int    tk_model_simd(const tk_model *m);
int    tk_model_threads(const tk_model *m);
int    tk_model_n_ctx(const tk_model *m);
int    tk_model_n_slots(const tk_model *m);
int    tk_model_max_rows(const tk_model *m);
size_t tk_model_alloc_bytes(const tk_model *m);   /* buffers + KV cache allocated at load */
size_t tk_model_weight_bytes(const tk_model *m);  /* mapped weight bytes used by the forward */
/* Run rows [n <= max_rows] through the network. Rows of one slot must be in position order and
 * the slot's earlier positions must already be in its KV cache. Logits of the rows marked
 * want_logits are written in row order to the buffer returned by tk_model_logits. */
int tk_model_forward(tk_model *m, const tk_row *rows, int n);
const float *tk_model_logits(const tk_model *m);  /* [n_want][vocab] of the last forward */

/* ----------------------------------------------------------------------------------------- */
/* Sampling */

typedef struct {
    float temperature;  /* <= 0: greedy */
    int   top_k;        /* <= 0: off */
    float top_p;        /* >= 1: off */
    uint64_t seed;
    uint64_t rng_state; /* 0: seed the RNG from seed; else start it at this state (a resumed
                         * sequence: the state reported after its last token) */
} tk_sample_params;

/* xorshift64* generator. Greedy sampling (temperature <= 0 or top-k 1) never draws from it; every
 * other token draws exactly once, so a sequence's state after token i is all a resumed run needs
 * to continue with the draws the uninterrupted run would have made. 0 is its fixed point. */
typedef struct { uint64_t state; } tk_rng;
void tk_rng_seed(tk_rng *r, uint64_t seed);
/* The state sp asks for: sp->rng_state when non-zero, else the state seeded from sp->seed. */
void tk_rng_start(tk_rng *r, const tk_sample_params *sp);
/* scratch holds [vocab] (index, prob) pairs; it is the caller's, allocated once. */
typedef struct { float p; int i; } tk_prob_index;
int tk_sample(const float *logits, int vocab, const tk_sample_params *sp, tk_rng *rng,
              tk_prob_index *scratch);

/* ----------------------------------------------------------------------------------------- */
/* Decoding */

enum tk_stop { TK_STOP_NONE = 0, TK_STOP_EOS = 1, TK_STOP_LIMIT = 2, TK_STOP_REQUEST = 3,
               TK_STOP_CONTEXT = 4 };

/* Called with each new token; a non-zero return asks the loop to stop at this boundary. */
typedef int (*tk_token_cb)(int token, void *user);

typedef struct {
    int n_prompt, n_reused;   /* prompt tokens, of which taken from the slot's cache */
    int n_generated;
    int stop_reason;          /* enum tk_stop */
    double prefill_s, decode_s, first_token_s;
    uint64_t rng_state;       /* the RNG state after the last token sampled (see tk_rng) */
} tk_gen_stats;

typedef struct tk_decoder tk_decoder;

int  tk_decoder_new(tk_decoder **out, tk_model *m, char err[TK_ERR_LEN]);
void tk_decoder_free(tk_decoder *d);
const char *tk_decoder_error(const tk_decoder *d);
/* Evaluate ids on slot (reusing the longest cached prefix) and return the last logits [vocab]. */
int tk_decoder_prefill(tk_decoder *d, int slot, const int *ids, int n, const float **logits);
/* Forget what slot's cache holds, so the next prompt on it is evaluated in full. */
int tk_decoder_forget(tk_decoder *d, int slot);
/* Single stream: prefill prompt on slot, then forward/sample/stop-check/append until EOS, the
 * limit, the callback or *stop_flag (read at every token boundary). out[max_new] receives the
 * generated ids; stats may be NULL.
 * Exact resume: a run interrupted after k tokens continues exactly as it would have when called
 * again with prompt = the original prompt + those k tokens, max_new reduced by k, and
 * sp->rng_state = the state tk_decoder_rng_state gave after the k-th token. Re-evaluating the
 * k tokens in a prefill gives the logits their one-row decode steps gave, bit for bit: every
 * kernel computes each row the same way whatever the other rows of the pass are. */
int tk_decoder_generate(tk_decoder *d, int slot, const int *prompt, int n_prompt, int max_new,
                        const tk_sample_params *sp, const int *eos_ids, int n_eos,
                        tk_token_cb cb, void *user, volatile int *stop_flag,
                        int *out, tk_gen_stats *stats);

/* Batched decode: sequences join (prefilled into a free slot), step together (one forward pass
 * for all active rows per step, so weights are read once per step), and leave when done. A
 * sequence resumes in a batch as in tk_decoder_generate: prompt + tokens so far, the rest of
 * max_new, and sp->rng_state. */
int tk_batch_join(tk_decoder *d, const int *prompt, int n_prompt, int max_new,
                  const tk_sample_params *sp, const int *eos_ids, int n_eos, int *slot_out);
/* One step over every active sequence: tokens[i], slots[i], stops[i] for i < *n_out. */
int tk_batch_step(tk_decoder *d, int *tokens, int *slots, int *stops, int *n_out);
int tk_batch_leave(tk_decoder *d, int slot);
int tk_batch_active(const tk_decoder *d);

/* The RNG state of slot's sequence after the last token it handed out (a batch step's token,
 * a generate callback's token, or once tk_decoder_generate returned its last; 0 before the slot
 * sampled anything). With the tokens so far, what a resumed sequence needs (tk_sample_params). */
int tk_decoder_rng_state(tk_decoder *d, int slot, uint64_t *state);
/* The logits [vocab] the slot's latest token was sampled from (after tk_batch_join: those of
 * the first token, sampled at the join and handed out by the next step). They live in the
 * model's logits buffer: TK_ERR once a later forward pass (a step, a join, a prefill) overwrote
 * them. For tests and inspection: the logits of a decode step against those of a re-prefill. */
int tk_decoder_logits(tk_decoder *d, int slot, const float **logits);

#endif /* TK_ENGINE_H */
