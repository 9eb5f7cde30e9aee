"""Serial transport: pyserial URLs (loop://, socket://) and pty pairs, full duplex."""
import socket
import threading

from flight.link.codec import PacketCodec
from flight.link.framing import Deframer, frame
from flight.link.serial_port import SerialPort
from ground.client import GroundClient
from tests.link.conftest import FAST, FlightUnderTest
from tests.link.helpers import wait_until


def collector():
    received = bytearray()
    lock = threading.Lock()

    def on_bytes(data: bytes) -> None:
        with lock:
            received.extend(data)

    return received, on_bytes


def test_loop_url_round_trip():
    received, on_bytes = collector()
    port = SerialPort("loop://")
    port.start(on_bytes)
    try:
        frames = [frame(bytes([n]) * (n + 1)) for n in range(1, 40)]
        for f in frames:
            port.write(f)
        wanted = b"\x00" + b"".join(frames)  # the delimiter sent on open comes back first
        wait_until(lambda: bytes(received) == wanted, what="loopback data")
    finally:
        port.close()


def test_pty_pair_full_duplex(relay):
    """Both ends write at once while reading: nothing lost, nothing mixed up."""
    got_flight, on_flight = collector()
    got_ground, on_ground = collector()
    flight, ground = SerialPort(relay.flight_path), SerialPort(relay.ground_path)
    flight.start(on_flight)
    ground.start(on_ground)
    down = [frame(b"down %d " % n * 20) for n in range(300)]
    up = [frame(b"up %d " % n * 20) for n in range(300)]
    writers = [threading.Thread(target=lambda p=p, fs=fs: [p.write(f) for f in fs]) for p, fs in ((flight, down), (ground, up))]
    try:
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        wait_until(lambda: bytes(got_ground).count(b"\x00") >= 300 and bytes(got_flight).count(b"\x00") >= 300,
                   what="both directions delivered")
    finally:
        flight.close()
        ground.close()
    assert [f + b"\x00" for f in bytes(got_ground).split(b"\x00") if f] == down
    assert [f + b"\x00" for f in bytes(got_flight).split(b"\x00") if f] == up


class TcpRadio:
    """A loopback TCP 'radio modem' joining the first two clients, as socket:// ports see a network radio."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for _ in range(2):
            conn, _ = self.server.accept()
            self.conns.append(conn)
        for a, b in ((0, 1), (1, 0)):
            threading.Thread(target=self._pipe, args=(self.conns[a], self.conns[b]), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # one side closed: the link is over

    def close(self):
        for conn in self.conns:
            conn.close()
        self.server.close()


def test_socket_url_end_to_end(tmp_path, keyfile):
    radio = TcpRadio()
    url = f"socket://127.0.0.1:{radio.port}"
    flight = FlightUnderTest(url, tmp_path / "onboard.sqlite", keyfile, FAST)
    ground = GroundClient(url, keys=keyfile, archive=tmp_path / "ground.sqlite", sack_interval_s=0.1).connect()
    try:
        ground.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=10)
        assert ground.send_and_await_completion("LINK_PING", token=99).data == {"token": 99}
    finally:
        ground.close()
        flight.stop()
        radio.close()


def test_port_comes_back_after_its_device_fails(relay):
    """A failing device is closed and reopened by the receive thread; writes work again after."""
    received, on_bytes = collector()
    port = SerialPort(relay.flight_path, reopen_delay=0.05)
    port.start(on_bytes)
    peer = SerialPort(relay.ground_path)
    peer.start(lambda data: None)
    try:
        port._serial.close()  # as if the adapter vanished under the reader
        wait_until(lambda: port.errors >= 1 and port._serial is not None, what="reopened")
        peer.write(frame(b"after"))
        wait_until(lambda: b"after" in received, what="data after reopen")
    finally:
        port.close()
        peer.close()


def test_deframer_over_loop_url():
    codec = PacketCodec()
    deframer = Deframer(codec.dictionary.max_packet_octets)
    packets = []
    port = SerialPort("loop://")
    port.start(lambda data: packets.extend(deframer.feed(data)))
    sent = [codec.encode_tm("HK", {"channels": {1: n}}, n) for n in range(20)]
    try:
        for packet in sent:
            port.write(b"noise" + b"\x00" + frame(packet))
        wait_until(lambda: len(packets) == 20, what="frames")
    finally:
        port.close()
    assert packets == sent
    assert deframer.counters["BAD_FRAME"] == 20


def test_reset_reopens_the_port_at_the_default_rate_and_keeps_receiving():
    """FDIR's command-loss action: the device is reopened at the given baud; bytes flow again."""
    import os
    import termios
    import threading
    import time

    from flight.link.serial_port import SerialPort

    master, slave = os.openpty()
    got = bytearray()
    arrived = threading.Event()

    def on_bytes(data: bytes) -> None:
        got.extend(data)
        if b"after" in got:
            arrived.set()

    port = SerialPort(os.ttyname(slave), 9600, reopen_delay=0.1)
    try:
        port.start(on_bytes)
        port.reset(115200)
        time.sleep(0.5)
        assert port.baud == 115200 and termios.tcgetattr(slave)[5] == termios.B115200
        os.write(master, b"after")
        assert arrived.wait(5.0)
    finally:
        port.close()
        os.close(master)
        os.close(slave)
