"""Tests for the LFCC front-end in dsp.features (linear filterbank, DCT, deltas, lfcc).

Where there is no library to pin against (librosa has no LFCC), the features are checked
against straightforward per-frame loop implementations written here from the definitions, and
against properties the maths guarantees (orthonormality, gain invariance, exact slopes).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from deepfake_audio.dsp.features import (
    _dct_matrix,
    deltas,
    lfcc,
    linear_filterbank,
    log_mel_spectrogram,
    n_frames,
)

SR = 16000
# The ASVspoof 2019/2021 LFCC baseline: 20 ms windows, 10 ms hop, 20 linear filters, 20 coeffs.
ASVSPOOF = {
    "sample_rate": SR,
    "n_fft": 512,
    "win_length": 320,
    "hop_length": 160,
    "n_filters": 20,
    "n_coeffs": 20,
    "fmin": 0.0,
    "fmax": None,
}


def _speechlike(seed: int, sr: int, seconds: float) -> np.ndarray:
    """Noise plus harmonics with a decaying envelope: energy spread over every band."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(90, 250)
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 40) if k * f0 < sr / 2)
    wave = 0.1 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.normal(size=t.size)
    return wave


# ----------------------------------------------------------------------------------------------
# Independent reference implementations (loops, straight from the definitions).


def _trimf(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """Matlab's ``trimf(x, [a b c])``, one sample at a time."""
    out = np.zeros(len(x))
    for i, v in enumerate(x):
        if a < v < b:
            out[i] = (v - a) / (b - a)
        elif v == b:
            out[i] = 1.0
        elif b < v < c:
            out[i] = (c - v) / (c - b)
    return out


def _reference_filterbank(sr: int, n_fft: int, n_filters: int, fmin: float, fmax: float):
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = [fmin + (fmax - fmin) * i / (n_filters + 1) for i in range(n_filters + 2)]
    return np.array([_trimf(freqs, *edges[m : m + 3]) for m in range(n_filters)])


def _reference_deltas(c: np.ndarray, width: int) -> np.ndarray:
    big_n = width // 2
    frames = c.shape[1]
    out = np.zeros(c.shape)
    for t in range(frames):
        for n in range(1, big_n + 1):
            ahead = c[:, min(t + n, frames - 1)]
            behind = c[:, max(t - n, 0)]
            out[:, t] += n * (ahead - behind)
    return out / (2 * sum(n * n for n in range(1, big_n + 1)))


def _reference_lfcc(wave: np.ndarray, settings: dict) -> np.ndarray:
    """Frame by frame: centred frame, periodic Hamming, full FFT, trimf bank, ln, scipy DCT."""
    sr, n_fft = settings["sample_rate"], settings["n_fft"]
    win, hop = settings["win_length"], settings["hop_length"]
    fmax = sr / 2 if settings["fmax"] is None else settings["fmax"]
    bank = _reference_filterbank(sr, n_fft, settings["n_filters"], settings["fmin"], fmax)
    hamming = scipy.signal.get_window("hamming", win, fftbins=True)  # periodic
    # n_fft // 2 on the left; for odd n_fft one more on the right (the documented frame rule).
    padded = np.pad(wave, (n_fft // 2, n_fft - n_fft // 2), mode="reflect")
    statics = []
    for t in range(1 + len(wave) // hop):
        frame = padded[t * hop : t * hop + n_fft].copy()
        start = (n_fft - win) // 2
        windowed = np.zeros(n_fft)
        windowed[start : start + win] = frame[start : start + win] * hamming
        power = np.abs(np.fft.fft(windowed)[: n_fft // 2 + 1]) ** 2
        log_bands = np.log(np.maximum(bank @ power, 1e-10))
        statics.append(scipy.fft.dct(log_bands, type=2, norm="ortho")[: settings["n_coeffs"]])
    c = np.array(statics).T
    d = _reference_deltas(c, 3)
    return np.vstack([c, d, _reference_deltas(d, 3)])


# ----------------------------------------------------------------------------------------------
# lfcc


def test_shape_and_dtype_of_the_asvspoof_setting() -> None:
    wave = _speechlike(0, SR, 2.0).astype(np.float32)
    out = lfcc(wave, **ASVSPOOF)
    assert out.shape == (60, 201) == (3 * 20, n_frames(wave.size, 160))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.all(np.isfinite(out))
    statics = lfcc(wave, **ASVSPOOF, with_deltas=False)
    assert statics.shape == (20, 201) and statics.dtype == np.float32
    np.testing.assert_array_equal(statics, out[:20])


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 16001])
def test_frame_count_matches_log_mel(n_samples: int) -> None:
    wave = np.random.default_rng(1).normal(size=n_samples)
    out = lfcc(wave, **ASVSPOOF)
    mel = log_mel_spectrogram(
        wave,
        sample_rate=SR,
        n_fft=512,
        win_length=320,
        hop_length=160,
        n_mels=40,
        fmin=0.0,
        fmax=None,
    )
    assert out.shape == (60, mel.shape[1]) == (60, 1 + n_samples // 160)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"n_coeffs": 13, "fmin": 300.0, "fmax": 3400.0},
        {"sample_rate": 8000, "n_fft": 256, "win_length": 160, "hop_length": 80},
        {"n_fft": 511, "win_length": 400, "n_filters": 30, "n_coeffs": 30},  # odd n_fft
    ],
)
def test_matches_a_frame_by_frame_reference(overrides: dict) -> None:
    settings = {**ASVSPOOF, **overrides}
    wave = _speechlike(3, settings["sample_rate"], 0.5)
    ours = lfcc(wave, **settings).astype(np.float64)
    reference = _reference_lfcc(wave, settings)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


def test_deterministic_input_untouched_and_float32_input_same() -> None:
    wave = _speechlike(2, SR, 1.0)
    copy = wave.copy()
    first = lfcc(wave, **ASVSPOOF)
    np.testing.assert_array_equal(first, lfcc(wave, **ASVSPOOF))
    np.testing.assert_array_equal(wave, copy)
    small = wave.astype(np.float32)
    np.testing.assert_array_equal(
        lfcc(small, **ASVSPOOF), lfcc(small.astype(np.float64), **ASVSPOOF)
    )


def test_pure_tone_and_white_noise_differ() -> None:
    t = np.arange(2 * SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 2000.0 * t)
    noise = 0.5 * np.random.default_rng(4).normal(size=t.size)
    c_tone = lfcc(tone, **ASVSPOOF, with_deltas=False).astype(np.float64)
    c_noise = lfcc(noise, **ASVSPOOF, with_deltas=False).astype(np.float64)
    # White noise has a flat spectrum: its mean cepstrum beyond c0 is near zero. The tone's log
    # spectrum is one peak over a floor of leakage, which has a large cepstrum.
    shape_tone = np.linalg.norm(c_tone[1:, 1:-1].mean(axis=1))
    shape_noise = np.linalg.norm(c_noise[1:, 1:-1].mean(axis=1))
    assert shape_tone > 10 * shape_noise
    # With all 20 coefficients kept the DCT is invertible: the tone's loudest log band is the
    # one centred nearest 2 kHz (filter centres every 8000 / 21 Hz).
    log_bands = _dct_matrix(20, 20).T @ c_tone[:, 1:-1]
    centres = np.linspace(0, SR / 2, 22)[1:-1]
    assert np.all(np.argmax(log_bands, axis=0) == np.argmin(np.abs(centres - 2000.0)))
    assert np.all(np.argmax(log_bands, axis=0) == 4)


@pytest.mark.parametrize("gain", [10.0, 0.1])
def test_gain_shifts_only_c0(gain: float) -> None:
    wave = _speechlike(5, SR, 2.0)
    quiet = lfcc(wave, **ASVSPOOF).astype(np.float64)
    loud = lfcc(wave * gain, **ASVSPOOF).astype(np.float64)
    # Natural log: power scales by gain**2, every log band moves by ln(gain**2), and the
    # orthonormal DCT puts sqrt(20) times that constant into c0 and nothing elsewhere.
    shift = np.sqrt(20) * np.log(gain**2)
    assert abs(shift) > 20.0
    np.testing.assert_allclose(loud[0] - quiet[0], shift, atol=1e-4)
    np.testing.assert_allclose(loud[1:], quiet[1:], atol=1e-4)  # c1..c19 and all deltas
    assert np.abs(quiet[1:20]).max() > 1.0  # ...which are not trivially zero


def test_silence_hits_the_floor() -> None:
    out = lfcc(np.zeros(SR), **ASVSPOOF).astype(np.float64)
    np.testing.assert_allclose(out[0], np.sqrt(20) * np.log(1e-10), rtol=1e-6)
    np.testing.assert_allclose(out[1:], 0.0, atol=1e-4)


@pytest.mark.parametrize(
    ("wave", "match"),
    [
        (np.zeros((2, 1000)), "1-D"),
        (np.zeros(0), "empty"),
        (np.array([0.0, np.nan, 0.0]), "NaN"),
        (np.array([0.0, np.inf, 0.0]), "infinite"),
    ],
)
def test_rejects_bad_waveforms(wave: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lfcc(wave, **ASVSPOOF)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_coeffs": 21}, "n_coeffs"),
        ({"n_coeffs": 0}, "n_coeffs"),
        ({"win_length": 600}, "win_length"),
        ({"hop_length": 0}, "hop_length"),
        ({"fmax": 9000.0}, "fmax"),
        ({"n_filters": 0}, "positive"),
    ],
)
def test_rejects_bad_settings(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lfcc(np.zeros(1000), **{**ASVSPOOF, **overrides})


# ----------------------------------------------------------------------------------------------
# DCT matrix


@pytest.mark.parametrize(("n_coeffs", "n_inputs"), [(20, 20), (13, 20), (1, 7), (30, 30)])
def test_dct_matrix_is_scipys_orthonormal_dct(n_coeffs: int, n_inputs: int) -> None:
    matrix = _dct_matrix(n_coeffs, n_inputs)
    assert matrix.shape == (n_coeffs, n_inputs) and matrix.dtype == np.float64
    reference = scipy.fft.dct(np.eye(n_inputs), type=2, norm="ortho", axis=0)[:n_coeffs]
    np.testing.assert_allclose(matrix, reference, atol=1e-12)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(n_coeffs), atol=1e-12)  # orthonormal
    x = np.random.default_rng(6).normal(size=n_inputs)
    np.testing.assert_allclose(
        matrix @ x, scipy.fft.dct(x, type=2, norm="ortho")[:n_coeffs], atol=1e-12
    )


def test_dct_matrix_is_cached_and_read_only() -> None:
    first = _dct_matrix(20, 20)
    assert _dct_matrix(20, 20) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


# ----------------------------------------------------------------------------------------------
# linear filterbank


def test_linear_filterbank_peaks_on_the_linear_centres() -> None:
    # 15 filters over 0..8 kHz: centres every 500 Hz = every 16 bins of 31.25 Hz exactly.
    bank = linear_filterbank(SR, 512, 15)
    assert bank.shape == (15, 257) and bank.dtype == np.float64
    for m in range(15):
        centre_bin = 16 * (m + 1)
        assert bank[m, centre_bin] == pytest.approx(1.0, abs=1e-12)
        assert int(np.argmax(bank[m])) == centre_bin
        # Linear, so every triangle has the same support: 2 * 16 - 1 non-zero bins.
        assert np.count_nonzero(bank[m]) == 31
    # The baseline setting: centres fall between bins, so each filter peaks at the nearest bin.
    bank = linear_filterbank(SR, 512, 20)
    centres = np.linspace(0.0, SR / 2, 22)[1:-1]
    nearest = np.rint(centres / (SR / 512)).astype(int)
    np.testing.assert_array_equal(np.argmax(bank, axis=1), nearest)
    assert bank.max() <= 1.0


@pytest.mark.parametrize(
    ("n_fft", "n_filters", "fmin", "fmax"),
    [
        (512, 20, 0.0, None),
        (512, 15, 300.0, 3400.0),
        (1024, 40, 50.0, 7600.0),
        (511, 20, 0.0, None),
    ],
)
def test_linear_filterbank_covers_the_band(n_fft, n_filters, fmin, fmax) -> None:
    bank = linear_filterbank(SR, n_fft, n_filters, fmin, fmax)
    top = SR / 2 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SR)
    edges = np.linspace(fmin, top, n_filters + 2)
    total = bank.sum(axis=0)
    # Between the first and the last centre neighbouring triangles add up to exactly 1...
    inner = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(total[inner], 1.0, atol=1e-12)
    # ...every bin strictly inside the band is seen by some filter, and nothing outside is.
    inside = (freqs > fmin) & (freqs < top)
    assert np.all(total[inside] > 0)
    assert np.all(bank[:, ~inside] == 0)
    np.testing.assert_allclose(
        bank, _reference_filterbank(SR, n_fft, n_filters, fmin, top), atol=1e-12
    )


def test_linear_filterbank_is_cached_and_read_only() -> None:
    first = linear_filterbank(SR, 512, 20)
    assert linear_filterbank(SR, 512, 20, 0.0, 8000.0) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1.0
    with pytest.raises(ValueError, match="fmin"):
        linear_filterbank(SR, 512, 20, 9000.0, None)
    with pytest.raises(ValueError, match="positive"):
        linear_filterbank(SR, 512, 0)


# ----------------------------------------------------------------------------------------------
# deltas


@pytest.mark.parametrize("width", [3, 5, 9])
def test_deltas_of_a_ramp_are_its_slope_and_of_a_constant_zero(width: int) -> None:
    half = width // 2
    t = np.arange(50, dtype=np.float64)
    ramp = np.vstack([2.5 * t - 7.0, -0.3 * t])
    d = deltas(ramp, width)
    assert d.shape == ramp.shape and d.dtype == np.float64
    np.testing.assert_allclose(d[0, half:-half], 2.5, atol=1e-12)
    np.testing.assert_allclose(d[1, half:-half], -0.3, atol=1e-12)
    # At the edges the repeated frame flattens the ramp, so the slope is smaller there.
    assert 0 < d[0, 0] < 2.5 and 0 < d[0, -1] < 2.5
    np.testing.assert_array_equal(deltas(np.full((3, 20), 4.2), width), 0.0)


@pytest.mark.parametrize("width", [3, 5, 7])
def test_deltas_match_a_loop_reference(width: int) -> None:
    features = np.random.default_rng(7).normal(size=(6, 25))
    np.testing.assert_allclose(
        deltas(features, width), _reference_deltas(features, width), atol=1e-12
    )


def test_deltas_edge_values_and_shapes() -> None:
    # Width 3 on [0, 1, 2, 3]: padded [0, 0, 1, 2, 3, 3] -> (1-0)/2, (2-0)/2, (3-1)/2, (3-2)/2.
    np.testing.assert_allclose(deltas(np.arange(4.0)), [0.5, 1.0, 1.0, 0.5])
    np.testing.assert_array_equal(deltas(np.array([5.0])), [0.0])  # one frame: no slope
    cube = np.random.default_rng(8).normal(size=(2, 3, 10)).astype(np.float32)
    out = deltas(cube, 5)
    assert out.shape == cube.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[1], _reference_deltas(cube[1].astype(np.float64), 5), atol=1e-5)
    assert deltas(np.arange(6), 3).dtype == np.float64  # integers are promoted


@pytest.mark.parametrize("width", [2, 4, 1, 0, -3, 3.0, True])
def test_deltas_reject_bad_widths(width) -> None:
    with pytest.raises(ValueError, match="width"):
        deltas(np.zeros((2, 10)), width)


@pytest.mark.parametrize("features", [np.float64(1.0), np.zeros((3, 0)), np.zeros(0)])
def test_deltas_reject_empty_or_scalar_input(features) -> None:
    with pytest.raises(ValueError, match="frame"):
        deltas(features)
