"""Reading the versioned spectrogram dataset (`data/spectrograms/`) that the dataset stage wrote.

Layout, one folder that DVC versions as a whole:

    manifest_<split>.csv     one row per clip: where it came from, its label, its shard row
    <split>-<NNNNN>.npy      float16 feature shards, shape (clips, *feature_shape)
    stats.json               feature settings, shapes, mean/std of the training split

Tune, train, evaluate and the baseline read it through `SpectrogramDataset`; TensorFlow is
imported only by `tf_dataset`, so the reader stays usable where TensorFlow is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.core.errors import UserError

# Splits up to this size (float16, as stored) are held in memory by `tf_dataset`: ASVspoof
# 2019 LA's training set at the default log-mel settings is ~650 MB, the demo's ~10 MB.
IN_MEMORY_BYTES = 1 << 30


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
