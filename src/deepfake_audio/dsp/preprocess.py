"""Cue removal: what is done to a decoded recording before it is cut into model windows.

Real corpora give their labels away through things that are not spoofing at all: a DC
offset one generator leaves and a microphone does not, a level one pipeline normalised to,
silence a TTS front end pads with, a clip length that a vocoder's hop makes a multiple of
256 (../shared/datasets/README.md lists each corpus's). A detector trained on such a corpus
learns the cue (`scoring.shortcuts` measures how well each one separates the classes alone).
`prepare` removes the ones that can be removed from the audio itself, in this order:

1. **DC removal**: the recording's mean is subtracted (`dc_offset` is |mean sample|), before
   trimming (an offset would lift silent frames to the level of speech) and again after it.
2. **Silence trimming**: leading and trailing 10 ms frames whose energy is more than
   `trim_db` below the loudest frame's are cut (the same frames and threshold that
   `dsp.cues` measures `leading_silence` and `trailing_silence` with, so a trimmed clip
   reads 0 there).
3. **Loudness normalisation on speech frames**: the RMS of the frames within `trim_db` of
   the loudest one is scaled to `dsp.audio.TARGET_RMS`; without it, the level is the whole
   clip's RMS (`dsp.audio.condition`), which pauses and silence pull down, so the share of
   silence in a clip would still move its level.
4. **Short clips**: a recording with less than one model window of audio left is dropped
   (``short: drop``: an `AudioError`, which the dataset stage counts and lists and serving
   answers as the row's error) or padded as `features.pad` says (``short: pad``). Dropping
   is the default: padding repeats (or zero-fills) a short clip, and where it repeats is
   its length, which is a cue in several corpora.

Cropping is `dsp.audio.fix_length`'s (a window of the recording, never padded once short
clips are dropped). Codec history is not touched here: `augment.codecs` copies and
`data.validation_codec` already give both classes the same round trips (docs/data.md).

The same function runs in the dataset stage (`stages.dataset.file_features`) and in a
served model (`serving.pyfunc.Detector.windows`), from the settings stored with the dataset
(stats.json's features section, key ``preprocess``) and then with the model: a model trained
on preprocessed clips is served preprocessed clips, whatever today's params.yaml says.
Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deepfake_audio.dsp.audio import TARGET_RMS, AudioError

__all__ = ["LEVELS", "SHORT", "Preprocess", "ShortClip", "prepare", "resolve"]

LEVELS = ("speech", "clip")
SHORT = ("drop", "pad")
FRAME_SECONDS = 0.01  # as dsp.cues
# Speech frames for the level when nothing is trimmed: within this of the loudest (dsp.cues).
SPEECH_DB = 40.0
# Sources whose audio is someone's recordings; `auto` turns preprocessing on for them. The
# synthetic demo corpus has none of the cues (and its `make demo` output must not move);
# pictures have no audio.
REAL_SOURCES = ("folders", "asvspoof")


class ShortClip(AudioError):
    """Less than one model window of audio after trimming, under ``short: drop``."""


@dataclass(frozen=True)
class Preprocess:
    """Resolved preprocessing settings, as stored with a dataset and a served model."""

    remove_dc: bool = True
    trim_db: float | None = 40.0  # None: no trimming
    level: str = "speech"  # speech | clip (whole-clip RMS, what `condition` already did)
    short: str = "drop"  # drop | pad

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"preprocess level {self.level!r} is not one of {LEVELS}")
        if self.short not in SHORT:
            raise ValueError(f"preprocess short {self.short!r} is not one of {SHORT}")
        if self.trim_db is not None and not self.trim_db > 0:
            raise ValueError(f"preprocess trim_db {self.trim_db!r} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> Preprocess | None:
        """A stored section back (None, or absent: a dataset or model without preprocessing).

        Unknown keys are ignored and missing ones take their defaults, as the features
        section's decoder does."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValueError(f"stored preprocess section is not a mapping: {raw!r}")
        known = {k: raw[k] for k in ("remove_dc", "trim_db", "level", "short") if k in raw}
        return cls(**known)


def resolve(params: Any, source: str, audio: bool = True) -> Preprocess | None:
    """`data.preprocess` (a `config.params.PreprocessParams`) for a corpus of `source`:
    the settings to apply, or None when off (``enabled: auto`` is on for `REAL_SOURCES`)."""
    enabled = params.enabled
    if not audio or enabled is False or (enabled == "auto" and source not in REAL_SOURCES):
        return None
    return Preprocess(
        remove_dc=params.remove_dc, trim_db=params.trim_db, level=params.level, short=params.short
    )


def _frame_energies(wave: np.ndarray, frame: int) -> np.ndarray:
    """Mean square of each back-to-back frame (the last may be shorter)."""
    full = wave.size // frame
    body = wave[: full * frame].astype(np.float64).reshape(full, frame)
    energies = np.einsum("ij,ij->i", body, body) / frame
    if wave.size > full * frame:
        tail = wave[full * frame :].astype(np.float64)
        energies = np.append(energies, np.dot(tail, tail) / tail.size)
    return energies


def trim_bounds(wave: np.ndarray, sample_rate: int, trim_db: float) -> tuple[int, int, np.ndarray]:
    """(start, end) samples of the part from the first to the last frame within `trim_db` of
    the loudest frame, and the mask of those frames ("speech" for the level)."""
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    energies = _frame_energies(wave, frame)
    loud = energies >= energies.max() * 10.0 ** (-trim_db / 10.0)
    index = np.flatnonzero(loud)
    start, end = int(index[0]) * frame, min((int(index[-1]) + 1) * frame, wave.size)
    return start, end, np.repeat(loud, frame)[: wave.size]


def prepare(
    wave: np.ndarray, sample_rate: int, prep: Preprocess | None, n_samples: int, name: str
) -> np.ndarray:
    """A conditioned recording (`dsp.audio.condition`'s output) with the cues of `prep`
    removed; unchanged (the same array) when `prep` is None.

    Raises:
        AudioError: ``short: drop`` and less than `n_samples` of audio left after trimming;
            the message names `name`, the seconds left and the window.
    """
    if prep is None:
        return wave
    x = np.asarray(wave, dtype=np.float32)
    if prep.remove_dc:
        x = x - np.float32(np.mean(x, dtype=np.float64))
    threshold = prep.trim_db if prep.trim_db is not None else SPEECH_DB
    start, end, speech = trim_bounds(x, sample_rate, threshold)
    if prep.trim_db is not None:
        x, speech = x[start:end], speech[start:end]
        if prep.remove_dc:  # the kept part's own mean: the silence cut off had a share
            x = x - np.float32(np.mean(x, dtype=np.float64))
    if prep.level == "speech":
        voiced = x[speech] if speech.any() else x
        rms = math.sqrt(float(np.dot(voiced.astype(np.float64), voiced)) / voiced.size)
        if rms > 0:
            x = x * np.float32(TARGET_RMS / rms)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    if x.size < n_samples and prep.short == "drop":
        raise ShortClip(
            name,
            f"too short after trimming silence ({x.size / sample_rate:.2f} s of audio, "
            f"the model's window is {n_samples / sample_rate:g} s; preprocess short: drop)",
        )
    return x
