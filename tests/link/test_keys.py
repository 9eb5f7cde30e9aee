"""Key files: made by `ground keygen`, refused when others may read them or when malformed."""
import json
import os
import threading

import pytest

from flight.link.keys import KeyFileError, KeyRing, write_new_key_file
from ground.cli import main as ground_main


def test_keygen_makes_a_private_usable_key_file(tmp_path, capsys):
    path = tmp_path / "keys.json"
    assert ground_main(["keygen", "--out", str(path), "--spi", "4"]) == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    ring = KeyRing.load(path)
    assert ring.spis == [4] and len(ring.get(4)) == 32
    other = tmp_path / "other.json"
    write_new_key_file(other)
    assert KeyRing.load(other).get(1) != ring.get(4)


def test_keygen_never_overwrites(tmp_path, capsys):
    path = tmp_path / "keys.json"
    write_new_key_file(path)
    before = path.read_bytes()
    assert ground_main(["keygen", "--out", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "keys.json"
    write_new_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyRing.load(path)


@pytest.mark.parametrize("content", [
    "not json", "{}", '{"keys": [{"spi": 1, "key": "abcd"}]}', '{"keys": [{"spi": 1, "key": "zz"}]}',
    '{"keys": []}', json.dumps({"keys": [{"spi": 70000, "key": "00" * 32}]}),
])
def test_malformed_key_files_are_refused(tmp_path, content):
    path = tmp_path / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(KeyFileError):
        KeyRing.load(path)


def test_missing_key_file_is_a_clear_error(tmp_path):
    with pytest.raises(KeyFileError, match="cannot open"):
        KeyRing.load(tmp_path / "absent.json")


# --- what the key file may be, and where ----------------------------------------------------

def write_key_file(path, content: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, content.encode())
    os.close(fd)


def entry(spi, **extra) -> dict:
    return {"spi": spi, "key": "ab" * 32, **extra}


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "keys.json"
    os.mkfifo(path, 0o600)
    outcome = []

    def load():
        try:
            KeyRing.load(path)
        except KeyFileError as exc:
            outcome.append(str(exc))

    # In a thread, so that a regression (open waiting for a writer) fails the test, not hangs it.
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked open
        pytest.fail("KeyRing.load blocked on a FIFO")
    assert outcome == [f"key file {path} is not a regular file"]


def test_a_symlink_is_refused_plainly(tmp_path):
    real = tmp_path / "real.json"
    write_new_key_file(real)
    link = tmp_path / "keys.json"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match="is a symbolic link; symlinks are refused, give the real path"):
        KeyRing.load(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    write_new_key_file(path)
    os.chown(path, 12345, -1)
    with pytest.raises(KeyFileError, match="owned by uid 12345"):
        KeyRing.load(path)


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=oct)
def test_a_key_file_in_a_directory_others_may_write_is_refused(tmp_path, mode):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    path = directory / "keys.json"
    write_new_key_file(path)
    os.chmod(directory, mode)
    with pytest.raises(KeyFileError, match="which group or others may write"):
        KeyRing.load(path)


@pytest.mark.parametrize("spi", [1.9, True, "1", None])
def test_a_non_integer_spi_is_refused(tmp_path, spi):
    path = tmp_path / "keys.json"
    write_key_file(path, json.dumps({"keys": [entry(spi)]}))
    with pytest.raises(KeyFileError, match="spi must be an integer"):
        KeyRing.load(path)


def test_a_duplicate_spi_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    write_key_file(path, json.dumps({"keys": [entry(3), {"spi": 3, "key": "cd" * 32}]}))
    with pytest.raises(KeyFileError, match="SPI 3 appears twice"):
        KeyRing.load(path)


def test_roles(tmp_path):
    path = tmp_path / "keys.json"
    write_key_file(path, json.dumps({"keys": [entry(1), entry(2, role="operations"), entry(9, role="recovery")]}))
    ring = KeyRing.load(path)
    assert ring.spis == [1, 2, 9]
    assert ring.recovery_spis == frozenset({9})
    assert ring.is_recovery(9) and not ring.is_recovery(1) and not ring.is_recovery(2)


@pytest.mark.parametrize("extra, match", [
    ({"role": "admin"}, "role must be one of operations, recovery"),
    ({"role": None}, "role must be one of"),
    ({"rol": "recovery"}, r"unknown fields \['rol'\]"),  # a misspelt role must not make an operations key
])
def test_bad_roles_and_unknown_fields_are_refused(tmp_path, extra, match):
    path = tmp_path / "keys.json"
    write_key_file(path, json.dumps({"keys": [entry(1, **extra)]}))
    with pytest.raises(KeyFileError, match=match):
        KeyRing.load(path)


def test_write_new_key_file_writes_the_recovery_role(tmp_path, capsys):
    path = tmp_path / "recovery.json"
    write_new_key_file(path, spi=7, role="recovery")
    assert KeyRing.load(path).recovery_spis == {7}
    assert ground_main(["keygen", "--out", str(tmp_path / "other.json"), "--spi", "8", "--role", "recovery"]) == 0
    assert KeyRing.load(tmp_path / "other.json").is_recovery(8)
    operations = tmp_path / "operations.json"
    write_new_key_file(operations)
    assert "role" not in json.loads(operations.read_text())["keys"][0]  # the default stays implicit
    with pytest.raises(KeyFileError, match="role must be one of"):
        write_new_key_file(tmp_path / "bad.json", role="admin")


def test_write_new_key_file_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(KeyFileError, match="cannot create key file .*: No such file or directory"):
        write_new_key_file(tmp_path / "absent" / "keys.json")


def test_load_all_merges_key_files(tmp_path):
    operations, recovery = tmp_path / "operations.json", tmp_path / "recovery.json"
    write_new_key_file(operations, spi=1)
    write_new_key_file(recovery, spi=100, role="recovery")
    ring = KeyRing.load_all([operations, recovery])
    assert ring.spis == [1, 100] and ring.recovery_spis == {100}
    assert ring.get(1) == KeyRing.load(operations).get(1)
    assert ring.get(100) == KeyRing.load(recovery).get(100)


def test_load_all_refuses_an_spi_in_two_files(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_new_key_file(first, spi=4)
    write_new_key_file(second, spi=4, role="recovery")
    with pytest.raises(KeyFileError, match=f"SPI 4 is in both key files {first} and {second}"):
        KeyRing.load_all([first, second])
