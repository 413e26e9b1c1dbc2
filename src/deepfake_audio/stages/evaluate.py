"""The evaluate stage: the field's numbers for the trained model, honestly chosen.

The EER is threshold-free. The decision threshold used for accuracy and the
classification report is the one the model serves, fixed on the validation split by
the train stage before the test split is scored (`calibration.threshold`: the Bayes
threshold of the calibrated LLR, or the validation EER threshold); the notebook picked
it on the test set itself, which flatters accuracy. Its number is reported too, clearly
labelled, for comparison.

ASVspoof 5 ranks systems by minDCF, actDCF and Cllr next to the EER. actDCF and Cllr
judge the score *values* as log-likelihood ratios, so they are reported twice: ``*_raw``
for the logit read as an LLR, and plain for the calibrated LLR the model serves (the
calibration the train stage fitted on validation, from `models/run.json`). EER, minDCF
and minCllr depend only on the order of the scores: calibration cannot change them.

The LFCC-GMM baseline's test EER and minDCF (the baseline stage, `reports/baseline.json`)
go into the same report and the same MLflow run, so every run shows where the CNN stands
against the field's classic baseline on the same clips.

The shortcut audit (`reports/shortcuts.json`, written by the dataset stage: each one-number
cue's EER used alone as a score) is logged to the same run, as an artifact
(``dataset/shortcuts.json``) and flat metrics (``shortcut_eer.<split>.<cue>``,
``shortcut_eer_as_fed.<split>.<cue>``); here rather than in train, so that a change of the
audit alone reruns this cheap stage and not the training. Next to it, the Spearman rank
correlation of the model's test scores with every cue (`test_shortcut_spearman` in
`reports/metrics.json`, ``shortcut_spearman.test.<cue>`` in MLflow): a detector that learned
a cue shows a correlation near +-1 with it.

Plots: CSV files for `dvc plots` (ROC; DET on normal-deviate axes with its EER, minDCF
and actDCF points; confusion; score histograms per class; reliability before and after
calibration) and the same as PNG figures, logged to MLflow under ``evaluation/plots``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.config.params import Params
from deepfake_audio.core.io import read_json, replacing, write_csv, write_json
from deepfake_audio.scoring import metrics, shortcuts
from deepfake_audio.scoring.calibration import Decision
from deepfake_audio.scoring.det import DET_CLIP, DET_TICKS, probit
from deepfake_audio.scoring.reporting import (
    BASELINE_METRICS_KEYS,
    details,
    operating_points,
    reliability_curves,
    summarise,
)

HISTOGRAM_BINS = 30


def scores_for(model: Any, data: Any, split: str, batch_size: int) -> np.ndarray:
    """Bona fide logits for a split, in manifest order."""
    ds = data.tf_dataset(split, batch_size)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float64).ravel()


def score_histogram(
    test_scores: np.ndarray, test_targets: np.ndarray, bins: int = HISTOGRAM_BINS
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Shared bin edges over the score range, bin centres, each class's share per bin.

    Shares (counts / class size), not counts, so classes of different sizes compare.
    """
    scores = np.asarray(test_scores, dtype=np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:  # every score equal: one bin's worth of width around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = {}
    for name, target in (("bonafide", 1), ("spoof", 0)):
        values = scores[test_targets == target]
        counts, _ = np.histogram(values, bins=edges)
        shares[name] = counts / max(values.size, 1)
    return edges, (edges[:-1] + edges[1:]) / 2.0, shares


def write_plots(
    plots: Path,
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    threshold: float,
    decision: Decision | None = None,
) -> list[Path]:
    """CSV files that `dvc plots` renders with the templates declared in dvc.yaml.

    ``det.csv`` holds the rates (``far``, ``frr``) and their normal deviates
    (``far_probit``, ``frr_probit``), which dvc.yaml plots, as ASVspoof's DET plots do;
    ``det_points.csv`` the same columns for the EER, minDCF and actDCF points.
    ``score_histogram.csv``: ``bin_center,bonafide,spoof``, each class's share per bin.
    ``reliability_raw.csv`` / ``reliability_calibrated.csv``: per non-empty bin the mean
    predicted P(spoof) (``predicted``, at the test split's spoof share) and the observed fake
    rate (``observed``), before and after calibration (`reporting.reliability_curves`).
    """
    plots = Path(plots)
    plots.mkdir(parents=True, exist_ok=True)
    bona, spoof = test_scores[test_targets == 1], test_scores[test_targets == 0]
    fpr, tpr, _ = metrics.roc_curve_points(bona, spoof)
    frr, far, _ = metrics.det_curve(bona, spoof)
    _, centres, shares = score_histogram(test_scores, test_targets)
    predicted = metrics.decide(test_scores, threshold)
    names = {1: "bonafide", 0: "spoof"}
    tables = {
        "roc.csv": (("fpr", "tpr"), zip(fpr.round(6), tpr.round(6), strict=True)),
        "det.csv": (
            ("far", "frr", "far_probit", "frr_probit"),
            zip(
                far.round(6), frr.round(6), probit(far).round(6), probit(frr).round(6), strict=True
            ),
        ),
        "confusion.csv": (
            ("actual", "predicted"),
            ((names[int(a)], names[int(p)]) for a, p in zip(test_targets, predicted, strict=True)),
        ),
        "scores.csv": (
            ("label", "score"),
            (
                (names[int(a)], round(float(s), 6))
                for a, s in zip(test_targets, test_scores, strict=True)
            ),
        ),
        "score_histogram.csv": (
            ("bin_center", "bonafide", "spoof"),
            zip(
                centres.round(6),
                shares["bonafide"].round(6),
                shares["spoof"].round(6),
                strict=True,
            ),
        ),
        "det_points.csv": (
            ("point", "far", "frr", "far_probit", "frr_probit"),
            (
                (
                    p["point"],
                    round(p["far"], 6),
                    round(p["frr"], 6),
                    round(float(probit(p["far"])), 6),
                    round(float(probit(p["frr"])), 6),
                )
                for p in operating_points(test_scores, test_targets, decision)
            ),
        ),
    }
    curves = reliability_curves(test_scores, test_targets, decision)
    for suffix, name in (("_raw", "reliability_raw.csv"), ("", "reliability_calibrated.csv")):
        curve = curves[suffix]
        filled = curve.counts > 0
        tables[name] = (
            ("predicted", "observed", "clips"),
            zip(
                curve.mean_predicted[filled].round(6),
                curve.observed_fake_rate[filled].round(6),
                curve.counts[filled],
                strict=True,
            ),
        )
    return [write_csv(plots / name, header, rows) for name, (header, rows) in tables.items()]


def _percent(rate: float) -> str:
    value = 100.0 * rate
    return f"{value:g} %"


def write_figures(
    out: Path,
    test_scores: np.ndarray,
    test_targets: np.ndarray,
    threshold: float,
    title: str = "test split",
    decision: Decision | None = None,
) -> list[Path]:
    """PNG figures of the plots: ROC, DET (normal-deviate axes, with its EER, minDCF and
    actDCF points), confusion, score histograms, reliability before/after calibration.

    Matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bona, spoof = test_scores[test_targets == 1], test_scores[test_targets == 0]
    eer, _ = metrics.compute_eer(bona, spoof)
    written = []

    def save(fig: Any, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = out / name
        with replacing(path, keep_suffix=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        written.append(path)

    fpr, tpr, _ = metrics.roc_curve_points(bona, spoof)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC {metrics.roc_auc(bona, spoof):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="false alarm rate (spoof accepted)",
        ylabel="bona fide accepted",
        title=f"ROC, {title}",
    )
    ax.legend(loc="lower right")
    save(fig, "roc.png")

    frr, far, _ = metrics.det_curve(bona, spoof)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot(probit(far), probit(frr), label="DET")
    ax.plot(probit(eer), probit(eer), "o", label=f"EER {eer:.2%}")
    raw_llr = np.asarray(test_scores, dtype=np.float64)
    served_llr = decision.llr(raw_llr) if decision is not None else raw_llr
    costs = {
        "minDCF": metrics.min_dcf(bona, spoof)[0],
        "actDCF raw": metrics.act_dcf(raw_llr[test_targets == 1], raw_llr[test_targets == 0])[0],
        "actDCF calibrated": metrics.act_dcf(
            served_llr[test_targets == 1], served_llr[test_targets == 0]
        )[0],
    }
    markers = {"minDCF": "s", "actDCF raw": "x", "actDCF calibrated": "D"}
    for point in operating_points(test_scores, test_targets, decision):
        name = point["point"]
        if name in costs:
            ax.plot(
                probit(point["far"]),
                probit(point["frr"]),
                markers[name],
                fillstyle="none",
                markersize=9,
                label=f"{name} {costs[name]:.3f}",
            )
    ax.plot([-4, 4], [-4, 4], color="grey", linestyle=":", linewidth=1)
    ticks = [t for t in DET_TICKS if DET_CLIP <= t <= 1 - DET_CLIP]
    limits = probit(np.array([0.0005, 0.9995]))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(probit(np.array(ticks)), labels=[_percent(t) for t in ticks])
    ax.set(
        xlim=limits,
        ylim=limits,
        xlabel="false alarm rate (spoof accepted)",
        ylabel="miss rate (bona fide rejected)",
        title=f"DET (normal-deviate axes), {title}",
    )
    ax.tick_params(axis="x", labelrotation=90)
    ax.grid(True, linewidth=0.4)
    ax.legend(loc="upper right")
    save(fig, "det.png")

    report = metrics.binary_report(test_targets, test_scores, threshold)
    matrix = np.asarray(report["confusion_matrix"])
    labels = report["confusion_matrix_labels"]
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    for (row, col), count in np.ndenumerate(matrix):
        dark = count > matrix.max() / 2
        ax.text(col, row, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks([0, 1], labels=labels)
    ax.set_yticks([0, 1], labels=labels)
    ax.set(
        xlabel="predicted",
        ylabel="actual",
        title=f"confusion at threshold {threshold:.4g}",
    )
    save(fig, "confusion.png")

    edges, _, _ = score_histogram(test_scores, test_targets)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, values in (("bonafide", bona), ("spoof", spoof)):
        weights = np.full(values.size, 1.0 / values.size)
        ax.hist(values, bins=edges, weights=weights, alpha=0.55, label=name)
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set(
        xlabel="score (higher = more bona fide)",
        ylabel="share of the class",
        title=f"scores per class, {title}",
    )
    ax.legend()
    save(fig, "score_histogram.png")

    curves = reliability_curves(test_scores, test_targets, decision)
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    for suffix, name, marker in (("_raw", "raw logit as LLR", "x"), ("", "calibrated", "o")):
        curve = curves[suffix]
        filled = curve.counts > 0
        ece = curve.expected_calibration_error()
        ax.plot(
            curve.mean_predicted[filled],
            curve.observed_fake_rate[filled],
            marker=marker,
            label=f"{name} (ECE {ece:.3f})",
        )
    share = float(np.mean(test_targets == 0))
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel=f"predicted P(spoof) at the split's spoof share {share:.2f}",
        ylabel="observed fake rate",
        title=f"reliability, {title}",
    )
    ax.legend(loc="upper left")
    save(fig, "reliability.png")
    return written


def baseline_numbers(baseline_path: Path | None) -> dict[str, Any]:
    """The baseline's keys for reports/metrics.json (None when skipped or not run)."""
    report = read_json(baseline_path, "the baseline") if baseline_path else {}
    return {key: report.get(source) for key, source in BASELINE_METRICS_KEYS.items()}


def shortcut_numbers(
    test_scores: np.ndarray, test_manifest: Any, shortcuts_path: Path | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """(metrics.json's `test_shortcut_spearman`, flat MLflow metrics of it and of the audit).

    The correlation of the test scores with each cue column of the test manifest, per view;
    empty where the dataset has no cues (pictures, a dataset from before the audit).
    """
    from deepfake_audio.dataset.shards import cue_table

    report: dict[str, Any] = {}
    flat: dict[str, float] = {}
    views = cue_table(test_manifest)
    if views:
        correlations = shortcuts.score_correlations(test_scores, views)
        report["test_shortcut_spearman"] = correlations
        for view, table in correlations.items():
            prefix = "shortcut_spearman" if view == "raw" else f"shortcut_spearman_{view}"
            flat.update({f"{prefix}.test.{k}": v for k, v in table.items() if v is not None})
    if shortcuts_path is not None and Path(shortcuts_path).exists():
        flat.update(shortcuts.flat_eers(read_json(shortcuts_path, "the shortcut audit")))
    return report, flat


def run(
    params: Params,
    dataset_dir: Path,
    model_path: Path,
    run_info_path: Path,
    metrics_path: Path,
    plots: Path,
    baseline_path: Path | None = None,
    shortcuts_path: Path | None = None,
) -> dict[str, Any]:
    import tempfile

    import mlflow

    from deepfake_audio.dataset.shards import SpectrogramDataset
    from deepfake_audio.models import network
    from deepfake_audio.ops import runtime, tracking
    from deepfake_audio.stages import xcorpus as heldout

    run_info = read_json(run_info_path, "the training run")
    # The calibration and threshold the model serves; a run.json from before calibration
    # has none: the validation EER threshold and the raw logit, as then.
    decision = Decision.from_dict(run_info["decision"]) if run_info.get("decision") else None
    baseline = baseline_numbers(baseline_path)
    tracking.connect(params.mlflow.experiment_name)
    runtime.configure(params.seed)
    data = SpectrogramDataset(dataset_dir)
    model = network.load(model_path)
    batch = params.tune.batch_size
    val_scores = scores_for(model, data, "validation", batch)
    test_scores = scores_for(model, data, "test", batch)
    test_manifest = data.manifest("test")
    test_targets = test_manifest["target"].to_numpy()
    summary = summarise(
        val_scores,
        data.labels("validation"),
        test_scores,
        test_targets,
        test_manifest["attack"].astype(str).to_numpy(),
        train_attacks=data.manifest("train")["attack"].astype(str).to_numpy(),
        decision=decision,
    )
    summary["synthetic_demo_corpus"] = params.data.source == "demo" and not params.data.corpora
    summary.update(baseline)
    shortcut_report, shortcut_flat = shortcut_numbers(test_scores, test_manifest, shortcuts_path)
    summary.update(shortcut_report)
    # Held-out corpora (data.corpora roles select and eval): each scored alone (stages.xcorpus).
    held = heldout.scored(data, lambda split: scores_for(model, data, split, batch))
    held_report = heldout.report(held, decision)
    summary.update(
        heldout.metrics_entries(
            held_report, _optional_json(baseline_path), _optional_json(shortcuts_path)
        )
    )
    write_json(metrics_path, summary)
    detail_path = Path(metrics_path).with_name("evaluation.json")
    threshold = decision.threshold if decision is not None else summary["threshold"]
    evaluation = details(threshold, test_scores, test_targets)
    if held_report:
        evaluation["xcorpus"] = held_report  # with the EER of every system of every corpus
    write_json(detail_path, evaluation)
    written = write_plots(plots, test_scores, test_targets, threshold, decision)
    written.append(heldout.write_det(plots, held))

    flat = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    flat.update({f"test_eer_{a}": v for a, v in summary["test_per_attack_eer"].items()})
    flat["notebook_style_test_accuracy"] = summary["notebook_style"]["test_accuracy"]
    flat.update(shortcut_flat)
    flat.update(heldout.flat(held_report))
    with tempfile.TemporaryDirectory(prefix="deepfake-audio-figures-") as figures:
        pictures = write_figures(
            Path(figures), test_scores, test_targets, threshold, decision=decision
        )
        if held is not None:
            pictures.append(heldout.write_det_figure(Path(figures), held, held_report))
        with mlflow.start_run(run_id=run_info["run_id"]):
            mlflow.log_metrics(flat)
            mlflow.log_artifact(str(metrics_path), artifact_path="evaluation")
            mlflow.log_artifact(str(detail_path), artifact_path="evaluation")
            for path in [*written, *pictures]:
                mlflow.log_artifact(str(path), artifact_path="evaluation/plots")
            if shortcuts_path is not None and Path(shortcuts_path).exists():
                mlflow.log_artifact(str(shortcuts_path), artifact_path="dataset")
            mlflow.set_tag("test_eer", f"{summary['test_eer']:.6f}")
            from deepfake_audio.serving import saliency  # which regions drove the score

            saliency.log_examples(model, data, test_scores, threshold)
    demo = " (synthetic demo corpus)" if summary["synthetic_demo_corpus"] else ""
    rule = decision.rule if decision is not None else "validation_eer"
    print(
        f"test EER {summary['test_eer']:.2%}{demo}; minDCF {summary['test_min_dcf']:.4f}, "
        f"actDCF {summary['test_act_dcf_raw']:.4f} raw -> {summary['test_act_dcf']:.4f} "
        f"calibrated, Cllr {summary['test_cllr_raw']:.4f} -> {summary['test_cllr']:.4f} bits "
        f"(minCllr {summary['test_min_cllr']:.4f}); accuracy {summary['test_accuracy']:.2%} at "
        f"the served threshold {threshold:.4f} ({rule})",
        file=sys.stderr,
    )
    if held_report:
        print(heldout.summary_line(held_report), file=sys.stderr)
    return summary


def _optional_json(path: Path | None) -> dict[str, Any]:
    """A report another stage wrote, or {} where there is none (not run, skipped)."""
    return read_json(path, str(path)) if path is not None and Path(path).exists() else {}
