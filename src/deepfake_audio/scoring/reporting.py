"""The numbers a detector is reported by, from its scores alone.

The CNN's evaluate stage and the LFCC-GMM baseline stage report through these same
functions, so the two sets of numbers in reports/metrics.json are computed alike and can
be compared line by line. Pure numpy (through `scoring.metrics`): tests need no model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfake_audio.scoring import metrics
from deepfake_audio.scoring.calibration import Decision, Reliability, fake_probability, reliability

# Keys of reports/metrics.json that carry the baseline's numbers (null when skipped), and
# the keys of the baseline's own report they come from.
BASELINE_METRICS_KEYS = {
    "baseline_lfcc_gmm_test_eer": "test_eer",
    "baseline_lfcc_gmm_test_min_dcf": "test_min_dcf",
    "baseline_lfcc_gmm_test_act_dcf": "test_act_dcf",
    "baseline_lfcc_gmm_test_cllr": "test_cllr",
    "baseline_lfcc_gmm_test_min_cllr": "test_min_cllr",
}
RELIABILITY_BINS = 10


def calibration_numbers(
    test_scores: np.ndarray, test_targets: np.ndarray, decision: Decision | None = None
) -> dict[str, float]:
    """ASVspoof 5's calibration-sensitive numbers, before and after calibration.

    ``*_raw``: the raw score read as a natural-log LLR (the CNN's logit as it is; the
    LFCC-GMM's scores are LLRs already). Without ``_raw``: the LLRs the model serves (the
    `decision`'s calibration, fitted on validation; the raw score again when there is none).
    minCllr, like EER and minDCF, only sees the order of the scores: one number for both.
    actDCF is at ASVspoof 5's operating point (Pspoof 0.05, Cmiss 1, Cfa 10), whatever
    `calibration.target_prior` the model serves at, so it compares across runs.
    ``test_ece*``: the expected calibration error (10 bins) of P(spoof) at the test split's
    own spoof share - the one prior at which "predicted vs observed fake rate" is fair.
    """
    targets = np.asarray(test_targets)
    raw = np.asarray(test_scores, dtype=np.float64)
    served = decision.llr(raw) if decision is not None else raw
    bona = targets == 1
    numbers: dict[str, float] = {
        "test_min_cllr": metrics.min_cllr(raw[bona], raw[~bona]),
    }
    for suffix, llrs in (("_raw", raw), ("", served)):
        numbers[f"test_act_dcf{suffix}"] = metrics.act_dcf(llrs[bona], llrs[~bona])[0]
        numbers[f"test_cllr{suffix}"] = metrics.cllr(llrs[bona], llrs[~bona])
    for suffix, curve in reliability_curves(raw, targets, decision).items():
        numbers[f"test_ece{suffix}"] = curve.expected_calibration_error()
    return {key: round(float(value), 6) for key, value in numbers.items()}


def reliability_curves(
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    decision: Decision | None = None,
    bins: int = RELIABILITY_BINS,
) -> dict[str, Reliability]:
    """Reliability diagrams before (``"_raw"``) and after (``""``) calibration.

    The predicted P(spoof) is taken at the test split's own spoof share: a probability is
    only checkable against an observed fake rate at the prior of the clips it is checked
    on (at ASVspoof's 5 % every bin of a half-fake test set would look under-confident).
    Before calibration the raw score is read as an LLR; at a balanced test split that is
    exactly the old sigmoid(-logit).
    """
    targets = np.asarray(test_targets)
    raw = np.asarray(test_scores, dtype=np.float64)
    is_fake = targets == 0
    prior = float(np.clip(is_fake.mean(), 1e-6, 1 - 1e-6))
    served = decision.llr(raw) if decision is not None else raw
    return {
        suffix: reliability(fake_probability(llrs, prior), is_fake, bins=bins)
        for suffix, llrs in (("_raw", raw), ("", served))
    }


def operating_points(
    test_scores: np.ndarray, test_targets: np.ndarray, decision: Decision | None = None
) -> list[dict[str, Any]]:
    """Named points on the test DET curve: EER, minDCF and actDCF before/after calibration.

    Each is ``{"point", "far", "frr"}`` (false-alarm and miss rate). The actDCF points are
    the decisions the LLRs imply at ASVspoof 5's Bayes threshold; their distance from the
    minDCF point on the curve is the calibration loss the metrics report.
    """
    targets = np.asarray(test_targets)
    raw = np.asarray(test_scores, dtype=np.float64)
    bona, spoof = targets == 1, targets == 0

    def rates(scores: np.ndarray, threshold: float) -> tuple[float, float]:
        far = float(np.count_nonzero(scores[spoof] > threshold) / np.count_nonzero(spoof))
        frr = float(np.count_nonzero(scores[bona] <= threshold) / np.count_nonzero(bona))
        return far, frr

    served = decision.llr(raw) if decision is not None else raw
    points = []
    eer_threshold = metrics.compute_eer(raw[bona], raw[spoof])[1]
    dcf_threshold = metrics.min_dcf(raw[bona], raw[spoof])[1]
    bayes = metrics.act_dcf(raw[bona], raw[spoof])[1]
    for name, scores, threshold in (
        ("EER", raw, eer_threshold),
        ("minDCF", raw, dcf_threshold),
        ("actDCF raw", raw, bayes),
        ("actDCF calibrated", served, bayes),
    ):
        far, frr = rates(scores, threshold)
        points.append({"point": name, "far": far, "frr": frr})
    return points


def summarise(
    val_scores: np.ndarray,
    val_targets: np.ndarray,
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    test_attacks: np.ndarray,
    train_attacks: np.ndarray | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """All reported numbers from scores alone (pure numpy, so tests need no model).

    With `train_attacks`, the attacks of the test split that training never saw are listed
    (``test_unseen_attacks``) and their spoofs pooled into ``test_eer_unseen_attacks``.

    With `decision` (the calibration and threshold the train stage fixed on validation),
    ``threshold`` and the numbers at it (accuracy, precision, recall, F1) are those of the
    served labels, and ``test_act_dcf``/``test_cllr`` are of the calibrated LLRs (see
    `calibration_numbers`). Without one (the LFCC-GMM baseline, an old run), the threshold
    is the validation EER threshold, as before, and the scores are taken as LLRs.
    ``validation_eer_threshold`` is the validation EER threshold either way.
    """
    bona, spoof = test_scores[test_targets == 1], test_scores[test_targets == 0]
    eer, eer_threshold = metrics.compute_eer(bona, spoof)
    val_eer, val_threshold = metrics.compute_eer(
        val_scores[val_targets == 1], val_scores[val_targets == 0]
    )
    threshold = decision.threshold if decision is not None else val_threshold
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
    served: dict[str, Any] = {}
    if decision is not None:
        served["calibration"] = {
            "method": decision.calibration.method if decision.calibration else "none",
            "threshold_rule": decision.rule,
            "target_prior": decision.target_prior,
            "c_miss": decision.c_miss,
            "c_fa": decision.c_fa,
            "llr_threshold": decision.llr_threshold,
        }
    return {
        "test_eer": round(eer, 6),
        "test_min_dcf": round(min_dcf, 6),
        **calibration_numbers(test_scores, test_targets, decision),
        "test_roc_auc": round(metrics.roc_auc(bona, spoof), 6),
        "threshold": round(float(threshold), 6),
        "validation_eer_threshold": round(float(val_threshold), 6),
        **served,
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
