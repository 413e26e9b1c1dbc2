"""The evaluate stage: the field's numbers for the trained model, honestly chosen.

The EER is threshold-free. The decision threshold used for accuracy and the
classification report is the validation split's EER threshold, fixed before
the test split is scored; the notebook picked it on the test set itself, which
flatters accuracy. Its number is reported too, clearly labelled, for comparison.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio import metrics
from deepfake_audio.params import Params


def scores_for(model: Any, data: Any, split: str, batch_size: int) -> np.ndarray:
    """Bona fide logits for a split, in manifest order."""
    ds = data.tf_dataset(split, batch_size)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float64).ravel()


def summarise(
    val_scores: np.ndarray,
    val_targets: np.ndarray,
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    test_attacks: np.ndarray,
) -> dict[str, Any]:
    """All reported numbers from scores alone (pure numpy, so tests need no model)."""
    bona, spoof = test_scores[test_targets == 1], test_scores[test_targets == 0]
    eer, eer_threshold = metrics.compute_eer(bona, spoof)
    val_eer, threshold = metrics.compute_eer(
        val_scores[val_targets == 1], val_scores[val_targets == 0]
    )
    report = metrics.binary_report(test_targets, test_scores, threshold)
    notebook_report = metrics.binary_report(test_targets, test_scores, eer_threshold)
    min_dcf, _ = metrics.min_dcf(bona, spoof)
    per_attack = {}
    known = set(test_attacks[test_targets == 0]) - {"-", ""}  # "-": the source names no attack
    for attack in sorted(known):
        attack_spoof = test_scores[(test_targets == 0) & (test_attacks == attack)]
        try:
            per_attack[attack] = round(metrics.compute_eer(bona, attack_spoof)[0], 6)
        except ValueError:
            continue
    return {
        "test_eer": round(eer, 6),
        "test_min_dcf": round(min_dcf, 6),
        "test_roc_auc": round(metrics.roc_auc(bona, spoof), 6),
        "threshold": round(float(threshold), 6),
        "validation_eer": round(val_eer, 6),
        "test_accuracy": round(report["accuracy"], 6),
        "test_precision_bonafide": round(report["bonafide"]["precision"], 6),
        "test_recall_bonafide": round(report["bonafide"]["recall"], 6),
        "test_f1_macro": round(report["macro"]["f1"], 6),
        "test_per_attack_eer": per_attack,
        "notebook_style": {
            # threshold picked on the test set itself, as the notebook did (optimistic)
            "threshold": round(float(eer_threshold), 6),
            "test_accuracy": round(notebook_report["accuracy"], 6),
        },
        "test_clips": {"bonafide": int(bona.size), "spoof": int(spoof.size)},
    }


def details(
    val_threshold: float, test_scores: np.ndarray, test_targets: np.ndarray
) -> dict[str, Any]:
    """The classification report and confusion matrix: not DVC metrics, but logged and kept."""
    report = metrics.binary_report(test_targets, test_scores, val_threshold)
    _, test_threshold = metrics.compute_eer(
        test_scores[test_targets == 1], test_scores[test_targets == 0]
    )
    return {
        "classification_report": report,
        "confusion_matrix": {
            "rows_true_cols_predicted": ["spoof", "bonafide"],
            "matrix": report["confusion_matrix"],
        },
        "notebook_style": {
            "note": "threshold picked on the test set itself, as the notebook did (optimistic)",
            "classification_report": metrics.binary_report(
                test_targets, test_scores, test_threshold
            ),
        },
    }


def write_plots(
    plots: Path, test_scores: np.ndarray, test_targets: np.ndarray, threshold: float
) -> list[Path]:
    """CSV files that `dvc plots` renders with the templates declared in dvc.yaml."""
    plots = Path(plots)
    plots.mkdir(parents=True, exist_ok=True)
    bona, spoof = test_scores[test_targets == 1], test_scores[test_targets == 0]
    fpr, tpr, _ = metrics.roc_curve_points(bona, spoof)
    frr, far, _ = metrics.det_curve(bona, spoof)
    predicted = (test_scores > threshold).astype(int)
    names = {1: "bonafide", 0: "spoof"}
    tables = {
        "roc.csv": (("fpr", "tpr"), zip(fpr.round(6), tpr.round(6), strict=True)),
        "det.csv": (("far", "frr"), zip(far.round(6), frr.round(6), strict=True)),
        "confusion.csv": (
            ("actual", "predicted"),
            ((names[int(a)], names[int(p)]) for a, p in zip(test_targets, predicted, strict=True)),
        ),
        "scores.csv": (
            ("label", "score"),
            (
                (names[int(a)], round(float(s), 6))
                for a, s in zip(test_targets, test_scores, strict=True)
            ),
        ),
    }
    written = []
    for name, (header, rows) in tables.items():
        path = plots / name
        tmp = path.with_name("." + name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        tmp.replace(path)
        written.append(path)
    return written


def run(
    params: Params,
    dataset_dir: Path,
    model_path: Path,
    run_info_path: Path,
    metrics_path: Path,
    plots: Path,
) -> dict[str, Any]:
    import mlflow

    from deepfake_audio import models, runtime, tracking
    from deepfake_audio.dataset import SpectrogramDataset

    run_info = tracking.read_json(run_info_path, "the training run")
    tracking.connect(params.mlflow.experiment_name)
    runtime.configure(params.seed)
    data = SpectrogramDataset(dataset_dir)
    model = models.load(model_path)
    batch = params.tune.batch_size
    val_scores = scores_for(model, data, "validation", batch)
    test_scores = scores_for(model, data, "test", batch)
    test_manifest = data.manifest("test")
    summary = summarise(
        val_scores,
        data.labels("validation"),
        test_scores,
        test_manifest["target"].to_numpy(),
        test_manifest["attack"].astype(str).to_numpy(),
    )
    summary["synthetic_demo_corpus"] = params.data.source == "demo"
    tracking.write_json(metrics_path, summary)
    detail_path = Path(metrics_path).with_name("evaluation.json")
    tracking.write_json(
        detail_path,
        details(summary["threshold"], test_scores, test_manifest["target"].to_numpy()),
    )
    written = write_plots(
        plots, test_scores, test_manifest["target"].to_numpy(), summary["threshold"]
    )

    flat = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    flat.update({f"test_eer_{a}": v for a, v in summary["test_per_attack_eer"].items()})
    flat["notebook_style_test_accuracy"] = summary["notebook_style"]["test_accuracy"]
    with mlflow.start_run(run_id=run_info["run_id"]):
        mlflow.log_metrics(flat)
        mlflow.log_artifact(str(metrics_path), artifact_path="evaluation")
        mlflow.log_artifact(str(detail_path), artifact_path="evaluation")
        for path in written:
            mlflow.log_artifact(str(path), artifact_path="evaluation/plots")
        mlflow.set_tag("test_eer", f"{summary['test_eer']:.6f}")
    demo = " (synthetic demo corpus)" if summary["synthetic_demo_corpus"] else ""
    print(
        f"test EER {summary['test_eer']:.2%}{demo}; accuracy {summary['test_accuracy']:.2%} at the "
        f"validation threshold {summary['threshold']:.4f}",
        file=sys.stderr,
    )
    return summary
