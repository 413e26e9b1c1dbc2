"""`features.kind`: each kind object describes its features; lfcc and image through the dataset
stage, tf.data and a model; one decoder of stored features sections for training and serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_hparams
from deepfake_audio.config import architectures
from deepfake_audio.config import params as config
from deepfake_audio.config.kinds import KINDS, LFCC, by_name
from deepfake_audio.config.params import FEATURE_KINDS, ParamsError, parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dataset.shards import SpectrogramDataset, stored_features
from deepfake_audio.dsp.features import clip_features
from deepfake_audio.dsp.images import write_demo_images
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset


def _demo(kind: str, **features: object):
    return parse_params(
        {
            "data": {
                "shard_size": 4,
                "demo": {"train_clips": 8, "validation_clips": 4, "test_clips": 4},
            },
            "features": {"kind": kind, "clip_seconds": 0.5, "workers": 2, **features},
        }
    )


def test_lfcc_dataset_has_coefficients_and_deltas(tmp_path: Path) -> None:
    params = _demo("lfcc")
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    data = SpectrogramDataset(tmp_path / "spec")
    n_frames = 1 + 8000 // 160
    assert data.feature_shape == (60, n_frames)
    assert data.input_shape == (60, n_frames, 1)
    assert data.norm_axis == 1 and data.mean.shape == (60,)
    x, y = next(iter(data.tf_dataset("train", batch_size=4)))
    assert tuple(x.shape) == (4, 60, n_frames, 1) and tuple(y.shape) == (4,)
    stats = json.loads((tmp_path / "spec" / "stats.json").read_text())
    assert stats["features"]["kind"] == "lfcc" and stats["features"]["lfcc"]["n_coeffs"] == 20


def test_lfcc_params_are_validated() -> None:
    with pytest.raises(ParamsError, match="features.lfcc.n_coeffs: 30 exceeds n_filters 20"):
        _demo("lfcc", lfcc={"n_coeffs": 30})
    with pytest.raises(ParamsError, match="features.lfcc.win_length: 1024 exceeds"):
        _demo("lfcc", lfcc={"win_length": 1024})
    with pytest.raises(ParamsError, match="features.lfcc.frames: unknown key"):
        _demo("lfcc", lfcc={"frames": 3})


def _images(tmp_path: Path, **features: object):
    root = tmp_path / "notebook"
    write_demo_images(root, {"train": 6, "validation": 3, "test": 3}, size=(120, 160))
    raw = {
        "data": {"source": "images", "path": str(root), "shard_size": 4},
        "features": {"kind": "image", "workers": 2, **features},
        "model": {"architecture": "compact_cnn"},
    }
    return parse_params(raw)


def test_notebook_images_become_a_dataset_at_image_size(tmp_path: Path) -> None:
    params = _images(tmp_path)
    clips = list_clips(params)
    assert len(clips) == 24
    assert {c.label for c in clips if "/REAL/" in c.path} == {"bonafide"}
    summary = dataset.build(params, clips, tmp_path / "spec", tmp_path / "reports")
    assert summary["clips"] == 24 and summary["per_split"]["test"] == {"bonafide": 3, "spoof": 3}
    data = SpectrogramDataset(tmp_path / "spec")
    assert data.input_shape == (224, 224, 3)
    assert data.norm_axis == 3 and data.mean.shape == (3,)
    assert np.all((data.mean > 0) & (data.mean < 1)), "pixels are rescaled to [0, 1]"
    x, _ = next(iter(data.tf_dataset("validation", batch_size=6, shuffle=True)))
    assert tuple(x.shape) == (6, 224, 224, 3)
    assert float(np.min(x)) >= 0.0 and float(np.max(x)) <= 1.0
    manifest = data.manifest("train")
    assert manifest["sha256"].str.len().eq(64).all()
    # Pictures have no audio cues: the shortcut audit says it was skipped.
    audit = json.loads((tmp_path / "reports" / "shortcuts.json").read_text())
    assert "pictures" in audit["skipped"]

    from deepfake_audio.models import network

    values = tiny_hparams()
    model = network.build(values, "compact_cnn", data.input_shape, data.mean, data.std, 3)
    history = model.fit(data.tf_dataset("train", batch_size=4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The Normalization layer standardises each colour channel with the training statistics.
    normalised = model.get_layer("normalise")(x).numpy()
    assert abs(float(normalised.mean())) < 1.0


def test_image_size_param_and_source_kind_agreement(tmp_path: Path) -> None:
    params = _images(tmp_path, image_size=[64, 96])
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert SpectrogramDataset(tmp_path / "spec").input_shape == (64, 96, 3)
    with pytest.raises(ParamsError, match="features.kind: 'logmel' does not fit data.source"):
        parse_params({"data": {"source": "images", "path": "x"}, "features": {"kind": "logmel"}})
    with pytest.raises(ParamsError, match="features.image_size: .* is not \\[height, width\\]"):
        _images(tmp_path / "again", image_size=[224])


def test_broken_images_are_skipped_and_listed(tmp_path: Path) -> None:
    params = _images(tmp_path)
    root = Path(params.data.path)
    (root / "train" / "FAKE" / "broken.png").write_bytes(b"not a png")
    (root / "test" / "REAL" / "empty.jpg").write_bytes(b"")
    summary = dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert summary["rejected"] == 2 and summary["clips"] == 24
    bad = (tmp_path / "reports" / "bad_files.csv").read_text()
    assert "train/FAKE/broken.png" in bad and "test/REAL/empty.jpg" in bad
    fail = parse_params(
        {
            "data": {"source": "images", "path": str(root), "on_bad_file": "fail"},
            "features": {"kind": "image", "workers": 1},
            "model": {"architecture": "compact_cnn"},
        }
    )
    with pytest.raises(UserError, match=r"broken.png: .*\(data.on_bad_file: fail\)$"):
        dataset.build(fail, list_clips(fail), tmp_path / "spec2", tmp_path / "reports2")
    assert not (tmp_path / "spec2").exists(), "no half-written dataset"
    assert not (tmp_path / "spec2.tmp").exists(), "no temporary folder left behind"


# --- the kind objects ------------------------------------------------------------------------


def _features_of(name: str):
    raw: dict = {"features": {"kind": name, "clip_seconds": 0.5, "image_size": [16, 24]}}
    if not KINDS[name].audio:
        raw["data"] = {"source": "images", "path": "x"}
    takers = [a.name for a in architectures.catalogue().values() if name in a.inputs]
    raw["model"] = {"architecture": takers[0]}  # any architecture that takes the kind
    return parse_params(raw).features


@pytest.mark.parametrize("name", FEATURE_KINDS)
def test_each_kind_describes_the_features_it_makes(name: str) -> None:
    """Shape, storage and normalisation axis as the kind states them are what the code does."""
    fp = _features_of(name)
    kind = fp.feature_kind
    assert kind is KINDS[name] is by_name(name) and kind.name == name
    if kind.audio:
        rng = np.random.default_rng(0)
        feats = clip_features(0.1 * rng.standard_normal(fp.n_samples).astype(np.float32), fp)
        assert feats.shape == fp.feature_shape
        assert stored_features(feats, fp).dtype == np.dtype(kind.shard_dtype)
    else:
        assert fp.feature_shape == (16, 24, 3)
    # The normalisation axis of the model input (batch first) holds one statistic per row,
    # per colour channel, or the one channel of a waveform.
    statistics = (None, *fp.input_shape)[kind.norm_axis]
    expected = fp.feature_shape[0] if kind.spectral else fp.input_shape[-1]
    assert statistics == expected
    assert kind.spectral == (kind.audio and len(fp.feature_shape) == 2)


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="unknown feature kind 'cqcc'"):
        by_name("cqcc")


def test_training_and_serving_decode_stored_features_with_one_function() -> None:
    """A stored features section (stats.json, a served model's config) from older or newer
    code: unknown keys are ignored, missing ones take their defaults."""
    from deepfake_audio.serving import pyfunc

    assert pyfunc.features_from_dict is config.features_from_dict
    stored = {
        "kind": "lfcc",
        "n_mels": 32,
        "from_a_newer_writer": 1,
        "lfcc": {"n_coeffs": 12, "x": 0},
    }
    fp = config.features_from_dict(stored)
    assert fp.feature_kind is LFCC and fp.n_mels == 32 and fp.lfcc.n_coeffs == 12
    assert fp.lfcc.n_filters == config.LfccParams().n_filters  # missing: the default
    assert fp.feature_shape == (36, fp.n_frames)
    images = config.features_from_dict({"kind": "image", "image_size": [8, 10]})
    assert images.image_size == (8, 10) and images.input_shape == (8, 10, 3)
