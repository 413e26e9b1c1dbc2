"""Calibrated scores from validation to the served output, without a tracking server.

* The served decision (`calibration.decide_on_validation`): the raw-logit threshold makes the
  calibrated Bayes decisions, the old validation-EER rule is still there, and fits that cannot
  serve fall back loudly.
* The reported numbers (`reporting.summarise`): ASVspoof 5's actDCF and Cllr before and after
  calibration, and the invariance of EER, minDCF and minCllr.
* The served model's config path: a calibration fitted on synthetic validation logits, stored
  in the config (through JSON, as the logged artifact is), applied by `serving.Detector` to
  real inputs through a real Keras network: the fraction of fakes among clips predicted near p
  is close to p. The network reads its logit off one pixel of a picture (an image model,
  `features.kind: image`), so the test sets every clip's logit - and with it the
  class-conditional score distributions - exactly, while everything after the logit is the
  served code.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_audio.config.params import parse_params
from deepfake_audio.scoring import metrics, reporting
from deepfake_audio.scoring.calibration import (
    Calibration,
    Decision,
    bayes_threshold,
    decide_on_validation,
    fit,
    reliability,
)
from deepfake_audio.serving import pyfunc as serving
from deepfake_audio.serving.limits import Limits
from deepfake_audio.stages import evaluate as evaluation

ASVSPOOF5_LLR_THRESHOLD = math.log(0.5 / 0.95)  # ln(Cfa Pspoof / (Cmiss (1 - Pspoof)))


def _draw(
    rng: np.random.Generator, n_bona: int, n_spoof: int, scale: float = 4.0, shift: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """A badly scaled detector: x ~ N(1, 1) bona fide, N(-1, 1) spoof; logit = scale x + shift.

    The true LLR is 2x = 2 (logit - shift) / scale: linear, so a logistic fit can be exact.
    """
    x = np.concatenate((rng.normal(1.0, 1.0, n_bona), rng.normal(-1.0, 1.0, n_spoof)))
    labels = np.concatenate((np.ones(n_bona, np.int64), np.zeros(n_spoof, np.int64)))
    return scale * x + shift, labels


# --- the served decision, chosen on validation --------------------------------------------


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_bayes_threshold_on_the_raw_logit_makes_the_calibrated_decisions(method: str) -> None:
    rng = np.random.default_rng(0)
    val, labels = _draw(rng, 600, 300)
    d = decide_on_validation(val, labels, method=method)  # defaults: ASVspoof 5's point
    assert d.rule == "bayes" and d.calibration is not None and d.calibration.method == method
    assert d.llr_threshold == pytest.approx(ASVSPOOF5_LLR_THRESHOLD)
    assert (d.target_prior, d.c_miss, d.c_fa) == (0.05, 1.0, 10.0)
    grid = np.linspace(val.min() - 5, val.max() + 5, 20_001)
    grid = grid[np.abs(grid - d.threshold) > 1e-9]  # not exactly on the threshold
    np.testing.assert_array_equal(
        metrics.decide(grid, d.threshold), metrics.decide(d.calibration.llr(grid), d.llr_threshold)
    )


def test_other_prior_and_costs_move_the_threshold() -> None:
    rng = np.random.default_rng(1)
    val, labels = _draw(rng, 600, 300)
    strict = decide_on_validation(val, labels, target_prior=0.05, c_miss=1.0, c_fa=10.0)
    even = decide_on_validation(val, labels, target_prior=0.5, c_miss=1.0, c_fa=1.0)
    assert even.llr_threshold == 0.0
    # ASVspoof 5 weighs a miss by Cmiss (1 - Pspoof) = 0.95 and a false alarm by
    # Cfa Pspoof = 0.5: missing bona fide is the costlier error, so less evidence suffices.
    assert strict.threshold < even.threshold
    assert strict.calibration == even.calibration  # the LLR map does not depend on the prior


def test_validation_eer_rule_keeps_the_old_threshold() -> None:
    rng = np.random.default_rng(2)
    val, labels = _draw(rng, 300, 300)
    d = decide_on_validation(val, labels, rule="validation_eer")
    assert d.threshold == metrics.compute_eer(val[labels == 1], val[labels == 0])[1]
    assert d.llr_threshold is None and d.calibration is not None  # still calibrated


def test_method_none_reads_the_logit_as_an_llr() -> None:
    rng = np.random.default_rng(3)
    val, labels = _draw(rng, 300, 300)
    d = decide_on_validation(val, labels, method="none")
    assert d.calibration is None and d.threshold == pytest.approx(ASVSPOOF5_LLR_THRESHOLD)
    np.testing.assert_array_equal(d.llr(val), val)


def test_fits_that_cannot_serve_fall_back_with_a_warning() -> None:
    rng = np.random.default_rng(4)
    val, labels = _draw(rng, 300, 300)
    # Validation says higher logits are MORE fake: no "score > t" rule fits a slope < 0.
    d = decide_on_validation(-val, labels)
    assert d.calibration is None and "slope" in d.warnings[0]
    # Constant validation scores carry no ranking: no EER threshold, 0 as before.
    d = decide_on_validation(np.zeros(10), np.r_[np.ones(5), np.zeros(5)], rule="validation_eer")
    assert d.threshold == 0.0 and any("no validation EER threshold" in w for w in d.warnings)
    with pytest.raises(ValueError, match="threshold rule"):
        decide_on_validation(val, labels, rule="eer")


def test_an_infinite_isotonic_threshold_is_stored_as_a_finite_number() -> None:
    # Every bona fide logit below every spoof: the increasing isotonic fit is flat at 0.5, its
    # LLR 0 everywhere, above the Bayes threshold -0.64 - every clip is accepted (t = -inf).
    val = np.r_[np.linspace(-3, -1, 20), np.linspace(1, 3, 20)]
    labels = np.r_[np.ones(20), np.zeros(20)]
    d = decide_on_validation(val, labels, method="isotonic")
    assert d.threshold == -sys.float_info.max
    text = json.dumps(d.to_dict(), allow_nan=False)  # strict JSON: no Infinity
    assert Decision.from_dict(json.loads(text)) == d
    assert np.all(metrics.decide(np.array([-1e300, 0.0, 1e300]), d.threshold) == 1)


def test_decision_round_trips_through_run_json() -> None:
    rng = np.random.default_rng(5)
    val, labels = _draw(rng, 200, 100)
    for method in ("logistic", "isotonic", "none"):
        for rule in ("bayes", "validation_eer"):
            d = decide_on_validation(val, labels, method=method, rule=rule)  # type: ignore[arg-type]
            assert Decision.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_params_and_calibration_agree_on_the_threshold_rules() -> None:
    from deepfake_audio.config import params
    from deepfake_audio.scoring import calibration

    assert calibration.THRESHOLD_RULES == params.THRESHOLD_RULES
    assert set(params.CALIBRATION_METHODS) == set(calibration._METHODS)


# --- the reported numbers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(6)
    val, val_labels = _draw(rng, 1500, 1500)
    test, test_labels = _draw(rng, 3000, 3000)
    return {
        "val": val,
        "val_labels": val_labels,
        "test": test,
        "test_labels": test_labels,
        "attacks": np.where(test_labels == 1, "-", "A01"),
    }


def test_summary_reports_asvspoof5_numbers_before_and_after_calibration(scored) -> None:
    d = decide_on_validation(scored["val"], scored["val_labels"])
    args = (scored["val"], scored["val_labels"], scored["test"], scored["test_labels"])
    s = reporting.summarise(*args, scored["attacks"], decision=d)
    plain = reporting.summarise(*args, scored["attacks"])
    bona, spoof = (
        scored["test"][scored["test_labels"] == 1],
        scored["test"][scored["test_labels"] == 0],
    )
    # Order-only numbers: calibration cannot change them.
    for key in ("test_eer", "test_min_dcf", "test_min_cllr", "test_roc_auc"):
        assert s[key] == plain[key], key
    # Raw: the logit read as an LLR, at ASVspoof 5's operating point.
    assert s["test_act_dcf_raw"] == pytest.approx(metrics.act_dcf(bona, spoof)[0], abs=1e-6)
    assert s["test_cllr_raw"] == pytest.approx(metrics.cllr(bona, spoof), abs=1e-6)
    # Calibrated: the served LLRs.
    llr = d.calibration.llr(scored["test"])
    llr_bona, llr_spoof = llr[scored["test_labels"] == 1], llr[scored["test_labels"] == 0]
    assert s["test_act_dcf"] == pytest.approx(metrics.act_dcf(llr_bona, llr_spoof)[0], abs=1e-6)
    assert s["test_cllr"] == pytest.approx(metrics.cllr(llr_bona, llr_spoof), abs=1e-6)
    # Without a decision (the LFCC-GMM's LLRs): reported as they are.
    assert plain["test_act_dcf"] == plain["test_act_dcf_raw"] == s["test_act_dcf_raw"]
    assert plain["test_cllr"] == plain["test_cllr_raw"]
    # What calibration buys on this badly scaled detector: close to the best possible.
    assert s["test_cllr"] < 1.0 < s["test_cllr_raw"]
    assert s["test_min_cllr"] <= s["test_cllr"] <= s["test_min_cllr"] + 0.02
    assert s["test_min_dcf"] <= s["test_act_dcf"] <= 1.1 * s["test_min_dcf"]
    assert s["test_act_dcf_raw"] > 1.1 * s["test_min_dcf"]
    assert s["test_ece"] < 0.03 < s["test_ece_raw"]
    # The labels are the served ones; the old threshold stays reported under its own name.
    assert s["threshold"] == pytest.approx(d.threshold, abs=1e-6)
    assert s["validation_eer_threshold"] == plain["threshold"]
    predicted = metrics.decide(scored["test"], d.threshold)
    assert s["test_accuracy"] == pytest.approx(np.mean(predicted == scored["test_labels"]))
    assert s["calibration"] == {
        "method": "logistic",
        "threshold_rule": "bayes",
        "target_prior": 0.05,
        "c_miss": 1.0,
        "c_fa": 10.0,
        "llr_threshold": pytest.approx(ASVSPOOF5_LLR_THRESHOLD),
    }


def test_operating_points_reproduce_the_dcf_numbers(scored) -> None:
    d = decide_on_validation(scored["val"], scored["val_labels"])
    s = reporting.summarise(
        scored["val"],
        scored["val_labels"],
        scored["test"],
        scored["test_labels"],
        scored["attacks"],
        decision=d,
    )
    points = {
        p["point"]: p for p in reporting.operating_points(scored["test"], scored["test_labels"], d)
    }
    assert set(points) == {"EER", "minDCF", "actDCF raw", "actDCF calibrated"}

    def normalised_dcf(p: dict) -> float:  # ASVspoof 5: (0.95 Pmiss + 0.5 Pfa) / 0.5
        return (0.95 * p["frr"] + 0.5 * p["far"]) / 0.5

    assert normalised_dcf(points["minDCF"]) == pytest.approx(s["test_min_dcf"], abs=1e-5)
    assert normalised_dcf(points["actDCF raw"]) == pytest.approx(s["test_act_dcf_raw"], abs=1e-5)
    assert normalised_dcf(points["actDCF calibrated"]) == pytest.approx(s["test_act_dcf"], abs=1e-5)
    eer = points["EER"]
    assert (eer["far"] + eer["frr"]) / 2 == pytest.approx(s["test_eer"], abs=1e-5)


def test_reliability_plots_before_and_after_calibration(tmp_path: Path, scored) -> None:
    d = decide_on_validation(scored["val"], scored["val_labels"])
    evaluation.write_plots(tmp_path, scored["test"], scored["test_labels"], d.threshold, d)
    tables = {}
    for name in ("reliability_raw", "reliability_calibrated"):
        with open(tmp_path / f"{name}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["predicted", "observed", "clips"]
        assert sum(int(r["clips"]) for r in rows) == scored["test"].size
        tables[name] = rows

    def ece(rows: list[dict]) -> float:
        n = sum(int(r["clips"]) for r in rows)
        gaps = (abs(float(r["observed"]) - float(r["predicted"])) * int(r["clips"]) for r in rows)
        return sum(gaps) / n

    assert ece(tables["reliability_calibrated"]) < 0.03 < ece(tables["reliability_raw"])
    with open(tmp_path / "det_points.csv") as handle:
        points = {r["point"]: r for r in csv.DictReader(handle)}
    assert list(points) == ["EER", "minDCF", "actDCF raw", "actDCF calibrated"]
    assert set(points["EER"]) == {"point", "far", "frr", "far_probit", "frr_probit"}


# --- the served model's config path ------------------------------------------------------------

SIZE = 8  # pictures of 8x8 pixels: the network's input is (8, 8, 3)
GAIN, BIAS = 16.0, -8.0  # logit = GAIN * pixel + BIAS, pixel = level / 255: -8 .. 8
TEST_PRIOR_SPOOF = 0.3


def _features() -> dict:
    raw = {
        "data": {"source": "images"},
        "features": {"kind": "image", "image_size": [SIZE, SIZE]},
        "model": {"architecture": "compact_cnn"},
    }
    return parse_params(raw).section("features")


def _pixel_reader() -> object:
    """A real Keras network whose logit is GAIN * (the first red pixel) + BIAS."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(1)
    outputs = dense(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    weights = np.zeros((SIZE * SIZE * 3, 1), np.float32)
    weights[0, 0] = GAIN
    dense.set_weights([weights, np.array([BIAS], np.float32)])
    return model


def _logit(level: np.ndarray) -> np.ndarray:
    return GAIN * (np.asarray(level, np.float32) * np.float32(1.0 / 255.0)) + BIAS


def _level(logit: np.ndarray) -> np.ndarray:
    return np.clip(np.round((np.asarray(logit) - BIAS) * 255.0 / GAIN), 0, 255).astype(int)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One PNG per pixel level 0..255 (the rest random, so no picture is blank)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("levels")
    rng = np.random.default_rng(0)
    paths = []
    for level in range(256):
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        pixels[0, 0, 0] = level
        path = root / f"level{level:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _served(config: dict) -> serving.Detector:
    """The Detector a served model builds: the config as it comes back from its JSON file."""
    config = json.loads(json.dumps(config, allow_nan=False))
    return serving.Detector(_pixel_reader(), config, Limits.local())  # path rows of local files


def _is_reliable(probabilities: np.ndarray, is_fake: np.ndarray) -> tuple[bool, str]:
    """Every bin of >= 50 clips within 0.03 + 4 binomial SE of its fake rate; ECE <= 0.03."""
    rel = reliability(probabilities, is_fake, bins=10)
    filled = rel.counts >= 50
    predicted = rel.mean_predicted[filled]
    se = np.sqrt(predicted * (1.0 - predicted) / rel.counts[filled])
    gaps = np.abs(rel.observed_fake_rate[filled] - predicted)
    ece = rel.expected_calibration_error()
    ok = bool(np.all(gaps <= 0.03 + 4.0 * se)) and ece <= 0.03 and filled.sum() >= 5
    return ok, f"ECE {ece:.4f}, bins {filled.sum()}, gaps {np.round(gaps, 3)}"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_served_fake_probability_is_reliable_at_the_target_prior(pictures: list[Path]) -> None:
    """Known class-conditional logits (N(1.5, 1.2) bona fide, N(-1, 1.2) spoof: the true LLR
    is linear), calibration fitted on validation logits, served at the test split's prior."""
    rng = np.random.default_rng(11)

    def draw(n_bona: int, n_spoof: int) -> tuple[np.ndarray, np.ndarray]:
        logits = np.r_[rng.normal(1.5, 1.2, n_bona), rng.normal(-1.0, 1.2, n_spoof)]
        return _level(logits), np.r_[np.ones(n_bona, int), np.zeros(n_spoof, int)]

    val_levels, val_labels = draw(1500, 500)  # 25 % spoof: the fit must not absorb it
    cal = fit(_logit(val_levels), val_labels, "logistic")
    threshold = cal.raw_threshold(bayes_threshold(TEST_PRIOR_SPOOF, 1.0, 1.0))
    config = serving.make_config(
        _features(), threshold, calibration=cal, target_prior=TEST_PRIOR_SPOOF
    )
    detector = _served(config)

    test_levels, test_labels = draw(2800, 1200)  # 30 % spoof = TEST_PRIOR_SPOOF
    frame = pd.DataFrame({"path": [str(pictures[v]) for v in test_levels]})
    out = detector.score(frame)
    assert list(out.columns) == list(serving.OUTPUT_COLUMNS)
    assert (out["error"] == "").all() and (out["windows"] == 1).all()
    np.testing.assert_allclose(out["score"], _logit(test_levels), atol=1e-4)
    is_fake = test_labels == 0
    ok, detail = _is_reliable(out["fake_probability"].to_numpy(), is_fake)
    assert ok, detail
    np.testing.assert_allclose(
        out["fake_probability"], cal.fake_probability(out["score"], TEST_PRIOR_SPOOF), rtol=1e-12
    )
    # At even costs the served label is the more probable class.
    expected = np.where(out["fake_probability"] < 0.5, "real", "fake")
    near = np.abs(out["fake_probability"] - 0.5) < 1e-6
    assert (out["label"].to_numpy()[~near] == expected[~near]).all()
    # What was served before: sigmoid(-logit) fails the same check on the same clips.
    assert not _is_reliable(1.0 / (1.0 + np.exp(out["score"].to_numpy())), is_fake)[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_configs_without_calibration_serve_sigmoid_as_before(pictures: list[Path]) -> None:
    levels = [0, 100, 127, 128, 200, 255]
    frame = pd.DataFrame({"path": [str(pictures[v]) for v in levels] + ["/no/such.png"]})
    logits = _logit(np.array(levels))
    threshold = float((logits[2] + logits[3]) / 2)
    current = serving.make_config(_features(), threshold)
    assert current["format"] == 2 and current["calibration"] is None
    format_1 = {k: v for k, v in current.items() if k not in ("calibration", "target_prior")}
    format_1["format"] = 1  # what a version logged before calibration carries
    for config in (current, format_1):
        out = _served(config).score(frame)
        np.testing.assert_allclose(out["score"][:6].astype(float), logits, atol=1e-4)
        np.testing.assert_allclose(
            out["fake_probability"][:6].astype(float), 1.0 / (1.0 + np.exp(logits)), rtol=1e-4
        )
        assert list(out["label"]) == ["fake"] * 3 + ["real"] * 3 + ["error"]
        assert out["score"][6] is None and out["fake_probability"][6] is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_calibration_configs_fail_when_the_model_loads(pictures: list[Path]) -> None:
    cal = Calibration(method="logistic", slope=0.5, offset=0.1)
    with pytest.raises(ValueError, match="target_prior"):
        serving.make_config(_features(), 0.0, calibration=cal)
    config = serving.make_config(_features(), 0.0, calibration=cal, target_prior=0.05)
    for key, value, message in (
        ("target_prior", 1.5, "target_prior"),
        ("target_prior", None, "target_prior"),
        ("calibration", {"method": "platt"}, "unknown calibration method"),
        ("calibration", {"method": "logistic", "slope": "1"}, "exactly the keys"),
    ):
        with pytest.raises(ValueError, match=message):
            _served({**config, key: value})
    # Calibration "none" stored explicitly: the logit read as an LLR at the stated prior.
    explicit = {**config, "calibration": {"method": "none"}, "target_prior": 0.5}
    out = _served(explicit).score(pd.DataFrame({"path": [str(pictures[200])]}))
    assert out["fake_probability"][0] == pytest.approx(
        1.0 / (1.0 + np.exp(float(_logit(200)))), rel=1e-4
    )
