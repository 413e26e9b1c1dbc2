"""Tests for deepfake_audio.dsp.audio on real files written with soundfile."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp.audio import (
    SILENCE_PEAK,
    TARGET_RMS,
    AudioError,
    decode,
    fix_length,
    load_clip,
    resample,
)


def _sine(freq: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / sr)[np.argmax(spectrum)])


def _assert_one_line(err: AudioError, *parts: str) -> None:
    message = str(err)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


@pytest.fixture
def stereo_float_wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """1 s of 44.1 kHz stereo float WAV: 440 Hz left, 1 kHz right."""
    left, right = _sine(440, 44100, 1.0), _sine(1000, 44100, 1.0, 0.25)
    data = np.stack([left, right], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, 44100, subtype="FLOAT")
    return path, data


def test_decode_stereo_float_downmixes_by_mean(stereo_float_wav: tuple[Path, np.ndarray]) -> None:
    path, data = stereo_float_wav
    wave, sr = decode(path)
    assert sr == 44100
    assert wave.dtype == np.float32 and wave.shape == (44100,)
    np.testing.assert_allclose(wave, data.mean(axis=1), atol=1e-7)


def test_decode_pcm16_8k_wav(tmp_path: Path) -> None:
    original = _sine(1000, 8000, 0.5)
    path = tmp_path / "narrow.wav"
    sf.write(path, original, 8000, subtype="PCM_16")
    wave, sr = decode(str(path))
    assert sr == 8000 and wave.dtype == np.float32 and wave.shape == (4000,)
    np.testing.assert_allclose(wave, original, atol=1.5 / 32768)


@pytest.mark.parametrize(
    ("fmt", "suffix", "exact"), [("FLAC", ".flac", True), ("OGG", ".ogg", False)]
)
def test_decode_compressed_formats(tmp_path: Path, fmt: str, suffix: str, exact: bool) -> None:
    original = _sine(440, 16000, 1.0)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, original, 16000, format=fmt)
    wave, sr = decode(path)
    assert sr == 16000 and wave.dtype == np.float32 and wave.ndim == 1
    if exact:  # FLAC is lossless (16-bit by default)
        np.testing.assert_allclose(wave, original, atol=1.5 / 32768)
    else:
        assert abs(wave.size - original.size) < 2000
        assert _peak_hz(wave, sr) == pytest.approx(440, abs=2)


def test_decode_bytes_equals_path(stereo_float_wav: tuple[Path, np.ndarray]) -> None:
    path, _ = stereo_float_wav
    from_path, sr_path = decode(path)
    from_bytes, sr_bytes = decode(path.read_bytes())
    assert sr_path == sr_bytes
    np.testing.assert_array_equal(from_path, from_bytes)


@pytest.mark.parametrize(
    ("orig_sr", "target_sr", "freq"),
    [(44100, 16000, 440), (8000, 16000, 1000), (48000, 16000, 3000), (22050, 16000, 2500)],
)
def test_resample_preserves_frequency_and_length(orig_sr: int, target_sr: int, freq: float) -> None:
    wave = _sine(freq, orig_sr, 1.0)
    out = resample(wave, orig_sr, target_sr)
    assert out.dtype == np.float32
    assert out.size == target_sr  # 1 s in, 1 s out (every ratio here is exact)
    bin_hz = target_sr / out.size
    assert abs(_peak_hz(out, target_sr) - freq) <= bin_hz
    # Amplitude survives (ignore the filter's edge transients).
    middle = out[out.size // 4 : -out.size // 4]
    assert np.max(np.abs(middle)) == pytest.approx(0.5, abs=0.02)


def test_resample_filters_out_content_above_new_nyquist() -> None:
    # 10 kHz cannot exist at 16 kHz; without anti-aliasing it would fold down to 6 kHz.
    out = resample(_sine(10000, 44100, 1.0), 44100, 16000)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01 * 0.5 / np.sqrt(2)


def test_resample_same_rate_is_copy_and_length_rule() -> None:
    wave = _sine(440, 16000, 0.1)
    same = resample(wave, 16000, 16000)
    np.testing.assert_array_equal(same, wave)
    assert same is not wave
    assert resample(np.ones(1001, np.float32), 44100, 16000).size == int(np.ceil(1001 * 160 / 441))
    with pytest.raises(ValueError):
        resample(wave, 0, 16000)


def test_fix_length_crop_policies() -> None:
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(wave, 4, crop="start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(fix_length(wave, 4, crop="center"), [3, 4, 5, 6])
    np.testing.assert_array_equal(fix_length(wave, 10, crop="center"), wave)


def test_fix_length_pad_policies() -> None:
    wave = np.array([1, 2, 3], dtype=np.float32)
    np.testing.assert_array_equal(fix_length(wave, 8, pad="repeat"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(fix_length(wave, 5, pad="zeros"), [1, 2, 3, 0, 0])
    out = fix_length(wave, 3)
    assert out.dtype == np.float32 and out is not wave
    with pytest.raises(ValueError, match="crop"):
        fix_length(wave, 2, crop="end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad"):
        fix_length(wave, 5, pad="reflect")  # type: ignore[arg-type]


def test_load_clip_shape_loudness_and_resampling(
    stereo_float_wav: tuple[Path, np.ndarray],
) -> None:
    path, _ = stereo_float_wav
    clip = load_clip(path, 16000, 0.5)
    assert clip.dtype == np.float32 and clip.shape == (8000,)
    assert np.sqrt(np.mean(clip.astype(np.float64) ** 2)) == pytest.approx(TARGET_RMS, rel=0.05)
    assert np.max(np.abs(clip)) <= 1.0


def test_load_clip_removes_loudness_differences(tmp_path: Path) -> None:
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    sf.write(loud, _sine(300, 16000, 1.0, 0.9), 16000, subtype="FLOAT")
    sf.write(quiet, _sine(300, 16000, 1.0, 0.01), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_clip(loud, 16000, 1.0), load_clip(quiet, 16000, 1.0), atol=1e-5)


def test_load_clip_pads_short_clip_by_repeating(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, _sine(200, 8000, 0.25), 8000, subtype="FLOAT")
    clip = load_clip(path, 16000, 1.0)  # 0.25 s -> 4000 samples at 16 kHz, tiled to 16000
    assert clip.shape == (16000,)
    np.testing.assert_array_equal(clip[:4000], clip[4000:8000])
    zeros = load_clip(path, 16000, 1.0, pad="zeros")
    assert np.all(zeros[4000:] == 0) and np.any(zeros[:4000] != 0)


def test_too_short_clip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, _sine(440, 16000, 0.05), 16000)
    with pytest.raises(AudioError) as info:
        load_clip(path, 16000, 2.0)
    _assert_one_line(info.value, str(path), "too short")
    assert load_clip(path, 16000, 2.0, min_seconds=0.01).shape == (32000,)


def test_silent_clip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.full(16000, SILENCE_PEAK / 10, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as info:
        load_clip(path, 16000, 1.0)
    _assert_one_line(info.value, str(path), "silent")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as info:
        decode(path)
    _assert_one_line(info.value, str(path), "empty")


def test_wav_without_samples_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "noframes.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(AudioError) as info:
        decode(path)
    _assert_one_line(info.value, str(path), "no audio samples")


def test_text_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\nat all\n")
    with pytest.raises(AudioError) as info:
        decode(path)
    _assert_one_line(info.value, f"{path}: not a readable audio file (")


@pytest.mark.parametrize("payload", [b"", b"\x00\x01garbage" * 50, b"RIFF\x00\x00\x00\x00WAVE"])
def test_garbage_bytes_are_rejected(payload: bytes) -> None:
    with pytest.raises(AudioError) as info:
        load_clip(payload, 16000, 1.0)
    _assert_one_line(info.value, "<bytes>: ")
    assert "BytesIO" not in str(info.value)  # the reason, not a Python repr


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as info:
        decode(tmp_path / "nope.flac")
    _assert_one_line(info.value, "nope.flac", "no such file")
    with pytest.raises(AudioError) as info:
        decode(tmp_path)
    _assert_one_line(info.value, "directory")


def test_audio_error_is_user_error_and_pickles() -> None:
    err = AudioError("a.wav", "not a readable audio file (Format not recognised.\n)")
    assert isinstance(err, UserError)
    assert str(err) == "a.wav: not a readable audio file (Format not recognised. )"
    clone = pickle.loads(pickle.dumps(err))  # dataset workers send errors across processes
    assert (type(clone), str(clone), clone.source) == (AudioError, str(err), "a.wav")
    # A ready-made message is accepted as well (and kept on one line).
    plain = AudioError("b.wav: cannot read\n(Permission denied)")
    assert str(plain) == "b.wav: cannot read (Permission denied)" and plain.source is None
    assert str(pickle.loads(pickle.dumps(plain))) == str(plain)
