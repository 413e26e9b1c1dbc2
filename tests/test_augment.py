"""Tests for the training-time augmentations: deepfake_audio.dsp.augment and .rawboost.

Each test checks the property the augmentation exists for (a window of the source, a level in
range, an SNR in range, masks within bounds, a time-aligned codec copy, ...) by measuring the
output, so a wrong implementation fails rather than merely a changed one.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import asdict
from functools import partial

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp import augment as aug
from deepfake_audio.dsp import rawboost as rb

SR = 16000


def _speechlike(seed: int = 0, seconds: float = 2.0, peak: float = 0.5) -> np.ndarray:
    """A voiced-speech stand-in: a gliding harmonic tone under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.2 + 0.8 * np.abs(np.sin(2 * np.pi * 2.5 * t + seed))
    wave = voiced * envelope + 0.02 * rng.standard_normal(t.size)
    return (peak * wave / np.max(np.abs(wave))).astype(np.float32)


def _rms_db(x: np.ndarray) -> np.ndarray:
    wide = np.asarray(x, dtype=np.float64)
    return 10 * np.log10(np.mean(wide * wide, axis=-1))


def _lag(source: np.ndarray, copy: np.ndarray, max_lag: int = 300) -> int:
    """Lag (samples) at which ``copy`` best matches ``source``; 0 means time-aligned."""
    a = source.astype(np.float64)[max_lag:-max_lag]
    b = copy.astype(np.float64)
    scores = [
        np.dot(a, b[max_lag + k : b.size - max_lag + k]) for k in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


# ---------------------------------------------------------------------------------------------
# random_crop


def test_crop_is_an_in_bounds_contiguous_window_of_the_source() -> None:
    source = np.random.default_rng(0).standard_normal(5000).astype(np.float32)  # unique values
    starts = []
    for seed in range(200):
        crop = aug.random_crop(source, 1000, np.random.default_rng(seed))
        assert crop.shape == (1000,) and crop.dtype == np.float32
        (found,) = np.flatnonzero(source == crop[0])
        assert 0 <= found <= 4000
        np.testing.assert_array_equal(crop, source[found : found + 1000])
        starts.append(found)
    # Random offsets over the whole range, including both ends' neighbourhoods.
    assert min(starts) < 400 and max(starts) > 3600 and len(set(starts)) > 150


def test_crop_batch_draws_one_offset_per_clip_and_never_reads_past_the_end() -> None:
    batch = np.random.default_rng(1).standard_normal((64, 700)).astype(np.float32)
    crops = aug.random_crop(batch, 650, np.random.default_rng(2))
    assert crops.shape == (64, 650)
    offsets = []
    for row, crop in zip(batch, crops, strict=True):
        (found,) = np.flatnonzero(row == crop[0])
        np.testing.assert_array_equal(crop, row[found : found + 650])
        offsets.append(found)
    assert set(offsets) <= set(range(51)) and len(set(offsets)) > 10


def test_short_clips_are_tiled_and_exact_lengths_pass_through() -> None:
    clip = np.arange(1, 301, dtype=np.float32) / 300
    np.testing.assert_array_equal(
        aug.random_crop(clip, 1000, np.random.default_rng(0)), np.tile(clip, 4)[:1000]
    )
    np.testing.assert_array_equal(aug.random_crop(clip, 300, np.random.default_rng(0)), clip)
    batch = np.stack([clip, -clip])
    np.testing.assert_array_equal(
        aug.random_crop(batch, 650, np.random.default_rng(0)), np.tile(batch, 3)[:, :650]
    )
    one = aug.random_crop(np.array([0.25], np.float32), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(one, np.full(5, 0.25, np.float32))


def test_crop_batch_of_varying_lengths() -> None:
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (100, 800, 2000)]
    out = aug.random_crop_batch(clips, 500, np.random.default_rng(4))
    assert out.shape == (3, 500)
    np.testing.assert_array_equal(out[0], np.tile(clips[0], 5))
    for clip, crop in zip(clips[1:], out[1:], strict=True):
        (found,) = np.flatnonzero(clip == crop[0])
        np.testing.assert_array_equal(crop, clip[found : found + 500])


def test_crop_rejects_bad_arguments_and_leaves_its_input_alone() -> None:
    rng = np.random.default_rng(0)
    source = np.linspace(-1, 1, 100, dtype=np.float32)
    before = source.copy()
    aug.random_crop(source, 10, rng)
    np.testing.assert_array_equal(source, before)
    for bad in (0, -3, 2.5):
        with pytest.raises(UserError, match="n_samples"):
            aug.random_crop(source, bad, rng)
    with pytest.raises(UserError, match="empty"):
        aug.random_crop(np.zeros(0, np.float32), 10, rng)
    with pytest.raises(UserError, match="3-D"):
        aug.random_crop(np.zeros((2, 2, 2), np.float32), 1, rng)
    with pytest.raises(UserError, match="NaN"):
        aug.random_crop(np.array([0.0, np.nan], np.float32), 1, rng)


# ---------------------------------------------------------------------------------------------
# level


def test_loudness_normalise_hits_the_target_rms_per_clip() -> None:
    batch = np.stack([_speechlike(i, 0.5, peak) for i, peak in enumerate((0.002, 0.05, 0.3, 0.9))])
    for target in (-26.0, -20.0, -35.0):
        out = aug.loudness_normalise(batch, target)
        assert out.dtype == np.float32 and out.shape == batch.shape
        np.testing.assert_allclose(_rms_db(out), target, atol=0.01)
        # A pure gain: the waveform shape is unchanged.
        np.testing.assert_allclose(
            out / np.max(np.abs(out), axis=1, keepdims=True),
            batch / np.max(np.abs(batch), axis=1, keepdims=True),
            atol=1e-5,
        )


def test_loudness_normalise_keeps_silence_finite_zeros() -> None:
    batch = np.stack(
        [np.zeros(800, np.float32), np.full(800, 1e-7, np.float32), _speechlike(0, 0.05)]
    )
    out = aug.loudness_normalise(batch)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1], batch[1])  # below the silence threshold: untouched
    assert abs(_rms_db(out[2]) + 26.0) < 0.01


def test_loudness_normalise_keeps_peaks_in_full_scale() -> None:
    spiky = np.full(1000, 0.001, np.float32)
    spiky[::2] *= -1
    spiky[500] = 0.5  # crest factor ~ 40 dB: -6 dBFS RMS pushes the spike far past 1.0
    clipped = aug.loudness_normalise(spiky, -6.0, peak="clip")
    assert np.max(np.abs(clipped)) == 1.0 and np.sum(np.abs(clipped) == 1.0) == 1
    np.testing.assert_allclose(clipped[:500], spiky[:500] * (clipped[0] / spiky[0]), rtol=1e-5)
    scaled = aug.loudness_normalise(spiky, -6.0, peak="scale")
    assert np.max(np.abs(scaled)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(scaled, spiky / 0.5, rtol=1e-5)  # same shape, peak at 1
    with pytest.raises(UserError, match="target_dbfs"):
        aug.loudness_normalise(spiky, 3.0)
    with pytest.raises(UserError, match="peak"):
        aug.loudness_normalise(spiky, peak="soft")  # type: ignore[arg-type]


def test_random_gain_lands_in_its_db_range_per_clip() -> None:
    batch = np.stack([_speechlike(i, 0.25, 0.05) for i in range(64)])
    out = aug.random_gain(batch, np.random.default_rng(0), -6.0, 9.0)
    gains = _rms_db(out) - _rms_db(batch)
    assert np.all(gains >= -6.0 - 1e-3) and np.all(gains <= 9.0 + 1e-3)
    assert gains.max() - gains.min() > 10.0  # drawn per clip, across the range
    # One gain per clip: every sample of a clip is scaled alike.
    factors = 10 ** (gains / 20)
    np.testing.assert_allclose(
        out, batch * factors[:, None].astype(np.float32), rtol=1e-4, atol=1e-7
    )
    fixed = aug.random_gain(batch[0], np.random.default_rng(0), -3.0, -3.0)
    assert _rms_db(fixed) - _rms_db(batch[0]) == pytest.approx(-3.0, abs=1e-4)


def test_random_gain_clips_to_full_scale_unless_told_not_to() -> None:
    loud = _speechlike(0, 0.25, 0.9)
    assert np.max(np.abs(aug.random_gain(loud, np.random.default_rng(0), 6.0, 6.0))) == 1.0
    raw = aug.random_gain(loud, np.random.default_rng(0), 6.0, 6.0, clip=False)
    assert np.max(np.abs(raw)) == pytest.approx(0.9 * 10 ** (6 / 20), rel=1e-5)
    with pytest.raises(UserError, match="empty"):
        aug.random_gain(loud, np.random.default_rng(0), 3.0, -3.0)


# ---------------------------------------------------------------------------------------------
# noise


@pytest.mark.parametrize("colour", aug.NOISE_COLOURS)
def test_add_noise_measured_snr_lands_in_range(colour: str) -> None:
    batch = np.stack([_speechlike(i, 0.5, 0.3) for i in range(32)])
    out = aug.add_noise(batch, np.random.default_rng(1), 5.0, 20.0, colour=colour, clip=False)
    noise = out.astype(np.float64) - batch
    snr = _rms_db(batch) - _rms_db(noise)
    assert np.all(snr >= 5.0 - 0.01) and np.all(snr <= 20.0 + 0.01)
    assert snr.max() - snr.min() > 7.0


def _low_to_high_band_ratio_db(noise: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(noise, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(noise.shape[-1], 1 / SR)
    low = power[..., (freqs > 50) & (freqs < 500)].mean()
    high = power[..., freqs > 4000].mean()
    return float(10 * np.log10(low / high))


def test_noise_colours_have_their_spectral_tilt() -> None:
    silence_free = np.stack([_speechlike(i, 0.5, 0.3) for i in range(8)])
    tilts = {}
    for colour in aug.NOISE_COLOURS:
        out = aug.add_noise(silence_free, np.random.default_rng(2), 10.0, 10.0, colour, clip=False)
        tilts[colour] = _low_to_high_band_ratio_db(out.astype(np.float64) - silence_free)
    # Mean power in 50-500 Hz over 4-8 kHz: 1 (0 dB) for white, mean(1/f) ratio ln(10)/450 over
    # ln(2)/4000 (14.7 dB) for pink, mean(1/f**2) ratio (1/50 - 1/500)/450 over
    # (1/4000 - 1/8000)/4000 (31.1 dB) for brown.
    assert abs(tilts["white"]) < 1.0
    assert tilts["pink"] == pytest.approx(14.7, abs=1.5)
    assert tilts["brown"] == pytest.approx(31.1, abs=1.5)


def test_add_noise_is_seeded_keeps_silence_and_checks_arguments() -> None:
    clip = _speechlike(0, 0.5)
    a = aug.add_noise(clip, np.random.default_rng(7), colour=("white", "pink"))
    b = aug.add_noise(clip, np.random.default_rng(7), colour=("white", "pink"))
    c = aug.add_noise(clip, np.random.default_rng(8), colour=("white", "pink"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.max(np.abs(a)) <= 1.0
    silent = aug.add_noise(np.zeros(1000, np.float32), np.random.default_rng(0))
    np.testing.assert_array_equal(silent, 0.0)
    with pytest.raises(UserError, match="colour"):
        aug.add_noise(clip, np.random.default_rng(0), colour="purple")
    with pytest.raises(UserError, match="SNR"):
        aug.add_noise(clip, np.random.default_rng(0), 30.0, 10.0)


# ---------------------------------------------------------------------------------------------
# SpecAugment


def _runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[::2])


def test_spec_augment_masks_only_within_the_requested_counts_and_widths() -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((200, 64, 201)).astype(np.float32)
    sentinel = 1000.0  # no standard normal sample gets here
    out = aug.spec_augment(feats, np.random.default_rng(1), 2, 20, 2, 8, fill=sentinel)
    assert out.shape == feats.shape and out.dtype == feats.dtype
    widest_time = widest_freq = 0
    for before, after in zip(feats, out, strict=True):
        changed = after == sentinel
        np.testing.assert_array_equal(after[~changed], before[~changed])  # the rest untouched
        rows, cols = changed.all(axis=1), changed.all(axis=0)
        # Every masked cell lies in a fully masked band or a fully masked frame span.
        np.testing.assert_array_equal(changed, rows[:, None] | cols[None, :])
        time_runs, freq_runs = _runs(cols), _runs(rows)
        assert len(time_runs) <= 2 and sum(time_runs) <= 2 * 20
        assert len(freq_runs) <= 2 and sum(freq_runs) <= 2 * 8
        widest_time = max([widest_time, *time_runs])
        widest_freq = max([widest_freq, *freq_runs])
    assert widest_time >= 20 and widest_freq >= 8  # the full widths are reachable


def test_spec_augment_single_masks_never_exceed_their_width() -> None:
    feats = np.random.default_rng(0).standard_normal((300, 40, 100))
    out = aug.spec_augment(feats, np.random.default_rng(2), 1, 7, 1, 3, fill=1000.0)
    for after in out:
        changed = after == 1000.0
        assert all(w <= 7 for w in _runs(changed.all(axis=0)))
        assert all(w <= 3 for w in _runs(changed.all(axis=1)))


def test_spec_augment_default_fill_is_each_clips_mean() -> None:
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((4, 30, 50)) + np.arange(4)[:, None, None] * 10
    out = aug.spec_augment(feats, np.random.default_rng(4), 2, 10, 2, 5)
    for before, after in zip(feats, out, strict=True):
        changed = after != before
        assert changed.any()
        np.testing.assert_allclose(after[changed], before.mean())
    single = aug.spec_augment(feats[0], np.random.default_rng(4), 2, 10, 2, 5)
    assert single.shape == (30, 50)
    np.testing.assert_array_equal(feats, feats.copy())  # input not modified


def test_spec_augment_without_masks_is_the_identity_and_checks_arguments() -> None:
    feats = np.random.default_rng(0).standard_normal((16, 20))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(aug.spec_augment(feats, rng, 0, 20, 0, 8), feats)
    np.testing.assert_array_equal(aug.spec_augment(feats, rng, 3, 0, 3, 0), feats)
    with pytest.raises(UserError, match="time_width"):
        aug.spec_augment(feats, rng, time_width=-1)
    with pytest.raises(UserError, match="features"):
        aug.spec_augment(feats[0], rng)


# ---------------------------------------------------------------------------------------------
# codec round trip


@pytest.mark.parametrize(
    ("codec", "level", "mode"),
    [
        ("mp3", 0.0, None),
        ("mp3", 0.9, None),
        ("mp3", 0.5, "CONSTANT"),
        ("ogg", 0.0, None),
        ("ogg", 1.0, None),
    ],
)
def test_codec_copy_is_lossy_same_length_and_time_aligned(
    codec: str, level: float, mode: str | None
) -> None:
    clip = _speechlike(0, 1.0)
    copy = aug.codec_round_trip(clip, SR, codec, compression_level=level, bitrate_mode=mode)  # type: ignore[arg-type]
    assert copy.shape == clip.shape and copy.dtype == np.float32
    assert np.isfinite(copy).all() and np.max(np.abs(copy)) <= 1.0
    assert np.max(np.abs(copy - clip)) > 1e-3  # lossy: not the source
    assert _lag(clip, copy) == 0
    assert np.corrcoef(clip, copy)[0, 1] > 0.9


def test_mp3_without_a_gapless_tag_is_realigned_by_cross_correlation() -> None:
    clip = _speechlike(1, 1.0)
    # Premise: at this low constant bitrate the encoder cannot write its info tag, so the raw
    # decode comes back longer, with the encoder delay in front.
    buf = io.BytesIO()
    sf.write(buf, clip, SR, format="MP3", compression_level=0.95, bitrate_mode="CONSTANT")
    buf.seek(0)
    raw, _ = sf.read(buf, dtype="float32")
    assert raw.size > clip.size and _lag(clip, raw[: clip.size], 1200) > 1000
    copy = aug.codec_round_trip(clip, SR, "mp3", compression_level=0.95, bitrate_mode="CONSTANT")
    assert copy.shape == clip.shape
    assert _lag(clip, copy) == 0
    assert np.corrcoef(clip, copy)[0, 1] > 0.9


def test_codec_levels_drawn_from_the_generator() -> None:
    batch = np.stack([_speechlike(i, 0.5) for i in range(3)])
    a = aug.codec_round_trip(batch, SR, "ogg", np.random.default_rng(0))
    b = aug.codec_round_trip(batch, SR, "ogg", np.random.default_rng(0))
    c = aug.codec_round_trip(batch, SR, "ogg", np.random.default_rng(1), level_range=(0.9, 1.0))
    assert a.shape == batch.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(aug.codec_round_trip(np.zeros(3000, np.float32), SR), 0.0)
    for codec in aug.CODECS:  # tiny clips keep their length too
        assert aug.codec_round_trip(batch[0, :37], SR, codec).shape == (37,)


def test_codec_rejects_bad_arguments() -> None:
    clip = _speechlike(0, 0.1)
    with pytest.raises(UserError, match="codec"):
        aug.codec_round_trip(clip, SR, "aac")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="compression_level"):
        aug.codec_round_trip(clip, SR, "mp3", compression_level=1.5)
    with pytest.raises(UserError, match="bitrate_mode"):
        aug.codec_round_trip(clip, SR, "ogg", bitrate_mode="CONSTANT")
    with pytest.raises(UserError, match="mp3 round trip failed"):
        aug.codec_round_trip(clip, 12345, "mp3")  # not an MPEG sample rate


# ---------------------------------------------------------------------------------------------
# composition


def test_compose_and_sometimes_are_deterministic_and_respect_p() -> None:
    batch = np.stack([_speechlike(i, 0.5, 0.1) for i in range(16)])
    chain = aug.compose(
        lambda waves, rng: aug.random_crop(waves, 4000, rng),
        partial(aug.random_gain, min_db=-3.0, max_db=3.0),
        aug.sometimes(partial(aug.add_noise, min_snr_db=20.0, max_snr_db=30.0), 0.5),
    )
    a = chain(batch, np.random.default_rng(5))
    np.testing.assert_array_equal(a, chain(batch, np.random.default_rng(5)))
    assert a.shape == (16, 4000) and not np.array_equal(a, chain(batch, np.random.default_rng(6)))
    noise = partial(aug.add_noise, min_snr_db=20.0, max_snr_db=30.0)
    np.testing.assert_array_equal(aug.sometimes(noise, 0.0)(batch, np.random.default_rng(0)), batch)
    rng = np.random.default_rng(9)
    always = aug.sometimes(noise, 1.0)(batch, rng)
    reference_rng = np.random.default_rng(9)
    reference_rng.random(16)  # the draw `sometimes` makes before applying the step
    np.testing.assert_array_equal(always, noise(batch, reference_rng))
    half = aug.sometimes(noise, 0.5)(batch, np.random.default_rng(1))
    untouched = np.all(half == batch, axis=1)
    assert 0 < untouched.sum() < 16
    with pytest.raises(UserError, match="probability"):
        aug.sometimes(noise, 1.5)


# ---------------------------------------------------------------------------------------------
# RawBoost

REFERENCE_DEFAULTS = {  # TakHemlata/RawBoost-antispoofing main.py argument defaults
    "n_bands": 5,
    "min_freq_hz": 20,
    "max_freq_hz": 8000,
    "min_bandwidth_hz": 100,
    "max_bandwidth_hz": 1000,
    "min_coeffs": 10,
    "max_coeffs": 100,
    "min_gain_db": 0,
    "max_gain_db": 0,
    "min_bias_lin_nonlin_db": 5,
    "max_bias_lin_nonlin_db": 20,
    "nonlinear_order": 5,
    "max_impulse_percent": 10,
    "impulse_gain": 2,
    "min_snr_db": 10,
    "max_snr_db": 40,
}


def test_rawboost_params_default_to_the_reference_values() -> None:
    assert asdict(rb.RawBoostParams()) == REFERENCE_DEFAULTS
    with pytest.raises(UserError, match="snr"):
        rb.RawBoostParams(min_snr_db=30, max_snr_db=20)
    with pytest.raises(UserError, match="n_bands"):
        rb.RawBoostParams(n_bands=0)
    with pytest.raises(Exception, match="frozen|cannot assign"):
        rb.RawBoostParams().n_bands = 3  # type: ignore[misc]


@pytest.mark.parametrize("algo", range(1, 9))
def test_rawboost_is_seeded_changes_the_signal_and_stays_sane(algo: int) -> None:
    clip = _speechlike(0, 1.0, 0.5)
    a = rb.rawboost(clip, np.random.default_rng(11), algo)
    b = rb.rawboost(clip, np.random.default_rng(11), algo)
    c = rb.rawboost(clip, np.random.default_rng(12), algo)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == clip.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.max(np.abs(a - clip)) > 1e-3  # the signal is changed
    # LnL/ISD/parallel outputs are peak-limited to 1; SSI adds noise after the last limit.
    assert np.max(np.abs(a)) <= (1.0 if algo in (1, 2, 5, 8) else 1.2)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) > 1e-3  # not wiped out


def test_rawboost_algo_zero_is_the_identity_and_batches_draw_per_clip() -> None:
    clip = _speechlike(0, 0.5)
    np.testing.assert_array_equal(rb.rawboost(clip, np.random.default_rng(0), 0), clip)
    batch = np.stack([clip, clip, clip])
    out = rb.rawboost(batch, np.random.default_rng(0), 4)
    assert out.shape == batch.shape
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    with pytest.raises(UserError, match="algo"):
        rb.rawboost(clip, np.random.default_rng(0), 9)
    with pytest.raises(UserError, match="empty"):
        rb.rawboost(np.zeros(0), np.random.default_rng(0), 1)


def test_notch_design_matches_scipy_firwin_bandstop() -> None:
    from scipy.signal import firwin  # test-only: the module itself avoids scipy.signal

    for taps, low, high in ((11, 20.0, 120.0), (51, 3000.0, 3900.0), (99, 7400.0, 7999.999)):
        expected = firwin(taps, [low, high], window="hamming", fs=SR)
        np.testing.assert_allclose(rb._bandstop(taps, low, high, SR), expected, atol=1e-12)


def test_notch_cascade_is_linear_phase_with_the_drawn_peak_gain() -> None:
    params = rb.RawBoostParams(min_gain_db=-6.0, max_gain_db=-6.0)
    for seed in range(5):
        h = rb.notch_filter(np.random.default_rng(seed), params, SR)
        assert h.size % 2 == 1
        np.testing.assert_allclose(h, h[::-1], atol=1e-15)  # symmetric: linear phase
        response = np.abs(np.fft.rfft(h, 1 << 15))
        assert response.max() == pytest.approx(10 ** (-6 / 20), rel=1e-3)
        assert response.min() < 0.5 * response.max()  # it does notch something out


def test_lnl_linear_order_is_linear_and_time_aligned_higher_orders_are_not() -> None:
    clip = _speechlike(2, 1.0, 0.4)
    linear = rb.RawBoostParams(nonlinear_order=1)
    y_full = rb.lnl_convolutive_noise(clip, np.random.default_rng(3), linear)
    y_half = rb.lnl_convolutive_noise(0.5 * clip, np.random.default_rng(3), linear)
    np.testing.assert_allclose(y_half, 0.5 * y_full, atol=1e-6)
    assert _lag(clip, y_full) == 0  # group delay removed
    n_full = rb.lnl_convolutive_noise(clip, np.random.default_rng(3))
    n_half = rb.lnl_convolutive_noise(0.5 * clip, np.random.default_rng(3))
    assert np.max(np.abs(n_half - 0.5 * n_full)) > 1e-4


def test_isd_touches_at_most_p_percent_of_samples_by_at_most_g_sd() -> None:
    clip = _speechlike(4, 1.0, 0.2)  # quiet: the 3x impulses stay below full scale
    for seed in range(10):
        out = rb.isd_additive_noise(clip, np.random.default_rng(seed))
        changed = out != clip
        assert changed.mean() <= 0.10
        ratio = out[changed].astype(np.float64) / clip[changed]
        assert np.all(ratio >= 1 - 2.0 - 1e-5) and np.all(ratio <= 1 + 2.0 + 1e-5)


def test_ssi_adds_noise_within_its_snr_range() -> None:
    clip = _speechlike(5, 1.0, 0.3)
    snrs = []
    for seed in range(10):
        out = rb.ssi_additive_noise(clip, np.random.default_rng(seed))
        noise = out.astype(np.float64) - clip
        snrs.append(float(_rms_db(clip) - _rms_db(noise)))
    assert min(snrs) >= 10.0 - 0.05 and max(snrs) <= 40.0 + 0.05
    assert max(snrs) - min(snrs) > 5.0


def test_core_modules_stay_light() -> None:
    """No scipy.signal (slow import) and nothing from the training stack in core."""
    code = (
        "import sys, deepfake_audio.dsp.augment, deepfake_audio.dsp.rawboost\n"
        "heavy = {'scipy.signal', 'tensorflow', 'keras', 'mlflow', 'keras_tuner', 'dvc'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
