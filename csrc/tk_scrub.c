/* tokensat weight scrubber (see tk_scrub.h for the contract). */
#define _GNU_SOURCE
#include "tk_scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tk_crc32c.h"
#include "tk_internal.h"

int tk_scrub_init(tk_scrub *s, const tk_gguf *g, const char *path, const uint32_t *crc,
                  size_t n_blocks, size_t block, char err[TK_ERR_LEN]) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (pthread_mutex_init(&s->lock, NULL) != 0) return tk_fail(err, "cannot create the scrubber's lock");
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || block < (size_t)page || (block & (block - 1)) != 0) {
        tk_scrub_free(s);
        return tk_fail(err, "scrub block size %zu is not a power of two of at least a page", block);
    }
    if (n_blocks != (g->size + block - 1) / block) {
        tk_scrub_free(s);
        return tk_fail(err, "the manifest's %zu blocks of %zu octets do not cover the model's %zu",
                       n_blocks, block, g->size);
    }
    s->map = (uint8_t *)g->map;
    s->size = g->size;
    s->page = (size_t)page;
    s->block = block;
    s->n_blocks = n_blocks;
    s->crc = malloc(n_blocks * sizeof *s->crc);                       /* [n_blocks] */
    if (!s->crc || posix_memalign((void **)&s->io, (size_t)page, block) != 0) {  /* [block] */
        s->io = NULL;
        tk_scrub_free(s);
        return tk_fail(err, "out of memory for the scrubber");
    }
    memcpy(s->crc, crc, n_blocks * sizeof *s->crc);
    s->fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    s->direct = s->fd >= 0;
    if (s->fd < 0 && errno == EINVAL)  /* this file system has no direct I/O: the cache is it */
        s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        tk_scrub_free(s);
        return tk_fail(err, "cannot open model %s for repair: %s", path, strerror(e));
    }
    return TK_OK;
}

void tk_scrub_free(tk_scrub *s) {
    if (s->fd >= 0) close(s->fd);
    pthread_mutex_destroy(&s->lock);
    free(s->crc);
    free(s->io);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

static size_t block_len(const tk_scrub *s, size_t i) {
    size_t start = i * s->block;
    return s->size - start < s->block ? s->size - start : s->block;
}

size_t tk_scrub_check(const tk_scrub *s, size_t first, size_t n, size_t *bad, size_t max_bad) {
    size_t found = 0;
    size_t end = first + n < first || first + n > s->n_blocks ? s->n_blocks : first + n;
    for (size_t i = first; i < end; i++) {
        if (tk_crc32c(0, s->map + i * s->block, block_len(s, i), TK_CRC_AUTO) == s->crc[i])
            continue;
        if (found < max_bad) bad[found] = i;
        found++;
    }
    return found;
}

/* Make the pages of [off, off + len) writable (w = 1) or read-only again (w = 0). */
static int protect(const tk_scrub *s, size_t off, size_t len, int w) {
    uintptr_t a = (uintptr_t)(s->map + off) & ~(uintptr_t)(s->page - 1);
    uintptr_t b = (uintptr_t)(s->map + off + len);
    return mprotect((void *)a, b - a, w ? PROT_READ | PROT_WRITE : PROT_READ);
}

/* Write len octets of src over the mapping at off (pages writable only for the memcpy). */
static int patch(tk_scrub *s, size_t off, const uint8_t *src, size_t len, char err[TK_ERR_LEN]) {
    if (protect(s, off, len, 1) != 0)
        return tk_fail(err, "cannot make weights writable at octet %zu: %s", off, strerror(errno));
    memcpy(s->map + off, src, len);
    if (protect(s, off, len, 0) != 0)
        return tk_fail(err, "cannot make weights read-only again at octet %zu: %s", off,
                       strerror(errno));
    return TK_OK;
}

/* Read block i from the file into s->io; its length in *len. O_DIRECT wants whole aligned
 * blocks, so the last block is asked for in full and comes back short at the end of file. */
static int read_block(tk_scrub *s, size_t i, size_t *len, char err[TK_ERR_LEN]) {
    size_t want = block_len(s, i), got = 0;
    off_t off = (off_t)(i * s->block);
    if (!s->direct)  /* best effort: a page nobody maps goes, the next read comes from flash */
        posix_fadvise(s->fd, off, (off_t)want, POSIX_FADV_DONTNEED);
    while (got < want) {
        ssize_t r = pread(s->fd, s->io + got, s->block - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return tk_fail(err, "reading block %zu of the model: %s", i, strerror(errno));
        if (r == 0) return tk_fail(err, "the model file ends inside block %zu", i);
        got += (size_t)r;
    }
    *len = want;
    return TK_OK;
}

int tk_scrub_repair(tk_scrub *s, size_t i, char err[TK_ERR_LEN]) {
    if (i >= s->n_blocks) return tk_fail(err, "block %zu is outside the model's %zu", i, s->n_blocks);
    pthread_mutex_lock(&s->lock);
    size_t len = 0;
    int rc = read_block(s, i, &len, err);
    if (rc == TK_OK) {
        if (tk_crc32c(0, s->io, len, TK_CRC_AUTO) != s->crc[i])
            rc = TK_SCRUB_FLASH_BAD;
        else
            rc = patch(s, i * s->block, s->io, len, err);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int tk_scrub_flip(tk_scrub *s, size_t offset, int bit, char err[TK_ERR_LEN]) {
    if (offset >= s->size || bit < 0 || bit > 7)
        return tk_fail(err, "no bit %d of octet %zu in the model's %zu octets", bit, offset, s->size);
    pthread_mutex_lock(&s->lock);
    uint8_t v = s->map[offset] ^ (uint8_t)(1u << bit);
    int rc = patch(s, offset, &v, 1, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}
