"""Tests for deepfake_audio.scoring.calibration: fitted score -> LLR maps and fake probabilities.

The synthetic detector: raw scores are Gaussian per class, bona fide N(2, 1) and spoof
N(-1, 1.5) (so the true LLR is known in closed form), a calibration is fitted on one draw
(3:1 bona fide : spoof, so a fit that ignores the class balance is visibly wrong) and checked
on another draw with a different balance (70% bona fide) at the matching prior.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from deepfake_audio.scoring.calibration import (
    Calibration,
    bayes_threshold,
    fake_probability,
    fit,
    reliability,
)
from deepfake_audio.scoring.metrics import act_dcf, cllr, decide, min_cllr, min_dcf

BONA_MEAN, BONA_SD = 2.0, 1.0
SPOOF_MEAN, SPOOF_SD = -1.0, 1.5
TEST_PRIOR_SPOOF = 0.3


def _true_llr(scores: np.ndarray) -> np.ndarray:
    """ln N(s; 2, 1) - ln N(s; -1, 1.5): the exact LLR of the synthetic raw score."""

    def log_normal(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
        return -0.5 * ((x - mean) / sd) ** 2 - math.log(sd)

    return log_normal(scores, BONA_MEAN, BONA_SD) - log_normal(scores, SPOOF_MEAN, SPOOF_SD)


def _draw(rng: np.random.Generator, n_bona: int, n_spoof: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and labels (1 = bona fide), bona fide first."""
    scores = np.concatenate(
        (rng.normal(BONA_MEAN, BONA_SD, n_bona), rng.normal(SPOOF_MEAN, SPOOF_SD, n_spoof))
    )
    return scores, np.concatenate((np.ones(n_bona, np.int64), np.zeros(n_spoof, np.int64)))


@pytest.fixture(scope="module", params=[0, 1, 2])
def synthetic(request) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(request.param)
    val_scores, val_labels = _draw(rng, 3000, 1000)
    test_scores, test_labels = _draw(rng, 7000, 3000)  # 30% spoof = TEST_PRIOR_SPOOF
    return {
        "val_scores": val_scores,
        "val_labels": val_labels,
        "test_scores": test_scores,
        "test_labels": test_labels,
    }


def _is_reliable(probabilities: np.ndarray, is_fake: np.ndarray) -> tuple[bool, str]:
    """The reliability criterion, strict enough that an uncalibrated predictor fails it.

    Every bin with at least 30 clips must have ``|observed - predicted| <= 0.03 + 4 SE``
    (SE = binomial standard error of the bin's fake rate at the predicted value; 0.03 allows
    for the logistic map being only an approximation of this quadratic true LLR), and the
    count-weighted mean gap (ECE) must be at most 0.03. Calibrated fits here reach ECE
    ~0.01-0.02 and at most ~2.8 SE in a bin; the raw score read as an LLR has ECE ~0.10 and
    gaps of 15 SE.
    """
    rel = reliability(probabilities, is_fake, bins=10)
    filled = rel.counts >= 30
    predicted = rel.mean_predicted[filled]
    se = np.sqrt(predicted * (1.0 - predicted) / rel.counts[filled])
    gaps = np.abs(rel.observed_fake_rate[filled] - predicted)
    ece = rel.expected_calibration_error()
    ok = bool(np.all(gaps <= 0.03 + 4.0 * se)) and ece <= 0.03
    return ok, f"ECE {ece:.4f}, gaps {np.round(gaps, 3)}, 4 SE {np.round(4 * se, 3)}"


# --- reliability of the fake probability ------------------------------------------------------


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_calibrated_fake_probability_is_reliable(synthetic, method: str) -> None:
    cal = fit(synthetic["val_scores"], synthetic["val_labels"], method)
    probabilities = cal.fake_probability(synthetic["test_scores"], TEST_PRIOR_SPOOF)
    ok, detail = _is_reliable(probabilities, synthetic["test_labels"] == 0)
    assert ok, detail


def test_uncalibrated_probabilities_fail_the_reliability_check(synthetic) -> None:
    is_fake = synthetic["test_labels"] == 0
    raw = synthetic["test_scores"]
    # The raw logit read as an LLR ("none"), and plain sigmoid(-score).
    none = fit(synthetic["val_scores"], synthetic["val_labels"], "none")
    assert not _is_reliable(none.fake_probability(raw, TEST_PRIOR_SPOOF), is_fake)[0]
    assert not _is_reliable(1.0 / (1.0 + np.exp(raw)), is_fake)[0]
    # A logistic fit that lets the 3:1 validation balance into the LLR (no class weights):
    # its "LLR" is off by ln 3 and the fake probabilities are too low.
    model = LogisticRegression(C=1e6).fit(
        synthetic["val_scores"].reshape(-1, 1), synthetic["val_labels"]
    )
    biased_llr = model.coef_[0, 0] * raw + model.intercept_[0]
    assert not _is_reliable(fake_probability(biased_llr, TEST_PRIOR_SPOOF), is_fake)[0]


# --- the fitted LLR -----------------------------------------------------------------------------


def test_logistic_llr_is_close_to_the_true_llr() -> None:
    # Equal-variance classes make the true LLR linear in the raw score, so logistic
    # calibration can be exact. x ~ N(2, 1) (bona fide) vs N(-1, 1): LLR(x) = 3x - 1.5. The
    # detector reports raw = 5x + 1, so LLR(raw) = 0.6 raw - 2.1.
    rng = np.random.default_rng(7)
    bona = 5.0 * rng.normal(2.0, 1.0, 15_000) + 1.0
    spoof = 5.0 * rng.normal(-1.0, 1.0, 5_000) + 1.0
    scores = np.concatenate((bona, spoof))
    labels = np.concatenate((np.ones(bona.size), np.zeros(spoof.size)))
    cal = fit(scores, labels, "logistic")
    assert cal.slope == pytest.approx(0.6, rel=0.05)
    assert cal.offset == pytest.approx(-2.1, abs=0.15)
    grid = np.linspace(*np.quantile(scores, [0.01, 0.99]), 101)
    true = 0.6 * grid - 2.1
    assert np.all(np.abs(cal.llr(grid) - true) <= 0.1 + 0.05 * np.abs(true))
    # Unweighted, the fit would be the posterior log-odds at the 3:1 prior: ln 3 too high.
    model = LogisticRegression(C=1e6).fit(scores.reshape(-1, 1), labels)
    biased = model.coef_[0, 0] * grid + model.intercept_[0]
    assert not np.all(np.abs(biased - true) <= 0.1 + 0.05 * np.abs(true))
    assert np.mean(biased - cal.llr(grid)) == pytest.approx(math.log(3.0), abs=0.05)


def test_isotonic_llr_tracks_the_true_llr(synthetic) -> None:
    cal = fit(synthetic["val_scores"], synthetic["val_labels"], "isotonic")
    # In the bulk where both classes have data (true LLR between -3 and 3).
    grid = np.linspace(-0.5, 2.5, 61)
    assert np.all(np.abs(_true_llr(grid)) < 3.2)
    assert np.mean(np.abs(cal.llr(grid) - _true_llr(grid))) < 0.3


def test_isotonic_is_monotone_finite_and_matches_sklearn(synthetic) -> None:
    scores, labels = synthetic["val_scores"], synthetic["val_labels"]
    cal = fit(scores, labels, "isotonic")
    grid = np.concatenate(([-1e12, -1e3], np.linspace(-8.0, 8.0, 4001), [1e3, 1e12]))
    llr = cal.llr(grid)
    assert np.all(np.isfinite(llr))
    assert np.all(np.diff(llr) >= 0.0)
    # Bounded by ln(n + 1), n = 1000 spoofs (the smaller class): |LLR| <= 6.909.
    assert cal.llr_bound == pytest.approx(math.log(1001.0))
    assert np.max(np.abs(llr)) <= cal.llr_bound
    assert llr[0] == -cal.llr_bound and llr[-1] == cal.llr_bound  # pure ends hit the bound
    # Same posterior as scikit-learn's balanced isotonic fit.
    weights = np.where(labels == 1, 0.5 / np.mean(labels == 1), 0.5 / np.mean(labels == 0))
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(
        scores, labels, sample_weight=weights
    )
    p = np.clip(iso.predict(grid), 1.0 / 1002.0, 1.0 - 1.0 / 1002.0)
    np.testing.assert_allclose(llr, np.log(p / (1.0 - p)), rtol=1e-9, atol=1e-9)


# --- decisions and costs ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_act_dcf_after_calibration_is_near_min_dcf(synthetic, method: str) -> None:
    cal = fit(synthetic["val_scores"], synthetic["val_labels"], method)
    scores, labels = synthetic["test_scores"], synthetic["test_labels"]
    bona, spoof = cal.llr(scores[labels == 1]), cal.llr(scores[labels == 0])
    minimum = min_dcf(scores[labels == 1], scores[labels == 0])[0]
    assert minimum <= act_dcf(bona, spoof)[0] <= 1.10 * minimum


def test_act_dcf_of_raw_scores_is_far_from_min_dcf(synthetic) -> None:
    scores, labels = synthetic["test_scores"], synthetic["test_labels"]
    minimum = min_dcf(scores[labels == 1], scores[labels == 0])[0]
    assert act_dcf(scores[labels == 1], scores[labels == 0])[0] > 1.3 * minimum


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_cllr_improves_on_badly_scaled_scores(synthetic, method: str) -> None:
    # An overconfident detector: the same ranking with 4x the logit scale.
    val = 4.0 * synthetic["val_scores"]
    test, labels = 4.0 * synthetic["test_scores"], synthetic["test_labels"]
    before = cllr(test[labels == 1], test[labels == 0])
    cal = fit(val, synthetic["val_labels"], method)
    after = cllr(cal.llr(test[labels == 1]), cal.llr(test[labels == 0]))
    assert after < 1.0
    assert after < before - 0.25  # ~0.39 vs ~0.75 bits here
    # It cannot beat the oracle (PAV on the test labels) by more than noise.
    assert after >= min_cllr(test[labels == 1], test[labels == 0]) - 0.01


@pytest.mark.parametrize("method", ["logistic", "isotonic", "none"])
def test_raw_threshold_reproduces_llr_decisions(synthetic, method: str) -> None:
    cal = fit(synthetic["val_scores"], synthetic["val_labels"], method)
    scores = np.random.default_rng(3).uniform(-6.0, 6.0, 20_000)
    llr = cal.llr(scores)
    for t in (bayes_threshold(), -2.0, 0.0, 1.5):
        raw_t = cal.raw_threshold(t)
        clear = np.abs(llr - t) > 1e-9  # rounding may flip a score exactly on the boundary
        np.testing.assert_array_equal(decide(scores, raw_t)[clear], (llr > t)[clear])


def test_raw_threshold_edges() -> None:
    iso = Calibration(
        method="isotonic",
        x_thresholds=(0.0, 1.0, 2.0),
        p_thresholds=(0.2, 0.5, 0.9),
        llr_bound=3.0,
    )
    # p(s) = 0.5 at s = 1, so LLR 0 is first exceeded right after 1.
    assert iso.raw_threshold(0.0) == pytest.approx(1.0)
    # LLR ln 4 <=> p = 0.8: between knots 1 (0.5) and 2 (0.9): 1 + 0.3 / 0.4 = 1.75.
    assert iso.raw_threshold(math.log(4.0)) == pytest.approx(1.75)
    assert iso.raw_threshold(-2.0) == -math.inf  # p >= 0.2 > sigmoid(-2) = 0.119 everywhere
    assert iso.raw_threshold(2.5) == math.inf  # p <= 0.9 < sigmoid(2.5) = 0.924
    assert iso.raw_threshold(3.0) == math.inf  # never above the bound
    line = Calibration(method="logistic", slope=2.0, offset=-1.0)
    assert line.raw_threshold(3.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="slope"):
        Calibration(method="logistic", slope=-1.0, offset=0.0).raw_threshold(0.0)


def test_bayes_threshold_is_act_dcf_threshold() -> None:
    # ln(10 * 0.05 / (1 * 0.95)) = ln(0.5263158) = -0.6418539.
    assert bayes_threshold() == pytest.approx(-0.6418538862, abs=1e-10)
    assert bayes_threshold() == act_dcf([1.0, 2.0], [0.0])[1]
    assert bayes_threshold(0.3, 2.0, 1.0) == act_dcf([1.0], [0.0], 0.3, 2.0, 1.0)[1]
    assert bayes_threshold(0.5, 1.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="p_spoof"):
        bayes_threshold(0.0)


# --- fake_probability ---------------------------------------------------------------------------


def test_fake_probability_hand_worked() -> None:
    # LLR 0 carries no evidence: the posterior is the prior.
    assert float(fake_probability(0.0, 0.5)) == pytest.approx(0.5)
    assert float(fake_probability(0.0, 0.05)) == pytest.approx(0.05)
    # LLR ln 19 at prior 0.05: bona fide odds 19 * (0.95 / 0.05) = 361 -> P(spoof) = 1 / 362.
    assert float(fake_probability(math.log(19.0), 0.05)) == pytest.approx(1.0 / 362.0)
    # LLR -ln 9 at prior 0.1: bona fide odds (1/9) * 9 = 1 -> 0.5.
    assert float(fake_probability(-math.log(9.0), 0.1)) == pytest.approx(0.5)
    # Wrong sign conventions land elsewhere: sigmoid(llr + logit(1 - prior)) is P(bona).
    wrong = 1.0 / (1.0 + math.exp(-(math.log(19.0) + math.log(19.0))))
    assert wrong == pytest.approx(361.0 / 362.0)


def test_fake_probability_is_stable_and_precise() -> None:
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        values = fake_probability(np.array([-1e6, -800.0, 0.0, 700.0, 1e6]), 0.05)
    assert values[0] == 1.0 and values[-1] == 0.0
    assert values[1] == 1.0
    # Full relative precision deep in the tail: exp(-(700 + ln 19)).
    assert values[3] == pytest.approx(math.exp(-(700.0 + math.log(19.0))), rel=1e-12)
    assert values[3] > 0.0
    assert fake_probability(np.array([np.inf, -np.inf]), 0.5).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="prior_spoof"):
        fake_probability(0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        fake_probability([np.nan], 0.5)


# --- serialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["logistic", "isotonic", "none"])
def test_round_trip_through_json_is_exact(synthetic, method: str) -> None:
    cal = fit(synthetic["val_scores"], synthetic["val_labels"], method)
    text = json.dumps(cal.to_dict(), allow_nan=False)  # strict JSON: no NaN/inf inside
    restored = Calibration.from_dict(json.loads(text))
    assert restored == cal
    probe = np.concatenate((synthetic["test_scores"], [-1e9, 1e9]))
    np.testing.assert_array_equal(restored.llr(probe), cal.llr(probe))
    assert restored.raw_threshold(bayes_threshold()) == cal.raw_threshold(bayes_threshold())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"method": "platt"}, "unknown calibration method"),
        ("logistic", "mapping"),
        ({"method": "logistic", "slope": 1.0}, "exactly the keys"),
        ({"method": "none", "slope": 1.0}, "exactly the keys"),
        ({"method": "logistic", "slope": "1.0", "offset": 0.0}, "number"),
        ({"method": "logistic", "slope": True, "offset": 0.0}, "number"),
        ({"method": "logistic", "slope": float("nan"), "offset": 0.0}, "finite"),
        (
            {"method": "isotonic", "x_thresholds": [0, 1], "p_thresholds": [0.5], "llr_bound": 3},
            "equally long",
        ),
        (
            {"method": "isotonic", "x_thresholds": [1, 0], "p_thresholds": [0, 1], "llr_bound": 3},
            "strictly increasing",
        ),
        (
            {"method": "isotonic", "x_thresholds": [0, 1], "p_thresholds": [1, 0], "llr_bound": 3},
            "non-decreasing",
        ),
        (
            {"method": "isotonic", "x_thresholds": [0, 1], "p_thresholds": [0, 2], "llr_bound": 3},
            r"\[0, 1\]",
        ),
        (
            {"method": "isotonic", "x_thresholds": "01", "p_thresholds": [0], "llr_bound": 3},
            "list of numbers",
        ),
        (
            {"method": "isotonic", "x_thresholds": [0], "p_thresholds": [0], "llr_bound": 1e999},
            "llr_bound",
        ),
    ],
)
def test_from_dict_rejects_bad_data(data, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Calibration.from_dict(data)


def test_serving_path_needs_neither_sklearn_nor_scipy() -> None:
    # from_dict + llr + fake_probability in a fresh interpreter must not import scikit-learn
    # (only fit does) nor any heavy framework.
    code = (
        "import sys\n"
        "from deepfake_audio.scoring.calibration import Calibration, fake_probability\n"
        "cal = Calibration.from_dict({'method': 'isotonic', 'x_thresholds': [0.0, 1.0],"
        " 'p_thresholds': [0.1, 0.9], 'llr_bound': 5.0})\n"
        "print(fake_probability(cal.llr([0.5]), 0.05))\n"
        "bad = [m for m in ('sklearn', 'scipy', 'tensorflow', 'keras', 'mlflow')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


# --- fit input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "method", "match"),
    [
        ([0.0, 1.0], [0, 1], "platt", "unknown calibration method"),
        ([0.0, 1.0, 2.0], [0, 1], "logistic", "labels"),
        ([0.0, 1.0], [0, 2], "logistic", "only 0"),
        ([0.0, 1.0], [1, 1], "isotonic", "both classes"),
        ([0.0, np.nan], [0, 1], "logistic", "NaN"),
    ],
)
def test_fit_rejects_bad_input(scores, labels, method, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit(scores, labels, method)


def test_none_is_the_identity() -> None:
    cal = fit([0.0, 1.0, 2.0], [0, 1, 1], "none")
    np.testing.assert_array_equal(cal.llr([-3.0, 0.5]), [-3.0, 0.5])
    assert cal.raw_threshold(-0.5) == -0.5
    assert cal.to_dict() == {"method": "none"}


# --- reliability() ------------------------------------------------------------------------------


def test_reliability_hand_worked() -> None:
    # bins of width 0.1: 0.05 -> bin 0, 0.15 -> bin 1, 0.95 and 1.0 -> bin 9 (last bin closed).
    rel = reliability([0.05, 0.15, 0.95, 1.0], [0, 1, True, 1], bins=10)
    assert rel.counts.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    np.testing.assert_allclose(rel.mean_predicted[[0, 1, 9]], [0.05, 0.15, 0.975])
    np.testing.assert_allclose(rel.observed_fake_rate[[0, 1, 9]], [0.0, 1.0, 1.0])
    assert np.all(np.isnan(rel.mean_predicted[2:9]))
    # ECE = (1 * 0.05 + 1 * 0.85 + 2 * 0.025) / 4 = 0.2375.
    assert rel.expected_calibration_error() == pytest.approx(0.2375)
    as_dict = json.loads(json.dumps(rel.to_dict(), allow_nan=False))
    assert as_dict["mean_predicted"][2] is None
    assert as_dict["counts"][9] == 2
    assert as_dict["edges"][0] == 0.0 and as_dict["edges"][-1] == 1.0


def test_reliability_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability([1.5], [1])
    with pytest.raises(ValueError, match="is_fake"):
        reliability([0.5], [2])
    with pytest.raises(ValueError, match="bins"):
        reliability([0.5], [1], bins=0)
    with pytest.raises(ValueError, match="values"):
        reliability([0.5, 0.2], [1])
