/* Kernels: activation quantization, quantized matmuls, and the float dot/axpy of attention.
 *
 * Three paths with one contract (tk_internal.h): scalar C for any CPU, AVX2+FMA+F16C on x86-64
 * (compiled through function target attributes and picked at run time, so one build serves
 * every x86-64), NEON on aarch64 (always present there). Weights are read in place from the
 * GGUF mapping; activations are quantized to 8 bits per 32-block so the inner loops are
 * integer multiply-adds, which is what makes a token cost about one read of the weights.
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

float tk_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

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

/* The offset term of Q4_0/Q4_1 blocks, sum_b m_b s_b, summed the same way on every path.
 * Q4_0 is read as Q4_1 with m = -8 d, so one integer kernel serves both. */
TK_INLINE float q4_offset_row(const uint8_t *row, int is_q4_1, int nb, const tk_q8 *x) {
    float acc = 0.0f;
    for (int b = 0; b < nb; b++) {
        float m;
        if (is_q4_1) {
            m = tk_fp16_to_fp32(((const tk_block_q4_1 *)row)[b].m);
        } else {
            m = -8.0f * tk_fp16_to_fp32(((const tk_block_q4_0 *)row)[b].d);
        }
        acc += m * x[b].s;
    }
    return acc;
}

/* ----------------------------------------------------------------------------------------- */
/* Scalar path */

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
        q[b].d = d;
        q[b].s = d * (float)sum;
    }
}

static void mm_q4_scalar(int is_q4_1, const void *w, int n_in, int r0, int r1, const void *x,
                         int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(is_q4_1 ? TK_Q4_1 : TK_Q4_0, n_in);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = (const tk_q8 *)x + (size_t)c * ldx;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *qs;
                float d;
                if (is_q4_1) {
                    const tk_block_q4_1 *blk = (const tk_block_q4_1 *)row + b;
                    qs = blk->qs;
                    d = tk_fp16_to_fp32(blk->d);
                } else {
                    const tk_block_q4_0 *blk = (const tk_block_q4_0 *)row + b;
                    qs = blk->qs;
                    d = tk_fp16_to_fp32(blk->d);
                }
                int sumi = 0;
                for (int j = 0; j < 16; j++)
                    sumi += (qs[j] & 15) * xc[b].q[j] + (qs[j] >> 4) * xc[b].q[j + 16];
                acc += (d * xc[b].d) * (float)sumi;
            }
            y[(size_t)c * ldy + r] = acc + q4_offset_row(row, is_q4_1, nb, xc);
        }
    }
}

static void mm_q4_0_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    mm_q4_scalar(0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q4_1_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    mm_q4_scalar(1, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q8_0_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                           int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    for (int r = r0; r < r1; r++) {
        const tk_block_q8_0 *row = (const tk_block_q8_0 *)w + (size_t)r * nb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = (const tk_q8 *)x + (size_t)c * ldx;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                int sumi = 0;
                for (int j = 0; j < TK_QK; j++) sumi += row[b].qs[j] * xc[b].q[j];
                acc += (tk_fp16_to_fp32(row[b].d) * xc[b].d) * (float)sumi;
            }
            y[(size_t)c * ldy + r] = acc;
        }
    }
}

static void mm_f32_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                          int ncols, float *y, int ldy) {
    for (int r = r0; r < r1; r++) {
        const float *row = (const float *)w + (size_t)r * n_in;
        for (int c = 0; c < ncols; c++) {
            const float *xc = (const float *)x + (size_t)c * ldx;
            float acc = 0.0f;
            for (int i = 0; i < n_in; i++) acc += row[i] * xc[i];
            y[(size_t)c * ldy + r] = acc;
        }
    }
}

static void mm_f16_scalar(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                          int ncols, float *y, int ldy) {
    for (int r = r0; r < r1; r++) {
        const uint16_t *row = (const uint16_t *)w + (size_t)r * n_in;
        for (int c = 0; c < ncols; c++) {
            const float *xc = (const float *)x + (size_t)c * ldx;
            float acc = 0.0f;
            for (int i = 0; i < n_in; i++) acc += tk_fp16_to_fp32(row[i]) * xc[i];
            y[(size_t)c * ldy + r] = acc;
        }
    }
}

static float dot_f32_scalar(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static void axpy_f32_scalar(float a, const float *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* ----------------------------------------------------------------------------------------- */
/* AVX2 + FMA + F16C path */

#ifdef TK_HAVE_X86

TK_AVX2 TK_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
        q[b].d = d;
        q[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

/* R weight rows x C activation columns of Q4_0/Q4_1 against Q8 activations: one accumulator
 * per (row, column), blocks in order, so any tiling gives the same bits. */
TK_AVX2 TK_INLINE void q4_tile_avx2(int is_q4_1, const uint8_t *w, size_t rb, int R,
                                   const tk_q8 *x, int ldx, int C, int nb, float *y, int ldy) {
    __m256 acc[4][4];
    const __m256i lo = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i wq[4];
        float wd[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *qs;
            uint16_t dh;
            if (is_q4_1) {
                const tk_block_q4_1 *blk = (const tk_block_q4_1 *)(w + r * rb) + b;
                qs = blk->qs;
                dh = blk->d;
            } else {
                const tk_block_q4_0 *blk = (const tk_block_q4_0 *)(w + r * rb) + b;
                qs = blk->qs;
                dh = blk->d;
            }
            __m128i raw = _mm_loadu_si128((const __m128i *)qs);
            wq[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), lo);
            wd[r] = _cvtsh_ss(dh);
        }
        for (int c = 0; c < C; c++) {
            const tk_q8 *xb = x + (size_t)c * ldx + b;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->q);
            for (int r = 0; r < R; r++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], xq), ones);
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(wd[r] * xb->d), _mm256_cvtepi32_ps(p),
                                            acc[r][c]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            y[(size_t)c * ldy + r] = hsum8(acc[r][c]) +
                                     q4_offset_row(w + r * rb, is_q4_1, nb, x + (size_t)c * ldx);
}

TK_AVX2 TK_INLINE void mm_q4_avx2(int is_q4_1, const void *w, int n_in, int r0, int r1,
                                 const void *xv, int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(is_q4_1 ? TK_Q4_1 : TK_Q4_0, n_in);
    const uint8_t *w8 = w;
    const tk_q8 *x = xv;
    int c = 0;
    for (; c + 4 <= ncols; c += 4) {
        int r = r0;
        for (; r + 2 <= r1; r += 2)
            q4_tile_avx2(is_q4_1, w8 + r * rb, rb, 2, x + (size_t)c * ldx, ldx, 4, nb, y + (size_t)c * ldy + r, ldy);
        for (; r < r1; r++)
            q4_tile_avx2(is_q4_1, w8 + r * rb, rb, 1, x + (size_t)c * ldx, ldx, 4, nb, y + (size_t)c * ldy + r, ldy);
    }
    for (; c < ncols; c++) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            q4_tile_avx2(is_q4_1, w8 + r * rb, rb, 4, x + (size_t)c * ldx, ldx, 1, nb, y + (size_t)c * ldy + r, ldy);
        for (; r < r1; r++)
            q4_tile_avx2(is_q4_1, w8 + r * rb, rb, 1, x + (size_t)c * ldx, ldx, 1, nb, y + (size_t)c * ldy + r, ldy);
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

/* Q8_0 x Q8: maddubs needs one unsigned operand, so multiply |w| by x carrying w's sign. */
TK_AVX2 TK_INLINE void q8_tile_avx2(const tk_block_q8_0 *w, int nb, int R, const tk_q8 *x,
                                   int ldx, int C, float *y, int ldy) {
    __m256 acc[4][4];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i wq[4], wa[4];
        float wd[4];
        for (int r = 0; r < R; r++) {
            const tk_block_q8_0 *blk = w + (size_t)r * nb + b;
            wq[r] = _mm256_loadu_si256((const __m256i *)blk->qs);
            wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
            wd[r] = _cvtsh_ss(blk->d);
        }
        for (int c = 0; c < C; c++) {
            const tk_q8 *xb = x + (size_t)c * ldx + b;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->q);
            for (int r = 0; r < R; r++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(xq, wq[r])), ones);
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(wd[r] * xb->d), _mm256_cvtepi32_ps(p),
                                            acc[r][c]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) y[(size_t)c * ldy + r] = hsum8(acc[r][c]);
}

TK_AVX2 static void mm_q8_0_avx2(const void *w, int n_in, int r0, int r1, const void *xv, int ldx,
                                 int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const tk_block_q8_0 *wb = w;
    const tk_q8 *x = xv;
    int c = 0;
    for (; c + 4 <= ncols; c += 4) {
        int r = r0;
        for (; r + 2 <= r1; r += 2)
            q8_tile_avx2(wb + (size_t)r * nb, nb, 2, x + (size_t)c * ldx, ldx, 4, y + (size_t)c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_tile_avx2(wb + (size_t)r * nb, nb, 1, x + (size_t)c * ldx, ldx, 4, y + (size_t)c * ldy + r, ldy);
    }
    for (; c < ncols; c++) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_tile_avx2(wb + (size_t)r * nb, nb, 4, x + (size_t)c * ldx, ldx, 1, y + (size_t)c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_tile_avx2(wb + (size_t)r * nb, nb, 1, x + (size_t)c * ldx, ldx, 1, y + (size_t)c * ldy + r, ldy);
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

TK_AVX2 static void axpy_f32_avx2(float a, const float *x, float *y, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

TK_AVX2 static void mm_f32_avx2(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                                int ncols, float *y, int ldy) {
    for (int r = r0; r < r1; r++)
        for (int c = 0; c < ncols; c++)
            y[(size_t)c * ldy + r] = dot_f32_avx2((const float *)w + (size_t)r * n_in,
                                                  (const float *)x + (size_t)c * ldx, n_in);
}

TK_AVX2 static void mm_f16_avx2(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                                int ncols, float *y, int ldy) {
    for (int r = r0; r < r1; r++) {
        const uint16_t *row = (const uint16_t *)w + (size_t)r * n_in;
        for (int c = 0; c < ncols; c++) {
            const float *xc = (const float *)x + (size_t)c * ldx;
            __m256 acc = _mm256_setzero_ps();
            int i = 0;
            for (; i + 8 <= n_in; i += 8)
                acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i))),
                                      _mm256_loadu_ps(xc + i), acc);
            float s = hsum8(acc);
            for (; i < n_in; i++) s += _cvtsh_ss(row[i]) * xc[i];
            y[(size_t)c * ldy + r] = s;
        }
    }
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

#endif /* TK_HAVE_X86 */

/* ----------------------------------------------------------------------------------------- */
/* NEON path (aarch64: the Jetson's Cortex-A78AE). Uses only baseline ARMv8 NEON (widening
 * multiplies, pairwise accumulate) so it runs on every aarch64 core. */

#ifdef TK_HAVE_NEON

TK_INLINE int32x4_t neon_dot16(int8x16_t a, int8x16_t b, int32x4_t acc) {
    int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(vpadalq_s16(acc, p0), p1);
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
            int16x4_t h = vqmovn_s32(iv);
            int8x8_t bb = vqmovn_s16(vcombine_s16(h, h));
            q[b].q[4 * j + 0] = vget_lane_s8(bb, 0);
            q[b].q[4 * j + 1] = vget_lane_s8(bb, 1);
            q[b].q[4 * j + 2] = vget_lane_s8(bb, 2);
            q[b].q[4 * j + 3] = vget_lane_s8(bb, 3);
        }
        q[b].d = d;
        q[b].s = d * (float)vaddvq_s32(isum);
    }
}

static void mm_q4_neon(int is_q4_1, const void *w, int n_in, int r0, int r1, const void *xv,
                       int ldx, int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const size_t rb = tk_row_bytes(is_q4_1 ? TK_Q4_1 : TK_Q4_0, n_in);
    const tk_q8 *x = xv;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = x + (size_t)c * ldx;
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                const uint8_t *qs;
                uint16_t dh;
                if (is_q4_1) {
                    qs = ((const tk_block_q4_1 *)row)[b].qs;
                    dh = ((const tk_block_q4_1 *)row)[b].d;
                } else {
                    qs = ((const tk_block_q4_0 *)row)[b].qs;
                    dh = ((const tk_block_q4_0 *)row)[b].d;
                }
                uint8x16_t raw = vld1q_u8(qs);
                int8x16_t wl = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F)));
                int8x16_t wh = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
                int32x4_t s = neon_dot16(wl, vld1q_s8(xc[b].q), vdupq_n_s32(0));
                s = neon_dot16(wh, vld1q_s8(xc[b].q + 16), s);
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), tk_fp16_to_fp32(dh) * xc[b].d);
            }
            y[(size_t)c * ldy + r] = vaddvq_f32(acc) + q4_offset_row(row, is_q4_1, nb, xc);
        }
    }
}

static void mm_q4_0_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                         int ncols, float *y, int ldy) {
    mm_q4_neon(0, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q4_1_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                         int ncols, float *y, int ldy) {
    mm_q4_neon(1, w, n_in, r0, r1, x, ldx, ncols, y, ldy);
}

static void mm_q8_0_neon(const void *w, int n_in, int r0, int r1, const void *xv, int ldx,
                         int ncols, float *y, int ldy) {
    const int nb = n_in / TK_QK;
    const tk_q8 *x = xv;
    for (int r = r0; r < r1; r++) {
        const tk_block_q8_0 *row = (const tk_block_q8_0 *)w + (size_t)r * nb;
        for (int c = 0; c < ncols; c++) {
            const tk_q8 *xc = x + (size_t)c * ldx;
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                int32x4_t s = neon_dot16(vld1q_s8(row[b].qs), vld1q_s8(xc[b].q), vdupq_n_s32(0));
                s = neon_dot16(vld1q_s8(row[b].qs + 16), vld1q_s8(xc[b].q + 16), s);
                acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), tk_fp16_to_fp32(row[b].d) * xc[b].d);
            }
            y[(size_t)c * ldy + r] = vaddvq_f32(acc);
        }
    }
}

static float dot_f32_neon(const float *a, const float *b, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) acc = vfmaq_f32(acc, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_f32_neon(float a, const float *x, float *y, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

static void mm_f32_neon(const void *w, int n_in, int r0, int r1, const void *x, int ldx,
                        int ncols, float *y, int ldy) {
    for (int r = r0; r < r1; r++)
        for (int c = 0; c < ncols; c++)
            y[(size_t)c * ldy + r] = dot_f32_neon((const float *)w + (size_t)r * n_in,
                                                  (const float *)x + (size_t)c * ldx, n_in);
}

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
    k->dot_f32 = dot_f32_scalar;
    k->axpy_f32 = axpy_f32_scalar;
    k->matmul[TK_F32] = mm_f32_scalar;
    k->matmul[TK_F16] = mm_f16_scalar;
    k->matmul[TK_Q4_0] = mm_q4_0_scalar;
    k->matmul[TK_Q4_1] = mm_q4_1_scalar;
    k->matmul[TK_Q8_0] = mm_q8_0_scalar;
#ifdef TK_HAVE_X86
    if (resolved == TK_SIMD_AVX2) {
        k->quantize_q8 = quantize_q8_avx2;
        k->dot_f32 = dot_f32_avx2;
        k->axpy_f32 = axpy_f32_avx2;
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
        k->dot_f32 = dot_f32_neon;
        k->axpy_f32 = axpy_f32_neon;
        k->matmul[TK_F32] = mm_f32_neon;
        k->matmul[TK_Q4_0] = mm_q4_0_neon;
        k->matmul[TK_Q4_1] = mm_q4_1_neon;
        k->matmul[TK_Q8_0] = mm_q8_0_neon;
    }
#endif
    return TK_OK;
}
