"""Vocoded spoofs: bona fide speech through analysis and resynthesis, as extra fake clips.

Wang and Yamagishi (ICASSP 2023) trained detectors on bona fide speech sent through
vocoders and found they generalise: a vocoded copy keeps the speaker, the words, the room
and the microphone of its source, so the only thing that tells the two apart is what the
vocoder did to the signal, which is what every neural TTS and voice-conversion system
leaves too. The dataset stage (``data.vocoded``) makes one copy of each real training clip
per vocoder named here; every copy is an attack of its own in the manifest.

The vocoders run here, on the CPU, with nothing to download:

    world        WORLD (Morise et al. 2016) through `pyworld`: F0 by DIO and StoneMask,
                 spectral envelope by CheapTrick, aperiodicity by D4C, then WORLD's
                 synthesis. Deterministic (the seed is not used).
    griffin_lim  the STFT magnitude alone, its phase rebuilt by Griffin-Lim iterations
                 (Griffin and Lim 1984) from a random phase drawn from the seed.
    lpc          a source-filter (LPC-10 style) resynthesis: per frame an all-pole
                 envelope and an F0 from the autocorrelation; a pulse train (voiced) or
                 noise drawn from the seed (unvoiced) through the envelope, overlap-added.

`vocode` returns a copy as long as its source, with its source's mean and RMS: level, DC and
length must not tell a copy from its source (the copy is then preprocessed and cut exactly
as its source was). Pure numpy and scipy, besides WORLD's C code.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["VOCODERS", "griffin_lim", "lpc", "vocode", "world"]

VOCODERS = ("world", "griffin_lim", "lpc")

GL_FRAME_SECONDS = 0.032  # about 512 samples at 16 kHz
GL_ITERATIONS = 32
WORLD_FRAME_MS = 5.0
LPC_FRAME_SECONDS = 0.02  # hop 10 ms, frames overlap by half
F0_RANGE = (60.0, 400.0)
VOICING = 0.3  # normalised autocorrelation at the F0 lag above which a frame is voiced


def vocode(wave: np.ndarray, sample_rate: int, name: str, seed: int = 0) -> np.ndarray:
    """`wave` through vocoder `name`: the same length, mean and RMS (without the mean), float32.

    Raises:
        ValueError: an unknown vocoder, or a wave too short to analyse.
    """
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1 or x.size < 4 * _frame(GL_FRAME_SECONDS, sample_rate):
        raise ValueError(f"vocoder {name}: needs a 1-D wave of at least 4 frames")
    if name == "world":
        y = world(x, sample_rate)
    elif name == "griffin_lim":
        y = griffin_lim(x, sample_rate, np.random.default_rng(seed))
    elif name == "lpc":
        y = lpc(x, sample_rate, np.random.default_rng(seed))
    else:
        raise ValueError(f"unknown vocoder {name!r} (known: {', '.join(VOCODERS)})")
    y = _same_length(np.nan_to_num(y), x.size)
    y = y - y.mean()
    before, after = _rms(x - x.mean()), _rms(y)
    if after > 0:
        y = y * (before / after)
    # The source's own mean back: a copy whose mean is exactly 0 beside sources whose windows
    # keep a trace of one would be told apart by it.
    return np.clip(y + x.mean(), -1.0, 1.0).astype(np.float32)


def world(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """WORLD analysis and synthesis of `x` (float64)."""
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, times = pyworld.dio(x, sample_rate, frame_period=WORLD_FRAME_MS)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate)
    aperiodicity = pyworld.d4c(x, f0, times, sample_rate)
    return pyworld.synthesize(f0, envelope, aperiodicity, sample_rate, WORLD_FRAME_MS)


def _frame(seconds: float, sample_rate: int) -> int:
    """An even frame length of about `seconds` (a power of two for the FFT)."""
    return 2 ** max(4, int(round(math.log2(seconds * sample_rate))))


def _periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Frames of `x` (padded by n_fft/2 at both ends) through the window, rfft'd."""
    padded = np.pad(x, n_fft // 2)
    count = 1 + (padded.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    return np.fft.rfft(padded[index] * window, axis=1)


def _istft(spectrum: np.ndarray, n_fft: int, hop: int, window: np.ndarray, size: int) -> np.ndarray:
    """Weighted overlap-add inverse of `_stft`, `size` samples."""
    frames = np.fft.irfft(spectrum, n=n_fft, axis=1) * window
    total = n_fft + hop * (len(frames) - 1)
    out = np.zeros(total)
    norm = np.zeros(total)
    square = window * window
    for i, frame in enumerate(frames):
        out[i * hop : i * hop + n_fft] += frame
        norm[i * hop : i * hop + n_fft] += square
    out /= np.where(norm > 1e-8, norm, 1.0)
    return out[n_fft // 2 : n_fft // 2 + size]


def griffin_lim(
    x: np.ndarray, sample_rate: int, rng: np.random.Generator, iterations: int = GL_ITERATIONS
) -> np.ndarray:
    """`x` rebuilt from its STFT magnitude by Griffin-Lim, starting from a random phase."""
    n_fft = _frame(GL_FRAME_SECONDS, sample_rate)
    hop = n_fft // 4
    window = _periodic_hann(n_fft)
    magnitude = np.abs(_stft(x, n_fft, hop, window))
    phase = np.exp(2j * np.pi * rng.random(magnitude.shape))
    for _ in range(iterations):
        y = _istft(magnitude * phase, n_fft, hop, window, x.size)
        rebuilt = _stft(y, n_fft, hop, window)
        phase = np.exp(1j * np.angle(rebuilt))
    return _istft(magnitude * phase, n_fft, hop, window, x.size)


def _envelope(r: np.ndarray, order: int) -> np.ndarray:
    """The all-pole polynomial (a[0] = 1) of a frame's autocorrelation `r` (Yule-Walker)."""
    from scipy.linalg import solve_toeplitz

    r = r[: order + 1].copy()
    r[0] *= 1.0 + 1e-6  # white-noise correction: keeps the system well conditioned
    return np.concatenate([[1.0], -solve_toeplitz(r[:order], r[1:])])


def lpc(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Source-filter resynthesis: per frame, LPC envelope, F0 and voicing of `x`; a pulse train
    (voiced) or noise (unvoiced) through the envelope at the frame's energy, overlap-added
    (Hann frames, half overlap)."""
    from scipy.signal import lfilter

    size = _frame(LPC_FRAME_SECONDS, sample_rate)
    hop = size // 2
    order = 2 + sample_rate // 1000
    window = _periodic_hann(size)
    low_lag = int(sample_rate / F0_RANGE[1])
    high_lag = min(int(sample_rate / F0_RANGE[0]), size - 1)
    padded = np.pad(x, (0, size + (-x.size) % hop))
    count = 1 + (padded.size - size) // hop
    loudest = max(float(np.max(np.abs(x))), 1e-12)
    # Analysis: each frame's energy, autocorrelation (by FFT), envelope and period (0:
    # unvoiced or silent).
    index = np.arange(size)[None, :] + hop * np.arange(count)[:, None]
    frames = padded[index] * window
    energies = np.einsum("ij,ij->i", frames, frames)
    corr = np.fft.irfft(np.abs(np.fft.rfft(frames, n=2 * size, axis=1)) ** 2, axis=1)[:, :size]
    audible = energies > (1e-4 * loudest) ** 2 * size
    lags = corr[:, low_lag : high_lag + 1] / np.where(audible, corr[:, 0], 1.0)[:, None]
    best = np.argmax(lags, axis=1)
    voiced = audible & (lags[np.arange(count), best] > VOICING)
    periods = np.where(voiced, low_lag + best, 0)
    polys = [_envelope(corr[i], order) if audible[i] else None for i in range(count)]
    # The excitation over the whole clip: pulses at each voiced hop's period (evenly spaced
    # across hops), noise in the unvoiced ones.
    excitation = rng.standard_normal(padded.size) * 0.1
    t = 0
    while t < padded.size:
        hop_index = min(t // hop, count - 1)
        end = padded.size if hop_index == count - 1 else (hop_index + 1) * hop
        if periods[hop_index]:
            excitation[max(t, hop_index * hop) : end] = 0.0
            pulses = np.arange(t, end, periods[hop_index])
            excitation[pulses] = 1.0
            t = int(pulses[-1]) + int(periods[hop_index])
        else:
            t = end
    # Synthesis: each frame's excitation through its envelope, at its energy, overlap-added.
    out = np.zeros(padded.size)
    for i, a in enumerate(polys):
        if a is None:
            continue
        start = i * hop
        y = lfilter([1.0], a, excitation[start : start + size]) * window
        made = float(np.dot(y, y))
        if made > 0 and math.isfinite(made):
            out[start : start + size] += y * math.sqrt(energies[i] / made)
    return out[: x.size]


def _same_length(y: np.ndarray, size: int) -> np.ndarray:
    if y.size >= size:
        return y[:size]
    return np.pad(y, (0, size - y.size))


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.dot(x, x)) / x.size) if x.size else 0.0
