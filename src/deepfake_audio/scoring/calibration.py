"""Score calibration: the detector's logit -> a log-likelihood ratio -> a fake probability.

The detector outputs one raw score per clip (a logit, higher = more bona fide), whose scale
is whatever training made it: the training class balance, label smoothing and over-fitting
all shift and stretch it. A *calibration* fitted on the validation set maps it to a
natural-log likelihood ratio

    ``llr = ln p(score | bona fide) - ln p(score | spoof)``

which means the same thing whatever the class balance of any data set; only then is a
stated prior turned into a probability (`fake_probability`) or costs into a threshold
(`bayes_threshold`) that are right. Conventions are those of `deepfake_audio.scoring.metrics`:
label 1 = bona fide, 0 = spoof; a clip is accepted as bona fide when ``llr > threshold``.

Serving only needs `Calibration.from_dict` and `Calibration.llr`: the fitted map is stored as
plain numbers (JSON-safe, never pickled) and applied with numpy alone. scikit-learn is imported
only inside `fit`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from deepfake_audio.scoring.costs import ASVSPOOF5_CM_DCF, _bayes_llr_threshold
from deepfake_audio.scoring.eer import compute_eer

__all__ = [
    "Calibration",
    "Decision",
    "Method",
    "Reliability",
    "bayes_threshold",
    "decide_on_validation",
    "fake_probability",
    "fit",
    "reliability",
]

Method = Literal["logistic", "isotonic", "none"]
_METHODS: tuple[str, ...] = get_args(Method)

# Effectively unregularised: with balanced weights the logistic loss is a sum over all clips,
# so an L2 penalty of 1 / (2 C) on the slope is negligible next to it. A finite C (rather
# than "no penalty") is accepted by every scikit-learn version this project allows.
_LOGISTIC_C = 1e6


def _finite_1d(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a flat float64 array; NaN/inf rejected (they would poison the fit)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite value(s)")
    return arr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow and with full relative precision in both tails.

    ``exp(-log(1 + exp(-x)))`` via `np.logaddexp`: the naive form overflows for ``x < -709``
    and ``0.5 * (1 + tanh(x / 2))`` rounds tiny probabilities (e.g. 1e-20) to 0.
    """
    return np.exp(-np.logaddexp(0.0, -x))


def _logit_probabilities(p: np.ndarray, bound: float) -> np.ndarray:
    """``ln(p / (1 - p))`` clipped to ``[-bound, bound]``; p = 0 or 1 give -bound / +bound."""
    with np.errstate(divide="ignore"):
        raw = np.log(p) - np.log1p(-p)
    return np.clip(raw, -bound, bound)


@dataclass(frozen=True)
class Calibration:
    """A fitted, monotone non-decreasing map from raw detector score to LLR (natural log).

    Fields by method (the others keep their defaults):

    * ``"none"``: identity, ``llr = score`` (the raw score is trusted as an LLR).
    * ``"logistic"``: ``llr = slope * score + offset``.
    * ``"isotonic"``: the step-wise linear posterior of scikit-learn's isotonic fit, stored as
      its knots ``x_thresholds`` (strictly increasing raw scores) and ``p_thresholds``
      (non-decreasing P(bona fide | score) at a 0.5 prior), clipped outside the knots; the LLR
      is its logit, bounded to ``[-llr_bound, llr_bound]`` (see `fit`).

    Build one with `fit` or `from_dict`; both validate, so a loaded calibration is usable.
    """

    method: Method
    slope: float = 1.0
    offset: float = 0.0
    x_thresholds: tuple[float, ...] = ()
    p_thresholds: tuple[float, ...] = ()
    llr_bound: float = math.inf

    def __post_init__(self) -> None:
        """Reject any combination `llr` could not apply sensibly (also guards `from_dict`)."""
        if self.method not in _METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; expected {_METHODS}")
        if not (math.isfinite(self.slope) and math.isfinite(self.offset)):
            raise ValueError("slope and offset must be finite")
        if self.method == "none" and (self.slope != 1.0 or self.offset != 0.0):
            raise ValueError("method 'none' is the identity: slope 1, offset 0")
        if self.method != "isotonic":
            if self.x_thresholds or self.p_thresholds or self.llr_bound != math.inf:
                raise ValueError(f"method {self.method!r} takes no isotonic fields")
            return
        x = np.asarray(self.x_thresholds, dtype=np.float64)
        p = np.asarray(self.p_thresholds, dtype=np.float64)
        if x.ndim != 1 or x.size == 0 or x.shape != p.shape:
            raise ValueError("isotonic needs equally long, non-empty x_thresholds/p_thresholds")
        if not (np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)):
            raise ValueError("isotonic x_thresholds must be finite and strictly increasing")
        if not (np.all((p >= 0.0) & (p <= 1.0)) and np.all(np.diff(p) >= 0)):
            raise ValueError("isotonic p_thresholds must lie in [0, 1] and be non-decreasing")
        if not (math.isfinite(self.llr_bound) and self.llr_bound > 0.0):
            raise ValueError("isotonic llr_bound must be finite and positive")

    def llr(self, scores: ArrayLike) -> np.ndarray:
        """Log-likelihood ratios (natural log, bona fide vs spoof) for raw scores; numpy only."""
        s = _finite_1d(scores, "scores")
        if self.method == "none":
            return s.copy()
        if self.method == "logistic":
            return self.slope * s + self.offset
        p = np.interp(s, np.asarray(self.x_thresholds), np.asarray(self.p_thresholds))
        return _logit_probabilities(p, self.llr_bound)

    def fake_probability(self, scores: ArrayLike, prior_spoof: float) -> np.ndarray:
        """P(spoof | score) at the stated spoof prior: `fake_probability` of `llr`."""
        return fake_probability(self.llr(scores), prior_spoof)

    def raw_threshold(self, llr_threshold: float) -> float:
        """The raw-score threshold that makes the same decisions as ``llr > llr_threshold``.

        Returns ``t`` with ``score > t  <=>  llr(score) > llr_threshold`` (up to rounding at
        the boundary), so the model can be served with a plain threshold on its logit:

        * none: ``t = llr_threshold``; logistic: the line inverted, ``(llr_threshold -
          offset) / slope`` (the fit must be increasing: a slope <= 0 cannot be expressed as
          "accept when score > t" and raises ValueError);
        * isotonic: the largest score whose LLR does not exceed the threshold, i.e. the point
          where the LLR first rises above it (every score above ``t`` is accepted).
          ``-inf`` when every score is accepted, ``+inf`` when none is (the threshold lies
          outside the LLR's range).
        """
        if not math.isfinite(llr_threshold):
            raise ValueError(f"llr_threshold must be finite, got {llr_threshold}")
        if self.method == "none":
            return float(llr_threshold)
        if self.method == "logistic":
            if self.slope <= 0.0:
                raise ValueError(
                    f"logistic calibration has slope {self.slope} <= 0: higher raw scores are "
                    "not more bona fide, so no 'score > threshold' rule matches it"
                )
            return float((llr_threshold - self.offset) / self.slope)
        x = np.asarray(self.x_thresholds)
        p = np.asarray(self.p_thresholds)
        if llr_threshold >= self.llr_bound:
            return math.inf  # the clipped LLR never exceeds the bound
        if llr_threshold < -self.llr_bound:
            return -math.inf  # even the lowest clipped LLR (-bound) exceeds it
        # Inside the bound, llr(s) > t  <=>  p(s) > sigmoid(t), p(s) piecewise linear.
        q = float(_sigmoid(np.float64(llr_threshold)))
        if q < p[0]:
            return -math.inf  # scores are clipped to the first knot: all are above q
        if q >= p[-1]:
            return math.inf
        i = int(np.searchsorted(p, q, side="right")) - 1  # last knot with p <= q; p[i+1] > q
        return float(x[i] + (q - p[i]) * (x[i + 1] - x[i]) / (p[i + 1] - p[i]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (str, float, lists of floats) that `from_dict` restores.

        Python floats survive a JSON round trip exactly, so the restored calibration gives
        bit-identical LLRs.
        """
        if self.method == "none":
            return {"method": "none"}
        if self.method == "logistic":
            return {"method": "logistic", "slope": self.slope, "offset": self.offset}
        return {
            "method": "isotonic",
            "x_thresholds": list(self.x_thresholds),
            "p_thresholds": list(self.p_thresholds),
            "llr_bound": self.llr_bound,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from `to_dict` output, checking every field (the input may be a stale file).

        Only plain numbers are accepted, never objects: a served model must not unpickle.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a mapping, got {type(data).__name__}")
        method = data.get("method")
        expected = {
            "none": {"method"},
            "logistic": {"method", "slope", "offset"},
            "isotonic": {"method", "x_thresholds", "p_thresholds", "llr_bound"},
        }.get(method if isinstance(method, str) else "")
        if expected is None:
            raise ValueError(f"unknown calibration method {method!r}; expected {_METHODS}")
        if set(data) != expected:
            raise ValueError(
                f"calibration {method!r} needs exactly the keys {sorted(expected)}, "
                f"got {sorted(data)}"
            )
        if method == "none":
            return cls(method="none")
        if method == "logistic":
            return cls(
                method="logistic",
                slope=_number(data["slope"], "slope"),
                offset=_number(data["offset"], "offset"),
            )
        return cls(
            method="isotonic",
            x_thresholds=_numbers(data["x_thresholds"], "x_thresholds"),
            p_thresholds=_numbers(data["p_thresholds"], "p_thresholds"),
            llr_bound=_number(data["llr_bound"], "llr_bound"),
        )


def _number(value: Any, name: str) -> float:
    """A JSON number as float; bool (an int subclass) and strings are rejected."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"calibration {name} must be a number, got {value!r}")
    return float(value)


def _numbers(values: Any, name: str) -> tuple[float, ...]:
    """A JSON list of numbers as a tuple of floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"calibration {name} must be a list of numbers")
    return tuple(_number(v, name) for v in values)


def fit(val_scores: ArrayLike, val_labels: ArrayLike, method: Method) -> Calibration:
    """Fit a score -> LLR calibration on validation scores (label 1 = bona fide, 0 = spoof).

    Both fitted methods weight each class to half of the total (scikit-learn's "balanced"):
    a posterior fitted at an effective prior of 0.5 has posterior log-odds equal to the LLR,
    so the result is independent of the validation set's class balance, and the deployment
    prior enters only later, in `fake_probability`.

    * ``"logistic"``: logistic regression on the 1-D score (practically unregularised, see
      ``_LOGISTIC_C``): ``llr = slope * score + offset``. Two parameters, hard to over-fit;
      exact when the class-conditional score densities are equal-variance Gaussians.
    * ``"isotonic"``: the weighted isotonic regression of the label on the score (the PAV fit
      behind `metrics.min_cllr`), clipped to the fitted range. It can follow any monotone
      shape but is a step function that is 0 below the lowest bona fide score and 1 above the
      highest spoof, i.e. an infinite LLR. The LLR is therefore bounded to
      ``±ln(n + 1)``, n the size of the smaller class: a probability clipped to
      ``[1/(n + 2), 1 - 1/(n + 2)]``, Laplace's rule of succession for "no counter-example
      among n trials" - the validation set cannot support more evidence than that.
    * ``"none"``: identity; the scores are used as LLRs as they are.

    Raises:
        ValueError: unknown method, mismatched lengths, labels other than 0/1, a class
            missing, or NaN/inf scores.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected {_METHODS}")
    scores = _finite_1d(val_scores, "val_scores")
    labels = np.asarray(val_labels).ravel()
    if labels.size != scores.size:
        raise ValueError(f"val_labels has {labels.size} labels but val_scores {scores.size}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("val_labels must contain only 0 (spoof) and 1 (bona fide)")
    labels = labels.astype(np.int64)
    n_bona = int(np.count_nonzero(labels == 1))
    n_spoof = labels.size - n_bona
    if n_bona == 0 or n_spoof == 0:
        raise ValueError(
            f"calibration needs both classes (got {n_bona} bona fide, {n_spoof} spoof)"
        )
    if method == "none":
        return Calibration(method="none")

    # Each class weighs half the total: weight n / (2 n_class) per clip, as "balanced".
    weights = np.where(labels == 1, labels.size / (2.0 * n_bona), labels.size / (2.0 * n_spoof))
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=_LOGISTIC_C, solver="lbfgs", max_iter=1000)
        model.fit(scores.reshape(-1, 1), labels, sample_weight=weights)
        # classes_ is [0, 1], so the decision function is the log-odds of bona fide.
        return Calibration(
            method="logistic",
            slope=float(model.coef_[0, 0]),
            offset=float(model.intercept_[0]),
        )

    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(scores, labels.astype(np.float64), sample_weight=weights)
    return Calibration(
        method="isotonic",
        x_thresholds=tuple(float(v) for v in iso.X_thresholds_),
        p_thresholds=tuple(float(v) for v in np.clip(iso.y_thresholds_, 0.0, 1.0)),
        llr_bound=math.log(min(n_bona, n_spoof) + 1.0),
    )


def fake_probability(llr: ArrayLike, prior_spoof: float) -> np.ndarray:
    """Posterior probability that a clip is a spoof, given its LLR and the spoof prior.

    Bayes' rule in log-odds form: the bona fide posterior log-odds are
    ``llr + ln((1 - prior_spoof) / prior_spoof)``, so
    ``P(spoof | x) = sigmoid(-(llr + logit(1 - prior_spoof)))``. Evaluated without overflow;
    an LLR of ``±inf`` gives exactly 0 or 1.
    """
    if not 0.0 < prior_spoof < 1.0:
        raise ValueError(f"prior_spoof must be strictly between 0 and 1, got {prior_spoof}")
    values = np.asarray(llr, dtype=np.float64)
    if np.any(np.isnan(values)):
        raise ValueError("llr contains NaN")
    prior_log_odds_bona = math.log1p(-prior_spoof) - math.log(prior_spoof)
    return _sigmoid(-(values + prior_log_odds_bona))


def bayes_threshold(
    prior_spoof: float = ASVSPOOF5_CM_DCF.p_spoof,
    c_miss: float = ASVSPOOF5_CM_DCF.c_miss,
    c_fa: float = ASVSPOOF5_CM_DCF.c_fa,
) -> float:
    """The LLR threshold minimising expected cost: accept as bona fide when ``llr > it``.

    ``ln(c_fa * prior_spoof / (c_miss * (1 - prior_spoof)))``, the very threshold
    `metrics.act_dcf` applies (one shared function), -0.6419 for ASVspoof 5's defaults.
    `Calibration.raw_threshold` turns it into a threshold on the raw score.
    """
    return _bayes_llr_threshold(prior_spoof, c_miss, c_fa)


@dataclass(frozen=True, eq=False)
class Reliability:
    """Per-bin numbers of a reliability diagram for predicted fake probabilities.

    Bins split [0, 1] into equal widths (``edges``, length ``bins + 1``); the last bin
    includes 1.0. For bin ``i``: ``mean_predicted[i]`` (mean predicted fake probability),
    ``observed_fake_rate[i]`` (fraction of its clips that are fake) and ``counts[i]``. Empty
    bins have count 0 and NaN means. A calibrated predictor has
    ``observed_fake_rate ~ mean_predicted`` in every well-populated bin.
    """

    edges: np.ndarray
    mean_predicted: np.ndarray
    observed_fake_rate: np.ndarray
    counts: np.ndarray

    def expected_calibration_error(self) -> float:
        """Count-weighted mean ``|observed - predicted|`` over the non-empty bins (ECE)."""
        filled = self.counts > 0
        gaps = np.abs(self.observed_fake_rate[filled] - self.mean_predicted[filled])
        return float(np.sum(gaps * self.counts[filled]) / np.sum(self.counts[filled]))

    def to_dict(self) -> dict[str, list]:
        """JSON-safe lists, ``None`` for the means of empty bins."""

        def clean(values: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in values]

        return {
            "edges": [float(v) for v in self.edges],
            "mean_predicted": clean(self.mean_predicted),
            "observed_fake_rate": clean(self.observed_fake_rate),
            "counts": [int(v) for v in self.counts],
        }


def reliability(probabilities: ArrayLike, is_fake: ArrayLike, bins: int = 10) -> Reliability:
    """Bin predicted fake probabilities and compare each bin's mean with its fake rate.

    Args:
        probabilities: predicted P(spoof) per clip, in [0, 1].
        is_fake: truth per clip, 1/True = spoof (note: the opposite of the bona fide label).
        bins: number of equal-width bins.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    fake = np.asarray(is_fake).ravel()
    if p.size != fake.size:
        raise ValueError(f"probabilities has {p.size} values but is_fake has {fake.size}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("probabilities must lie in [0, 1] (and not be NaN)")
    if not np.all((fake == 0) | (fake == 1)):
        raise ValueError("is_fake must contain only 0/False (bona fide) and 1/True (spoof)")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_fake = np.bincount(index, weights=fake.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, sum_p / counts, np.nan)
        observed = np.where(counts > 0, sum_fake / counts, np.nan)
    return Reliability(
        edges=np.linspace(0.0, 1.0, bins + 1),
        mean_predicted=mean_predicted,
        observed_fake_rate=observed,
        counts=counts,
    )


# --- the served decision: calibration + threshold rule, chosen on validation ----------------

THRESHOLD_RULES = ("bayes", "validation_eer")
# Stand-in for an infinite raw threshold (an isotonic map whose LLR never crosses the Bayes
# threshold): the served config is JSON, which has no infinity, and no logit reaches it.
_FINITE_LIMIT = sys.float_info.max


@dataclass(frozen=True)
class Decision:
    """What the served model does with a raw score, fixed on the validation split.

    Attributes:
        threshold: raw-score threshold; a clip is labelled bona fide ("real") above it.
        rule: ``"bayes"`` (the Bayes threshold of the prior and costs, on the calibrated
            LLR) or ``"validation_eer"`` (the validation split's EER threshold on the raw
            score, the rule before calibration existed).
        calibration: the fitted score -> LLR map, or None (``method: none`` or a fit that
            failed): then the served probability is sigmoid(-score), as before.
        target_prior: P(spoof) behind the served fake probability and the Bayes threshold.
        c_miss, c_fa: the costs behind the Bayes threshold.
        llr_threshold: the Bayes threshold on the LLR (None for ``validation_eer``).
        warnings: why the requested calibration or rule could not be applied as asked.
    """

    threshold: float
    rule: str
    calibration: Calibration | None
    target_prior: float
    c_miss: float
    c_fa: float
    llr_threshold: float | None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for models/run.json and reports/metrics.json."""
        return {
            "threshold": self.threshold,
            "threshold_rule": self.rule,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "method": self.calibration.method if self.calibration else "none",
            "target_prior": self.target_prior,
            "c_miss": self.c_miss,
            "c_fa": self.c_fa,
            "llr_threshold": self.llr_threshold,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Rebuild from `to_dict` output (models/run.json)."""
        raw = data.get("calibration")
        llr_threshold = data.get("llr_threshold")
        return cls(
            threshold=float(data["threshold"]),
            rule=str(data["threshold_rule"]),
            calibration=Calibration.from_dict(raw) if raw is not None else None,
            target_prior=float(data["target_prior"]),
            c_miss=float(data["c_miss"]),
            c_fa=float(data["c_fa"]),
            llr_threshold=float(llr_threshold) if llr_threshold is not None else None,
            warnings=tuple(data.get("warnings", ())),
        )

    def llr(self, scores: ArrayLike) -> np.ndarray:
        """The served LLRs: calibrated, or the raw score read as an LLR without calibration."""
        if self.calibration is None:
            return _finite_1d(scores, "scores").copy()
        return self.calibration.llr(scores)


def decide_on_validation(
    val_scores: ArrayLike,
    val_labels: ArrayLike,
    method: Method = "logistic",
    rule: str = "bayes",
    target_prior: float = ASVSPOOF5_CM_DCF.p_spoof,
    c_miss: float = ASVSPOOF5_CM_DCF.c_miss,
    c_fa: float = ASVSPOOF5_CM_DCF.c_fa,
) -> Decision:
    """Fit the calibration and fix the raw threshold, both from validation scores only.

    Why both come from validation: the test split must not choose anything it then scores.

    * ``bayes``: accept when the calibrated LLR exceeds `bayes_threshold` (the decision of
      least expected cost at ``target_prior``, ``c_miss``, ``c_fa``), turned into a raw
      threshold by `Calibration.raw_threshold`. With ASVspoof 5's defaults these are the
      very decisions `metrics.act_dcf` scores. Without a calibration the raw score is read
      as an LLR (what "raw actDCF" measures).
    * ``validation_eer``: the validation EER threshold on the raw score, as before
      calibration existed; 0 when the validation scores carry no ranking.

    A fit that cannot serve (a logistic slope <= 0: on validation, higher logits are *less*
    bona fide) falls back to no calibration with a warning instead of failing the run:
    evaluate then reports the model as it is.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected {THRESHOLD_RULES}")
    scores = _finite_1d(val_scores, "val_scores")
    labels = np.asarray(val_labels).ravel()
    warnings: list[str] = []
    calibration: Calibration | None = None
    if method != "none":
        try:
            calibration = fit(scores, labels, method)
        except ValueError as exc:
            warnings.append(f"no calibration ({exc}); fake_probability is sigmoid(-logit)")
        else:
            if calibration.method == "logistic" and calibration.slope <= 0.0:
                warnings.append(
                    f"logistic calibration slope {calibration.slope:.4g} <= 0 (validation "
                    "logits do not rank bona fide above spoof); served uncalibrated"
                )
                calibration = None
    llr_threshold: float | None = None
    if rule == "bayes":
        llr_threshold = bayes_threshold(target_prior, c_miss, c_fa)
        threshold = (
            calibration.raw_threshold(llr_threshold) if calibration is not None else llr_threshold
        )
    else:
        try:
            threshold = compute_eer(scores[labels == 1], scores[labels == 0])[1]
        except ValueError as exc:
            warnings.append(f"no validation EER threshold ({exc}); the model uses 0")
            threshold = 0.0
    threshold = float(np.clip(threshold, -_FINITE_LIMIT, _FINITE_LIMIT))
    return Decision(
        threshold=threshold,
        rule=rule,
        calibration=calibration,
        target_prior=float(target_prior),
        c_miss=float(c_miss),
        c_fa=float(c_fa),
        llr_threshold=llr_threshold,
        warnings=tuple(warnings),
    )
