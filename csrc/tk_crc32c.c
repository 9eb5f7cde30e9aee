/* CRC32C (Castagnoli) in three paths with one contract (tk_crc32c.h).
 *
 * A CRC is the remainder of the message, read as a polynomial over GF(2), divided by the
 * generator. Reflected form: bit 0 of each byte is the highest power, so the register shifts
 * right and the generator 0x1EDC6F41 appears bit-reversed as 0x82F63B78. The register starts
 * at 0xFFFFFFFF and is inverted at the end; taking and returning the inverted value is what
 * lets a caller continue a CRC across calls.
 *
 *   scalar  slice-by-8: eight 256-entry tables, eight bytes per step, any CPU, any endianness
 *   sse42   x86-64 crc32 instruction on 8 bytes at a time (function target attribute plus a
 *           run-time CPU check, so one build serves every x86-64)
 *   armv8   aarch64 crc32cx / crc32cb (the Armv8 CRC32 extension: optional in Armv8.0,
 *           mandatory from Armv8.1; the Jetson's Cortex-A78AE has it), run-time HWCAP check
 *
 * The instructions compute exactly the reflected CRC32C step, so all paths give the same bits.
 */
#include "tk_crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define TK_HAVE_SSE42 1
#define TK_SSE42 __attribute__((target("sse4.2")))
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7) /* linux arch/arm64/include/uapi/asm/hwcap.h */
#endif
#define TK_HAVE_ARMV8 1
#define TK_ARMV8 __attribute__((target("+crc")))
#endif

#define TK_CRC_POLY 0x82F63B78u /* reflected Castagnoli generator */

/* ----------------------------------------------------------------------------------------- */
/* One-time setup: the tables and the CPU check */

/* table[k][b]: the CRC register after feeding byte b followed by k zero bytes into a zero
 * register. table[0] is the classic byte-at-a-time table; 8 x 256 x 4 = 8 KiB. */
static uint32_t table[8][256];
static int have_sse42, have_armv8; /* what this CPU can run, set once */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int bit = 0; bit < 8; bit++) r = (r >> 1) ^ (TK_CRC_POLY & (0u - (r & 1u)));
        table[0][b] = r;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int k = 1; k < 8; k++) /* one more zero byte after table[k-1][b] */
            table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xffu];
#ifdef TK_HAVE_SSE42
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
#ifdef TK_HAVE_ARMV8
    have_armv8 = (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#endif
}

/* ----------------------------------------------------------------------------------------- */
/* Scalar path */

/* 4 bytes at p as a little-endian number, whatever the host's byte order. */
static inline uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* r is the live (non-inverted) register. */
static uint32_t crc_scalar(uint32_t r, const uint8_t *p, size_t n) {
    /* head: single bytes until p is 8-byte aligned (not needed for correctness, only speed) */
    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        r = (r >> 8) ^ table[0][(r ^ *p++) & 0xffu];
        n--;
    }
    /* body: 8 bytes per step. The first 4 are xored into the register; each of the 8 bytes
     * then goes through the table that accounts for the bytes still to follow it. */
    while (n >= 8) {
        uint32_t lo = r ^ load_le32(p), hi = load_le32(p + 4);
        r = table[7][lo & 0xffu] ^ table[6][(lo >> 8) & 0xffu] ^
            table[5][(lo >> 16) & 0xffu] ^ table[4][lo >> 24] ^
            table[3][hi & 0xffu] ^ table[2][(hi >> 8) & 0xffu] ^
            table[1][(hi >> 16) & 0xffu] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    /* tail: the last 0..7 bytes */
    while (n-- > 0) r = (r >> 8) ^ table[0][(r ^ *p++) & 0xffu];
    return r;
}

/* ----------------------------------------------------------------------------------------- */
/* SSE4.2 path (x86-64). The crc32 instruction has a 3-cycle latency and one chain, which
 * already runs at several GB/s: more than the scrubber needs (a model per minute). */

#ifdef TK_HAVE_SSE42
TK_SSE42 static uint32_t crc_sse42(uint32_t r, const uint8_t *p, size_t n) {
    while (n > 0 && ((uintptr_t)p & 7u) != 0) { /* head: bytes up to 8-byte alignment */
        r = _mm_crc32_u8(r, *p++);
        n--;
    }
    uint64_t r64 = r; /* the 64-bit form keeps the register in the low 32 bits */
    while (n >= 8) {  /* body: 8 bytes per instruction; memcpy is the aliasing-safe load */
        uint64_t v;
        memcpy(&v, p, 8);
        r64 = _mm_crc32_u64(r64, v);
        p += 8;
        n -= 8;
    }
    r = (uint32_t)r64;
    while (n-- > 0) r = _mm_crc32_u8(r, *p++); /* tail: the last 0..7 bytes */
    return r;
}
#endif

/* ----------------------------------------------------------------------------------------- */
/* Armv8 CRC32 path (aarch64): the same shape as the SSE4.2 path. */

#ifdef TK_HAVE_ARMV8
TK_ARMV8 static uint32_t crc_armv8(uint32_t r, const uint8_t *p, size_t n) {
    while (n > 0 && ((uintptr_t)p & 7u) != 0) { /* head: bytes up to 8-byte alignment */
        r = __crc32cb(r, *p++);
        n--;
    }
    while (n >= 8) { /* body: 8 bytes per instruction (aarch64 is little-endian here) */
        uint64_t v;
        memcpy(&v, p, 8);
        r = __crc32cd(r, v);
        p += 8;
        n -= 8;
    }
    while (n-- > 0) r = __crc32cb(r, *p++); /* tail: the last 0..7 bytes */
    return r;
}
#endif

/* ----------------------------------------------------------------------------------------- */
/* Dispatch */

const char *tk_crc_name(int path) {
    switch (path) {
    case TK_CRC_AUTO: return "auto";
    case TK_CRC_SCALAR: return "scalar";
    case TK_CRC_SSE42: return "sse42";
    case TK_CRC_ARMV8: return "armv8";
    default: return "unknown";
    }
}

int tk_crc_available(int path) {
    pthread_once(&init_once, crc_init);
    switch (path) {
    case TK_CRC_AUTO:
    case TK_CRC_SCALAR: return 1;
    case TK_CRC_SSE42: return have_sse42;
    case TK_CRC_ARMV8: return have_armv8;
    default: return 0;
    }
}

int tk_crc_auto_path(void) {
    pthread_once(&init_once, crc_init);
    return have_sse42 ? TK_CRC_SSE42 : have_armv8 ? TK_CRC_ARMV8 : TK_CRC_SCALAR;
}

uint32_t tk_crc32c(uint32_t crc, const void *buf, size_t n, int path) {
    pthread_once(&init_once, crc_init);
    const uint8_t *p = buf; /* the caller's bytes, read only */
    uint32_t r = ~crc;      /* the live register: the chained value un-inverted */
    if (n == 0) return crc;
    if (path == TK_CRC_AUTO) path = tk_crc_auto_path();
#ifdef TK_HAVE_SSE42
    if (path == TK_CRC_SSE42 && have_sse42) return ~crc_sse42(r, p, n);
#endif
#ifdef TK_HAVE_ARMV8
    if (path == TK_CRC_ARMV8 && have_armv8) return ~crc_armv8(r, p, n);
#endif
    return ~crc_scalar(r, p, n);
}
