"""`pipeline.*` and `tune.*`: the project's own `dvc repro`, timed, as a user runs it.

A copy of the project in a fresh git repository (as tests/test_pipeline.py sets it up) with
the default params.yaml, a real MLflow server on a free loopback port started with
`deepfake_audio.ops.server.start`, then:

* `dvc repro` once (every stage of dvc.yaml): `pipeline.demo_repro_seconds`;
* `dvc repro` again with nothing changed, three times: `pipeline.noop_repro_seconds`;
* every stage's own wall time, from a shim `deepfake-audio` first on PATH that records
  when each stage command starts and ends and then runs the real one. The tune stage's
  time and the completed trials it reports (`models/best_hparams.json`) give
  `tune.trials_per_hour`; the trials' own MLflow runs give a cross-check without the
  stage's start-up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Figure, Stopwatch, log, median, spread
from benchmarks.corpus import PROJECT, Workspace, merge
from benchmarks.features_bench import _deepfake_audio

NOOP_REPEATS = 3
# --quick: tests/test_pipeline.py's small pipeline.
QUICK_PARAMS = {
    "data": {"demo": {"train_clips": 48, "validation_clips": 24, "test_clips": 32}},
    "features": {"clip_seconds": 1.0, "n_mels": 32},
    "tune": {"max_trials": 2, "epochs": 2, "batch_size": 16},
    "train": {"epochs": 2},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _copy_project(root: Path, quick: bool) -> dict[str, Any]:
    shutil.copytree(
        PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw")
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(PROJECT / ".dvc" / name, root / ".dvc" / name)
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    if quick:
        raw = merge(raw, QUICK_PARAMS)
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    else:
        shutil.copy(PROJECT / "params.yaml", root / "params.yaml")  # byte for byte
    return raw


def _shim(folder: Path, timings: Path) -> None:
    """A `deepfake-audio` that logs '<subcommand> <start> <end> <rc>' and runs the real one."""
    folder.mkdir(parents=True)
    real = shlex.quote(_deepfake_audio())
    script = folder / "deepfake-audio"
    script.write_text(
        "#!/bin/sh\n"
        "start=$(date +%s.%N)\n"
        f'{real} "$@"\n'
        "rc=$?\n"
        f'echo "$1 $start $(date +%s.%N) $rc" >> {shlex.quote(str(timings))}\n'
        "exit $rc\n"
    )
    script.chmod(0o755)


def _stage_seconds(timings: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if not timings.exists():
        return out
    for line in timings.read_text().splitlines():
        name, start, end, _rc = line.split()
        out[name] = out.get(name, 0.0) + float(end) - float(start)
    return out


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}")
    return output


def _trial_runs(url: str, experiment: str) -> list[dict[str, Any]]:
    """The tuning trials' MLflow child runs: status and duration."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=500)
    return [
        {
            "name": r.info.run_name,
            "status": r.info.status,
            "seconds": ((r.info.end_time or 0) - r.info.start_time) / 1000.0,
        }
        for r in runs
        if r.data.tags.get("stage") == "tune" and "mlflow.parentRunId" in r.data.tags
    ]


def run(ws: Workspace) -> list[Figure]:
    from deepfake_audio.ops import server

    base = ws.root / "pipeline"
    repo = base / "repo"
    repo.mkdir(parents=True)
    raw = _copy_project(repo, ws.quick)
    timings = base / "stage_times.txt"
    _shim(base / "shim", timings)
    store = base / "mlflow"
    port = free_port()
    log(f"pipeline: starting an MLflow server on port {port}")
    url = server.start(root=store, port=port, timeout=180, die_with_parent=True)
    try:
        env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [str(base / "shim"), str(Path(sys.executable).parent), os.environ["PATH"]]
            ),
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_PORT": str(port),
            "DEEPFAKE_AUDIO_VERBOSE": "0",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
        }
        for name in ("DVC_EXP_NAME", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            env.pop(name, None)
        # The temporary repository is its own git repository; nothing touches the project's.
        _run(["git", "init", "-q", "-b", "main"], repo, env)
        _run(["git", "add", "-A"], repo, env)
        _run(["git", "commit", "-qm", "project"], repo, env)

        names = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
        log(f"pipeline: `dvc repro` (all {len(names)} stages: {', '.join(names)}; minutes)")
        with Stopwatch() as full:
            first = _run(["dvc", "repro"], repo, env)
        stages = _stage_seconds(timings)
        missing = [s for s in names if f"Running stage '{s}'" not in first]
        if missing:
            raise RuntimeError(f"dvc repro did not run {missing}:\n{first[-3000:]}")

        log(f"pipeline: `dvc repro` with nothing changed, {NOOP_REPEATS} times")
        noop: list[float] = []
        for _ in range(NOOP_REPEATS):
            with Stopwatch() as sw:
                out = _run(["dvc", "repro"], repo, env)
            if "Running stage" in out:
                raise RuntimeError(f"a second `dvc repro` ran a stage:\n{out[-3000:]}")
            noop.append(sw.seconds)

        best = json.loads((repo / "models" / "best_hparams.json").read_text())
        trials = int(best["trials_completed"])
        experiment = raw.get("mlflow", {}).get("experiment_name", "deepfake-audio")
        trial_runs = _trial_runs(url, experiment)
        finished = [t["seconds"] for t in trial_runs if t["status"] == "FINISHED"]
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    finally:
        server.stop(store)

    tune_seconds = stages.get("tune")
    if not tune_seconds or trials < 1:
        raise RuntimeError(f"no tune stage time or no completed trial ({stages}, {trials})")
    tune = raw.get("tune", {})
    params_note = "quick (tests/test_pipeline.py sizes)" if ws.quick else "default params.yaml"
    details = {
        "synthetic_demo_corpus": True,
        "params": params_note,
        "corpus": raw.get("data", {}).get("demo"),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "dvc_overhead_seconds": round(full.seconds - sum(stages.values()), 2),
        "test_eer": metrics.get("test_eer"),
        "mlflow": "deepfake_audio.ops.server.start on a free loopback port, fresh store",
    }
    per_trial = {
        "trials_completed": trials,
        "tune_stage_seconds": round(tune_seconds, 2),
        "search": {k: tune.get(k) for k in ("tuner", "max_trials", "epochs", "batch_size")},
        "mlflow_trial_runs_finished": len(finished),
        "mlflow_trial_seconds": spread(finished) if finished else None,
        "trials_per_hour_from_mlflow_trial_runs": (
            round(3600.0 / median(finished), 2) if finished else None
        ),
        "notes": (
            "the tune stage's whole wall time (TensorFlow start-up, MLflow connection and "
            "logging, every trial's model upload) divided into the trials it completed; the "
            "MLflow figure is the median trial run alone"
        ),
    }
    return [
        Figure(
            key="pipeline.demo_repro_seconds",
            value=full.seconds,
            unit="s",
            repeats=1,
            compared=(
                f"`dvc repro` of all {len(names)} stages in a fresh git repository, {params_note}, "
                f"demo corpus {sum((raw.get('data', {}).get('demo') or {}).values())} clips, "
                "real MLflow server; stages: "
                + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
            ),
            details=details,
        ),
        Figure(
            key="pipeline.noop_repro_seconds",
            value=median(noop),
            unit="s",
            repeats=NOOP_REPEATS,
            compared="`dvc repro` again with nothing changed (no stage runs)",
            details={"seconds": spread(noop)},
        ),
        Figure(
            key="tune.trials_per_hour",
            value=trials / tune_seconds * 3600.0,
            unit="trials/h",
            repeats=1,
            compared=(
                f"{trials} completed trials ({tune.get('tuner')} search, {tune.get('epochs')} "
                f"epochs each) in the tune stage's {tune_seconds:.0f} s wall time within "
                "the `dvc repro` above"
            ),
            details=per_trial,
        ),
    ]
