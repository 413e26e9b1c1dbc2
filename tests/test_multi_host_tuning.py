"""keras-tuner's distributed mode across hosts, as the README's "Several machines" runs it.

Two "hosts" are two folders that share nothing but the chief's address, the MLflow
server and the same dataset (each has its own copy, as `dvc pull` gives it): the chief
keeps the oracle's state in its own tuner folder, the worker writes its trial
checkpoints into its own. The README's commands, with its variables: a parent run made
by the one-liner, `KERASTUNER_TUNER_ID=chief` on one host, `KERASTUNER_TUNER_ID=tuner-b0`
on the other, then a plain `deepfake-audio tune` on the chief's host writes the best
hyperparameters from the finished search.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import free_port
from deepfake_audio.config.params import parse_params
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

pytestmark = pytest.mark.slow

TUNE = [sys.executable, "-m", "deepfake_audio.cli", "--params", "params.yaml", "tune"]
TUNE += ["--dataset", "spec", "--tuner-dir", "tuner", "--out", "best.json"]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the chief exited early:\n{log.read_text()[-3000:]}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise AssertionError(f"the chief never listened on {port}:\n{log.read_text()[-3000:]}")


def test_chief_and_worker_on_separate_hosts(tmp_path: Path, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    raw = {
        "seed": 11,
        "data": {"demo": {"train_clips": 12, "validation_clips": 6, "test_clips": 4}},
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 1},
        "model": {"architecture": "compact_cnn"},
        "tune": {"max_trials": 2, "epochs": 1, "batch_size": 6},
        "mlflow": {"experiment_name": f"multihost-{uuid.uuid4().hex[:8]}"},
    }
    params = parse_params(raw)
    chief_host, worker_host = tmp_path / "host-a", tmp_path / "host-b"
    dataset.build(params, list_clips(params), chief_host / "spec", chief_host / "reports")
    shutil.copytree(chief_host / "spec", worker_host / "spec")  # what `dvc pull` gives host b
    for host in (chief_host, worker_host):
        (host / "params.yaml").write_text(yaml.safe_dump(raw))  # the same commit everywhere
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "DEEPFAKE_AUDIO_VERBOSE": "0"}
    for key in [k for k in env if k.startswith("KERASTUNER_")]:
        del env[key]

    # The README's one-liner: one parent run for the whole search.
    experiment = raw["mlflow"]["experiment_name"]
    one_liner = (
        "import mlflow; mlflow.set_experiment('" + experiment + "'); "
        "print(mlflow.start_run(run_name='tune-multihost').info.run_id)"
    )
    parent = subprocess.run(
        [sys.executable, "-c", one_liner], env=env, capture_output=True, text=True, timeout=120
    )
    assert parent.returncode == 0, parent.stderr
    parent_id = parent.stdout.strip().splitlines()[-1]

    port = free_port()
    shared = {
        **env,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",  # the chief host's address, on every host
        "KERASTUNER_ORACLE_PORT": str(port),
        "DEEPFAKE_AUDIO_TUNE_PARENT_RUN": parent_id,
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("chief", "worker")}
    with open(logs["chief"], "w") as chief_log, open(logs["worker"], "w") as worker_log:
        chief = subprocess.Popen(
            TUNE,
            cwd=chief_host,
            env={**shared, "KERASTUNER_TUNER_ID": "chief", "CUDA_VISIBLE_DEVICES": ""},
            stdout=chief_log,
            stderr=subprocess.STDOUT,
        )
        worker = None
        try:
            _wait_for_port(port, chief, logs["chief"], timeout=600)
            worker = subprocess.Popen(
                TUNE,
                cwd=worker_host,
                env={**shared, "KERASTUNER_TUNER_ID": "tuner-b0"},
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
            assert worker.wait(timeout=1200) == 0, logs["worker"].read_text()[-4000:]
            assert chief.wait(timeout=300) == 0, logs["chief"].read_text()[-4000:]
        finally:
            for proc in (chief, worker):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()

    # The oracle's state is on the chief's host, the trial checkpoints on the worker's.
    (project,) = [p for p in (chief_host / "tuner").iterdir() if p.is_dir()]
    assert (project / "oracle.json").is_file()
    assert len(list(project.glob("trial_*/trial.json"))) == 2
    worker_project = worker_host / "tuner" / project.name
    assert len(list(worker_project.glob("trial_*/checkpoint.weights.h5"))) == 2
    assert not list(project.glob("trial_*/checkpoint.weights.h5"))

    # Back on the chief's host, without the KERASTUNER_* variables: the finished search
    # gives the best hyperparameters (what `dvc repro` does there next).
    final = subprocess.run(
        TUNE, cwd=chief_host, env=env, capture_output=True, text=True, timeout=900
    )
    assert final.returncode == 0, final.stderr[-4000:]
    best = json.loads((chief_host / "best.json").read_text())
    assert best["trials_completed"] == 2

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    trials = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(trials) == 2
    assert {r.data.tags["tuner_id"] for r in trials} == {"tuner-b0"}
    assert all(r.info.status == "FINISHED" for r in trials)
