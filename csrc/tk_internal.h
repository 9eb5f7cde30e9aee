/* Declarations shared between the engine's C files; not part of the public API. */
#ifndef TK_INTERNAL_H
#define TK_INTERNAL_H

#include "tk_engine.h"

#include <stdatomic.h>
#include <string.h>

#define TK_QK 32 /* weights per quantized block, for every block type we read */

/* GGUF weight blocks, byte-exact with ggml-common.h. fp16 fields are kept as raw bits. */
typedef struct { uint16_t d; uint8_t qs[16]; } tk_block_q4_0;           /* w = (nib - 8) d   */
typedef struct { uint16_t d, m; uint8_t qs[16]; } tk_block_q4_1;        /* w = nib d + m     */
typedef struct { uint16_t d; int8_t qs[32]; } tk_block_q8_0;            /* w = q d           */

/* An activation block: x ~= q * d, with s = d * sum(q) kept for the offset term of Q4_0/Q4_1
 * (sum_j (nib_j d_w + m) q_j d_x = d_w d_x sum nib_j q_j + m s). Activations are quantized
 * once per matmul input so the inner loops are integer dot products. d and s are rounded to
 * fp16 values, as in ggml's Q8_1/Q8_0, so our logits track llama.cpp's closely. */
typedef struct { float d, s; int8_t q[TK_QK]; } tk_q8;

float tk_fp16_to_fp32(uint16_t h);
uint16_t tk_fp32_to_fp16(float f);
float tk_fp16_round(float f);

/* y[c * ldy + r] = dot(row r of W, column c of x) for r in [r0, r1), c in [0, ncols).
 * Block-quantized W takes x as tk_q8 blocks (ldx in blocks); F32/F16 W takes float x (ldx in
 * floats). Every (r, c) is summed in the same order whatever the tiling, so a sequence decoded
 * alone or inside a batch gets bit-identical logits. */
typedef void (*tk_matmul_fn)(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                             int ncols, float *y, int ldy);

typedef struct {
    int simd;                               /* resolved enum tk_simd */
    tk_matmul_fn matmul[TK_Q8_0 + 1];       /* by weight type; NULL where unsupported */
    void (*quantize_q8)(const float *x, tk_q8 *q, int n);   /* n multiple of 32 */
    float (*dot_f16)(const uint16_t *h, const float *x, int n);  /* KV cache . query */
    void (*axpy_f16)(float a, const uint16_t *h, float *y, int n); /* y += a h */
} tk_kernels;

int tk_kernels_init(tk_kernels *k, int simd);
int tk_type_is_blocked(uint32_t type);
size_t tk_row_bytes(uint32_t type, int n_in);
/* Dequantize one row of n values (the embedding lookup). */
void tk_dequant_row(uint32_t type, const void *row, float *out, int n);

/* Thread pool: n threads including the caller; tk_pool_run calls fn(arg, tid) on each. */
typedef struct tk_pool tk_pool;
typedef void (*tk_task_fn)(void *arg, int tid);
int  tk_pool_new(tk_pool **out, int n_threads);
void tk_pool_free(tk_pool *p);
void tk_pool_run(tk_pool *p, tk_task_fn fn, void *arg);
void tk_pool_barrier(tk_pool *p);
int  tk_pool_size(const tk_pool *p);

double tk_now(void);

/* Write one line naming the problem into err (TK_ERR_LEN bytes); returns TK_ERR. */
int tk_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* TK_INTERNAL_H */
