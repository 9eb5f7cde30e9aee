"""The downlink writer's order and budget: rejection reports after everything else, within their
budget, and a report that is never written leaves no gap in its APID's sequence count."""

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.telemetry import Telemetry
from flight.link.tm_writer import TmWriter
from flight.link.token_bucket import TokenBucket
from tests.link.helpers import DecodingPort as Port, wait_until

D = load_dictionary()
CODEC = PacketCodec(D)


class NoBulk:
    def poll(self, now):
        return None, None


def event(name: str, **args) -> dict:
    definition = D.event_by_name[name]
    return {"event_id": definition.id, "args": [args[a.name] for a in definition.args]}


def test_suppressed_rejection_reports_leave_no_sequence_gap():
    telemetry = Telemetry(D)
    telemetry.zero(["LINK_REJECTIONS_SUPPRESSED", "LINK_REJECTION_OCTETS", "LINK_PACKETS_SENT", "LINK_PACKETS_DROPPED"])
    port = Port()
    writer = TmWriter(port, CODEC, telemetry, NoBulk(), TokenBucket(1e-9, 0.0))  # no budget at all
    writer.start()
    try:
        for n in range(3):  # the same APID as every event, and refused by the budget
            writer.submit("EVENT", event("CMD_REJECTED", reason=8, opcode=None, arsn=n), rejection=True)
        wait_until(lambda: telemetry.get("LINK_REJECTIONS_SUPPRESSED") == 3, what="reports suppressed")
        writer.submit("EVENT", event("CMD_NOOP_RECEIVED", dictionary_version="x"))
        writer.submit("EVENT", event("CMD_NOOP_RECEIVED", dictionary_version="y"))
        wait_until(lambda: len(port.packets) == 2, what="events written")
    finally:
        writer.stop()
    assert [p.seq_count for p in port.packets] == [0, 1]
    assert telemetry.get("LINK_REJECTION_OCTETS") == 0
