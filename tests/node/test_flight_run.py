"""`flight run` as operators run it, with `hil link --pty` and `ground` as real processes and the
real model: a greedy job over the paced link equals `flight generate`, SIGTERM stops the node
within 5 s with the running job's progress saved, and bad input is one line and exit code 2 with
nothing stored touched."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from flight.engine.manifest import make_manifest, manifest_path
from flight.link.job_result import decode_result
from flight.link.keys import write_new_key_file
from ground.client import GroundClient
from tests.node.helpers import BIN, REPO, FlightRun, HilLink, flight_generate, ground, new_keys, write_config
from hil.synth_gguf import write_llama_gguf

PROMPT = "The three most useful things a satellite in low Earth orbit can do are"


@pytest.fixture
def link():
    hil = HilLink()
    yield hil
    hil.stop()


def start_node(link: HilLink, tmp_path: Path) -> tuple[FlightRun, Path, Path]:
    """`flight run` on the link with fresh keys and data directory: (node, key file, data dir)."""
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(write_config(tmp_path / "n.toml")))
    node.start()
    return node, keys, data


def test_ground_submit_greedy_equals_flight_generate(link, tmp_path):
    node, keys, data = start_node(link, tmp_path)
    try:
        out = ground(link.ground, keys, tmp_path / "ground.sqlite", "submit", "--prompt", PROMPT, "--max-tokens", "48",
                     "--temperature", "0", "--token-ids", "--json")
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
    finally:
        node.stop()
    reference = flight_generate(PROMPT, 48)
    assert result["text"] == reference["text"]
    assert result["token_ids"] == reference["tokens"] and result["tokens"] == len(reference["tokens"])
    assert result["stop_reason"] in ("limit", "eos")
    assert result["joules"] > 0 and result["cost_usd"] > 0


def test_sigterm_stops_within_5_s_saving_the_running_job(link, tmp_path):
    node, keys, data = start_node(link, tmp_path)
    out = ground(link.ground, keys, tmp_path / "ground.sqlite", "submit", "--prompt", PROMPT, "--max-tokens", "1500",
                 "--no-wait", "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]
    db = data / "onboard.sqlite"
    deadline = time.monotonic() + 60
    while not _progress_tokens(db, job_id):
        assert time.monotonic() < deadline, "no progress saved"
        time.sleep(0.1)
    code, took = node.terminate()
    assert code == 0 and took < 5.0, (code, took, node.log_text()[-1500:])
    saved = _progress_tokens(db, job_id)
    assert 0 < saved < 1500
    assert "Traceback" not in node.log_text()


def _progress_tokens(db: Path, job_id: int) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT length(tokens) / 4 FROM job_progress WHERE job_id = ?", (job_id,)).fetchone()
    except sqlite3.OperationalError:
        return 0
    return row[0] if row else 0


def run_flight(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "flight"), "run", *argv], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["no keys", "bad keys", "no model", "no data dir", "data dir is a file", "no port",
                                  "bad config value", "unknown config key", "bad threads", "bad baud",
                                  "unreadable config", "only a recovery key", "same key file twice",
                                  "bad log level", "nan timer", "hil without sensor port", "hil sensor port missing",
                                  "jetson without sensor port", "jetson sysfs root missing",
                                  "jetson sysfs root is a file", "jetson sensor port missing", "model without manifest",
                                  "model disagrees with its manifest", "corrupt manifest"])
def test_bad_input_is_one_line_and_exit_2_touching_nothing(case, tmp_path, link):
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    argv = {"--port": link.flight, "--keys": str(keys), "--data-dir": str(data)}
    extra: list[str] = []
    expect = ""
    if case == "no keys":
        argv["--keys"], expect = str(tmp_path / "absent.json"), "absent.json"
    elif case == "bad keys":
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        os.chmod(bad, 0o600)
        argv["--keys"], expect = str(bad), "bad.json"
    elif case == "no model":
        extra, expect = ["--model", str(tmp_path / "absent.gguf")], "absent.gguf"
    elif case == "no data dir":
        argv["--data-dir"], expect = str(tmp_path / "nowhere"), "does not exist"
    elif case == "data dir is a file":
        (tmp_path / "file").write_text("")
        argv["--data-dir"], expect = str(tmp_path / "file"), "not a directory"
    elif case == "no port":
        argv["--port"], expect = "/dev/ttyNOPE9", "/dev/ttyNOPE9"
    elif case == "bad config value":
        extra, expect = ["--config", str(write_config(tmp_path / "n.toml", "[engine]\nn_ctx = -4\n"))], "n_ctx"
    elif case == "unknown config key":
        extra, expect = ["--config", str(write_config(tmp_path / "n.toml", "[engine]\nthreds = 1\n"))], "threds"
    elif case == "bad threads":
        extra, expect = ["--threads", "0"], "threads"
    elif case == "bad baud":
        extra, expect = ["--baud", "fast"], "baud"
    elif case == "unreadable config":
        extra, expect = ["--config", str(tmp_path / "absent.toml")], "absent.toml"
    elif case == "only a recovery key":
        recovery = tmp_path / "recovery.json"
        write_new_key_file(recovery, spi=9, role="recovery")
        argv["--keys"], expect = str(recovery), "no operations key"
    elif case == "same key file twice":
        extra, expect = ["--keys", str(keys)], "SPI 1 is in both key files"
    elif case == "bad log level":
        extra, expect = ["--log-level", "loud"], "--log-level"
    elif case == "nan timer":
        extra, expect = ["--config", str(write_config(tmp_path / "n.toml", "[executive]\ntick_hz = nan\n"))], "tick_hz"
    elif case == "hil without sensor port":
        extra, expect = ["--sensors", "hil"], "--sensor-port"
    elif case == "hil sensor port missing":
        extra, expect = ["--sensors", "hil", "--sensor-port", "/dev/ttyNOPE7"], "/dev/ttyNOPE7"
    elif case == "jetson without sensor port":
        extra, expect = ["--sensors", "jetson", "--sysfs-root", str(tmp_path)], "--sensor-port"
    elif case == "jetson sysfs root missing":
        extra = ["--sensors", "jetson", "--sensor-port", "/dev/ttyNOPE7", "--sysfs-root", str(tmp_path / "nosys")]
        expect = f"sysfs root {tmp_path / 'nosys'} does not exist"
    elif case == "jetson sysfs root is a file":
        extra = ["--sensors", "jetson", "--sensor-port", "/dev/ttyNOPE7", "--sysfs-root", str(keys)]
        expect = f"sysfs root {keys} is not a directory"
    elif case == "jetson sensor port missing":
        extra, expect = ["--sensors", "jetson", "--sensor-port", "/dev/ttyNOPE8", "--sysfs-root", str(tmp_path)], \
            "/dev/ttyNOPE8"
    elif case.startswith("model") or case == "corrupt manifest":
        model = write_llama_gguf(tmp_path / "m.gguf", n_ctx=64)
        extra, expect = ["--model", str(model)], "m.gguf has no manifest"
        if case != "model without manifest":
            make_manifest(model)
        if case == "model disagrees with its manifest":
            with open(model, "r+b") as f:  # flash corrupted since the model was installed
                f.seek(-1, os.SEEK_END)
                f.write(b"\xff")
            expect = "1 of 1 blocks disagree with its manifest"
        elif case == "corrupt manifest":
            manifest = manifest_path(model)
            manifest.write_text(manifest.read_text().replace('"size":', '"size": 1, "x":', 1))
            expect = "fails its checksum"
    out = run_flight(*[x for pair in argv.items() for x in pair], *extra)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    if data.is_dir():
        assert list(data.iterdir()) == [], "a failed start created files"


def test_runs_with_a_lower_case_log_level_and_two_key_files_and_stops_on_sigterm(link, tmp_path):
    keys = new_keys(tmp_path)
    recovery = tmp_path / "recovery.json"
    write_new_key_file(recovery, spi=100, role="recovery")
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--keys", str(recovery),
                     "--config", str(write_config(tmp_path / "n.toml")))
    node.args[node.args.index("INFO")] = "info"
    node.start()
    code, took = node.terminate()
    assert code == 0 and took < 5.0
    assert "LINK_STARTED" in node.log_text() and "Traceback" not in node.log_text()


def test_systemd_notify_ready_watchdog_and_stopping(link, tmp_path):
    """With NOTIFY_SOCKET set, READY=1 once serving, WATCHDOG=1 from the main loop, STOPPING=1 on SIGTERM."""
    import socket

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10.0)
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(write_config(tmp_path / "n.toml")),
                     env={"NOTIFY_SOCKET": str(path)})
    try:
        node.start()
        seen: list[str] = []
        while seen.count("WATCHDOG=1") < 2:
            seen.append(sock.recv(256).decode())
        node.terminate()
        while "STOPPING=1" not in seen:
            seen.append(sock.recv(256).decode())
    finally:
        node.stop()
        sock.close()
    assert "READY=1" in seen and seen.index("READY=1") < seen.index("STOPPING=1")


def test_with_hil_sensors_the_node_follows_the_rig_and_reports_a_silent_board(link, tmp_path):
    """`--sensors hil` over a pty: the rig double's READINGs drive the node (an empty battery is
    FDIR's SAFE and jobs wait; charged and commanded out of SAFE, they run), the node reports its
    compute power back, and a board that falls silent is a SENSOR_FAULT event."""
    import tty

    from flight.sensors.bus import COMPUTE, READING, SensorFrameReader, encode_frame

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    reading = {"t": 0.0, "battery_wh": 5.0, "capacity_wh": 100.0, "solar_w": 50.0, "bus_w": 10.0,
               "in_eclipse": False, "entry_s": 3000.0, "exit_s": 5000.0, "temps": {"board": 30.0}}
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(write_config(tmp_path / "n.toml")),
                     "--sensors", "hil", "--sensor-port", os.ttyname(slave))
    compute: list[float] = []
    reader = SensorFrameReader()
    try:
        node.start()
        client = GroundClient(link.ground, keys=keys, archive=tmp_path / "ground.sqlite", sack_interval_s=0.2).connect()
        try:
            os.write(master, encode_frame(READING, 1, reading))
            client.await_telemetry("EPS_BATTERY_WH", lambda v: v == 5.0, timeout=20)
            job = client.submit_job("Solar panels", 16, timeout=5.0)
            # below the floor (20 Wh): FDIR's BATTERY_LOW puts the node in SAFE, and the job waits
            fired = client.await_event("FDIR_FIRED", timeout=20)
            assert "BATTERY_LOW" in fired.message and "SAFE" in fired.message
            assert client.archive.result(job) is None
            os.write(master, encode_frame(READING, 2, {**reading, "battery_wh": 80.0}))
            client.send_and_await_completion("MODE_SET", mode=2)  # SAFE is left by command only: STANDBY,
            client.send_and_await_completion("MODE_SET", mode=3)  # then INFERENCE (a commanded STANDBY sticks)
            for seq in range(3, 40):  # charged: it runs; the rig keeps sending, as a rig does
                os.write(master, encode_frame(READING, seq, {**reading, "t": float(seq), "battery_wh": 80.0}))
                time.sleep(0.1)
                for frame in reader.feed(_drain(master)):
                    if frame.kind == COMPUTE:
                        compute.append(frame.fields["compute_w"])
                if client.archive.result(job) is not None:
                    break
            assert decode_result(client.await_result(job, timeout=30))["tokens"] > 0
            assert max(compute) > 0  # the node told the rig what it drew
            event = client.await_event("SENSOR_FAULT", timeout=20)  # the rig stops: silent
            assert "silent" in event.message
        finally:
            client.close()
    finally:
        node.stop()
        os.close(master)
        os.close(slave)


def _drain(fd: int) -> bytes:
    import select

    data = b""
    while select.select([fd], [], [], 0)[0]:
        data += os.read(fd, 4096)
    return data


def test_with_jetson_sensors_the_board_is_measured_and_an_uplinked_tle_times_eclipses(link, tmp_path):
    """`--sensors jetson` on a fake Orin Nano sysfs tree and an EPS double on a pty: compute power
    and temperature are the board's, the battery and (with no TLE yet) the eclipse timing the
    EPS's; `ground tle-upload` moves eclipse timing to onboard SGP4, which predicts what
    flight/orbit's find_eclipses does; a bad TLE is refused with its reason; after a restart the
    stored TLE is still in use. A board_zone that does not exist is found at discovery, before
    the link serves, and still reaches the log and SENSOR_FAULTS; offline zones are not counted."""
    import threading
    import tty
    from datetime import datetime, timezone

    from flight.orbit import find_eclipses
    from flight.orbit.sun import sun_ra_dec
    from flight.sensors.bus import READING, encode_frame
    from ground.client import CommandError
    from tests.orbit.tles import make_tle
    from tests.sensors import jetson_trees as trees

    tree = trees.orin_nano(tmp_path / "sysfs")
    now = datetime.now(timezone.utc)
    tle = make_tle(now, 51.6, sun_ra_dec(now)[0], 15.5, satnum=48001, name="TOKENSAT-1")  # eclipsed every orbit
    (tmp_path / "sat.tle").write_text(tle)
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    reading = {"t": 0.0, "battery_wh": 80.0, "capacity_wh": 100.0, "solar_w": 50.0, "bus_w": 10.0,
               "in_eclipse": False, "entry_s": 3000.0, "exit_s": 5000.0, "temps": {"eps": 25.0}}
    stop = threading.Event()

    def eps() -> None:  # the EPS board: a READING five times a second; what the node sends back is drained
        seq = 0
        while not stop.wait(0.2):
            seq += 1
            os.write(master, encode_frame(READING, seq, {**reading, "t": float(seq)}))
            _drain(master)

    feeder = threading.Thread(target=eps, daemon=True)
    feeder.start()
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    archive = tmp_path / "ground.sqlite"
    config = write_config(tmp_path / "n.toml", '[sensors]\nboard_zone = "Tboard_tegra"\n')  # an AGX zone
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(config), "--sensors", "jetson",
                     "--sensor-port", os.ttyname(slave), "--sysfs-root", str(tree.root))

    def connect() -> GroundClient:
        return GroundClient(link.ground, keys=keys, archive=archive, sack_interval_s=0.2).connect()

    def channels_when(source: int, client: GroundClient) -> tuple[float, dict]:
        """(onboard time, channels by name) of the first HK packet with this eclipse source."""
        wanted = client.dictionary.channel_by_name["ORBIT_ECLIPSE_SOURCE"].id
        item = client.await_packet(lambda p: p.name == "HK" and p.fields["channels"].get(wanted) == source, timeout=20)
        by_id = client.dictionary.channel_by_id
        return item.packet.time.to_unix(), {by_id[c].name: v for c, v in item.packet.fields["channels"].items()}

    try:
        node.start()
        client = connect()
        try:
            _, hk = channels_when(2, client)  # EPS: no TLE yet
            assert hk["EPS_COMPUTE_W"] == pytest.approx(tree.input_w)
            assert hk["EPS_LOAD_W"] == pytest.approx(10.0 + tree.input_w)
            assert hk["THERM_BOARD_C"] == pytest.approx(47.093) and hk["EPS_BATTERY_WH"] == 80.0
            assert (hk["EPS_ECLIPSE_ENTRY_S"], hk["EPS_ECLIPSE_EXIT_S"]) == (3000.0, 5000.0)
            assert hk["SENSOR_FAULTS"] == 1 and "ORBIT_TLE_AGE_D" not in hk
            assert hk["SENSOR_POWER_MODE"] == tree.power_mode
        finally:
            client.close()
        out = ground(link.ground, keys, archive, "tle-upload", str(tmp_path / "sat.tle"))
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("TLE of 48001 (TOKENSAT-1) loaded onboard: epoch ")
        client = connect()
        try:
            onboard_t, hk = channels_when(1, client)  # TLE
            assert 0 <= hk["ORBIT_TLE_AGE_D"] < 0.01
            events = find_eclipses(tle, onboard_t - 6000, 12000)
            e = next(e for e in events if e.penumbra_exit.timestamp() > onboard_t)
            entry, exit_ = e.penumbra_entry.timestamp() - onboard_t, e.penumbra_exit.timestamp() - onboard_t
            if hk["EPS_IN_ECLIPSE"]:
                assert entry <= 1.0 and hk["EPS_ECLIPSE_ENTRY_S"] == 0.0
            else:
                assert hk["EPS_ECLIPSE_ENTRY_S"] == pytest.approx(entry, abs=1.0)
            assert hk["EPS_ECLIPSE_EXIT_S"] == pytest.approx(exit_, abs=1.0)
            bad = tle.splitlines()
            with pytest.raises(CommandError) as refused:
                client.send_and_await_completion("TLE_UPLOAD", line1=bad[1], line2=bad[2][:-1] + "0")
            assert "BAD_ARGUMENT" in str(refused.value) and "checksum" in str(refused.value)
        finally:
            client.close()
        code, _ = node.terminate()
        assert code == 0
        node.start()  # restarted: the stored TLE times eclipses at once
        client = connect()
        try:
            channels_when(1, client)
        finally:
            client.close()
        log = node.log_text()
        assert "ORBIT_TLE_LOADED" in log and "loaded from the onboard store" in log
        assert "Tboard_tegra" in log and "SENSOR_FAULT" in log and "Traceback" not in log
    finally:
        stop.set()
        feeder.join()
        node.stop()
        os.close(master)
        os.close(slave)
