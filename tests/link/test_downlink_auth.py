"""Downlink authentication: an on-path attacker cannot complete, fail or NACK a command for the
ground, nor get a result archived. Responses carry a MAC bound to the command they answer; a
result carries a MAC over the whole of it, checked before archiving, and is re-requested when
the check fails."""
import random
import threading
import zlib

import pytest

from flight.link.codec import PacketCodec, Seal
from flight.link.dictionary import load_dictionary
from flight.link.framing import frame
from flight.link.service import CommandFailure
from ground.client import CommandError, GroundClient
from tests.link.helpers import wait_until
from tests.link.stand_in_jobs import result_text, stand_in_text

D = load_dictionary()
CODEC = PacketCodec(D)
ATTACKER_KEY = bytes(range(200, 232))
PURGE = D.command_by_name["STORE_PURGE_DELIVERED"]


def forged_response(arsn: int, status: str, reason: str = "NONE", data=None, *, spi: int = 1,
                    associated: bytes = b"") -> bytes:
    fields = {"arsn": arsn, "seq_count": 0, "opcode": PURGE.opcode, "status": D.enum_value("CMD_STATUS", status),
              "reason": D.enum_value("REASON", reason), "data": data}
    return frame(CODEC.encode_tm("CMD_RESPONSE", fields, 0, seal=Seal(spi, arsn, ATTACKER_KEY, associated)))


def forged_rejection(arsn: int, reason: str = "BAD_MAC") -> bytes:
    return frame(CODEC.encode_tm("CMD_REJECTION", {"spi": 1, "arsn": arsn, "seq_count": 0,
                                                   "reason": D.enum_value("REASON", reason), "detail": "forged"}, 0))


class HeldHandler:
    """A STORE_PURGE_DELIVERED handler that finishes only when released, with a chosen outcome,
    so a forgery provably reaches the ground before the real completion."""

    def __init__(self, fail: bool):
        self.release = threading.Event()
        self.fail = fail
        self.runs = 0

    def __call__(self, args, origin):
        self.release.wait(10)
        self.runs += 1
        if self.fail:
            raise CommandFailure("EXECUTION_ERROR", "held handler told to fail")
        return {"count": 0}


@pytest.mark.parametrize("forged_status, forged_reason, real_status", [
    ("COMPLETED", "NONE", "FAILED"),
    ("FAILED", "STORE_ERROR", "COMPLETED"),
    ("REJECTED", "NOT_AVAILABLE", "COMPLETED"),
])
def test_forged_responses_are_never_believed(relay, flight, ground, forged_status, forged_reason, real_status):
    handler = HeldHandler(fail=real_status == "FAILED")
    flight.service.register_handler("STORE_PURGE_DELIVERED", handler)
    handle = ground.send_command("STORE_PURGE_DELIVERED", confirm_hazardous=True)
    assert ground.await_response(handle, ("ACCEPTED",)).status == "ACCEPTED"
    before = ground.decode_errors["UNAUTHENTIC_RESPONSE"]
    # A forger who even knows the command's MAC (it was on the air) still lacks the key.
    sent_mac = ground._sent[(ground.spi, handle.arsn)]
    relay.inject(False, forged_response(handle.arsn, forged_status, forged_reason, spi=ground.spi))
    relay.inject(False, forged_response(handle.arsn, forged_status, forged_reason, spi=ground.spi, associated=sent_mac))
    wait_until(lambda: ground.decode_errors["UNAUTHENTIC_RESPONSE"] == before + 2, what="forgeries received")
    handler.release.set()
    response = ground.await_response(handle)
    assert (response.status, response.authenticated) == (real_status, True)
    assert handler.runs == 1


def test_response_is_bound_to_the_command_it_answers(tmp_path, keyfile):
    """A response genuinely made with our key for our ARSN, but answering another command with
    that ARSN (possible after a recovery lowered the counter), is refused: the MAC covers the
    answered command's own MAC."""
    ground = GroundClient("loop://", keys=keyfile, archive=tmp_path / "g.sqlite")
    ground.open_archive()
    ping = D.command_by_name["LINK_PING"].opcode
    ours = ground.encode_tc("COMMAND", {"opcode": ping, "args": [1]}, arsn=77)
    key = ground.keys.get(ground.spi)
    fields = {"arsn": 77, "seq_count": 0, "opcode": ping, "status": D.enum_value("CMD_STATUS", "COMPLETED"),
              "reason": 0, "data": {"token": 1}}

    def response(associated: bytes):
        return CODEC.decode_tm(CODEC.encode_tm("CMD_RESPONSE", fields, 0, seal=Seal(ground.spi, 77, key, associated)))

    assert ground._authentic_response(response(ours[-18:-2]))
    assert not ground._authentic_response(response(bytes(16)))  # answered an older packet with ARSN 77
    assert not ground._authentic_response(response(b""))
    ground.archive.close()


def test_unauthenticated_rejection_is_reported_only_at_timeout_and_says_so(relay, flight, ground):
    relay.up.drop = 1.0  # our packet never arrives; only the forger answers
    handle = ground.send_command("LINK_PING", token=9)
    relay.inject(False, forged_rejection(handle.arsn))
    response = ground.await_response(handle, timeout=1.5)
    assert (response.status, response.reason, response.authenticated) == ("REJECTED", "BAD_MAC", False)
    message = str(CommandError("LINK_PING", response))
    assert "unauthenticated" in message and "may still have run" in message


def test_unauthenticated_rejection_never_hides_the_real_completion(relay, flight, ground):
    handler = HeldHandler(fail=False)
    flight.service.register_handler("STORE_PURGE_DELIVERED", handler)
    handle = ground.send_command("STORE_PURGE_DELIVERED", confirm_hazardous=True)
    ground.await_response(handle, ("ACCEPTED",))
    relay.inject(False, forged_rejection(handle.arsn))
    ground.await_packet(lambda p: p.name == "CMD_REJECTION" and p.fields["arsn"] == handle.arsn)
    handler.release.set()
    assert ground.await_response(handle).status == "COMPLETED"


def forged_result(job_id: int, data: bytes, spi: int = 1) -> bytes:
    fields = {"job_id": job_id, "segment": 0, "segment_count": 1, "result_octets": len(data),
              "result_crc32": zlib.crc32(data), "spi": spi, "result_mac": bytes(16), "data": data}
    return frame(CODEC.encode_tm("JOB_RESULT_SEGMENT", fields, 0))


def test_forged_result_is_never_archived_and_the_real_one_is(relay, flight, ground):
    job_id = 4242
    relay.inject(False, forged_result(job_id, b"BUY MORE TOKENS"))
    wait_until(lambda: ground.assembler.counters["RESULTS_UNAUTHENTIC"] == 1, what="forged result checked")
    assert ground.archive.result(job_id) is None
    ground.submit_job("orbit", 5, job_id=job_id)
    real = ground.await_result(job_id, timeout=20)
    assert result_text(real) == stand_in_text("orbit", 5)
    assert ground.archive.result(job_id) == real


def test_rerequest_resends_a_result_whose_segments_were_acknowledged(tmp_path):
    """Flight and ground joined directly: segments acknowledged one by one, the result then fails
    its MAC; the ground's next SACK lists nothing held, the flight withdraws its acknowledgements
    and sends the result again."""
    from flight.link.event_reporter import EventReporter
    from flight.link.keys import KeyRing
    from flight.link.result_downlink import ResultDownlink
    from flight.link.sdls import result_mac
    from flight.link.telemetry import Telemetry
    from flight.store.onboard_db import OnboardDb
    from flight.store.result_store import ResultStore
    from ground.archive import GroundArchive
    from ground.result_assembly import ResultAssembler

    key = bytes(range(32))
    store = ResultStore(OnboardDb(tmp_path / "onboard.sqlite"), D.segment_octets)
    telemetry = Telemetry(D)
    telemetry.zero(["DL_SEGMENTS_SENT", "DL_SEGMENTS_RETRANSMITTED", "DL_RESULTS_DELIVERED", "DL_RESULTS_REREQUESTED"])
    data = random.Random(3).randbytes(3 * D.segment_octets)
    store.store_result(1, data, 1, result_mac(key, 1, data))
    downlink = ResultDownlink(store, telemetry, EventReporter(D, telemetry, lambda event, fields: None), 100.0,
                              lambda: True)
    assembler = ResultAssembler(GroundArchive(tmp_path / "g.sqlite"), KeyRing({1: key}), D.segment_octets, 1900)
    # The attacker zeroes segment 0 and fixes the CRC-32 that every segment carries.
    altered = bytes(D.segment_octets) + data[D.segment_octets:]
    for index in range(3):
        (kind, fields), _ = downlink.poll(0.0)
        fields = dict(fields, result_crc32=zlib.crc32(altered))
        if index == 0:
            fields["data"] = altered[:D.segment_octets]
        assembler.on_segment(fields)
        if index < 2:
            downlink.on_sack(assembler.sack_entries())  # segments 0 and 1 now acknowledged onboard
    assert assembler.counters["RESULTS_UNAUTHENTIC"] == 1
    entries = assembler.sack_entries()
    assert [1, []] in entries
    downlink.on_sack(entries)
    assert telemetry.get("DL_RESULTS_REREQUESTED") == 1
    resent = [downlink.poll(0.0)[0][1]["segment"] for _ in range(2)]
    assert resent == [0, 1]  # withdrawn acknowledgements: sent again at once
    assert downlink.poll(0.0)[0] is None
    assert sorted(downlink.poll(100.0)[0][1]["segment"] for _ in range(3)) == [0, 1, 2]  # then as always, by timeout
