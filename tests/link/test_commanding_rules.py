"""Rules the node enforces on authenticated commands, whatever the ground tool did: a hazardous
command needs the confirmation flag in the packet; a client built from the 1.x dictionary (no
flag in the body) still commands everything else."""
import msgpack
import pytest

from flight.link.dictionary import load_dictionary
from ground.client import HazardousCommandError
from tests.link.helpers import arsn_of, response_to

D = load_dictionary()
PURGE = D.command_by_name["STORE_PURGE_DELIVERED"]


def test_hazardous_command_without_the_flag_in_the_packet_is_refused_by_the_node(flight, ground):
    purged = []
    flight.service.register_handler("STORE_PURGE_DELIVERED", lambda args, origin: purged.append(1) or {"count": 0})
    # A ground tool that skipped its own confirmation: the body carries no flag (or false).
    for fields in ({"opcode": PURGE.opcode, "args": []}, {"opcode": PURGE.opcode, "args": [], "confirm_hazardous": False}):
        packet = ground.encode_tc("COMMAND", fields)
        since = ground.history_index()
        ground.send_packet(packet)
        response = response_to(ground, arsn_of(packet), since)
        assert (response.status, response.reason, response.authenticated) == ("REJECTED", "NOT_CONFIRMED", True)
    assert ground.send_and_await_completion("STORE_PURGE_DELIVERED", confirm_hazardous=True).data == {"count": 0}
    assert purged == [1]


def test_client_refuses_an_unconfirmed_hazardous_command_before_sending(ground):
    before = ground.archive.last_arsn(ground.spi)
    with pytest.raises(HazardousCommandError):
        ground.send_command("STORE_PURGE_DELIVERED")
    assert ground.archive.last_arsn(ground.spi) == before  # nothing went up


def test_a_1x_client_still_commands_non_hazardous_commands(flight, ground):
    ping = D.command_by_name["LINK_PING"].opcode
    packet = ground.encode_tc("COMMAND", {"opcode": ping, "args": [41]})
    body = packet[12 + 10:-18]
    assert msgpack.unpackb(body) == [ping, [41]]  # exactly what a 1.0.0 client sent
    since = ground.history_index()
    ground.send_packet(packet)
    assert response_to(ground, arsn_of(packet), since, "COMPLETED").data == {"token": 41}
