"""Training input that breaks shortcuts: the waveform kind, augmented training batches, codec
copies, class weights and selection of the best validation epoch.

Real parts throughout: the dataset stage on files on disk (and the demo corpus), the
tf.data pipelines the stages fit on, Keras fits of tiny models, the served detector.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import tiny_hparams, voice
from deepfake_audio.config.kinds import LOGMEL
from deepfake_audio.config.params import ParamsError, parse_params
from deepfake_audio.dataset.shards import SpectrogramDataset, decode_waves, encode_waves
from deepfake_audio.dataset.train_batches import (
    TrainingBatches,
    augment_batch,
    class_weights,
    training_input,
)
from deepfake_audio.dsp.audio import fix_length
from deepfake_audio.models import network
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

RATE = 16000
HPARAMS = tiny_hparams()
# Codec copies and waves on; the in-batch steps left to each test.
# Every random step off but those a test switches on (params.yaml turns noise and SpecAugment
# on with augmentation).
QUIET = {"noise_p": 0.0, "rawboost_p": 0.0, "spec_time_masks": 0, "spec_freq_masks": 0}
AUGMENT = {"enabled": True, **QUIET, "codecs": ["mp3", "ogg"], "codec_copies": 2}


def _voice(seed: int, seconds: float) -> np.ndarray:
    return voice(seed, seconds, RATE)


def _corpus(root: Path) -> Path:
    """split/class folders of WAV files of different lengths (0.4 to 2.2 s), one speaker
    prefix per file pair so groups are visible in the manifest."""
    seed = 0
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                seed += 1
                seconds = (0.4, 1.3, 2.2)[i]
                sf.write(folder / f"s{seed}_{label}_{i}.wav", _voice(seed, seconds), RATE)
    return root


def _params(root: Path, kind: str = "logmel", augment: dict | None = None, **features):
    return parse_params(
        {
            "seed": 5,
            # Preprocessing off: these tests pin the wave path itself (short clips padded,
            # stored waves equal to load_wave's); tests/test_preprocess.py covers it on.
            "data": {
                "source": "folders",
                "path": str(root),
                "shard_size": 4,
                "preprocess": {"enabled": False},
            },
            "features": {
                "kind": kind,
                "clip_seconds": 0.5,
                "max_seconds": 1.5,
                "n_mels": 16,
                "workers": 2,
                **features,
            },
            "model": {"architecture": "wave_cnn" if kind == "waveform" else "compact_cnn"},
            "augment": augment if augment is not None else {"enabled": False},
        }
    )


def _build(params, out: Path) -> SpectrogramDataset:
    dataset.build(params, list_clips(params), out, out.parent / f"{out.name}-reports")
    return SpectrogramDataset(out)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One corpus built three ways: log-mel plain, log-mel augmented, waveform augmented."""
    root = tmp_path_factory.mktemp("training-input")
    corpus = _corpus(root / "corpus")
    return {
        "corpus": corpus,
        "plain": _build(_params(corpus), root / "plain"),
        "augmented": _build(_params(corpus, augment=AUGMENT), root / "augmented"),
        "waveform": _build(_params(corpus, "waveform", AUGMENT), root / "waveform"),
    }


def _batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x, y) for x, y in ds.as_numpy_iterator()]


# --- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"augment": {"enabled": "yes"}}, "augment.enabled: 'yes' is not true or false"),
        ({"augment": {"noise_p": 1.5}}, "augment.noise_p: 1.5 is above the maximum 1.0"),
        ({"augment": {"rawboost_p": -0.1}}, "augment.rawboost_p: -0.1 is below the minimum 0.0"),
        ({"augment": {"gain_db": [6, -6]}}, "augment.gain_db: min 6 is above max -6"),
        ({"augment": {"gain_db": 3}}, "augment.gain_db: 3 is not a [min, max] pair"),
        ({"augment": {"noise_snr_db": [0, 500]}}, "augment.noise_snr_db: [0, 500] is outside"),
        ({"augment": {"rawboost_algo": 9}}, "augment.rawboost_algo: 9 is not one of 0-8"),
        ({"augment": {"codecs": ["aac"]}}, "augment.codecs: ['aac'] is not a list drawn from"),
        ({"augment": {"codecs": ["mp3", "mp3"]}}, "augment.codecs: ['mp3', 'mp3'] names a codec"),
        (
            {"augment": {"codecs": [], "codec_copies": 1}},
            "augment.codec_copies: 1 copies need augment.codecs",
        ),
        ({"augment": {"codec_copies": 99, "codecs": ["ogg"]}}, "augment.codec_copies: 99 is above"),
        ({"augment": {"spec_time_masks": -1}}, "augment.spec_time_masks: -1 is below the minimum"),
        ({"augment": {"mixup": 0.2}}, "augment.mixup: unknown key"),
        (
            {"features": {"clip_seconds": 2.0, "max_seconds": 1.0}},
            "features.max_seconds: 1 is below features.clip_seconds 2",
        ),
        ({"train": {"class_weight": "inverse"}}, "train.class_weight: 'inverse' is not allowed"),
        (
            {"features": {"kind": "waveform"}, "model": {"architecture": "compact_cnn"}},
            "model.architecture: 'compact_cnn' does not take features.kind 'waveform'",
        ),
        (
            {"features": {"kind": "logmel"}, "model": {"architecture": "wave_cnn"}},
            "model.architecture: 'wave_cnn' does not take features.kind 'logmel'",
        ),
    ],
)
def test_bad_training_params_fail_naming_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(patch)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_early_stopping_and_the_lr_schedule_follow_the_objective() -> None:
    params = parse_params({"tune": {"objective": "val_eer"}})
    assert params.tune.early_stopping.monitor == "val_eer"
    assert params.tune.reduce_lr.monitor == "val_eer"
    params = parse_params({"tune": {"objective": "val_accuracy"}})
    assert params.tune.early_stopping.monitor == "val_accuracy"
    explicit = parse_params({"tune": {"early_stopping": {"monitor": "val_loss"}}})
    assert explicit.tune.early_stopping.monitor == "val_loss"


def _kept_epoch(monitor: str, mode: str, history: list[tuple[float, float]], patience: int = 2):
    """Feed BestEpoch a history of (monitor value, val_loss); (kept epoch, stopped epoch)."""
    from deepfake_audio.stages.callbacks import BestEpoch

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    stop = BestEpoch(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
    stop.set_model(model)
    stop.on_train_begin()
    for epoch, (value, loss) in enumerate(history):
        model.layers[0].bias.assign([float(epoch)])  # the weights say which epoch they are
        stop.on_epoch_end(epoch, {monitor: value, "val_loss": loss})
        if getattr(model, "stop_training", False):
            break
    stop.on_train_end()
    return int(model.layers[0].bias.numpy()[0]), stop.stopped_epoch


def test_the_kept_epoch_breaks_step_metric_ties_by_validation_loss() -> None:
    # EER reaches its best at epoch 1 and stays there while the loss keeps falling: Keras
    # alone keeps epoch 1 and stops at epoch 3; the tie-break keeps training and keeps epoch 4.
    eer = [(0.40, 0.70), (0.32, 0.65), (0.32, 0.60), (0.32, 0.55), (0.32, 0.50), (0.36, 0.49)]
    kept, stopped = _kept_epoch("val_eer", "min", eer + [(0.36, 0.48)] * 3)
    assert kept == 4 and stopped == 6
    # A tie with a higher loss is no improvement; a strictly better EER always is.
    kept, _ = _kept_epoch("val_eer", "min", [(0.4, 0.5), (0.4, 0.6), (0.3, 0.9), (0.3, 0.95)])
    assert kept == 2
    # Accuracy is a step metric too (higher is better there); the loss still breaks ties.
    kept, _ = _kept_epoch("val_accuracy", "max", [(0.6, 0.7), (0.7, 0.6), (0.7, 0.5), (0.5, 0.4)])
    assert kept == 2
    # A continuous monitor needs no tie-break: val_loss is left to Keras.
    kept, _ = _kept_epoch("val_loss", "min", [(0.7, 0.7), (0.5, 0.5), (0.5, 0.5), (0.6, 0.6)])
    assert kept == 1


def test_augment_params_flatten_for_mlflow() -> None:
    params = parse_params({"augment": {"enabled": True, "codecs": ["mp3"], "codec_copies": 1}})
    flat = params.augment.flat()
    assert flat["augment.enabled"] is True and flat["augment.codecs"] == ["mp3"]
    assert {"augment.noise_p", "augment.rawboost_algo", "augment.spec_freq_width"} <= set(flat)


# --- the waveform kind ------------------------------------------------------------------------


def test_waveform_shards_are_int16_and_read_back_as_the_wave(built: dict) -> None:
    data: SpectrogramDataset = built["waveform"]
    assert data.meta["shard_dtype"] == "int16"
    assert data.input_shape == (8000, 1) and data.feature_shape == (8000,)
    assert data.norm_axis == 2 and data.mean.shape == (1,) and data.std[0] > 0
    shard = np.load(data.shards("validation")[0])
    assert shard.dtype == np.int16
    # The test split through the reader is the loaded clip itself, within int16 rounding.
    manifest = data.manifest("test")
    (x, _), *_ = _batches(data.tf_dataset("test", batch_size=64))
    fp = data.features
    first = built["corpus"] / manifest["path"][0]
    expected = dataset.file_features(first, fp)[0]
    assert x.shape == (len(manifest), 8000, 1)
    assert np.max(np.abs(x[0, :, 0] - expected)) <= 0.5 / 32767 + 1e-7


def test_the_models_normalisation_layer_standardises_a_waveform(built: dict) -> None:
    """One mean and variance for all samples, on the channel axis of (n_samples, 1)."""
    data: SpectrogramDataset = built["waveform"]
    model = network.build(
        HPARAMS, "wave_cnn", data.input_shape, data.mean, data.std, data.norm_axis
    )
    x = np.concatenate([x for x, _ in _batches(data.tf_dataset("train", 64))])
    normalised = np.asarray(model.get_layer("normalise")(x))
    assert normalised.shape == x.shape
    assert abs(float(normalised.mean())) < 0.05 and float(normalised.std()) == pytest.approx(
        1.0, abs=0.05
    )


def test_int16_wave_shards_round_within_half_a_step_whatever_the_level() -> None:
    """int16's error is a fixed floor (as in any 16-bit recording); float16's follows each
    sample (up to 2**-11 of its value), so it is largest where the speech is loudest."""
    rng = np.random.default_rng(0)
    wave = np.clip(0.05 * rng.standard_normal(16000), -1, 1).astype(np.float32)  # -26 dBFS
    wave[:100] = np.linspace(-1.0, 1.0, 100)  # full scale survives (32767, not 32768)
    int16_error = np.abs(decode_waves(encode_waves(wave)) - wave)
    assert int16_error.max() <= 0.5 / 32767 + 1e-7
    snr = 10 * np.log10(np.mean(wave[100:] ** 2) / np.mean(int16_error[100:] ** 2))
    assert snr > 70
    float16_error = np.abs(wave.astype(np.float16).astype(np.float32) - wave)
    assert float16_error[:100].max() > 4 * int16_error.max()


def test_old_float16_datasets_read_as_before(built: dict, tmp_path: Path) -> None:
    """A dataset written before stats.json named its shard dtype reads exactly as it did."""
    copy = tmp_path / "old"
    shutil.copytree(built["plain"].root, copy)
    meta = json.loads((copy / "stats.json").read_text())
    for key in ("shard_dtype", "shard_scale", "train_waves", "augment"):
        meta.pop(key, None)
    (copy / "stats.json").write_text(json.dumps(meta))
    old, new = SpectrogramDataset(copy), built["plain"]
    for (xa, ya), (xb, yb) in zip(
        _batches(old.tf_dataset("test", 4)), _batches(new.tf_dataset("test", 4)), strict=True
    ):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_a_waveform_model_scores_through_the_served_detector(built: dict) -> None:
    """No serving change for the new kind: `serving.pyfunc.Detector` decodes, cuts windows and
    passes the waves (n_samples, 1) to the model, as the dataset stage stored them."""
    from deepfake_audio.serving.limits import Limits
    from deepfake_audio.serving.pyfunc import Detector, make_config

    data: SpectrogramDataset = built["waveform"]
    model = network.build(
        HPARAMS, "wave_cnn", data.input_shape, data.mean, data.std, data.norm_axis
    )
    detector = Detector(model, make_config(data.meta["features"], 0.0), Limits.local())
    files = sorted((built["corpus"] / "testing").rglob("*.wav"))
    scores = detector.score(pd.DataFrame({"path": [str(f) for f in files]}))
    assert list(scores["error"]) == [""] * len(files)
    assert np.all(np.isfinite(scores["fake_probability"].astype(float)))
    # A 0.4 s file is one window, the dataset stage's own wave; 2.2 s files are several.
    short = next(f for f in files if f.name.endswith("_0.wav"))
    window = detector.windows("path", str(short))
    fp = data.features
    np.testing.assert_array_equal(window[0, :, 0], dataset.file_features(short, fp)[0])
    # 2.2 s in 0.5 s windows every 0.25 s: starts 0, 0.25, ..., 1.5 and one at the end, 1.7.
    windows = dict(zip((f.name for f in files), scores["windows"], strict=True))
    assert {windows[f.name] for f in files if f.name.endswith("_2.wav")} == {8}


# --- codec copies -----------------------------------------------------------------------------


def test_codec_copies_decode_differ_and_stay_with_their_source(built: dict) -> None:
    data: SpectrogramDataset = built["augmented"]
    train = data.manifest("train")
    sources = train[train["copy_of"] == ""]
    copies = train[train["copy_of"] != ""]
    assert len(sources) == 6 and len(copies) == 12  # two copies of each training clip
    for split in ("validation", "test"):
        assert (data.manifest(split)["copy_of"] == "").all(), f"a codec copy in {split}"
    assert data.meta["counts"]["train"] == {"bonafide": 3, "spoof": 3}  # sources, not rows
    by_id = sources.set_index("clip_id")
    batches = TrainingBatches(data, _params(built["corpus"], augment=AUGMENT).augment, 0)
    codecs = set()
    for i, row in copies.iterrows():
        source = by_id.loc[row["copy_of"]]
        # Same speaker (group), label, file and hash: it can only ever sit where its source is.
        for column in ("speaker", "label", "target", "path", "sha256", "split"):
            assert row[column] == source[column], column
        codec, level = row["augmentation"].split("@")
        codecs.add(codec)
        assert 0.0 <= float(level) <= 0.9
        src_index = int(np.flatnonzero(train["clip_id"] == row["copy_of"])[0])
        copy_wave, src_wave = batches.waves(np.array([i, src_index]))
        assert copy_wave.shape == src_wave.shape and row["wave_samples"] == src_wave.size
        assert np.all(np.isfinite(copy_wave))
        assert not np.array_equal(copy_wave, src_wave)  # the codec changed it ...
        assert np.corrcoef(copy_wave, src_wave)[0, 1] > 0.9  # ... time-aligned, same speech
        rms = lambda w: float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))  # noqa: E731
        assert rms(copy_wave) == pytest.approx(rms(src_wave), rel=0.02)  # level matched
    assert codecs == {"mp3", "ogg"}
    # Each clip got one copy of each codec (two copies cycle through two codecs).
    for _, group in copies.groupby("copy_of"):
        assert sorted(a.split("@")[0] for a in group["augmentation"]) == ["mp3", "ogg"]


def test_a_bad_training_file_is_reported_once_and_gets_no_copies(
    built: dict, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(built["corpus"], corpus)
    (corpus / "training" / "real" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    params = _params(corpus, augment=AUGMENT)
    summary = dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert summary["rejected"] == 1 and summary["train_codec_copies"] == 12
    bad = (tmp_path / "reports" / "bad_files.csv").read_text().splitlines()
    assert len(bad) == 2 and "broken.wav" in bad[1]
    manifest = SpectrogramDataset(tmp_path / "spec").manifest("train")
    assert not manifest["path"].str.contains("broken").any()


def test_the_baseline_sees_the_same_source_clips(built: dict, tmp_path: Path) -> None:
    from deepfake_audio.stages import baseline

    params = _params(built["corpus"], augment=AUGMENT)
    lfcc = baseline.build_features(params, tmp_path)
    baseline.check_same_clips(lfcc, built["augmented"])  # copies are not clips
    assert not lfcc.has_train_waves and len(lfcc.manifest("train")) == 6


def test_evaluation_splits_are_bit_identical_with_augment_on_and_off(built: dict) -> None:
    plain, augmented = built["plain"], built["augmented"]
    for split in ("validation", "test"):
        for a, b in zip(plain.shards(split), augmented.shards(split), strict=True):
            assert a.read_bytes() == b.read_bytes()
        for (xa, ya), (xb, yb) in zip(
            _batches(plain.tf_dataset(split, 4)),
            _batches(augmented.tf_dataset(split, 4)),
            strict=True,
        ):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert plain.mean.tolist() != [] and not plain.has_train_waves and augmented.has_train_waves


# --- augmented batches ------------------------------------------------------------------------


def _waveform_fp(**augment):
    params = parse_params(
        {
            "features": {"kind": "waveform", "clip_seconds": 0.5, "max_seconds": 1.5},
            "model": {"architecture": "wave_cnn"},
            "augment": {"enabled": True, "gain_db": [0, 0], **QUIET, **augment},
        }
    )
    return params.features, params.augment


def test_random_windows_stay_in_bounds_and_short_clips_pad_as_in_evaluation() -> None:
    fp, augment = _waveform_fp(random_crop=True)
    rng = np.random.default_rng(1)
    long = np.arange(20000, dtype=np.float32) / 20000  # a ramp: a window's start is its value
    short = _voice(3, 0.3)
    starts = set()
    for _ in range(40):
        x = augment_batch([long, short], rng, augment, fp)[:, :, 0]
        start = int(round(float(x[0, 0]) * 20000))
        assert 0 <= start <= 20000 - 8000
        np.testing.assert_array_equal(x[0], long[start : start + 8000])
        np.testing.assert_array_equal(x[1], fix_length(short, 8000, crop=fp.crop, pad=fp.pad))
        starts.add(start)
    assert len(starts) > 30  # random, not a fixed rule
    fixed_fp, fixed = _waveform_fp(random_crop=False)
    x = augment_batch([long], rng, fixed, fixed_fp)[0, :, 0]
    np.testing.assert_array_equal(x, fix_length(long, 8000, crop="center"))


def test_noise_and_rawboost_keep_the_window_level_and_gain_moves_it() -> None:
    wave = _voice(4, 0.5)
    rms = lambda w: np.sqrt(np.mean(np.square(w, dtype=np.float64), axis=-1))  # noqa: E731
    fp, noisy = _waveform_fp(noise_p=1.0, noise_snr_db=[5, 5], rawboost_p=1.0, rawboost_algo=5)
    x = augment_batch([wave] * 8, np.random.default_rng(0), noisy, fp)[:, :, 0]
    assert not np.allclose(x[0], wave)
    np.testing.assert_allclose(rms(x), rms(wave), rtol=1e-3)  # level matched after the channel
    fp, gained = _waveform_fp(gain_db=[-6, 6])
    x = augment_batch([wave] * 64, np.random.default_rng(0), gained, fp)[:, :, 0]
    gains = 20 * np.log10(rms(x) / rms(wave))
    assert gains.min() >= -6.001 and gains.max() <= 6.001 and gains.std() > 2


def test_spec_augment_masks_spectral_training_batches(built: dict) -> None:
    fp = built["augmented"].features
    params = parse_params(
        {
            "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16},
            "augment": {"enabled": True, **QUIET, "spec_freq_masks": 2, "spec_freq_width": 4},
        }
    )
    wave = _voice(5, 0.5)
    x = augment_batch([wave] * 16, np.random.default_rng(0), params.augment, fp)[..., 0]
    # A masked band is constant along time (filled with the clip's mean).
    constant_rows = np.sum(np.ptp(x, axis=2) == 0, axis=1)
    assert constant_rows.max() >= 1 and x.shape == (16, 16, 51)


def test_training_batches_vary_by_epoch_and_evaluation_batches_do_not(built: dict) -> None:
    data: SpectrogramDataset = built["augmented"]
    params = _params(built["corpus"], augment={**AUGMENT, "noise_p": 0.5})
    train = training_input(data, params).dataset
    first, second = _batches(train), _batches(train)
    assert sum(len(y) for _, y in first) == 6  # each source once an epoch (or a copy of it)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    val = data.tf_dataset("validation", 4)
    for (xa, _), (xb, _) in zip(_batches(val), _batches(val), strict=True):
        np.testing.assert_array_equal(xa, xb)


def test_each_epoch_draws_a_clip_or_one_of_its_codec_copies(built: dict) -> None:
    data: SpectrogramDataset = built["waveform"]
    no_other = {"gain_db": [0, 0], "random_crop": False}
    params = _params(built["corpus"], "waveform", {**AUGMENT, **no_other})
    batches = TrainingBatches(data, params.augment, 0)
    assert len(batches) == 6 and [len(v) for v in batches.variants] == [3] * 6
    seen = {batches.batch(np.array([0]), seed)[0].tobytes() for seed in range(30)}
    assert len(seen) == 3  # the source, its MP3 and its OGG copy
    targets = {float(batches.batch(np.array([0]), seed)[1][0]) for seed in range(30)}
    assert len(targets) == 1


def test_augmented_training_is_deterministic_under_the_seed(built: dict) -> None:
    data: SpectrogramDataset = built["augmented"]
    augment = {**AUGMENT, "noise_p": 0.5, "rawboost_p": 0.5, "spec_time_masks": 1}
    params = _params(built["corpus"], augment=augment)
    one, two = training_input(data, params).dataset, training_input(data, params).dataset
    for _ in range(2):  # two epochs each
        for (xa, ya), (xb, yb) in zip(_batches(one), _batches(two), strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    other = parse_params({**_raw(params), "seed": 6})
    a = np.concatenate([x for x, _ in _batches(training_input(data, other).dataset)])
    b = np.concatenate([x for x, _ in _batches(training_input(data, params).dataset)])
    assert not np.array_equal(a, b)


def _raw(params) -> dict:
    return {name: params.section(name) for name in ("data", "features", "model", "augment")} | {
        "seed": params.seed
    }


def test_without_augmentation_training_is_the_in_memory_path(built: dict) -> None:
    data: SpectrogramDataset = built["plain"]
    params = _params(built["corpus"])
    fit = training_input(data, params)
    same = data.tf_dataset("train", params.tune.batch_size, shuffle=True, seed=params.seed)
    for (xa, _), (xb, _) in zip(_batches(fit.dataset), _batches(same), strict=True):
        np.testing.assert_array_equal(xa, xb)
    assert fit.params == {
        "augment.enabled": False,  # nothing else: settings that did nothing are not logged
        "class_weight.bonafide": 1.0,
        "class_weight.spoof": 1.0,
    }


def test_augmentation_needs_the_training_waves(built: dict) -> None:
    from deepfake_audio.core.errors import UserError

    params = _params(built["corpus"], augment={"enabled": True})
    with pytest.raises(UserError, match="rerun `dvc repro dataset`"):
        training_input(built["plain"], params)


# --- class weights ----------------------------------------------------------------------------


def test_balanced_class_weights_give_each_class_half_the_loss() -> None:
    targets = np.array([1] * 10 + [0] * 90)  # ASVspoof 2019 LA's 1 : 9
    weights = class_weights(targets, "balanced")
    assert weights == {0: pytest.approx(100 / 180), 1: pytest.approx(100 / 20)}
    assert weights[1] * 10 == pytest.approx(weights[0] * 90)
    assert class_weights(np.array([0, 1, 0, 1]), "balanced") == {0: 1.0, 1: 1.0}
    assert class_weights(targets, "none") is None


def test_training_input_logs_augment_and_class_weights(built: dict) -> None:
    params = _params(built["corpus"], augment={**AUGMENT, "noise_p": 0.25})
    logged = training_input(built["augmented"], params).params
    assert logged["augment.noise_p"] == 0.25 and logged["augment.codecs"] == "['mp3', 'ogg']"
    assert logged["class_weight.bonafide"] == 1.0 and logged["class_weight.spoof"] == 1.0


# --- selection on validation ------------------------------------------------------------------


class _FakeEER(keras.callbacks.Callback):
    """Writes a scripted val_eer and records the weights each epoch ended with."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs["val_eer"] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_the_kept_model_is_the_best_validation_epoch_without_an_early_stop() -> None:
    from deepfake_audio.stages.callbacks import ValidationEER, standard_callbacks

    params = parse_params(None)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callbacks = standard_callbacks(params, None, np.array([0, 1]))
    assert isinstance(callbacks[0], ValidationEER)  # val_eer is in the logs before ...
    monitors = [c for c in callbacks if hasattr(c, "monitor")]
    assert [c.monitor for c in monitors] == ["val_eer", "val_eer"]  # ... these read it
    assert all(c.mode == "min" for c in monitors)
    fake = _FakeEER([0.4, 0.1, 0.3, 0.35])  # best at epoch 2; patience 5: no early stop
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[fake, *callbacks[1:]])
    assert len(history.history["loss"]) == 4
    for got, best in zip(model.get_weights(), fake.weights[1], strict=True):
        np.testing.assert_array_equal(got, best)


def test_a_resumed_search_logs_what_it_logged_before() -> None:
    """Settings of augmentation that is off neither rename the search nor change what its
    parent run logs (MLflow refuses to change a logged param: a resumed search failed)."""
    from deepfake_audio.dataset.train_batches import log_params
    from deepfake_audio.stages.tune.search import project_name

    off = parse_params({"augment": {"enabled": False, "rawboost_p": 0.0}})
    off_other = parse_params({"augment": {"enabled": False, "rawboost_p": 0.5}})
    assert project_name(off, "d") == project_name(off_other, "d")
    assert log_params(off.augment, LOGMEL, None) == log_params(off_other.augment, LOGMEL, None)
    on = parse_params({"augment": {"enabled": True, "rawboost_p": 0.0}})
    on_other = parse_params({"augment": {"enabled": True, "rawboost_p": 0.5}})
    assert project_name(on, "d") != project_name(on_other, "d")  # a different search
