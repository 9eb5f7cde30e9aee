"""The ground's side of recorder playback: REC_PLAYBACK records archived at their original onboard
time, marked as played back, once however often they come; and `ground playback`'s bad input is
one line before anything is opened."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import frame
from flight.link.keys import write_new_key_file
from flight.link.onboard_time import CucTime
from ground.archive import GroundArchive

D = load_dictionary()
CODEC = PacketCodec(D)
REPO = Path(__file__).resolve().parents[2]
EVENT, HK = D.enum_value("REC_KIND", "EVENT"), D.enum_value("REC_KIND", "HK")
FIRED = {"event_id": D.event_by_name["FDIR_FIRED"].id,
         "args": ["COMMAND_LOSS", "LINK_SILENCE_S", 90000.0, "LINK_RESET", 120, "", 1]}


def playback_frame(seq_count: int, records: list[list]) -> bytes:
    fields = {"source": D.enum_value("REC_SOURCE", "AUTO"), "records": records}
    return frame(CODEC.encode_tm("REC_PLAYBACK", fields, seq_count, time=CucTime(1_900_000_000, 0)))


def test_played_back_records_are_archived_once_at_their_original_time(client):
    uptime = D.channel_by_name["LINK_UPTIME"].id
    records = [[7, 1_800_000_000.5, EVENT, False, CODEC.encode_body("EVENT", FIRED)],
               [8, 1_800_000_010.0, HK, False, CODEC.encode_body("HK", {"channels": {uptime: 42}})]]
    client._on_bytes(playback_frame(0, records))
    client._on_bytes(playback_frame(1, records))  # the same records again: a pass after a lost contact
    client.archive.log_event(1_900_000_000.0, "LINK_CONTACT_ACQUIRED", "ACTIVITY_HI", "ground contact acquired")
    events = client.archive.events()
    assert [(e["onboard_time"], e["name"], e["played_back"], e["rec_seq"]) for e in events] == [
        (1_800_000_000.5, "FDIR_FIRED", True, 7), (1_900_000_000.0, "LINK_CONTACT_ACQUIRED", False, None)]
    assert "COMMAND_LOSS" in events[0]["message"] and "LINK_RESET" in events[0]["message"]
    assert client.archive.housekeeping() == [(8, 1_800_000_010.0, {"LINK_UPTIME": 42})]
    assert client.archive.events(end=1_850_000_000.0)[0]["name"] == "FDIR_FIRED"
    played = client.await_played_back_event("FDIR_FIRED", timeout=0)
    assert (played.seq, played.event.onboard_time, played.event.args["rule"]) == (7, 1_800_000_000.5, "COMMAND_LOSS")


def test_an_archive_from_before_playback_opens_and_keeps_its_events(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE counters (name TEXT PRIMARY KEY, value BLOB NOT NULL);
            CREATE TABLE segments (job_id INTEGER, segment INTEGER, segment_count INTEGER, result_octets INTEGER,
                                   result_crc32 INTEGER, data BLOB, PRIMARY KEY (job_id, segment));
            CREATE TABLE results (job_id INTEGER PRIMARY KEY, data BLOB NOT NULL, segment_count INTEGER NOT NULL,
                                  received REAL NOT NULL);
            CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, received REAL NOT NULL,
                                 onboard_time REAL NOT NULL, name TEXT NOT NULL, severity TEXT NOT NULL,
                                 message TEXT NOT NULL);
            INSERT INTO events (received, onboard_time, name, severity, message)
                VALUES (1.0, 2.0, 'LINK_STARTED', 'ACTIVITY_HI', 'link service started');
        """)
    archive = GroundArchive(path)
    try:
        assert [(e["name"], e["played_back"], e["rec_seq"]) for e in archive.events()] == [
            ("LINK_STARTED", False, None)]
    finally:
        archive.close()


def ground(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ground.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("argv, expect", [
    (["--from", "yesterday"], "expected an ISO 8601 time or seconds since 1970, got 'yesterday'"),
    (["--from", "-5"], "expected a time from 1970 to 2106"),
    (["--from", "nan"], "expected a time from 1970 to 2106"),
    (["--from", "2026-11-25T12:00Z", "--to", "2026-11-25T10:00:00+00:00"], "--to is before --from"),
    (["--from", "1800000000", "--kinds", "logs"], "invalid choice: 'logs'"),
])
def test_ground_playback_bad_input_is_one_line_before_anything_opens(tmp_path, argv, expect):
    keys = tmp_path / "keys.json"
    write_new_key_file(keys)
    out = ground("playback", *argv, "--keys", str(keys), "--archive", str(tmp_path / "a.sqlite"),
                 "--port", "/nonexistent/tty")
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and expect in lines[0], out.stderr
    assert not list(tmp_path.glob("a.sqlite*"))
