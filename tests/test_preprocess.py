"""Cue removal (dsp.preprocess), vocoded spoofs (dsp.vocoders), both in the dataset stage,
and the served model doing to a clip exactly what the dataset did to it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import tiny_hparams, voice
from deepfake_audio.config.params import PreprocessParams, parse_params
from deepfake_audio.dsp.audio import TARGET_RMS
from deepfake_audio.dsp.cues import clip_cues
from deepfake_audio.dsp.preprocess import Preprocess, ShortClip, prepare, resolve
from deepfake_audio.dsp.vocoders import VOCODERS, vocode
from deepfake_audio.scoring import shortcuts

RATE = 16000
PREP = Preprocess()


def _padded(wave: np.ndarray, lead: float, tail: float, dc: float = 0.0) -> np.ndarray:
    """`wave` between `lead` and `tail` seconds of near-silence, plus a DC offset throughout."""
    rng = np.random.default_rng(7)
    quiet = [1e-5 * rng.normal(size=int(s * RATE)).astype(np.float32) for s in (lead, tail)]
    return (np.concatenate([quiet[0], wave, quiet[1]]) + np.float32(dc)).astype(np.float32)


def test_dc_silence_and_level_are_removed() -> None:
    speech = voice(1, 1.0, RATE)
    loud_offset = _padded(3.0 * speech, lead=0.3, tail=0.2, dc=0.05)
    plain = _padded(speech, lead=0.0, tail=0.0)
    before = clip_cues(loud_offset, RATE)
    assert before["dc_offset"] > 0.04 and before["leading_silence"] >= 0.29
    a, b = (prepare(w, RATE, PREP, RATE // 2, "x.wav") for w in (loud_offset, plain))
    assert a.size == b.size == speech.size  # 0.3 s and 0.2 s of silence trimmed, to the frame
    after = clip_cues(a, RATE)
    assert after["dc_offset"] < 1e-6
    assert after["leading_silence"] == 0.0 and after["trailing_silence"] == 0.0
    # Both at the same speech level: a gain and an offset no longer tell them apart.
    assert np.sqrt(np.mean(np.square(a, dtype=np.float64))) == pytest.approx(TARGET_RMS, rel=0.02)
    np.testing.assert_allclose(a, b, atol=2e-3)
    # level "clip": the whole clip's RMS, as without preprocessing; no trimming: length kept.
    kept = prepare(loud_offset, RATE, Preprocess(trim_db=None, level="clip"), RATE // 2, "x")
    assert kept.size == loud_offset.size and abs(float(np.mean(kept))) < 1e-6
    assert prepare(loud_offset, RATE, None, RATE // 2, "x") is loud_offset  # off: untouched


def test_short_clips_are_dropped_or_padded_as_documented() -> None:
    short = _padded(voice(2, 0.4, RATE), lead=0.5, tail=0.5)  # 1.4 s, 0.4 s of it speech
    with pytest.raises(ShortClip, match=r"^short\.wav: too short after trimming silence \(0\.40 s"):
        prepare(short, RATE, PREP, RATE, "short.wav")
    padded = prepare(short, RATE, Preprocess(short="pad"), RATE, "short.wav")
    assert padded.size == int(0.4 * RATE)  # left short: dsp.audio.fix_length pads it later


def test_auto_is_on_for_real_corpora_only() -> None:
    auto = PreprocessParams()
    assert resolve(auto, "folders") == resolve(auto, "asvspoof") == PREP
    assert resolve(auto, "demo") is None and resolve(auto, "folders", audio=False) is None
    assert resolve(PreprocessParams(enabled=True), "demo") == PREP
    assert resolve(PreprocessParams(enabled=False), "folders") is None
    assert Preprocess.from_dict(PREP.to_dict()) == PREP and Preprocess.from_dict(None) is None
    with pytest.raises(Exception, match="data.preprocess.enabled: 'yes' is not auto"):
        parse_params({"data": {"preprocess": {"enabled": "yes"}}})
    with pytest.raises(Exception, match="data.vocoded.vocoders: .*hifigan"):
        parse_params({"data": {"vocoded": {"vocoders": ["hifigan"]}}})


def _bands(wave: np.ndarray) -> np.ndarray:
    """Log energy in 16 bands of 500 Hz: the rough spectral envelope."""
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    edges = np.linspace(0, power.size, 17).astype(int)
    return np.log(np.add.reduceat(power, edges[:-1]) + 1e-12)


@pytest.mark.parametrize("name", VOCODERS)
def test_vocoded_copies_differ_but_keep_length_level_and_envelope(name: str) -> None:
    source = voice(3, 1.0, RATE) + np.float32(0.001)
    copy = vocode(source, RATE, name, seed=5)
    assert copy.shape == source.shape and copy.dtype == np.float32
    assert float(np.mean(copy)) == pytest.approx(float(np.mean(source)), abs=1e-6)
    rms = [float(np.std(w)) for w in (source, copy)]
    assert rms[1] == pytest.approx(rms[0], rel=1e-3)
    assert np.corrcoef(source, copy)[0, 1] < 0.9  # a new waveform, not the source again
    assert np.corrcoef(_bands(source), _bands(copy))[0, 1] > 0.8  # the same envelope
    np.testing.assert_array_equal(copy, vocode(source, RATE, name, seed=5))  # seeded
    if name != "world":  # WORLD is deterministic whatever the seed
        assert not np.array_equal(copy, vocode(source, RATE, name, seed=6))
    with pytest.raises(ValueError, match="unknown vocoder"):
        vocode(source, RATE, "hifigan")


def _corpus(root: Path, per_class: int = 6) -> Path:
    """Folders whose fakes carry planted cues: 0.3 s of leading silence, a DC offset and
    three times the level. Same generator, same length of speech otherwise."""
    seed = 0
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                speech = voice(seed, 0.8, RATE)
                if label == "fake":
                    wave = _padded(3.0 * speech, lead=0.3, tail=0.0, dc=0.02)
                else:
                    wave = _padded(speech, lead=0.0, tail=0.0)
                sf.write(folder / f"{label}_{i}.wav", wave, RATE, subtype="FLOAT")
    # Exactly one window of speech between silences: one served window, the dataset's clip.
    served = _padded(voice(99, 0.5, RATE), lead=0.3, tail=0.2, dc=0.03)
    sf.write(root / "testing" / "real" / "served.wav", served, RATE, subtype="FLOAT")
    sf.write(root / "training" / "real" / "short.wav", voice(98, 0.3, RATE), RATE)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """One dataset build (folders: preprocessing on by default) with all three vocoders."""
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import dataset

    tmp = tmp_path_factory.mktemp("prep")
    root = _corpus(tmp / "corpus")
    raw = {
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2},
        "model": {"architecture": "compact_cnn"},
        "data": {
            "source": "folders",
            "path": str(root),
            "vocoded": {"vocoders": list(VOCODERS)},
        },
    }
    params = parse_params(raw)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        summary = dataset.build(params, list_clips(params), tmp / "spec", tmp / "reports")
    return types.SimpleNamespace(
        params=params,
        root=root,
        out=tmp / "spec",
        reports=tmp / "reports",
        summary=summary,
        stderr=stderr.getvalue(),
    )


def test_the_dataset_stage_vocodes_training_reals_only(built: types.SimpleNamespace) -> None:
    from deepfake_audio.dataset.shards import SpectrogramDataset

    data = SpectrogramDataset(built.out)
    assert data.meta["features"]["preprocess"] == PREP.to_dict()
    train = data.manifest("train")
    reals = train[train["label"] == "bonafide"]
    vocoded = train[train["augmentation"].astype(str).str.startswith("vocoded:")]
    assert len(reals) == 6 and len(vocoded) == 6 * len(VOCODERS)
    assert built.summary["train_vocoded"] == 18 and built.summary["dropped_short"] == 1
    assert set(vocoded["attack"]) == {f"vocoded_{n}" for n in VOCODERS}
    assert set(vocoded["label"]) == {"spoof"} and set(vocoded["target"]) == {0}
    assert set(vocoded["copy_of"].astype(str)) == {""}  # clips of their own, not variants
    for _, row in reals.iterrows():  # the source's speaker and path, its own audio
        mine = vocoded[vocoded["clip_id"].str.startswith(row["clip_id"] + "+")]
        assert len(mine) == len(VOCODERS)
        assert set(mine["speaker"]) == {row["speaker"]} and set(mine["path"]) == {row["path"]}
        assert row["sha256"] not in set(mine["sha256"])
    # Decoded features of a copy differ from its source's.
    stored = np.concatenate([x for x, _ in data.iter_shards("train")]).astype(np.float32)
    rows = dict(zip(train["clip_id"], zip(train["shard"], train["row"], strict=True), strict=True))
    per_shard = data.shards("train")
    assert len(per_shard) >= 1
    by_row = {k: np.load(per_shard[s])[r].astype(np.float32) for k, (s, r) in rows.items()}
    first = reals["clip_id"].iloc[0]
    for name in VOCODERS:
        assert np.abs(by_row[f"{first}+{name}"] - by_row[first]).mean() > 0.1
    assert stored.shape[0] == len(train)
    for split in ("validation", "test"):
        assert not data.manifest(split)["augmentation"].astype(str).str.startswith("voc").any()
    bad = (built.reports / "bad_files.csv").read_text()
    assert "short.wav" in bad and "too short after trimming silence" in bad
    # One of seven training reals dropped: above the share that is warned about.
    assert "warning: data.preprocess.short: drop leaves 6 of 7 bonafide clips in train" in (
        built.stderr
    )


def test_the_audit_sees_planted_cues_before_preprocessing_only(
    built: types.SimpleNamespace,
) -> None:
    """The raw view (and the clips as fed without preprocessing) give the planted cues away;
    as fed after preprocessing they no longer do. Source clips only: vocoded ones are not
    in the audit."""
    from deepfake_audio.stages import dataset

    report = json.loads((built.reports / "shortcuts.json").read_text())
    planted = ("dc_offset", "leading_silence", "rms")
    for split in ("train", "validation", "test"):
        entry = report["splits"][split]
        assert entry["spoof"] == 6  # no vocoded clip among them
        raw, fed = entry["raw"], entry["as_fed"]
        if split != "test":  # test also holds served.wav, a real with silence and DC
            assert all(raw[cue]["eer"] == 0.0 for cue in planted), (split, raw)
        # After: no clip starts with silence (every value ties), no offset is left, and the
        # levels of the classes are within 0.5 dB where they were about 8 dB apart. (Their EERs
        # are then chance on 6 clips a class: not asserted.)
        assert fed["leading_silence"]["eer"] == 0.5
        assert fed["dc_offset"]["spoof_median"] < 1e-3 < 0.01 < raw["dc_offset"]["spoof_median"]
        assert abs(fed["rms"]["spoof_median"] - fed["rms"]["bonafide_median"]) < 0.5
        assert abs(raw["rms"]["spoof_median"] - raw["rms"]["bonafide_median"]) > 6
    # Before: the same training clips as fed without preprocessing keep the offset and the
    # level (whole-clip normalisation lifts the fakes' speech over their silence).
    fp = built.params.features
    files = sorted((built.root / "training").glob("*/*_*.wav"))
    targets = np.array([int(p.parent.name == "real") for p in files])
    cells = [dataset.file_features(p, fp)[1] for p in files]
    cues = ("dc_offset", "rms")
    views = {"as_fed": {c: np.array([m[f"as_fed_{c}"] for m in cells]) for c in cues}}
    before = shortcuts.audit({"train": (targets, views)})["splits"]["train"]["as_fed"]
    assert all(before[c]["eer"] == 0.0 for c in cues), before


def test_a_served_clip_scores_as_the_dataset_fed_it(
    built: types.SimpleNamespace, tmp_path: Path
) -> None:
    """The pyfunc that `mlflow models serve` and `predict` load, built from the dataset's
    stored features section: its score of a raw file equals the network's logit on the
    features the dataset stage computed for that file (and stored in its shard)."""
    from deepfake_audio.dataset.shards import SpectrogramDataset
    from deepfake_audio.models import network
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.stages import dataset

    data = SpectrogramDataset(built.out)
    fp = data.features
    hparams = tiny_hparams()
    model = network.build(hparams, "compact_cnn", fp.input_shape, data.mean, data.std)
    model.save(tmp_path / "model.keras")
    config = serving.make_config(data.meta["features"], threshold=0.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    served = serving.DetectorModel()
    artifacts = {"keras_model": str(tmp_path / "model.keras"), "config": str(tmp_path / "config")}
    artifacts["config"] += ".json"
    served.load_context(types.SimpleNamespace(artifacts=artifacts))

    path = built.root / "testing" / "real" / "served.wav"
    frame = pd.DataFrame({"audio_base64": [base64.b64encode(path.read_bytes()).decode()]})
    out = served.predict(None, frame)
    assert out["error"][0] == "" and out["windows"][0] == 1
    feats = dataset.file_features(path, fp, prep=PREP)[0]
    expected = float(model.predict(feats.reshape((1, *fp.input_shape)), verbose=0)[0, 0])
    assert out["score"][0] == pytest.approx(expected, abs=1e-5)
    # The shard holds those features (float16).
    test = data.manifest("test")
    row = test[test["path"] == "testing/real/served.wav"].iloc[0]
    stored = np.load(data.shards("test")[int(row["shard"])])[int(row["row"])]
    np.testing.assert_allclose(stored.astype(np.float32), feats, atol=0.05, rtol=0.01)
    # Without the stored preprocessing the served score would differ: the test can fail.
    plain = dataset.file_features(path, fp)[0]
    other = float(model.predict(plain.reshape((1, *fp.input_shape)), verbose=0)[0, 0])
    assert abs(other - expected) > 1e-4
    # A clip too short for the window: the served answer is the dataset's reason.
    short = built.root / "training" / "real" / "short.wav"
    frame = pd.DataFrame({"audio_base64": [base64.b64encode(short.read_bytes()).decode()]})
    out = served.predict(None, frame)
    assert out["label"][0] == "error"
    assert out["error"][0].startswith("<bytes>: too short after trimming silence")


def test_the_before_after_benchmark_audits_a_corpus_folder(tmp_path: Path) -> None:
    """`python -m benchmarks shortcuts` on a folder of corpora: the three views, JSON and a
    Markdown table; a planted DC offset at 0 % raw and as fed without preprocessing, gone
    with it."""
    from benchmarks import shortcuts as bench

    corpus = tmp_path / "datasets" / "planted"
    for label in ("real", "fake"):
        (corpus / label).mkdir(parents=True)
        for i in range(5):
            wave = _padded(voice(10 * i + (label == "fake"), 2.5, RATE), lead=0.0, tail=0.0)
            wave = wave + np.float32(0.03 if label == "fake" else 0.0)
            sf.write(corpus / label / f"{label}_{i}.wav", wave, RATE, subtype="FLOAT")
    (corpus / "codec").mkdir()  # kept apart in the shared corpora: not audited
    sf.write(corpus / "codec" / "x.wav", voice(3, 2.5, RATE), RATE)
    out = tmp_path / "audit.json"
    assert bench.main(["--datasets", str(tmp_path / "datasets"), "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["corpora"]["planted"]
    assert entry["raw"]["bonafide"] == entry["raw"]["spoof"] == 5
    assert entry["raw"]["raw"]["dc_offset"]["eer"] == entry["off"]["off"]["dc_offset"]["eer"] == 0
    assert entry["on"]["on"]["dc_offset"]["eer"] > 0.0 and entry["dropped"] == []
    assert "| dc_offset | 0.0 / 0.0 / " in out.with_suffix(".md").read_text()


def test_a_drop_that_guts_a_class_of_a_split_stops_the_build(tmp_path: Path) -> None:
    """Most test fakes shorter than the window: dropping them would leave a test split that
    measures nothing, so the build stops with the way out, and leaves nothing behind."""
    from deepfake_audio.core.errors import UserError
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import dataset

    root = tmp_path / "corpus"
    seed = 20
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                seed += 1
                short = split == "testing" and label == "fake" and i > 0
                wave = voice(seed, 0.3 if short else 0.8, RATE)
                sf.write(root / split / label / f"{label}_{i}.wav", wave, RATE)
    params = parse_params(
        {
            "data": {"source": "folders", "path": str(root)},
            "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 1},
        }
    )
    with pytest.raises(UserError, match="leaves 1 of 3 spoof clips in test") as err:
        dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert "short: pad" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "spec").exists()
