"""Log-mel spectrogram: the one feature function for training data and for serving.

Building the training set and scoring an upload both call `log_mel_spectrogram`, so the model
sees exactly the same transform in both places (no train/serve skew from two implementations
or two library versions). It is plain numpy, which keeps the server free of heavy audio
dependencies and makes the output depend only on numpy's FFT.

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
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["log_mel_spectrogram", "mel_filterbank", "n_frames"]

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


@lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Build (once per setting) the read-only filterbank; see `mel_filterbank`."""
    if n_mels <= 0 or n_fft <= 0 or sample_rate <= 0:
        raise ValueError("sample_rate, n_fft and n_mels must be positive")
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, "
            f"sample_rate={sample_rate}"
        )
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # k * sr / n_fft, odd n_fft too
    # n_mels + 2 equally spaced mel points: filter m rises from edge m to its peak at edge
    # m + 1 and falls back to zero at edge m + 2.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - left) / (centre - left)
    falling = (right - bin_hz[None, :]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation (librosa's norm="slaney"): each triangle integrates to the same value,
    # so wide high-frequency bands do not dominate the spectrum just by collecting more bins.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)  # shared through the cache: nobody may modify it
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


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames `log_mel_spectrogram` returns for ``n_samples`` samples: ``1 + n // hop``."""
    return 1 + n_samples // hop_length


@lru_cache(maxsize=16)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples, zero-padded centred to ``n_fft``.

    Periodic (denominator ``win_length``, not ``win_length - 1``) because frames overlap and
    are analysed with a DFT, where the periodic window is the one whose shifts sum flat.
    """
    n = np.arange(win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    window = np.zeros(n_fft)
    offset = (n_fft - win_length) // 2
    window[offset : offset + win_length] = hann
    window.setflags(write=False)
    return window


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

    Computed in float64 and returned as float32: the extra precision costs little and keeps the
    low-energy bins (where spoofing artefacts often are) free of FFT rounding noise.

    Returns:
        float32 array, shape ``(n_mels, n_frames(len(waveform), hop_length))``, C-contiguous.
        For odd ``n_fft`` the right side gets one extra padding sample so that this frame
        count holds for every ``n_fft`` (librosa would give one frame fewer for some lengths).

    Raises:
        ValueError: a non-1-D, empty or non-finite waveform, or inconsistent settings.
    """
    wave = np.asarray(waveform, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("cannot compute a spectrogram of an empty waveform")
    if not np.all(np.isfinite(wave)):
        raise ValueError("waveform contains NaN or infinite samples")
    if hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    if not 0 < win_length <= n_fft:
        raise ValueError(
            f"need 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}"
        )

    half = n_fft // 2
    padded = np.pad(wave, (half, n_fft - half), mode="reflect")
    count = n_frames(wave.size, hop_length)
    frames = sliding_window_view(padded, n_fft)[: (count - 1) * hop_length + 1 : hop_length]
    spectrum = np.fft.rfft(frames * _window(win_length, n_fft), n=n_fft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2  # (frames, bins)
    mel = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax) @ power.T  # (mels, frames)
    return (10.0 * np.log10(np.maximum(mel, AMIN))).astype(np.float32)
