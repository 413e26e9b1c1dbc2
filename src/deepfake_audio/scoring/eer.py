"""The equal error rate and the DET curve, computed the way ASVspoof does.

A module of its own because training depends on it: tuning and training pick epochs and
trials by validation EER, and calibration reads the EER threshold. Every other metric lives
in `scoring.metrics`, so editing those reruns only the stages that report them
(dvc.yaml's deps follow imports module by module).

Conventions (those of `scoring.metrics`): a score is higher for "more bona fide"; a trial is
accepted as bona fide when ``score > threshold``. Only numpy is used: the numbers must follow
the ASVspoof rule exactly (stable sort, no interpolation).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

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
