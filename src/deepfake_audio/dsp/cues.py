"""One-number cues of a clip: what a corpus can give away about its labels without any speech.

Each cue is a single number per clip, computed in numpy on a waveform. The dataset stage
computes them twice for every audio clip: on the decoded recording at its own rate ("raw",
before resampling, loudness normalisation and crop/pad: what the corpus gives away) and on
the clip as the model is fed it ("as_fed": resampled, normalised, cut to the model's length).
`scoring.shortcuts` then asks how well each cue alone separates bona fide from spoof.

The cues (`CUES` gives each one's unit):

    duration          samples / sample rate, seconds
    leading_silence   seconds before the first frame within `SILENCE_DB` of the loudest frame
    trailing_silence  seconds after the end of the last such frame
    rms               RMS of the wave without its mean, dBFS
    peak              largest absolute sample (the mean left in), dBFS
    noise_floor       the 10th percentile of the frame energies, dBFS
    dc_offset         |mean sample| (full scale 1): the sign is not kept, so a corpus whose
                      fakes carry offsets of either sign still shows
    bandwidth         the frequency below which 99 % of the energy lies, Hz
    high_band         the share of the energy between 4 and 8 kHz (0 at 8 kHz sampling)

Frames for the energy cues are `FRAME_SECONDS` long, back to back (the last one may be
shorter); the spectrum is the mean Hann-windowed power spectrum of frames of about 32 ms
(a power of two in samples), back to back, at most `SPECTRUM_FRAMES` of them spread evenly
over a longer clip. Energies are floored at `FLOOR_DB` (-100 dBFS),
so digital silence has a finite level. Everything except the mean is computed on the wave
with its mean removed, so a DC offset shows in `dc_offset` alone, not in every level cue.
Long recordings are processed in blocks: memory stays a few MB whatever the length.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["CUES", "CUE_NAMES", "FLOOR_DB", "FRAME_SECONDS", "SILENCE_DB", "clip_cues"]

CUES = {
    "duration": "s",
    "leading_silence": "s",
    "trailing_silence": "s",
    "rms": "dBFS",
    "peak": "dBFS",
    "noise_floor": "dBFS (10th-percentile frame energy)",
    "dc_offset": "|mean sample|, full scale 1",
    "bandwidth": "Hz (99 % of the energy below)",
    "high_band": "share of the energy in 4-8 kHz",
}
CUE_NAMES = tuple(CUES)

FRAME_SECONDS = 0.01
# A frame is silence when its energy is more than this far below the loudest frame's.
SILENCE_DB = 40.0
FLOOR_DB = -100.0
_FLOOR = 10.0 ** (FLOOR_DB / 10.0)
NOISE_PERCENTILE = 10.0
BANDWIDTH_SHARE = 0.99
HIGH_BAND_HZ = (4000.0, 8000.0)
_SPECTRUM_SECONDS = 0.032
# The spectrum averages at most this many frames, spread evenly over the clip (about 1 s of
# audio at 32 ms a frame: enough for a band share, and a fixed cost per clip).
SPECTRUM_FRAMES = 32
_BLOCK_FRAMES = 4096  # frames processed at a time (about 41 s of 10 ms frames)


def clip_cues(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The cues of one mono waveform at `sample_rate`, in `CUE_NAMES` order.

    Raises:
        ValueError: an empty or non-1-D wave, or a rate that is not positive.
    """
    x = np.asarray(wave)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    mean = float(np.mean(x, dtype=np.float64))
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    energies = _frame_energies(x, mean, frame)
    loudest = float(energies.max())
    loud = np.flatnonzero(energies >= loudest * 10.0 ** (-SILENCE_DB / 10.0))
    first, last = int(loud[0]), int(loud[-1])
    end = min((last + 1) * frame, x.size)
    lengths = np.full(energies.size, frame, dtype=np.float64)
    lengths[-1] = x.size - frame * (energies.size - 1)  # the last frame may be shorter
    total = float(np.dot(energies, lengths))
    peak = float(max(float(np.max(x)), -float(np.min(x))))
    bandwidth, high_band = _spectral_cues(x, mean, sample_rate)
    return {
        "duration": x.size / sample_rate,
        "leading_silence": first * frame / sample_rate,
        "trailing_silence": (x.size - end) / sample_rate,
        "rms": _db(total / x.size),
        "peak": _db(peak * peak),
        "noise_floor": _db(_percentile(energies, NOISE_PERCENTILE)),
        "dc_offset": abs(mean),
        "bandwidth": bandwidth,
        "high_band": high_band,
    }


def _db(power: float) -> float:
    """A power (mean square, full scale 1) in dB, floored at `FLOOR_DB`; a power that
    overflowed float64 (samples beyond 1e150 in a broken float file) reads +100 dB."""
    return 10.0 * math.log10(max(power, _FLOOR)) if math.isfinite(power) else -FLOOR_DB


def _frame_energies(x: np.ndarray, mean: float, frame: int) -> np.ndarray:
    """Mean square of each back-to-back frame of `x - mean` (the last may be shorter), in
    float32 (a frame's 10 ms sum loses nothing that matters at -100 dBFS), block by block."""
    n_full = x.size // frame
    parts = []
    step = _BLOCK_FRAMES * frame
    offset = np.float32(mean)
    for start in range(0, n_full * frame, step):
        block = np.asarray(x[start : min(start + step, n_full * frame)], dtype=np.float32) - offset
        rows = block.reshape(-1, frame)
        parts.append(np.einsum("ij,ij->i", rows, rows).astype(np.float64) / frame)
    rest = x.size - n_full * frame
    if rest:
        tail = np.asarray(x[n_full * frame :], dtype=np.float64) - mean
        parts.append(np.array([np.mean(np.square(tail))]))
    return np.concatenate(parts)


def _spectral_cues(x: np.ndarray, mean: float, sample_rate: int) -> tuple[float, float]:
    """(99 %-energy bandwidth in Hz, share of the energy in `HIGH_BAND_HZ`) of `x - mean`,
    from the mean power spectrum of at most `SPECTRUM_FRAMES` frames spread evenly over it."""
    import scipy.fft  # as dsp.features: float32 transforms several times faster than numpy's

    n_fft = 2 ** max(3, int(round(math.log2(_SPECTRUM_SECONDS * sample_rate))))
    n_frames = x.size // n_fft
    if n_frames == 0:  # a clip shorter than one frame: zero-padded
        frames = np.zeros((1, n_fft), dtype=np.float32)
        frames[0, : x.size] = x - np.float32(mean)
    else:
        frames = np.asarray(x[: n_frames * n_fft], dtype=np.float32).reshape(n_frames, n_fft)
        if n_frames > SPECTRUM_FRAMES:
            frames = frames[np.linspace(0, n_frames - 1, SPECTRUM_FRAMES).round().astype(int)]
        frames = frames - np.float32(mean)
    spectra = scipy.fft.rfft(frames * _hann(n_fft), axis=1)
    power = np.sum(np.square(np.abs(spectra), dtype=np.float64), axis=0)
    total = float(power.sum())
    if not total > 0 or not math.isfinite(total):
        return 0.0, 0.0
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    cumulative = np.cumsum(power) / total
    bandwidth = float(freqs[min(int(np.searchsorted(cumulative, BANDWIDTH_SHARE)), freqs.size - 1)])
    low, high = HIGH_BAND_HZ
    band = float(power[(freqs >= low) & (freqs <= high)].sum())
    return bandwidth, band / total


def _percentile(values: np.ndarray, percent: float) -> float:
    """`np.percentile(values, percent)` (linear interpolation) by partial sort: the same
    number at a fraction of the cost on a few hundred frames."""
    position = percent / 100.0 * (values.size - 1)
    low = int(math.floor(position))
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (position - low) * (part[high] - part[low]))


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)
