"""Tests for the ASVspoof 5 calibration-sensitive metrics: act_dcf, cllr, min_cllr.

Conventions under test (those of scoring/metrics.py): a score is a natural-log LLR, higher = more
bona fide; a trial is accepted as bona fide when ``llr > threshold``.

Every metric is checked three ways: hand-worked numbers, an independent slow reference written
here (loops, a naive PAV, scikit-learn's isotonic regression), and deliberately wrong variants
(classes swapped, natural log instead of log2, prior left out) that must give other numbers,
so a test would notice if the implementation drifted into one of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from deepfake_audio.scoring.metrics import (
    ASVSPOOF5_CM_DCF,
    DcfParameters,
    act_dcf,
    cllr,
    min_cllr,
    min_dcf,
)

# The ASVspoof 5 track 1 numbers (evaluation-package/calculate_metrics.py):
# Pspoof 0.05, Cmiss 1, Cfa 10. Weighted costs: miss 1 * 0.95 = 0.95, false alarm
# 10 * 0.05 = 0.5; normaliser min(0.95, 0.5) = 0.5. Bayes threshold on the LLR:
# ln(Cfa Pspoof / (Cmiss (1 - Pspoof))) = ln(0.5 / 0.95) = -0.6418538862.
BAYES_T = math.log(0.5 / 0.95)

# Hand case for actDCF. Threshold -0.642; accept when llr > -0.642.
#   bona  3, 1, -0.5 accepted; -2 rejected          -> P_miss = 1/4
#   spoof 0, 2 accepted (false alarms); -3, -1 not  -> P_fa   = 2/4
#   DCF = 0.95 * 1/4 + 0.5 * 2/4 = 0.2375 + 0.25 = 0.4875; / 0.5 = 0.975
ACT_BONA = [3.0, 1.0, -0.5, -2.0]
ACT_SPOOF = [-3.0, -1.0, 0.0, 2.0]


# --- independent references and wrong variants (test-only) ----------------------------------


def _ref_act_dcf(bona, spoof, p_spoof=0.05, c_miss=1.0, c_fa=10.0) -> float:
    """Slow actDCF from the Bayes decision itself, trial by trial (no threshold formula).

    For each trial the posterior P(bona | llr) at the prior is computed and the cheaper
    decision taken: accept when c_miss * P(bona) > c_fa * P(spoof) (reject on equality, the
    module's strict rule). Then average the costs per class and normalise.
    """

    def accept(llr: float) -> bool:
        log_odds = llr + math.log((1 - p_spoof) / p_spoof)
        p_bona = 1.0 / (1.0 + math.exp(-log_odds))
        return c_miss * p_bona > c_fa * (1.0 - p_bona)

    misses = sum(0 if accept(x) else 1 for x in bona) / len(bona)
    false_alarms = sum(1 if accept(x) else 0 for x in spoof) / len(spoof)
    dcf = c_miss * (1 - p_spoof) * misses + c_fa * p_spoof * false_alarms
    return dcf / min(c_miss * (1 - p_spoof), c_fa * p_spoof)


def _ref_min_dcf_loop(bona, spoof, p_spoof=0.05, c_miss=1.0, c_fa=10.0) -> float:
    """Brute force over every possible threshold (below all, and at each score)."""
    bona, spoof = np.asarray(bona), np.asarray(spoof)
    candidates = [min(bona.min(), spoof.min()) - 1.0, *np.concatenate((bona, spoof))]
    best = math.inf
    for t in candidates:
        p_miss = np.mean(bona <= t)
        p_fa = np.mean(spoof > t)
        best = min(best, c_miss * (1 - p_spoof) * p_miss + c_fa * p_spoof * p_fa)
    return best / min(c_miss * (1 - p_spoof), c_fa * p_spoof)


def _wrong_act_dcf_swapped(bona, spoof) -> float:
    return act_dcf(spoof, bona)[0]


def _wrong_act_dcf_threshold_without_prior(bona, spoof) -> float:
    """Threshold at ln(Cfa / Cmiss), as if the spoof prior were 0.5."""
    t = math.log(10.0)
    p_miss = np.mean(np.asarray(bona) <= t)
    p_fa = np.mean(np.asarray(spoof) > t)
    return (0.95 * p_miss + 0.5 * p_fa) / 0.5


def _wrong_act_dcf_threshold_zero(bona, spoof) -> float:
    """Threshold at LLR 0 (prior and costs both ignored)."""
    p_miss = np.mean(np.asarray(bona) <= 0.0)
    p_fa = np.mean(np.asarray(spoof) > 0.0)
    return (0.95 * p_miss + 0.5 * p_fa) / 0.5


def _wrong_act_dcf_unnormalised(bona, spoof) -> float:
    return act_dcf(bona, spoof)[0] * 0.5


def _ref_cllr(bona, spoof) -> float:
    """Loop version in bits, straight from the definition (moderate LLRs only)."""
    b = sum(math.log2(1.0 + math.exp(-x)) for x in bona) / len(bona)
    s = sum(math.log2(1.0 + math.exp(x)) for x in spoof) / len(spoof)
    return 0.5 * (b + s)


def _wrong_cllr_natural_log(bona, spoof) -> float:
    return cllr(bona, spoof) * math.log(2.0)


def _wrong_cllr_swapped(bona, spoof) -> float:
    return cllr(spoof, bona)


def _wrong_cllr_pooled_mean(bona, spoof) -> float:
    """One mean over all trials: the class proportions of the test set become the prior."""
    costs = [math.log2(1.0 + math.exp(-x)) for x in bona]
    costs += [math.log2(1.0 + math.exp(x)) for x in spoof]
    return sum(costs) / len(costs)


def _naive_pav_posteriors(bona, spoof) -> dict[float, float]:
    """P(bona | score) by the textbook PAV: merge the first violating pair until none is left.

    O(n^2) and independent of the module's stack PAV: groups are built from a dict keyed by
    distinct score (so tied trials are one group), then neighbouring groups whose bona fide
    fraction decreases are pooled one pair at a time, rescanning from the start each time.
    """
    counts: dict[float, list[float]] = {}
    for x in bona:
        counts.setdefault(float(x), [0.0, 0.0])[0] += 1
    for x in spoof:
        counts.setdefault(float(x), [0.0, 0.0])[1] += 1
    blocks = [([score], b, s) for score, (b, s) in sorted(counts.items())]
    changed = True
    while changed:
        changed = False
        for i in range(len(blocks) - 1):
            (keys_a, b_a, s_a), (keys_b, b_b, s_b) = blocks[i], blocks[i + 1]
            if b_a / (b_a + s_a) > b_b / (b_b + s_b):
                blocks[i : i + 2] = [(keys_a + keys_b, b_a + b_b, s_a + s_b)]
                changed = True
                break
    return {k: b / (b + s) for keys, b, s in blocks for k in keys}


def _cllr_from_posteriors(bona, spoof, posterior, log=math.log2, subtract_prior=True) -> float:
    """Cllr of LLR = logit(posterior) - logit(empirical prior), written with posteriors.

    With ``O = n_bona / n_spoof``: a bona fide trial costs ``log(1 + (1 - p) / p * O)`` and
    a spoof ``log(1 + p / (1 - p) / O)``; p = 1 (resp. 0) costs 0 for bona (resp. spoof).
    """
    odds = len(bona) / len(spoof) if subtract_prior else 1.0

    def bona_cost(p: float) -> float:
        return 0.0 if p == 1.0 else log(1.0 + (1.0 - p) / p * odds)

    def spoof_cost(p: float) -> float:
        return 0.0 if p == 0.0 else log(1.0 + p / (1.0 - p) / odds)

    b = sum(bona_cost(posterior(x)) for x in bona) / len(bona)
    s = sum(spoof_cost(posterior(x)) for x in spoof) / len(spoof)
    return 0.5 * (b + s)


def _ref_min_cllr_naive(bona, spoof) -> float:
    table = _naive_pav_posteriors(bona, spoof)
    return _cllr_from_posteriors(bona, spoof, lambda x: table[float(x)])


def _ref_min_cllr_sklearn(bona, spoof) -> float:
    """The PAV by scikit-learn (it averages the labels of tied scores before fitting)."""
    x = np.concatenate((bona, spoof))
    y = np.concatenate((np.ones(len(bona)), np.zeros(len(spoof))))
    fitted = IsotonicRegression(increasing=True).fit(x, y)
    table = dict(zip(x.tolist(), fitted.predict(x).tolist(), strict=True))
    return _cllr_from_posteriors(bona, spoof, lambda v: table[float(v)])


def _wrong_min_cllr_no_prior_correction(bona, spoof) -> float:
    """Treats the PAV posterior log-odds as the LLR (forgets the empirical prior)."""
    table = _naive_pav_posteriors(bona, spoof)
    return _cllr_from_posteriors(bona, spoof, lambda x: table[float(x)], subtract_prior=False)


def _wrong_min_cllr_optimistic_ties(bona, spoof) -> float:
    """PAV on single trials with spoofs sorted before bona fide on ties (splits the ties)."""
    trials = sorted([(float(x), 1) for x in bona] + [(float(x), 0) for x in spoof])
    blocks = [[label, 1] for _, label in trials]
    stack: list[list[float]] = []
    for b, n in blocks:
        while stack and stack[-1][0] / stack[-1][1] >= b / n:
            pb, pn = stack.pop()
            b, n = b + pb, n + pn
        stack.append([b, n])
    posteriors = [b / n for b, n in stack for _ in range(int(n))]
    odds = len(bona) / len(spoof)
    costs_b, costs_s = [], []
    for (_, label), p in zip(trials, posteriors, strict=True):
        if label == 1:
            costs_b.append(0.0 if p == 1.0 else math.log2(1.0 + (1.0 - p) / p * odds))
        else:
            costs_s.append(0.0 if p == 0.0 else math.log2(1.0 + p / (1.0 - p) / odds))
    return 0.5 * (sum(costs_b) / len(costs_b) + sum(costs_s) / len(costs_s))


def _wrong_min_cllr_natural_log(bona, spoof) -> float:
    table = _naive_pav_posteriors(bona, spoof)
    return _cllr_from_posteriors(bona, spoof, lambda x: table[float(x)], log=math.log)


def _random_llrs(seed: int, n_bona: int = 137, n_spoof: int = 173, decimals: int | None = None):
    """Overlapping LLR-ish scores; ``decimals`` rounds them to create cross-class ties."""
    rng = np.random.default_rng(seed)
    bona = rng.normal(1.5, 2.0, n_bona)
    spoof = rng.normal(-1.0, 2.5, n_spoof)
    if decimals is not None:
        bona, spoof = np.round(bona, decimals), np.round(spoof, decimals)
    return bona, spoof


def _calibrated_gaussian_llrs(seed: int, d: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """LLRs that are exact: bona ~ N(d^2/2, d^2), spoof ~ N(-d^2/2, d^2).

    For these two densities ln p(l | bona) - ln p(l | spoof) = l, so each value is its own
    true LLR (the "LLR of the LLR is the LLR" property of a calibrated system).
    """
    rng = np.random.default_rng(seed)
    mean, sd = d * d / 2.0, d
    return rng.normal(mean, sd, n), rng.normal(-mean, sd, n)


def _theoretical_cllr(d: float) -> float:
    """E_bona[log2(1 + exp(-L))] for L ~ N(d^2/2, d^2) (the spoof term is equal by symmetry).

    Gauss-Hermite quadrature (probabilists' weights); the integrand is smooth.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    values = np.logaddexp(0.0, -(d * d / 2.0 + d * nodes)) / math.log(2.0)
    return float(np.sum(weights * values) / math.sqrt(2.0 * math.pi))


def _theoretical_act_dcf(d: float) -> float:
    """Population DCF at the Bayes threshold for the calibrated Gaussian LLRs above."""

    def phi(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    mean, sd = d * d / 2.0, d
    p_miss = phi((BAYES_T - mean) / sd)
    p_fa = 1.0 - phi((BAYES_T + mean) / sd)
    return (0.95 * p_miss + 0.5 * p_fa) / 0.5


# --- parameters and normalisation -------------------------------------------------------------


def test_asvspoof5_parameters_are_the_official_ones() -> None:
    params = ASVSPOOF5_CM_DCF
    assert (params.p_spoof, params.c_miss, params.c_fa) == (0.05, 1.0, 10.0)
    assert isinstance(params, DcfParameters)
    # min_dcf's defaults are the same numbers, so min_dcf and act_dcf are comparable.
    bona, spoof = _random_llrs(0)
    explicit = min_dcf(bona, spoof, p_spoof=0.05, c_miss=1.0, c_fa=10.0)
    assert min_dcf(bona, spoof) == explicit
    assert act_dcf(bona, spoof) == act_dcf(bona, spoof, 0.05, 1.0, 10.0)


def test_act_dcf_threshold_is_the_bayes_threshold() -> None:
    _, threshold = act_dcf(ACT_BONA, ACT_SPOOF)
    assert threshold == pytest.approx(-0.6418538862, abs=1e-10)
    assert threshold == pytest.approx(BAYES_T, rel=1e-15)
    # Equal weighted costs (c_miss (1 - p) = c_fa p) put the threshold at LLR 0.
    assert act_dcf(ACT_BONA, ACT_SPOOF, p_spoof=0.5, c_miss=1.0, c_fa=1.0)[1] == 0.0


def test_act_dcf_trivial_systems_hand_worked() -> None:
    # Everything rejected (all LLRs far below the threshold): P_miss 1, P_fa 0
    #   -> 0.95 / 0.5 = 1.9 (worse than the best trivial decision: actDCF is not capped at 1).
    assert act_dcf([-50.0, -40.0], [-60.0, -45.0])[0] == pytest.approx(1.9)
    # Everything accepted: P_miss 0, P_fa 1 -> 0.5 / 0.5 = 1.0.
    assert act_dcf([50.0, 40.0], [60.0, 45.0])[0] == pytest.approx(1.0)
    # Perfect, calibrated-looking separation: 0.
    assert act_dcf([5.0, 3.0], [-5.0, -3.0])[0] == 0.0


# --- actDCF -------------------------------------------------------------------------------------


def test_act_dcf_hand_worked() -> None:
    value, _ = act_dcf(ACT_BONA, ACT_SPOOF)
    assert value == pytest.approx(0.975)
    assert _ref_act_dcf(ACT_BONA, ACT_SPOOF) == pytest.approx(0.975)


def test_act_dcf_wrong_variants_disagree_by_hand() -> None:
    # Swapped: spoof LLRs judged as bona fide. Misses: -3, -1 <= t -> 2/4; false alarms:
    #   bona 3, 1, -0.5 > t -> 3/4. (0.95 * 0.5 + 0.5 * 0.75) / 0.5 = 1.7.
    assert _wrong_act_dcf_swapped(ACT_BONA, ACT_SPOOF) == pytest.approx(1.7)
    # Prior left out of the threshold (t = ln 10 = 2.303): misses 1, -0.5, -2 -> 3/4, no
    #   false alarm -> 0.95 * 0.75 / 0.5 = 1.425.
    assert _wrong_act_dcf_threshold_without_prior(ACT_BONA, ACT_SPOOF) == pytest.approx(1.425)
    # Threshold 0: misses -0.5, -2 -> 2/4; false alarms 2 -> 1/4: (0.475 + 0.125) / 0.5 = 1.2.
    assert _wrong_act_dcf_threshold_zero(ACT_BONA, ACT_SPOOF) == pytest.approx(1.2)
    # Not normalised: 0.4875.
    assert _wrong_act_dcf_unnormalised(ACT_BONA, ACT_SPOOF) == pytest.approx(0.4875)
    right = act_dcf(ACT_BONA, ACT_SPOOF)[0]
    for wrong in (1.7, 1.425, 1.2, 0.4875):
        assert abs(wrong - right) > 0.1


@pytest.mark.parametrize("seed", range(8))
def test_act_dcf_matches_reference_and_bounds_min_dcf(seed: int) -> None:
    bona, spoof = _random_llrs(seed)
    value, _ = act_dcf(bona, spoof)
    assert value == pytest.approx(_ref_act_dcf(bona, spoof), abs=1e-12)
    # Every actDCF decision is a DET operating point, so it can never beat the minimum.
    assert value >= min_dcf(bona, spoof)[0] - 1e-12
    assert min_dcf(bona, spoof)[0] == pytest.approx(_ref_min_dcf_loop(bona, spoof), abs=1e-12)
    # Other parameters too.
    value2, _ = act_dcf(bona, spoof, p_spoof=0.3, c_miss=2.0, c_fa=1.0)
    assert value2 == pytest.approx(_ref_act_dcf(bona, spoof, 0.3, 2.0, 1.0), abs=1e-12)
    assert value2 >= min_dcf(bona, spoof, p_spoof=0.3, c_miss=2.0, c_fa=1.0)[0] - 1e-12
    # On random data the wrong variants land elsewhere.
    shifted_bona, shifted_spoof = bona - 1.0, spoof - 1.0  # spread trials around both thresholds
    right = act_dcf(shifted_bona, shifted_spoof)[0]
    for wrong in (
        _wrong_act_dcf_swapped,
        _wrong_act_dcf_threshold_without_prior,
        _wrong_act_dcf_unnormalised,
    ):
        assert wrong(shifted_bona, shifted_spoof) != pytest.approx(right, abs=1e-3)


def test_act_dcf_tie_at_threshold_is_a_miss() -> None:
    # The module's strict rule: an LLR exactly at the threshold is rejected. Bona fide
    # [t, 5, 5, 5] -> P_miss 1/4; no false alarm -> 0.95 * 0.25 / 0.5 = 0.475. (The official
    # code accepts on >= and would give 0 here; only such exact ties differ.)
    threshold = act_dcf([1.0], [0.0])[1]
    assert act_dcf([threshold, 5.0, 5.0, 5.0], [-5.0] * 4)[0] == pytest.approx(0.475)


def test_act_dcf_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        act_dcf([], [0.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        act_dcf([np.nan, 1.0], [0.0])
    with pytest.raises(ValueError, match="p_spoof"):
        act_dcf([1.0], [0.0], p_spoof=1.0)
    with pytest.raises(ValueError, match="costs"):
        act_dcf([1.0], [0.0], c_fa=0.0)


# --- Cllr ---------------------------------------------------------------------------------------


def test_cllr_of_zero_llrs_is_exactly_one_bit() -> None:
    # log2(1 + e^0) = log2(2) = 1 for every trial, whatever the class sizes.
    assert cllr([0.0] * 7, [0.0] * 3) == 1.0
    assert cllr(np.zeros(100_001), np.zeros(3)) == 1.0


def test_cllr_hand_worked() -> None:
    # Bona fide LLRs ln 3 and 0: log2(1 + 1/3) = log2(4/3) = 0.4150375, log2(2) = 1;
    #   class mean 0.7075187.
    # Spoof LLR -ln 7: log2(1 + 1/7) = log2(8/7) = 0.1926451.
    # Cllr = (0.7075187 + 0.1926451) / 2 = 0.4500819.
    bona, spoof = [math.log(3.0), 0.0], [-math.log(7.0)]
    assert cllr(bona, spoof) == pytest.approx(0.4500819137909, abs=1e-12)
    assert _ref_cllr(bona, spoof) == pytest.approx(0.4500819137909, abs=1e-12)


def test_cllr_wrong_variants_disagree_by_hand() -> None:
    bona, spoof = [math.log(3.0), 0.0], [-math.log(7.0)]
    right = cllr(bona, spoof)
    # Natural log: 0.4500819 * ln 2 = 0.3119730.
    assert _wrong_cllr_natural_log(bona, spoof) == pytest.approx(0.3119730, abs=1e-6)
    # Swapped: bona fide costs log2(1 + e^-(-ln 7)) = log2(8) = 3; spoofs log2(1 + 3) = 2 and
    #   log2(1 + 1) = 1, mean 1.5 -> (3 + 1.5) / 2 = 2.25.
    assert _wrong_cllr_swapped(bona, spoof) == pytest.approx(2.25)
    # Pooled mean (class balance of this set as the prior): (0.4150375 + 1 + 0.1926451) / 3
    #   = 0.5358942.
    assert _wrong_cllr_pooled_mean(bona, spoof) == pytest.approx(0.5358942, abs=1e-6)
    for wrong in (0.3119730, 2.25, 0.5358942):
        assert abs(wrong - right) > 0.05


@pytest.mark.parametrize("seed", range(6))
def test_cllr_matches_reference_and_wrong_variants_differ(seed: int) -> None:
    bona, spoof = _random_llrs(seed)
    right = cllr(bona, spoof)
    assert right == pytest.approx(_ref_cllr(bona, spoof), rel=1e-12)
    for wrong in (_wrong_cllr_natural_log, _wrong_cllr_swapped, _wrong_cllr_pooled_mean):
        assert wrong(bona, spoof) != pytest.approx(right, rel=1e-3)


def test_cllr_is_stable_for_extreme_llrs() -> None:
    # A confident correct trial costs ~0; a confident wrong one costs |llr| / ln 2 bits.
    # log1p(exp(800)) would overflow to inf.
    value = cllr([800.0, 1000.0], [-900.0, 800.0])
    assert math.isfinite(value)
    assert value == pytest.approx(0.25 * 800.0 / math.log(2.0), rel=1e-12)


def test_cllr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        cllr([1.0], [])
    with pytest.raises(ValueError, match="NaN or infinite"):
        cllr([np.inf], [0.0])


# --- minCllr ------------------------------------------------------------------------------------


def test_min_cllr_hand_worked_balanced() -> None:
    # Sorted 0s 1b 2s 3b. PAV on the bona fide indicator 0 1 0 1: (1, 0) violates, pooled to
    # 0.5 -> posteriors 0, 0.5, 0.5, 1. Empirical prior 2/4, prior log-odds 0, so the LLRs
    # are -inf, 0, 0, +inf. Bona fide costs: 1 (llr 0) and 0 -> mean 0.5; spoofs: 0 and 1 ->
    # mean 0.5. minCllr = 0.5.
    assert min_cllr([1.0, 3.0], [0.0, 2.0]) == pytest.approx(0.5)


def test_min_cllr_hand_worked_unbalanced_and_wrong_variants() -> None:
    # Sorted 0s 1b 2s 3b 4b -> indicator 0 1 0 1 1 -> PAV posteriors 0, .5, .5, 1, 1.
    # Empirical prior 3/5: prior log-odds ln(3/2), so the pooled pair gets
    # LLR = 0 - ln 1.5 = -0.4054651.
    #   bona fide: score 1 costs log2(1 + 1.5) = log2 2.5 = 1.3219281; 3 and 4 cost 0
    #              -> mean 0.4406427
    #   spoof:     score 0 costs 0; score 2 costs log2(1 + 1/1.5) = log2(5/3) = 0.7369656
    #              -> mean 0.3684828
    #   minCllr = (0.4406427 + 0.3684828) / 2 = 0.4045627
    bona, spoof = [1.0, 3.0, 4.0], [0.0, 2.0]
    right = min_cllr(bona, spoof)
    assert right == pytest.approx(0.4045627, abs=1e-7)
    assert _ref_min_cllr_naive(bona, spoof) == pytest.approx(0.4045627, abs=1e-7)
    # Prior not removed (LLR 0 for the pooled pair): (1/3 + 1/2) / 2 = 0.4166667.
    assert _wrong_min_cllr_no_prior_correction(bona, spoof) == pytest.approx(5 / 12)
    # Natural log: 0.4045627 * ln 2 = 0.2804215.
    assert _wrong_min_cllr_natural_log(bona, spoof) == pytest.approx(0.2804215, abs=1e-7)
    for wrong in (5 / 12, 0.2804215):
        assert abs(wrong - right) > 0.01


def test_min_cllr_tied_scores_are_one_group() -> None:
    # Bona fide [1, 1], spoof [1, 0]. Score 1 holds 2 bona fide + 1 spoof: no monotone map
    # separates them, so its posterior is 2/3; score 0 (one spoof) gets 0. Empirical prior
    # 2/4 -> LLR(1) = ln 2, LLR(0) = -inf.
    #   bona fide: log2(1 + 1/2) = 0.5849625 each; spoof at 1: log2(1 + 2) = 1.5849625,
    #   spoof at 0: 0 -> mean 0.7924813. minCllr = (0.5849625 + 0.7924813) / 2 = 0.6887219.
    bona, spoof = [1.0, 1.0], [1.0, 0.0]
    assert min_cllr(bona, spoof) == pytest.approx(0.6887219, abs=1e-7)
    # Splitting the tie (spoof sorted first) would wrongly reach a perfect 0.
    assert _wrong_min_cllr_optimistic_ties(bona, spoof) == 0.0


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("seed", range(4))
def test_min_cllr_matches_two_independent_pavs(seed: int, decimals: int | None) -> None:
    bona, spoof = _random_llrs(seed, decimals=decimals)
    right = min_cllr(bona, spoof)
    assert right == pytest.approx(_ref_min_cllr_naive(bona, spoof), rel=1e-9, abs=1e-12)
    assert right == pytest.approx(_ref_min_cllr_sklearn(bona, spoof), rel=1e-9, abs=1e-12)
    assert _wrong_min_cllr_no_prior_correction(bona, spoof) != pytest.approx(right, rel=1e-3)
    assert _wrong_min_cllr_natural_log(bona, spoof) != pytest.approx(right, rel=1e-3)
    if decimals == 0:  # plenty of cross-class ties
        assert _wrong_min_cllr_optimistic_ties(bona, spoof) < right - 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_min_cllr_bounds_and_invariance(seed: int) -> None:
    bona, spoof = _random_llrs(seed)
    value = min_cllr(bona, spoof)
    assert 0.0 <= value <= 1.0
    # No affine recalibration (slope > 0) of the LLRs beats the PAV map.
    for slope in (0.1, 0.5, 1.0, 2.0):
        for offset in (-1.0, 0.0, 1.0):
            assert value <= cllr(slope * bona + offset, slope * spoof + offset) + 1e-12
    # Only the order matters.
    assert min_cllr(np.exp(bona / 3), np.exp(spoof / 3)) == pytest.approx(value, abs=1e-12)
    assert min_cllr(bona**3, spoof**3) == pytest.approx(value, abs=1e-12)


def test_min_cllr_extremes() -> None:
    assert min_cllr([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 0.0
    # Fully reversed: the only monotone map is a constant at the empirical prior -> LLR 0.
    assert min_cllr([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) == pytest.approx(1.0)
    assert min_cllr([7.0] * 4, [7.0] * 9) == pytest.approx(1.0)


def test_min_cllr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        min_cllr([], [0.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        min_cllr([1.0], [np.nan])


# --- behaviour on calibrated, overconfident and inverted systems --------------------------------

D = 2.0  # separation of the calibrated Gaussian LLRs (EER ~ 16%)


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    return _calibrated_gaussian_llrs(seed=11, d=D, n=100_000)


def test_calibrated_llrs_reach_the_theory(calibrated) -> None:
    bona, spoof = calibrated
    expected_cllr = _theoretical_cllr(D)
    assert 0.3 < expected_cllr < 0.7  # the quadrature itself is sane
    # Standard error of the sample Cllr with 1e5 trials per class is ~0.002.
    assert cllr(bona, spoof) == pytest.approx(expected_cllr, abs=0.01)
    assert min_cllr(bona, spoof) <= cllr(bona, spoof)
    assert min_cllr(bona, spoof) == pytest.approx(expected_cllr, abs=0.01)
    act = act_dcf(bona, spoof)[0]
    assert act == pytest.approx(_theoretical_act_dcf(D), abs=0.01)
    # Calibrated LLRs: the Bayes threshold is (nearly) the best one.
    assert min_dcf(bona, spoof)[0] <= act <= 1.02 * min_dcf(bona, spoof)[0]


def test_overconfident_llrs_lose_only_calibration(calibrated) -> None:
    bona, spoof = calibrated
    over_bona, over_spoof = 5.0 * bona, 5.0 * spoof
    assert cllr(over_bona, over_spoof) > cllr(bona, spoof) + 0.3
    # x5 moves the effective threshold from -0.642 to -0.642 / 5 on the true LLR scale; at
    # this operating point that costs ~0.02 (Cllr, over all operating points, suffers more).
    assert act_dcf(over_bona, over_spoof)[0] > act_dcf(bona, spoof)[0] + 0.01
    # Discrimination metrics see only the order, which scaling keeps.
    assert min_dcf(over_bona, over_spoof)[0] == min_dcf(bona, spoof)[0]
    assert min_cllr(over_bona, over_spoof) == pytest.approx(min_cllr(bona, spoof), abs=1e-12)


def test_inverted_llrs(calibrated) -> None:
    bona, spoof = calibrated
    inverted_bona, inverted_spoof = -bona, -spoof
    assert cllr(inverted_bona, inverted_spoof) > 1.0
    value = min_cllr(inverted_bona, inverted_spoof)
    assert 0.99 <= value <= 1.0  # nothing left to calibrate: ~no information
    assert act_dcf(inverted_bona, inverted_spoof)[0] > 1.0
