"""Spectral features in plain numpy: the log-mel spectrogram and the ASVspoof LFCC front-end.

Building the training set and scoring an upload both call the same function here, so the model
sees exactly the same transform in both places (no train/serve skew from two implementations
or two library versions). It is numpy plus ``scipy.fft`` (scipy is already needed for
resampling), which keeps the server free of heavy audio dependencies.

Precision is float32 throughout, as in librosa: the shards store float16 anyway, and
``scipy.fft`` transforms float32 frames several times faster than numpy's FFT does (numpy's
float32 path was 4-5x slower than its own float64 one on this project's CPUs). For a
loudness-normalised clip the float32 rounding noise sits below the -100 dB floor.

Both features share the framing and power-spectrum code (`_power_spectrogram`); only the
window, filterbank and what follows the filterbank differ.

Log-mel spectrogram (`log_mel_spectrogram`)
-------------------------------------------

Definition (equal to ``librosa.feature.melspectrogram(..., center=True, pad_mode="reflect",
power=2.0)`` followed by ``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=None)``, which the
tests check):

1. reflect-pad ``n_fft // 2`` samples on each side, so frame ``t`` is centred on sample
   ``t * hop_length``;
2. frames of ``n_fft`` samples every ``hop_length``, times a periodic Hann window of
   ``win_length`` samples zero-padded (centred) to ``n_fft``;
3. power spectrum ``|rfft|**2``;
4. a Slaney-style mel filterbank (see `mel_filterbank`);
5. ``10 * log10(max(mel_power, 1e-10))``, i.e. dB relative to 1 with a -100 dB floor.

LFCC (`lfcc`)
-------------
Linear-frequency cepstral coefficients, the front-end of the ASVspoof 2019 and 2021
LFCC-GMM baselines (Sahidullah, Kinnunen & Hanilci, "A comparison of features for synthetic
speech detection", Interspeech 2015). Linear rather than mel bands keep the high-frequency
resolution where many vocoder and TTS artefacts are. With the baseline settings (16 kHz,
``n_fft=512``, ``win_length=320`` (20 ms), ``hop_length=160`` (10 ms), 20 filters, 20
coefficients) it gives 60 features per frame:

1. and 2. framing as for the log-mel, but with a periodic Hamming window;
3. power spectrum ``|rfft|**2``;
4. a linear triangular filterbank, peak 1 (see `linear_filterbank`);
5. ``ln(max(energy, 1e-10))``: the *natural* log, with the same 1e-10 power floor as above;
6. orthonormal DCT-II along the filter axis, first ``n_coeffs`` kept (c0 included);
7. ``[c, deltas(c), deltas(deltas(c))]`` stacked along the feature axis (see `deltas`).

Departures from the official Matlab baseline (``extract_lfcc.m``), none of which changes what
the features describe, only their offsets and scales, which a model normalises away:

- no pre-emphasis; the baseline first applies ``y[n] = x[n] - 0.97 x[n - 1]``, which a
  caller can do before calling `lfcc` (``np.append(x[0], x[1:] - 0.97 * x[:-1])``);
- centred, reflect-padded frames (frame ``t`` centred on sample ``t * hop_length``, the
  log-mel frame count) instead of Matlab's ``buffer(..., 'nodelay')`` frames that start at
  sample 0 with a zero-padded last frame; and a hop that is a free parameter rather than
  fixed at half the window (the baseline's 20 ms / 10 ms is our ``320`` / ``160``);
- a periodic Hamming window (``0.54 - 0.46 cos(2 pi n / N)``) where Matlab's ``hamming(N)``
  is symmetric (denominator ``N - 1``). Centring the window inside ``n_fft`` instead of
  zero-padding at the end only shifts the frame circularly, which leaves the power spectrum
  unchanged;
- natural log with a 1e-10 floor instead of ``log10(x + eps)``: every coefficient is the
  baseline's times ``ln(10) = 2.303`` (above the floor);
- c0 is kept, as in the Matlab code (which keeps all 20 DCT outputs). The PyTorch LFCC-LCNN
  baseline of ASVspoof 2021 instead replaces c0 with the log frame energy;
- deltas use the normalised regression formula (see `deltas`). The baseline calls
  ``deltas(x, 3)``; if that is Ellis's rastamat ``deltas.m``, which has the same 3-frame
  window and edge repetition but no ``1 / (2 sum n**2)`` factor, its deltas are twice ours
  (and its delta-deltas four times).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from deepfake_audio.config.kinds import LFCC, LOGMEL, WAVEFORM, WHISPER
from deepfake_audio.config.params import FeaturesParams

__all__ = [
    "deltas",
    "lfcc",
    "linear_filterbank",
    "log_mel_spectrogram",
    "mel_filterbank",
    "n_frames",
]

# Power floor before the log: -100 dB. Silence then maps to a finite, fixed value rather than
# -inf, and it matches librosa.power_to_db's default ``amin``.
AMIN = 1e-10

# Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # = 15 mels
_LOG_STEP = np.log(6.4) / 27.0  # log-Hz per mel in the logarithmic part


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel value of frequencies in Hz."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, logarithmic, linear)


def _check_filterbank_args(
    sample_rate: int, n_fft: int, n_filters: int, fmin: float, fmax: float
) -> None:
    """Reject settings for which a filterbank over ``[fmin, fmax]`` makes no sense."""
    if n_filters <= 0 or n_fft <= 0 or sample_rate <= 0:
        raise ValueError("sample_rate, n_fft and the number of filters must be positive")
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, "
            f"sample_rate={sample_rate}"
        )


def _triangles(sample_rate: int, n_fft: int, edges: np.ndarray) -> np.ndarray:
    """Peak-1 triangles over the rfft bins: filter m rises from ``edges[m]`` to a peak at
    ``edges[m + 1]`` and falls back to zero at ``edges[m + 2]``; shape ``(len(edges) - 2,
    n_fft // 2 + 1)``, float64. Shared by the mel and the linear filterbank."""
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # k * sr / n_fft, odd n_fft too
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - left) / (centre - left)
    falling = (right - bin_hz[None, :]) / (right - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


@lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Build (once per setting) the read-only filterbank; see `mel_filterbank`."""
    _check_filterbank_args(sample_rate, n_fft, n_mels, fmin, fmax)
    # n_mels + 2 equally spaced mel points: the edges and centres of the n_mels triangles.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    weights = _triangles(sample_rate, n_fft, edges)
    # Area normalisation (librosa's norm="slaney"): each triangle integrates to the same value,
    # so wide high-frequency bands do not dominate the spectrum just by collecting more bins.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)  # shared through the cache: nobody may modify it
    return weights


@lru_cache(maxsize=16)
def _filterbank32(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """`_filterbank` as float32 (read-only), for the float32 spectrum."""
    weights = _filterbank(sample_rate, n_fft, n_mels, fmin, fmax).astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filterbank, shape ``(n_mels, n_fft // 2 + 1)``, float64, read-only.

    Uses the Slaney mel scale (linear below 1 kHz, logarithmic above) with Slaney area
    normalisation, i.e. the same matrix as ``librosa.filters.mel(..., htk=False,
    norm="slaney")`` (librosa's defaults), so features match the de-facto reference that most
    anti-spoofing baselines were built with. ``fmax=None`` means ``sample_rate / 2``.

    The matrix is cached per setting (``functools.lru_cache``) because every clip of a dataset
    uses the same one; it is returned read-only so a caller cannot corrupt the shared copy.
    """
    top = sample_rate / 2.0 if fmax is None else float(fmax)
    return _filterbank(int(sample_rate), int(n_fft), int(n_mels), float(fmin), top)


@lru_cache(maxsize=16)
def _linear_filterbank(
    sample_rate: int, n_fft: int, n_filters: int, fmin: float, fmax: float
) -> np.ndarray:
    """Build (once per setting) the read-only filterbank; see `linear_filterbank`."""
    _check_filterbank_args(sample_rate, n_fft, n_filters, fmin, fmax)
    weights = _triangles(sample_rate, n_fft, np.linspace(fmin, fmax, n_filters + 2))
    weights.setflags(write=False)  # shared through the cache: nobody may modify it
    return weights


def linear_filterbank(
    sample_rate: int, n_fft: int, n_filters: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular linear-frequency filterbank, shape ``(n_filters, n_fft // 2 + 1)``, float64,
    read-only: the LFCC filterbank of the ASVspoof baselines.

    ``n_filters + 2`` edges equally spaced in Hz from ``fmin`` to ``fmax`` (``None`` means
    ``sample_rate / 2``); filter ``m`` peaks (at 1) on edge ``m + 1`` and reaches zero on its
    neighbours, so between the first and the last centre the filters sum to exactly 1. No area
    normalisation: on a linear scale every triangle has the same width, so it would only
    rescale all bands by one constant (an additive constant on c0 after the log), and peak-1
    triangles are what Matlab's ``trimf`` in the baseline builds.

    Cached per setting and returned read-only, like `mel_filterbank`.
    """
    top = sample_rate / 2.0 if fmax is None else float(fmax)
    return _linear_filterbank(int(sample_rate), int(n_fft), int(n_filters), float(fmin), top)


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames `log_mel_spectrogram` and `lfcc` return for ``n`` samples: ``1 + n // hop``."""
    return 1 + n_samples // hop_length


@lru_cache(maxsize=16)
def _window(win_length: int, n_fft: int, kind: str = "hann") -> np.ndarray:
    """Periodic Hann or Hamming window of ``win_length`` samples, zero-padded centred to
    ``n_fft``, float32, read-only.

    Periodic (denominator ``win_length``, not ``win_length - 1``) because frames overlap and
    are analysed with a DFT, where the periodic window is the one whose shifts sum flat.
    """
    n = np.arange(win_length)
    if kind == "hann":
        taper = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    elif kind == "hamming":
        taper = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / win_length)
    else:
        raise ValueError(f"unknown window kind {kind!r}; expected 'hann' or 'hamming'")
    window = np.zeros(n_fft, dtype=np.float32)
    offset = (n_fft - win_length) // 2
    window[offset : offset + win_length] = taper
    window.setflags(write=False)
    return window


def _power_spectrogram(
    waveform: np.ndarray, n_fft: int, win_length: int, hop_length: int, window_kind: str
) -> np.ndarray:
    """Validated, centred, windowed power spectrogram ``|rfft|**2``, float32, shape
    ``(n_frames(len(waveform), hop_length), n_fft // 2 + 1)`` (frames first).

    Steps 1-3 of both feature definitions in the module docstring, in one place so that the
    log-mel and the LFCC frame a clip identically. For odd ``n_fft`` the right side gets one
    extra padding sample so that the frame count holds for every ``n_fft``.

    Raises:
        ValueError: a non-1-D, empty or non-finite waveform, a non-positive hop, or a window
            that is empty or longer than ``n_fft``.
    """
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("cannot compute a spectrogram of an empty waveform")
    if not np.all(np.isfinite(wave)):
        raise ValueError("waveform contains NaN or infinite samples (or values beyond float32)")
    if hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    if not 0 < win_length <= n_fft:
        raise ValueError(
            f"need 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}"
        )

    half = n_fft // 2
    right = n_fft - half
    if wave.size > max(half, right):  # the usual case: one reflection, 5x faster than np.pad
        padded = np.concatenate([wave[half:0:-1], wave, wave[-2 : -right - 2 : -1]])
    else:  # shorter than the padding: np.pad reflects back and forth
        padded = np.pad(wave, (half, right), mode="reflect")
    count = n_frames(wave.size, hop_length)
    frames = sliding_window_view(padded, n_fft)[: (count - 1) * hop_length + 1 : hop_length]
    spectrum = scipy.fft.rfft(frames * _window(win_length, n_fft, window_kind), axis=1)
    power = np.square(spectrum.real)
    power += np.square(spectrum.imag)
    return power  # (frames, bins)


def log_mel_spectrogram(
    waveform: np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    win_length: int,
    hop_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
) -> np.ndarray:
    """Log-mel power spectrogram in dB of a 1-D waveform (definition in the module docstring).

    Computed in float32, like librosa (see the module docstring for why that is enough).

    Returns:
        float32 array, shape ``(n_mels, n_frames(len(waveform), hop_length))``, C-contiguous.
        For odd ``n_fft`` the right side gets one extra padding sample so that this frame
        count holds for every ``n_fft`` (librosa would give one frame fewer for some lengths).

    Raises:
        ValueError: a non-1-D, empty or non-finite waveform, or inconsistent settings.
    """
    power = _power_spectrogram(waveform, n_fft, win_length, hop_length, "hann")
    top = sample_rate / 2.0 if fmax is None else float(fmax)
    bank = _filterbank32(int(sample_rate), int(n_fft), int(n_mels), float(fmin), top)
    mel = bank @ power.T  # (mels, frames)
    # 10 * log10(x) as ln(x) * 10 / ln(10): numpy vectorises the float32 natural log, not log10
    # (3x faster here). The floor is applied in dB so that it is exactly -100.
    np.maximum(mel, np.float32(1e-30), out=mel)  # no log(0)
    db = np.log(mel, out=mel)
    db *= np.float32(10.0 / np.log(10.0))
    np.maximum(db, np.float32(10.0 * np.log10(AMIN)), out=db)
    return db


@lru_cache(maxsize=16)
def _dct_matrix(n_coeffs: int, n_inputs: int) -> np.ndarray:
    """First ``n_coeffs`` rows of the orthonormal DCT-II matrix of size ``n_inputs``, float64,
    read-only: ``D @ x`` equals ``scipy.fft.dct(x, type=2, norm="ortho")[:n_coeffs]``.

    At 20 x 20 a cached matrix product is as fast as an FFT-based DCT. Orthonormal, as
    Matlab's ``dct``, so the cepstrum has the same energy as the log spectrum and c0 is
    ``sqrt(n_inputs)`` times the mean log energy.
    """
    if not 0 < n_coeffs <= n_inputs:
        raise ValueError(
            f"need 0 < n_coeffs <= n_filters, got n_coeffs={n_coeffs}, n_filters={n_inputs}"
        )
    k = np.arange(n_coeffs)[:, None]
    n = np.arange(n_inputs)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * n_inputs)) * np.sqrt(2.0 / n_inputs)
    matrix[0] /= np.sqrt(2.0)  # row 0 is the constant 1 / sqrt(N)
    matrix.setflags(write=False)
    return matrix


def deltas(features: np.ndarray, width: int = 3) -> np.ndarray:
    """Regression deltas along the last (time) axis, same shape as ``features``.

    ``d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n**2)`` with ``N = width //
    2``: the least-squares slope of a line fitted to ``width`` frames centred on ``t`` (the
    HTK definition), so a ramp of slope ``s`` per frame gives exactly ``s`` and the value does
    not grow with the width. Edges repeat the first and last frame (``N`` times each), as in
    the ASVspoof baseline, which keeps the shape and makes the edge deltas one-sided.

    Computed in float64; returned in the input's float precision (float32 for float32 input,
    float64 for float64 or integer input).

    Raises:
        ValueError: ``width`` not an odd integer >= 3, or ``features`` 0-d or with no frames.
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise ValueError(f"width must be an odd integer >= 3, got {width!r}")
    if width < 3 or width % 2 == 0:
        raise ValueError(f"width must be an odd integer >= 3, got {width}")
    original = np.asarray(features)
    if original.ndim == 0 or original.shape[-1] == 0:
        raise ValueError(f"need at least one frame along the last axis, got {original.shape}")
    x = original.astype(np.float64, copy=False)
    half = int(width) // 2
    frames = x.shape[-1]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="edge")
    out = np.zeros_like(x)
    for n in range(1, half + 1):
        out += n * (
            padded[..., half + n : half + n + frames] - padded[..., half - n : frames + half - n]
        )
    out /= 2.0 * sum(n * n for n in range(1, half + 1))
    return out.astype(np.result_type(original.dtype, np.float32), copy=False)


def lfcc(
    waveform: np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    win_length: int,
    hop_length: int,
    n_filters: int,
    n_coeffs: int,
    fmin: float,
    fmax: float | None,
    with_deltas: bool = True,
) -> np.ndarray:
    """Linear-frequency cepstral coefficients of a 1-D waveform (definition and departures
    from the ASVspoof Matlab baseline in the module docstring).

    ASVspoof 2019/2021 baseline settings at 16 kHz: ``n_fft=512, win_length=320,
    hop_length=160, n_filters=20, n_coeffs=20, fmin=0.0, fmax=None``.

    The log is the natural log of the filterbank power floored at 1e-10. Scaling the waveform
    by ``g`` therefore adds ``ln(g**2)`` to every log band energy, and since the orthonormal
    DCT maps a constant vector onto c0 alone, only c0 moves, by ``sqrt(n_filters) *
    ln(g**2)``, while every other coefficient and all deltas stay put (as long as no band is
    at the floor).

    The spectrum is float32, like `log_mel_spectrogram`'s; the filterbank, log, DCT and deltas
    run in float64 (cheap at 20 bands), and the result is float32.

    Returns:
        float32 array, C-contiguous, shape ``(3 * n_coeffs, n_frames(len(waveform),
        hop_length))`` with rows ``[c_0..c_{n-1}, deltas, delta-deltas]``, or ``(n_coeffs,
        ...)`` with ``with_deltas=False``.

    Raises:
        ValueError: a non-1-D, empty or non-finite waveform, or inconsistent settings
            (including ``n_coeffs`` outside ``1..n_filters``).
    """
    power = _power_spectrogram(waveform, n_fft, win_length, hop_length, "hamming")
    bands = linear_filterbank(sample_rate, n_fft, n_filters, fmin, fmax) @ power.T
    cepstra = _dct_matrix(int(n_coeffs), int(n_filters)) @ np.log(np.maximum(bands, AMIN))
    if with_deltas:
        first = deltas(cepstra)
        cepstra = np.concatenate([cepstra, first, deltas(first)], axis=0)
    return np.ascontiguousarray(cepstra, dtype=np.float32)


def clip_features(wave: np.ndarray, fp: FeaturesParams) -> np.ndarray:
    """The one audio feature transform, shared by the dataset stage, training and serving.

    ``features.kind: waveform`` is the identity: the (loudness-normalised, cut) samples
    themselves, float32, for models that learn their own front end (AASIST, RawNet). So is
    ``features.kind: whisper``: its front end (Whisper's encoder) runs inside the model.
    Going through here anyway keeps one code path for every kind in the dataset stage,
    `predict`, the training batches and the served model.
    """
    kind = fp.feature_kind
    if kind is WAVEFORM or kind is WHISPER:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
        return np.array(wave, dtype=np.float32, copy=True)
    if kind is LFCC:
        return lfcc(
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
    if kind is not LOGMEL:
        raise ValueError(f"features.kind {kind.name!r} is not computed from audio")
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
