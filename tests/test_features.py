"""Tests for deepfake_audio.dsp.features, pinned against librosa (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_audio.dsp.features import log_mel_spectrogram, mel_filterbank, n_frames

librosa = pytest.importorskip("librosa")

SETTINGS = {
    "sample_rate": 16000,
    "n_fft": 512,
    "win_length": 400,
    "hop_length": 160,
    "n_mels": 64,
    "fmin": 20.0,
    "fmax": None,
}


def _librosa_log_mel(wave: np.ndarray, settings: dict) -> np.ndarray:
    """librosa with the settings our definition claims to equal, computed in float64."""
    power = librosa.feature.melspectrogram(
        y=np.asarray(wave, dtype=np.float64),
        sr=settings["sample_rate"],
        n_fft=settings["n_fft"],
        win_length=settings["win_length"],
        hop_length=settings["hop_length"],
        n_mels=settings["n_mels"],
        fmin=settings["fmin"],
        fmax=settings["fmax"],
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        htk=False,
        norm="slaney",
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def _speechlike(seed: int, sr: int, seconds: float) -> np.ndarray:
    """Noise plus harmonics with a decaying envelope: energy spread over many bands."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(90, 250)
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20) if k * f0 < sr / 2)
    wave = 0.1 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.normal(size=t.size)
    return wave.astype(np.float32)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"fmax": 7600.0, "n_mels": 80},
        {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 40},
        {"n_fft": 1024, "win_length": 1024, "hop_length": 256, "fmin": 0.0},
        {"n_fft": 511, "win_length": 400},  # odd n_fft
    ],
)
def test_matches_librosa(overrides: dict) -> None:
    settings = {**SETTINGS, **overrides}
    wave = _speechlike(0, settings["sample_rate"], 1.3)
    ours = log_mel_spectrogram(wave, **settings)
    reference = _librosa_log_mel(wave, settings)
    # librosa gives one frame fewer for odd n_fft (see the docstring); compare the common ones.
    common = min(ours.shape[1], reference.shape[1])
    assert ours.shape[1] == n_frames(wave.size, settings["hop_length"])
    assert ours.shape[0] == reference.shape[0] == settings["n_mels"]
    audible = reference[:, :common] > -80.0
    assert audible.mean() > 0.9
    diff = np.abs(ours[:, :common].astype(np.float64) - reference[:, :common])
    assert diff[audible].max() < 1e-3
    assert diff.max() < 1e-2


def test_filterbank_matches_librosa() -> None:
    for sr, n_fft, n_mels, fmin, fmax in [
        (16000, 512, 64, 20.0, None),
        (22050, 1024, 128, 0, 8000),
    ]:
        ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        reference = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.shape == (n_mels, n_fft // 2 + 1)
        np.testing.assert_allclose(ours, reference, atol=1e-8)


def test_filterbank_is_cached_and_read_only() -> None:
    first = mel_filterbank(16000, 512, 64, 20.0, None)
    assert mel_filterbank(16000, 512, 64, 20.0, 8000.0) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1.0
    with pytest.raises(ValueError, match="fmin"):
        mel_filterbank(16000, 512, 64, 9000.0, None)


@pytest.mark.parametrize("n_samples", [1, 100, 159, 160, 161, 32000, 32001])
def test_shape_dtype_and_frame_count(n_samples: int) -> None:
    wave = np.random.default_rng(1).normal(size=n_samples).astype(np.float32)
    out = log_mel_spectrogram(wave, **SETTINGS)
    assert out.shape == (64, n_frames(n_samples, 160)) == (64, 1 + n_samples // 160)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.all(np.isfinite(out))


def test_deterministic_and_input_untouched() -> None:
    wave = _speechlike(2, 16000, 2.0)
    copy = wave.copy()
    first = log_mel_spectrogram(wave, **SETTINGS)
    second = log_mel_spectrogram(wave, **SETTINGS)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(wave, copy)
    np.testing.assert_array_equal(first, log_mel_spectrogram(wave.astype(np.float64), **SETTINGS))


def test_silence_hits_the_floor() -> None:
    out = log_mel_spectrogram(np.zeros(16000, dtype=np.float32), **SETTINGS)
    np.testing.assert_array_equal(out, -100.0)


def test_1khz_sine_peaks_in_the_right_mel_band() -> None:
    sr, n_fft = SETTINGS["sample_rate"], SETTINGS["n_fft"]
    t = np.arange(2 * sr) / sr
    out = log_mel_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * t), **SETTINGS)
    band = int(np.argmax(out.mean(axis=1)))
    # 1 kHz falls exactly on FFT bin 32 (31.25 Hz bins); the band weighting that bin most wins.
    fb = mel_filterbank(sr, n_fft, SETTINGS["n_mels"], SETTINGS["fmin"], None)
    assert band == int(np.argmax(fb[:, round(1000 * n_fft / sr)]))
    # ...and that band's centre is the closest one to 1 kHz.
    centres = librosa.mel_frequencies(n_mels=SETTINGS["n_mels"] + 2, fmin=20.0, fmax=sr / 2)
    assert band == int(np.argmin(np.abs(centres[1:-1] - 1000.0)))
    # Every frame but the two edge ones (reflect padding kinks the sine there) agrees.
    assert np.all(np.argmax(out[:, 1:-1], axis=0) == band)


@pytest.mark.parametrize(
    ("wave", "match"),
    [
        (np.zeros((2, 100)), "1-D"),
        (np.zeros(0), "empty"),
        (np.array([0.0, np.nan, 0.0]), "NaN"),
    ],
)
def test_rejects_bad_waveforms(wave: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_mel_spectrogram(wave, **SETTINGS)


def test_rejects_window_longer_than_fft() -> None:
    with pytest.raises(ValueError, match="win_length"):
        log_mel_spectrogram(np.zeros(1000), **{**SETTINGS, "win_length": 600})
