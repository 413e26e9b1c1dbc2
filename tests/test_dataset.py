"""The dataset stage: real decoding, sharding, manifests, checks; and reading it back."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio.config.params import parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

SMALL_FEATURES = {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2}


def _speech_like(seed: int, seconds: float = 0.8, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(90, 220)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.1 * wave + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _folders(root: Path, per_class: int = 3) -> Path:
    seed = 0
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                sf.write(d / f"{label}_{i}.wav", _speech_like(seed), 16000)
    return root


def _params(root: Path | None = None, **data: object):
    raw = {"features": SMALL_FEATURES, "data": {"shard_size": 2, **data}}
    if root is not None:
        raw["data"].update({"source": "folders", "path": str(root)})
    else:
        raw["data"]["demo"] = {"train_clips": 8, "validation_clips": 4, "test_clips": 6}
    return parse_params(raw)


def test_demo_dataset_round_trip(tmp_path: Path) -> None:
    params = _params()
    summary = dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert summary["clips"] == 18 and summary["rejected"] == 0
    data = SpectrogramDataset(tmp_path / "spec")
    n_frames = 1 + 8000 // 160
    assert data.input_shape == (16, n_frames, 1)
    assert len(data.shards("train")) == 4  # 8 clips, 2 per shard
    manifest = data.manifest("test")
    assert set(manifest.columns) >= {
        "path",
        "split",
        "label",
        "duration_s",
        "sample_rate",
        "sha256",
        "attack",
    }
    assert "A05" in set(manifest["attack"])
    assert data.mean.shape == (16,) and np.all(data.std > 0)
    report = json.loads((tmp_path / "reports" / "dataset.json").read_text())
    assert report["per_split"]["validation"] == {"bonafide": 2, "spoof": 2}
    xs, ys = [], []
    for x, y in data.tf_dataset("test", batch_size=4).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    assert x.shape == (6, 16, n_frames, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(ys), manifest["target"].to_numpy())
    # Shuffled training batches hold the same clips, in another order.
    shuffled = np.concatenate(
        [y for _, y in data.tf_dataset("train", 3, shuffle=True, seed=1).as_numpy_iterator()]
    )
    assert sorted(shuffled) == sorted(data.labels("train"))


def _epochs(ds, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` passes over a tf.data pipeline, each as (features, targets) concatenated."""
    out = []
    for _ in range(n):
        xs, ys = zip(*ds.as_numpy_iterator(), strict=True)
        out.append((np.concatenate(xs), np.concatenate(ys)))
    return out


def test_in_memory_and_streaming_reads_agree(tmp_path: Path) -> None:
    params = _params()
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    data = SpectrogramDataset(tmp_path / "spec")
    memory = data.tf_dataset("train", 3)
    streaming = data.tf_dataset("train", 3, in_memory_bytes=0)
    assert int(memory.cardinality()) == int(streaming.cardinality()) == 3  # 8 clips
    (xm, ym), (xs, ys) = _epochs(memory, 1)[0], _epochs(streaming, 1)[0]
    np.testing.assert_array_equal(xm, xs)  # same clips, same (shard, row) order
    np.testing.assert_array_equal(ym, data.labels("train"))
    np.testing.assert_array_equal(ys, ym)

    shuffled = data.tf_dataset("train", 3, shuffle=True, seed=7)
    first, second = _epochs(shuffled, 2)
    # Every epoch holds each clip once, and the order changes from one epoch to the next.
    key = lambda x: sorted(map(bytes, x))  # noqa: E731
    assert key(first[0]) == key(second[0]) == key(xm)
    assert not np.array_equal(first[0], second[0])
    # The same seed replays the same epochs.
    again = _epochs(data.tf_dataset("train", 3, shuffle=True, seed=7), 2)
    for (xa, ya), (xb, yb) in zip(again, (first, second), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_demo_dataset_is_deterministic(tmp_path: Path) -> None:
    params = _params()
    for name in ("a", "b"):
        dataset.build(params, list_clips(params), tmp_path / name, tmp_path / f"r{name}")
    for file in sorted((tmp_path / "a").iterdir()):
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes(), file.name


def test_folders_with_bad_files_are_skipped_and_listed(tmp_path: Path) -> None:
    root = _folders(tmp_path / "corpus")
    (root / "training" / "real" / "empty.wav").write_bytes(b"")
    (root / "training" / "fake" / "notes.wav").write_text("not audio at all")
    sf.write(root / "validation" / "real" / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(root / "testing" / "fake" / "short.wav", _speech_like(99, seconds=0.05), 16000)
    params = _params(root)
    summary = dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert summary["rejected"] == 4 and summary["clips"] == 18
    with open(tmp_path / "reports" / "bad_files.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {Path(r["path"]).name for r in rows} == {
        "empty.wav",
        "notes.wav",
        "silent.wav",
        "short.wav",
    }
    assert all(r["reason"] for r in rows)


def test_fail_mode_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    root = _folders(tmp_path / "corpus")
    (root / "training" / "real" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    params = _params(root, on_bad_file="fail")
    with pytest.raises(UserError, match="broken.wav") as err:
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "spec").exists()  # nothing half-written where DVC would cache it


def test_a_worker_killed_mid_build_stops_it_with_one_line(tmp_path: Path, monkeypatch) -> None:
    """What the OOM killer does to a feature worker: the build must stop with a clear error
    and leave nothing half-written, not wait forever for that worker's results."""
    root = _folders(tmp_path / "corpus")
    file_features = dataset.file_features

    def killed_on_one_file(path: Path, fp, *args, **kwargs):
        if path.name == "fake_1.wav":
            os.kill(os.getpid(), signal.SIGKILL)
        return file_features(path, fp, *args, **kwargs)

    # The workers are forked from this process, so they run the patched function.
    monkeypatch.setattr(dataset, "file_features", killed_on_one_file)
    params = _params(root)
    with pytest.raises(UserError, match="a feature worker process died") as err:
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_same_audio_in_two_splits_fails_naming_both(tmp_path: Path) -> None:
    root = _folders(tmp_path / "corpus")
    same = root / "training" / "real" / "real_0.wav"
    (root / "testing" / "real" / "copy.wav").write_bytes(same.read_bytes())
    params = _params(root)
    with pytest.raises(
        UserError, match=r"copy.wav \(test\) has the same audio as training/real/real_0.wav"
    ):
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")


def test_one_class_split_fails(tmp_path: Path) -> None:
    root = _folders(tmp_path / "corpus")
    for file in (root / "validation" / "fake").iterdir():
        file.unlink()
    params = _params(root)
    with pytest.raises(UserError, match="split 'validation' has no spoof clips"):
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")


def test_unknown_layout_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(UserError, match="has neither split folders"):
        list_clips(_params(tmp_path))
    with pytest.raises(UserError, match="is not a directory"):
        list_clips(_params(tmp_path / "nope"))


def test_rebuilding_replaces_the_dataset_whole(tmp_path: Path) -> None:
    params = _params()
    out = tmp_path / "spec"
    dataset.build(params, list_clips(params), out, tmp_path / "reports")
    (out / "stale-shard.npy").write_bytes(b"from an older build")
    dataset.build(params, list_clips(params), out, tmp_path / "reports")
    assert not (out / "stale-shard.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "spec"], "no .tmp/.old"


def _split_features(data: SpectrogramDataset, split: str) -> np.ndarray:
    order = data.manifest(split).sort_values(["shard", "row"])["clip_id"].to_numpy()
    x = np.concatenate([data.as_features(x) for x, _ in data.iter_shards(split)])
    return x[np.argsort(order)]  # by clip id, so two builds compare clip by clip


def test_validation_codec_gives_every_validation_clip_one_round_trip_and_nothing_else(
    tmp_path: Path,
) -> None:
    root = _folders(tmp_path / "corpus")
    plain_params = _params(root)
    coded_params = _params(root, validation_codec="mp3")
    plain, coded, again = (tmp_path / n for n in ("plain", "coded", "again"))
    dataset.build(plain_params, list_clips(plain_params), plain, tmp_path / "r1")
    dataset.build(coded_params, list_clips(coded_params), coded, tmp_path / "r2")
    dataset.build(coded_params, list_clips(coded_params), again, tmp_path / "r3")
    a, b, c = (SpectrogramDataset(d) for d in (plain, coded, again))

    for split in ("train", "test"):  # untouched, bit for bit; so are the statistics
        np.testing.assert_array_equal(_split_features(a, split), _split_features(b, split))
        assert set(b.manifest(split)["augmentation"].fillna("")) == {""}
    np.testing.assert_array_equal(a.mean, b.mean)

    va, vb = _split_features(a, "validation"), _split_features(b, "validation")
    assert va.shape == vb.shape  # the same clips, no extra rows
    labels = b.manifest("validation")["augmentation"].astype(str)
    assert all(label.startswith("mp3@") for label in labels), labels.tolist()
    for before, after in zip(va, vb, strict=True):
        assert not np.array_equal(before, after), "a validation clip skipped its round trip"
        # Lossy, but the same speech: the log-mel images stay strongly correlated.
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.8
    np.testing.assert_array_equal(vb, _split_features(c, "validation"))  # seeded
    assert json.loads((coded / "stats.json").read_text())["validation_codec"] == "mp3"
    assert json.loads((plain / "stats.json").read_text())["validation_codec"] is None
