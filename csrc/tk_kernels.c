/* Kernels: activation quantization, quantized matmuls, and the float dot/axpy of attention.
 *
 * Three paths with one contract (tk_internal.h): scalar C for any CPU, AVX2+FMA+F16C on x86-64
 * (compiled through function target attributes and picked at run time, so one build serves
 * every x86-64), NEON on aarch64 (always present there). Weights are read in place from the
 * GGUF mapping; activations are quantized to 8 bits per 32-block so the inner loops are
 * integer multiply-adds, which is what makes a token cost about one read of the weights.
 *
 * All paths give the same bits. A 30-layer network rounds its activations to 8 bits at every
 * matmul, so a last-place difference in one sum can flip a rounding and, tokens later, the
 * greedy choice. So every path does the AVX2 arithmetic in the AVX2 order: a block's 32
 * products are summed exactly in 8 integer lanes of 4 consecutive products, each lane is
 * fused-multiply-added into its own float accumulator, and the lanes are added in one fixed
 * tree (lane_tree). Float dot products likewise run 16 lanes (two sets of 8) with fma.
 */
#include "tk_internal.h"

#include <math.h>
#include <stdio.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TK_HAVE_X86 1
#define TK_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define TK_HAVE_NEON 1
#endif

#define TK_INLINE static inline __attribute__((always_inline))

/* ----------------------------------------------------------------------------------------- */
/* Formats */

/* Exact fp16 -> fp32 without branches or F16C (the method of Maratos' FP16 library, as in
 * ggml): normals by an exponent rebias and one multiply, subnormals by a magic-number subtract. */
static inline float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float tk_fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = bits_to_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_to_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_to_f32(sign | (two_w < (1u << 27) ? f32_to_bits(denormalized) : f32_to_bits(normalized)));
}

/* fp32 to fp16 bits, rounding to nearest (ties to even) as F16C's vcvtps2ph and NEON's vcvt
 * do; written out so every path stores the same bits. */
uint16_t tk_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past 65504: inf */
    if (ax < 0x38800000u) { /* fp16 subnormal or zero: count of 2^-24 steps, ties to even */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint16_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t half = ((((ax >> 23) - 127 + 15)) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* a carry moves the exponent */
    return (uint16_t)(sign | half);
}

float tk_fp16_round(float f) { return tk_fp16_to_fp32(tk_fp32_to_fp16(f)); }

int tk_type_is_blocked(uint32_t type) {
    return type == TK_Q4_0 || type == TK_Q4_1 || type == TK_Q8_0;
}

size_t tk_row_bytes(uint32_t type, int n_in) {
    switch (type) {
    case TK_F32: return (size_t)n_in * 4;
    case TK_F16: return (size_t)n_in * 2;
    case TK_Q4_0: return (size_t)n_in / TK_QK * sizeof(tk_block_q4_0);
    case TK_Q4_1: return (size_t)n_in / TK_QK * sizeof(tk_block_q4_1);
    case TK_Q8_0: return (size_t)n_in / TK_QK * sizeof(tk_block_q8_0);
    default: return 0;
    }
}

void tk_dequant_row(uint32_t type, const void *row, float *out, int n) {
    switch (type) {
    case TK_F32: memcpy(out, row, (size_t)n * 4); return;
    case TK_F16: {
        const uint16_t *h = row;
        for (int i = 0; i < n; i++) out[i] = tk_fp16_to_fp32(h[i]);
        return;
    }
    case TK_Q4_0: {
        const tk_block_q4_0 *b = row;
        for (int i = 0; i < n / TK_QK; i++) {
            float d = tk_fp16_to_fp32(b[i].d);
            for (int j = 0; j < 16; j++) {
                out[i * TK_QK + j] = ((b[i].qs[j] & 15) - 8) * d;
                out[i * TK_QK + j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
            }
        }
        return;
    }
    case TK_Q4_1: {
        const tk_block_q4_1 *b = row;
        for (int i = 0; i < n / TK_QK; i++) {
            float d = tk_fp16_to_fp32(b[i].d), m = tk_fp16_to_fp32(b[i].m);
            for (int j = 0; j < 16; j++) {
                out[i * TK_QK + j] = (b[i].qs[j] & 15) * d + m;
                out[i * TK_QK + j + 16] = (b[i].qs[j] >> 4) * d + m;
            }
        }
        return;
    }
    case TK_Q8_0: {
        const tk_block_q8_0 *b = row;
        for (int i = 0; i < n / TK_QK; i++) {
            float d = tk_fp16_to_fp32(b[i].d);
            for (int j = 0; j < TK_QK; j++) out[i * TK_QK + j] = b[i].qs[j] * d;
        }
        return;
    }
    }
}

/* The offset term of Q4_1 blocks, sum_b m_b s_b, summed the same way on every path. */
TK_INLINE float q4_1_offset_row(const uint8_t *row, int nb, const tk_q8 *x, float (*fp16)(uint16_t)) {
    float acc = 0.0f;
    for (int b = 0; b < nb; b++) acc += fp16(((const tk_block_q4_1 *)row)[b].m) * x[b].s;
    return acc;
}

/* A float-weight matmul is one dot product per (row, column); each path supplies its dot. */
#define FLOAT_MATMUL(name, attr, wtype, dot)                                                     \
    attr static void name(const void *w, int n_in, int r0, int r1, const void *x, int ldx,      \
                          int ncols, float *y, int ldy) {                                        \
        for (int r = r0; r < r1; r++)                                                           \
            for (int c = 0; c < ncols; c++)                                                     \
                y[(size_t)c * ldy + r] = dot((const wtype *)w + (size_t)r * n_in,               \
                                             (const float *)x + (size_t)c * ldx, n_in);         \
    }

/* ----------------------------------------------------------------------------------------- */
/* Scalar path */

/* The AVX2 horizontal sum: lanes k and k+4, then (0+2) and (1+3), then the two. */
static float lane_tree(const float a[8]) {
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    return (s0 + s2) + (s1 + s3);
}

static void quantize_q8_scalar(const float *x, tk_q8 *q, int n) {
    for (int b = 0; b < n / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        float amax = 0.0f;
        for (int j = 0; j < TK_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < TK_QK; j++) {
            int v = (int)nearbyintf(xb[j] * id); /* ties to even, as _mm256_round_ps */
            q[b].q[j] = (int8_t)v;
            sum += v;
        }
        q[b].d = tk_fp16_round(d);
        q[b].s = tk_fp16_round(d * (float)sum);
    }
}

/* Weight block b of a row as 32 signed values in element order (nibbles: 0..15 low, 16..31 high). */
static void unpack_block(uint32_t type, const uint8_t *row, int b, int8_t w[TK_QK], float *d) {
    if (type == TK_Q8_0) {
        const tk_block_q8_0 *blk = (const tk_block_q8_0 *)row + b;
        memcpy(w, blk->qs, TK_QK);
        *d = tk_fp16_to_fp32(blk->d);
        return;
    }
    const uint8_t *qs;
    if (type == TK_Q4_1) {
        qs = ((const tk_block_q4_1 *)row)[b].qs;
        *d = tk_fp16_to_fp32(((const tk_block_q4_1 *)row)[b].d);
    } else {
        qs = ((const tk_block_q4_0 *)row)[b].qs;
        *d = tk_fp16_to_fp32(((const tk_block_q4_0 *)row)[b].d);
    }
    /* Q4_0 weights are nib - 8, multiplied exactly in integers as ggml does; Q4_1 keeps the
     * unsigned nibble and adds m through the offset term */
    const int bias = type == TK_Q4_0 ? 8 : 0;
    for (int j = 0; j < 16; j++) {
        w[j] = (int8_t)((qs[j] & 15) - bias);
        w[j + 16] = (int8_t)((qs[j] >> 4) - bias);
    }
}

static void mm_blocked_scalar(uint32_t type, const void *w, int n_in, int r0, int r1,
                              const void *x, int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(type, n_in);
    int8_t wq[TK_QK];
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = (const tk_q8 *)x + (size_t)c * ldx;
            float acc[8] = {0};
            for (int b = 0; b < nb; b++) {
                float d;
                unpack_block(type, row, b, wq, &d);
                const float scale = d * xc[b].d;
                for (int k = 0; k < 8; k++) {
                    int lane = 0;
                    for (int j = 4 * k; j < 4 * k + 4; j++) lane += wq[j] * xc[b].q[j];
                    acc[k] = fmaf(scale, (float)lane, acc[k]);
                }
            }
            float sum = lane_tree(acc);
            if (type == TK_Q4_1) sum += q4_1_offset_row(row, nb, xc, tk_fp16_to_fp32);
            y[(size_t)c * ldy + r] = sum;
        }
    }
}

static void mm_q4_0_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    mm_blocked_scalar(TK_Q4_0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q4_1_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    mm_blocked_scalar(TK_Q4_1, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q8_0_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    mm_blocked_scalar(TK_Q8_0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

/* Float dot of two vectors, 16 lanes at a time (two accumulators of 8), then the tail. */
static float dot_f32_scalar(const float *a, const float *b, int n) {
    float acc0[8] = {0}, acc1[8] = {0}, lanes[8];
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 8; k++) {
            acc0[k] = fmaf(a[i + k], b[i + k], acc0[k]);
            acc1[k] = fmaf(a[i + 8 + k], b[i + 8 + k], acc1[k]);
        }
    for (int k = 0; k < 8; k++) lanes[k] = acc0[k] + acc1[k];
    float acc = lane_tree(lanes);
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

/* Dot of fp16 values (the KV cache, F16 weights) with floats: 8 lanes, fma, then the tail. */
static float dot_f16_scalar(const uint16_t *h, const float *x, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] = fmaf(tk_fp16_to_fp32(h[i + k]), x[i + k], acc[k]);
    float s = lane_tree(acc);
    for (; i < n; i++) s += tk_fp16_to_fp32(h[i]) * x[i];
    return s;
}

/* y += a * h for fp16 h: fused on whole vectors of 8 as the AVX2 path, plain on the tail. */
static void axpy_f16_scalar(float a, const uint16_t *h, float *y, int n) {
    const int n8 = n / 8 * 8;
    int i = 0;
    for (; i < n8; i++) y[i] = fmaf(a, tk_fp16_to_fp32(h[i]), y[i]);
    for (; i < n; i++) y[i] += a * tk_fp16_to_fp32(h[i]);
}

FLOAT_MATMUL(mm_f32_scalar, , float, dot_f32_scalar)

FLOAT_MATMUL(mm_f16_scalar, , uint16_t, dot_f16_scalar)

/* ----------------------------------------------------------------------------------------- */
/* AVX2 + FMA + F16C path */

#ifdef TK_HAVE_X86

TK_AVX2 TK_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TK_AVX2 TK_INLINE float f16c_to_fp32(uint16_t h) { return _cvtsh_ss(h); }

/* Prefetch base + off. On the last tile that is past the tensor: harmless for a prefetch, but
 * forming such a pointer is undefined in C, so the address is computed as an integer. */
TK_AVX2 TK_INLINE void prefetch_at(const void *base, size_t off) {
    _mm_prefetch((const char *)((uintptr_t)base + off), _MM_HINT_T0);
}

TK_AVX2 static void quantize_q8_avx2(const float *x, tk_q8 *q, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 am = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, vid), rnd));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, vid), rnd));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, vid), rnd));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, vid), rnd));
        __m256i isum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));
        s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
        /* packs interleave 128-bit lanes; the permute restores element order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q[b].q, p);
        q[b].d = tk_fp16_round(d);
        q[b].s = tk_fp16_round(d * (float)_mm_cvtsi128_si32(s4));
    }
}

/* The prefill / batched tile: one weight row x 4 activation columns, every accumulator in a
 * register. The row's block is unpacked once for the 4 columns; the Q4_1 offset term runs as a
 * vector over the 4 columns, each lane the same unfused m * s sum as q4_1_offset_row. */
TK_AVX2 TK_INLINE __m256i q4_unpack(int is_q4_1, const uint8_t *qs) {
    const __m256i shift = _mm256_setr_epi64x(0, 0, 4, 4); /* low nibbles, then high nibbles */
    __m256i wq = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    wq = _mm256_and_si256(_mm256_srlv_epi64(wq, shift), _mm256_set1_epi8(0x0F));
    return is_q4_1 ? wq : _mm256_sub_epi8(wq, _mm256_set1_epi8(8)); /* Q4_0: signed nib - 8 */
}

/* Exact integer dot of a weight block with an activation block, in the 8-lane layout. */
TK_AVX2 TK_INLINE __m256 q4_dot(int is_q4_1, __m256i wq, __m256i wabs, const int8_t *xq) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)xq);
    const __m256i p = is_q4_1 ? _mm256_maddubs_epi16(wq, x)
                              : _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, wq));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

TK_AVX2 TK_INLINE void q4_row_x4_avx2(int is_q4_1, const uint8_t *row, const tk_q8 *x, int ldx,
                                     int nb, float *y, int ldy) {
    const tk_q8 *x0 = x, *x1 = x + ldx, *x2 = x + 2 * (size_t)ldx, *x3 = x + 3 * (size_t)ldx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m128 off = _mm_setzero_ps();
    const size_t bs = is_q4_1 ? sizeof(tk_block_q4_1) : sizeof(tk_block_q4_0);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + b * bs;
        __m128 dm;
        if (is_q4_1) {
            int32_t bits;
            memcpy(&bits, blk, 4);
            dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits)); /* [d, m, 0, 0] */
        } else {
            dm = _mm_cvtph_ps(_mm_cvtsi32_si128(((const tk_block_q4_0 *)blk)->d));
        }
        const float d = _mm_cvtss_f32(dm);
        const __m256i wq = q4_unpack(is_q4_1, blk + (is_q4_1 ? 4 : 2));
        const __m256i wabs = is_q4_1 ? wq : _mm256_sign_epi8(wq, wq);
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d * x0[b].d), q4_dot(is_q4_1, wq, wabs, x0[b].q), a0);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(d * x1[b].d), q4_dot(is_q4_1, wq, wabs, x1[b].q), a1);
        a2 = _mm256_fmadd_ps(_mm256_set1_ps(d * x2[b].d), q4_dot(is_q4_1, wq, wabs, x2[b].q), a2);
        a3 = _mm256_fmadd_ps(_mm256_set1_ps(d * x3[b].d), q4_dot(is_q4_1, wq, wabs, x3[b].q), a3);
        if (is_q4_1) {
            const __m128 s4 = _mm_setr_ps(x0[b].s, x1[b].s, x2[b].s, x3[b].s);
            off = _mm_add_ps(off, _mm_mul_ps(_mm_shuffle_ps(dm, dm, _MM_SHUFFLE(1, 1, 1, 1)), s4));
        }
    }
    float o[4];
    _mm_storeu_ps(o, off);
    y[0] = hsum8(a0) + o[0];
    y[(size_t)ldy] = hsum8(a1) + o[1];
    y[2 * (size_t)ldy] = hsum8(a2) + o[2];
    y[3 * (size_t)ldy] = hsum8(a3) + o[3];
}

/* The decode tile: R rows x one column, the shape of every matmul of a single stream. Per
 * block and row: d and m converted together, nibbles unpacked by a broadcast and a variable
 * shift, one integer dot, one fma; the offset term runs in its own accumulator in block order,
 * exactly as q4_1_offset_row sums it, so the bits match the general tile and the scalar path. */
TK_AVX2 TK_INLINE void q4_col_avx2(int is_q4_1, const uint8_t *w, size_t rb, int R,
                                  const tk_q8 *x, int nb, float *y) {
    __m256 acc[4];
    float off[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const int8_t *xq = x[b].q;
        const float xd = x[b].d, xs = x[b].s; /* the offset term is Q4_1's alone */
        /* the next tile's rows follow this one's; the hardware prefetcher does not follow
         * four interleaved 20-byte strides well, so fetch them ahead (measured: see bench) */
        for (int r = 0; r < R; r++) prefetch_at(w, (R + r) * rb + b * (is_q4_1 ? sizeof(tk_block_q4_1) : sizeof(tk_block_q4_0)));
        for (int r = 0; r < R; r++) {
            const uint8_t *qs;
            __m128 dm;
            if (is_q4_1) {
                const tk_block_q4_1 *blk = (const tk_block_q4_1 *)(w + r * rb) + b;
                int32_t bits;
                memcpy(&bits, blk, 4);
                dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits)); /* [d, m, 0, 0] */
                qs = blk->qs;
            } else {
                const tk_block_q4_0 *blk = (const tk_block_q4_0 *)(w + r * rb) + b;
                dm = _mm_cvtph_ps(_mm_cvtsi32_si128(blk->d));
                qs = blk->qs;
            }
            const float d = _mm_cvtss_f32(dm);
            const __m256i wq = q4_unpack(is_q4_1, qs);
            const __m256i wabs = is_q4_1 ? wq : _mm256_sign_epi8(wq, wq);
            if (is_q4_1) off[r] += _mm_cvtss_f32(_mm_movehdup_ps(dm)) * xs;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xd), q4_dot(is_q4_1, wq, wabs, xq), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum8(acc[r]) + off[r];
}

TK_AVX2 TK_INLINE void mm_q4_avx2(int is_q4_1, const void *w, int n_in, int r0, int r1,
                                 const void *xv, int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(is_q4_1 ? TK_Q4_1 : TK_Q4_0, n_in);
    const uint8_t *w8 = w;
    const tk_q8 *x = xv;
    int c = 0;
    for (; c + 4 <= ncols; c += 4)
        for (int r = r0; r < r1; r++)
            q4_row_x4_avx2(is_q4_1, w8 + r * rb, x + (size_t)c * ldx, ldx, nb, y + (size_t)c * ldy + r, ldy);
    for (; c < ncols; c++) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            q4_col_avx2(is_q4_1, w8 + r * rb, rb, 4, x + (size_t)c * ldx, nb, y + (size_t)c * ldy + r);
        for (; r < r1; r++)
            q4_col_avx2(is_q4_1, w8 + r * rb, rb, 1, x + (size_t)c * ldx, nb, y + (size_t)c * ldy + r);
    }
}

TK_AVX2 static void mm_q4_0_avx2(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                                 int ncols, float *y, int ldy) {
    mm_q4_avx2(0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

TK_AVX2 static void mm_q4_1_avx2(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                                 int ncols, float *y, int ldy) {
    mm_q4_avx2(1, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

/* Q8_0 x Q8, R rows x one column (decode logits). maddubs needs one unsigned operand, so
 * multiply |w| by x carrying w's sign. */
TK_AVX2 TK_INLINE void q8_col_avx2(const tk_block_q8_0 *w, int nb, int R, const tk_q8 *x, float *y) {
    __m256 acc[4];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].q);
        /* stream the next tile's rows in ahead, as q4_col_avx2 does */
        for (int r = 0; r < R; r++) prefetch_at(w, ((size_t)(R + r) * nb + b) * sizeof(tk_block_q8_0));
        for (int r = 0; r < R; r++) {
            const tk_block_q8_0 *blk = w + (size_t)r * nb + b;
            const __m256i wq = _mm256_loadu_si256((const __m256i *)blk->qs);
            const __m256i p = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(blk->d) * x[b].d), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum8(acc[r]);
}

/* One Q8_0 weight row x 4 activation columns, accumulators in registers (batched logits). */
TK_AVX2 TK_INLINE void q8_row_x4_avx2(const tk_block_q8_0 *row, const tk_q8 *x, int ldx, int nb,
                                     float *y, int ldy) {
    const tk_q8 *x0 = x, *x1 = x + ldx, *x2 = x + 2 * (size_t)ldx, *x3 = x + 3 * (size_t)ldx;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int b = 0; b < nb; b++) {
        const __m256i wq = _mm256_loadu_si256((const __m256i *)row[b].qs);
        const __m256i wa = _mm256_sign_epi8(wq, wq);
        const float d = _cvtsh_ss(row[b].d);
#define Q8_COL(acc, xc)                                                                          \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * xc[b].d),                                       \
                              _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wa,      \
                                  _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xc[b].q), wq)), ones)), acc);
        Q8_COL(a0, x0)
        Q8_COL(a1, x1)
        Q8_COL(a2, x2)
        Q8_COL(a3, x3)
#undef Q8_COL
    }
    y[0] = hsum8(a0);
    y[(size_t)ldy] = hsum8(a1);
    y[2 * (size_t)ldy] = hsum8(a2);
    y[3 * (size_t)ldy] = hsum8(a3);
}

TK_AVX2 static void mm_q8_0_avx2(const void *w, int n_in, int r0, int r1, const void *xv, int ldx,
                                 int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const tk_block_q8_0 *wb = w;
    const tk_q8 *x = xv;
    int c = 0;
    for (; c + 4 <= ncols; c += 4)
        for (int r = r0; r < r1; r++)
            q8_row_x4_avx2(wb + (size_t)r * nb, x + (size_t)c * ldx, ldx, nb, y + (size_t)c * ldy + r, ldy);
    for (; c < ncols; c++) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_col_avx2(wb + (size_t)r * nb, nb, 4, x + (size_t)c * ldx, y + (size_t)c * ldy + r);
        for (; r < r1; r++)
            q8_col_avx2(wb + (size_t)r * nb, nb, 1, x + (size_t)c * ldx, y + (size_t)c * ldy + r);
    }
}

TK_AVX2 static float dot_f32_avx2(const float *a, const float *b, int n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float acc = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

TK_AVX2 static float dot_f16_avx2(const uint16_t *h, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))),
                              _mm256_loadu_ps(x + i), acc);
    float s = hsum8(acc);
    for (; i < n; i++) s += _cvtsh_ss(h[i]) * x[i];
    return s;
}

TK_AVX2 static void axpy_f16_avx2(float a, const uint16_t *h, float *y, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * _cvtsh_ss(h[i]);
}

FLOAT_MATMUL(mm_f32_avx2, TK_AVX2, float, dot_f32_avx2)

FLOAT_MATMUL(mm_f16_avx2, TK_AVX2, uint16_t, dot_f16_avx2)

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

#endif /* TK_HAVE_X86 */

/* ----------------------------------------------------------------------------------------- */
/* NEON path (aarch64: the Jetson's Cortex-A78AE). Baseline ARMv8 NEON only (widening
 * multiplies and pairwise adds), laid out as the AVX2 path's 8 lanes: lo = lanes 0..3,
 * hi = lanes 4..7, each lane the exact sum of 4 consecutive products. */

#ifdef TK_HAVE_NEON

TK_INLINE float neon_tree(float32x4_t lo, float32x4_t hi) {
    float32x4_t s = vaddq_f32(lo, hi);
    return (vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 2)) + (vgetq_lane_f32(s, 1) + vgetq_lane_f32(s, 3));
}

/* w0 = elements 0..15, w1 = 16..31 of a weight block; x the activation block. */
TK_INLINE void neon_lanes8(int8x16_t w0, int8x16_t w1, const int8_t *x, int32x4_t *lo, int32x4_t *hi) {
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int32x4_t q0 = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));   /* 0+1 .. 6+7 */
    int32x4_t q1 = vpaddlq_s16(vmull_s8(vget_high_s8(w0), vget_high_s8(x0))); /* 8+9 .. */
    int32x4_t q2 = vpaddlq_s16(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
    int32x4_t q3 = vpaddlq_s16(vmull_s8(vget_high_s8(w1), vget_high_s8(x1)));
    *lo = vpaddq_s32(q0, q1); /* 0..3, 4..7, 8..11, 12..15 */
    *hi = vpaddq_s32(q2, q3); /* 16..19 .. 28..31 */
}

static void quantize_q8_neon(const float *x, tk_q8 *q, int n) {
    for (int b = 0; b < n / TK_QK; b++) {
        const float *xb = x + b * TK_QK;
        float32x4_t v[8], am = vdupq_n_f32(0.0f);
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(xb + 4 * j);
            am = vmaxq_f32(am, vabsq_f32(v[j]));
        }
        float amax = vmaxvq_f32(am);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32x4_t isum = vdupq_n_s32(0);
        for (int j = 0; j < 8; j++) {
            int32x4_t iv = vcvtnq_s32_f32(vmulq_n_f32(v[j], id)); /* ties to even */
            isum = vaddq_s32(isum, iv);
            q[b].q[4 * j + 0] = (int8_t)vgetq_lane_s32(iv, 0);
            q[b].q[4 * j + 1] = (int8_t)vgetq_lane_s32(iv, 1);
            q[b].q[4 * j + 2] = (int8_t)vgetq_lane_s32(iv, 2);
            q[b].q[4 * j + 3] = (int8_t)vgetq_lane_s32(iv, 3);
        }
        q[b].d = tk_fp16_round(d);
        q[b].s = tk_fp16_round(d * (float)vaddvq_s32(isum));
    }
}

static void mm_blocked_neon(uint32_t type, const void *w, int n_in, int r0, int r1,
                            const void *xv, int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(type, n_in);
    const tk_q8 *x = xv;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = x + (size_t)c * ldx;
            float32x4_t acc_lo = vdupq_n_f32(0.0f), acc_hi = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                int8x16_t w0, w1;
                uint16_t dh;
                if (type == TK_Q8_0) {
                    const tk_block_q8_0 *blk = (const tk_block_q8_0 *)row + b;
                    w0 = vld1q_s8(blk->qs);
                    w1 = vld1q_s8(blk->qs + 16);
                    dh = blk->d;
                } else {
                    const uint8_t *qs;
                    if (type == TK_Q4_1) {
                        qs = ((const tk_block_q4_1 *)row)[b].qs;
                        dh = ((const tk_block_q4_1 *)row)[b].d;
                    } else {
                        qs = ((const tk_block_q4_0 *)row)[b].qs;
                        dh = ((const tk_block_q4_0 *)row)[b].d;
                    }
                    uint8x16_t raw = vld1q_u8(qs);
                    w0 = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F)));
                    w1 = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
                    if (type == TK_Q4_0) { /* signed nib - 8, exact in integers as ggml */
                        w0 = vsubq_s8(w0, vdupq_n_s8(8));
                        w1 = vsubq_s8(w1, vdupq_n_s8(8));
                    }
                }
                int32x4_t lo, hi;
                neon_lanes8(w0, w1, xc[b].q, &lo, &hi);
                const float32x4_t scale = vdupq_n_f32(tk_fp16_to_fp32(dh) * xc[b].d);
                acc_lo = vfmaq_f32(acc_lo, vcvtq_f32_s32(lo), scale);
                acc_hi = vfmaq_f32(acc_hi, vcvtq_f32_s32(hi), scale);
            }
            float sum = neon_tree(acc_lo, acc_hi);
            if (type == TK_Q4_1) sum += q4_1_offset_row(row, nb, xc, tk_fp16_to_fp32);
            y[(size_t)c * ldy + r] = sum;
        }
    }
}

static void mm_q4_0_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                         int ncols, float *y, int ldy) {
    mm_blocked_neon(TK_Q4_0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q4_1_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                         int ncols, float *y, int ldy) {
    mm_blocked_neon(TK_Q4_1, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q8_0_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                         int ncols, float *y, int ldy) {
    mm_blocked_neon(TK_Q8_0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static float dot_f32_neon(const float *a, const float *b, int n) {
    float32x4_t a0l = vdupq_n_f32(0.0f), a0h = a0l, a1l = a0l, a1h = a0l;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0l = vfmaq_f32(a0l, vld1q_f32(a + i), vld1q_f32(b + i));
        a0h = vfmaq_f32(a0h, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        a1l = vfmaq_f32(a1l, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        a1h = vfmaq_f32(a1h, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    float acc = neon_tree(vaddq_f32(a0l, a1l), vaddq_f32(a0h, a1h));
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static float dot_f16_neon(const uint16_t *h, const float *x, int n) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(h + i));
        lo = vfmaq_f32(lo, vcvt_f32_f16(vget_low_f16(v)), vld1q_f32(x + i));
        hi = vfmaq_f32(hi, vcvt_f32_f16(vget_high_f16(v)), vld1q_f32(x + i + 4));
    }
    float s = neon_tree(lo, hi);
    for (; i < n; i++) s += tk_fp16_to_fp32(h[i]) * x[i];
    return s;
}

static void axpy_f16_neon(float a, const uint16_t *h, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(h + i));
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vcvt_f32_f16(vget_low_f16(v)), a));
        vst1q_f32(y + i + 4, vfmaq_n_f32(vld1q_f32(y + i + 4), vcvt_f32_f16(vget_high_f16(v)), a));
    }
    for (; i < n; i++) y[i] += a * tk_fp16_to_fp32(h[i]);
}

FLOAT_MATMUL(mm_f16_neon, , uint16_t, dot_f16_neon)

FLOAT_MATMUL(mm_f32_neon, , float, dot_f32_neon)

#endif /* TK_HAVE_NEON */

/* ----------------------------------------------------------------------------------------- */
/* Dispatch */

const char *tk_simd_name(int simd) {
    switch (simd) {
    case TK_SIMD_AUTO: return "auto";
    case TK_SIMD_SCALAR: return "scalar";
    case TK_SIMD_AVX2: return "avx2";
    case TK_SIMD_NEON: return "neon";
    default: return "unknown";
    }
}

int tk_simd_resolve(int requested, int *resolved) {
    int have_avx2 = 0, have_neon = 0;
#ifdef TK_HAVE_X86
    have_avx2 = cpu_has_avx2();
#endif
#ifdef TK_HAVE_NEON
    have_neon = 1;
#endif
    switch (requested) {
    case TK_SIMD_AUTO:
        *resolved = have_avx2 ? TK_SIMD_AVX2 : have_neon ? TK_SIMD_NEON : TK_SIMD_SCALAR;
        return TK_OK;
    case TK_SIMD_SCALAR: *resolved = TK_SIMD_SCALAR; return TK_OK;
    case TK_SIMD_AVX2: *resolved = TK_SIMD_AVX2; return have_avx2 ? TK_OK : TK_ERR;
    case TK_SIMD_NEON: *resolved = TK_SIMD_NEON; return have_neon ? TK_OK : TK_ERR;
    default: return TK_ERR;
    }
}

int tk_kernels_init(tk_kernels *k, int simd) {
    int resolved;
    if (tk_simd_resolve(simd, &resolved) != TK_OK) return TK_ERR;
    memset(k, 0, sizeof *k);
    k->simd = resolved;
    k->quantize_q8 = quantize_q8_scalar;
    k->dot_f16 = dot_f16_scalar;
    k->axpy_f16 = axpy_f16_scalar;
    k->matmul[TK_F32] = mm_f32_scalar;
    k->matmul[TK_F16] = mm_f16_scalar;
    k->matmul[TK_Q4_0] = mm_q4_0_scalar;
    k->matmul[TK_Q4_1] = mm_q4_1_scalar;
    k->matmul[TK_Q8_0] = mm_q8_0_scalar;
#ifdef TK_HAVE_X86
    if (resolved == TK_SIMD_AVX2) {
        k->quantize_q8 = quantize_q8_avx2;
        k->dot_f16 = dot_f16_avx2;
        k->axpy_f16 = axpy_f16_avx2;
        k->matmul[TK_F32] = mm_f32_avx2;
        k->matmul[TK_F16] = mm_f16_avx2;
        k->matmul[TK_Q4_0] = mm_q4_0_avx2;
        k->matmul[TK_Q4_1] = mm_q4_1_avx2;
        k->matmul[TK_Q8_0] = mm_q8_0_avx2;
    }
#endif
#ifdef TK_HAVE_NEON
    if (resolved == TK_SIMD_NEON) {
        k->quantize_q8 = quantize_q8_neon;
        k->dot_f16 = dot_f16_neon;
        k->axpy_f16 = axpy_f16_neon;
        k->matmul[TK_F32] = mm_f32_neon;
        k->matmul[TK_F16] = mm_f16_neon;
        k->matmul[TK_Q4_0] = mm_q4_0_neon;
        k->matmul[TK_Q4_1] = mm_q4_1_neon;
        k->matmul[TK_Q8_0] = mm_q8_0_neon;
    }
#endif
    return TK_OK;
}
