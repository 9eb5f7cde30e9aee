"""Token streams are split so every JOB_TOKENS packet fits, whatever the token text: many tokens,
long tokens, one token longer than a packet, multi-octet characters at the cut."""
from hypothesis import given, settings, strategies as st

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.token_stream import token_packets
from tests.link.helpers import hk_value
from tests.link.stand_in_jobs import result_text, stand_in_text

D = load_dictionary()
CODEC = PacketCodec(D)

token_text = st.one_of(st.text(max_size=8), st.text(min_size=500, max_size=5000),
                       st.sampled_from(["é" * 1500, "🛰" * 700, "x" * 1999 + "é"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), token_text), max_size=40), st.integers(0, 2**20))
def test_every_packet_fits_and_the_stream_reassembles(tokens, first_index):
    packets = token_packets(7, first_index, tokens, D.max_packet_octets)
    for fields in packets:
        assert len(CODEC.encode_tm("JOB_TOKENS", fields, 0)) <= D.max_packet_octets
    assert [t for fields in packets for t in fields["token_ids"]] == [t for t, _ in tokens]
    assert "".join(fields["text"] for fields in packets) == "".join(text for _, text in tokens)
    # first_index names the packet's first token (a continuation piece: the token it continues)
    seen = 0
    for fields in packets:
        assert fields["first_index"] == first_index + seen - (0 if fields["token_ids"] else 1)
        seen += len(fields["token_ids"])


def test_a_job_whose_token_texts_exceed_a_packet_streams_whole(flight, ground):
    prompt = "ω" * 900  # one 1800-octet word: each stand-in token is 1801 octets of text
    job_id = ground.submit_job(prompt, 40, stream=True)
    text = stand_in_text(prompt, 40)
    assert result_text(ground.await_result(job_id, timeout=30)) == text
    ground.await_event("JOB_FINISHED", lambda e: e.args["job_id"] == job_id)
    assert hk_value(ground, "LINK_PACKETS_DROPPED", lambda v: True) == 0
    assert ground.streamed_text(job_id) == text
