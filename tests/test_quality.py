"""`python -m benchmarks quality`: seeds of the pipeline through `dvc queue`, summarised."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from benchmarks import quality

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env


def test_summary_is_mean_sample_std_and_a_t_interval() -> None:
    s = quality.summary([0.2, 0.3, 0.4])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.3)
    assert s["std"] == pytest.approx(0.1)  # sample (n - 1) standard deviation, not 0.0816
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert s["ci95"] == pytest.approx([0.3 - half, 0.3 + half], abs=1e-6)
    assert quality.summary([0.25])["std"] is None and quality.summary([])["mean"] is None


def test_aggregate_groups_by_architecture_and_skips_missing_figures() -> None:
    runs = [
        {"architecture": "a", "seed": 1, "metrics": {"test_eer": 0.1, "validation_eer": 0.2}},
        {"architecture": "a", "seed": 0, "metrics": {"test_eer": 0.3, "validation_eer": 0.4}},
        {"architecture": "b", "seed": 0, "metrics": {"test_eer": 0.5}},
    ]
    out = quality.aggregate(runs)
    assert out["a"]["seeds"] == [0, 1] and out["a"]["test_eer"]["mean"] == pytest.approx(0.2)
    assert out["b"]["validation_eer"]["n"] == 0 and out["b"]["test_eer"]["n"] == 1


TINY = {
    "data": {"demo": {"train_clips": 12, "validation_clips": 6, "test_clips": 6}},
    "features": {"clip_seconds": 0.5, "n_mels": 16, "workers": 1},
    "tune": {"max_trials": 1, "epochs": 1, "batch_size": 6},
    "train": {"epochs": 1},
    "baseline": {"components": 2, "max_frames": 2000},
}


def test_data_paths_outside_the_project_are_made_absolute_for_the_queue(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    got = quality.outside_paths_made_absolute(
        [
            "data.path=../shared/for-sample",
            "data.path=data/raw",
            "data.path=/abs/corpus",
            "features.kind=logmel",
        ],
        project,
    )
    assert got == [
        f"data.path={(tmp_path / 'shared' / 'for-sample').resolve()}",
        "data.path=data/raw",
        "data.path=/abs/corpus",
        "features.kind=logmel",
    ]


@pytest.mark.slow
def test_quality_runs_seeds_as_parallel_queued_experiments(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: str
) -> None:
    """`make quality`'s engine, and `dvc queue start -j 2` with it: two seeds queued as DVC
    experiments, run by two queue workers at once in their own workspaces (.dvc/tmp/exps),
    both logging to the one MLflow server that the workers inherit from the environment of
    `dvc queue start` (MLFLOW_TRACKING_URI), each run tagged with its own experiment name."""
    root = tmp_path_factory.mktemp("quality-repo")
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    experiment = f"quality-{tag}"
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {
            **TINY,
            "mlflow": {"experiment_name": experiment},
            "registry": {"model_name": f"quality-model-{tag}"},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(mlflow_server)
    # The benchmarks package lives in the project root, not in the installed package.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    commit_project(root, env)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "quality", "--seeds", "3,4", "--jobs", "2"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    report = json.loads((root / "reports" / "quality.json").read_text())
    arch = params["model"]["architecture"]
    figures = report["architectures"][arch]
    assert figures["seeds"] == [3, 4] and report["failed"] == []
    assert figures["test_eer"]["n"] == 2 and figures["validation_eer"]["n"] == 2
    assert figures["baseline_lfcc_gmm_test_eer"]["n"] == 2
    seeds = sorted(run["seed"] for run in report["runs"])
    assert seeds == [3, 4]
    for run in report["runs"]:
        assert 0.0 <= run["metrics"]["test_eer"] <= 1.0
    assert report["synthetic_demo_corpus"] is True
    assert f"{arch}: validation EER" in proc.stdout

    # Both experiments are in `dvc exp show`, with their own seed and metrics ...
    shown = quality.experiments(
        json.loads(run_command(["dvc", "exp", "show", "--json"], root, env, timeout=300))
    )
    names = {run["name"]: run["seed"] for run in report["runs"]}
    for name, seed in names.items():
        assert name in shown, f"{name} missing from dvc exp show: {sorted(shown)}"
        assert shown[name]["params"]["seed"] == seed
    # ... and on the one MLflow server, each stage's runs tagged with the experiment's name.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "the queued stages logged to the session's MLflow server"
    spans = []
    for name in names:
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'"
        )
        stages = {r.data.tags.get("stage") for r in runs}
        assert {"tune", "train", "baseline"} <= stages, (name, stages)
        train = [r for r in runs if r.data.tags.get("stage") == "train"]
        assert len(train) == 1
        assert train[0].data.metrics["test_eer"] == pytest.approx(
            shown[name]["metrics"]["test_eer"]
        )
        spans.append(
            (min(r.info.start_time for r in runs), max(r.info.end_time or 0 for r in runs))
        )
    # Two workers: the two experiments' runs overlap in time (one worker would serialise them).
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, spans
