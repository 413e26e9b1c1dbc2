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

from deepfake_audio import evaluation, metrics
from deepfake_audio.registry import gate


def test_threshold_comes_from_validation_not_test() -> None:
    val_scores = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0])  # bona fide above 0.6
    val_targets = np.array([1, 1, 1, 0, 0, 0])
    test_scores = np.array([0.9, 0.5, 0.4, 0.1, -0.2, 0.45])
    test_targets = np.array([1, 1, 1, 0, 0, 0])
    attacks = np.array(["-", "-", "-", "A01", "A05", "A05"])
    s = evaluation.summarise(val_scores, val_targets, test_scores, test_targets, attacks)
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
    d = evaluation.details(s["threshold"], test_scores, test_targets)
    (tn, fp), (fn, tp) = d["confusion_matrix"]["matrix"]
    assert tp == int(np.sum((predicted == 1) & (test_targets == 1)))
    assert tn == int(np.sum((predicted == 0) & (test_targets == 0)))
    assert tn + fp + fn + tp == 6
    assert d["classification_report"]["accuracy"] == pytest.approx(s["test_accuracy"])


def test_plots_are_written_for_dvc(tmp_path: Path) -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5])
    targets = np.array([1, 1, 0, 0, 1])
    written = evaluation.write_plots(tmp_path, scores, targets, threshold=0.3)
    assert {p.name for p in written} == {"roc.csv", "det.csv", "confusion.csv", "scores.csv"}
    with open(tmp_path / "confusion.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[0] == {"actual": "bonafide", "predicted": "bonafide"}


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
    from deepfake_audio import models
    from deepfake_audio.params import parse_params

    params = {"features": {"clip_seconds": 0.5, "n_mels": 16}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p = parse_params(params)
    values = {
        "filters_1": 4,
        "filters_2": 4,
        "kernel_size_1": 3,
        "kernel_size_2": 3,
        "dense_units": 4,
        "learning_rate": 1e-3,
        "optimizer": "adam",
    }
    model = models.build(
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
    assert proc.stdout.splitlines()[0] == "path,fake_probability,label"
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"a.wav", "b.flac", "c.wav"}
    for name in ("a.wav", "b.flac"):
        assert 0.0 <= float(by_name[name]["fake_probability"]) <= 1.0
        assert by_name[name]["label"] in {"fake", "real"}
    assert by_name["c.wav"]["label"] == "error"
    assert "c.wav" in proc.stderr and "Traceback" not in proc.stderr
