"""`tune.workers: 2` runs keras-tuner's own distributed mode: a chief and two workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from deepfake_audio.config.params import parse_params
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

pytestmark = pytest.mark.slow


def _setup(tmp_path: Path, tune: dict, **features: object) -> tuple[Path, dict]:
    raw = {
        "seed": 3,
        "data": {"demo": {"train_clips": 24, "validation_clips": 12, "test_clips": 8}},
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2, **features},
        "model": {"architecture": "compact_cnn"},
        "tune": {"max_trials": 4, "epochs": 2, "batch_size": 8, **tune},
        "mlflow": {"experiment_name": f"distributed-{uuid.uuid4().hex[:8]}"},
    }
    params = parse_params(raw)
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _tune(tmp_path: Path, params_path: Path, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "DEEPFAKE_AUDIO_VERBOSE": "0"}
    cmd = [sys.executable, "-m", "deepfake_audio.cli", "--params", str(params_path), "tune"]
    cmd += ["--dataset", str(tmp_path / "spec"), "--tuner-dir", str(tmp_path / "tuner")]
    cmd += ["--out", str(tmp_path / "best.json")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def test_two_workers_share_one_search(tmp_path: Path, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    params_path, raw = _setup(tmp_path, {"workers": 2})
    proc = _tune(tmp_path, params_path, mlflow_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "+ 2 workers" in proc.stderr
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["trials_completed"] == 4
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(raw["mlflow"]["experiment_name"])
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and best["mlflow_parent_run_id"] == parent[0].info.run_id
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    # Trials ran in two processes: keras-tuner's worker ids, as the oracle handed them out.
    assert {c.data.tags["tuner_id"] for c in children} == {"tuner0", "tuner1"}
    assert len({c.data.tags["trial_id"] for c in children}) == 4


def test_a_failing_search_process_stops_the_search_with_one_line(
    tmp_path: Path, mlflow_server: str
) -> None:
    # 8 mel bins through the notebook's CNN with 5x5 kernels: the second convolution has
    # nothing left to convolve, so every trial's model fails to build.
    space = {
        "filters_1": [8],
        "filters_2": [8],
        "kernel_size_1": [5],
        "kernel_size_2": [5],
        "dense_units": [8],
        "learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log"},
        "optimizer": ["adam"],
    }
    params_path, raw = _setup(
        tmp_path, {"workers": 2, "search_space": {"seed_cnn": space}}, n_mels=8
    )
    raw["model"] = {"architecture": "seed_cnn"}
    params_path.write_text(yaml.safe_dump(raw))
    proc = _tune(tmp_path, params_path, mlflow_server)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    # The chief builds a model first to learn the search space; it fails there, by name.
    assert last.startswith("deepfake-audio: error: tune: the keras-tuner chief exited early")
    assert "'seed_cnn' cannot be built for input (8, 51, 1)" in last
    assert "Traceback" not in proc.stderr
