"""Cross-corpus numbers: a detector scored on corpora it never trained on, one at a time.

A held-out corpus (`data.corpora` role `select` or `eval`) is scored alone: its EER, minDCF,
actDCF and Cllr (ASVspoof 5's set, from `scoring.metrics`) and its EER per synthesis system,
because corpora differ in size, prior and recording chain, and a pooled number would mostly
measure the largest one. Their mean is the one number a run is compared by:

- ``xcorpus_eer``: the mean EER over the `eval` corpora, held out of training and of every
  choice (tuning, early stopping, calibration, the kept epoch), so it is not chosen on itself;
  this is what `registry.promote_metric: xcorpus_eer` and the leave-one-corpus-out table read.
- ``xcorpus_select_eer``: the same over the `select` corpora, which `tune.objective:
  xcorpus_eer` selects on during training (`stages.callbacks.SelectionEER`); reported so
  that the gap between the corpora it chose on and those it did not is visible.

Pure numpy: the evaluate stage (the network's scores) and the baseline stage (the LFCC-GMM's
LLRs) report through the same functions, so their numbers compare line by line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfake_audio.scoring import metrics
from deepfake_audio.scoring.calibration import Decision

# The dataset's split of each held-out role (sources.HELDOUT_SPLITS: scoring keeps to core).
ROLE_OF_SPLIT = {"xcorpus_select": "select", "xcorpus_eval": "eval"}
MEAN_KEYS = {"eval": "xcorpus_eer", "select": "xcorpus_select_eer"}


def corpus_numbers(
    scores: ArrayLike,
    targets: ArrayLike,
    attacks: ArrayLike | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """One corpus's numbers from its clips' scores (higher = bona fide; targets 1 = bona fide).

    ``act_dcf`` and ``cllr`` judge the LLRs the model serves (`decision`'s calibration, fitted
    on the training corpora's validation split: a held-out corpus shows whether it carries
    over); ``*_raw`` read the raw score as an LLR. EER and minDCF see only the order.
    """
    raw = np.asarray(scores, dtype=np.float64).ravel()
    is_bona = np.asarray(targets).astype(int).ravel() == 1
    if raw.shape != is_bona.shape:
        raise ValueError(f"{raw.size} scores for {is_bona.size} targets")
    bona, spoof = raw[is_bona], raw[~is_bona]
    served = decision.llr(raw) if decision is not None else raw
    numbers: dict[str, Any] = {
        "eer": metrics.compute_eer(bona, spoof)[0],
        "min_dcf": metrics.min_dcf(bona, spoof)[0],
        "act_dcf": metrics.act_dcf(served[is_bona], served[~is_bona])[0],
        "act_dcf_raw": metrics.act_dcf(bona, spoof)[0],
        "cllr": metrics.cllr(served[is_bona], served[~is_bona]),
        "cllr_raw": metrics.cllr(bona, spoof),
    }
    numbers = {key: round(float(value), 6) for key, value in numbers.items()}
    numbers["clips"] = {"bonafide": int(bona.size), "spoof": int(spoof.size)}
    numbers["per_attack_eer"] = per_attack_eer(raw, is_bona, attacks)
    return numbers


def per_attack_eer(
    scores: np.ndarray, is_bona: np.ndarray, attacks: ArrayLike | None
) -> dict[str, float]:
    """Every attack's spoofs against all the corpus's bona fide clips ("-": none named)."""
    if attacks is None:
        return {}
    names = np.asarray(attacks).astype(str).ravel()
    out: dict[str, float] = {}
    for attack in sorted(set(names[~is_bona]) - {"-", ""}):
        out[attack] = round(
            float(metrics.compute_eer(scores[is_bona], scores[~is_bona & (names == attack)])[0]),
            6,
        )
    return out


def report(
    scores: ArrayLike,
    targets: ArrayLike,
    corpora: ArrayLike,
    roles: ArrayLike,
    attacks: ArrayLike | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """Every held-out corpus's numbers and the mean EER of each role.

    All arrays are per clip: its score, target, corpus name, role (select | eval) and attack.
    Returns ``{"xcorpus_eer": mean over eval or None, "xcorpus_select_eer": ... or None,
    "corpora": {name: {"role", "eer", "min_dcf", ...}}}``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    names = np.asarray(corpora).astype(str).ravel()
    role_of = np.asarray(roles).astype(str).ravel()
    attack_ids = np.asarray(attacks).astype(str).ravel() if attacks is not None else None
    out: dict[str, Any] = {key: None for key in MEAN_KEYS.values()}
    per_corpus: dict[str, Any] = {}
    for name in dict.fromkeys(names.tolist()):
        here = names == name
        roles_here = set(role_of[here].tolist())
        if len(roles_here) != 1:
            raise ValueError(f"corpus {name!r} has clips of several roles {sorted(roles_here)}")
        per_corpus[name] = {
            "role": roles_here.pop(),
            **corpus_numbers(
                scores[here],
                targets[here],
                attack_ids[here] if attack_ids is not None else None,
                decision,
            ),
        }
    for role, key in MEAN_KEYS.items():
        eers = [entry["eer"] for entry in per_corpus.values() if entry["role"] == role]
        if eers:
            out[key] = round(float(np.mean(eers)), 6)
    out["corpora"] = per_corpus
    return out


# What reports/metrics.json keeps of each corpus (dvc exp show: `xcorpus.<name>.<key>`); the
# per-system EERs go to reports/evaluation.json and MLflow, where 50 columns do not crowd.
SUMMARY_KEYS = ("role", "eer", "min_dcf", "act_dcf", "cllr")


def summary(full: dict[str, Any]) -> dict[str, Any]:
    """The readable part of `report` for reports/metrics.json: each corpus's main numbers."""
    return {
        name: {key: entry[key] for key in SUMMARY_KEYS}
        for name, entry in full.get("corpora", {}).items()
    }


def flat(full: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names: `xcorpus.<name>.eer`, ..., `xcorpus.<name>.eer.<attack>`, and the
    means (`xcorpus_eer`, `xcorpus_select_eer`) where there are corpora of that role."""
    out: dict[str, float] = {}
    for key in MEAN_KEYS.values():
        if full.get(key) is not None:
            out[key] = float(full[key])
    for name, entry in full.get("corpora", {}).items():
        for key in ("eer", "min_dcf", "act_dcf", "act_dcf_raw", "cllr", "cllr_raw"):
            if entry.get(key) is not None:
                out[f"xcorpus.{name}.{key}"] = float(entry[key])
        for attack, eer in entry.get("per_attack_eer", {}).items():
            out[f"xcorpus.{name}.eer.{attack}"] = float(eer)
    return out
