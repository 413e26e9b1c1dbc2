"""The shortcut audit: how well one number alone separates bona fide from spoof, and how
much a detector's score follows it.

`audit` takes, per split, the clips' targets (1 = bona fide) and a table of cue values per
view ("raw": the decoded recording; "as_fed": what the model is fed), and scores every cue
as if it were a detector: its EER in the better of the two directions ("higher = bona
fide" or "lower = bona fide"), since a cue can give the label away either way. A cue at
`WARN_EER` (30 %) or below is flagged: a model can reach that EER without learning anything
about spoofing. `spearman` is the rank correlation of a detector's scores with a cue; the
evaluate stage reports it on the test split, so a detector that learned a cue shows it.

The EER is the ASVspoof one (`scoring.eer.det_curve`, no interpolation), with one change
for cues: thresholds are only placed between distinct values. Cues tie often (every clip of
a corpus can have the same duration), and the DET points inside a tied run split the tie
by input order, which can make a constant look like a perfect detector. On untied scores
the two agree exactly. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfake_audio.scoring.eer import det_curve

WARN_EER = 0.30
HIGHER = "higher = bona fide"
LOWER = "lower = bona fide"


def tied_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> float:
    """The ASVspoof EER (accept as bona fide when score > threshold) over thresholds placed
    only between distinct scores: a run of tied scores is accepted or rejected as a whole."""
    frr, far, thresholds = det_curve(bonafide_scores, spoof_scores)
    keep = np.ones(frr.size, dtype=bool)
    keep[1:-1] = thresholds[1:-1] != thresholds[2:]  # the last point of every tied run
    frr, far = frr[keep], far[keep]
    index = int(np.argmin(np.abs(frr - far)))
    return float((frr[index] + far[index]) / 2.0)


def cue_eer(bonafide_values: ArrayLike, spoof_values: ArrayLike) -> tuple[float, str]:
    """A cue used alone as a score: (EER, direction) in whichever direction is better."""
    bona = np.asarray(bonafide_values, dtype=np.float64)
    spoof = np.asarray(spoof_values, dtype=np.float64)
    up, down = tied_eer(bona, spoof), tied_eer(-bona, -spoof)
    return (up, HIGHER) if up <= down else (down, LOWER)


def audit_split(targets: ArrayLike, cues: Mapping[str, ArrayLike]) -> dict[str, dict[str, Any]]:
    """Each cue's EER, direction and class medians on one split (`targets`: 1 = bona fide)."""
    is_bona = np.asarray(targets).astype(int) == 1
    result: dict[str, dict[str, Any]] = {}
    for name, values in cues.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != is_bona.shape:
            raise ValueError(f"cue {name!r}: {values.size} values for {is_bona.size} clips")
        eer, direction = cue_eer(values[is_bona], values[~is_bona])
        result[name] = {
            "eer": round(eer, 4),
            "direction": direction,
            "bonafide_median": _rounded(np.median(values[is_bona])),
            "spoof_median": _rounded(np.median(values[~is_bona])),
        }
    return result


def audit(
    splits: Mapping[str, tuple[ArrayLike, Mapping[str, Mapping[str, ArrayLike]]]],
    warn_eer: float = WARN_EER,
) -> dict[str, Any]:
    """The audit of every split: `splits` maps a split to (targets, {view: {cue: values}}).

    Returns the report `reports/shortcuts.json` holds: per split the class counts and, per
    view, each cue's EER, direction and class medians, and the view's lowest-EER cue;
    `flagged` maps "<split> <view> <cue>" to the EER of every cue at or below `warn_eer`.
    """
    report: dict[str, Any] = {"warn_eer": warn_eer, "splits": {}, "flagged": {}}
    for split, (targets, views) in splits.items():
        is_bona = np.asarray(targets).astype(int) == 1
        entry: dict[str, Any] = {"bonafide": int(is_bona.sum()), "spoof": int((~is_bona).sum())}
        if not entry["bonafide"] or not entry["spoof"]:
            entry["skipped"] = "needs clips of both classes"
            report["splits"][split] = entry
            continue
        for view, cues in views.items():
            table = audit_split(is_bona, cues)
            entry[view] = table
            if table:
                best = min(table, key=lambda name: table[name]["eer"])
                entry[f"{view}_lowest"] = {"cue": best, "eer": table[best]["eer"]}
            for name, row in table.items():
                if row["eer"] <= warn_eer:
                    report["flagged"][f"{split} {view} {name}"] = row["eer"]
        report["splits"][split] = entry
    return report


def warnings(report: Mapping[str, Any], where: str = "reports/shortcuts.json") -> list[str]:
    """One line per flagged (view, cue), naming the splits it separates and their EERs."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for key, eer in report.get("flagged", {}).items():
        split, view, name = key.split(" ")
        direction = report["splits"][split][view][name]["direction"]
        grouped.setdefault((view, name, direction), []).append(f"{split} {eer:.1%}")
    view_names = {"raw": "raw audio", "as_fed": "as fed to the model"}
    return [
        f"warning: shortcut: {name} alone separates the classes at EER <= "
        f"{report['warn_eer']:.0%}: {', '.join(eers)} ({view_names.get(view, view)}, "
        f"{direction}); see {where}"
        for (view, name, direction), eers in grouped.items()
    ]


def flat_eers(report: Mapping[str, Any]) -> dict[str, float]:
    """The audit's EERs as flat metric names: `shortcut_eer.<split>.<cue>` for the raw view,
    `shortcut_eer_<view>.<split>.<cue>` for the others (`shortcut_eer_as_fed.test.rms`)."""
    flat: dict[str, float] = {}
    for split, entry in report.get("splits", {}).items():
        for view, table in entry.items():
            if not isinstance(table, dict) or view.endswith("_lowest"):
                continue
            prefix = "shortcut_eer" if view == "raw" else f"shortcut_eer_{view}"
            for name, row in table.items():
                flat[f"{prefix}.{split}.{name}"] = float(row["eer"])
    return flat


def ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(x: ArrayLike, y: ArrayLike) -> float | None:
    """Spearman's rank correlation of `x` and `y` (ties ranked by their mean rank), or None
    where it is undefined: fewer than two values, or one of them constant."""
    rx, ry = ranks(x), ranks(y)
    if rx.size != ry.size:
        raise ValueError(f"{rx.size} values against {ry.size}")
    if rx.size < 2:
        return None
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = float(np.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))
    if norm == 0.0:
        return None
    return float(np.clip(np.dot(rx, ry) / norm, -1.0, 1.0))


def score_correlations(
    scores: ArrayLike, views: Mapping[str, Mapping[str, ArrayLike]]
) -> dict[str, dict[str, float | None]]:
    """Spearman correlation of a detector's scores (higher = more bona fide) with every cue
    of every view, rounded to 4 places (None where a cue is constant)."""
    return {
        view: {name: _round4(spearman(scores, values)) for name, values in cues.items()}
        for view, cues in views.items()
    }


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _rounded(value: float) -> float:
    """Six significant digits: what a cue's value is reported with."""
    return float(f"{float(value):.6g}")
