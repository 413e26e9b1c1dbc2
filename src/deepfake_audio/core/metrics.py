"""Detection metrics for spoofed-speech detection, computed the way ASVspoof does.

Conventions used throughout (every function here follows them, so the numbers agree):

* A *score* is higher for "more bona fide".
* Label 1 = bona fide (the positive class), label 0 = spoof.
* Decision rule: a trial is **accepted as bona fide when ``score > threshold``** and rejected
  (called spoof) when ``score <= threshold``. `det_curve`, `decide`, `roc_curve_points` and
  `binary_report` all use this one rule, so a threshold returned by `compute_eer` or `min_dcf`
  reproduces, through `decide`, the error rates it was chosen at (barring tied scores).

Only numpy is used. The model is tuned, selected and promoted on these numbers, so they must
follow the ASVspoof rule exactly (stable sort, no interpolation) and be reproducible from the
scores alone, whatever another library's tie handling or threshold convention is (scikit-learn's
ROC, for one, accepts on ``>=`` and drops points by default). The tests pin the overlap with
scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "binary_report",
    "compute_eer",
    "decide",
    "det_curve",
    "min_dcf",
    "roc_auc",
    "roc_curve_points",
    "threshold_at_eer",
]

# Fewer distinct values than this means the "scores" are hard decisions (or nearly so):
# an EER read off two or three operating points says little and usually hides a bug
# (e.g. feeding predicted labels instead of probabilities).
_MIN_DISTINCT_SCORES = 3


def _as_scores(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a flat float64 array, rejecting empty or non-finite input.

    Why strict: a NaN sorts to the end and silently shifts every error rate, and an empty
    class makes the rates 0/0; both must fail loudly rather than produce a plausible EER.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one score per class")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite score(s)")
    return arr


def _require_continuous(bonafide: np.ndarray, spoof: np.ndarray) -> None:
    """Reject inputs that look like hard decisions rather than scores."""
    n_distinct = np.unique(np.concatenate((bonafide, spoof))).size
    if n_distinct < _MIN_DISTINCT_SCORES:
        raise ValueError(
            f"only {n_distinct} distinct score value(s) across both classes; EER and minDCF "
            f"need continuous scores (at least {_MIN_DISTINCT_SCORES} distinct values), "
            "not hard 0/1 decisions"
        )


def _leading_threshold(lowest: float) -> float:
    """A threshold strictly below ``lowest``: every trial is accepted there.

    The official tool subtracts 0.001; a fixed offset vanishes in float64 for very large
    scores, so the offset grows with the magnitude of the score.
    """
    return float(lowest - 1e-3 * max(1.0, abs(lowest)))


def det_curve(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection-error-tradeoff points, following the official ASVspoof evaluation rule.

    All scores are pooled and sorted with a *stable* sort (bona fide scores first in the pool,
    so on a tie the bona fide trial comes first; the result is deterministic). There is one
    DET point per sorted score, whose threshold is that score, plus a leading point (miss rate
    0, false-alarm rate 1) with a threshold a bit below the lowest score.

    At the point after the first ``k`` sorted trials:

    * ``frr`` (miss rate) = bona fide trials among the first ``k`` / number of bona fide, i.e.
      the fraction of bona fide with ``score <= threshold``;
    * ``far`` (false-alarm rate) = spoof trials after the first ``k`` / number of spoofs, i.e.
      the fraction of spoofs with ``score > threshold``.

    Both are cumulative sums over the sorted labels. When scores tie across classes, the points
    inside the tied run split the tie in the stable-sort order, exactly as the official code
    does; the point at the end of the run is the exact ``<=`` / ``>`` rate.

    Returns:
        ``(frr, far, thresholds)``, each of length ``n_bonafide + n_spoof + 1``; ``frr`` is
        non-decreasing and ``far`` non-increasing.
    """
    bona = _as_scores(bonafide_scores, "bonafide_scores")
    spoof = _as_scores(spoof_scores, "spoof_scores")
    pooled = np.concatenate((bona, spoof))
    is_bona = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))
    order = np.argsort(pooled, kind="mergesort")
    sorted_scores = pooled[order]
    sorted_is_bona = is_bona[order]

    bona_at_or_below = np.cumsum(sorted_is_bona)
    spoof_at_or_below = np.arange(1, pooled.size + 1) - bona_at_or_below
    frr = np.concatenate(([0.0], bona_at_or_below / bona.size))
    far = np.concatenate(([1.0], (spoof.size - spoof_at_or_below) / spoof.size))
    thresholds = np.concatenate(([_leading_threshold(sorted_scores[0])], sorted_scores))
    return frr, far, thresholds


def compute_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold, ASVspoof style (no interpolation).

    The EER is the mean of ``frr`` and ``far`` at the first DET point where ``|frr - far|`` is
    smallest. Not interpolating keeps the number identical to the official tool's, which is
    what published results are compared against.

    Raises:
        ValueError: on an empty class, NaN/inf scores, or fewer than three distinct scores
            overall (hard decisions are not scores).

    Returns:
        ``(eer, threshold)``; accept as bona fide when ``score > threshold``.
    """
    frr, far, thresholds = _checked_det(bonafide_scores, spoof_scores)
    index = int(np.argmin(np.abs(frr - far)))
    return float((frr[index] + far[index]) / 2.0), float(thresholds[index])


def threshold_at_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> float:
    """The EER operating threshold (``compute_eer``'s), for turning scores into decisions."""
    return compute_eer(bonafide_scores, spoof_scores)[1]


def _checked_det(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`det_curve` plus the "these are real scores" check shared by EER and minDCF."""
    bona = _as_scores(bonafide_scores, "bonafide_scores")
    spoof = _as_scores(spoof_scores, "spoof_scores")
    _require_continuous(bona, spoof)
    return det_curve(bona, spoof)


def min_dcf(
    bonafide_scores: ArrayLike,
    spoof_scores: ArrayLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost function, as in the ASVspoof 5 evaluation.

    ``DCF(t) = c_miss * (1 - p_spoof) * P_miss(t) + c_fa * p_spoof * P_fa(t)``, divided by the
    cost of the best trivial system, ``min(c_miss * (1 - p_spoof), c_fa * p_spoof)`` (accept
    everything or reject everything), and minimised over the DET points. The DET curve includes
    both trivial operating points, so the result is always in ``[0, 1]``: 1 means "no better
    than always answering the cheaper way". The defaults are ASVspoof 5's.

    Returns:
        ``(min_dcf, threshold)`` at the first DET point reaching the minimum.
    """
    if not 0.0 < p_spoof < 1.0:
        raise ValueError(f"p_spoof must be strictly between 0 and 1, got {p_spoof}")
    if c_miss <= 0.0 or c_fa <= 0.0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    frr, far, thresholds = _checked_det(bonafide_scores, spoof_scores)
    cost_miss = c_miss * (1.0 - p_spoof)
    cost_fa = c_fa * p_spoof
    dcf = cost_miss * frr + cost_fa * far
    index = int(np.argmin(dcf))
    return float(dcf[index] / min(cost_miss, cost_fa)), float(thresholds[index])


def roc_auc(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> float:
    """Area under the ROC curve, bona fide positive: ``P(bona > spoof) + P(bona == spoof) / 2``.

    Computed as the Mann-Whitney statistic with two binary searches per bona fide score, so it
    is exact (ties count half) and O(n log n). Hard decisions are allowed here: AUC is still
    well defined for them.
    """
    bona = _as_scores(bonafide_scores, "bonafide_scores")
    spoof = np.sort(_as_scores(spoof_scores, "spoof_scores"))
    below = np.searchsorted(spoof, bona, side="left")
    at_or_below = np.searchsorted(spoof, bona, side="right")
    wins = below.sum(dtype=np.float64) + 0.5 * (at_or_below - below).sum(dtype=np.float64)
    return float(wins / (bona.size * spoof.size))


def roc_curve_points(
    bonafide_scores: ArrayLike, spoof_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (bona fide = positive) under the ``score > threshold`` acceptance rule.

    The thresholds are the distinct scores in decreasing order followed by one value a bit
    below the lowest score, so the curve runs from ``(0, 0)`` (threshold = highest score,
    nothing accepted) to ``(1, 1)`` (everything accepted). ``fpr`` equals `det_curve`'s ``far``
    and ``tpr`` equals ``1 - frr`` at the same thresholds; the trapezoidal area under these
    points equals `roc_auc`.

    Returns:
        ``(fpr, tpr, thresholds)``; ``fpr`` and ``tpr`` are non-decreasing.
    """
    bona = np.sort(_as_scores(bonafide_scores, "bonafide_scores"))
    spoof = np.sort(_as_scores(spoof_scores, "spoof_scores"))
    distinct = np.unique(np.concatenate((bona, spoof)))[::-1]
    thresholds = np.concatenate((distinct, [_leading_threshold(distinct[-1])]))
    # Trials with score > t are those to the right of searchsorted(..., side="right").
    tpr = (bona.size - np.searchsorted(bona, thresholds, side="right")) / bona.size
    fpr = (spoof.size - np.searchsorted(spoof, thresholds, side="right")) / spoof.size
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds


def decide(scores: ArrayLike, threshold: float) -> np.ndarray:
    """Hard labels from scores: 1 (bona fide) where ``score > threshold``, else 0 (spoof).

    The strict ``>`` is the rule `det_curve` measures (a bona fide trial scoring exactly the
    threshold counts as a miss), so applying an EER threshold here reproduces the EER point.
    """
    return (np.asarray(scores, dtype=np.float64) > threshold).astype(np.int64)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with 0.0 for 0/0 (scikit-learn's ``zero_division`` default)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def binary_report(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, Any]:
    """Classification numbers at one threshold, as a JSON-ready dict (plain floats and ints).

    Predictions come from `decide` (bona fide when ``score > threshold``). Keys:

    * ``threshold``, ``accuracy``;
    * ``bonafide`` and ``spoof``: ``precision``, ``recall``, ``f1``, ``support`` for that class
      taken as the positive one;
    * ``macro``: unweighted mean of the two classes' precision/recall/F1 (the recall mean
      is the balanced accuracy), ``support`` = all trials;
    * ``confusion_matrix``: ``[[tn, fp], [fn, tp]]`` with bona fide as positive, i.e. rows are
      the TRUE class in the order (spoof, bonafide) and columns the PREDICTED class in the same
      order, the layout of ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=[0, 1])``;
    * ``confusion_matrix_labels``: ``["spoof", "bonafide"]``, to make that order explicit.

    Undefined ratios (0/0, e.g. precision when a class is never predicted) are reported as 0.0.
    """
    truth = np.asarray(y_true).ravel()
    values = _as_scores(scores, "scores")
    if truth.size != values.size:
        raise ValueError(f"y_true has {truth.size} labels but scores has {values.size} values")
    if not np.all((truth == 0) | (truth == 1)):
        raise ValueError("y_true must contain only 0 (spoof) and 1 (bona fide)")
    truth = truth.astype(np.int64)
    predicted = decide(values, threshold)

    tp = int(np.count_nonzero((truth == 1) & (predicted == 1)))
    tn = int(np.count_nonzero((truth == 0) & (predicted == 0)))
    fp = int(np.count_nonzero((truth == 0) & (predicted == 1)))
    fn = int(np.count_nonzero((truth == 1) & (predicted == 0)))

    bona_p, bona_r, bona_f = _prf(tp, fp, fn)
    spoof_p, spoof_r, spoof_f = _prf(tn, fn, fp)
    return {
        "threshold": float(threshold),
        "accuracy": float((tp + tn) / truth.size),
        "bonafide": {"precision": bona_p, "recall": bona_r, "f1": bona_f, "support": tp + fn},
        "spoof": {"precision": spoof_p, "recall": spoof_r, "f1": spoof_f, "support": tn + fp},
        "macro": {
            "precision": (bona_p + spoof_p) / 2.0,
            "recall": (bona_r + spoof_r) / 2.0,
            "f1": (bona_f + spoof_f) / 2.0,
            "support": int(truth.size),
        },
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "confusion_matrix_labels": ["spoof", "bonafide"],
    }
