"""The serving fast path gives today's answers: compiled network vs `keras.Model.predict`.

For every feature kind the project has (`config.params.FEATURE_KINDS`), a small dataset is built
by the dataset stage in tmp_path, a model is built on its statistics and fitted for one epoch
(so batch norm's moving statistics are not the identity), and the test split's clips - plus
longer recordings scored in windows and a set of bad rows - are scored twice:

- the serving `Detector` (network compiled once at load, rows decoded on threads), and
- a reference `Detector` that does what the serving path did before: every row decoded in
  turn with the windows stacked by `np.stack`, and the network called through
  `keras.Model.predict(batch_size=64)`.

Same columns, same numbers to 1e-5, same labels, the same per-row errors. A new audio kind in
FEATURE_KINDS is covered with no change here; a kind with its own data source needs one
entry in `BUILDERS`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from deepfake_audio.config.kinds import KINDS
from deepfake_audio.config.params import FEATURE_KINDS, Params, parse_params

HPARAMS = {
    "filters_1": 8,
    "filters_2": 16,
    "kernel_size_1": 3,
    "kernel_size_2": 3,
    "dense_units": 8,
    "learning_rate": 1e-3,
    "optimizer": "adam",
}
CLIP = 0.5  # training clip length, seconds: test recordings of 1.2 s get 4 windows
ARCHITECTURE_OF = {"waveform": "wave_cnn", "whisper": "whisper_head"}
# whisper_head's knobs (the others read HPARAMS, the notebook's names).
HEAD_HPARAMS = {"hidden_units": 0, "dropout": 0.0, "learning_rate": 1e-3, "optimizer": "adam"}


def _audio(kind: str, root: Path) -> tuple[Params, list[tuple[str, bytes]]]:
    """Demo corpus params, and the test split's clips as WAV bytes (plus longer ones)."""
    from deepfake_audio.sources import list_clips
    from deepfake_audio.sources.demo import DemoClip, generate_clip

    params = parse_params(
        {
            "data": {
                "shard_size": 8,
                "demo": {"train_clips": 16, "validation_clips": 4, "test_clips": 12},
            },
            "features": {"kind": kind, "clip_seconds": CLIP, "n_mels": 32, "workers": 1},
            # The raw waveform needs a 1-D network, Whisper's frames its pooled head; every
            # other kind the compact CNN.
            "model": {"architecture": ARCHITECTURE_OF.get(kind, "compact_cnn")},
        }
    )
    fp = params.features
    clips = []
    for clip in (c for c in list_clips(params) if c.split == "test"):
        demo = DemoClip(
            clip_id=clip.clip_id,
            split=clip.split,
            label=clip.label,
            speaker=clip.speaker,
            attack=clip.attack,
            seed=clip.demo_seed,  # type: ignore[arg-type]
        )
        for seconds in (CLIP, 2.4 * CLIP):  # one window; several (the last one end-aligned)
            wave = generate_clip(demo, sample_rate=fp.sample_rate, clip_seconds=seconds)
            buffer = io.BytesIO()
            sf.write(buffer, wave, fp.sample_rate, format="WAV", subtype="PCM_16")
            clips.append((f"{clip.clip_id}-{seconds:g}s.wav", buffer.getvalue()))
    return params, clips


def _images(kind: str, root: Path) -> tuple[Params, list[tuple[str, bytes]]]:
    """The notebook-style images source, and its test split's PNGs."""
    from deepfake_audio.dsp.images import write_demo_images

    pictures = root / "pictures"
    write_demo_images(pictures, {"train": 8, "validation": 2, "test": 6}, size=(40, 48))
    params = parse_params(
        {
            "data": {"source": "images", "path": str(pictures), "shard_size": 8},
            "features": {"kind": kind, "image_size": [32, 32], "workers": 1},
            "model": {"architecture": "compact_cnn"},
        }
    )
    files = sorted((pictures / "test").rglob("*.png"))
    return params, [(p.name, p.read_bytes()) for p in files]


# How each kind's test data is made; every other kind is audio from the demo corpus.
BUILDERS: dict[str, Callable[[str, Path], tuple[Params, list[tuple[str, bytes]]]]] = {
    "image": _images,
}


def _bad_rows(kind: str, root: Path) -> list[tuple[Any, str]]:
    """(value, a part of the reason it must be refused with), as base64 column values."""
    b64 = base64.b64encode
    silent = io.BytesIO()
    sf.write(silent, np.zeros(8000, np.float32), 16000, format="WAV", subtype="PCM_16")
    short = io.BytesIO()
    sf.write(short, np.full(160, 0.1, np.float32), 16000, format="WAV", subtype="PCM_16")
    rows: list[tuple[Any, str]] = [
        ("not base64 at all!", "not valid base64"),
        ("", "no "),
        (None, "no "),
        (
            b64(b"RIFF\x10\x00\x00\x00WAVEthis is not audio").decode(),
            "not an image" if kind == "image" else "not a readable",
        ),
    ]
    if kind != "image":
        rows += [
            (b64(silent.getvalue()).decode(), "silent"),
            (b64(short.getvalue()).decode(), "too short"),
        ]
    return rows


def _reference(detector_class: type, model: Any, config: dict[str, Any]) -> Any:
    """A `Detector` scoring as serving did before: rows in turn, `np.stack`, `Model.predict`."""

    class PredictDetector(detector_class):
        def row_inputs(self, column: str, values: list[Any]):
            from deepfake_audio.dsp.audio import load_wave, sliding_windows
            from deepfake_audio.dsp.features import clip_features
            from deepfake_audio.serving.pyfunc import RowError

            parts, errors = [], []
            fp = self.features
            for value in values:
                try:
                    if fp.kind == "image":
                        parts.append(self.windows(column, value))
                    else:
                        self.windows(column, value)  # the checks and errors of a row
                        source = base64.b64decode(value)
                        wave = load_wave(source, fp.sample_rate)
                        windows = sliding_windows(wave, fp.n_samples, self.hop, pad=fp.pad)
                        feats = np.stack([clip_features(w, fp) for w in windows])
                        parts.append(feats.reshape((-1, *fp.input_shape)).astype(np.float32))
                    errors.append("")
                except RowError as exc:
                    parts.append(np.empty((0, *fp.input_shape), dtype=np.float32))
                    errors.append(str(exc) or "cannot be scored")
            return parts, errors

        def logits(self, inputs: np.ndarray) -> np.ndarray:
            out = self.model.predict(inputs, batch_size=64, verbose=0)
            return np.asarray(out, dtype=np.float64).reshape(-1)

    return PredictDetector(model, config)


@pytest.mark.slow
@pytest.mark.parametrize("kind", FEATURE_KINDS)
def test_fast_path_matches_keras_predict(kind: str, tmp_path: Path) -> None:
    from deepfake_audio.dataset.shards import SpectrogramDataset
    from deepfake_audio.models import network
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.serving.inference import ROWS_PER_THREAD
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import dataset

    params, clips = BUILDERS.get(kind, _audio)(kind, tmp_path)
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    data = SpectrogramDataset(tmp_path / "spec")
    model = network.build(
        HEAD_HPARAMS if kind == "whisper" else HPARAMS,
        params.model.architecture,
        data.input_shape,
        data.mean,
        data.std,
        norm_axis=data.norm_axis,
        features=params.features,
    )
    model.fit(
        data.tf_dataset("train", batch_size=8, shuffle=True), epochs=1, shuffle=False, verbose=0
    )
    config = serving.make_config(params.section("features"), threshold=0.0)

    fast = serving.Detector(model, config)
    reference = _reference(serving.Detector, model, config)
    bad = _bad_rows(kind, tmp_path)
    values = [base64.b64encode(raw).decode() for _, raw in clips]
    # Bad rows among good ones, and enough rows that the fast path decodes on threads.
    mixed = values[:3] + [v for v, _ in bad] + values[3:]
    column = serving.input_columns(KINDS[kind])[0]
    frame = pd.DataFrame({column: mixed}, index=pd.RangeIndex(100, 100 + len(mixed)))
    assert len(frame) >= 2 * ROWS_PER_THREAD

    got = fast.score(frame)
    want = reference.score(frame)
    assert list(got.columns) == list(want.columns)
    assert list(got.index) == list(frame.index)
    pd.testing.assert_series_equal(got["error"], want["error"])
    pd.testing.assert_series_equal(got["label"], want["label"])
    pd.testing.assert_series_equal(got["windows"], want["windows"])
    ok = got["error"] == ""
    np.testing.assert_allclose(
        got["fake_probability"][ok].astype(float),
        want["fake_probability"][ok].astype(float),
        rtol=1e-5,
        atol=1e-5,
    )
    assert got["fake_probability"][~ok].isna().all() and (got["label"][~ok] == "error").all()
    for (_, reason), error in zip(bad, got["error"][3 : 3 + len(bad)], strict=True):
        assert reason in error, (reason, error)
    assert ok.sum() == len(values)
    if kind != "image":
        assert got["windows"][ok].max() > 1, "longer recordings are scored in windows"

    # The server's pattern: one row a request, each its own call - the same numbers.
    for value, (_, expected) in zip(values[:4], want[ok].iterrows(), strict=False):
        (_, single), *_ = fast.score(pd.DataFrame({column: [value]})).iterrows()
        assert single["fake_probability"] == pytest.approx(expected["fake_probability"], abs=1e-5)
        assert single["label"] == expected["label"]

    # One trace at load, whatever the batch sizes since.
    assert fast.network.traces == 1


@pytest.mark.slow
def test_network_chunks_pads_and_never_retraces() -> None:
    """Batches beyond BATCH_SIZE are chunked; GPU-style bucket padding changes no logit."""
    from deepfake_audio.models import network
    from deepfake_audio.serving.inference import BATCH_SIZE, Network, bucket

    shape = (16, 24, 1)
    model = network.build(
        HPARAMS, "compact_cnn", shape, np.zeros(16, np.float32), np.ones(16, np.float32)
    )
    x = np.random.default_rng(0).normal(size=(BATCH_SIZE + 7, *shape)).astype(np.float32)
    want = model.predict(x, batch_size=BATCH_SIZE, verbose=0).reshape(-1)
    network = Network(model)
    for n in (0, 1, 3, BATCH_SIZE, BATCH_SIZE + 7):
        got = network(x[:n])
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_allclose(got, want[:n], rtol=1e-5, atol=1e-6)
    network._pad = True  # what a GPU gets: zero rows up to the next bucket, dropped again
    np.testing.assert_allclose(network(x[:5]), want[:5], rtol=1e-5, atol=1e-6)
    assert [bucket(n) for n in (1, 2, 3, 5, 33, 64)] == [1, 2, 4, 8, 64, 64]
    assert network.traces == 1
    with pytest.raises(ValueError, match="network input of shape"):
        network(np.zeros((1, 8, 8, 1), np.float32))


def test_threads_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_audio.serving import inference

    monkeypatch.setenv(inference.THREADS_ENV, "3")
    assert inference.threads_from_env() == 3 and inference.row_threads() == 3
    monkeypatch.setenv(inference.THREADS_ENV, "")
    assert inference.threads_from_env() is None and inference.row_threads() >= 1
    from deepfake_audio.core.errors import UserError

    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(inference.THREADS_ENV, bad)
        with pytest.raises(UserError, match="positive integer"):
            inference.threads_from_env()


def test_predict_scores_chunks_in_order_with_bounded_memory(monkeypatch) -> None:
    """Files go to the scorer in chunks, at most CHUNKS_IN_FLIGHT at a time, rows in order."""
    import threading
    import time

    from deepfake_audio.serving import predict

    monkeypatch.setattr(predict, "CHUNK_FILES", 7)
    lock = threading.Lock()
    state = {"running": 0, "most": 0, "calls": 0}

    def scorer(frame: pd.DataFrame) -> pd.DataFrame:
        with lock:
            state["running"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.01 * (len(frame) % 3))  # chunks finish out of order
        with lock:
            state["running"] -= 1
        n = len(frame)
        return pd.DataFrame(
            {
                "fake_probability": [float(Path(p).stem) / 100 for p in frame["path"]],
                "label": ["fake"] * n,
                "windows": [1] * n,
                "error": [""] * n,
            }
        )

    files = [Path(f"{i}.wav") for i in range(50)]
    rows = predict.score_files(scorer, files)
    assert [row["path"] for row in rows] == [str(f) for f in files]
    assert [row["fake_probability"] for row in rows] == [i / 100 for i in range(50)]
    assert state["calls"] == 8 and state["most"] <= predict.CHUNKS_IN_FLIGHT
