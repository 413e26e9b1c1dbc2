"""Writing and reading the versioned spectrogram dataset (`data/spectrograms/`).

Layout, one folder that DVC versions as a whole:

    manifest_<split>.csv     one row per clip: where it came from, its label, its shard row
    <split>-<NNNNN>.npy      float16 feature shards, shape (clips, *feature_shape):
                             log-mel (n_mels, frames), LFCC (3 * n_coeffs, frames)
                             or RGB images (height, width, 3)
    stats.json               feature settings, shapes, mean/std of the training split
                             (per mel bin / coefficient, or per colour channel)

Features are computed once here, in worker processes, and streamed to shards
of bounded size, so memory stays flat however many clips there are. Training
reads the shards back through `tf.data` (see `tf_dataset`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
class _Job:
    """What every worker of one build needs, inherited through fork rather than pickled with
    each clip: tasks are then bare indices into `clips`."""

    clips: list[Clip]
    root: str
    features: FeaturesParams


# Splits up to this size (float16, as stored) are held in memory by `tf_dataset`: ASVspoof
# 2019 LA's training set at the default log-mel settings is ~650 MB, the demo's ~10 MB.
IN_MEMORY_BYTES = 1 << 30

# Set by `extraction_pool` for the lifetime of its pool (the workers are forked from it).
_JOB: _Job | None = None


class BadFile(Exception):
    """A clip the stage cannot use; its message is the one-line reason."""


def clip_features(wave: np.ndarray, fp: FeaturesParams) -> np.ndarray:
    """The one audio feature transform, shared by the dataset stage and serving."""
    from deepfake_audio import features

    if fp.kind == "lfcc":
        return features.lfcc(
            wave,
            sample_rate=fp.sample_rate,
            n_fft=fp.n_fft,
            win_length=fp.lfcc.win_length,
            hop_length=fp.lfcc.hop_length,
            n_filters=fp.lfcc.n_filters,
            n_coeffs=fp.lfcc.n_coeffs,
            fmin=fp.fmin,
            fmax=fp.fmax,
        )
    return features.log_mel_spectrogram(
        wave,
        sample_rate=fp.sample_rate,
        n_fft=fp.n_fft,
        win_length=fp.win_length,
        hop_length=fp.hop_length,
        n_mels=fp.n_mels,
        fmin=fp.fmin,
        fmax=fp.fmax,
    )


def file_features(path: Path, fp: FeaturesParams) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of one file plus its manifest metadata; `BadFile` if it is unusable.

    The dataset stage and `predict` both come through here, so a file is decoded,
    cut and transformed the same way in training and at serving time.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadFile(f"{path}: cannot read ({exc.strerror})") from None
    sha = hashlib.sha256(raw).hexdigest()
    if fp.kind == "image":
        from deepfake_audio.images import ImageError, load_image

        try:
            image, _ = load_image(path, fp.image_size)
        except ImageError as exc:
            raise BadFile(str(exc)) from None
        return image, {"duration_s": "", "sample_rate": "", "sha256": sha}

    from deepfake_audio.audio import AudioError, condition, decode, fix_length

    n_samples = int(round(fp.clip_seconds * fp.sample_rate))
    try:
        # Decode the bytes already read for the sha256: one read of each file, not two.
        decoded, rate = decode(raw, name=str(path))
        duration = decoded.size / rate
        wave = condition(decoded, rate, fp.sample_rate, str(path))
        feats = clip_features(fix_length(wave, n_samples, crop=fp.crop, pad=fp.pad), fp)
    except (AudioError, ValueError) as exc:
        raise BadFile(str(exc)) from None
    return feats, {"duration_s": round(duration, 4), "sample_rate": rate, "sha256": sha}


def _demo_features(clip: Clip, fp: FeaturesParams) -> tuple[np.ndarray, dict[str, Any]]:
    from deepfake_audio.sources.demo import DemoClip, generate_clip

    demo = DemoClip(
        clip_id=clip.clip_id,
        split=clip.split,
        label=clip.label,
        speaker=clip.speaker,
        attack=clip.attack,
        seed=clip.demo_seed,  # type: ignore[arg-type]
    )
    wave = generate_clip(demo, sample_rate=fp.sample_rate, clip_seconds=fp.clip_seconds)
    digest = hashlib.sha256(np.ascontiguousarray(wave).tobytes()).hexdigest()
    meta = {"duration_s": fp.clip_seconds, "sample_rate": fp.sample_rate, "sha256": digest}
    return clip_features(wave, fp), meta


_Moments = tuple[np.ndarray, np.ndarray]


def _moments(feats: np.ndarray) -> _Moments:
    """Sum and sum of squares of a clip's features over `norm_axes`, for the normalisation
    statistics (accumulated in float64 across clips by `_ShardWriter`).

    Computed in the worker, not in the process that writes the shards: there it cost
    about a fifth of a millisecond a clip on the one process every worker waits for. Taken
    from the float32 features rather than their float16 copy (the difference, ~1e-4
    relative, is far below what normalisation cares about; the conversion is not free).
    """
    values = np.asarray(feats, dtype=np.float64)
    axes = norm_axes(values.shape)
    return values.sum(axis=axes), np.square(values).sum(axis=axes)


def _extract(index: int) -> tuple[int, np.ndarray | None, dict[str, Any], _Moments | None]:
    """Runs in a worker process: clip `index` of the build in, its float16 features and their
    moments (or its error) out."""
    assert _JOB is not None, "_extract runs only in an extraction_pool worker"
    clip, fp, root = _JOB.clips[index], _JOB.features, _JOB.root
    try:
        if clip.demo_seed is not None:
            feats, meta = _demo_features(clip, fp)
        else:
            feats, meta = file_features(Path(root) / clip.path, fp)
        if not np.all(np.isfinite(feats)):
            raise BadFile(f"{clip.path}: features are not finite")
        return index, feats.astype(np.float16), meta, _moments(feats)
    except BadFile as exc:
        # Name the file relative to data.path, as the manifests and bad_files.csv do.
        message = str(exc).replace(str(Path(root) / clip.path), clip.path)
        return index, None, {"error": message}, None


@contextlib.contextmanager
def extraction_pool(
    clips: list[Clip], root: str, fp: FeaturesParams
) -> Iterator[Callable[[], Iterator[tuple[int, Any, dict[str, Any], Any]]]]:
    """A worker pool over `clips`; yields a function that streams `_extract` of every clip,
    in order, each time it is called (the benchmark calls it repeatedly on a warm pool).

    Everything a worker needs is in place before the fork, so a task is one integer and each
    message back carries 16 clips: per-clip pickling in the parent was what kept two workers
    from going twice as fast as one.

    A `ProcessPoolExecutor`, not a `multiprocessing.Pool`: leaving a Pool early (the first
    bad file under `on_bad_file: fail`, Ctrl-C) calls `Pool.terminate`, which can kill a
    worker while it holds the result pipe's lock and then wait for that lock forever; CI
    hung there. The executor instead cancels the chunks no worker has started, lets the
    running ones finish, and reports a worker that died (the OOM killer) as an error where
    a Pool would wait for its results forever.
    """
    global _JOB
    # Import what the workers run before forking them, so each worker inherits it instead of
    # importing it again on its first clip (a fixed cost that dominated small datasets).
    from deepfake_audio import audio, features  # noqa: F401

    if fp.kind == "image":
        from deepfake_audio import images  # noqa: F401
    workers = _workers(fp)
    # Large chunks save parent CPU; small datasets still get every worker busy.
    chunk = max(1, min(16, len(clips) // (4 * workers)))
    _JOB = _Job(clips, str(root), fp)
    # With fork, the executor starts every worker on the first map, before its own thread.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker
    )
    try:
        yield lambda: _worker_results(pool.map(_extract, range(len(clips)), chunksize=chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _JOB = None


def _worker_results(results: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from results
    except BrokenProcessPool:
        raise UserError(
            "dataset: a feature worker process died (killed, perhaps for lack of memory); "
            "lower features.workers or free memory, then rerun"
        ) from None


def _workers(fp: FeaturesParams) -> int:
    return fp.workers or os.cpu_count() or 1


def _init_worker() -> None:
    """One BLAS thread per worker process: the pool already uses every core."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _keep_freed_memory()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    Each clip allocates and frees a few arrays of ~0.4 MB. By default glibc maps such blocks
    fresh and unmaps (or trims) them on free, so every clip paid for page faults on memory it
    had just released: about a third of the feature time. Keeping up to 64 MB per worker
    removes that. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    mallopt(_M_MMAP_THRESHOLD, 8 << 20)


def norm_axes(feature_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes a clip's features are averaged over for the normalisation statistics.

    Spectral features (rows, frames) get one statistic per row (mel bin or
    cepstral coefficient), averaged over time; RGB images (height, width, 3)
    get one per colour channel.
    """
    return (0, 1) if len(feature_shape) == 3 else (1,)


class _ShardWriter:
    """Streams one split's features into fixed-size .npy shards, atomically each."""

    def __init__(self, out: Path, split: str, shard_size: int, feature_shape: tuple[int, ...]):
        self.out, self.split, self.shard_size = out, split, shard_size
        self.axes = norm_axes(feature_shape)
        size = feature_shape[-1] if len(feature_shape) == 3 else feature_shape[0]
        self.buffer: list[np.ndarray] = []
        self.shard = 0
        self.sum = np.zeros(size, dtype=np.float64)
        self.sumsq = np.zeros(size, dtype=np.float64)
        self.count = 0

    def add(self, feats: np.ndarray, moments: _Moments) -> tuple[int, int]:
        """Buffer one clip's features; `moments` is `_moments(feats)`, from the worker."""
        self.sum += moments[0]
        self.sumsq += moments[1]
        self.count += int(np.prod([feats.shape[a] for a in self.axes]))
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

    def statistics(self) -> dict[str, Any]:
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sumsq / max(self.count, 1) - mean**2, 1e-8))
        return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}


class _Progress:
    """A progress bar with clips/s on stderr; plain lines every 10 % when not a terminal."""

    def __init__(self, split: str, total: int) -> None:
        self.split, self.total = split, total
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.step = max(total // 10, 1)

    def update(self, done: int) -> None:
        now = time.monotonic()
        last = done == self.total
        if self.tty and not last and now - self.shown < 0.2:
            return
        if not self.tty and not last and done % self.step:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(24 * done / max(self.total, 1))
        bar = "#" * filled + "." * (24 - filled)
        line = (
            f"{self.split:>10} [{bar}] {done}/{self.total} clips, {rate:.0f} clips/s, "
            f"eta {eta:.0f} s"
        )
        if self.tty:
            print("\r" + line, end="\n" if last else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def _write_splits(
    params: Params, clips: list[Clip], tmp: Path
) -> tuple[dict[str, dict[str, int]], dict[str, Any], list[dict[str, str]], float]:
    """Shards and manifests of every split into `tmp`: (counts, train stats, bad files, seconds)."""
    fp = params.features
    root = params.data.path or "."
    bad: list[dict[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    stats: dict[str, Any] = {}
    seconds = 0.0  # duration of the source audio kept, before crop/pad
    by_split = {split: [c for c in clips if c.split == split] for split in SPLITS}
    ordered = [c for split in SPLITS for c in by_split[split]]
    # sha256 (raw 32 bytes) -> index in `ordered`: finds the same audio in two splits.
    first_seen: dict[bytes, int] = {}
    with extraction_pool(ordered, root, fp) as stream:
        # One ordered stream over all splits, so the workers never idle at a split boundary;
        # each split below takes its own clips' results off it, in order.
        results = stream()
        for split in SPLITS:
            split_clips = by_split[split]
            writer = _ShardWriter(tmp, split, params.data.shard_size, fp.feature_shape)
            per_label: Counter[str] = Counter()
            progress = _Progress(split, len(split_clips))
            with open(tmp / f"manifest_{split}.csv", "w", newline="") as handle:
                manifest = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
                manifest.writeheader()
                for done in range(1, len(split_clips) + 1):
                    index, feats, meta, moments = next(results)
                    progress.update(done)
                    clip = ordered[index]
                    if feats is None:
                        if params.data.on_bad_file == "fail":
                            raise UserError(f"{meta['error']} (data.on_bad_file: fail)")
                        bad.append({"path": clip.path, "split": split, "reason": meta["error"]})
                        continue
                    key = bytes.fromhex(meta["sha256"])
                    other = ordered[first_seen.setdefault(key, index)]
                    if other.split != split:
                        raise UserError(
                            f"{clip.path} ({split}) has the same audio as {other.path} "
                            f"({other.split}): the same clip in two splits leaks the test"
                        )
                    shard, row = writer.add(feats, moments)
                    per_label[clip.label] += 1
                    seconds += float(meta["duration_s"] or 0.0)
                    manifest.writerow(
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
            writer.flush()
            counts[split] = {label: per_label.get(label, 0) for label in LABELS}
            if not sum(per_label.values()):
                raise UserError(f"split {split!r} is empty after decoding: no usable clips")
            missing = [label for label in LABELS if per_label.get(label, 0) == 0]
            if missing:
                raise UserError(
                    f"split {split!r} has no {missing[0]} clips: EER needs both classes"
                )
            if split == "train":
                stats = writer.statistics()
    return counts, stats, bad, seconds


def build(params: Params, clips: list[Clip], out: Path, reports: Path) -> dict[str, Any]:
    """Decode, featurise and shard every clip; write manifests, stats and reports.

    Streams: features go to bounded shards and manifest rows straight to disk,
    so memory does not grow with the corpus (the clip list itself is a few
    hundred bytes a clip). Writes into a temporary folder next to `out` and
    renames it at the end, so a crash or Ctrl-C never leaves a half-built
    dataset where DVC would cache it.
    """
    fp = params.features
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts, stats, bad, seconds = _write_splits(params, clips, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-built dataset left behind
        raise
    meta = {
        "format_version": 2,
        "source": params.data.source,
        "features": params.section("features"),
        "feature_shape": list(fp.feature_shape),
        "input_shape": list(fp.input_shape),
        "counts": counts,
        "normalisation": {**stats, "axis": 3 if fp.kind == "image" else 1},
    }
    (tmp / "stats.json").write_text(json.dumps(meta, indent=2) + "\n")
    # Renames only, so an interruption leaves either the old dataset or the new one whole
    # (at worst beside `<out>.old`), never a half-deleted folder.
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)
    return _write_reports(reports, counts, bad, clips, fp, seconds)


def _write_reports(
    reports: Path,
    counts: dict[str, dict[str, int]],
    bad: list[dict[str, str]],
    clips: list[Clip],
    fp: FeaturesParams,
    seconds: float,
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
    summary: dict[str, Any] = {"clips": kept, "rejected": len(bad)}
    if fp.kind != "image":
        summary["duration_s"] = round(seconds, 1)
        summary["duration_s_in_features"] = round(kept * fp.clip_seconds, 1)
    summary["per_split"] = counts
    write_json(reports / "dataset.json", summary)
    if bad:
        reasons = Counter(_reason_kind(row["reason"]) for row in bad)
        print(
            f"skipped {len(bad)} of {len(clips)} files (data.on_bad_file: skip): "
            + ", ".join(f"{n} {why}" for why, n in reasons.most_common())
            + f"; each listed in {reports / 'bad_files.csv'}",
            file=sys.stderr,
        )
    return summary


def _reason_kind(reason: str) -> str:
    """The reason without the file name, for the one-line summary ('too short', ...)."""
    text = reason.split(": ", 1)[-1]
    return text.split(" (", 1)[0]


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
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.meta.get("feature_shape", self.meta["input_shape"][:2]))

    @property
    def norm_axis(self) -> int:
        """The model-input axis the normalisation statistics run along."""
        return int(self.meta["normalisation"].get("axis", 1))

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
            x = np.load(shards[i], allow_pickle=False)  # a shard is plain float16, never objects
            y = targets.get(int(i), np.empty(0, dtype=np.float32))
            if len(y) != len(x):
                raise UserError(f"{shards[i]}: {len(x)} clips but the manifest lists {len(y)}")
            yield x, y

    def tf_dataset(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        in_memory_bytes: int = IN_MEMORY_BYTES,
    ):
        """A tf.data pipeline of (float32 features, target) batches, reshuffled every epoch.

        A split of at most `in_memory_bytes` (float16, as stored) is read once and kept in
        memory; every epoch is then a fresh permutation of the whole split, gathered a batch
        at a time. That removes the per-epoch re-read and shuffle-buffer fill that made the
        first batch of each epoch wait for the whole split (most of an epoch on small
        datasets). A larger split streams shard by shard with a bounded shuffle buffer, so
        memory stays flat. Without `shuffle` both yield the clips in shard, row order; with
        it, the same seed gives the same sequence of epochs.
        """
        import tensorflow as tf

        feature_shape, input_shape = self.feature_shape, self.input_shape
        n_clips = len(self.manifest(split))
        clip_bytes = 2 * int(np.prod(feature_shape))

        def reshape(x, y):
            return tf.reshape(tf.cast(x, tf.float32), (-1, *input_shape)), y

        if n_clips * clip_bytes <= in_memory_bytes:
            parts = list(self.iter_shards(split))
            x = tf.constant(np.concatenate([p[0] for p in parts]))
            y = tf.constant(np.concatenate([p[1] for p in parts]))
            # Only the indices go through tf.data; each batch is one gather, in TensorFlow,
            # with no Python generator (whose start-up cost every epoch's iterator paid).
            ds = tf.data.Dataset.range(n_clips)
            if shuffle:
                ds = ds.shuffle(n_clips, seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size).map(lambda i: reshape(tf.gather(x, i), tf.gather(y, i)))
            return ds.prefetch(tf.data.AUTOTUNE)

        epoch = {"n": 0}

        def shards() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            order = None
            if shuffle:
                rng = np.random.default_rng([seed, epoch["n"]])
                order = rng.permutation(len(self.shards(split)))
                epoch["n"] += 1
            yield from self.iter_shards(split, order)

        signature = (
            tf.TensorSpec(shape=(None, *feature_shape), dtype=tf.float16),
            tf.TensorSpec(shape=(None,), dtype=tf.float32),
        )
        ds = tf.data.Dataset.from_generator(shards, output_signature=signature).unbatch()
        # A generator has unknown length; stating it lets Keras size every epoch
        # up front instead of discovering the end by running out of data.
        ds = ds.apply(tf.data.experimental.assert_cardinality(n_clips))
        if shuffle:
            # Up to 4096 clips, but no more than ~256 MB of them (224x224 RGB is 300 kB).
            buffer = int(min(4096, max(256, 256 * 2**20 // clip_bytes)))
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(reshape, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
