"""Writing and reading the versioned spectrogram dataset (`data/spectrograms/`).

Layout, one folder that DVC versions as a whole:

    manifest_<split>.csv     one row per clip: where it came from, its label, its shard row
    <split>-<NNNNN>.npy      float16 log-mel shards, shape (clips, n_mels, n_frames)
    stats.json               feature settings, input shape, per-mel-bin mean/std of train

Features are computed once here, in worker processes, and streamed to shards
of bounded size, so memory stays flat however many clips there are. Training
reads the shards back through `tf.data` (see `tf_dataset`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.errors import UserError
from deepfake_audio.params import FeaturesParams, Params
from deepfake_audio.sources import LABELS, SPLITS, Clip

MANIFEST_COLUMNS = (
    "clip_id",
    "path",
    "split",
    "label",
    "target",
    "speaker",
    "attack",
    "duration_s",
    "sample_rate",
    "sha256",
    "shard",
    "row",
)


@dataclass(frozen=True)
class _Task:
    index: int
    clip: Clip
    root: str
    features: FeaturesParams


def clip_features(wave: np.ndarray, fp: FeaturesParams) -> np.ndarray:
    """The one feature transform, shared by the dataset stage and serving."""
    from deepfake_audio.features import log_mel_spectrogram

    return log_mel_spectrogram(
        wave,
        sample_rate=fp.sample_rate,
        n_fft=fp.n_fft,
        win_length=fp.win_length,
        hop_length=fp.hop_length,
        n_mels=fp.n_mels,
        fmin=fp.fmin,
        fmax=fp.fmax,
    )


def _load_wave(task: _Task) -> tuple[np.ndarray, dict[str, Any]]:
    clip, fp = task.clip, task.features
    if clip.demo_seed is not None:
        from deepfake_audio.sources.demo import DemoClip, generate_clip

        demo = DemoClip(
            clip_id=clip.clip_id,
            split=clip.split,
            label=clip.label,
            speaker=clip.speaker,
            attack=clip.attack,
            seed=clip.demo_seed,
        )
        wave = generate_clip(demo, sample_rate=fp.sample_rate, clip_seconds=fp.clip_seconds)
        digest = hashlib.sha256(np.ascontiguousarray(wave).tobytes()).hexdigest()
        return wave, {
            "duration_s": fp.clip_seconds,
            "sample_rate": fp.sample_rate,
            "sha256": digest,
        }

    import soundfile

    from deepfake_audio.audio import AudioError, load_clip

    path = Path(task.root) / clip.path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AudioError(f"{clip.path}: cannot read ({exc.strerror})") from None
    try:
        info = soundfile.info(str(path))
        duration, rate = float(info.duration), int(info.samplerate)
    except Exception:  # noqa: BLE001 - load_clip below reports the real reason
        duration, rate = 0.0, 0
    wave = load_clip(
        path,
        sample_rate=fp.sample_rate,
        clip_seconds=fp.clip_seconds,
        crop=fp.crop,
        pad=fp.pad,
    )
    meta = {
        "duration_s": round(duration, 4),
        "sample_rate": rate,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return wave, meta


def _extract(task: _Task) -> tuple[int, np.ndarray | None, dict[str, Any]]:
    """Runs in a worker process: one clip in, its float16 features (or its error) out."""
    from deepfake_audio.audio import AudioError

    try:
        wave, meta = _load_wave(task)
        feats = clip_features(wave, task.features)
        if not np.all(np.isfinite(feats)):
            raise AudioError(f"{task.clip.path}: features are not finite")
        return task.index, feats.astype(np.float16), meta
    except AudioError as exc:
        return task.index, None, {"error": str(exc)}


def _workers(fp: FeaturesParams) -> int:
    return fp.workers or os.cpu_count() or 1


def _init_worker() -> None:
    """One BLAS thread per worker process: the pool already uses every core."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class _ShardWriter:
    """Streams one split's features into fixed-size .npy shards, atomically each."""

    def __init__(self, out: Path, split: str, shard_size: int, n_mels: int) -> None:
        self.out, self.split, self.shard_size = out, split, shard_size
        self.buffer: list[np.ndarray] = []
        self.shard = 0
        self.sum = np.zeros(n_mels, dtype=np.float64)
        self.sumsq = np.zeros(n_mels, dtype=np.float64)
        self.frames = 0

    def add(self, feats: np.ndarray) -> tuple[int, int]:
        f64 = feats.astype(np.float64)
        self.sum += f64.sum(axis=1)
        self.sumsq += (f64 * f64).sum(axis=1)
        self.frames += feats.shape[1]
        self.buffer.append(feats)
        where = (self.shard, len(self.buffer) - 1)
        if len(self.buffer) >= self.shard_size:
            self.flush()
        return where

    def flush(self) -> None:
        if not self.buffer:
            return
        path = self.out / f"{self.split}-{self.shard:05d}.npy"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, np.stack(self.buffer))
        tmp.replace(path)
        self.buffer = []
        self.shard += 1


def _progress(split: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    end = "\n" if done == total else ""
    print(f"\r{split:>10}: {done}/{total} clips, {rate:.0f} clips/s", end=end, file=sys.stderr)


def build(params: Params, clips: list[Clip], out: Path, reports: Path) -> dict[str, Any]:
    """Decode, featurise and shard every clip; write manifests, stats and reports.

    Writes into a temporary folder next to `out` and renames it at the end, so a
    crash or Ctrl-C never leaves a half-built dataset where DVC would cache it.
    """
    fp = params.features
    root = params.data.path or "."
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bad: list[dict[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    first_seen: dict[str, str] = {}
    stats: dict[str, Any] = {}
    context = multiprocessing.get_context("fork")
    with context.Pool(_workers(fp), initializer=_init_worker) as pool:
        for split in SPLITS:
            split_clips = [c for c in clips if c.split == split]
            writer = _ShardWriter(tmp, split, params.data.shard_size, fp.n_mels)
            rows: list[dict[str, Any]] = []
            tasks = (_Task(i, c, root, fp) for i, c in enumerate(split_clips))
            started = time.monotonic()
            for done, (index, feats, meta) in enumerate(
                pool.imap(_extract, tasks, chunksize=8), start=1
            ):
                clip = split_clips[index]
                if feats is None:
                    if params.data.on_bad_file == "fail":
                        raise UserError(meta["error"])
                    bad.append({"path": clip.path, "split": split, "reason": meta["error"]})
                    continue
                other = first_seen.setdefault(meta["sha256"], f"{split}:{clip.path}")
                if not other.startswith(f"{split}:"):
                    raise UserError(
                        f"{clip.path} ({split}) has the same audio as {other.split(':', 1)[1]} "
                        f"({other.split(':', 1)[0]}): the same clip in two splits leaks the test"
                    )
                shard, row = writer.add(feats)
                rows.append(
                    {
                        "clip_id": clip.clip_id,
                        "path": clip.path,
                        "split": split,
                        "label": clip.label,
                        "target": clip.target,
                        "speaker": clip.speaker,
                        "attack": clip.attack,
                        **meta,
                        "shard": shard,
                        "row": row,
                    }
                )
                if done % 50 == 0 or done == len(split_clips):
                    _progress(split, done, len(split_clips), started)
            writer.flush()
            per_label = Counter(r["label"] for r in rows)
            counts[split] = {label: per_label.get(label, 0) for label in LABELS}
            if not rows:
                raise UserError(f"split {split!r} is empty after decoding: no usable clips")
            missing = [label for label in LABELS if per_label.get(label, 0) == 0]
            if missing:
                raise UserError(
                    f"split {split!r} has no {missing[0]} clips: EER needs both classes"
                )
            _write_manifest(tmp / f"manifest_{split}.csv", rows)
            if split == "train":
                mean = writer.sum / writer.frames
                std = np.sqrt(np.maximum(writer.sumsq / writer.frames - mean**2, 1e-8))
                stats = {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}
    meta = {
        "format_version": 1,
        "source": params.data.source,
        "features": params.section("features"),
        "input_shape": [fp.n_mels, fp.n_frames, 1],
        "counts": counts,
        "normalisation": stats,
    }
    (tmp / "stats.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return _write_reports(reports, counts, bad, clips, fp)


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_reports(
    reports: Path,
    counts: dict[str, dict[str, int]],
    bad: list[dict[str, str]],
    clips: list[Clip],
    fp: FeaturesParams,
) -> dict[str, Any]:
    from deepfake_audio.tracking import write_json

    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    tmp = reports / ".bad_files.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("path", "split", "reason"))
        writer.writeheader()
        writer.writerows(bad)
    tmp.replace(reports / "bad_files.csv")
    kept = sum(sum(c.values()) for c in counts.values())
    summary = {
        "clips": kept,
        "rejected": len(bad),
        "duration_s_in_features": round(kept * fp.clip_seconds, 1),
        "per_split": counts,
    }
    write_json(reports / "dataset.json", summary)
    if bad:
        print(
            f"skipped {len(bad)} of {len(clips)} files (data.on_bad_file: skip); "
            f"reasons in {reports / 'bad_files.csv'}",
            file=sys.stderr,
        )
    return summary


# --- reading -----------------------------------------------------------------


class SpectrogramDataset:
    """Read access to a built dataset: manifests, shapes, stats and tf.data pipelines."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        stats_path = self.root / "stats.json"
        if not stats_path.exists():
            raise UserError(
                f"{self.root}: not a spectrogram dataset (no stats.json); run `dvc repro dataset`"
            )
        self.meta: dict[str, Any] = json.loads(stats_path.read_text())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["input_shape"])  # type: ignore[return-value]

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.meta["normalisation"]["mean"], dtype=np.float32)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.meta["normalisation"]["std"], dtype=np.float32)

    def manifest(self, split: str):  # -> pandas.DataFrame
        import pandas as pd

        return pd.read_csv(self.root / f"manifest_{split}.csv", keep_default_na=False)

    def labels(self, split: str) -> np.ndarray:
        return self.manifest(split)["target"].to_numpy(dtype=np.float32)

    def shards(self, split: str) -> list[Path]:
        return sorted(self.root.glob(f"{split}-*.npy"))

    def iter_shards(
        self, split: str, order: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, targets) one shard at a time; memory is one shard, not the split."""
        manifest = self.manifest(split).sort_values(["shard", "row"])
        targets = {
            int(shard): rows.to_numpy(dtype=np.float32)
            for shard, rows in manifest.groupby("shard")["target"]
        }
        shards = self.shards(split)
        for i in order if order is not None else range(len(shards)):
            x = np.load(shards[i])
            y = targets.get(int(i), np.empty(0, dtype=np.float32))
            if len(y) != len(x):
                raise UserError(f"{shards[i]}: {len(x)} clips but the manifest lists {len(y)}")
            yield x, y

    def tf_dataset(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0):
        """A streaming tf.data pipeline: shard files -> examples -> shuffled batches."""
        import tensorflow as tf

        n_mels, n_frames, _ = self.input_shape
        epoch = {"n": 0}

        def shards() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            order = None
            if shuffle:
                rng = np.random.default_rng([seed, epoch["n"]])
                order = rng.permutation(len(self.shards(split)))
                epoch["n"] += 1
            yield from self.iter_shards(split, order)

        signature = (
            tf.TensorSpec(shape=(None, n_mels, n_frames), dtype=tf.float16),
            tf.TensorSpec(shape=(None,), dtype=tf.float32),
        )
        n_clips = len(self.manifest(split))
        ds = tf.data.Dataset.from_generator(shards, output_signature=signature).unbatch()
        # A generator has unknown length; stating it lets Keras size every epoch
        # up front instead of discovering the end by running out of data.
        ds = ds.apply(tf.data.experimental.assert_cardinality(n_clips))
        if shuffle:
            ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(
            lambda x, y: (tf.expand_dims(tf.cast(x, tf.float32), -1), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.prefetch(tf.data.AUTOTUNE)
