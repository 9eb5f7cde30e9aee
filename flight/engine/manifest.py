"""The weight manifest: a CRC32C of every block of the model file, the reference the scrubber
checks against (issue 8, weight scrubbing).

It is made once, when the model is installed, and stored beside it as `<model>.manifest.json`:

    {"format": "tokensat-weight-manifest/1", "model": "<basename>", "size": <octets>,
     "block_octets": 65536, "crc32c": [<one per block; the last block may be short>],
     "checksum": <CRC32C of the canonical JSON of all the other fields>}

The canonical JSON is json.dumps(fields, sort_keys=True, separators=(",", ":")) in ASCII. The
manifest's own checksum means a manifest corrupted on flash is refused rather than believed;
a model whose blocks disagree with a good manifest was corrupted on flash since it was installed.
Every failure is a ManifestError whose message is one line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from flight.engine._crc32c import crc32c

FORMAT = "tokensat-weight-manifest/1"
SUFFIX = ".manifest.json"
DEFAULT_BLOCK_OCTETS = 65536
MIN_BLOCK_OCTETS = 4096
MAX_BLOCK_OCTETS = 1 << 26
READ_BLOCKS = 64  # blocks per read() while checksumming: 4 MiB reads at the default block size


class ManifestError(Exception):
    """A manifest that is missing, garbled, fails its checksum, or does not fit its model."""


@dataclass(frozen=True)
class Manifest:
    model: str  # basename of the model file
    size: int  # octets
    block_octets: int
    crc32c: tuple[int, ...]  # one per block
    checksum: int

    @property
    def n_blocks(self) -> int:
        return len(self.crc32c)

    def block_of(self, offset: int) -> int:
        """Index of the block that holds byte `offset` of the model."""
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset} is outside the model's {self.size} octets")
        return offset // self.block_octets

    def block_span(self, index: int) -> tuple[int, int]:
        """(first octet, octet count) of block `index`."""
        if not 0 <= index < self.n_blocks:
            raise ValueError(f"block {index} is outside the model's {self.n_blocks} blocks")
        start = index * self.block_octets
        return start, min(self.block_octets, self.size - start)


def manifest_path(model_path: str | os.PathLike) -> Path:
    """Where the manifest of a model lives: beside it, `<model>.manifest.json`."""
    p = Path(model_path)
    return p.with_name(p.name + SUFFIX)


def _canonical(fields: dict) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _check_block_octets(block_octets: object) -> int:
    if (type(block_octets) is not int or not MIN_BLOCK_OCTETS <= block_octets <= MAX_BLOCK_OCTETS
            or block_octets & (block_octets - 1)):
        raise ManifestError(f"block size {block_octets!r} is not a power of two in "
                            f"[{MIN_BLOCK_OCTETS}, {MAX_BLOCK_OCTETS}] octets")
    return block_octets


def block_crcs(model_path: str | os.PathLike, block_octets: int = DEFAULT_BLOCK_OCTETS) -> list[int]:
    """CRC32C of each block of the file, read READ_BLOCKS blocks at a time into one buffer."""
    _check_block_octets(block_octets)
    buf = bytearray(block_octets * READ_BLOCKS)  # reused read buffer, never reallocated
    view = memoryview(buf)
    crcs: list[int] = []
    with open(model_path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                return crcs
            for start in range(0, got, block_octets):
                crcs.append(crc32c(view[start:min(start + block_octets, got)]))
            if got < len(buf):  # a short read of a regular file: its end
                return crcs


def make_manifest(model_path: str | os.PathLike, block_octets: int = DEFAULT_BLOCK_OCTETS) -> Manifest:
    """Checksum the model and write its manifest beside it, atomically (tmp, fsync, rename)."""
    model = Path(model_path)
    try:
        size = model.stat().st_size
        crcs = block_crcs(model, block_octets)
    except OSError as e:
        raise ManifestError(f"cannot read model {model}: {e.strerror or e}") from None
    fields = {"format": FORMAT, "model": model.name, "size": size, "block_octets": block_octets,
              "crc32c": crcs}
    checksum = crc32c(_canonical(fields))
    text = _canonical({**fields, "checksum": checksum}) + b"\n"
    dest = manifest_path(model)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself reaches flash
        finally:
            os.close(dir_fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ManifestError(f"cannot write manifest {dest}: {e.strerror or e}") from None
    return Manifest(model.name, size, block_octets, tuple(crcs), checksum)


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check a manifest file; ManifestError (one line) unless it is whole and consistent."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"manifest {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:  # includes UnicodeDecodeError
        raise ManifestError(f"manifest {path} is not JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or "checksum" not in doc:
        raise ManifestError(f"manifest {path} is not a manifest object with a checksum")
    fields = {k: v for k, v in doc.items() if k != "checksum"}
    stored = doc["checksum"]
    computed = crc32c(_canonical(fields))
    if type(stored) is not int or stored != computed:
        raise ManifestError(f"manifest {path} fails its checksum: stored {stored!r}, "
                            f"computed {computed}")
    # the checksum holds: what follows catches a manifest written wrong, not one damaged since
    if fields.get("format") != FORMAT:
        raise ManifestError(f"manifest {path} has format {fields.get('format')!r}, not {FORMAT!r}")
    if set(fields) != {"format", "model", "size", "block_octets", "crc32c"}:
        raise ManifestError(f"manifest {path} has fields {sorted(fields)}")
    model, size, block, crcs = fields["model"], fields["size"], fields["block_octets"], fields["crc32c"]
    if not isinstance(model, str) or type(size) is not int or size < 0:
        raise ManifestError(f"manifest {path} has a bad model name or size")
    try:
        _check_block_octets(block)
    except ManifestError as e:
        raise ManifestError(f"manifest {path}: {e}") from None
    n_blocks = -(-size // block)
    if not isinstance(crcs, list) or len(crcs) != n_blocks:
        raise ManifestError(f"manifest {path} lists {len(crcs) if isinstance(crcs, list) else 'no'} "
                            f"block CRCs for {n_blocks} blocks of {block} in {size} octets")
    if not all(type(c) is int and 0 <= c <= 0xFFFFFFFF for c in crcs):
        raise ManifestError(f"manifest {path} has a block CRC that is not a 32-bit number")
    return Manifest(model, size, block, tuple(crcs), stored)


def verify(model_path: str | os.PathLike, manifest: Manifest) -> list[int]:
    """Indices of the model's blocks whose CRC32C disagrees with the manifest ([] when whole).

    A model of another size than the manifest's is not the manifest's model: ManifestError.
    """
    model = Path(model_path)
    try:
        size = model.stat().st_size
        if size != manifest.size:
            raise ManifestError(f"model {model} is {size} octets, its manifest says {manifest.size}")
        crcs = block_crcs(model, manifest.block_octets)
    except OSError as e:
        raise ManifestError(f"cannot read model {model}: {e.strerror or e}") from None
    if len(crcs) != manifest.n_blocks:  # the file changed size while being read
        raise ManifestError(f"model {model} changed size while being checked")
    return [i for i, (a, b) in enumerate(zip(crcs, manifest.crc32c)) if a != b]


def check_model(model_path: str | os.PathLike) -> Manifest:
    """Load the model's manifest and verify the model against it: the install-time / load-time
    gate. Returns the manifest; ManifestError (one line) names the first bad block otherwise."""
    manifest = load_manifest(manifest_path(model_path))
    bad = verify(model_path, manifest)
    if bad:
        raise ManifestError(disagreement(Path(model_path).name, manifest, bad))
    return manifest


def disagreement(model_name: str, manifest: Manifest, bad: list[int]) -> str:
    """The one line that refuses a model whose blocks `bad` (not empty) disagree with its manifest."""
    start, _ = manifest.block_span(bad[0])
    return (f"model {model_name}: {len(bad)} of {manifest.n_blocks} blocks disagree with its manifest "
            f"(first: block {bad[0]} at octet {start})")
