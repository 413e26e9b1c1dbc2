"""Parallel experiments: `dvc exp run --queue` + `dvc queue start -j 2` against one MLflow server.

A temporary git + DVC repository (as in test_pipeline.py) with tiny params queues two
experiments that differ in `seed`; two DVC queue workers run them at once, each in its
own temporary workspace (.dvc/tmp/exps). Both must show up, with metrics, in
`dvc exp show`, and both must have logged their runs to the one MLflow server, tagged
with their own experiment name. The workers inherit the environment of
`dvc queue start`, which is how MLFLOW_TRACKING_URI reaches them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from benchmarks.quality import experiments

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env

pytestmark = pytest.mark.slow

TINY = {
    "seed": 5,
    "data": {"demo": {"train_clips": 12, "validation_clips": 6, "test_clips": 6}},
    "features": {"clip_seconds": 0.5, "n_mels": 16, "workers": 1},
    "tune": {"max_trials": 2, "epochs": 1, "batch_size": 6},
    "train": {"epochs": 1},
    "baseline": {"components": 2, "max_frames": 2000},
}


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    return run_command(cmd, cwd, env, timeout=300)


def test_two_queued_experiments_run_in_parallel(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: str
) -> None:
    root = tmp_path_factory.mktemp("queue-repo")
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    experiment, model_name = f"queue-{tag}", f"queue-model-{tag}"
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {**TINY, "mlflow": {"experiment_name": experiment}, "registry": {"model_name": model_name}},
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Exported before `dvc queue start`: the queue workers, and every stage they run
    # in their temporary workspaces, inherit MLFLOW_TRACKING_URI.
    env = stage_env(mlflow_server)
    commit_project(root, env)

    names = [f"q{seed}-{tag}" for seed in (1, 2)]
    for seed, name in zip((1, 2), names, strict=True):
        out = _run(
            ["dvc", "exp", "run", "--queue", "-n", name]
            + ["-S", "tune.max_trials=1", "-S", f"seed={seed}"],
            root,
            env,
        )
        assert "Queued experiment" in out, out
    started = time.monotonic()
    # The workers are daemons that keep the output streams they inherit: to a file, not a
    # pipe, or this call would wait for them to finish.
    with open(root / "queue-start.log", "w") as log:
        code = subprocess.call(
            ["dvc", "queue", "start", "-j", "2"], cwd=root, env=env, stdout=log, stderr=log
        )
    assert code == 0, (root / "queue-start.log").read_text()
    done = False
    try:
        deadline = started + 1500
        while not done:
            status = _run(["dvc", "queue", "status"], root, env)
            rows = [line for line in status.splitlines() if any(n in line for n in names)]
            done = len(rows) == 2 and all(("Success" in r or "Failed" in r) for r in rows)
            assert done or time.monotonic() < deadline, f"queue not done in 25 min:\n{status}"
            time.sleep(0 if done else 10)
    finally:
        print(f"two queued experiments: {time.monotonic() - started:.0f} s")
        if not done:  # leave no worker running behind the test
            subprocess.run(
                ["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True
            )
    failed = [n for n in names if any(n in r and "Failed" in r for r in rows)]
    if failed:
        logs = "\n".join(
            subprocess.run(
                ["dvc", "queue", "logs", n], cwd=root, env=env, capture_output=True, text=True
            ).stdout[-4000:]
            for n in failed
        )
        raise AssertionError(f"failed experiments:\n{status}\n{logs}")

    shown = experiments(json.loads(_run(["dvc", "exp", "show", "--json"], root, env)))
    for seed, name in zip((1, 2), names, strict=True):
        assert name in shown, f"{name} missing from dvc exp show: {sorted(shown)}"
        assert shown[name]["params"]["seed"] == seed
        assert shown[name]["params"]["tune"]["max_trials"] == 1
        assert 0.0 <= shown[name]["metrics"]["test_eer"] <= 1.0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "the queued stages logged to the session's MLflow server"
    for name in names:
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'"
        )
        stages = {r.data.tags.get("stage") for r in runs}
        assert {"tune", "train"} <= stages, (name, stages)
        train = [r for r in runs if r.data.tags.get("stage") == "train"]
        assert len(train) == 1 and "test_eer" in train[0].data.metrics
        assert train[0].data.metrics["test_eer"] == pytest.approx(
            shown[name]["metrics"]["test_eer"]
        )
