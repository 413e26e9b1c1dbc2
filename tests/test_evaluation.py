"""Evaluation numbers from scores, the champion gate, and `predict` on real files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import tiny_hparams
from deepfake_audio.scoring import metrics, reporting
from deepfake_audio.stages import evaluate as evaluation
from deepfake_audio.stages.register import gate


def test_threshold_comes_from_validation_not_test() -> None:
    val_scores = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0])  # bona fide above 0.6
    val_targets = np.array([1, 1, 1, 0, 0, 0])
    test_scores = np.array([0.9, 0.5, 0.4, 0.1, -0.2, 0.45])
    test_targets = np.array([1, 1, 1, 0, 0, 0])
    attacks = np.array(["-", "-", "-", "A01", "A05", "A05"])
    s = reporting.summarise(val_scores, val_targets, test_scores, test_targets, attacks)
    eer, test_threshold = metrics.compute_eer(test_scores[:3], test_scores[3:])
    assert s["test_eer"] == pytest.approx(eer)
    _, val_threshold = metrics.compute_eer(val_scores[:3], val_scores[3:])
    assert s["threshold"] == pytest.approx(val_threshold)
    assert s["threshold"] != pytest.approx(test_threshold)
    predicted = (test_scores > val_threshold).astype(int)
    assert s["test_accuracy"] == pytest.approx(np.mean(predicted == test_targets))
    assert s["notebook_style"]["threshold"] == pytest.approx(test_threshold)
    assert set(s["test_per_attack_eer"]) == {"A01", "A05"}
    assert s["test_per_attack_eer"]["A01"] == 0.0
    assert 0 <= s["test_min_dcf"] <= 1 and 0 <= s["test_roc_auc"] <= 1
    d = reporting.details(s["threshold"], test_scores, test_targets)
    (tn, fp), (fn, tp) = d["confusion_matrix"]["matrix"]
    assert tp == int(np.sum((predicted == 1) & (test_targets == 1)))
    assert tn == int(np.sum((predicted == 0) & (test_targets == 0)))
    assert tn + fp + fn + tp == 6
    assert d["classification_report"]["accuracy"] == pytest.approx(s["test_accuracy"])


def test_plots_are_written_for_dvc(tmp_path: Path) -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5])
    targets = np.array([1, 1, 0, 0, 1])
    written = evaluation.write_plots(tmp_path, scores, targets, threshold=0.3)
    assert {p.name for p in written} == {
        "roc.csv",
        "det.csv",
        "det_points.csv",
        "confusion.csv",
        "scores.csv",
        "score_histogram.csv",
        "reliability_raw.csv",
        "reliability_calibrated.csv",
    }
    with open(tmp_path / "confusion.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[0] == {"actual": "bonafide", "predicted": "bonafide"}


def test_det_csv_is_on_normal_deviate_axes(tmp_path: Path) -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    targets = np.r_[np.ones(40, dtype=int), np.zeros(60, dtype=int)]
    scores = rng.normal(size=100) + targets
    evaluation.write_plots(tmp_path, scores, targets, threshold=0.5)
    with open(tmp_path / "det.csv") as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    frr, far, _ = metrics.det_curve(scores[targets == 1], scores[targets == 0])
    assert len(rows) == frr.size == 101
    np.testing.assert_allclose([r["frr"] for r in rows], frr, atol=1e-6)
    np.testing.assert_allclose([r["far"] for r in rows], far, atol=1e-6)
    for row in rows:
        for rate, deviate in (("far", "far_probit"), ("frr", "frr_probit")):
            clipped = min(max(row[rate], evaluation.DET_CLIP), 1 - evaluation.DET_CLIP)
            assert row[deviate] == pytest.approx(norm.ppf(clipped), abs=1e-5)
    # The leading point (miss 0, false alarm 1) is clipped to finite deviates, +-3.72.
    assert rows[0]["frr_probit"] == pytest.approx(-3.719, abs=1e-3)
    assert rows[0]["far_probit"] == pytest.approx(3.719, abs=1e-3)


def test_score_histogram_shares_per_class(tmp_path: Path) -> None:
    targets = np.r_[np.ones(10, dtype=int), np.zeros(30, dtype=int)]
    scores = np.r_[np.linspace(0.0, 3.0, 10), np.linspace(-2.0, 1.0, 30)]
    evaluation.write_plots(tmp_path, scores, targets, threshold=0.0)
    with open(tmp_path / "score_histogram.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["bin_center", "bonafide", "spoof"]
    assert len(rows) == evaluation.HISTOGRAM_BINS
    centres = [float(r["bin_center"]) for r in rows]
    assert centres == sorted(centres) and -2.0 < centres[0] < centres[-1] < 3.0
    for label in ("bonafide", "spoof"):
        assert sum(float(r[label]) for r in rows) == pytest.approx(1.0, abs=1e-5)
    # Every bona fide score is >= 0: no bona fide share in bins centred below -0.1.
    assert all(float(r["bonafide"]) == 0.0 for r in rows if float(r["bin_center"]) < -0.1)


def test_figures_are_png_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    targets = np.r_[np.ones(30, dtype=int), np.zeros(30, dtype=int)]
    scores = rng.normal(size=60) + 1.5 * targets
    written = evaluation.write_figures(tmp_path, scores, targets, threshold=0.7)
    assert {p.name for p in written} == {
        "roc.png",
        "det.png",
        "confusion.png",
        "score_histogram.png",
        "reliability.png",
    }
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path.name
    assert not list(tmp_path.glob(".tmp-*"))


def test_unseen_attacks_are_listed_and_pooled() -> None:
    val_scores = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0])
    val_targets = np.array([1, 1, 1, 0, 0, 0])
    test_scores = np.array([0.9, 0.5, 0.4, 0.1, -0.2, 0.45, 0.95])
    test_targets = np.array([1, 1, 1, 0, 0, 0, 0])
    attacks = np.array(["-", "-", "-", "A01", "A05", "A05", "A06"])
    s = reporting.summarise(
        val_scores,
        val_targets,
        test_scores,
        test_targets,
        attacks,
        train_attacks=np.array(["-", "A01", "A02"]),
    )
    assert s["test_unseen_attacks"] == ["A05", "A06"]
    unseen = test_scores[3:][attacks[3:] != "A01"]
    assert s["test_eer_unseen_attacks"] == pytest.approx(
        metrics.compute_eer(test_scores[:3], unseen)[0]
    )
    seen_only = reporting.summarise(
        val_scores, val_targets, test_scores, test_targets, attacks, train_attacks=attacks
    )
    assert seen_only["test_unseen_attacks"] == []
    assert "test_eer_unseen_attacks" not in seen_only


def test_baseline_numbers_and_comparison_line(tmp_path: Path) -> None:
    import json

    ran = tmp_path / "baseline.json"
    ran.write_text(json.dumps({"test_eer": 0.25, "test_min_dcf": 0.5}))
    skipped = tmp_path / "skipped.json"
    skipped.write_text(json.dumps({"skipped": "no audio"}))
    numbers = evaluation.baseline_numbers(ran)
    # A baseline report from before actDCF/Cllr were measured: those keys are null.
    assert numbers == {
        "baseline_lfcc_gmm_test_eer": 0.25,
        "baseline_lfcc_gmm_test_min_dcf": 0.5,
        "baseline_lfcc_gmm_test_act_dcf": None,
        "baseline_lfcc_gmm_test_cllr": None,
        "baseline_lfcc_gmm_test_min_cllr": None,
    }
    assert set(evaluation.baseline_numbers(skipped).values()) == {None}
    line = reporting.comparison({"test_eer": 0.1, "test_min_dcf": 0.3, **numbers})
    assert line == (
        "CNN test EER 10.00%, minDCF 0.3000; LFCC-GMM baseline test EER 25.00%, minDCF 0.5000"
    )
    assert "not run" in reporting.comparison({"test_eer": 0.1, "test_min_dcf": 0.3})


@pytest.mark.parametrize(
    ("new", "champion", "min_improvement", "promoted"),
    [
        (0.10, None, 0.01, True),
        (0.10, 0.12, 0.01, True),
        (0.115, 0.12, 0.01, False),
        (0.2, 0.1, 0.0, False),
    ],
)
def test_champion_gate(
    new: float, champion: float | None, min_improvement: float, promoted: bool
) -> None:
    assert gate(new, champion, min_improvement) is promoted


def test_gate_never_compares_eers_of_different_test_data() -> None:
    assert gate(0.01, 0.30, 0.005, same_data=False) is False
    assert gate(0.01, None, 0.005, same_data=False) is True


def test_predict_scores_files_and_reports_bad_ones(tmp_path: Path) -> None:
    from conftest import PROJECT
    from deepfake_audio.config.params import parse_params
    from deepfake_audio.models import network

    params = {
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16},
        "model": {"architecture": "compact_cnn"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p = parse_params(params)
    values = tiny_hparams(filters=4, dense_units=4)
    model = network.build(
        values, "compact_cnn", (16, p.features.n_frames, 1), np.zeros(16), np.ones(16)
    )
    model.save(tmp_path / "m.keras")
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    sf.write(clips / "a.wav", 0.1 * rng.normal(size=8000).astype(np.float32), 16000)
    sf.write(clips / "b.flac", 0.1 * rng.normal(size=(30000, 2)).astype(np.float32), 44100)
    (clips / "c.wav").write_bytes(b"garbage")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepfake_audio.cli",
            "--params",
            str(tmp_path / "params.yaml"),
            "predict",
            str(clips),
            "--model",
            str(tmp_path / "m.keras"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    assert proc.returncode == 1, proc.stderr  # one file failed
    rows = list(csv.DictReader(proc.stdout.splitlines()))
    assert proc.stdout.splitlines()[0] == "path,fake_probability,label,score"
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"a.wav", "b.flac", "c.wav"}
    for name in ("a.wav", "b.flac"):
        assert 0.0 <= float(by_name[name]["fake_probability"]) <= 1.0
        assert by_name[name]["label"] in {"fake", "real"}
        # A bare .keras file has no calibration: sigmoid(-score), as always.
        score = float(by_name[name]["score"])
        assert float(by_name[name]["fake_probability"]) == pytest.approx(
            1.0 / (1.0 + np.exp(score)), abs=2e-6
        )
        assert by_name[name]["label"] == ("real" if score > 0.0 else "fake")
    assert by_name["c.wav"]["label"] == "error"
    assert "c.wav" in proc.stderr and "Traceback" not in proc.stderr
