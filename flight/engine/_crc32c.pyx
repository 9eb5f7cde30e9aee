# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython binding of the C CRC32C (csrc/tk_crc32c.h).

crc32c(data, crc=0, path="auto") reads any C-contiguous buffer (bytes, bytearray, memoryview,
mmap, numpy array) in place, without a copy, and releases the GIL for buffers of 64 KiB and up.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint32_t


cdef extern from "tk_crc32c.h" nogil:
    int TK_CRC_AUTO, TK_CRC_SCALAR, TK_CRC_SSE42, TK_CRC_ARMV8, TK_CRC_N_PATHS
    uint32_t tk_crc32c(uint32_t crc, const void *buf, size_t n, int path)
    int tk_crc_available(int path)
    int tk_crc_auto_path()
    const char *tk_crc_name(int path)


PATHS = {"auto": TK_CRC_AUTO, "scalar": TK_CRC_SCALAR, "sse42": TK_CRC_SSE42, "armv8": TK_CRC_ARMV8}
cdef size_t NOGIL_OCTETS = 65536  # below this, releasing the GIL costs more than it frees


def crc32c(data, crc=0, str path="auto"):
    """CRC32C of data (any buffer), continued from crc: crc32c(b, crc32c(a)) == crc32c(a + b).

    path is "auto", "scalar", "sse42" or "armv8"; a path this machine lacks is a ValueError.
    """
    cdef int p = PATHS.get(path, -1)
    if p < 0:
        raise ValueError(f"unknown CRC32C path {path!r}: one of {', '.join(PATHS)}")
    if not tk_crc_available(p):
        raise ValueError(f"CRC32C path {path!r} is not available here: {', '.join(available_paths())}")
    if not 0 <= crc <= 0xFFFFFFFF:
        raise ValueError(f"crc must be in [0, 2**32), not {crc}")
    cdef uint32_t c = crc
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)  # TypeError for a non-buffer or strided one
    try:
        if <size_t>view.len >= NOGIL_OCTETS:
            with nogil:
                c = tk_crc32c(c, view.buf, <size_t>view.len, p)
        else:
            c = tk_crc32c(c, view.buf, <size_t>view.len, p)
    finally:
        PyBuffer_Release(&view)
    return c


def available_paths():
    """The paths this machine can run, "auto" first."""
    return [name for name, p in PATHS.items() if tk_crc_available(p)]


def auto_path():
    """The path "auto" runs here: "sse42", "armv8" or "scalar"."""
    return tk_crc_name(tk_crc_auto_path()).decode()
