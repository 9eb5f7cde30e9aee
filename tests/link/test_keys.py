"""Key files: made by `ground keygen`, refused when others may read them or when malformed."""
import json
import os

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
