"""The versioned dataset (`data/spectrograms/`): its format, written by the dataset stage, read
by tune, train, evaluate and the baseline. Writer and reader live here together, so the format
has one home.

Layout, one folder that DVC versions as a whole:

    manifest_<split>.csv     one row per clip (`MANIFEST_COLUMNS`): where it came from, its
                             label, its shard row, its one-number cues (`CUE_COLUMNS`)
    <split>-<NNNNN>.npy      feature shards, shape (clips, *feature_shape): float16
                             log-mel (n_mels, frames), LFCC (3 * n_coeffs, frames) or RGB
                             images (height, width, 3); int16 waveforms (n_samples,)
    waves_train-<NNNNN>.npy  with augmentation on: the training clips' waves, int16, up to
                             features.max_seconds, row for row beside the feature shards
    stats.json               feature settings, shapes, shard dtype, mean/std of the training
                             split (per mel bin / coefficient, per colour channel, or one
                             for waveforms)

Waveforms are stored as int16 (full scale 32767), not float16. Both take 2 bytes and, at the
normalised level (-26 dBFS RMS), both round about 75 dB below the signal, but differently:
float16 keeps 11 significant bits, so each sample carries an error of up to 2**-11 (-66 dB)
of its own value, a distortion that follows the speech; int16 adds a fixed floor at -101
dBFS, the quantisation every 16-bit recording (bona fide or spoofed) already has, so it adds
nothing a model could tell the classes by. stats.json names the dtype and scale; datasets
written before it existed are float16 and read as before.

Writing: `ShardWriter` and `WaveWriter` stream clips into bounded shards (each written
atomically), `write_stats` the stats.json. Reading: `SpectrogramDataset`; TensorFlow is
imported only by `tf_dataset` and `training_dataset`, so the reader stays usable where
TensorFlow is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.config.params import AugmentParams, FeaturesParams, features_from_dict
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import replacing
from deepfake_audio.dsp.cues import CUE_NAMES

# Splits up to this size (as stored) are held in memory by `tf_dataset`: ASVspoof 2019 LA's
# training set at the default log-mel settings is ~650 MB, the demo's ~10 MB.
IN_MEMORY_BYTES = 1 << 30

# int16 wave samples: x_int = round(x * WAVE_FULL_SCALE), x in [-1, 1]. 32767, not 32768, so
# that +1.0 (loudness normalisation clips there) still fits.
WAVE_FULL_SCALE = 32767.0
WAVE_SHARD_PREFIX = "waves_train"


def encode_waves(waves: np.ndarray) -> np.ndarray:
    """float waves in [-1, 1] -> int16 as stored in the shards (values beyond are clipped)."""
    scaled = np.clip(np.asarray(waves, dtype=np.float32), -1.0, 1.0) * np.float32(WAVE_FULL_SCALE)
    return np.rint(scaled).astype(np.int16)


def decode_waves(stored: np.ndarray) -> np.ndarray:
    """int16 shard rows -> float32 waves."""
    return np.multiply(stored, np.float32(1.0 / WAVE_FULL_SCALE), dtype=np.float32)


# --- writing ---------------------------------------------------------------------------------

MANIFEST_COLUMNS = (
    "clip_id",
    "path",
    "split",
    "label",
    "target",
    "speaker",
    "attack",
    "corpus",  # its data.corpora entry's name; empty for the single corpus of data.path
    "duration_s",
    "sample_rate",
    "sha256",
    "shard",
    "row",
    "copy_of",  # codec copies (training only): the clip_id of the source, else empty
    "augmentation",  # codec copies: codec@compression level, else empty
    "wave_samples",  # training waves stored: samples of the clip's stored wave, else empty
)

# The one-number cues of every audio clip (`dsp.cues`), for the shortcut audit: `raw_<cue>`
# of the decoded recording at its own rate, `as_fed_<cue>` of the clip as the model is fed
# it (resampled, loudness-normalised, cut to features.clip_seconds; after the validation
# codec's round trip where data.validation_codec is set). Empty for pictures. A codec copy
# carries its source's values.
CUE_VIEWS = ("raw", "as_fed")


def cue_column(view: str, cue: str) -> str:
    """The manifest column of one cue in one view (`raw_rms`, `as_fed_dc_offset`)."""
    return f"{view}_{cue}"


CUE_COLUMNS = tuple(cue_column(view, cue) for view in CUE_VIEWS for cue in CUE_NAMES)
MANIFEST_COLUMNS = (*MANIFEST_COLUMNS, *CUE_COLUMNS)


def cue_table(manifest: Any) -> dict[str, dict[str, np.ndarray]]:
    """{view: {cue: values}} from a manifest (a DataFrame, or a dict of columns); views whose
    columns are missing or empty (pictures, datasets written before the audit) are left out."""
    views: dict[str, dict[str, np.ndarray]] = {}
    for view in CUE_VIEWS:
        columns = [cue_column(view, cue) for cue in CUE_NAMES]
        if not all(c in manifest for c in columns):
            continue
        try:
            views[view] = {
                cue: np.asarray(manifest[c], dtype=np.float64)
                for cue, c in zip(CUE_NAMES, columns, strict=True)
            }
        except (TypeError, ValueError):  # empty cells: no cues in this view
            continue
    return views


def norm_axes(feature_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes a clip's features are averaged over for the normalisation statistics.

    Spectral features (rows, frames) get one statistic per row (mel bin or
    cepstral coefficient), averaged over time; RGB images (height, width, 3)
    get one per colour channel; a waveform (samples,) one for all its samples.
    """
    return {3: (0, 1), 2: (1,), 1: (0,)}[len(feature_shape)]


Moments = tuple[np.ndarray, np.ndarray]


def moments(feats: np.ndarray) -> Moments:
    """Sum and sum of squares of a clip's features over `norm_axes`, for the normalisation
    statistics (accumulated in float64 across clips by `ShardWriter`).

    Computed in the worker, not in the process that writes the shards: there it cost
    about a fifth of a millisecond a clip on the one process every worker waits for. Taken
    from the float32 features rather than their float16 copy (the difference, ~1e-4
    relative, is far below what normalisation cares about; the conversion is not free).
    """
    values = np.asarray(feats, dtype=np.float64)
    axes = norm_axes(values.shape)
    return np.atleast_1d(values.sum(axis=axes)), np.atleast_1d(np.square(values).sum(axis=axes))


def stored_features(feats: np.ndarray, fp: FeaturesParams) -> np.ndarray:
    """Features as the shards hold them: the kind's shard dtype (int16 waveforms, at
    `WAVE_FULL_SCALE`; float16 everything else)."""
    if fp.feature_kind.shard_dtype == "int16":
        return encode_waves(feats)
    return feats.astype(fp.feature_kind.shard_dtype)


class Shards:
    """Streams arrays into fixed-size `<prefix>-NNNNN.npy` shards, each written atomically."""

    def __init__(self, out: Path, prefix: str, shard_size: int) -> None:
        self.out, self.prefix, self.shard_size = out, prefix, shard_size
        self.buffer: list[np.ndarray] = []
        self.shard = 0

    def add(self, array: np.ndarray) -> tuple[int, int]:
        """Buffer one clip's array; returns its (shard, row)."""
        self.buffer.append(array)
        where = (self.shard, len(self.buffer) - 1)
        if len(self.buffer) >= self.shard_size:
            self.flush()
        return where

    def flush(self) -> None:
        if not self.buffer:
            return
        _save(self.out / f"{self.prefix}-{self.shard:05d}.npy", self.buffer)
        self.buffer = []
        self.shard += 1


class ShardWriter(Shards):
    """One split's features, with the normalisation moments accumulated on the way."""

    def __init__(self, out: Path, split: str, shard_size: int, feature_shape: tuple[int, ...]):
        super().__init__(out, split, shard_size)
        self.axes = norm_axes(feature_shape)
        size = {3: feature_shape[-1], 2: feature_shape[0], 1: 1}[len(feature_shape)]
        self.sum = np.zeros(size, dtype=np.float64)
        self.sumsq = np.zeros(size, dtype=np.float64)
        self.count = 0

    def add_clip(self, feats: np.ndarray, clip_moments: Moments) -> tuple[int, int]:
        """Buffer one clip's features; `clip_moments` is `moments(feats)`, from the worker."""
        self.sum += clip_moments[0]
        self.sumsq += clip_moments[1]
        self.count += int(np.prod([feats.shape[a] for a in self.axes]))
        return self.add(feats)

    def statistics(self) -> dict[str, Any]:
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sumsq / max(self.count, 1) - mean**2, 1e-8))
        return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}


class WaveWriter(Shards):
    """The training waves, int16, row for row beside the feature shards.

    A shard is as wide as its longest wave (at most max_samples), shorter ones zero-padded
    after their `wave_samples`: a corpus of short clips does not store seconds of padding.
    """

    def __init__(self, out: Path, shard_size: int) -> None:
        super().__init__(out, WAVE_SHARD_PREFIX, shard_size)

    def flush(self) -> None:
        width = max((w.size for w in self.buffer), default=0)
        self.buffer = [np.pad(w, (0, width - w.size)) for w in self.buffer]
        super().flush()


def _save(path: Path, rows: list[np.ndarray]) -> None:
    """One shard, written atomically."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.stack(rows))


# stats.json's layout; readers accept every earlier version.
FORMAT_VERSION = 3


def write_stats(
    root: Path,
    fp: FeaturesParams,
    features: dict[str, Any],
    *,
    source: str,
    counts: dict[str, dict[str, int]],
    codec_copies: int,
    validation_codec: str | None,
    statistics: dict[str, Any],
    augment: AugmentParams,
    keeps_waves: bool,
) -> dict[str, Any]:
    """Write `root`/stats.json, what a reader learns the dataset from; returns it.

    `features` is the features section as plain data (stored as given, and read back with
    `config.params.features_from_dict`), `statistics` the training split's mean and std.
    """
    kind = fp.feature_kind
    int16 = kind.shard_dtype == "int16"
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "features": features,
        "feature_shape": list(fp.feature_shape),
        "input_shape": list(fp.input_shape),
        "shard_dtype": kind.shard_dtype,
        "shard_scale": 1.0 / WAVE_FULL_SCALE if int16 else 1.0,
        "counts": counts,
        "codec_copies": codec_copies,
        # data.validation_codec: every validation clip went once through this codec (or null).
        "validation_codec": validation_codec,
        # The model-input axis of the statistics: colour channel, wave channel or spectral row.
        "normalisation": {**statistics, "axis": kind.norm_axis},
        # What the dataset stage did for training-time augmentation (tune and train do the rest).
        "augment": {
            "enabled": keeps_waves,
            "codecs": list(augment.codecs) if keeps_waves else [],
            "codec_copies": augment.codec_copies if keeps_waves else 0,
        },
    }
    if keeps_waves:
        meta["train_waves"] = {
            "samples": fp.max_samples,
            "dtype": "int16",
            "full_scale": WAVE_FULL_SCALE,
        }
    (Path(root) / "stats.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --- reading ---------------------------------------------------------------------------------


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
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input_shape"])

    @property
    def features(self) -> FeaturesParams:
        """The feature settings the dataset was built with (not today's params.yaml)."""
        return features_from_dict(self.meta["features"])

    @property
    def shard_dtype(self) -> np.dtype:
        """How feature shards are stored: float16, or int16 for waveforms."""
        return np.dtype(self.meta.get("shard_dtype", "float16"))

    @property
    def shard_scale(self) -> float:
        """What a stored value is multiplied by to give the float32 feature."""
        return float(self.meta.get("shard_scale", 1.0))

    def as_features(self, stored: np.ndarray) -> np.ndarray:
        """Stored shard rows as float32 features."""
        if self.shard_dtype == np.int16:
            return np.multiply(stored, np.float32(self.shard_scale), dtype=np.float32)
        return np.asarray(stored, dtype=np.float32)

    @property
    def has_train_waves(self) -> bool:
        """Whether the training clips' waves are stored (the augmented training input)."""
        return bool(self.meta.get("train_waves"))

    def wave_shards(self) -> list[Path]:
        return sorted(self.root.glob(f"{WAVE_SHARD_PREFIX}-*.npy"))

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

    def has_split(self, split: str) -> bool:
        """Whether the dataset holds `split` (held-out corpora's splits exist only with them)."""
        return (self.root / f"manifest_{split}.csv").is_file()

    def labels(self, split: str) -> np.ndarray:
        return self.manifest(split)["target"].to_numpy(dtype=np.float32)

    def shards(self, split: str) -> list[Path]:
        return sorted(self.root.glob(f"{split}-*.npy"))

    def iter_shards(
        self, split: str, order: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features as stored, targets) one shard at a time; memory is one shard, not the split.

        Features come in the stored dtype (float16, or int16 for waveforms: `as_features`
        converts them).
        """
        manifest = self.manifest(split).sort_values(["shard", "row"])
        targets = {
            int(shard): rows.to_numpy(dtype=np.float32)
            for shard, rows in manifest.groupby("shard")["target"]
        }
        shards = self.shards(split)
        for i in order if order is not None else range(len(shards)):
            x = np.load(shards[i], allow_pickle=False)  # a shard is plain numbers, never objects
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
        stored = self.shard_dtype
        clip_bytes = stored.itemsize * int(np.prod(feature_shape))
        scale = self.shard_scale

        def reshape(x, y):
            x = tf.cast(x, tf.float32)
            if scale != 1.0:
                x = x * scale
            return tf.reshape(x, (-1, *input_shape)), y

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
            tf.TensorSpec(shape=(None, *feature_shape), dtype=tf.as_dtype(stored)),
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

    def training_dataset(self, batch_size: int, seed: int, augment: Any = None):
        """The training split as the fit sees it: augmented when `augment` applies, else plain.

        Without augmentation this is `tf_dataset("train", shuffle=True)`, the in-memory
        gather, as fast as before. With it, each batch is made in numpy by
        `dataset.train_batches.TrainingBatches` from the stored training waves (each source clip
        or one of its codec copies, a random window, RawBoost, noise, level matching, gain,
        then `clip_features` and SpecAugment) and handed to TensorFlow through
        `tf.numpy_function`:

            indices  Dataset.range(n sources).shuffle(seed, reshuffled every epoch).batch(...)
            seeds    Dataset.random(seed, new values every epoch), one per batch
            batch    numpy_function(TrainingBatches.batch, [indices, batch seed])

        Both random streams are tf.data's own seeded ones, so a seed fixes every epoch's
        order and augmentation however Keras creates and discards its per-epoch iterators
        (a Python counter of epochs would not: Keras 3 opens one iterator more than it
        uses). Only the training split comes through here: validation and test batches
        are `tf_dataset`'s, never augmented.
        """
        if augment is None or not augment.applies_to(self.features.feature_kind):
            return self.tf_dataset("train", batch_size, shuffle=True, seed=seed)
        import tensorflow as tf

        from deepfake_audio.dataset.train_batches import TrainingBatches

        source = TrainingBatches(self, augment, seed)
        n = len(source)
        input_shape = self.input_shape
        indices = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(indices.batch(batch_size), seeds)

        def make(index, batch_seed):
            x, y = tf.numpy_function(
                source.batch, [index, batch_seed], (tf.float32, tf.float32), stateful=False
            )
            x.set_shape((None, *input_shape))
            y.set_shape((None,))
            return x, y

        # One batch at a time in Python (the GIL would serialise more), overlapped with
        # training by the prefetch.
        return ds.map(make, num_parallel_calls=1, deterministic=True).prefetch(2)
