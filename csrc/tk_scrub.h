/* tokensat weight scrubber: the engine's live weights checked against the install-time manifest
 * (a CRC32C per block of the model file), and a bad block repaired from flash.
 *
 * The model file is mapped MAP_PRIVATE, read-only (tk_gguf.c), so the engine computes straight
 * from the mapping and a radiation upset in RAM, or a bit flipped through /proc/PID/mem by the
 * HIL rig, lands in this process's copy and never in the file. Repair and test injection make a
 * block's pages writable for the moment of the write (mprotect), so a stray write anywhere else
 * still faults.
 *
 *   check    CRC32C of blocks [first, first + n) of the mapping against the manifest: the
 *            indices that disagree. Reads only; safe while the engine computes.
 *   repair   re-read the block from the file bypassing the page cache (O_DIRECT; where the file
 *            system refuses it, e.g. tmpfs, a plain pread: there the page cache is the storage),
 *            check the copy against the manifest, then write it over the mapping's block.
 *            TK_SCRUB_FLASH_BAD when the copy on flash disagrees too: the mapping is left as it
 *            was and nothing is retried here (the caller takes the engine out of service).
 *   flip     xor one bit of the mapping (TEST_INJECT_SEU).
 * repair and flip are serialized by a mutex (both change page protections); check needs none.
 */
#ifndef TK_SCRUB_H
#define TK_SCRUB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tk_engine.h"

#define TK_SCRUB_FLASH_BAD 1

typedef struct {
    uint8_t *map;            /* [size] the engine's live mapping of the model (borrowed) */
    size_t size;             /* octets of the model file */
    size_t page;             /* the mapping's page size */
    size_t block;            /* octets per manifest block, a power of two >= 4096 */
    size_t n_blocks;         /* ceil(size / block) */
    uint32_t *crc;           /* [n_blocks] the manifest's CRC32C per block (owned copy) */
    int fd;                  /* the model, opened O_DIRECT if the file system allows, else plain */
    int direct;              /* 1 if fd reads bypass the page cache */
    uint8_t *io;             /* [block] page-aligned read buffer for repair (O_DIRECT needs it) */
    pthread_mutex_t lock;    /* serializes repair and flip */
} tk_scrub;

/* Set up over a loaded model's mapping; `path` is the model file (reopened for repair), crc the
 * manifest's n_blocks values for blocks of `block` octets. TK_ERR with one line in err if the
 * manifest does not fit the mapping or the file cannot be opened. */
int tk_scrub_init(tk_scrub *s, const tk_gguf *g, const char *path, const uint32_t *crc,
                  size_t n_blocks, size_t block, char err[TK_ERR_LEN]);
void tk_scrub_free(tk_scrub *s);

/* Check blocks [first, first + n) (clipped to the model); writes the indices of those that
 * disagree to bad[0..max_bad) and returns how many disagreed (may exceed max_bad). */
size_t tk_scrub_check(const tk_scrub *s, size_t first, size_t n, size_t *bad, size_t max_bad);

/* Repair block i from flash: TK_OK (the block agrees with the manifest again),
 * TK_SCRUB_FLASH_BAD (flash disagrees too: nothing written), TK_ERR (I/O error; err says). */
int tk_scrub_repair(tk_scrub *s, size_t i, char err[TK_ERR_LEN]);

/* Flip bit `bit` (0..7) of octet `offset` of the live mapping. TK_ERR if out of range. */
int tk_scrub_flip(tk_scrub *s, size_t offset, int bit, char err[TK_ERR_LEN]);

#endif /* TK_SCRUB_H */
