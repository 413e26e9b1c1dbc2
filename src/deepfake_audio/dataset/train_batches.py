"""Augmented training batches in numpy: stored training waves in, model inputs out.

Why waves and not the stored features: the shortcuts worth breaking live in the waveform
(where speech sits in a clip, its level, its noise floor, its channel), and a log-mel
spectrogram cannot be cropped at a random sample, noised at an SNR or passed through a
channel after the fact. So the dataset stage keeps the training clips' waves (int16, up to
``features.max_seconds``) and every training batch is built here, per clip:

0. the clip itself or one of its codec copies (made by the dataset stage), drawn anew each
   epoch;
1. a window of ``features.clip_seconds``: random (``augment.random_crop``) or the fixed
   evaluation rule (``features.crop``); a clip shorter than the window is padded as in
   evaluation (``features.pad``);
2. RawBoost with probability ``augment.rawboost_p`` (``augment.rawboost_algo``);
3. white noise with probability ``augment.noise_p`` at an SNR from ``augment.noise_snr_db``;
4. level matching: a clip changed by 2 or 3 is scaled back to the RMS its window had before.
   Serving normalises the loudness of a whole recording, whatever channel it came through,
   so a noisier or filtered copy must not come with its own level (noise at 10 dB SNR adds
   0.4 dB; RawBoost's filters move the level by several dB). Matching the window's own level,
   rather than normalising every window to one target, keeps the natural level variation of
   windows within a recording, which step 5 then randomises;
5. a random gain from ``augment.gain_db`` (then clipped to [-1, 1] like every loaded clip):
   the level of a window relative to its recording depends on how much silence the recording
   holds, which differs between bona fide and spoofed corpora;
6. `dsp.features.clip_features` (the one transform of the dataset stage and serving) and,
   for spectral kinds, SpecAugment masks (``augment.spec_*``).

Codec round trips are not made here: they are slow (an MP3 encode per clip) and need no
fresh draw every epoch, so the dataset stage stores them as extra training rows once.

Every random draw comes from the generator seeded for the batch, so a seed fixes the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from deepfake_audio.config.kinds import FeatureKind
from deepfake_audio.config.params import AugmentParams, FeaturesParams, Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp.audio import fix_length
from deepfake_audio.dsp.augment import add_noise, random_crop, random_gain, spec_augment
from deepfake_audio.dsp.features import clip_features
from deepfake_audio.dsp.rawboost import rawboost

__all__ = [
    "TrainingBatches",
    "TrainingInput",
    "augment_batch",
    "class_weights",
    "effective_augment",
    "log_params",
    "training_input",
]


def _window(
    wave: np.ndarray, fp: FeaturesParams, rng: np.random.Generator, random: bool
) -> np.ndarray:
    """One clip_seconds window of a stored wave (already cut to its real length)."""
    n = fp.n_samples
    if random and wave.size > n:
        return random_crop(wave, n, rng)
    return fix_length(wave, n, crop=fp.crop, pad=fp.pad)  # evaluation's rule


def _rms(batch: np.ndarray) -> np.ndarray:
    wide = batch.astype(np.float64)
    return np.sqrt(np.mean(wide * wide, axis=1))


def augment_batch(
    waves: list[np.ndarray],
    rng: np.random.Generator,
    augment: AugmentParams,
    fp: FeaturesParams,
) -> np.ndarray:
    """Model inputs, float32 (clips, *fp.input_shape), of augmented windows of ``waves``.

    ``waves`` are float32 1-D clips of any length (the stored training waves, each cut to the
    samples it really has); the steps and their order are the module docstring's. Pure: the
    result depends only on the arguments and the generator's state.
    """
    if not waves:
        raise UserError("augment_batch needs at least one clip")
    batch = np.stack([_window(w, fp, rng, augment.random_crop) for w in waves])
    before = _rms(batch)
    count = batch.shape[0]
    if augment.rawboost_p > 0 and augment.rawboost_algo != 0:
        chosen = rng.random(count) < augment.rawboost_p
        if chosen.any():
            batch[chosen] = rawboost(
                batch[chosen], rng, augment.rawboost_algo, sample_rate=fp.sample_rate
            )
    if augment.noise_p > 0:
        chosen = rng.random(count) < augment.noise_p
        if chosen.any():
            low, high = augment.noise_snr_db
            batch[chosen] = add_noise(batch[chosen], rng, low, high, clip=False)
    after = _rms(batch)
    changed = np.abs(after - before) > 1e-12
    if changed.any():
        scale = np.where(changed & (after > 0), before / np.where(after > 0, after, 1.0), 1.0)
        batch *= scale.astype(np.float32)[:, None]
    low_db, high_db = augment.gain_db
    if low_db != 0.0 or high_db != 0.0:
        batch = random_gain(batch, rng, low_db, high_db, clip=False)
    np.clip(batch, -1.0, 1.0, out=batch)
    feats = np.stack([clip_features(w, fp) for w in batch])
    masks = augment.spec_time_masks or augment.spec_freq_masks
    if fp.feature_kind.spectral and masks:
        feats = spec_augment(
            feats,
            rng,
            time_masks=augment.spec_time_masks,
            time_width=augment.spec_time_width,
            freq_masks=augment.spec_freq_masks,
            freq_width=augment.spec_freq_width,
        )
    return np.ascontiguousarray(feats.reshape((count, *fp.input_shape)), dtype=np.float32)


def source_targets(data: Any) -> np.ndarray:
    """Targets of the training split's source clips (codec copies left out)."""
    manifest = data.manifest("train")
    if "copy_of" in manifest:
        manifest = manifest[manifest["copy_of"].astype(str) == ""]
    return manifest["target"].to_numpy(dtype=np.float32)


def class_weights(targets: np.ndarray, mode: str) -> dict[int, float] | None:
    """Loss weight per class (0 spoof, 1 bona fide), or None for ``mode`` "none".

    ``balanced``: ``n_clips / (2 * n_class)``, so each class carries half of the loss
    whatever the ratio (ASVspoof 2019 LA trains on 1 bona fide to 9 spoofed) and a
    balanced split gets 1.0 for both.
    """
    if mode == "none":
        return None
    if mode != "balanced":
        raise UserError(f"train.class_weight: {mode!r} is not allowed (allowed: balanced, none)")
    targets = np.asarray(targets).astype(int)
    total = targets.size
    counts = {c: int(np.sum(targets == c)) for c in (0, 1)}
    if not all(counts.values()):
        raise UserError("class weights need both classes in the training split")
    return {c: round(total / (2.0 * n), 6) for c, n in counts.items()}


class TrainingBatches:
    """The training split's stored waves and targets, made into augmented batches.

    An epoch is one pass over the *source* clips. A clip with codec copies (the dataset
    stage's extra rows, ``copy_of`` naming it) is drawn as itself or as one of its copies,
    uniformly, anew every epoch: copies teach that a codec history says nothing about the
    class without making each epoch ``1 + codec_copies`` times longer or showing the same
    speech several times in one epoch.

    The wave shards are memory-mapped, so memory is the batch, not the split (ASVspoof 2019
    LA's training waves at 4 s are ~3 GB); the page cache keeps a small split in memory.
    """

    def __init__(self, data: Any, augment: AugmentParams, seed: int) -> None:
        self.features: FeaturesParams = data.features
        self.augment = augment
        self.seed = int(seed)
        if not data.has_train_waves:
            raise UserError(
                f"{data.root}: augment.enabled needs the training waves, and this dataset was "
                "built without them; rerun `dvc repro dataset`"
            )
        manifest = data.manifest("train").sort_values(["shard", "row"]).reset_index(drop=True)
        self.shard = manifest["shard"].to_numpy(dtype=np.int64)
        self.row = manifest["row"].to_numpy(dtype=np.int64)
        self.length = manifest["wave_samples"].to_numpy(dtype=np.int64)
        rows = manifest["target"].to_numpy(dtype=np.float32)
        copy_of = manifest["copy_of"].astype(str).to_numpy()
        is_source = copy_of == ""
        sources = manifest["clip_id"].astype(str).to_numpy()[is_source]
        self.source_rows = np.flatnonzero(is_source)
        position = {clip_id: i for i, clip_id in enumerate(sources)}
        variants: list[list[int]] = [[int(r)] for r in self.source_rows]
        for r in np.flatnonzero(~is_source):
            if copy_of[r] not in position:
                raise UserError(f"{data.root}: codec copy of an unknown clip {copy_of[r]!r}")
            variants[position[copy_of[r]]].append(int(r))
        self.variants = variants
        self.targets = rows[self.source_rows]
        self.shards = [np.load(p, mmap_mode="r", allow_pickle=False) for p in data.wave_shards()]
        self.scale = np.float32(1.0 / float(data.meta["train_waves"]["full_scale"]))
        if len(self.shards) <= int(self.shard.max(initial=-1)):
            raise UserError(f"{data.root}: the manifest names wave shards that are missing")

    def __len__(self) -> int:
        """Source clips: the clips of one epoch."""
        return int(self.targets.size)

    def waves(self, rows: np.ndarray) -> list[np.ndarray]:
        """Stored waves of manifest ``rows`` (in shard, row order; copies included), float32,
        each cut to its real length."""
        out = []
        for i in np.asarray(rows, dtype=np.int64):
            stored = self.shards[self.shard[i]][self.row[i], : self.length[i]]
            out.append(np.multiply(stored, self.scale, dtype=np.float32))
        return out

    def batch(self, index: np.ndarray, batch_seed: Any) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one augmented batch of source clips ``index``; the same
        ``batch_seed`` gives the same batch. Called by tf.data
        (`SpectrogramDataset.training_dataset`)."""
        from threadpoolctl import threadpool_limits

        index = np.asarray(index, dtype=np.int64)
        key = int(np.asarray(batch_seed).astype(np.int64)) & ((1 << 63) - 1)
        rng = np.random.default_rng([self.seed, key])
        rows = [self.variants[i][int(rng.integers(len(self.variants[i])))] for i in index]
        # One BLAS thread: the filterbank products are small, and OpenBLAS threads spinning
        # against TensorFlow's for the same cores made a batch 3-10x slower (measured on
        # 2 cores: 90 ms a batch of 32 with one thread, 200-1300 ms with two).
        with threadpool_limits(1):
            x = augment_batch(self.waves(np.array(rows)), rng, self.augment, self.features)
        return x, self.targets[index]


def effective_augment(augment: AugmentParams, kind: FeatureKind) -> AugmentParams:
    """``augment`` as it applies to a feature kind: off for pictures (no audio)."""
    if augment.enabled and not augment.applies_to(kind):
        return replace(augment, enabled=False)
    return augment


def log_params(augment: AugmentParams, kind: FeatureKind, weights: dict[int, float] | None) -> dict:
    """Flat, MLflow-ready names of what the training batches did: ``augment.*`` and the class
    weights (``class_weight.bonafide``, ``class_weight.spoof``; 1.0 when unweighted).

    Augmentation that is off (or does not apply to the kind) is logged as
    ``augment.enabled: False`` alone: the other settings did nothing, and a resumed search
    (whose name ignores them then) must not log different values on its parent run.
    """
    effective = effective_augment(augment, kind)
    if effective.enabled:
        params = effective.flat()
        out = {k: str(list(v)) if isinstance(v, list) else v for k, v in params.items()}
    else:
        out = {"augment.enabled": False}
    weights = weights or {0: 1.0, 1: 1.0}
    out["class_weight.bonafide"] = weights[1]
    out["class_weight.spoof"] = weights[0]
    return out


@dataclass(frozen=True)
class TrainingInput:
    """What a fit of the training split takes, the same in tune and train."""

    dataset: Any  # tf.data.Dataset of (inputs, targets) batches
    class_weight: dict[int, float] | None  # for `model.fit(class_weight=...)`
    params: dict[str, Any]  # flat MLflow params: augment.*, class_weight.*


def training_input(data: Any, params: Params) -> TrainingInput:
    """The training batches (augmented or plain), class weights and their MLflow params.

    Validation and test never come through here: they are `data.tf_dataset(split)`.
    """
    kind = data.features.feature_kind
    augment = effective_augment(params.augment, kind)
    weights = class_weights(source_targets(data), params.train.class_weight)
    dataset = data.training_dataset(params.tune.batch_size, params.seed, augment)
    return TrainingInput(dataset, weights, log_params(augment, kind, weights))
