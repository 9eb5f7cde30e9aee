"""The flight link service, exercised from a ground client across real ptys."""
import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import frame
from ground.client import CommandError
from tests.link.helpers import arsn_of, hk_value, response_to

D = load_dictionary()


def statuses(ground, arsn):
    return [ground.dictionary.enums["CMD_STATUS"].name_of(r.packet.fields["status"]) for r in list(ground._history)
            if r.packet.name == "CMD_RESPONSE" and r.packet.fields["arsn"] == arsn]


def test_ack_then_completion_with_data(ground):
    handle = ground.send_command("LINK_PING", token=0xC0FFEE)
    ack = ground.await_response(handle, ("ACCEPTED",))
    done = ground.await_response(handle)
    assert (ack.status, ack.reason, done.status, done.data) == ("ACCEPTED", "NONE", "COMPLETED", {"token": 0xC0FFEE})
    assert statuses(ground, handle.arsn) == ["ACCEPTED", "COMPLETED"]
    assert ground.await_event("LINK_PING_ANSWERED").message == f"ping {0xC0FFEE} answered"


def test_failed_command_reports_reason_and_counts(ground):
    ground.send_and_await_completion("JOB_SUBMIT", job_id=5, max_tokens=3, prompt="first")
    with pytest.raises(CommandError) as err:
        ground.send_and_await_completion("JOB_SUBMIT", job_id=5, max_tokens=3, prompt="second")
    assert (err.value.response.status, err.value.response.reason) == ("FAILED", "DUPLICATE_JOB")
    assert "already exists" in err.value.response.data
    event = ground.await_event("CMD_FAILED")
    assert event.args["command"] == "JOB_SUBMIT" and "DUPLICATE_JOB" in event.message
    # Resubmitting the very same job is idempotent and completes.
    again = ground.send_and_await_completion("JOB_SUBMIT", job_id=5, max_tokens=3, prompt="first")
    assert again.data == {"job_id": 5, "new": False, "prompt_tokens": 1}
    assert hk_value(ground, "CMD_FAILED", lambda v: v == 1) == 1
    assert hk_value(ground, "CMD_EXECUTED", lambda v: v == 2) == 2
    assert hk_value(ground, "CMD_ACCEPTED", lambda v: v == 3) == 3


def test_command_without_handler_is_not_available(ground):
    with pytest.raises(CommandError) as err:
        ground.send_and_await_completion("STORE_PURGE_DELIVERED", confirm_hazardous=True)
    assert (err.value.response.status, err.value.response.reason) == ("REJECTED", "NOT_AVAILABLE")


@pytest.mark.parametrize("fields, reason", [
    ({"opcode": 0x7777, "args": []}, "UNKNOWN_OPCODE"),
    ({"opcode": D.command_by_name["LINK_SET_HK_PERIOD"].opcode, "args": [5]}, "BAD_ARGUMENT"),
    ({"opcode": D.command_by_name["LINK_PING"].opcode, "args": []}, "BAD_ARGUMENT"),
    ({"opcode": D.command_by_name["LINK_PING"].opcode, "args": ["seven"]}, "BAD_ARGUMENT"),
])
def test_malformed_commands_are_rejected_with_reason(ground, fields, reason):
    packet = ground.encode_tc("COMMAND", fields)
    since = ground.history_index()
    ground.send_packet(packet)
    response = response_to(ground, arsn_of(packet), since)
    assert (response.reason, response.opcode) == (reason, fields["opcode"])
    assert hk_value(ground, "CMD_REJECTED", lambda v: v == 1) == 1


def test_telemetry_on_the_uplink_is_wrong_kind(ground):
    since = ground.history_index()
    ground.send_packet(PacketCodec(D).encode_tm("HK", {"channels": {}}, 0))
    response = response_to(ground, None, since)
    assert response.reason == "WRONG_KIND"


def test_line_noise_is_counted_reported_and_survived(ground):
    since = ground.history_index()
    good = ground.encode_tc("COMMAND", {"opcode": D.command_by_name["CMD_NOOP"].opcode, "args": []})
    corrupted = bytearray(good)
    corrupted[30] ^= 0xFF
    ground.send_bytes(b"\x13\x37 static \x00" + frame(bytes(corrupted)) + b"\x01" * 3000 + b"\x00")
    ground.send_and_await_completion("CMD_NOOP")
    assert ground.await_event("CMD_NOOP_RECEIVED", since=since).args["dictionary_version"] == D.version
    assert hk_value(ground, "LINK_CRC_ERRORS", lambda v: v == 1) == 1
    assert hk_value(ground, "LINK_FRAME_ERRORS", lambda v: v == 1) == 1
    assert hk_value(ground, "LINK_OVERSIZE_FRAMES", lambda v: v == 1) == 1
    assert hk_value(ground, "LINK_BYTES_DISCARDED", lambda v: v > 3000) > 3000
    reasons = {D.enums["REASON"].name_of(ground.await_event("LINK_FRAME_REJECTED", lambda e, r=r: e.args["reason"] == r,
                                                                   since=since).args["reason"])
               for r in (1, 2, 3)}
    assert reasons == {"BAD_CRC", "BAD_FRAME", "OVERSIZE"}


def test_noisy_line_events_are_throttled(ground):
    ground.send_bytes(b"\x02\x02\x02\x00" * 50)
    errors, suppressed = D.channel_by_name["LINK_FRAME_ERRORS"].id, D.channel_by_name["LINK_EVENTS_SUPPRESSED"].id
    hk = ground.await_packet(lambda p: p.name == "HK" and p.fields["channels"].get(errors) == 50).packet
    # Events outrank housekeeping on the downlink, so every report sent is in by now.
    sent = sum(1 for r in list(ground._history) if r.packet.name == "EVENT"
               and r.packet.fields["event_id"] == D.event_by_name["LINK_FRAME_REJECTED"].id)
    assert 0 < sent < 50
    assert sent + hk.fields["channels"][suppressed] == 50


def test_clear_counters_and_hk_period(ground):
    ground.send_packet(ground.encode_tc("COMMAND", {"opcode": 0x7777, "args": []}))
    hk_value(ground, "CMD_REJECTED", lambda v: v == 1)
    ground.send_and_await_completion("CMD_CLEAR_COUNTERS")
    assert hk_value(ground, "CMD_REJECTED", lambda v: v == 0) == 0
    assert ground.await_event("CMD_COUNTERS_CLEARED").message
    ground.send_and_await_completion("LINK_SET_HK_PERIOD", period_ms=150)
    assert ground.await_event("LINK_HK_PERIOD_SET").args == {"period_ms": 150}


def test_contact_is_lost_and_regained_with_the_uplink(ground, relay):
    relay.up.drop = 1.0
    ground.await_event("LINK_CONTACT_LOST", timeout=10)
    assert hk_value(ground, "LINK_CONTACT", lambda v: v is False) is False
    since = ground.history_index()
    relay.up.drop = 0.0
    ground.await_event("LINK_CONTACT_ACQUIRED", since=since)
    assert hk_value(ground, "LINK_CONTACT", lambda v: v is True) is True


def test_housekeeping_reports_link_state(ground):
    assert ground.await_telemetry("LINK_BOOT_COUNT").value == 1
    handle = ground.send_command("CMD_NOOP")
    ground.await_response(handle)
    # DL_SACKs use ARSNs too, so the channel may already be past the command's.
    assert hk_value(ground, "LINK_LAST_ARSN", lambda v: v >= handle.arsn) >= handle.arsn
    assert hk_value(ground, "JOB_QUEUE_DEPTH", lambda v: v == 0) == 0
    assert hk_value(ground, "LINK_PACKETS_SENT", lambda v: v > 0) > 0
    assert hk_value(ground, "DL_SACKS_RECEIVED", lambda v: v > 0) > 0
