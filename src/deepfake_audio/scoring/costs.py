"""The cost model of a detection cost function: prior, costs, and its Bayes threshold.

Shared by `scoring.metrics` (actDCF scores decisions at this threshold) and
`scoring.calibration` (the served model decides at it), so the two cannot disagree; a module
of its own so that the train stage, which fits the calibration, does not depend on the
evaluation-only metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DcfParameters:
    """Prior and costs of a (countermeasure-only) detection cost function.

    Attributes:
        p_spoof: prior probability that a trial is a spoof.
        c_miss: cost of rejecting a bona fide trial.
        c_fa: cost of accepting a spoof (false alarm).
    """

    p_spoof: float
    c_miss: float
    c_fa: float


# ASVspoof 5 track 1 (countermeasure) DCF, as the official evaluation package fixes it in
# `calculate_minDCF_EER_CLLR` (evaluation-package/calculate_metrics.py): Pspoof = 0.05,
# Cmiss = 1, Cfa = 10. Both minDCF and actDCF there are divided by
# min(Cmiss * (1 - Pspoof), Cfa * Pspoof) = min(0.95, 0.5) = 0.5. `min_dcf`'s defaults are the
# same numbers, so min_dcf(b, s) and act_dcf(b, s) are directly comparable.
ASVSPOOF5_CM_DCF = DcfParameters(p_spoof=0.05, c_miss=1.0, c_fa=10.0)


def _check_dcf_parameters(p_spoof: float, c_miss: float, c_fa: float) -> None:
    """Same checks as `min_dcf`: a prior of 0 or 1 or a non-positive cost has no DCF."""
    if not 0.0 < p_spoof < 1.0:
        raise ValueError(f"p_spoof must be strictly between 0 and 1, got {p_spoof}")
    if c_miss <= 0.0 or c_fa <= 0.0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")


def _bayes_llr_threshold(p_spoof: float, c_miss: float, c_fa: float) -> float:
    """The LLR above which accepting a trial as bona fide has the lower expected cost.

    Accepting costs ``c_fa * P(spoof | x)``, rejecting ``c_miss * P(bona | x)``; with
    ``P(bona | x) / P(spoof | x) = exp(llr) * (1 - p_spoof) / p_spoof`` accepting is cheaper
    exactly when ``llr > ln(c_fa * p_spoof / (c_miss * (1 - p_spoof)))``. This is the
    official ``-ln(beta)``, ``beta = Cmiss (1 - Pspoof) / (Cfa Pspoof)``; with ASVspoof 5's
    numbers ``ln(0.5 / 0.95) = -0.6419``. `calibration.bayes_threshold` is this function.
    """
    _check_dcf_parameters(p_spoof, c_miss, c_fa)
    return math.log(c_fa * p_spoof) - math.log(c_miss * (1.0 - p_spoof))
