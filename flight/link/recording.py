"""What the link records onboard, when a record is owed to the ground, and the recorder's channels.

Recorded, each with its onboard time and whether the link was in contact:
- every event the link emits, except rejection reports: they answer input nobody authenticated,
  so a flood would push everything else out of the recorder; the LINK_REJECTIONS_SUMMARY events
  that sum them up are recorded;
- a housekeeping snapshot every hk_period_s (10 s by default), decimated from the live rate: a
  snapshot a second for a day would be about 50 MB.

Contact decides what is owed. A record made out of contact is owed to the ground. When contact
is found lost (contact_timeout_s after the last authentic uplink), everything recorded or played
back since that uplink is owed too: the node sent it live, but the ground may have gone already.
At the next contact the automatic playback sends what is owed (see playback).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flight.link.codec import PacketCodec
from flight.link.dictionary import EventDef
from flight.link.event_reporter import EventReporter
from flight.link.playback import Playback, RecordStore


class Recording:
    def __init__(self, store: RecordStore, codec: PacketCodec, events: EventReporter, link_up: Callable[[], bool],
                 hk_period_s: float, contact_timeout_s: float):
        self._store = store
        self._codec = codec
        self._link_up = link_up
        self._hk_period_s = hk_period_s
        self._kinds = codec.dictionary.enums["REC_KIND"].values
        self._last_hk: float | None = None  # monotonic time of the last snapshot recorded
        self.playback = Playback(store, codec.dictionary, events, link_up, contact_timeout_s,
                                 codec.dictionary.segment_octets)

    def event(self, event: EventDef, fields: dict[str, Any]) -> None:
        """Record an event as its EVENT packet carries it (fields: event_id, args)."""
        if not event.rejection:
            self._store.record(self._kinds["EVENT"], time.time(), self._codec.encode_body("EVENT", fields),
                               self._link_up())

    def housekeeping(self, channels: dict[int, Any], now: float) -> None:
        """Offer a live housekeeping snapshot (now: monotonic); recorded once every hk_period_s."""
        if self._last_hk is not None and now - self._last_hk < self._hk_period_s:
            return
        self._last_hk = now
        self._store.record(self._kinds["HK"], time.time(), self._codec.encode_body("HK", {"channels": channels}),
                           self._link_up())

    def contact_acquired(self) -> None:
        self.playback.begin_auto()

    def contact_lost(self, last_heard: float) -> None:
        """Contact found lost; last_heard: onboard time of the last authentic uplink."""
        self._store.owe_since(last_heard)
        self.playback.contact_lost(last_heard)

    def channels(self) -> dict[str, Any]:
        stats = self._store.stats()
        return {"REC_RECORDS": min(stats.records, 0xFFFFFFFF), "REC_OCTETS": stats.octets, "REC_FILL": stats.fill,
                "REC_DROPPED": stats.dropped % (1 << 32), "REC_OWED": min(stats.owed, 0xFFFFFFFF),
                "REC_PLAYED_BACK": stats.played_back % (1 << 32), "REC_WRITE_ERRORS": min(stats.write_errors, 0xFFFFFFFF)}
