"""Ground half of the reliable downlink: deduplicate and reassemble result segments, and say
what the ground holds in selective acknowledgements (DL_SACK).

Segments are committed to the archive before any acknowledgement covers them, so a ground that
is killed loses nothing it acknowledged; what it had not committed the flight sends again.
"""
from __future__ import annotations

import threading
import zlib
from typing import Any

import msgpack

from flight.link.sack import to_ranges
from ground.archive import GroundArchive

MAX_SACK_RANGES = 64  # per job; fewer ranges only means some held segments are resent


class ResultAssembler:
    def __init__(self, archive: GroundArchive, segment_octets: int, max_sack_body_octets: int):
        self._archive = archive
        self._segment_octets = segment_octets
        self._max_sack_body_octets = max_sack_body_octets
        self.counters = dict.fromkeys(
            ("SEGMENTS_NEW", "SEGMENTS_DUPLICATE", "SEGMENTS_INCONSISTENT", "RESULTS_COMPLETED", "RESULTS_CORRUPT"), 0)
        self._touched: set[int] = set()  # jobs with segments since the last SACK
        self._lock = threading.Lock()

    def on_segment(self, fields: dict[str, Any]) -> bool:
        """Take one JOB_RESULT_SEGMENT's fields; True when it completed its result."""
        try:
            return self._take(fields)
        finally:
            # After the archive write, so the next SACK reflects this segment.
            with self._lock:
                self._touched.add(fields["job_id"])

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
        if zlib.crc32(data) != fields["result_crc32"]:
            self.counters["RESULTS_CORRUPT"] += 1
            self._archive.drop_segments(job_id)
            return False
        self._archive.complete_result(job_id, data, count)
        self.counters["RESULTS_COMPLETED"] += 1
        return True

    def _plausible(self, fields: dict[str, Any]) -> bool:
        count, octets, index = fields["segment_count"], fields["result_octets"], fields["segment"]
        size = self._segment_octets
        if count < 1 or index >= count or not (count - 1) * size <= octets <= count * size:
            return False
        expected = size if index < count - 1 else octets - (count - 1) * size
        return len(fields["data"]) == expected

    def sack_entries(self) -> list[list[Any]]:
        """[job_id, ranges] for every incomplete job and every job heard from since the last call,
        as many as fit one DL_SACK; the flight resends what is left out, and hears of it later."""
        with self._lock:
            touched, self._touched = self._touched, set()
        entries: list[list[Any]] = []
        size = 0
        for job_id in sorted(set(self._archive.incomplete_jobs()) | touched):
            count = self._archive.result_segment_count(job_id)
            ranges = [[0, count]] if count is not None else to_ranges(self._archive.held_segments(job_id))
            if not ranges:
                continue
            entry = [job_id, ranges[:MAX_SACK_RANGES]]
            size += len(msgpack.packb(entry))
            if size > self._max_sack_body_octets:
                break
            entries.append(entry)
        return entries
