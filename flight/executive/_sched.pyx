# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython binding of the C scheduler (csrc/tk_sched.h).

Thin on purpose: it converts the job table, energy and thermal state into the C structs, calls
tk_sched_decide and returns its fields as a tuple; C error lines become ValueError. The
Python-facing types (Job, Energy, Thermal, PowerLevel, Decision) and the defaults live in
flight/executive/scheduler.py.

The job table is taken either as a sequence of objects with Job's attributes (converted row by
row into a buffer this object keeps) or, with no conversion at all, as a C-contiguous numpy array
of JOB_DTYPE, whose layout is read from the C struct below so the two cannot drift apart.
Not thread-safe: one Core holds the decision's scratch space; the GIL is held throughout.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport free, realloc

import time

import numpy as np


cdef extern from "tk_sched.h" nogil:
    int TK_OK
    int TK_SCHED_MAX_LEVELS
    int TK_SCHED_MAX_BATCH
    int TK_SCHED_N_REASONS
    int TK_SCHED_MAX_JOBS

    ctypedef struct tk_sched_job:
        double arrival_s, deadline_s
        uint32_t id
        int32_t priority, tokens_remaining, tokens_done, running

    ctypedef struct tk_sched_energy:
        double soc_wh, capacity_wh, floor_wh, solar_w, eclipse_entry_s, eclipse_exit_s
        double base_load_w
        int32_t in_eclipse

    ctypedef struct tk_sched_thermal:
        double temp_c, limit_c, margin_c

    ctypedef struct tk_sched_level:
        double watts, tokens_per_s

    ctypedef struct tk_sched_params:
        int32_t n_batch
        double aging_per_s, hysteresis, horizon_min_s

    ctypedef struct tk_sched:
        char err[256]

    ctypedef struct tk_sched_decision:
        int32_t level, reason, n_batch, n_runnable, n_preempted, energy_level, thermal_level
        int64_t work_tokens
        double horizon_s, tokens_per_s, soc_min_wh, soc_end_wh
        int32_t index[64]
        uint32_t id[64]

    int tk_sched_init(tk_sched *s, const tk_sched_params *p, const tk_sched_level *levels,
                      int n_levels)
    int tk_sched_decide(tk_sched *s, double now_s, const tk_sched_job *jobs, int n_jobs,
                        const tk_sched_energy *e, const tk_sched_thermal *t,
                        tk_sched_decision *out)
    void tk_sched_project(const tk_sched_energy *e, double horizon_s, double watts,
                          double compute_s, double *soc_min_wh, double *soc_end_wh)
    const char *tk_sched_reason_name(int reason)
    const char *tk_sched_reason_text(int reason)


# The reason codes, by code, straight from the C table (TK_SCHED_REASONS in tk_sched.h).
REASONS = tuple(tk_sched_reason_name(i).decode() for i in range(TK_SCHED_N_REASONS))
REASON_TEXT = {REASONS[i]: tk_sched_reason_text(i).decode() for i in range(TK_SCHED_N_REASONS)}
MAX_LEVELS = TK_SCHED_MAX_LEVELS
MAX_BATCH = TK_SCHED_MAX_BATCH
if MAX_LEVELS > 64:  # Core.__cinit__'s table on the stack
    raise ImportError("TK_SCHED_MAX_LEVELS grew past the binding's 64")


cdef tk_sched_job _probe
# A row of the job table as numpy sees it: the C struct's fields at the C struct's offsets.
JOB_DTYPE = np.dtype({
    "names": ["arrival_s", "deadline_s", "id", "priority", "tokens_remaining", "tokens_done",
              "running"],
    "formats": ["<f8", "<f8", "<u4", "<i4", "<i4", "<i4", "<i4"],
    "offsets": [<char *>&_probe.arrival_s - <char *>&_probe,
                <char *>&_probe.deadline_s - <char *>&_probe,
                <char *>&_probe.id - <char *>&_probe,
                <char *>&_probe.priority - <char *>&_probe,
                <char *>&_probe.tokens_remaining - <char *>&_probe,
                <char *>&_probe.tokens_done - <char *>&_probe,
                <char *>&_probe.running - <char *>&_probe],
    "itemsize": sizeof(tk_sched_job),
})
if np.dtype("<f8") != np.dtype("f8"):  # the C structs are native; the dtype says little-endian
    raise ImportError("flight.executive._sched assumes a little-endian machine")


cdef void _energy(tk_sched_energy *e, object o) except *:
    e.soc_wh = o.soc_wh
    e.capacity_wh = o.capacity_wh
    e.floor_wh = o.floor_wh
    e.solar_w = o.solar_w
    e.eclipse_entry_s = o.eclipse_entry_s
    e.eclipse_exit_s = o.eclipse_exit_s
    e.base_load_w = o.base_load_w
    e.in_eclipse = 1 if o.in_eclipse else 0


cdef void _thermal(tk_sched_thermal *t, object o) except *:
    t.temp_c = o.temp_c
    t.limit_c = o.limit_c
    t.margin_c = o.margin_c


cdef class Core:
    """One configured scheduler: power levels (lowest first) as (watts, tokens_per_s) pairs."""
    cdef tk_sched s
    cdef tk_sched_decision d
    cdef tk_sched_job *rows    # [cap] the converted job table of the last sequence call
    cdef int cap

    def __cinit__(self, int n_batch, double aging_per_s, double hysteresis,
                  double horizon_min_s, levels):
        cdef tk_sched_level lv[64]  # [n] the table, lowest first (TK_SCHED_MAX_LEVELS <= 64)
        cdef tk_sched_params p
        cdef int n = 0
        self.rows = NULL
        self.cap = 0
        for watts, tokens_per_s in levels:
            if n == TK_SCHED_MAX_LEVELS:
                raise ValueError(f"more than {TK_SCHED_MAX_LEVELS} power levels")
            lv[n].watts = watts
            lv[n].tokens_per_s = tokens_per_s
            n += 1
        p.n_batch = n_batch
        p.aging_per_s = aging_per_s
        p.hysteresis = hysteresis
        p.horizon_min_s = horizon_min_s
        if tk_sched_init(&self.s, &p, lv, n) != TK_OK:
            raise ValueError(self.s.err.decode(errors="replace"))

    def __dealloc__(self):
        free(self.rows)

    cdef const tk_sched_job *_table(self, object jobs, int *n, Py_buffer *view,
                                    bint *held) except? NULL:
        """The job table as C rows: a JOB_DTYPE array's own memory (*held set: view holds it
        until the caller releases it), or the rows converted from a sequence of Job-like
        objects into this object's buffer."""
        cdef int i
        cdef tk_sched_job *r
        if isinstance(jobs, np.ndarray):
            if jobs.dtype != JOB_DTYPE or jobs.ndim != 1:
                raise ValueError(f"job array must be one-dimensional of JOB_DTYPE, not {jobs.dtype} "
                                 f"with {jobs.ndim} dimensions")
            if len(jobs) > TK_SCHED_MAX_JOBS:
                raise ValueError(f"{len(jobs)} jobs; at most {TK_SCHED_MAX_JOBS}")
            PyObject_GetBuffer(jobs, view, PyBUF_SIMPLE)  # raises unless C-contiguous
            held[0] = True
            n[0] = <int>len(jobs)
            return <const tk_sched_job *>view.buf
        if len(jobs) > TK_SCHED_MAX_JOBS:
            raise ValueError(f"{len(jobs)} jobs; at most {TK_SCHED_MAX_JOBS}")
        n[0] = <int>len(jobs)
        if n[0] > self.cap:
            r = <tk_sched_job *>realloc(self.rows, <size_t>n[0] * sizeof(tk_sched_job))
            if r == NULL:
                raise MemoryError(f"job table of {n[0]} rows")
            self.rows = r
            self.cap = n[0]
        r = self.rows
        i = 0
        for j in jobs:
            if i == n[0]:
                raise ValueError("the job sequence yielded more rows than its len()")
            r[i].id = j.id
            r[i].priority = j.priority
            r[i].deadline_s = j.deadline_s
            r[i].tokens_remaining = j.tokens_remaining
            r[i].tokens_done = j.tokens_done
            r[i].arrival_s = j.arrival_s
            r[i].running = 1 if j.running else 0
            i += 1
        if i != n[0]:
            raise ValueError("the job sequence yielded fewer rows than its len()")
        return r

    def decide(self, double now_s, jobs, energy, thermal):
        """One decision: (level, reason code, batch ids, batch rows, n_runnable, n_preempted,
        energy_level, thermal_level, work_tokens, horizon_s, tokens_per_s, soc_min_wh,
        soc_end_wh)."""
        cdef tk_sched_energy e
        cdef tk_sched_thermal t
        cdef Py_buffer view
        cdef int n, rc, k
        cdef bint held = False
        _energy(&e, energy)
        _thermal(&t, thermal)
        cdef const tk_sched_job *rows = self._table(jobs, &n, &view, &held)
        try:
            rc = tk_sched_decide(&self.s, now_s, rows, n, &e, &t, &self.d)
        finally:
            if held:
                PyBuffer_Release(&view)
        if rc != TK_OK:
            raise ValueError(self.s.err.decode(errors="replace"))
        cdef tk_sched_decision *d = &self.d
        ids = tuple([d.id[k] for k in range(d.n_batch)])
        index = tuple([d.index[k] for k in range(d.n_batch)])
        return (d.level, d.reason, ids, index, d.n_runnable, d.n_preempted, d.energy_level,
                d.thermal_level, d.work_tokens, d.horizon_s, d.tokens_per_s, d.soc_min_wh,
                d.soc_end_wh)

    def last_decision_bytes(self) -> bytes:
        """The whole tk_sched_decision of the last call, byte for byte (for determinism checks)."""
        return (<char *>&self.d)[:sizeof(tk_sched_decision)]

    def time_decide(self, double now_s, jobs, energy, thermal, int reps) -> float:
        """Seconds per C decision: the table and states converted once, then tk_sched_decide
        called reps times in a C loop (GIL held), timed around the loop with
        time.perf_counter and divided by reps."""
        cdef tk_sched_energy e
        cdef tk_sched_thermal t
        cdef Py_buffer view
        cdef int n, i, rc = TK_OK
        if reps < 1:
            raise ValueError("reps must be >= 1")
        cdef bint held = False
        _energy(&e, energy)
        _thermal(&t, thermal)
        cdef const tk_sched_job *rows = self._table(jobs, &n, &view, &held)
        try:
            t0 = time.perf_counter()
            for i in range(reps):  # plain C: no Python object is touched inside the loop
                rc |= tk_sched_decide(&self.s, now_s, rows, n, &e, &t, &self.d)
            dt = time.perf_counter() - t0
        finally:
            if held:
                PyBuffer_Release(&view)
        if rc != TK_OK:
            raise ValueError(self.s.err.decode(errors="replace"))
        return dt / reps


def project(energy, double horizon_s, double watts, double compute_s):
    """The C energy model alone: (lowest, final) projected charge in Wh over horizon_s with
    compute drawing watts for the first compute_s seconds. Inputs are not validated here."""
    cdef tk_sched_energy e
    cdef double lo, end
    _energy(&e, energy)
    tk_sched_project(&e, horizon_s, watts, compute_s, &lo, &end)
    return lo, end
