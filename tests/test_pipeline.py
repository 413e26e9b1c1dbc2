"""End to end: real `dvc repro` and `dvc exp run` in a temporary git repository,
against a real MLflow server; asserts on what the server and the reports hold."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchmarks.quality import experiments

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env
from deepfake_audio.dsp.cues import CUE_NAMES

pytestmark = pytest.mark.slow

SMALL = {
    "seed": 7,
    "data": {"demo": {"train_clips": 48, "validation_clips": 24, "test_clips": 32}},
    "features": {"clip_seconds": 1.0, "workers": 2},  # the default kind: lfcc
    "tune": {"max_trials": 2, "epochs": 2, "batch_size": 16},
    "train": {"epochs": 2},
}


class Pipeline:
    def __init__(self, root: Path, env: dict[str, str], experiment: str, model_name: str) -> None:
        self.root, self.env, self.experiment, self.model_name = root, env, experiment, model_name

    def run(self, *cmd: str, check: bool = True) -> str:
        return run_command(list(cmd), self.root, self.env, check=check)

    def json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Pipeline:
    """A copy of the project in a fresh git repository, with small params, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    experiment, model_name = f"e2e-{tag}", f"e2e-model-{tag}"
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {
            **SMALL,
            "mlflow": {"experiment_name": experiment},
            "registry": {"model_name": model_name},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(mlflow_server)
    p = Pipeline(root, env, experiment, model_name)
    commit_project(root, env)
    p.first_repro = p.run("dvc", "repro")
    return p


def _client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def test_repro_writes_reports(pipeline: Pipeline) -> None:
    metrics = pipeline.json("reports/metrics.json")
    for key in ("test_eer", "test_accuracy", "threshold", "test_min_dcf", "test_roc_auc"):
        assert key in metrics, key
    assert 0.0 <= metrics["test_eer"] <= 1.0
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["synthetic_demo_corpus"] is True
    details = pipeline.json("reports/evaluation.json")
    assert sum(map(sum, details["confusion_matrix"]["matrix"])) == 32
    assert set(metrics["test_per_attack_eer"]) >= {"A05"}  # the attack training never saw
    hparams = pipeline.json("models/best_hparams.json")
    assert hparams["trials_completed"] == 2
    # The default architecture (tdnn) and its own search space.
    assert set(hparams["values"]) == {"channels", "dense_units", "learning_rate", "optimizer"}
    assert (pipeline.root / "models/model.keras").stat().st_size > 0
    dataset = pipeline.json("reports/dataset.json")
    assert dataset["per_split"]["train"] == {"bonafide": 24, "spoof": 24}
    # The LFCC-GMM baseline, on the same test clips, in the same report.
    report = pipeline.json("reports/baseline.json")
    assert report["test_clips"] == metrics["test_clips"]
    assert metrics["baseline_lfcc_gmm_test_eer"] == report["test_eer"]
    assert metrics["baseline_lfcc_gmm_test_min_dcf"] == report["test_min_dcf"]
    assert 0.0 <= report["test_eer"] <= 1.0
    assert "LFCC-GMM baseline test EER" in pipeline.first_repro
    plots = ("roc.csv", "det.csv", "det_points.csv", "confusion.csv", "score_histogram.csv")
    for name in (*plots, "reliability_raw.csv", "reliability_calibrated.csv"):
        assert (pipeline.root / "reports/plots" / name).stat().st_size > 0
    shown = pipeline.run("dvc", "plots", "show", "--json")
    titles = ("ROC", "DET", "Confusion at the served threshold", "Test score histograms")
    for title in (*titles, "Reliability"):
        assert title in shown, title
    # ASVspoof 5's numbers, before (raw logit as LLR) and after the validation calibration.
    for key in ("test_act_dcf", "test_cllr"):
        assert key in metrics and f"{key}_raw" in metrics and key in report, key
        assert metrics[f"baseline_lfcc_gmm_{key}"] == report[key]
    assert metrics["test_act_dcf"] >= metrics["test_min_dcf"]  # same DET, fixed threshold
    assert 0.0 <= metrics["test_min_cllr"] <= min(1.0, metrics["test_cllr"]) + 1e-6
    run_info = pipeline.json("models/run.json")
    decision = run_info["decision"]
    # Two epochs on 24 validation clips may rank validation backwards (a logistic slope
    # <= 0): then the model is served uncalibrated, and says why.
    assert metrics["calibration"]["method"] == decision["method"]
    assert decision["method"] == "logistic" or "slope" in " ".join(decision["warnings"])
    assert metrics["calibration"]["threshold_rule"] == decision["threshold_rule"] == "bayes"
    assert metrics["threshold"] == pytest.approx(run_info["threshold"], abs=1e-6)
    # The dataset stage's shortcut audit, and the test scores' rank correlation with each cue.
    audit = pipeline.json("reports/shortcuts.json")
    assert set(audit["splits"]) == {"train", "validation", "test"} and "flagged" in audit
    for split in audit["splits"].values():
        for view in ("raw", "as_fed"):
            assert set(split[view]) == set(CUE_NAMES)
            assert all(0.0 <= row["eer"] <= 1.0 for row in split[view].values())
    lock = yaml.safe_load((pipeline.root / "dvc.lock").read_text())
    assert "reports/shortcuts.json" in {o["path"] for o in lock["stages"]["dataset"]["outs"]}
    assert set(metrics["test_shortcut_spearman"]) == {"raw", "as_fed"}
    assert set(metrics["test_shortcut_spearman"]["raw"]) == set(CUE_NAMES)


def test_mlflow_holds_search_trials_and_model(pipeline: Pipeline, mlflow_server: str) -> None:
    client = _client(mlflow_server)
    experiment = client.get_experiment_by_name(pipeline.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    parents = [
        r
        for r in runs
        if r.data.tags.get("stage") == "tune" and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    lock = yaml.safe_load((pipeline.root / "dvc.lock").read_text())
    dvc_digest = next(
        o["md5"] for o in lock["stages"]["dataset"]["outs"] if o["path"] == "data/spectrograms"
    )
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"trial_id", "tuner_id"} <= set(child.data.tags)
        assert {"channels", "dense_units", "learning_rate", "optimizer"} <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_eer")
        assert len(history) >= 1 and [m.step for m in history] == sorted(m.step for m in history)
        assert "objective" in child.data.metrics
        models = client.search_logged_models(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"source_run_id = '{child.info.run_id}'",
        )
        assert len(models) == 1
        assert child.data.tags["dataset_digest"] == dvc_digest  # the tag is DVC's own hash
    train = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert len(train) == 1
    assert train[0].data.metrics["test_eer"] == pytest.approx(
        pipeline.json("reports/metrics.json")["test_eer"]
    )
    assert train[0].inputs.dataset_inputs, "the dataset is logged as an MLflow dataset input"
    assert train[0].data.metrics["baseline_lfcc_gmm_test_eer"] == pytest.approx(
        pipeline.json("reports/baseline.json")["test_eer"]
    )
    plots = {a.path for a in client.list_artifacts(train[0].info.run_id, "evaluation/plots")}
    for name in ("roc.png", "det.png", "confusion.png", "score_histogram.png", "det.csv"):
        assert f"evaluation/plots/{name}" in plots, name
    assert "evaluation/plots/reliability.png" in plots
    # Saliency of the most confidently right and wrong test clips, per attack (saliency.py).
    pictures = {
        a.path.rsplit("/", 1)[-1]
        for a in client.list_artifacts(train[0].info.run_id, "evaluation/saliency")
    }
    assert any(p.startswith("bonafide_right_") for p in pictures), pictures
    assert any(p.startswith("A05_") for p in pictures) and len(pictures) <= 12, pictures
    for key in ("test_act_dcf", "test_act_dcf_raw", "test_cllr", "test_cllr_raw"):
        assert key in train[0].data.metrics, key
    # The shortcut audit: an artifact of the model's run, and its EERs as flat metrics.
    logged = {a.path for a in client.list_artifacts(train[0].info.run_id, "dataset")}
    assert "dataset/shortcuts.json" in logged
    audit = pipeline.json("reports/shortcuts.json")
    assert train[0].data.metrics["shortcut_eer.test.rms"] == pytest.approx(
        audit["splits"]["test"]["raw"]["rms"]["eer"]
    )
    assert "shortcut_eer_as_fed.train.noise_floor" in train[0].data.metrics
    assert train[0].data.params["calibration.method"] == "logistic"
    baseline = [r for r in runs if r.data.tags.get("stage") == "baseline"]
    assert len(baseline) == 1
    assert baseline[0].data.tags["dataset_digest"] == dvc_digest
    assert baseline[0].data.metrics["test_eer"] == pytest.approx(
        pipeline.json("reports/baseline.json")["test_eer"]
    )
    for run in runs:
        assert run.data.tags.get("git_commit", "unknown") != "unknown"
        assert "dvc_exp_name" in run.data.tags


def test_registry_version_and_aliases(pipeline: Pipeline, mlflow_server: str) -> None:
    client = _client(mlflow_server)
    report = pipeline.json("reports/registry.json")
    assert report["model_name"] == pipeline.model_name and report["version"] == 1
    version = client.get_model_version(pipeline.model_name, "1")
    assert set(version.aliases) == {"champion", "challenger"}
    assert {"test_eer", "git_commit", "dvc_exp_name", "dataset_digest"} <= set(version.tags)
    assert {"test_act_dcf", "test_cllr", "test_act_dcf_raw", "test_cllr_raw"} <= set(version.tags)
    assert version.tags["threshold_rule"] == "bayes"
    assert version.tags["promote_metric"] == "test_eer"
    assert "Bayes threshold for a spoof prior of 0.05" in version.description
    import mlflow

    import deepfake_audio.models.network  # noqa: F401 - registers tdnn's pooling layer, as serving does

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.keras.load_model(f"models:/{pipeline.model_name}@champion")
    assert model.input_shape[1:] == (60, 101, 1)  # 60 LFCC (20 + deltas) x 101 frames of 1 s


def test_the_champion_scores_audio_through_predict_in_a_fresh_process(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """`deepfake-audio predict` by alias, from a folder with no project in it: the new
    process must import tdnn's own layer itself to load the model in safe mode."""
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "upload.wav"
    rng = np.random.default_rng(1)
    sf.write(wav, (0.1 * rng.standard_normal(24000)).astype(np.float32), 22050)
    uri = f"models:/{pipeline.model_name}@champion"
    proc = subprocess.run(
        ["deepfake-audio", "predict", str(wav), "--model", uri, "--format", "json"],
        cwd=tmp_path,
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)
    assert row["error"] == "" and 0.0 <= float(row["fake_probability"]) <= 1.0


def test_second_repro_runs_nothing(pipeline: Pipeline) -> None:
    out = pipeline.run("dvc", "repro")
    assert "Running stage" not in out
    assert "up to date" in out


def test_editing_the_metrics_reruns_only_what_reports_them(pipeline: Pipeline) -> None:
    """dvc.yaml's code deps are module by module: the evaluation metrics are no dependency of
    the dataset, the search or the final fit, so editing them does not rebuild those."""
    metrics = pipeline.root / "src/deepfake_audio/scoring/metrics.py"
    original = metrics.read_text()
    try:
        metrics.write_text(original + "\n# an edit\n")
        changed = json.loads(pipeline.run("dvc", "status", "--json"))
        assert {"baseline", "evaluate"} <= set(changed), changed
        assert not {"dataset", "tune", "train"} & set(changed), changed
    finally:
        metrics.write_text(original)
    assert json.loads(pipeline.run("dvc", "status", "--json")) == {}


def test_exp_run_reuses_dataset_and_tags_runs(pipeline: Pipeline, mlflow_server: str) -> None:
    out = pipeline.run("dvc", "exp", "run", "-S", "tune.max_trials=3")
    assert "Running stage 'dataset'" not in out
    assert "Running stage 'baseline'" not in out  # same data, same baseline params
    assert "Running stage 'tune'" in out
    shown = experiments(json.loads(pipeline.run("dvc", "exp", "show", "--json")))
    found = [
        name
        for name, exp in shown.items()
        if exp["params"].get("tune", {}).get("max_trials") == 3 and "test_eer" in exp["metrics"]
    ]
    assert found, "the experiment and its metrics are in `dvc exp show --json`"
    name = found[0]
    client = _client(mlflow_server)
    experiment = client.get_experiment_by_name(pipeline.experiment)
    tagged = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'"
    )
    stages = {r.data.tags.get("stage") for r in tagged}
    assert {"tune", "train"} <= stages
    # The search resumed from the persisted tuner state: 2 old trials + 1 new one.
    parents = [
        r
        for r in tagged
        if r.data.tags.get("stage") == "tune" and "mlflow.parentRunId" not in r.data.tags
    ]
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'",
    )
    assert len(children) == 3
    version = client.get_model_version(pipeline.model_name, "2")
    assert "challenger" in version.aliases
    assert version.tags["dvc_exp_name"] == name


def test_the_champion_draws_a_timeline_through_predict(pipeline: Pipeline, tmp_path: Path) -> None:
    """`predict --timeline` by alias in a fresh process: the windows, the ranges and the
    PNG. (This champion saw 48 clips for two epochs: its scores are flat, so where the
    fake is is tests/test_timeline.py's question, with the project's default detector.)"""
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "call.wav"
    rng = np.random.default_rng(2)
    sf.write(wav, (0.1 * rng.standard_normal(20 * 22050)).astype(np.float32), 22050)
    uri = f"models:/{pipeline.model_name}@champion"
    command = ["deepfake-audio", "predict", str(wav), "--model", uri, "--timeline"]
    proc = subprocess.run(
        [*command, "--format", "json", "--plot", str(tmp_path)],
        cwd=tmp_path,
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = json.loads(proc.stdout)
    assert found["duration_s"] == pytest.approx(20.0, abs=0.01)
    assert found["window_s"] == 1.0 and found["hop_s"] == 0.125  # SMALL's 1 s clips
    assert len(found["windows"]) == 153 and found["error"] == ""
    assert found["label"] in {"real", "fake"} and 0 <= found["fake_probability"] <= 1
    assert (tmp_path / "call.timeline.png").stat().st_size > 10_000
