"""The numbers a detector is reported by, from its scores alone.

The CNN's evaluate stage and the LFCC-GMM baseline stage report through these same
functions, so the two sets of numbers in reports/metrics.json are computed alike and can
be compared line by line. Pure numpy (through `core.metrics`): tests need no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfake_audio.core import metrics

# Keys of reports/metrics.json that carry the baseline's numbers (null when skipped), and
# the keys of the baseline's own report they come from.
BASELINE_METRICS_KEYS = {
    "baseline_lfcc_gmm_test_eer": "test_eer",
    "baseline_lfcc_gmm_test_min_dcf": "test_min_dcf",
}


def summarise(
    val_scores: np.ndarray,
    val_targets: np.ndarray,
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    test_attacks: np.ndarray,
    train_attacks: np.ndarray | None = None,
) -> dict[str, Any]:
    """All reported numbers from scores alone (pure numpy, so tests need no model).

    With `train_attacks`, the attacks of the test split that training never saw are listed
    (``test_unseen_attacks``) and their spoofs pooled into ``test_eer_unseen_attacks``.
    """
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
    unseen: dict[str, Any] = {}
    if train_attacks is not None:
        names = sorted(known - set(np.asarray(train_attacks).astype(str)))
        unseen["test_unseen_attacks"] = names
        pooled = test_scores[(test_targets == 0) & np.isin(test_attacks, names)]
        if names:
            try:
                unseen["test_eer_unseen_attacks"] = round(metrics.compute_eer(bona, pooled)[0], 6)
            except ValueError:
                pass
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
        **unseen,
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


def comparison(summary: dict[str, Any]) -> str:
    """One line: the CNN's test EER and minDCF next to the LFCC-GMM baseline's."""
    cnn = f"CNN test EER {summary['test_eer']:.2%}, minDCF {summary['test_min_dcf']:.4f}"
    eer = summary.get("baseline_lfcc_gmm_test_eer")
    if eer is None:
        return f"{cnn}; LFCC-GMM baseline: not run (see reports/baseline.json)"
    dcf = summary.get("baseline_lfcc_gmm_test_min_dcf")
    dcf_text = f"{dcf:.4f}" if dcf is not None else "n/a"
    return f"{cnn}; LFCC-GMM baseline test EER {eer:.2%}, minDCF {dcf_text}"
