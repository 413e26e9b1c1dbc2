"""The shortcut audit: one-number cues on signals with known answers, their EERs, the audit of
a corpus with a planted cue through the dataset stage, and the score-cue rank correlation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal, stats

from deepfake_audio.config.params import parse_params
from deepfake_audio.dataset.shards import CUE_COLUMNS, SpectrogramDataset, cue_table
from deepfake_audio.dsp import cues
from deepfake_audio.dsp.cues import CUE_NAMES, FLOOR_DB, clip_cues
from deepfake_audio.scoring import shortcuts
from deepfake_audio.scoring.eer import compute_eer
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset, evaluate

SR = 16000


def _tone(freq: float, seconds: float, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_cues_of_signals_with_known_answers() -> None:
    rng = np.random.default_rng(0)
    # 0.3 s of digital silence, 1 s of a 440 Hz tone at amplitude 0.5, 0.2 s of silence.
    tone = _tone(440.0, 1.0)
    padded = np.concatenate([np.zeros(4800, np.float32), tone, np.zeros(3200, np.float32)])
    padded_cues = clip_cues(padded, SR)
    assert list(padded_cues) == list(CUE_NAMES)
    assert padded_cues["duration"] == pytest.approx(1.5)
    assert padded_cues["leading_silence"] == pytest.approx(0.3)
    assert padded_cues["trailing_silence"] == pytest.approx(0.2)
    assert padded_cues["noise_floor"] == FLOOR_DB  # digital silence: the floor, not -inf
    assert padded_cues["high_band"] < 0.01
    alone = clip_cues(tone, SR)
    assert alone["leading_silence"] == alone["trailing_silence"] == 0.0
    assert alone["rms"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert alone["peak"] == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert alone["dc_offset"] < 1e-4
    # A DC offset of 0.1 shows in dc_offset only: the levels are of the wave without it.
    noise = (0.01 * rng.normal(size=SR)).astype(np.float32)
    offset = clip_cues(noise + np.float32(0.1), SR)
    plain = clip_cues(noise, SR)
    assert offset["dc_offset"] == pytest.approx(0.1, abs=1e-3)
    assert offset["rms"] == pytest.approx(plain["rms"], abs=1e-6)
    assert offset["noise_floor"] == pytest.approx(plain["noise_floor"], abs=1e-6)
    # White noise of std 0.01: every frame near -40 dBFS, 99 % of the energy below ~7.9 kHz.
    assert plain["noise_floor"] == pytest.approx(-40.0, abs=1.0)
    assert plain["bandwidth"] > 7500
    # Quiet noise under a loud tone in the second half: the floor is the noise's.
    mixed = noise.copy()
    mixed[SR // 2 :] += _tone(440.0, 0.5)
    assert clip_cues(mixed, SR)["noise_floor"] == pytest.approx(-40.0, abs=1.0)
    # A 6 kHz tone: all of its energy in 4-8 kHz; low-passed noise: bandwidth under 1 kHz.
    assert clip_cues(_tone(6000.0, 0.5), SR)["high_band"] > 0.99
    lowpass = signal.butter(10, 1000, fs=SR, output="sos")
    low = signal.sosfilt(lowpass, rng.normal(size=2 * SR)).astype(np.float32)
    assert 600 < clip_cues(low, SR)["bandwidth"] < 1100
    # At 44.1 kHz the band is still 4-8 kHz; a clip shorter than one spectral frame works.
    assert clip_cues(_tone(6000.0, 0.5, sr=44100), 44100)["high_band"] > 0.99
    short = clip_cues(_tone(440.0, 0.004), SR)
    assert short["duration"] == pytest.approx(0.004) and np.isfinite(list(short.values())).all()
    # The noise floor's percentile by partial sort is numpy's (linear interpolation).
    for size in (1, 2, 7, 100, 1001):
        values = rng.normal(size=size)
        assert cues._percentile(values, 10) == pytest.approx(np.percentile(values, 10), abs=1e-12)


def test_cue_eer_is_the_asvspoof_eer_without_splitting_ties() -> None:
    rng = np.random.default_rng(1)
    bona, spoof = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 300)
    assert shortcuts.tied_eer(bona, spoof) == pytest.approx(compute_eer(bona, spoof)[0])
    eer, direction = shortcuts.cue_eer(bona, spoof)
    assert direction == shortcuts.HIGHER and eer == pytest.approx(compute_eer(bona, spoof)[0])
    eer, direction = shortcuts.cue_eer(-bona, -spoof)
    assert direction == shortcuts.LOWER and eer == pytest.approx(compute_eer(bona, spoof)[0])
    # A constant separates nothing (the DET points inside a tie would say 0 or 1).
    assert shortcuts.cue_eer(np.full(10, 3.0), np.full(12, 3.0))[0] == 0.5
    # Two values, one per class, separate perfectly, either way round.
    assert shortcuts.cue_eer(np.zeros(5), np.ones(7)) == (0.0, shortcuts.LOWER)


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=300)
    y = np.round(x + rng.normal(size=300), 1)  # ties in y
    assert shortcuts.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    z = np.round(rng.normal(size=300))  # heavy ties in both
    assert shortcuts.spearman(z, y) == pytest.approx(stats.spearmanr(z, y).statistic, abs=1e-12)
    assert shortcuts.spearman(x, -x) == pytest.approx(-1.0)
    assert shortcuts.spearman(x, np.ones(300)) is None


def _speech_like(rng: np.random.Generator, seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 220)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return 0.1 * wave + 0.01 * rng.normal(size=t.size)


def _corpus(root: Path, planted: bool, per_class: int = 8) -> Path:
    """training/validation/testing x real/fake. Planted: every fake clip has a DC offset of
    0.05, no real one has. Unplanted: clip i of either class has an offset of 0.005 * i, so
    the offsets vary as much but say nothing about the label."""
    rng = np.random.default_rng(3)
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                dc = (0.05 if label == "fake" else 0.0) if planted else 0.005 * i
                wave = _speech_like(rng) + dc
                sf.write(folder / f"{label}_{i}.wav", wave.astype(np.float32), SR)
    return root


def _build(tmp_path: Path, planted: bool) -> tuple[dict, Path]:
    raw = {
        # Preprocessing off: these tests are of the audit, whose as_fed view must flag a cue
        # the pipeline leaves in; with it on the DC is removed (tests/test_preprocess.py).
        "data": {
            "source": "folders",
            "path": str(_corpus(tmp_path / "corpus", planted)),
            "preprocess": {"enabled": False},
        },
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2},
    }
    params = parse_params(raw)
    reports = tmp_path / "reports"
    dataset.build(params, list_clips(params), tmp_path / "spec", reports)
    return json.loads((reports / "shortcuts.json").read_text()), tmp_path / "spec"


def test_the_audit_flags_a_dc_offset_planted_in_every_fake(tmp_path: Path, capsys) -> None:
    report, spec = _build(tmp_path, planted=True)
    for split in ("train", "validation", "test"):
        for view in ("raw", "as_fed"):
            row = report["splits"][split][view]["dc_offset"]
            assert row["eer"] <= 0.3 and row["direction"] == shortcuts.LOWER, (split, view)
            assert report["flagged"][f"{split} {view} dc_offset"] == row["eer"]
        assert report["splits"][split]["raw"]["dc_offset"]["spoof_median"] == pytest.approx(
            0.05, abs=1e-3
        )
        assert set(report["splits"][split]["raw"]) == set(CUE_NAMES)
        assert report["splits"][split]["bonafide"] == report["splits"][split]["spoof"] == 8
    warned = [line for line in capsys.readouterr().err.splitlines() if "dc_offset" in line]
    assert any("train" in line and "test" in line and "raw audio" in line for line in warned)
    # The cues are in the manifests: the evaluate stage correlates its scores with them.
    manifest = SpectrogramDataset(spec).manifest("test")
    assert set(CUE_COLUMNS) <= set(manifest.columns)
    views = cue_table(manifest)
    is_fake = manifest["target"].to_numpy() == 0
    correlation = shortcuts.spearman(np.where(is_fake, -1.0, 1.0), views["raw"]["dc_offset"])
    assert correlation is not None and correlation < -0.8


def test_an_unplanted_corpus_does_not_flag_the_dc_offset(tmp_path: Path) -> None:
    report, _ = _build(tmp_path, planted=False)
    for split in ("train", "validation", "test"):
        for view in ("raw", "as_fed"):
            assert report["splits"][split][view]["dc_offset"]["eer"] > 0.3, (split, view)
    assert not [key for key in report["flagged"] if key.endswith("dc_offset")]


def test_flat_metrics_and_the_test_score_correlations() -> None:
    rng = np.random.default_rng(4)
    n = 40
    targets = np.repeat([1, 0], n // 2)
    scores = rng.normal(size=n) + 2.0 * targets
    cells = {c: rng.normal(size=n) for c in CUE_COLUMNS}
    cells["raw_rms"] = scores + 0.01 * rng.normal(size=n)  # a detector that learned the level
    manifest = pd.DataFrame({"target": targets, **cells})
    audit = shortcuts.audit({"test": (targets, cue_table(manifest))})
    assert audit["flagged"]["test raw rms"] == audit["splits"]["test"]["raw"]["rms"]["eer"]
    assert audit["splits"]["test"]["raw_lowest"]["cue"] == "rms"
    report, flat = evaluate.shortcut_numbers(scores, manifest, None)
    assert report["test_shortcut_spearman"]["raw"]["rms"] > 0.99
    assert set(report["test_shortcut_spearman"]) == {"raw", "as_fed"}
    assert flat["shortcut_spearman.test.rms"] == report["test_shortcut_spearman"]["raw"]["rms"]
    assert "shortcut_spearman_as_fed.test.dc_offset" in flat
    eers = shortcuts.flat_eers(audit)
    assert eers["shortcut_eer.test.rms"] == audit["splits"]["test"]["raw"]["rms"]["eer"]
    assert len(eers) == 2 * len(CUE_NAMES)
    # No cue columns (pictures, a dataset from before the audit): nothing to correlate.
    assert evaluate.shortcut_numbers(scores, pd.DataFrame({"target": targets}), None) == ({}, {})
