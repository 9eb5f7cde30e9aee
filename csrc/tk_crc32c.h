/* tokensat CRC32C: the checksum of the weight manifest and of the scrubber.
 *
 * Portable C11. Standard CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value
 * and final xor 0xFFFFFFFF, so the check value of "123456789" is 0xE3069283 (RFC 3720 B.4).
 *
 * Three paths, one contract: the same 32 bits for the same bytes on every path.
 *   TK_CRC_SCALAR  slice-by-8 tables, any CPU
 *   TK_CRC_SSE42   x86-64 crc32 instruction (SSE4.2), picked at run time by a CPU check
 *   TK_CRC_ARMV8   aarch64 crc32c* instructions (the Armv8 CRC32 extension), picked at run time
 *                  from the kernel's HWCAP_CRC32 bit
 * TK_CRC_AUTO resolves to the fastest available path (tk_crc_auto_path).
 *
 * The crc argument chains as zlib's crc32 does: start from 0, and
 *   tk_crc32c(tk_crc32c(0, a, na, p), b, nb, p) == CRC32C of a followed by b.
 */
#ifndef TK_CRC32C_H
#define TK_CRC32C_H

#include <stddef.h>
#include <stdint.h>

enum tk_crc_path { TK_CRC_AUTO = 0, TK_CRC_SCALAR = 1, TK_CRC_SSE42 = 2, TK_CRC_ARMV8 = 3 };
#define TK_CRC_N_PATHS 4

/* CRC32C of buf[0..n) continued from crc (0 to start). A path this build or CPU does not have,
 * or an unknown path number, runs the scalar path (same values); check with tk_crc_available
 * when the path itself matters. buf may be NULL when n is 0. Thread-safe. */
uint32_t tk_crc32c(uint32_t crc, const void *buf, size_t n, int path);

/* 1 if this build on this CPU can run the path (AUTO and SCALAR always), else 0. */
int tk_crc_available(int path);

/* The path AUTO runs here: TK_CRC_SSE42, TK_CRC_ARMV8 or TK_CRC_SCALAR. */
int tk_crc_auto_path(void);

/* "auto", "scalar", "sse42", "armv8"; "unknown" otherwise. */
const char *tk_crc_name(int path);

#endif /* TK_CRC32C_H */
