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

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfake_audio.scoring.costs import (
    ASVSPOOF5_CM_DCF,
    DcfParameters,
    _bayes_llr_threshold,
)
from deepfake_audio.scoring.eer import (
    _as_scores,
    _checked_det,
    _leading_threshold,
    compute_eer,
    det_curve,
    threshold_at_eer,
)

__all__ = [
    "ASVSPOOF5_CM_DCF",
    "DcfParameters",
    "act_dcf",
    "binary_report",
    "cllr",
    "compute_eer",
    "decide",
    "det_curve",
    "min_cllr",
    "min_dcf",
    "roc_auc",
    "roc_curve_points",
    "threshold_at_eer",
]


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


# --- ASVspoof 5 calibration-sensitive metrics: actDCF, Cllr, minCllr -----------------------
#
# EER and minDCF only look at the order of the scores. The metrics below also judge the score
# *values*: they read a score as a log-likelihood ratio, natural log,
# ``llr = ln p(score | bona fide) - ln p(score | spoof)``, so higher is still "more bona fide"
# and the same "accept when > threshold" rule applies.


def act_dcf(
    bonafide_scores: ArrayLike,
    spoof_scores: ArrayLike,
    p_spoof: float = ASVSPOOF5_CM_DCF.p_spoof,
    c_miss: float = ASVSPOOF5_CM_DCF.c_miss,
    c_fa: float = ASVSPOOF5_CM_DCF.c_fa,
) -> tuple[float, float]:
    """Normalised actual DCF: the cost of the decisions the scores, read as LLRs, imply.

    Why it exists next to `min_dcf`: minDCF picks the best threshold *after* seeing the
    labels, so it cannot see a miscalibrated system. actDCF fixes the threshold in advance at
    the Bayes threshold of the prior and costs (`_bayes_llr_threshold`), which is the right one
    only if the scores are well-calibrated natural-log LLRs; the gap ``actDCF - minDCF`` is
    the calibration loss at this operating point.

    ``DCF = c_miss * (1 - p_spoof) * P_miss + c_fa * p_spoof * P_fa`` divided by
    ``min(c_miss * (1 - p_spoof), c_fa * p_spoof)``, the normalisation of the official
    ``compute_actDCF`` and of `min_dcf`. Unlike minDCF it is not capped at 1: a badly
    calibrated system can do worse than the best trivial decision (up to
    ``max / min`` of the two weighted costs, 1.9 with the defaults).

    Tie rule: this module's, a trial is accepted when ``llr > threshold``, so a bona fide LLR
    exactly at the threshold is a miss. The official code accepts on ``>=``; the two differ
    only for a score exactly equal to the threshold. Keeping ``>`` makes every actDCF
    operating point a `det_curve` point, so ``act_dcf >= min_dcf`` holds exactly (same
    parameters, same scores).

    Hard decisions are allowed (the cost of decisions is well defined), unlike `min_dcf`.

    Returns:
        ``(act_dcf, threshold)``: the normalised cost and the LLR threshold it was taken at.
    """
    bona = _as_scores(bonafide_scores, "bonafide_scores")
    spoof = _as_scores(spoof_scores, "spoof_scores")
    threshold = _bayes_llr_threshold(p_spoof, c_miss, c_fa)
    p_miss = np.count_nonzero(bona <= threshold) / bona.size
    p_fa = np.count_nonzero(spoof > threshold) / spoof.size
    cost_miss = c_miss * (1.0 - p_spoof)
    cost_fa = c_fa * p_spoof
    dcf = cost_miss * p_miss + cost_fa * p_fa
    return float(dcf / min(cost_miss, cost_fa)), threshold


_LOG2_E = 1.0 / math.log(2.0)


def _cllr_bits(bona_llrs: np.ndarray, spoof_llrs: np.ndarray) -> float:
    """Cllr of already-checked LLR arrays; ``+inf`` / ``-inf`` are allowed where they cost 0.

    Each trial costs ``log2(1 + exp(-llr))`` (bona fide) or ``log2(1 + exp(llr))`` (spoof).
    `np.logaddexp2` evaluates ``log2(1 + 2**x)`` without overflow (the official
    ``log1p(exp(-llr))`` overflows to inf for an LLR below about -710) and gives exactly 1.0
    for ``llr = 0``, so an all-zero system scores exactly 1 bit.
    """
    bona_cost = np.logaddexp2(0.0, -bona_llrs * _LOG2_E)
    spoof_cost = np.logaddexp2(0.0, spoof_llrs * _LOG2_E)
    return float(0.5 * (bona_cost.mean() + spoof_cost.mean()))


def cllr(bonafide_llrs: ArrayLike, spoof_llrs: ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer & du Preez), as ASVspoof 5 reports it.

    ``Cllr = (mean_bona log2(1 + e^-llr) + mean_spoof log2(1 + e^llr)) / 2``: the two classes
    are averaged separately, so Cllr does not depend on how many trials of each class the
    test set holds (it evaluates at a 0.5 prior; the official ``calculate_CLLR`` does the
    same, dividing natural-log costs by ln 2). It rewards well-calibrated natural-log LLRs
    across *all* operating points: 0 is perfect, 1 bit is what a system saying "LLR 0"
    (no information) gets, and a miscalibrated system can exceed 1.

    Raises:
        ValueError: on an empty class or NaN/inf LLRs.
    """
    bona = _as_scores(bonafide_llrs, "bonafide_llrs")
    spoof = _as_scores(spoof_llrs, "spoof_llrs")
    return _cllr_bits(bona, spoof)


def _pav_llrs(bona: np.ndarray, spoof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best monotone (non-decreasing) score-to-LLR map, fitted on these very labels.

    Pool-adjacent-violators on the bona fide fraction per *distinct* score: trials with the
    same score form one group, since no function of the score can tell them apart (this is
    what sorting targets before non-targets on ties achieves in BOSARIS' ``opt_loglr``).
    The fitted fraction is the posterior P(bona | score) at the empirical prior
    ``n_bona / n_all``; subtracting that prior's log-odds turns it into an LLR.

    A block made only of spoofs gets LLR ``-inf`` and one made only of bona fide ``+inf``;
    such a block never holds a trial of the other class, so its Cllr cost is exactly 0.

    Returns:
        ``(bona_llrs, spoof_llrs)`` in the input order.
    """
    pooled = np.concatenate((bona, spoof))
    values, inverse = np.unique(pooled, return_inverse=True)
    inverse = inverse.ravel()
    totals = np.bincount(inverse, minlength=values.size).astype(np.float64)
    bona_counts = np.bincount(inverse[: bona.size], minlength=values.size).astype(np.float64)

    # Neighbouring groups with the same bona fide fraction always end up in one block, so
    # merge runs of them up front (vectorised): for a well-separated system the long pure
    # runs at both ends collapse and the Python loop below only sees the overlap region.
    fraction = bona_counts / totals
    starts = np.flatnonzero(np.concatenate(([True], fraction[1:] != fraction[:-1])))
    run_bona = np.add.reduceat(bona_counts, starts).tolist()
    run_total = np.add.reduceat(totals, starts).tolist()
    run_groups = np.diff(np.append(starts, values.size)).tolist()

    # Stack-based PAV: push each run; while the block below has a mean >= the new block's
    # mean, merge them (compared by cross-multiplication, exact for integer counts).
    block_bona: list[float] = []
    block_total: list[float] = []
    block_groups: list[int] = []
    for b, t, g in zip(run_bona, run_total, run_groups, strict=True):
        while block_bona and block_bona[-1] * t >= b * block_total[-1]:
            b += block_bona.pop()
            t += block_total.pop()
            g += block_groups.pop()
        block_bona.append(b)
        block_total.append(t)
        block_groups.append(g)

    posterior = np.repeat(np.array(block_bona) / np.array(block_total), block_groups)
    prior_log_odds = math.log(bona.size) - math.log(spoof.size)
    with np.errstate(divide="ignore"):
        group_llr = np.log(posterior) - np.log1p(-posterior) - prior_log_odds
    trial_llr = group_llr[inverse]
    return trial_llr[: bona.size], trial_llr[bona.size :]


def min_cllr(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> float:
    """Cllr after the best monotone calibration of the scores (PAV), in bits.

    Brümmer's ``min Cllr``: the scores are mapped to LLRs by pool-adjacent-violators fitted on
    the same labels (`_pav_llrs`; equivalently, by the slopes of the ROC convex hull), and
    Cllr is taken of those. It depends only on the order of the scores, so it measures
    discrimination; ``cllr - min_cllr`` is the calibration loss. The PAV map is optimal for
    every prior at once, and "LLR 0 everywhere" is one of the monotone maps, so
    ``0 <= min_cllr <= 1`` and ``min_cllr <= cllr`` for any LLRs with the same order.
    The official ASVspoof 5 package reports only the actual Cllr.

    Cost: a sort plus a Python loop over the distinct-score runs where the classes overlap.

    Raises:
        ValueError: on an empty class or NaN/inf scores.
    """
    bona = _as_scores(bonafide_scores, "bonafide_scores")
    spoof = _as_scores(spoof_scores, "spoof_scores")
    return _cllr_bits(*_pav_llrs(bona, spoof))
