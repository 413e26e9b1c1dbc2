"""The feature kinds (`features.kind`), one object each: what the code asks of a kind.

Training, the dataset format and serving ask a kind the same few questions - is it computed
from audio, is it a (rows, frames) map, what shape is a clip's features, how do the shards
store it, where does the model normalise it - and each kind answers them here, once, instead
of `kind == "..."` tests in every stage. The transform from audio to features is
`dsp.features.clip_features`; the stored settings of a dataset or a served model become a
`FeaturesParams` (whose `feature_kind` is one of these) through
`config.params.features_from_dict`, the one decoder training and serving share.

A kind's functions take a `FeaturesParams` (not imported here: params imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class FeatureKind:
    name: str  # the features.kind value
    # Computed from decoded audio (augmentation, codec round trips and durations apply);
    # False: pictures (data.source: images, served from image_base64).
    audio: bool
    # A (rows, frames) map: SpecAugment masks it, normalisation statistics are per row.
    spectral: bool
    # How the shards store it: int16 (waveforms) or float16 (dataset.shards).
    shard_dtype: str
    # The model-input axis its normalisation statistics run along: 1 spectral rows,
    # 2 the one channel of a (samples, 1) waveform, 3 the colour channels of (h, w, 3).
    norm_axis: int
    # One clip's features as stored: (rows, frames), (samples,) or (height, width, 3).
    shape: Callable[[Any], Shape] = field(repr=False, compare=False)
    # Samples between frames (what fixes the number of frames of a clip).
    hop: Callable[[Any], int] = field(repr=False, compare=False, default=lambda fp: fp.hop_length)
    # A pretrained front end the model runs on the stored samples (its settings are
    # features.<frontend>; models.network puts it in the model, so serving takes raw audio),
    # instead of normalising them with the dataset's statistics. None: no front end.
    frontend: str | None = None

    def feature_shape(self, fp: Any) -> Shape:
        return self.shape(fp)


LOGMEL = FeatureKind(
    "logmel",
    audio=True,
    spectral=True,
    shard_dtype="float16",
    norm_axis=1,
    shape=lambda fp: (fp.n_mels, fp.n_frames),
)
# The ASVspoof baseline front end: coefficients, deltas and double deltas, its own frame sizes.
LFCC = FeatureKind(
    "lfcc",
    audio=True,
    spectral=True,
    shard_dtype="float16",
    norm_axis=1,
    shape=lambda fp: (3 * fp.lfcc.n_coeffs, fp.n_frames),
    hop=lambda fp: fp.lfcc.hop_length,
)
# The notebook's spectrogram pictures, RGB at features.image_size.
IMAGE = FeatureKind(
    "image",
    audio=False,
    spectral=False,
    shard_dtype="float16",
    norm_axis=3,
    shape=lambda fp: (*fp.image_size, 3),
)
# The loudness-normalised samples themselves, for raw-waveform architectures.
WAVEFORM = FeatureKind(
    "waveform",
    audio=True,
    spectral=False,
    shard_dtype="int16",
    norm_axis=2,
    shape=lambda fp: (fp.n_samples,),
)

# Whisper's encoder frames (deepfake_audio.frontends.whisper): the shards store the samples,
# as for the waveform, and the frozen encoder runs inside the model (features.whisper).
WHISPER = FeatureKind(
    "whisper",
    audio=True,
    spectral=False,
    shard_dtype="int16",
    norm_axis=2,
    shape=lambda fp: (fp.n_samples,),
    frontend="whisper",
)

KINDS: dict[str, FeatureKind] = {k.name: k for k in (LOGMEL, LFCC, IMAGE, WAVEFORM, WHISPER)}


def by_name(name: str) -> FeatureKind:
    """The kind called `name`; ValueError for one this code does not know (a newer writer)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"unknown feature kind {name!r} (this code knows {', '.join(KINDS)})"
        ) from None
