"""Command-authentication keys: the key file shared by flight and ground.

The file is JSON, {"keys": [{"spi": 1, "key": "<64 hex digits>"}]}: each SPI (security parameter
index, the SDLS name for a key id) maps to a 256-bit HMAC-SHA256 key. A key file that group or
others may read is refused, as ssh refuses such private keys: a leaked key lets anyone command
the spacecraft.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

KEY_OCTETS = 32
MAX_SPI = 0xFFFF


class KeyFileError(ValueError):
    """The key file is missing, unreadable, too open or malformed."""


class KeyRing:
    def __init__(self, keys: dict[int, bytes]):
        if not keys:
            raise KeyFileError("no keys")
        for spi, key in keys.items():
            if not 0 <= spi <= MAX_SPI or len(key) != KEY_OCTETS:
                raise KeyFileError(f"SPI {spi}: need 0..{MAX_SPI} and a {KEY_OCTETS}-octet key")
        self._keys = dict(keys)

    def get(self, spi: int) -> bytes | None:
        return self._keys.get(spi)

    @property
    def spis(self) -> list[int]:
        return sorted(self._keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
        with os.fdopen(fd, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"key file {path} is not a regular file")
            if mode & 0o077:
                raise KeyFileError(
                    f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
                )
            try:
                raw = json.load(handle)
                keys = {int(entry["spi"]): bytes.fromhex(entry["key"]) for entry in raw["keys"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise KeyFileError(f"key file {path} is malformed: {exc}") from None
        return cls(keys)


def write_new_key_file(path: str | os.PathLike[str], spi: int = 1) -> None:
    """Create path with one fresh random key, mode 0600; never overwrites an existing file."""
    if not 0 <= spi <= MAX_SPI:
        raise KeyFileError(f"SPI must be 0..{MAX_SPI}")
    content = json.dumps({"keys": [{"spi": spi, "key": secrets.token_hex(KEY_OCTETS)}]}, indent=2) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key file") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
