"""Ground half of the reliable downlink: deduplicate, reassemble and authenticate result
segments, and say what the ground holds in selective acknowledgements (DL_SACK).

Segments are committed to the archive before any acknowledgement covers them, so a ground that
is killed loses nothing it acknowledged; what it had not committed the flight sends again.

A reassembled result is archived only if its CRC-32 and then its MAC (sdls.result_mac, with
the key the segments name) verify. Otherwise its segments are dropped, counted, and the result
is re-requested: every DL_SACK entry states all the ground holds of a result, which the flight
takes as the truth, and a discarded result keeps its entry (at first with no ranges) in every
SACK until it is archived, so a lost or overtaken SACK cannot leave it half sent. Reassembly and
SACK building exclude each other, so a SACK can never acknowledge the last segment of a result
that then fails its check (the flight would consider it delivered).
"""
from __future__ import annotations

import logging
import threading
import zlib
from typing import Any

import msgpack

from flight.link.keys import KeyRing
from flight.link.sack import to_ranges
from flight.link.sdls import result_mac
from ground.archive import GroundArchive

log = logging.getLogger(__name__)
MAX_SACK_RANGES = 64  # per job; fewer ranges only means some held segments are resent


class ResultAssembler:
    def __init__(self, archive: GroundArchive, keys: KeyRing, segment_octets: int, max_sack_body_octets: int):
        self._archive = archive
        self._keys = keys
        self._segment_octets = segment_octets
        self._max_sack_body_octets = max_sack_body_octets
        self.counters = dict.fromkeys(
            ("SEGMENTS_NEW", "SEGMENTS_DUPLICATE", "SEGMENTS_INCONSISTENT", "RESULTS_COMPLETED", "RESULTS_CORRUPT",
             "RESULTS_UNAUTHENTIC", "RESULTS_UNVERIFIABLE"), 0)
        self._touched: set[int] = set()  # jobs with segments since the last SACK
        self._discarded: set[int] = set()  # results discarded whole, listed in every SACK until archived
        self._lock = threading.Lock()

    @property
    def segments_received(self) -> int:
        return self.counters["SEGMENTS_NEW"] + self.counters["SEGMENTS_DUPLICATE"]

    def on_segment(self, fields: dict[str, Any]) -> bool:
        """Take one JOB_RESULT_SEGMENT's fields; True when it completed its result."""
        with self._lock:
            try:
                return self._take(fields)
            finally:
                self._touched.add(fields["job_id"])  # after the archive write: the next SACK reflects it

    def _take(self, fields: dict[str, Any]) -> bool:
        job_id, index, count = fields["job_id"], fields["segment"], fields["segment_count"]
        meta = (count, fields["result_octets"], fields["result_crc32"])
        if self._archive.result_segment_count(job_id) is not None:
            self.counters["SEGMENTS_DUPLICATE"] += 1
            return False
        held_meta = self._archive.first_segment_meta(job_id)
        if not self._plausible(fields) or (held_meta is not None and tuple(held_meta) != meta):
            self.counters["SEGMENTS_INCONSISTENT"] += 1
            return False
        if not self._archive.add_segment(job_id, index, *meta, fields["data"]):
            self.counters["SEGMENTS_DUPLICATE"] += 1
            return False
        self.counters["SEGMENTS_NEW"] += 1
        if len(self._archive.held_segments(job_id)) < count:
            return False
        data = self._archive.segments_data(job_id)
        verdict = self._check(job_id, data, fields)
        if verdict is not None:
            self.counters[verdict] += 1
            log.warning("result of job %d discarded: %s", job_id, verdict)
            self._archive.drop_segments(job_id)
            if verdict != "RESULTS_UNVERIFIABLE":  # without the key, a resend would fail again
                self._discarded.add(job_id)
            return False
        self._archive.complete_result(job_id, data, count)
        self._discarded.discard(job_id)
        self.counters["RESULTS_COMPLETED"] += 1
        return True

    def _check(self, job_id: int, data: bytes, fields: dict[str, Any]) -> str | None:
        """The counter naming what is wrong with a reassembled result, or None if it is sound."""
        if zlib.crc32(data) != fields["result_crc32"]:
            return "RESULTS_CORRUPT"
        key = self._keys.get(fields["spi"])
        if key is None:
            return "RESULTS_UNVERIFIABLE"
        if result_mac(key, job_id, data) != fields["result_mac"]:
            return "RESULTS_UNAUTHENTIC"
        return None

    def _plausible(self, fields: dict[str, Any]) -> bool:
        count, octets, index = fields["segment_count"], fields["result_octets"], fields["segment"]
        size = self._segment_octets
        if count < 1 or index >= count or not (count - 1) * size <= octets <= count * size:
            return False
        expected = size if index < count - 1 else octets - (count - 1) * size
        return len(fields["data"]) == expected

    def sack_entries(self) -> list[list[Any]]:
        """[job_id, ranges held] for every discarded result (first: they may hold nothing), every
        incomplete one and every one heard from since the last call, as many as fit one DL_SACK;
        the flight resends what is left out, and hears of it later."""
        with self._lock:
            touched, self._touched = self._touched, set()
            discarded = sorted(self._discarded)
            others = sorted((set(self._archive.incomplete_jobs()) | touched) - self._discarded)
            entries: list[list[Any]] = []
            size = 0
            for job_id in discarded + others:
                count = self._archive.result_segment_count(job_id)
                ranges = [[0, count]] if count is not None else to_ranges(self._archive.held_segments(job_id))
                if not ranges and job_id not in self._discarded:
                    continue
                entry = [job_id, ranges[:MAX_SACK_RANGES]]
                size += len(msgpack.packb(entry))
                if size > self._max_sack_body_octets:
                    break
                entries.append(entry)
            return entries
