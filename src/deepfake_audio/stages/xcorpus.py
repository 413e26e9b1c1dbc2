"""Held-out corpora in the evaluate and baseline stages: score them, report them, plot them.

The dataset stage puts every clip of a `select` or `eval` corpus (`data.corpora`) in that
role's split (`xcorpus_select`, `xcorpus_eval`), with its corpus name in the manifest. Here
each stage scores those splits with its own model and turns the scores into the numbers of
`scoring.xcorpus` (per corpus: EER, minDCF, actDCF, Cllr, EER per system; the mean EER of the
eval corpora, `xcorpus_eer`). Without held-out corpora every function returns the empty
answer, so a single-corpus run (the demo) is unchanged but for an empty DET table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.core.io import write_csv
from deepfake_audio.scoring import metrics, xcorpus
from deepfake_audio.scoring.calibration import Decision
from deepfake_audio.scoring.det import probit, set_det_axes

DET_TABLE = "xcorpus_det.csv"
DET_FIGURE = "xcorpus_det.png"


def heldout_splits(data: Any) -> list[str]:
    """The held-out splits this dataset holds (none for a single corpus)."""
    return [split for split in xcorpus.ROLE_OF_SPLIT if data.has_split(split)]


def scored(data: Any, score: Callable[[str], np.ndarray]) -> dict[str, np.ndarray] | None:
    """Every held-out clip's score, target, corpus, role and attack (None: no held-out corpora).

    `score(split)` returns the split's scores in the order `data.manifest(split)` lists its
    clips, as both stages' scorers do.
    """
    parts: list[dict[str, np.ndarray]] = []
    for split in heldout_splits(data):
        manifest = data.manifest(split)
        values = np.asarray(score(split), dtype=np.float64).ravel()
        if values.size != len(manifest):
            raise AssertionError(f"{split}: {values.size} scores for {len(manifest)} clips")
        parts.append(
            {
                "scores": values,
                "targets": manifest["target"].to_numpy(),
                "corpora": manifest["corpus"].astype(str).to_numpy(),
                "roles": np.full(len(manifest), xcorpus.ROLE_OF_SPLIT[split]),
                "attacks": manifest["attack"].astype(str).to_numpy(),
            }
        )
    if not parts:
        return None
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def report(clips: dict[str, np.ndarray] | None, decision: Decision | None = None) -> dict:
    """`scoring.xcorpus.report` of the scored clips; {} without held-out corpora."""
    if clips is None:
        return {}
    return xcorpus.report(
        clips["scores"],
        clips["targets"],
        clips["corpora"],
        clips["roles"],
        clips["attacks"],
        decision,
    )


def metric_name(text: str) -> str:
    """A corpus or system name as MLflow takes it in a metric name."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def flat(full: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of a report (`xcorpus.<name>.eer`, ...), names made safe for MLflow."""
    return {metric_name(k): v for k, v in xcorpus.flat(full).items()}


def metrics_entries(
    full: dict[str, Any], baseline: dict[str, Any], audit: dict[str, Any]
) -> dict[str, Any]:
    """What reports/metrics.json gets: `xcorpus_eer`, `xcorpus_select_eer`, and per corpus its
    main numbers beside the LFCC-GMM's EER on it and its best one-number cue (raw audio,
    from the dataset stage's shortcut audit), the floor a detector must beat there."""
    if not full:
        return {}
    corpora = xcorpus.summary(full)
    gmm = (baseline or {}).get("xcorpus", {})
    splits = (audit or {}).get("splits", {})
    for name, entry in corpora.items():
        entry["baseline_lfcc_gmm_eer"] = gmm.get(name, {}).get("eer")
        lowest = splits.get(f"xcorpus.{name}", {}).get("raw_lowest") or {}
        entry["best_cue"] = lowest.get("cue")
        entry["best_cue_eer"] = lowest.get("eer")
    return {
        "xcorpus_eer": full["xcorpus_eer"],
        "xcorpus_select_eer": full["xcorpus_select_eer"],
        "baseline_lfcc_gmm_xcorpus_eer": (baseline or {}).get("xcorpus_eer"),
        "xcorpus": corpora,
    }


def write_det(plots: Path, clips: dict[str, np.ndarray] | None) -> Path:
    """`reports/plots/xcorpus_det.csv`: each held-out corpus's DET curve on normal-deviate
    axes (`corpus, far, frr, far_probit, frr_probit`), drawn one line per corpus by the
    `det_by_corpus` template in dvc.yaml. Header only without held-out corpora, so the plot
    is declared once and always loads."""
    rows: list[tuple[Any, ...]] = []
    if clips is not None:
        for name in dict.fromkeys(clips["corpora"].tolist()):
            here = clips["corpora"] == name
            scores, targets = clips["scores"][here], clips["targets"][here]
            frr, far, _ = metrics.det_curve(scores[targets == 1], scores[targets == 0])
            rows.extend(
                zip(
                    [name] * far.size,
                    far.round(6),
                    frr.round(6),
                    probit(far).round(6),
                    probit(frr).round(6),
                    strict=True,
                )
            )
    header = ("corpus", "far", "frr", "far_probit", "frr_probit")
    return write_csv(Path(plots) / DET_TABLE, header, rows)


def write_det_figure(out: Path, clips: dict[str, np.ndarray], full: dict[str, Any]) -> Path:
    """One PNG with every held-out corpus's DET curve (for MLflow), EER in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deepfake_audio.core.io import replacing

    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, entry in full["corpora"].items():
        here = clips["corpora"] == name
        scores, targets = clips["scores"][here], clips["targets"][here]
        frr, far, _ = metrics.det_curve(scores[targets == 1], scores[targets == 0])
        ax.plot(probit(far), probit(frr), label=f"{name} ({entry['role']}): EER {entry['eer']:.1%}")
    ax.plot([-4, 4], [-4, 4], color="grey", linestyle=":", linewidth=1)
    set_det_axes(ax)
    ax.set_title("DET per held-out corpus")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(out) / DET_FIGURE
    with replacing(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def summary_line(full: dict[str, Any], who: str = "held-out corpora") -> str:
    """One line for stderr: each corpus's EER and role, and the means."""
    parts = [f"{name} {e['eer']:.2%} ({e['role']})" for name, e in full["corpora"].items()]
    means = [
        f"{key} {full[key]:.2%}" for key in xcorpus.MEAN_KEYS.values() if full.get(key) is not None
    ]
    return f"{who}: EER " + ", ".join(parts) + ("; " + ", ".join(means) if means else "")


def baseline_entries(full: dict[str, Any]) -> dict[str, Any]:
    """What reports/baseline.json (a DVC metrics file) gets: the means and each corpus's main
    numbers; the per-system EERs go to MLflow only."""
    if not full:
        return {}
    return {
        "xcorpus_eer": full["xcorpus_eer"],
        "xcorpus_select_eer": full["xcorpus_select_eer"],
        "xcorpus": xcorpus.summary(full),
    }
