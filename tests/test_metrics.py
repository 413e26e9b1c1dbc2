"""Tests for scoring.metrics: hand-worked cases, invariances, errors, scikit-learn parity.

Convention under test: higher score = more bona fide; label 1 = bona fide, 0 = spoof; a trial
is accepted as bona fide when score > threshold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from deepfake_audio.scoring.metrics import (
    binary_report,
    compute_eer,
    decide,
    det_curve,
    min_dcf,
    roc_auc,
    roc_curve_points,
    threshold_at_eer,
)

# Worked by hand. Pool and sort (b = bona fide, s = spoof):
#   0.1s 0.2s 0.3b 0.4s 0.6s 0.7b 0.8b 0.9b
# DET points (frr = bona <= t out of 4, far = spoof > t out of 4):
#   t        : lead  0.1   0.2   0.3   0.4   0.6   0.7   0.8   0.9
#   frr      : 0     0     0     1/4   1/4   1/4   2/4   3/4   1
#   far      : 1     3/4   2/4   2/4   1/4   0     0     0     0
#   |frr-far|: 1     3/4   2/4   1/4   0     1/4   2/4   3/4   1
# The first minimum is at t = 0.4 with frr = far = 1/4, so EER = 0.25, threshold 0.4.
#
# minDCF with ASVspoof 5 defaults (p_spoof 0.05, c_miss 1, c_fa 10):
#   DCF = 1 * 0.95 * frr + 10 * 0.05 * far = 0.95 frr + 0.5 far
#   t  : lead  0.1    0.2   0.3     0.4     0.6     0.7    0.8     0.9
#   DCF: 0.5   0.375  0.25  0.4875  0.3625  0.2375  0.475  0.7125  0.95
#   minimum 0.2375 at t = 0.6; default cost min(0.95, 0.5) = 0.5 -> minDCF = 0.475.
HAND_BONA = [0.9, 0.8, 0.7, 0.3]
HAND_SPOOF = [0.6, 0.4, 0.2, 0.1]


def _random_scores(seed: int, n_bona: int = 157, n_spoof: int = 211) -> tuple[np.ndarray, ...]:
    """Overlapping Gaussian scores (continuous, so no ties)."""
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 1.0, n_bona), rng.normal(-0.5, 1.2, n_spoof)


def test_hand_worked_det_curve() -> None:
    frr, far, thr = det_curve(HAND_BONA, HAND_SPOOF)
    np.testing.assert_allclose(frr, [0, 0, 0, 0.25, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(far, [1, 0.75, 0.5, 0.5, 0.25, 0, 0, 0, 0])
    np.testing.assert_allclose(thr[1:], [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    assert thr[0] < 0.1


def test_hand_worked_eer() -> None:
    eer, thr = compute_eer(HAND_BONA, HAND_SPOOF)
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(0.4)
    assert threshold_at_eer(HAND_BONA, HAND_SPOOF) == thr


def test_perfect_separation_gives_zero() -> None:
    # Sorted 0s 1s 2s 3b 4b 5b: after t = 2 no bona fide is missed and no spoof accepted.
    eer, thr = compute_eer([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert eer == 0.0
    assert thr == 2.0


def test_fully_reversed_gives_one() -> None:
    # Sorted 0b 1b 2b 3s 4s 5s: frr rises to 1 while far stays 1; they meet only at 1.
    eer, _ = compute_eer([0.0, 1.0, 2.0], [3.0, 4.0, 5.0])
    assert eer == 1.0


def test_interleaved_gives_half() -> None:
    # Sorted 0s 1b 2s 3b 4s 5b 6s 7b. Points (frr, far): lead (0, 1), 0 -> (0, 3/4),
    # 1 -> (1/4, 3/4), 2 -> (1/4, 1/2), 3 -> (1/2, 1/2): first |frr - far| = 0, EER = 0.5.
    eer, thr = compute_eer([1.0, 3.0, 5.0, 7.0], [0.0, 2.0, 4.0, 6.0])
    assert eer == 0.5
    assert thr == 3.0


def test_identical_tied_scores_are_deterministic() -> None:
    # Same values in both classes. Stable sort keeps bona fide (pooled first) before spoof
    # within each tie: 1b 1s 2b 2s 3b 3s 4b 4s.
    # (frr, far): lead (0, 1), (1/4, 1), (1/4, 3/4), (2/4, 3/4), (2/4, 2/4) -> EER 0.5 at t = 2.
    bona = [4.0, 1.0, 3.0, 2.0]
    spoof = [2.0, 4.0, 1.0, 3.0]
    frr, far, thr = det_curve(bona, spoof)
    np.testing.assert_allclose(frr, [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1])
    np.testing.assert_allclose(far, [1, 1, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0])
    np.testing.assert_allclose(thr[1:], [1, 1, 2, 2, 3, 3, 4, 4])
    assert compute_eer(bona, spoof) == (0.5, 2.0)
    # Reordering within a class cannot change anything: same result, every time.
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert compute_eer(rng.permutation(bona), rng.permutation(spoof)) == (0.5, 2.0)


def test_det_curve_shape_and_monotonicity() -> None:
    bona, spoof = _random_scores(1)
    frr, far, thr = det_curve(bona, spoof)
    n = bona.size + spoof.size + 1
    assert frr.shape == far.shape == thr.shape == (n,)
    assert (frr[0], far[0]) == (0.0, 1.0)
    assert (frr[-1], far[-1]) == (1.0, 0.0)
    assert np.all(np.diff(frr) >= 0) and np.all(np.diff(far) <= 0)
    assert np.all(np.diff(thr) >= 0) and thr[0] < thr[1]


def test_det_curve_leading_threshold_below_large_scores() -> None:
    _, _, thr = det_curve([1e20, 2e20], [3e20])
    assert thr[0] < 1e20


def test_det_points_match_threshold_rule_without_ties() -> None:
    """With distinct scores every DET point is exactly (P(bona <= t), P(spoof > t))."""
    bona, spoof = _random_scores(2)
    frr, far, thr = det_curve(bona, spoof)
    for f_r, f_a, t in zip(frr, far, thr, strict=True):
        assert f_r == pytest.approx(np.mean(bona <= t))
        assert f_a == pytest.approx(np.mean(spoof > t))


@pytest.mark.parametrize("seed", range(5))
def test_eer_invariant_to_strictly_increasing_transforms(seed: int) -> None:
    bona, spoof = _random_scores(seed)
    eer, thr = compute_eer(bona, spoof)
    assert compute_eer(3 * bona + 7, 3 * spoof + 7) == pytest.approx((eer, 3 * thr + 7))
    assert compute_eer(np.exp(bona), np.exp(spoof)) == pytest.approx((eer, np.exp(thr)))
    assert compute_eer(np.tanh(bona / 4), np.tanh(spoof / 4))[0] == eer


@pytest.mark.parametrize("seed", range(5))
def test_eer_symmetric_under_class_swap_and_negation(seed: int) -> None:
    bona, spoof = _random_scores(seed)
    assert compute_eer(-spoof, -bona)[0] == pytest.approx(compute_eer(bona, spoof)[0])


def test_eer_in_unit_interval_and_near_theory() -> None:
    # Two unit-variance Gaussians 2 apart: EER = Phi(-1) = 0.1587.
    rng = np.random.default_rng(3)
    eer, _ = compute_eer(rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000))
    assert eer == pytest.approx(0.1587, abs=0.01)


def test_eer_threshold_reproduced_by_decide() -> None:
    bona, spoof = _random_scores(4)
    frr, far, thr = det_curve(bona, spoof)
    eer, t = compute_eer(bona, spoof)
    miss = np.mean(decide(bona, t) == 0)
    false_alarm = np.mean(decide(spoof, t) == 1)
    assert (miss + false_alarm) / 2 == pytest.approx(eer)
    index = int(np.argmin(np.abs(frr - far)))
    assert (miss, false_alarm) == pytest.approx((frr[index], far[index]))


def test_decide_rule_is_strictly_greater() -> None:
    np.testing.assert_array_equal(decide([0.1, 0.5, 0.9], 0.5), [0, 0, 1])


@pytest.mark.parametrize(
    ("bona", "spoof", "match"),
    [
        ([], [0.1, 0.2, 0.3], "bonafide_scores is empty"),
        ([0.1, 0.2, 0.3], [], "spoof_scores is empty"),
        ([0.1, np.nan, 0.3], [0.0, 0.2], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [0.0, np.inf], "NaN or infinite"),
        ([1, 1, 0], [0, 0, 1], "distinct"),  # hard decisions
        ([0.5, 0.5], [0.5, 0.5], "distinct"),
    ],
)
def test_eer_and_min_dcf_reject_bad_input(bona: list, spoof: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_eer(bona, spoof)
    with pytest.raises(ValueError, match=match):
        min_dcf(bona, spoof)


def test_hand_worked_min_dcf() -> None:
    value, thr = min_dcf(HAND_BONA, HAND_SPOOF)
    assert value == pytest.approx(0.475)
    assert thr == pytest.approx(0.6)


def test_min_dcf_extremes() -> None:
    assert min_dcf([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])[0] == 0.0
    # Reversed scores: no threshold beats the cheaper trivial system (accept everything).
    assert min_dcf([0.0, 1.0, 2.0], [3.0, 4.0, 5.0])[0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_min_dcf_bounds_and_brute_force(seed: int) -> None:
    bona, spoof = _random_scores(seed)
    # Round to create ties: the minimum of a linear cost is still reached at an exact point.
    bona, spoof = np.round(bona, 1), np.round(spoof, 1)
    for p_spoof, c_miss, c_fa in [(0.05, 1.0, 10.0), (0.5, 1.0, 1.0), (0.01, 2.0, 3.0)]:
        value, _ = min_dcf(bona, spoof, p_spoof=p_spoof, c_miss=c_miss, c_fa=c_fa)
        assert 0.0 <= value <= 1.0
        thresholds = np.concatenate(([bona.min() - 1], np.unique(np.r_[bona, spoof])))
        costs = [
            c_miss * (1 - p_spoof) * np.mean(bona <= t) + c_fa * p_spoof * np.mean(spoof > t)
            for t in thresholds
        ]
        expected = min(costs) / min(c_miss * (1 - p_spoof), c_fa * p_spoof)
        assert value == pytest.approx(expected)


def test_min_dcf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="p_spoof"):
        min_dcf(HAND_BONA, HAND_SPOOF, p_spoof=1.0)
    with pytest.raises(ValueError, match="costs"):
        min_dcf(HAND_BONA, HAND_SPOOF, c_fa=0.0)


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_auc_matches_sklearn(decimals: int | None) -> None:
    bona, spoof = _random_scores(5)
    if decimals is not None:  # ties, including many across classes
        bona, spoof = np.round(bona, decimals), np.round(spoof, decimals)
    y = np.r_[np.ones(bona.size), np.zeros(spoof.size)]
    expected = skm.roc_auc_score(y, np.r_[bona, spoof])
    assert roc_auc(bona, spoof) == pytest.approx(expected, abs=1e-12)


def test_auc_hand_cases() -> None:
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5  # ties count half
    # 16 pairs of the hand example: only (0.3 vs 0.6) and (0.3 vs 0.4) are lost.
    assert roc_auc(HAND_BONA, HAND_SPOOF) == pytest.approx(14 / 16)


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_curve_points_match_sklearn(decimals: int | None) -> None:
    bona, spoof = _random_scores(6)
    if decimals is not None:
        bona, spoof = np.round(bona, decimals), np.round(spoof, decimals)
    fpr, tpr, thr = roc_curve_points(bona, spoof)
    y = np.r_[np.ones(bona.size), np.zeros(spoof.size)]
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, np.r_[bona, spoof], drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(thr) < 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(bona, spoof))
    # Same rule as decide(): the rates at each threshold are those of score > threshold.
    for f, t, th in zip(fpr, tpr, thr, strict=True):
        assert (f, t) == (np.mean(decide(spoof, th)), np.mean(decide(bona, th)))


@pytest.mark.parametrize("seed", range(4))
def test_binary_report_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + 0.8 * y
    threshold = float(rng.normal(0.3, 0.3))
    report = binary_report(y, scores, threshold)
    y_pred = (scores > threshold).astype(int)

    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, y_pred))
    p, r, f, s = skm.precision_recall_fscore_support(y, y_pred, labels=[0, 1], zero_division=0)
    for index, name in enumerate(["spoof", "bonafide"]):
        assert report[name]["precision"] == pytest.approx(p[index])
        assert report[name]["recall"] == pytest.approx(r[index])
        assert report[name]["f1"] == pytest.approx(f[index])
        assert report[name]["support"] == s[index]
    macro = skm.precision_recall_fscore_support(y, y_pred, average="macro", zero_division=0)
    assert (report["macro"]["precision"], report["macro"]["recall"]) == pytest.approx(macro[:2])
    assert report["macro"]["f1"] == pytest.approx(macro[2])
    assert report["macro"]["recall"] == pytest.approx(skm.balanced_accuracy_score(y, y_pred))
    assert report["confusion_matrix"] == skm.confusion_matrix(y, y_pred, labels=[0, 1]).tolist()
    assert report["confusion_matrix_labels"] == ["spoof", "bonafide"]
    json.dumps(report)  # plain Python types, ready for MLflow / JSON artefacts


def test_binary_report_confusion_layout_and_zero_division() -> None:
    # Threshold above every score: everything called spoof. Rows = true (spoof, bonafide).
    report = binary_report([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5], threshold=1.0)
    assert report["confusion_matrix"] == [[2, 0], [3, 0]]
    assert report["bonafide"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    assert report["spoof"]["recall"] == 1.0
    assert report["accuracy"] == pytest.approx(0.4)


def test_binary_report_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        binary_report([0, 1], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError, match="only 0"):
        binary_report([0, 2], [0.1, 0.2], 0.5)


def test_three_distinct_scores_are_the_minimum() -> None:
    # Three distinct values across both classes are accepted; two are not.
    # Sorted 0s 1b 2b: (frr, far) lead (0, 1), then (0, 0) at t = 0: EER 0.
    assert compute_eer([1.0, 2.0], [0.0]) == (0.0, 0.0)
    assert min_dcf([1.0, 2.0], [0.0]) == (0.0, 0.0)
    # Sorted 0b 1b 1s 2s: lead (0, 1), (1/2, 1), then (1, 1) at t = 1 inside the tie: EER 1.
    assert compute_eer([0.0, 1.0], [1.0, 2.0]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="only 2 distinct"):
        compute_eer([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="only 1 distinct"):
        min_dcf([0.3, 0.3], [0.3])


def test_official_rule_under_cross_class_ties_is_pinned() -> None:
    """With ties across classes, swapping the classes and negating can change the EER.

    Not a bug to fix: it is the official rule (stable sort, first point of smallest
    |frr - far|), reproduced exactly. Worked by hand:

    bona (0, 1), spoof (0, 1, 1, 2) -> sorted 0b 0s 1b 1s 1s 2s; (frr, far):
    lead (0, 1), (1/2, 1), (1/2, 3/4), (1, 3/4), (1, 1/2), (1, 1/4), (1, 0);
    |diff| 1, 1/2, 1/4, 1/4, ... -> first minimum at t = 0: EER (1/2 + 3/4) / 2 = 0.625.

    Swapped and negated: bona (0, -1, -1, -2), spoof (0, -1) -> -2b -1b -1b -1s 0b 0s;
    lead (0, 1), (1/4, 1), (2/4, 1), (3/4, 1), (3/4, 1/2), (1, 1/2), (1, 0);
    |diff| 1, 3/4, 1/2, 1/4, 1/4, ... -> first minimum inside the tie at t = -1:
    EER (3/4 + 1) / 2 = 0.875 (the next point, also |diff| 1/4, would give 0.625).
    """
    assert compute_eer([0.0, 1.0], [0.0, 1.0, 1.0, 2.0]) == (0.625, 0.0)
    assert compute_eer([0.0, -1.0, -1.0, -2.0], [0.0, -1.0]) == (0.875, -1.0)


@pytest.mark.parametrize("seed", range(3))
def test_min_dcf_invariant_to_strictly_increasing_transforms(seed: int) -> None:
    bona, spoof = _random_scores(seed)
    value, thr = min_dcf(bona, spoof)
    assert min_dcf(2 * bona - 1, 2 * spoof - 1) == pytest.approx((value, 2 * thr - 1))
    assert min_dcf(np.exp(bona), np.exp(spoof)) == pytest.approx((value, np.exp(thr)))


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_auc_invariances_and_symmetry(decimals: int | None) -> None:
    bona, spoof = _random_scores(7)
    if decimals is not None:  # ties count half, so the identities hold with ties too
        bona, spoof = np.round(bona, decimals), np.round(spoof, decimals)
    auc = roc_auc(bona, spoof)
    assert roc_auc(np.exp(bona), np.exp(spoof)) == pytest.approx(auc)
    assert roc_auc(-spoof, -bona) == pytest.approx(auc)
    assert roc_auc(spoof, bona) == pytest.approx(1.0 - auc)


@pytest.mark.parametrize("seed", range(5))
def test_eer_bounds_with_ties_and_any_class_sizes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bona = np.round(rng.normal(0.5, 1.0, rng.integers(3, 60)), 1)
    spoof = np.round(rng.normal(0.0, 1.0, rng.integers(3, 60)), 1)
    eer, thr = compute_eer(bona, spoof)
    assert 0.0 <= eer <= 1.0
    frr, far, thresholds = det_curve(bona, spoof)
    # The EER is read at a DET point of smallest |frr - far|, at that point's threshold.
    gap = np.abs(frr - far)
    closest = np.flatnonzero(gap == gap.min())
    assert any(
        thresholds[i] == thr and (frr[i] + far[i]) / 2 == pytest.approx(eer) for i in closest
    )
