"""Untrusted audio: random, truncated and corrupted bytes through decoding, the dataset's
feature path and `deepfake-audio predict`.

Every input either gives a finite float32 waveform (or features) or fails with the
module's own one-line error (`AudioError`, `BadFile`): never another exception, never
a crash of the whole run. Property-based (hypothesis, derandomized so CI is repeatable)
over real WAV/FLAC/OGG/MP3 files written with soundfile, cut short, bit-flipped, or
with their header kept and the body replaced by garbage.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_hparams
from deepfake_audio.config.params import parse_params
from deepfake_audio.dsp import audio
from deepfake_audio.dsp.audio import AudioError, decode, load_clip, load_wave
from deepfake_audio.stages.dataset import BadFile, file_features

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same cases on every run and every machine
    database=None,  # no .hypothesis/ folder in the project
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = {  # name -> (soundfile format, subtype)
    "wav16": ("WAV", "PCM_16"),
    "wavfloat": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
SUFFIX = {"wav16": ".wav", "wavfloat": ".wav", "flac": ".flac", "ogg": ".ogg", "mp3": ".mp3"}
SMALL_FEATURES = {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 1}


def _speechlike(seconds: float = 0.6, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    left = tone + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, 0.8 * left], axis=1).astype(np.float32)


def _encode(kind: str, rate: int = 16000) -> bytes:
    fmt, subtype = FORMATS[kind]
    buffer = io.BytesIO()
    sf.write(buffer, _speechlike(rate=rate), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


REAL = {kind: _encode(kind) for kind in FORMATS}


def _check(call, data) -> None:
    """`call(data)` gives finite float32 samples, or an AudioError of one line."""
    try:
        out = call(data)
    except AudioError as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return
    wave = out[0] if isinstance(out, tuple) else out
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size > 0
    assert np.all(np.isfinite(wave))


def _clip(data: bytes) -> np.ndarray:
    return load_clip(data, sample_rate=16000, clip_seconds=0.5)


def test_the_real_files_decode() -> None:
    for kind, blob in REAL.items():
        wave, rate = decode(blob)
        assert rate == 16000 and wave.size > 8000, kind
        assert np.isfinite(_clip(blob)).all()


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check(decode, data)
    _check(_clip, data)


@FUZZ
@given(st.sampled_from(sorted(REAL)), st.floats(0.0, 1.0))
def test_truncated_files(kind: str, share: float) -> None:
    blob = REAL[kind]
    _check(_clip, blob[: int(share * len(blob))])


@FUZZ
@given(
    st.sampled_from(sorted(REAL)),
    st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=12),
)
def test_corrupted_headers(kind: str, flips: list[tuple[int, int]]) -> None:
    blob = bytearray(REAL[kind])
    for position, value in flips:  # the first 512 bytes: headers, stream info, first frames
        blob[position % len(blob)] = value
    _check(_clip, bytes(blob))
    _check(lambda d: load_wave(d, 16000), bytes(blob))


@FUZZ
@given(st.sampled_from(sorted(REAL)), st.integers(4, 256), st.binary(max_size=8192))
def test_valid_header_garbage_body(kind: str, keep: int, garbage: bytes) -> None:
    _check(_clip, REAL[kind][:keep] + garbage)


@settings(FUZZ, max_examples=60)
@given(
    st.sampled_from(sorted(REAL)),
    st.floats(0.0, 1.0),
    st.binary(max_size=2048),
)
def test_dataset_feature_path_on_files(kind: str, share: float, garbage: bytes) -> None:
    """`dataset.file_features` - the dataset stage's per-file path - on files on disk."""
    fp = parse_params({"features": SMALL_FEATURES}).features
    blob = REAL[kind]
    data = blob[: int(share * len(blob))] + garbage
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip{SUFFIX[kind]}"
        path.write_bytes(data)
        try:
            feats, meta = file_features(path, fp)
        except BadFile as exc:
            message = str(exc)
            assert message and "\n" not in message, repr(message)
            return
    assert feats.dtype == np.float32 and feats.shape == fp.feature_shape
    assert np.all(np.isfinite(feats)) and len(meta["sha256"]) == 64


def _wav_header(rate: int, frames_claimed: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header claiming `frames_claimed` frames."""
    data_bytes = frames_claimed * 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
        + b"data"
        + struct.pack("<I", data_bytes & 0xFFFFFFFF)
    )


def test_a_header_claiming_terabytes_is_one_line_not_a_memory_error() -> None:
    # Found by the fuzz: a FLAC STREAMINFO whose total-samples field says ~2**36 made the
    # old decoder allocate the claimed length up front (MemoryError, 480 GiB).
    blob = bytearray(REAL["flac"])
    blob[21] = 0xFF
    _check(decode, bytes(blob))
    body = (_speechlike()[:, 0] * 32767).astype("<i2").tobytes()
    _check(decode, _wav_header(16000, 2**31 - 1) + body)


def test_an_implausible_sample_rate_is_refused() -> None:
    # 1 Hz would be resampled to 16 kHz by a factor of 16000: a memory bomb, not audio.
    body = (_speechlike()[:, 0] * 32767).astype("<i2").tobytes()
    with pytest.raises(AudioError, match="sample rate 1 Hz is outside"):
        decode(_wav_header(1, len(body) // 2) + body)


def test_a_recording_longer_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "MAX_SECONDS", 0.25)
    # From the header, before a block is decoded.
    with pytest.raises(AudioError, match=r"audio is 0\.6 s long, above the 0\.25 s cap"):
        decode(REAL["wav16"])


def test_block_decoding_gives_the_same_samples_as_one_read() -> None:
    """Reading in blocks changed nothing for valid files (the dataset's features included)."""
    long = np.tile(_speechlike(), (8, 1))  # 4.8 s, several blocks
    for kind in ("wav16", "flac", "ogg"):
        fmt, subtype = FORMATS[kind]
        buffer = io.BytesIO()
        sf.write(buffer, long, 16000, format=fmt, subtype=subtype)
        expected, _ = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32", always_2d=True)
        wave, _ = decode(buffer.getvalue())
        mean = expected.mean(axis=1, dtype=np.float64).astype(np.float32)
        np.testing.assert_array_equal(wave, mean)


# --- deepfake-audio predict over a folder with corrupted files ---------------------------


def _write_params(folder: Path) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"features": SMALL_FEATURES}))
    return path


def _save_model(folder: Path) -> Path:
    from deepfake_audio.models import network

    fp = parse_params({"features": SMALL_FEATURES}).features
    values = tiny_hparams(filters=4, dense_units=8)
    n = fp.feature_shape[0]
    model = network.build(
        values, "compact_cnn", fp.input_shape, np.zeros(n, np.float32), np.ones(n, np.float32)
    )
    path = folder / "model.keras"
    model.save(path)
    return path


def _predict(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow  # TensorFlow in a subprocess
def test_predict_scores_the_good_file_and_reports_each_bad_one(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    sf.write(folder / "good.wav", _speechlike(1.0)[:, 0], 16000)
    (folder / "random.wav").write_bytes(np.random.default_rng(1).bytes(3000))
    (folder / "truncated.flac").write_bytes(REAL["flac"][:300])
    (folder / "empty.ogg").write_bytes(b"")
    (folder / "text.mp3").write_text("not audio at all\n")
    (folder / "huge_claim.wav").write_bytes(_wav_header(16000, 2**31 - 1) + b"\x01\x02" * 50)
    (folder / "one_hertz.wav").write_bytes(_wav_header(1, 16000) + b"\x10\x20" * 16000)
    bad = {"random.wav", "truncated.flac", "empty.ogg", "text.mp3", "huge_claim.wav"}
    bad |= {"one_hertz.wav"}
    model = _save_model(tmp_path)
    params = _write_params(tmp_path)
    proc = _predict("--params", str(params), "predict", str(folder), "--model", str(model))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    assert set(rows) == bad | {"good.wav"}
    good = rows["good.wav"]
    assert good["label"] in ("real", "fake") and 0.0 <= float(good["fake_probability"]) <= 1.0
    for name in bad:
        assert rows[name]["label"] == "error" and rows[name]["fake_probability"] == "", name
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deepfake-audio: error")]
    assert len(errors) == len(bad)
    assert all(any(name in line for line in errors) for name in bad)


@pytest.mark.slow
def test_predict_refuses_a_model_with_python_code_in_it(tmp_path: Path) -> None:
    """Keras safe mode: a .keras file with a Lambda layer (pickled bytecode) is not loaded."""
    import keras

    marker = tmp_path / "code-ran"
    fp = parse_params({"features": SMALL_FEATURES}).features
    inputs = keras.Input(shape=fp.input_shape)
    hidden = keras.layers.Lambda(
        lambda x, m=str(marker): (open(m, "w").close(), x)[1]  # noqa: SIM115 - the payload
    )(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(hidden))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # building the model in this process ran it once
    sf.write(tmp_path / "good.wav", _speechlike(1.0)[:, 0], 16000)
    params = _write_params(tmp_path)
    proc = _predict(
        "--params", str(params), "predict", str(tmp_path / "good.wav"), "--model", str(path)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loadable Keras model" in lines[0], proc.stderr
    assert not marker.exists(), "the Lambda's code ran while loading"
