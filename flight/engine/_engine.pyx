# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython binding of the C engine (csrc/tk_engine.h).

Thin on purpose: it converts arguments, releases the GIL around every forward pass and decode
loop, and turns C error lines into EngineError. Policy (defaults, tokenizer, chat) lives in
flight/engine/engine.py.
"""
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np


cdef extern from "tk_engine.h" nogil:
    int TK_OK
    int TK_ERR_LEN

    ctypedef struct tk_gguf_kv:
        uint64_t arr_n
        unsigned int type
        unsigned int arr_type

    ctypedef struct tk_gguf:
        pass

    ctypedef struct tk_config:
        int n_layers, dim, ffn_dim, n_heads, n_kv_heads, head_dim, kv_dim, rope_dim
        int vocab, train_ctx
        float rope_base, norm_eps

    ctypedef struct tk_model:
        pass

    ctypedef struct tk_load_params:
        int n_ctx, n_slots, n_threads, simd

    ctypedef struct tk_sample_params:
        float temperature
        int top_k
        float top_p
        uint64_t seed
        uint64_t rng_state

    ctypedef struct tk_rng:
        uint64_t state

    ctypedef struct tk_gen_stats:
        int n_prompt, n_reused, n_generated, stop_reason
        double prefill_s, decode_s, first_token_s
        uint64_t rng_state

    ctypedef struct tk_decoder:
        pass

    ctypedef int (*tk_token_cb)(int token, void *user)

    const tk_gguf_kv *tk_gguf_find(const tk_gguf *g, const char *key)
    int tk_gguf_get_i64(const tk_gguf *g, const char *key, int64_t *out)
    int tk_gguf_get_f64(const tk_gguf *g, const char *key, double *out)
    int tk_gguf_get_str(const tk_gguf *g, const char *key, const char **s, uint64_t *n)
    int tk_gguf_arr_str(const tk_gguf_kv *kv, uint64_t i, const char **s, uint64_t *n)
    int tk_gguf_arr_i64(const tk_gguf_kv *kv, uint64_t i, int64_t *out)

    const char *tk_simd_name(int simd)
    int tk_model_load(tk_model **out, const char *path, const tk_load_params *p, char *err)
    void tk_model_free(tk_model *m)
    const tk_config *tk_model_config(const tk_model *m)
    const tk_gguf *tk_model_gguf(const tk_model *m)
    int tk_model_simd(const tk_model *m)
    int tk_model_threads(const tk_model *m)
    int tk_model_n_ctx(const tk_model *m)
    int tk_model_n_slots(const tk_model *m)
    size_t tk_model_alloc_bytes(const tk_model *m)
    size_t tk_model_weight_bytes(const tk_model *m)

    int tk_decoder_new(tk_decoder **out, tk_model *m, char *err)
    void tk_decoder_free(tk_decoder *d)
    const char *tk_decoder_error(const tk_decoder *d)
    int tk_decoder_forget(tk_decoder *d, int slot)
    int tk_decoder_prefill(tk_decoder *d, int slot, const int *ids, int n, const float **logits)
    int tk_decoder_generate(tk_decoder *d, int slot, const int *prompt, int n_prompt, int max_new,
                            const tk_sample_params *sp, const int *eos_ids, int n_eos,
                            tk_token_cb cb, void *user, int *stop_flag, int *out,
                            tk_gen_stats *stats)
    int tk_batch_join(tk_decoder *d, const int *prompt, int n_prompt, int max_new,
                      const tk_sample_params *sp, const int *eos_ids, int n_eos, int *slot_out)
    int tk_batch_step(tk_decoder *d, int *tokens, int *slots, int *stops, int *n_out)
    int tk_batch_leave(tk_decoder *d, int slot)
    int tk_batch_active(const tk_decoder *d)
    int tk_decoder_rng_state(tk_decoder *d, int slot, uint64_t *state)
    int tk_decoder_logits(tk_decoder *d, int slot, const float **logits)
    void tk_rng_seed(tk_rng *r, uint64_t seed)


class EngineError(ValueError):
    """A one-line description of why the engine refused a model, an argument or a request."""


SIMD_NAMES = {"auto": 0, "scalar": 1, "avx2": 2, "neon": 3}
STOP_REASONS = {0: "none", 1: "eos", 2: "limit", 3: "request", 4: "context"}
GV_STRING = 8
GV_ARRAY = 9


def _c_int(str name, value):
    """value as a C int, or an EngineError naming it: Python ints are unbounded, C's are not."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise EngineError(f"{name} must be an integer, got {value!r}")
    v = value.__index__()
    if not -(2**31) <= v < 2**31:
        raise EngineError(f"{name} {v} is out of range")
    return v


cdef class _IntBuf:
    """A malloc'd int array converted from a Python sequence; freed with the object."""
    cdef int *p
    cdef int n

    def __cinit__(self, values, int min_len=0):
        cdef Py_ssize_t i
        self.n = len(values)
        self.p = <int *>malloc(max(self.n, min_len, 1) * sizeof(int))
        if self.p == NULL:
            raise MemoryError()
        for i in range(self.n):
            v = values[i]
            if not isinstance(v, int) and not hasattr(v, "__index__"):
                raise EngineError(f"token ids must be integers, got {type(v).__name__}")
            iv = int(v)
            if iv < -(2**31) or iv >= 2**31:
                raise EngineError(f"token id {iv} is outside the vocabulary")
            self.p[i] = iv

    def __dealloc__(self):
        free(self.p)


U64_MAX = 2**64 - 1


def _rng_state(value):
    """A sampler RNG state from Python: None (seed the RNG) as 0, else an int in 1..2**64-1.

    0 is refused rather than passed on: it is xorshift64*'s fixed point (the generator would
    draw the same number for ever) and the C API reads it as "seed from the seed"."""
    if value is None:
        return 0
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise EngineError(f"rng_state must be an integer, got {type(value).__name__}")
    v = value.__index__()
    if not 1 <= v <= U64_MAX:
        raise EngineError(f"rng_state must be between 1 and 2**64-1 (a xorshift64* state), got {v}")
    return v


def rng_state_from_seed(seed):
    """The RNG state a generation seeded with seed starts from (what a resume after 0 tokens
    needs; the same as passing the seed again)."""
    cdef tk_rng r
    tk_rng_seed(&r, <uint64_t>(int(seed) & U64_MAX))
    return r.state


cdef class _Callback:
    cdef object fn
    cdef object error
    cdef tk_decoder *d     # set when fn takes (token, rng state after it)
    cdef int slot


cdef int _on_token(int token, void *user) noexcept with gil:
    cdef _Callback cb = <_Callback>user
    cdef uint64_t state = 0
    try:
        if cb.d != NULL:
            # the decode loop stored the state before calling us: it is the one to save with token
            tk_decoder_rng_state(cb.d, cb.slot, &state)
            return 1 if cb.fn(token, state) is False else 0
        return 1 if cb.fn(token) is False else 0
    except BaseException as e:  # stop at this token and re-raise in the caller's frame
        cb.error = e
        return 1


cdef tk_sample_params _sample_params(double temperature, int top_k, double top_p, seed,
                                     rng_state=None) except *:
    cdef tk_sample_params sp
    sp.temperature = temperature
    sp.top_k = top_k
    sp.top_p = top_p
    sp.seed = <uint64_t>(int(seed) & U64_MAX)
    sp.rng_state = <uint64_t>_rng_state(rng_state)
    return sp


cdef class CModel:
    """One loaded model with its decoder: the owner of every C resource."""
    cdef tk_model *m
    cdef tk_decoder *d
    cdef int stop_flag
    cdef bint busy

    def __cinit__(self, str path, threads, n_ctx, n_slots, str simd):
        cdef char err[256]
        cdef tk_load_params p
        cdef bytes bpath = path.encode()
        cdef const char *cpath = bpath
        cdef int rc
        if simd not in SIMD_NAMES:
            raise EngineError(f"unknown SIMD path '{simd}': choose one of {', '.join(SIMD_NAMES)}")
        p.n_ctx = _c_int("n_ctx", n_ctx)
        p.n_slots = _c_int("n_batch", n_slots)
        p.n_threads = _c_int("threads", threads)
        p.simd = SIMD_NAMES[simd]
        err[0] = 0
        with nogil:
            rc = tk_model_load(&self.m, cpath, &p, err)
        if rc != TK_OK:
            raise EngineError(err.decode("utf-8", "replace"))
        if tk_decoder_new(&self.d, self.m, err) != TK_OK:
            tk_model_free(self.m)
            self.m = NULL
            raise EngineError(err.decode("utf-8", "replace"))

    def __dealloc__(self):
        self.close()

    def close(self):
        if self.d != NULL:
            tk_decoder_free(self.d)
            self.d = NULL
        if self.m != NULL:
            tk_model_free(self.m)
            self.m = NULL

    cdef void _check(self) except *:
        if self.m == NULL:
            raise EngineError("the engine is closed")
        if self.busy:
            raise EngineError("the engine is busy with another call")

    cdef _fail(self):
        return EngineError(tk_decoder_error(self.d).decode("utf-8", "replace"))

    # -- model facts ----------------------------------------------------------------------------

    @property
    def config(self):
        self._check()
        cdef const tk_config *c = tk_model_config(self.m)
        return dict(n_layers=c.n_layers, dim=c.dim, ffn_dim=c.ffn_dim, n_heads=c.n_heads,
                    n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, kv_dim=c.kv_dim,
                    rope_dim=c.rope_dim, vocab=c.vocab, train_ctx=c.train_ctx,
                    rope_base=c.rope_base, norm_eps=c.norm_eps)

    @property
    def simd(self):
        self._check()
        return tk_simd_name(tk_model_simd(self.m)).decode()

    @property
    def threads(self):
        self._check()
        return tk_model_threads(self.m)

    @property
    def n_ctx(self):
        self._check()
        return tk_model_n_ctx(self.m)

    @property
    def n_slots(self):
        self._check()
        return tk_model_n_slots(self.m)

    @property
    def alloc_bytes(self):
        self._check()
        return tk_model_alloc_bytes(self.m)

    @property
    def weight_bytes(self):
        self._check()
        return tk_model_weight_bytes(self.m)

    # -- metadata -------------------------------------------------------------------------------

    def meta_str(self, str key):
        self._check()
        cdef const char *s
        cdef uint64_t n
        if tk_gguf_get_str(tk_model_gguf(self.m), key.encode(), &s, &n) != TK_OK:
            return None
        return s[:n].decode("utf-8", "replace")

    def meta_int(self, str key):
        self._check()
        cdef int64_t v
        if tk_gguf_get_i64(tk_model_gguf(self.m), key.encode(), &v) != TK_OK:
            return None
        return v

    def meta_float(self, str key):
        self._check()
        cdef double v
        if tk_gguf_get_f64(tk_model_gguf(self.m), key.encode(), &v) != TK_OK:
            return None
        return v

    def meta_array(self, str key):
        """A metadata array as a list of str or int, or None when absent."""
        self._check()
        cdef const tk_gguf_kv *kv = tk_gguf_find(tk_model_gguf(self.m), key.encode())
        cdef uint64_t i, n
        cdef const char *s
        cdef int64_t v
        if kv == NULL or kv.type != GV_ARRAY:
            return None
        out = []
        if kv.arr_type == GV_STRING:
            for i in range(kv.arr_n):
                tk_gguf_arr_str(kv, i, &s, &n)
                out.append(s[:n].decode("utf-8", "replace"))
        else:
            for i in range(kv.arr_n):
                if tk_gguf_arr_i64(kv, i, &v) != TK_OK:
                    raise EngineError(f"metadata {key} is not an array of integers or strings")
                out.append(v)
        return out

    # -- inference ------------------------------------------------------------------------------

    def prefill_logits(self, ids, int slot=0):
        """Evaluate ids on slot (reusing its cached prefix); float32 logits of the last one."""
        self._check()
        cdef _IntBuf buf = _IntBuf(ids)
        cdef const float *logits
        cdef int rc, vocab = tk_model_config(self.m).vocab
        self.busy = True
        try:
            with nogil:
                rc = tk_decoder_prefill(self.d, slot, buf.p, buf.n, &logits)
        finally:
            self.busy = False
        if rc != TK_OK:
            raise self._fail()
        out = np.empty(vocab, dtype=np.float32)
        cdef float[::1] view = out
        memcpy(&view[0], logits, vocab * sizeof(float))
        return out

    def generate(self, ids, max_new, double temperature, top_k, double top_p, seed,
                 eos_ids, on_token=None, int slot=0, rng_state=None, bint with_state=False):
        """Run the C decode loop; returns (generated ids, stats dict).

        rng_state (None: seed from seed) starts the sampler's RNG there, to resume a sequence;
        stats["rng_state"] is its state after the last token. with_state: on_token is called
        as on_token(token, rng state after token), what a checkpoint of the run needs."""
        self._check()
        cdef int c_max_new = _c_int("max tokens", max_new)
        cdef _IntBuf prompt = _IntBuf(ids)
        cdef _IntBuf eos = _IntBuf(eos_ids)
        # the loop stops at the context's end, so it never writes more than n_ctx ids
        cdef _IntBuf out = _IntBuf([], min(c_max_new, tk_model_n_ctx(self.m)))
        cdef tk_sample_params sp = _sample_params(temperature, _c_int("top-k", top_k), top_p, seed,
                                                  rng_state)
        cdef tk_gen_stats st
        cdef _Callback cb = _Callback()
        cdef tk_token_cb cfn = NULL
        cdef void *user = NULL
        cdef int rc
        if on_token is not None:
            cb.fn = on_token
            if with_state:
                cb.d = self.d
                cb.slot = slot
            cfn = _on_token
            user = <void *>cb
        self.stop_flag = 0
        self.busy = True
        try:
            with nogil:
                rc = tk_decoder_generate(self.d, slot, prompt.p, prompt.n, c_max_new, &sp, eos.p,
                                         eos.n, cfn, user, &self.stop_flag, out.p, &st)
        finally:
            self.busy = False
        if cb.error is not None:
            raise cb.error
        if rc != TK_OK:
            raise self._fail()
        tokens = [out.p[i] for i in range(st.n_generated)]
        stats = dict(n_prompt=st.n_prompt, n_reused=st.n_reused, n_generated=st.n_generated,
                     stop_reason=STOP_REASONS.get(st.stop_reason, "none"),
                     prefill_s=st.prefill_s, decode_s=st.decode_s, first_token_s=st.first_token_s,
                     rng_state=st.rng_state)
        return tokens, stats

    def forget(self, int slot=0):
        """Drop what slot's KV cache holds; the next prompt there is evaluated in full."""
        self._check()
        if tk_decoder_forget(self.d, slot) != TK_OK:
            raise self._fail()

    def request_stop(self):
        """Ask a running generate() to stop at the next token boundary (any thread)."""
        self.stop_flag = 1

    # -- batched decoding -----------------------------------------------------------------------

    def batch_join(self, ids, max_new, double temperature, top_k, double top_p, seed,
                   eos_ids, rng_state=None):
        """Prefill ids into a free slot and sample its first token; returns the slot.
        rng_state as in generate."""
        self._check()
        cdef int c_max_new = _c_int("max tokens", max_new)
        cdef _IntBuf prompt = _IntBuf(ids)
        cdef _IntBuf eos = _IntBuf(eos_ids)
        cdef tk_sample_params sp = _sample_params(temperature, _c_int("top-k", top_k), top_p, seed,
                                                  rng_state)
        cdef int rc, slot = -1
        self.busy = True
        try:
            with nogil:
                rc = tk_batch_join(self.d, prompt.p, prompt.n, c_max_new, &sp, eos.p, eos.n, &slot)
        finally:
            self.busy = False
        if rc != TK_OK:
            raise self._fail()
        return slot

    def batch_step(self):
        """One forward over all active sequences: a list of (slot, token, stop reason, rng
        state after the token)."""
        self._check()
        cdef int n_slots = tk_model_n_slots(self.m)
        cdef _IntBuf toks = _IntBuf([], n_slots)
        cdef _IntBuf slots = _IntBuf([], n_slots)
        cdef _IntBuf stops = _IntBuf([], n_slots)
        cdef int rc, i, n = 0
        cdef uint64_t state
        self.busy = True
        try:
            with nogil:
                rc = tk_batch_step(self.d, toks.p, slots.p, stops.p, &n)
        finally:
            self.busy = False
        if rc != TK_OK:
            raise self._fail()
        out = []
        for i in range(n):
            tk_decoder_rng_state(self.d, slots.p[i], &state)  # slots.p[i] is valid: C wrote it
            out.append((slots.p[i], toks.p[i], STOP_REASONS.get(stops.p[i], "none"), state))
        return out

    def batch_leave(self, int slot):
        self._check()
        if tk_batch_leave(self.d, slot) != TK_OK:
            raise self._fail()

    def rng_state(self, int slot):
        """The RNG state of slot's sequence after the last token it handed out."""
        self._check()
        cdef uint64_t state
        if tk_decoder_rng_state(self.d, slot, &state) != TK_OK:
            raise self._fail()
        return state

    def slot_logits(self, int slot):
        """A float32 copy of the logits slot's latest token was sampled from (EngineError once
        a later forward pass overwrote them)."""
        self._check()
        cdef const float *logits
        cdef int vocab = tk_model_config(self.m).vocab
        if tk_decoder_logits(self.d, slot, &logits) != TK_OK:
            raise self._fail()
        out = np.empty(vocab, dtype=np.float32)
        cdef float[::1] view = out
        memcpy(&view[0], logits, vocab * sizeof(float))
        return out

    @property
    def batch_active(self):
        self._check()
        return tk_batch_active(self.d)


cdef extern from "tk_scrub.h" nogil:
    int TK_SCRUB_FLASH_BAD

    ctypedef struct tk_scrub:
        size_t size
        size_t block
        size_t n_blocks
        int direct

    int tk_scrub_init(tk_scrub *s, const tk_gguf *g, const char *path, const uint32_t *crc,
                      size_t n_blocks, size_t block, char *err)
    void tk_scrub_free(tk_scrub *s)
    size_t tk_scrub_check(const tk_scrub *s, size_t first, size_t n, size_t *bad, size_t max_bad)
    int tk_scrub_repair(tk_scrub *s, size_t i, char *err)
    int tk_scrub_flip(tk_scrub *s, size_t offset, int bit, char *err)


cdef class CScrub:
    """The weight scrubber over a loaded model's live mapping (csrc/tk_scrub.h). check releases
    the GIL; repair and flip hold a C mutex of their own. The model must stay open."""
    cdef tk_scrub s
    cdef bint ready
    cdef CModel model

    def __cinit__(self, CModel model, str path, crcs, size_t block):
        cdef char err[256]
        cdef size_t n = len(crcs), i
        cdef uint32_t *c = <uint32_t *>malloc(max(n, 1) * sizeof(uint32_t))
        cdef bytes bpath = path.encode()
        cdef int rc
        if c == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                c[i] = crcs[i]
            if model.m == NULL:
                raise EngineError("the engine is closed")
            err[0] = 0
            rc = tk_scrub_init(&self.s, tk_model_gguf(model.m), bpath, c, n, block, err)
        finally:
            free(c)
        if rc != TK_OK:
            raise EngineError(err.decode("utf-8", "replace"))
        self.ready = True
        self.model = model

    cdef void _open(self) except *:
        """The model must still be mapped; unlike the model's own calls, scrubbing runs while
        the engine computes (it only reads, or patches under the C lock)."""
        if self.model.m == NULL:
            raise EngineError("the engine is closed")

    def __dealloc__(self):
        if self.ready:
            tk_scrub_free(&self.s)
            self.ready = False

    @property
    def n_blocks(self):
        return self.s.n_blocks

    @property
    def block_octets(self):
        return self.s.block

    @property
    def size(self):
        return self.s.size

    @property
    def direct_io(self):
        """True if repairs read the flash with O_DIRECT (else the file system has no direct I/O)."""
        return bool(self.s.direct)

    def check(self, size_t first, size_t n):
        """Indices of blocks in [first, first + n) whose CRC32C disagrees with the manifest."""
        self._open()
        cdef size_t bad[64]
        cdef size_t found
        with nogil:
            found = tk_scrub_check(&self.s, first, n, bad, 64)
        if found <= 64:
            return [bad[i] for i in range(found)]
        out = []  # more than 64 bad in one call: list them one block at a time
        for i in range(first, min(first + n, self.s.n_blocks)):
            if tk_scrub_check(&self.s, i, 1, bad, 1):
                out.append(i)
        return out

    def repair(self, size_t i):
        """Rewrite block i from flash: True once it agrees with the manifest again, False if the
        copy on flash disagrees too (nothing written). EngineError on an I/O error."""
        self._open()
        cdef char err[256]
        cdef int rc
        err[0] = 0
        with nogil:
            rc = tk_scrub_repair(&self.s, i, err)
        if rc == TK_SCRUB_FLASH_BAD:
            return False
        if rc != TK_OK:
            raise EngineError(err.decode("utf-8", "replace"))
        return True

    def flip(self, size_t offset, int bit):
        """Flip one bit of the live weights (TEST_INJECT_SEU)."""
        self._open()
        cdef char err[256]
        err[0] = 0
        if tk_scrub_flip(&self.s, offset, bit, err) != TK_OK:
            raise EngineError(err.decode("utf-8", "replace"))
