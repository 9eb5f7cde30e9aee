"""Command-authentication keys: the key file shared by flight and ground.

The file is JSON, {"keys": [{"spi": 1, "key": "<64 hex digits>"}]}: each SPI (security parameter
index, the SDLS name for a key id) maps to a 256-bit HMAC-SHA256 key. An entry may add
"role": "recovery" for a recovery key, kept offline and accepted only for recovery commands; the
default role is "operations".

A leaked or substituted key lets anyone command the spacecraft, so, as ssh does for private keys,
a key file is refused unless it is a regular file (not a symlink, FIFO or device), owned by the
running user or root, unreadable by group and others, and in a directory that group and others
cannot write (they could replace the file).
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KEY_OCTETS = 32
MAX_SPI = 0xFFFF
OPERATIONS = "operations"
RECOVERY = "recovery"
ROLES = (OPERATIONS, RECOVERY)


class KeyFileError(ValueError):
    """The key file is missing, unreadable, too open or malformed."""


class KeyRing:
    def __init__(self, keys: dict[int, bytes], recovery_spis: Iterable[int] = ()):
        if not keys:
            raise KeyFileError("no keys")
        for spi, key in keys.items():
            if not 0 <= spi <= MAX_SPI or len(key) != KEY_OCTETS:
                raise KeyFileError(f"SPI {spi}: need 0..{MAX_SPI} and a {KEY_OCTETS}-octet key")
        recovery = frozenset(recovery_spis)
        if not recovery <= keys.keys():
            raise KeyFileError(f"recovery SPIs {sorted(recovery - keys.keys())} have no key")
        self._keys = dict(keys)
        self._recovery = recovery

    def get(self, spi: int) -> bytes | None:
        return self._keys.get(spi)

    @property
    def spis(self) -> list[int]:
        """Every SPI held, operations and recovery alike."""
        return sorted(self._keys)

    @property
    def recovery_spis(self) -> frozenset[int]:
        return self._recovery

    def is_recovery(self, spi: int) -> bool:
        return spi in self._recovery

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        keys, recovery = _read_key_file(Path(path))
        return cls(keys, recovery)

    @classmethod
    def load_all(cls, paths: Iterable[str | os.PathLike[str]]) -> KeyRing:
        """One ring from several key files (say an operations file and an offline recovery file);
        an SPI held by two files is refused, as it would be ambiguous which key it names."""
        keys: dict[int, bytes] = {}
        recovery: set[int] = set()
        origin: dict[int, Path] = {}
        for path in map(Path, paths):
            file_keys, file_recovery = _read_key_file(path)
            for spi in file_keys:
                if spi in origin:
                    raise KeyFileError(f"SPI {spi} is in both key files {origin[spi]} and {path}")
                origin[spi] = path
            keys.update(file_keys)
            recovery |= file_recovery
        return cls(keys, recovery)


def _read_key_file(path: Path) -> tuple[dict[int, bytes], set[int]]:
    """(key by SPI, recovery SPIs) from one key file, after the checks in the module docstring."""
    try:
        # lstat first: a FIFO, device or symlink is refused without opening it (opening a FIFO
        # blocks until a writer comes, opening a tty may signal the device).
        status = os.lstat(path)
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
    _check_file(path, status)
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the lstat, open does not block;
        # O_NOFOLLOW: nor is a swapped-in symlink followed. The fstat below then settles it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(_symlink_refused(path)) from None
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        _check_file(path, os.fstat(fd))
        try:
            directory = os.stat(path.parent)
        except OSError as exc:
            raise KeyFileError(f"cannot check directory {path.parent} of key file {path}: {exc.strerror}") from None
        if directory.st_mode & 0o022:
            raise KeyFileError(f"key file {path} is in directory {path.parent}, which group or others may write "
                               f"(mode {stat.S_IMODE(directory.st_mode):04o}); move it or chmod go-w the directory")
        text = handle.read()
    try:
        return _parse_key_file(json.loads(text))
    except ValueError as exc:  # as are JSONDecodeError and UnicodeDecodeError
        raise KeyFileError(f"key file {path} is malformed: {exc}") from None


def _check_file(path: Path, status: os.stat_result) -> None:
    if stat.S_ISLNK(status.st_mode):
        raise KeyFileError(_symlink_refused(path))
    if not stat.S_ISREG(status.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    user = os.geteuid()
    if status.st_uid not in (user, 0):
        raise KeyFileError(f"key file {path} is owned by uid {status.st_uid}, not by you (uid {user}) or root")
    if status.st_mode & 0o077:
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(status.st_mode):04o}); chmod 600 it"
        )


def _symlink_refused(path: Path) -> str:
    return f"key file {path} is a symbolic link; symlinks are refused, give the real path"


def _parse_key_file(raw: Any) -> tuple[dict[int, bytes], set[int]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
        raise ValueError('expected {"keys": [...]}')
    keys: dict[int, bytes] = {}
    recovery: set[int] = set()
    for number, entry in enumerate(raw["keys"], 1):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {number}: expected an object")
        # An unknown field is most likely a misspelt one: a misspelt "role" would silently turn
        # a recovery key into an operations key.
        unknown = sorted(entry.keys() - {"spi", "key", "role"})
        if unknown:
            raise ValueError(f"entry {number}: unknown fields {unknown}")
        spi = entry.get("spi")
        # Only a JSON integer: int() would read 1.9 as SPI 1, and true is an int in Python.
        if type(spi) is not int:
            raise ValueError(f"entry {number}: spi must be an integer, got {json.dumps(spi)}")
        if spi in keys:
            raise ValueError(f"SPI {spi} appears twice")
        key = entry.get("key")
        if not isinstance(key, str):
            raise ValueError(f"SPI {spi}: key must be a hex string")
        keys[spi] = bytes.fromhex(key)
        role = entry.get("role", OPERATIONS)
        if role not in ROLES:
            raise ValueError(f"SPI {spi}: role must be one of {', '.join(ROLES)}, got {json.dumps(role)}")
        if role == RECOVERY:
            recovery.add(spi)
    return keys, recovery


def write_new_key_file(path: str | os.PathLike[str], spi: int = 1, role: str = OPERATIONS) -> None:
    """Create path with one fresh random key, mode 0600; never overwrites an existing file."""
    if not 0 <= spi <= MAX_SPI:
        raise KeyFileError(f"SPI must be 0..{MAX_SPI}")
    if role not in ROLES:
        raise KeyFileError(f"role must be one of {', '.join(ROLES)}")
    entry: dict[str, Any] = {"spi": spi, "key": secrets.token_hex(KEY_OCTETS)}
    if role == RECOVERY:  # operations is the default, left implicit so older readers accept the file
        entry["role"] = role
    content = json.dumps({"keys": [entry]}, indent=2) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
