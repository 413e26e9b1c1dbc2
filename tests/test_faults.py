"""Faults, for real: kill -9 mid-search, an MLflow server that restarts or stays down,
Ctrl-C, corrupted state. Real `deepfake-audio` processes against real MLflow servers;
nothing is mocked. Each test prints what it saw (run with -s to read it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import free_port
from deepfake_audio.config.params import parse_params
from deepfake_audio.ops import server
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import dataset

pytestmark = pytest.mark.slow

RESUME = "the search state is saved, rerun `dvc repro` to resume"


def _setup(tmp_path: Path, tune: dict, **demo: int) -> tuple[Path, dict]:
    """A tiny demo dataset and its params file (trials take seconds, not minutes)."""
    raw = {
        "seed": 3,
        "data": {"demo": {"train_clips": 24, "validation_clips": 12, "test_clips": 8, **demo}},
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2},
        "model": {"architecture": "compact_cnn"},
        "tune": {"max_trials": 4, "epochs": 2, "batch_size": 8, **tune},
        "mlflow": {"experiment_name": f"faults-{uuid.uuid4().hex[:8]}"},
    }
    params = parse_params(raw)
    dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _write_params(path: Path, raw: dict) -> None:
    path.write_text(yaml.safe_dump(raw))


def _env(url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": url, "DEEPFAKE_AUDIO_VERBOSE": "0", **extra}


def _tune_cmd(tmp_path: Path, params_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "deepfake_audio.cli", "--params", str(params_path), "tune"]
    cmd += ["--dataset", str(tmp_path / "spec"), "--tuner-dir", str(tmp_path / "tuner")]
    return cmd + ["--out", str(tmp_path / "best.json")]


class Stage:
    """A `deepfake-audio` process in its own session, output to a file (no pipe to fill)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"still running after {timeout} s:\n{self.output()[-4000:]}"
            ) from None

    def last_line(self) -> str:
        return self.output().strip().splitlines()[-1]


def _run_stage(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 900) -> Stage:
    stage = Stage(cmd, env, log)
    code = stage.wait(timeout)
    assert code == 0, f"exit {code}:\n{stage.output()[-4000:]}"
    return stage


def _wait_for(what: str, check: Callable[[], Any], stage: Stage, timeout: float = 600) -> Any:
    """Poll `check` until it returns something truthy; fail early if the stage exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if stage.proc.poll() is not None:
            raise AssertionError(
                f"exited {stage.proc.returncode} before {what}:\n{stage.output()[-4000:]}"
            )
        time.sleep(0.5)
    os.killpg(stage.proc.pid, signal.SIGKILL)
    raise AssertionError(f"no {what} within {timeout} s:\n{stage.output()[-4000:]}")


class Runs:
    """The search's runs as the MLflow server holds them."""

    def __init__(self, url: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=url)
        self.experiment = experiment

    def all(self) -> list[Any]:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return []
        return self.client.search_runs([found.experiment_id], max_results=1000)

    def children(self) -> list[Any]:
        return [r for r in self.all() if "trial_id" in r.data.tags]

    def parents(self) -> list[Any]:
        return [r for r in self.all() if "trial_id" not in r.data.tags]

    def by_status(self, status: str) -> dict[str, str]:
        """run id -> trial id of the trial runs in `status`."""
        return {
            r.info.run_id: r.data.tags["trial_id"]
            for r in self.children()
            if r.info.status == status
        }

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.children():
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        return counts


def _oracle_completed(tmp_path: Path) -> list[str]:
    states = [json.loads(p.read_text()) for p in (tmp_path / "tuner").glob("*/trial_*/trial.json")]
    return sorted(s["trial_id"] for s in states if s["status"] == "COMPLETED")


def _leftover_tmp(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _assert_all_finished_once(runs: Runs, max_trials: int, epochs: int) -> None:
    finished = runs.by_status("FINISHED")
    assert sorted(finished.values()) == sorted(set(finished.values()))  # each trial once
    assert len(finished) == max_trials
    assert "RUNNING" not in runs.statuses()
    for run in runs.children():
        if run.info.status != "FINISHED":
            continue
        history = runs.client.get_metric_history(run.info.run_id, "val_eer")
        assert sorted(m.step for m in history) == list(range(epochs)), run.data.tags["trial_id"]
        assert "objective" in run.data.metrics


# --- kill -9 ------------------------------------------------------------------------


def test_kill_9_mid_search_resumes_without_rerunning_a_finished_trial(
    tmp_path: Path, mlflow_server: str
) -> None:
    params_path, raw = _setup(tmp_path, {"max_trials": 4})
    runs = Runs(mlflow_server, raw["mlflow"]["experiment_name"])
    cmd, env = _tune_cmd(tmp_path, params_path), _env(mlflow_server)
    stage = Stage(cmd, env, tmp_path / "first.log")

    def one_done_next_running() -> bool:
        statuses = runs.statuses()
        return statuses.get("FINISHED", 0) >= 1 and statuses.get("RUNNING", 0) >= 1

    _wait_for("a finished trial and the next one running", one_done_next_running, stage)
    os.killpg(stage.proc.pid, signal.SIGKILL)
    stage.proc.wait()
    finished_before = runs.by_status("FINISHED")
    running_at_kill = runs.by_status("RUNNING")
    completed_before = _oracle_completed(tmp_path)
    assert running_at_kill, "the kill landed between trials"

    started = time.monotonic()
    _run_stage(cmd, env, tmp_path / "resume.log")
    resume_s = time.monotonic() - started

    best = json.loads((tmp_path / "best.json").read_text())
    assert best["trials_completed"] == 4
    assert _oracle_completed(tmp_path) == ["0", "1", "2", "3"]
    _assert_all_finished_once(runs, max_trials=4, epochs=2)
    after = {r.info.run_id: r for r in runs.children()}
    for run_id in running_at_kill:
        assert after[run_id].info.status == "KILLED"
    # The trials that had finished were not run again: same run, no second one.
    for run_id, trial_id in finished_before.items():
        assert after[run_id].info.status == "FINISHED"
        assert [r for r in after.values() if r.data.tags["trial_id"] == trial_id] == [after[run_id]]
    assert len(runs.parents()) == 1 and runs.parents()[0].info.status == "FINISHED"
    assert not _leftover_tmp(tmp_path / "tuner")
    print(
        f"\nkill -9: before the kill MLflow had {len(finished_before)} FINISHED "
        f"(trials {sorted(finished_before.values())}), {len(running_at_kill)} RUNNING "
        f"(trial {sorted(running_at_kill.values())}); oracle completed {completed_before}. "
        f"Resume ({resume_s:.0f} s): {runs.statuses()}, trials_completed "
        f"{best['trials_completed']}"
    )


# --- the MLflow server restarts, or stays down ----------------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """An MLflow server these tests may stop and start: (root, port, url)."""
    root = tmp_path_factory.mktemp("own-mlflow")
    port = free_port()
    url = server.start(root=root, port=port, timeout=300, die_with_parent=True)
    try:
        yield root, port, url
    finally:
        server.stop(root)


def test_server_restart_mid_search_loses_no_trial(
    tmp_path: Path, own_server: tuple[Path, int, str]
) -> None:
    root, port, url = own_server
    server.start(root=root, port=port, timeout=300, die_with_parent=True)
    params_path, raw = _setup(tmp_path, {"max_trials": 2, "epochs": 3})
    runs = Runs(url, raw["mlflow"]["experiment_name"])
    # 7 retries (252 s) instead of 6 (124 s): this server takes a minute to start on a
    # loaded machine; the retries that succeed are the same either way.
    env = _env(url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="7")
    stage = Stage(_tune_cmd(tmp_path, params_path), env, tmp_path / "tune.log")
    _wait_for("a finished trial", lambda: runs.by_status("FINISHED"), stage)
    before = runs.statuses()
    down = time.monotonic()
    server.stop(root)
    time.sleep(10)
    server.start(root=root, port=port, timeout=300, die_with_parent=True)
    outage_s = time.monotonic() - down
    code = stage.wait(timeout=900)
    assert code == 0, stage.output()[-4000:]
    _assert_all_finished_once(runs, max_trials=2, epochs=3)
    assert runs.statuses() == {"FINISHED": 2}  # nothing failed, nothing was rerun
    experiment = runs.client.get_experiment_by_name(runs.experiment).experiment_id
    for run in runs.children():
        models = runs.client.search_logged_models(
            experiment_ids=[experiment], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert len(models) == 1
    assert "unreachable" not in stage.output()
    print(
        f"\nserver restart: {before} when the server stopped; it answered again after "
        f"{outage_s:.0f} s; at the end {runs.statuses()}, every trial with its "
        f"3 val_eer steps, objective and model"
    )


def test_server_down_past_the_wait_fails_in_one_line_and_the_rerun_resumes(
    tmp_path: Path, own_server: tuple[Path, int, str]
) -> None:
    root, port, url = own_server
    server.start(root=root, port=port, timeout=300, die_with_parent=True)
    params_path, raw = _setup(tmp_path, {"max_trials": 2})
    runs = Runs(url, raw["mlflow"]["experiment_name"])
    cmd = _tune_cmd(tmp_path, params_path)
    # 4 retries, factor 1: MLflow waits 2 + 4 + 8 = 14 s for a server that refuses.
    short = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    stage = Stage(cmd, _env(url, **short), tmp_path / "down.log")
    running = _wait_for("a running trial", lambda: runs.by_status("RUNNING"), stage)
    server.stop(root)
    down = time.monotonic()
    code = stage.wait(timeout=600)
    failed_after_s = time.monotonic() - down
    assert code == 2, stage.output()[-4000:]
    last = stage.last_line()
    assert last == (
        f"deepfake-audio: error: tune: MLflow server at {url} unreachable for 14 s "
        f"during trial {next(iter(running.values()))}; {RESUME}"
    )
    assert "Traceback" not in stage.output()
    # The trial's epochs take a few seconds, then 14 s of retries, then the process exits.
    assert failed_after_s < 14 + 120

    server.start(root=root, port=port, timeout=300, die_with_parent=True)
    assert runs.by_status("RUNNING") == running  # nobody could tell the server
    _run_stage(cmd, _env(url), tmp_path / "resume.log")
    _assert_all_finished_once(runs, max_trials=2, epochs=2)
    statuses = {r.info.run_id: r.info.status for r in runs.children()}
    assert all(statuses[run_id] == "KILLED" for run_id in running)
    assert json.loads((tmp_path / "best.json").read_text())["trials_completed"] == 2
    print(
        f"\nserver down: stage exited 2 {failed_after_s:.0f} s after the server stopped: "
        f"{last!r}; after restart + rerun: {runs.statuses()}"
    )


# --- Ctrl-C -----------------------------------------------------------------------------


def test_ctrl_c_during_dataset_leaves_no_partial_output_or_process(tmp_path: Path) -> None:
    raw = {
        "seed": 5,
        # Far more clips than are written before the interrupt, so the pool is still busy
        # when Ctrl-C arrives however fast the machine (CI once finished 480 within a second).
        "data": {"demo": {"train_clips": 20000, "validation_clips": 40, "test_clips": 40}},
        "features": {"kind": "logmel", "clip_seconds": 0.5, "n_mels": 16, "workers": 2},
    }
    params_path = tmp_path / "params.yaml"
    _write_params(params_path, raw)
    out, reports = tmp_path / "spectrograms", tmp_path / "reports"
    cmd = [sys.executable, "-m", "deepfake_audio.cli", "--params", str(params_path), "dataset"]
    cmd += ["--out", str(out), "--reports", str(reports)]
    stage = Stage(cmd, _env("http://127.0.0.1:9"), tmp_path / "dataset.log")
    manifest = out.with_name(out.name + ".tmp") / "manifest_train.csv"

    def writing() -> list[psutil.Process]:
        if not manifest.exists() or manifest.stat().st_size == 0:
            return []
        return psutil.Process(stage.proc.pid).children(recursive=True)

    workers = _wait_for("the feature pool writing the dataset", writing, stage, timeout=300)
    os.kill(stage.proc.pid, signal.SIGINT)
    code = stage.wait(timeout=120)
    assert code == 130, stage.output()[-3000:]
    assert stage.last_line() == "deepfake-audio: interrupted"
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert not out.exists()
    assert not out.with_name(out.name + ".tmp").exists()
    assert not (reports / "dataset.json").exists()
    assert not _leftover_tmp(tmp_path)
    print(f"\nCtrl-C dataset: exit 130, {len(workers)} pool processes gone, nothing written")


def _tuner_processes(launcher: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if "KERASTUNER_TUNER_ID" in child.environ():
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_ctrl_c_stops_every_tuner_process_and_the_search_resumes(
    tmp_path: Path, mlflow_server: str
) -> None:
    params_path, raw = _setup(tmp_path, {"workers": 2, "max_trials": 2})
    runs = Runs(mlflow_server, raw["mlflow"]["experiment_name"])
    cmd, env = _tune_cmd(tmp_path, params_path), _env(mlflow_server)
    stage = Stage(cmd, env, tmp_path / "workers.log")

    def training() -> list[psutil.Process]:
        procs = _tuner_processes(stage.proc.pid)
        return procs if len(procs) == 3 and runs.by_status("RUNNING") else []

    procs = _wait_for("chief + 2 workers, a trial running", training, stage)
    roles = sorted(p.environ()["KERASTUNER_TUNER_ID"] for p in procs)
    assert roles == ["chief", "tuner0", "tuner1"]
    os.kill(stage.proc.pid, signal.SIGINT)  # the launcher only, as `kill -INT`
    sent = time.monotonic()
    _, alive = psutil.wait_procs(procs, timeout=30)
    gone_s = time.monotonic() - sent
    assert not alive, [p.pid for p in alive]
    code = stage.wait(timeout=120)
    exit_s = time.monotonic() - sent
    assert code == 130, stage.output()[-4000:]
    assert stage.last_line() == "deepfake-audio: interrupted"
    # The launcher closed what its workers left open.
    killed = runs.statuses()
    assert "RUNNING" not in killed and killed.get("KILLED", 0) >= 1
    assert [p.info.status for p in runs.parents()] == ["KILLED"]
    assert not _leftover_tmp(tmp_path / "tuner")

    # The same search, now in one process: the oracle the chief kept carries on.
    raw["tune"]["workers"] = 1
    _write_params(params_path, raw)
    _run_stage(cmd, env, tmp_path / "resume.log")
    _assert_all_finished_once(runs, max_trials=2, epochs=2)
    assert json.loads((tmp_path / "best.json").read_text())["trials_completed"] == 2
    assert _oracle_completed(tmp_path) == ["0", "1"]
    print(
        f"\nCtrl-C tune (2 workers): {roles} gone {gone_s:.1f} s after SIGINT, launcher "
        f"exit 130 after {exit_s:.1f} s, MLflow {killed}; resumed with 1 worker: "
        f"{runs.statuses()}"
    )


def test_tuner_processes_end_with_a_launcher_killed_outright(tmp_path: Path) -> None:
    """kill -9 of the launcher runs no clean-up; its chief and workers end themselves."""
    role = (
        "from deepfake_audio.stages import tune; tune.die_with_launcher(); import time; "
        "print('ready', flush=True); time.sleep(600)"
    )
    launcher = (
        "import os, subprocess, sys, time\n"
        "env = {**os.environ, 'DEEPFAKE_AUDIO_TUNE_LAUNCHER_PID': str(os.getpid())}\n"
        f"child = subprocess.Popen([sys.executable, '-c', {role!r}], env=env)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        role_pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
        role_proc = psutil.Process(role_pid)
        proc.kill()
        proc.wait()
        role_proc.wait(timeout=10)  # psutil.TimeoutExpired if it outlived the launcher
    finally:  # the launcher's session holds both: nothing outlives a failed test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# --- corrupted state --------------------------------------------------------------------


def test_corrupted_tuner_state_is_one_line_with_the_way_out(
    tmp_path: Path, mlflow_server: str
) -> None:
    from deepfake_audio.core.errors import UserError
    from deepfake_audio.stages import tune as tuning

    params_path, raw = _setup(tmp_path, {"max_trials": 1, "epochs": 1})
    cmd, env = _tune_cmd(tmp_path, params_path), _env(mlflow_server)
    _run_stage(cmd, env, tmp_path / "tune.log")
    (project,) = (tmp_path / "tuner").iterdir()
    oracle = project / "oracle.json"
    good = oracle.read_text()
    oracle.write_text(good[: len(good) // 2])  # as a crash mid-write would have left it

    stage = Stage(cmd, env, tmp_path / "corrupt.log")
    assert stage.wait(timeout=600) == 2
    last = stage.last_line()
    assert last.startswith(f"deepfake-audio: error: tune: {oracle}: keras-tuner state is corrupted")
    assert f"delete {project} to restart this search" in last and "restore" in last
    assert "Traceback" not in stage.output()

    oracle.write_text(good)
    trial = project / "trial_0" / "trial.json"
    trial_state = trial.read_text()
    trial.write_text("")
    with pytest.raises(UserError, match=r"trial_0/trial.json: keras-tuner state is corrupted"):
        tuning.check_tuner_state(project)
    oracle.write_text("{}")  # valid JSON, but not an oracle: keras-tuner cannot reload it
    trial.write_text(trial_state)
    params = parse_params(raw)
    search = tuning.Search(params, tmp_path / "spec", tmp_path / "tuner")
    with pytest.raises(UserError, match=r"keras-tuner state is corrupted \(RuntimeError") as err:
        search.tuner()
    assert f"delete {project}" in str(err.value) and "\n" not in str(err.value)
    print(f"\ncorrupted oracle.json: {last!r}")


def test_corrupted_model_file_fails_evaluate_in_one_line(
    tmp_path: Path, mlflow_server: str
) -> None:
    params_path, _ = _setup(tmp_path, {})
    model = tmp_path / "model.keras"
    model.write_bytes(b"PK\x03\x04" + os.urandom(64))  # a zip cut short
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "baseline.json").write_text("{}")
    cmd = [sys.executable, "-m", "deepfake_audio.cli", "--params", str(params_path), "evaluate"]
    cmd += ["--dataset", str(tmp_path / "spec"), "--model", str(model)]
    cmd += ["--run-info", str(tmp_path / "run.json"), "--baseline", str(tmp_path / "baseline.json")]
    cmd += ["--metrics", str(tmp_path / "metrics.json"), "--plots", str(tmp_path / "plots")]
    stage = Stage(cmd, _env(mlflow_server), tmp_path / "evaluate.log")
    assert stage.wait(timeout=600) == 2
    last = stage.last_line()
    assert last.startswith(f"deepfake-audio: error: {model}: not a loadable Keras model (")
    assert last.endswith("delete it and run `dvc repro train` to rebuild it")
    assert "Traceback" not in stage.output()
    assert not (tmp_path / "metrics.json").exists()
