"""The command line, the MLflow server manager and the tracking connection."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PROJECT, free_port
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import read_json, write_json
from deepfake_audio.ops import server, tracking

CLI = [sys.executable, "-m", "deepfake_audio.cli"]


def run_cli(
    *args: str, cwd: Path = PROJECT, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_every_subcommand_without_tensorflow() -> None:
    code = (
        "import sys; from deepfake_audio import cli; cli.build_parser().format_help(); "
        "import deepfake_audio.config.params, deepfake_audio.ops.server; "
        "import deepfake_audio.scoring.metrics; "
        "bad = [m for m in ('tensorflow', 'keras', 'mlflow', 'keras_tuner') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = run_cli("--help").stdout
    for name in (
        "server",
        "dataset",
        "tune",
        "train",
        "evaluate",
        "register",
        "promote",
        "predict",
    ):
        assert name in out


def test_bad_params_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("tune:\n  tuner: grid\n")
    proc = run_cli("--params", str(bad), "tune")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tune.tuner: 'grid' is not allowed" in lines[0]
    assert "Traceback" not in proc.stderr


def test_stage_fails_fast_without_a_server(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    proc = run_cli("--params", str(PROJECT / "params.yaml"), "promote", "--version", "1", env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert "no MLflow tracking server answers" in proc.stderr
    assert "deepfake-audio server start" in proc.stderr
    assert elapsed < 30  # seconds, not the minutes of MLflow's default retries


def test_connect_raises_user_error_on_dead_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UserError, match="server start"):
        tracking.connect("anything")


def test_server_fixture_is_a_real_mlflow_server(mlflow_server: str) -> None:
    with urllib.request.urlopen(mlflow_server + "/health", timeout=5) as reply:
        assert reply.status == 200
    assert server.is_healthy(mlflow_server)


def test_server_start_status_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("MLFLOW_PORT", str(port))
    root = tmp_path / "store"
    url = server.start(root=root, timeout=180, die_with_parent=True)
    pgid = int((root / "server.pid").read_text())  # the server's process group
    try:
        assert url == f"http://127.0.0.1:{port}"
        assert (root / "server.pid").exists() and (root / "server.log").exists()
        assert (root / "mlflow.db").exists()
        assert "running: pid" in server.status(root=root)
        assert server.start(root=root) == url  # idempotent
    finally:
        assert server.stop(root) is True
    assert server.group_members(pgid) == []  # stop returns only once the group is gone
    assert not server.is_healthy(url)
    assert not (root / "server.pid").exists()
    assert server.status(root=root).startswith("stopped")
    assert server.stop(root) is False


def test_bad_port_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_PORT", "http")
    with pytest.raises(UserError, match="MLFLOW_PORT: 'http' is not a TCP port"):
        server.port_from_env()


def test_directory_digest_matches_dvc(tmp_path: Path) -> None:
    """Our dataset_digest is the hash DVC itself gives the directory."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.npy").write_bytes(b"\x00\x01" * 1000)
    (data / "sub" / "b.csv").write_text("x,y\n1,2\n")
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem

    fs = LocalFileSystem()
    odb = HashFileDB(fs, str(tmp_path / "cache"))
    _, _, obj = build(odb, str(data), fs, "md5")
    assert tracking.directory_digest(data) == obj.hash_info.value
    (data / "a.npy").write_bytes(b"\x00\x02" * 1000)
    assert tracking.directory_digest(data) != obj.hash_info.value


def test_atomic_json_and_clear_read_errors(tmp_path: Path) -> None:
    path = tmp_path / "r" / "x.json"
    write_json(path, {"a": 1})
    assert read_json(path, "x") == {"a": 1}
    assert not list(path.parent.glob(".*.tmp"))
    path.write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(path, "x")
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "nope.json", "x")


def test_server_lost_mid_stage_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stage whose server vanished gets one line and exit 2, not MLflow's traceback."""
    import requests

    from deepfake_audio import cli

    def lost(args: object) -> int:  # a real refused connection, as MLflow's client meets it
        requests.get(f"http://127.0.0.1:{free_port()}/api/2.0/mlflow/runs/get", timeout=5)
        return 0

    monkeypatch.setattr(cli, "cmd_register", lost)
    assert cli.main(["register"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unreachable" in err[0] and "during the register stage" in err[0]


def test_mlflow_telemetry_is_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its background thread unset an environment variable while a stage's request iterated
    os.environ (KeyError in evaluate, fresh-clone `make demo`, 2026-12-03)."""
    import os

    from deepfake_audio import cli

    monkeypatch.delenv(cli.TELEMETRY_ENV, raising=False)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert os.environ[cli.TELEMETRY_ENV] == "true"
    monkeypatch.setenv(cli.TELEMETRY_ENV, "false")  # a user's own choice stands
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert os.environ[cli.TELEMETRY_ENV] == "false"


def test_connect_makes_the_experiment_active_after_losing_the_race_to_create_it(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two queued stages creating one new experiment at once: MLflow's set_experiment, on the
    losing side, returned the experiment without making it active, and a CI run's baseline
    went to the experiment an inherited MLFLOW_EXPERIMENT_ID named. Here the other process is
    played by creating the experiment between this process's lookup and its create, against
    the real server; the run must still land in the experiment asked for."""
    import uuid

    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    mlflow.set_tracking_uri(mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)
    elsewhere = client.create_experiment(f"elsewhere-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", elsewhere)  # inherited from a parent process
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    name = f"raced-{uuid.uuid4().hex[:8]}"
    lookup = TrackingServiceClient.get_experiment_by_name
    calls = {"n": 0}

    def other_process_creates_it_first(self, experiment_name):
        calls["n"] += 1
        if experiment_name == name and calls["n"] == 1:
            MlflowClient(tracking_uri=mlflow_server).create_experiment(name)
            return None  # what this process saw just before the other one created it
        return lookup(self, experiment_name)

    # What set_experiment asks (TrackingServiceClient, MLflow 3.17), made to see the race.
    monkeypatch.setattr(
        TrackingServiceClient, "get_experiment_by_name", other_process_creates_it_first
    )
    experiment_id = tracking.connect(name)
    with mlflow.start_run() as run:
        pass
    assert calls["n"] >= 2, "the race path ran"
    assert experiment_id == client.get_experiment_by_name(name).experiment_id
    assert run.info.experiment_id == experiment_id != elsewhere
