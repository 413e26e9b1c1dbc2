"""The baseline stage: the classic LFCC-GMM spoofing countermeasure, on the CNN's own splits.

The CNN's test EER and minDCF are reported next to this one's, so every run shows where the
CNN stands against the field's standard baseline (ASVspoof 2015-2021) on the same clips:

1. The same clip list as the dataset stage (`deepfake_audio.sources.list_clips`), decoded,
   cropped and padded the same way, through the same `deepfake_audio.stages.dataset.build`, with
   only ``features.kind`` set to ``lfcc`` (20 coefficients + deltas + double deltas, 20 ms /
   10 ms frames, `features.lfcc.*`). The LFCC shards go to a temporary folder: the stage
   reruns only when the corpus or its params change, and rebuilding them takes seconds.
   The split contents are checked against the CNN's dataset (`data/spectrograms`), so the
   two systems are trained and scored on the same clips. When the CNN's own features are
   these (``features.kind: lfcc`` without augmentation), its shards are those very LFCC, and
   the stage reads them instead of computing them again (`reuses_cnn_features`).
2. Frames are standardised with the training split's per-coefficient mean and standard
   deviation (a global affine map; it does not change what a diagonal GMM can model, only
   keeps the covariance floor meaningful).
3. Two scikit-learn `GaussianMixture` models with diagonal covariances, one on the frames of
   bona fide training clips and one on those of spoofed ones, ``baseline.components``
   components each, with a variance floor (`REG_COVAR`) that keeps a component on repeated
   frames (silence, repeat-padding) from collapsing. Frames are subsampled (seeded,
   without replacement) to at most ``baseline.max_frames`` per class. The ASVspoof 2019 LA
   baseline used 512 components trained on every frame of the 25,380 training utterances;
   64 is what the small corpora here support and keeps the stage fast (about 20 s of EM
   CPU time on the demo corpus, the two classes fitted in parallel).
4. A clip's score is the mean frame log-likelihood under the bona fide model minus that
   under the spoof model (a log-likelihood ratio: higher = more bona fide, the convention of
   `deepfake_audio.scoring.metrics`), scored on the validation and test splits.
5. The numbers are those of the evaluate stage (`scoring.reporting.summarise`): test EER, minDCF,
   actDCF and Cllr (the scores are already LLRs: reported as they are, uncalibrated), minCllr,
   ROC AUC, per-attack EER, accuracy at the validation split's EER threshold. They go to
   `reports/baseline.json` (a DVC metrics file; evaluate copies the EER and minDCF into
   `reports/metrics.json`) and to an MLflow run tagged ``stage=baseline`` with the dataset
   digest of `data/spectrograms`, like the CNN's runs.

Spectrogram pictures (``data.source: images``) have no audio to compute LFCC from: the stage
then writes ``{"skipped": <reason>}`` and does not talk to MLflow.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.config.kinds import LFCC
from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_json
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.scoring.reporting import summarise

IMAGES_SKIPPED = (
    "data.source is images: spectrogram pictures have no audio to compute LFCC features from"
)
CLASSES = {"bonafide": 1, "spoof": 0}
# Variance floor added to every diagonal covariance, in standardised units (the features have
# unit variance). scikit-learn's default (1e-6) lets a component collapse onto repeated
# frames - silence, repeat-padding - and the fit fails; 1e-3 is 3 % of a standard deviation.
REG_COVAR = 1e-3


def lfcc_params(params: Params) -> Params:
    """`params` with ``features.kind: lfcc``: everything else (clips, crop, pad) unchanged.

    Without training augmentation: the classic baseline trains on the clips as they are (no
    codec copies), and this stage does not depend on the `augment` params.
    """
    return dataclasses.replace(
        params,
        features=dataclasses.replace(params.features, kind=LFCC.name),
        augment=dataclasses.replace(params.augment, enabled=False),
    )


def build_features(params: Params, out: Path) -> Any:
    """LFCC shards of the dataset stage's clips in `out`; returns the `SpectrogramDataset`."""
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import dataset

    lfcc = lfcc_params(params)
    clips = list_clips(lfcc)
    out = Path(out)
    # The dataset stage already reported bad files; this copy of its reports is thrown away.
    dataset.build(lfcc, clips, out / "lfcc", out / "reports")
    return SpectrogramDataset(out / "lfcc")


def reuses_cnn_features(params: Params) -> bool:
    """True when the dataset stage's shards already are what `build_features` would write.

    `lfcc_params` changes only the kind and switches augmentation off; with both already so,
    the same `dataset.build` on the same clips gives the same shards, so building them again
    would only cost time (28 s of the demo's 5-minute budget).
    """
    return params.features.feature_kind is LFCC and not params.augment.enabled


def check_same_clips(lfcc: Any, spectrograms: Any) -> None:
    """Fail unless both datasets hold the same clips in every split (UserError otherwise)."""
    from deepfake_audio.sources import SPLITS
    from deepfake_audio.stages.xcorpus import heldout_splits

    for split in (*SPLITS, *heldout_splits(spectrograms)):
        ours = list(lfcc.manifest(split)["clip_id"].astype(str))
        manifest = spectrograms.manifest(split)
        if "copy_of" in manifest:  # the CNN's codec copies of training clips are not clips
            manifest = manifest[manifest["copy_of"].astype(str) == ""]
        theirs = list(manifest["clip_id"].astype(str))
        if sorted(ours) != sorted(theirs):
            extra = sorted(set(ours) ^ set(theirs))
            example = f" (e.g. {extra[0]})" if extra else ""
            raise UserError(
                f"baseline: the LFCC features of the {split} split hold {len(ours)} clips, the "
                f"CNN's dataset {len(theirs)}{example}; rerun `dvc repro dataset baseline`"
            )


def _frames(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(clips, coefficients, frames) float16 -> (clips * frames, coefficients) standardised."""
    x = (x.astype(np.float32) - mean[None, :, None]) / std[None, :, None]
    return np.ascontiguousarray(x.transpose(0, 2, 1).reshape(-1, x.shape[1]))


def training_frames(data: Any, max_frames: int, seed: int) -> dict[str, np.ndarray]:
    """Standardised training frames per class, at most `max_frames` each (seeded subsample).

    Reads one shard at a time, so memory is the chosen frames, not the split.
    """
    manifest = data.manifest("train").sort_values(["shard", "row"])
    n_frames = int(data.feature_shape[-1])
    rng = np.random.default_rng(seed)
    mean, std = data.mean, data.std
    chosen: dict[str, dict[int, list[np.ndarray]]] = {}
    for label, target in CLASSES.items():
        rows = manifest[manifest["target"] == target][["shard", "row"]].to_numpy()
        total = len(rows) * n_frames
        picks = np.sort(rng.choice(total, size=min(total, max_frames), replace=False))
        clip, frame = picks // n_frames, picks % n_frames
        per_shard: dict[int, list[np.ndarray]] = {}
        for shard in np.unique(rows[clip, 0]):
            here = rows[clip, 0] == shard
            per_shard[int(shard)] = [rows[clip[here], 1], frame[here]]
        chosen[label] = per_shard
    out: dict[str, list[np.ndarray]] = {label: [] for label in CLASSES}
    for shard, path in enumerate(data.shards("train")):
        wanted = {label: chosen[label].get(shard) for label in CLASSES}
        if not any(w is not None for w in wanted.values()):
            continue
        x = np.load(path, allow_pickle=False)
        for label, picked in wanted.items():
            if picked is None:
                continue
            row, frame = picked
            values = x[row, :, frame].astype(np.float32)  # (picked, coefficients)
            out[label].append((values - mean) / std)
    return {label: np.concatenate(parts) for label, parts in out.items()}


def _fit_one(task: tuple[np.ndarray, int, int]) -> Any:
    """Runs in a worker process: one diagonal-covariance GMM, single-threaded BLAS."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    frames, components, seed = task
    with threadpool_limits(1):
        gmm = GaussianMixture(
            n_components=components,
            covariance_type="diag",
            reg_covar=REG_COVAR,
            init_params="k-means++",
            max_iter=100,
            random_state=seed,
        )
        # float64: in float32 the diagonal covariances of tight components can round to <= 0.
        return gmm.fit(np.asarray(frames, dtype=np.float64))


def fit_models(
    frames: dict[str, np.ndarray], components: int, seed: int, workers: int
) -> dict[str, Any]:
    """One GMM per class, fitted in parallel (EM on the two classes is independent)."""
    for label, values in frames.items():
        if len(values) < components:
            raise UserError(
                f"baseline: only {len(values)} {label} training frames for "
                f"baseline.components {components}; use fewer components or more data"
            )
    tasks = [(frames[label], components, seed) for label in CLASSES]
    try:
        if workers > 1:
            # An executor, as in the dataset stage: a worker that dies is an error here,
            # where a multiprocessing.Pool would wait for its result forever.
            with ProcessPoolExecutor(
                min(workers, len(tasks)), mp_context=multiprocessing.get_context("fork")
            ) as pool:
                models = list(pool.map(_fit_one, tasks))
        else:
            models = [_fit_one(task) for task in tasks]
    except ValueError as exc:  # scikit-learn's "ill-defined empirical covariance"
        reason = str(exc).split(". ")[0]
        raise UserError(
            f"baseline: fitting the GMMs failed ({reason}); try fewer baseline.components"
        ) from None
    except BrokenProcessPool:
        raise UserError(
            "baseline: a GMM worker process died (killed, perhaps for lack of memory); "
            "set features.workers to 1 or free memory, then rerun"
        ) from None
    return dict(zip(CLASSES, models, strict=True))


def clip_scores(models: dict[str, Any], data: Any, split: str) -> np.ndarray:
    """Mean frame log-likelihood ratio (bona fide - spoof) per clip, in manifest row order."""
    scores = []
    for x, _ in data.iter_shards(split):
        frames = _frames(x, data.mean, data.std).astype(np.float64)
        n_clips, n_frames = x.shape[0], x.shape[-1]
        llr = models["bonafide"].score_samples(frames) - models["spoof"].score_samples(frames)
        scores.append(llr.reshape(n_clips, n_frames).mean(axis=1))
    return np.concatenate(scores).astype(np.float64)


def _ordered_manifest(data: Any, split: str) -> Any:
    """The manifest in the order `iter_shards` yields clips (shard, then row)."""
    return data.manifest(split).sort_values(["shard", "row"]).reset_index(drop=True)


def evaluate(models: dict[str, Any], data: Any) -> dict[str, Any]:
    """The evaluate stage's numbers for the GMM scores (no notebook-style extras)."""
    val = _ordered_manifest(data, "validation")
    test = _ordered_manifest(data, "test")
    train_attacks = data.manifest("train")["attack"].astype(str).to_numpy()
    summary = summarise(
        clip_scores(models, data, "validation"),
        val["target"].to_numpy(),
        clip_scores(models, data, "test"),
        test["target"].to_numpy(),
        test["attack"].astype(str).to_numpy(),
        train_attacks=train_attacks,
    )
    summary.pop("notebook_style", None)
    return summary


def evaluate_heldout(models: dict[str, Any], data: Any) -> dict[str, Any]:
    """The held-out corpora's numbers (data.corpora roles select and eval), each corpus
    scored alone, as the evaluate stage scores the network; {} without such corpora."""
    from deepfake_audio.stages import xcorpus as heldout

    return heldout.report(heldout.scored(data, lambda split: clip_scores(models, data, split)))


def run(params: Params, spectrograms: Path, out: Path) -> dict[str, Any]:
    """Build LFCC, fit both GMMs, score, write `out` and log an MLflow run; returns the report."""
    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import xcorpus as heldout

    if params.data.source == "images":
        report: dict[str, Any] = {"skipped": IMAGES_SKIPPED}
        write_json(out, report)
        print(f"baseline skipped: {IMAGES_SKIPPED}", file=sys.stderr)
        return report

    import mlflow

    tracking.connect(params.mlflow.experiment_name)  # fail fast, before any work
    cnn_data = SpectrogramDataset(spectrograms)
    digest = tracking.directory_digest(spectrograms)
    workers = params.features.workers or os.cpu_count() or 1
    bp = params.baseline
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deepfake-audio-lfcc-") as tmp:
        if reuses_cnn_features(params):
            print(
                "baseline: LFCC features of the dataset stage (features.kind: lfcc)",
                file=sys.stderr,
            )
            data = cnn_data
        else:
            print("baseline: LFCC features of the dataset stage's clips", file=sys.stderr)
            data = build_features(params, Path(tmp))
        check_same_clips(data, cnn_data)
        features_seconds = time.monotonic() - started
        frames = training_frames(data, bp.max_frames, params.seed)
        fit_started = time.monotonic()
        models = fit_models(frames, bp.components, params.seed, workers)
        fit_seconds = time.monotonic() - fit_started
        report = evaluate(models, data)
        held = evaluate_heldout(models, data)
    report.update(
        {
            "components": bp.components,
            "frames_per_class": {label: int(len(f)) for label, f in frames.items()},
            "converged": {label: bool(m.converged_) for label, m in models.items()},
            "synthetic_demo_corpus": params.data.source == "demo" and not params.data.corpora,
        }
    )
    report.update(heldout.baseline_entries(held))
    write_json(out, report)

    flat = {
        k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    flat.update({f"test_eer_{a}": v for a, v in report["test_per_attack_eer"].items()})
    flat.update({f"em_iterations_{label}": int(m.n_iter_) for label, m in models.items()})
    flat["features_seconds"] = round(features_seconds, 2)
    flat["fit_seconds"] = round(fit_seconds, 2)
    flat.update(heldout.flat(held))
    tags = {**tracking.run_tags(digest, stage="baseline"), "baseline": "lfcc-gmm"}
    with mlflow.start_run(run_name="baseline-lfcc-gmm", tags=tags):
        mlflow.log_params(
            {
                "model": "lfcc-gmm",
                "components": bp.components,
                "covariance_type": "diag",
                "max_frames": bp.max_frames,
                "frames_bonafide": len(frames["bonafide"]),
                "frames_spoof": len(frames["spoof"]),
                "seed": params.seed,
                **{f"features.lfcc.{k}": v for k, v in params.section("features")["lfcc"].items()},
                "features.sample_rate": params.features.sample_rate,
                "features.clip_seconds": params.features.clip_seconds,
            }
        )
        tracking.log_dataset_input(spectrograms, digest, context="baseline")
        mlflow.log_metrics(flat)
        mlflow.log_artifact(str(out), artifact_path="baseline")
    print(
        f"baseline LFCC-GMM ({bp.components} components): test EER {report['test_eer']:.2%}, "
        f"minDCF {report['test_min_dcf']:.4f}, actDCF {report['test_act_dcf']:.4f}, "
        f"Cllr {report['test_cllr']:.4f} bits; features {features_seconds:.1f} s, "
        f"EM {fit_seconds:.1f} s",
        file=sys.stderr,
    )
    if held:
        print(heldout.summary_line(held, "baseline LFCC-GMM, held-out corpora"), file=sys.stderr)
    return report
