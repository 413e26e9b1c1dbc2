"""OpenAI's own Whisper checkpoint (`tiny.en.pt`, `base.pt`, ...) read with numpy, without torch.

A machine that has Whisper installed the usual way has its checkpoints in `~/.cache/whisper/`:
what `torch.save({"dims": ..., "model_state_dict": ...})` wrote. That file is a zip archive
(torch >= 1.6's format):

    <archive>/data.pkl      a pickle of the saved object; each tensor is pickled as
                            torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
                            with its storage a persistent id
                            ("storage", torch.<Type>Storage, key, device, element count)
    <archive>/data/<key>    each storage's bytes, little-endian, C order of the storage
    <archive>/version, <archive>/byteorder, ...

The pickle is read by a restricted unpickler: the only globals it resolves are the handful a
state dict needs (the tensor and parameter rebuild functions, the storage types, OrderedDict),
mapped to numpy; any other global (a pickle can name any callable, `os.system` included) is
refused in one line naming the file and the global. So reading a checkpoint runs no code from
it, which `torch.load` without `weights_only=True` would. Each tensor's view is checked to lie
inside its storage before numpy reads it.

`read_checkpoint` returns the saved object with numpy arrays for tensors; `whisper_encoder_tensors`
renames Whisper's encoder to CTranslate2's tensor names (`ctranslate2_weights`' layout: one
fused q/k/v projection, whose key bias, absent in Whisper, is zero), so the same loader and
Keras layers read either file.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.core.errors import UserError

# torch.<Type>Storage -> the numpy dtype of its bytes (little-endian). BFloat16 is read as
# uint16 and widened to float32 (its 16 bits are float32's top half).
STORAGES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "DoubleStorage": np.dtype("<f8"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(UserError):
    """A checkpoint that is missing, not torch's zip format, or asks for code: one line."""


class _Storage:
    """A storage type named by the pickle (torch.HalfStorage ...): its dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGES[name]


def _as_float32_if_bfloat16(name: str, values: np.ndarray) -> np.ndarray:
    if name != "BFloat16Storage":
        return values
    return (values.astype(np.uint32) << 16).view(np.float32)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, np.ndarray] = {}

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a Whisper checkpoint this code reads: {what}")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad=False, hooks=None: data
        if module == "torch" and name in STORAGES:
            return _Storage(name)
        raise self.fail(f"it asks for {module}.{name}, which a checkpoint of tensors never needs")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self.fail(f"an unknown persistent id {str(pid)[:60]!r}")
        _, storage, key, _device, numel = pid
        if not isinstance(storage, _Storage) or not isinstance(numel, int):
            raise self.fail(f"storage {key!r} has no known type")
        if key not in self.storages:
            member = f"{self.prefix}data/{key}"
            try:
                raw = self.archive.read(member)
            except KeyError:
                raise self.fail(f"the archive lacks {member}") from None
            if len(raw) < numel * storage.dtype.itemsize:
                raise self.fail(f"{member} holds {len(raw)} bytes, fewer than {numel} elements")
            values = np.frombuffer(raw, dtype=storage.dtype, count=numel)
            self.storages[key] = _as_float32_if_bfloat16(storage.name, values)
        return self.storages[key]

    def rebuild_tensor(
        self, storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any
    ) -> np.ndarray:
        """The tensor as a numpy copy, its view checked to lie inside its storage."""
        if not isinstance(storage, np.ndarray):
            raise self.fail("a tensor without a storage")
        size, stride = tuple(size), tuple(stride)
        ints = all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))
        if not ints or len(size) != len(stride):
            raise self.fail(f"a tensor of size {size} and stride {stride}")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True) if n)
        if any(n == 0 for n in size):
            return np.zeros(size, dtype=storage.dtype)
        if last >= storage.size:
            raise self.fail(f"a tensor of size {size} reaches past its storage")
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=size, strides=[s * item for s in stride], writeable=False
        )
        return np.array(view)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for a zip archive (torch.save's format), which a CTranslate2 model.bin never is."""
    return zipfile.is_zipfile(path)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object `torch.save` wrote to `path`, tensors as numpy arrays (no torch, no code run)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise CheckpointError(
            f"{path}: not a torch checkpoint in zip format ({reason}); older torch files "
            "(before 1.6) are not read: re-save it with a current torch"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a zip archive, but not torch's: no one */data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as f:
            unpickler = _Unpickler(f, archive, prefix, path)
            try:
                return unpickler.load()
            except CheckpointError:
                raise
            except Exception as error:  # noqa: BLE001 - a damaged pickle raises many types
                raise unpickler.fail(f"its pickle does not load ({type(error).__name__})") from None


def whisper_encoder_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The encoder of OpenAI's Whisper checkpoint at `path`, under CTranslate2's tensor names
    (`encoder/...`, as `ctranslate2_weights.read` returns them), plus `encoder/num_heads`."""
    path = Path(path)
    saved = read_checkpoint(path)
    if not (isinstance(saved, dict) and {"dims", "model_state_dict"} <= set(saved)):
        raise CheckpointError(
            f"{path}: a torch checkpoint, but not OpenAI Whisper's (no dims and model_state_dict)"
        )
    state, dims = saved["model_state_dict"], saved["dims"]
    n_heads = dims.get("n_audio_head") if isinstance(dims, dict) else None
    if not isinstance(n_heads, int) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: Whisper's dims lack n_audio_head")

    def take(name: str) -> np.ndarray:
        try:
            value = state[name]
        except KeyError:
            raise CheckpointError(f"{path}: Whisper's encoder lacks the tensor {name}") from None
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: {name} is not a tensor")
        return value

    out: dict[str, np.ndarray] = {"encoder/num_heads": np.array(n_heads, np.int16)}
    for ours, theirs in (
        ("conv1/weight", "conv1.weight"),
        ("conv1/bias", "conv1.bias"),
        ("conv2/weight", "conv2.weight"),
        ("conv2/bias", "conv2.bias"),
        ("position_encodings/encodings", "positional_embedding"),
        ("layer_norm/gamma", "ln_post.weight"),
        ("layer_norm/beta", "ln_post.bias"),
    ):
        out[f"encoder/{ours}"] = take(f"encoder.{theirs}")
    blocks = sorted(
        {int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")},
    )
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"{path}: Whisper's encoder blocks are numbered {blocks}")
    for i in blocks:
        theirs, ours = f"encoder.blocks.{i}.", f"encoder/layer_{i}/"
        query, key, value = (take(theirs + f"attn.{p}.weight") for p in ("query", "key", "value"))
        out[ours + "self_attention/linear_0/weight"] = np.concatenate([query, key, value])
        query_bias, value_bias = take(theirs + "attn.query.bias"), take(theirs + "attn.value.bias")
        out[ours + "self_attention/linear_0/bias"] = np.concatenate(
            [query_bias, np.zeros_like(query_bias), value_bias]  # Whisper's key has no bias
        )
        for part, name in (
            ("self_attention/linear_1", "attn.out"),
            ("self_attention/layer_norm", "attn_ln"),
            ("ffn/linear_0", "mlp.0"),
            ("ffn/linear_1", "mlp.2"),
            ("ffn/layer_norm", "mlp_ln"),
        ):
            first, second = ("gamma", "beta") if part.endswith("layer_norm") else ("weight", "bias")
            out[f"{ours}{part}/{first}"] = take(f"{theirs}{name}.weight")
            out[f"{ours}{part}/{second}"] = take(f"{theirs}{name}.bias")
    return out
