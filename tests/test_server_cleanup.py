"""The MLflow server's footprint and its clean-up: real servers and processes, no mocks.

Why these exist: MLflow 3 starts job-execution consumers with every server (ten processes,
about 2 GB), and a test session killed outright (OOM killer, kill -9) used to leave its
server running; a few of those ended later sessions on this 2-core, 24 GB machine.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, free_port
from deepfake_audio import cli
from deepfake_audio.core.errors import UserError
from deepfake_audio.ops import server

CLI = [sys.executable, "-m", "deepfake_audio.cli"]
RSS_LIMIT_MB = 700  # measured: about 500 MB for MLflow 3.17 with job execution off

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc (0 for one that just exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {key: value for key, _, value in pairs}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_gone(pgid: int, limit: float) -> list[int]:
    """The group's live processes once it is empty or `limit` seconds have passed."""
    deadline = time.monotonic() + limit
    while (left := server.group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def cli_start(root: Path, cwd: Path, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "server", "start", "--root", str(root), "--port", str(port)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture
def daemon_root(tmp_path: Path) -> Iterator[Path]:
    """A store for a `deepfake-audio server start` daemon that this test cannot leak.

    The CLI's server outlives the CLI by design, so a test killed -9 would leave it behind;
    `tie_to_this_process` (called by the test once it is up) and the stop here prevent that.
    """
    root = tmp_path / "store"
    try:
        yield root
    finally:
        server.stop(root)


def test_job_execution_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(server.JOBS_ENV, "true")  # a stray shell setting does not decide it
    assert server.server_env()[server.JOBS_ENV] == "false"
    assert server.server_env(jobs=True)[server.JOBS_ENV] == "true"
    parser = cli.build_parser()
    assert parser.parse_args(["server", "start"]).jobs is False
    assert parser.parse_args(["server", "start", "--jobs"]).jobs is True
    cmd = server.command(server.ServerFiles(Path("/tmp/x")), "127.0.0.1", 5000)
    assert cmd[cmd.index("--workers") + 1] == "1"


def test_experiment_name_without_or_with_a_params_file(tmp_path: Path) -> None:
    assert server.project_experiment_name(tmp_path / "params.yaml") == "deepfake-audio"
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["mlflow"]["experiment_name"] = "spoof-runs"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert server.project_experiment_name(tmp_path / "params.yaml") == "spoof-runs"
    (tmp_path / "params.yaml").write_text("mlflow: [broken\n")
    with pytest.raises(UserError, match="not valid YAML"):
        server.project_experiment_name(tmp_path / "params.yaml")


def test_experiment_id_of_a_dead_server_is_a_user_error() -> None:
    with pytest.raises(UserError, match="experiments/get-by-name"):
        server.experiment_id(f"http://127.0.0.1:{free_port()}", "deepfake-audio", timeout=3)


def test_stop_spares_a_group_that_is_not_a_server(tmp_path: Path) -> None:
    """A stale pid file whose number now leads some other process group: not ours to kill."""
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        (tmp_path / "server.pid").write_text(f"{other.pid}\n")
        assert server.stop(tmp_path) is False
        assert other.poll() is None
        assert not (tmp_path / "server.pid").exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow  # a real `deepfake-audio server start`: 10-25 s on this machine
def test_cli_server_is_small_and_stop_empties_its_group(tmp_path: Path, daemon_root: Path) -> None:
    port = free_port()
    proc = cli_start(daemon_root, tmp_path, port)  # tmp_path: no params.yaml there
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.tie_to_this_process(daemon_root)
    pgid = int((daemon_root / "server.pid").read_text())
    time.sleep(3)  # job consumers, were they on, start a few seconds after /health answers
    members = server.group_members(pgid)
    total = sum(rss_mb(pid) for pid in members)
    detail = "\n".join(f"{pid} {rss_mb(pid):.0f} MB {cmdline(pid)[:100]}" for pid in members)
    assert len(members) <= 3, detail
    assert total < RSS_LIMIT_MB, detail
    assert not any("huey" in cmdline(pid) or "_job_runner" in cmdline(pid) for pid in members)
    assert environ(pgid)[server.JOBS_ENV] == "false"
    # No params.yaml in the cwd: the default experiment, created and linked.
    assert f"runs of experiment 'deepfake-audio': http://127.0.0.1:{port}/#/experiments/" in (
        proc.stdout
    )

    stopped = subprocess.run(
        [*CLI, "server", "stop", "--root", str(daemon_root)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.stdout.strip() == "stopped", stopped.stdout + stopped.stderr
    # `server stop` has returned: nothing of the group may be left, not even for a moment.
    assert server.group_members(pgid) == []
    assert not server.is_healthy(f"http://127.0.0.1:{port}")


@pytest.mark.slow  # a real server, then a kill -9 of the process that started it
def test_server_dies_with_a_starter_killed_outright(tmp_path: Path) -> None:
    root = tmp_path / "store"
    code = (
        "import sys; from pathlib import Path; from deepfake_audio.ops import server; "
        f"print(server.start(root=Path({str(root)!r}), port={free_port()}, timeout=180, "
        "die_with_parent=True), flush=True); sys.stdin.read()"  # lives until we close stdin
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = starter.stdout.readline().strip() if starter.stdout else ""
        assert server.is_healthy(url), f"the starter printed {url!r}"
        pgid = int((root / "server.pid").read_text())
        assert len(server.group_members(pgid)) == 3  # supervisor, mlflow server, uvicorn
        starter.send_signal(signal.SIGKILL)  # no teardown, no atexit: as the OOM killer does
        starter.wait(timeout=30)
        assert wait_gone(pgid, 30.0) == []
        assert not server.is_healthy(url)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        server.stop(root)


@pytest.mark.slow  # a real `deepfake-audio server start` with the project's params
def test_start_prints_a_runs_link_that_resolves(tmp_path: Path, daemon_root: Path) -> None:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["mlflow"]["experiment_name"] = "link-check"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    proc = cli_start(daemon_root, tmp_path, port)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.tie_to_this_process(daemon_root)
    found = re.search(
        r"runs of experiment 'link-check': (\S+)/#/experiments/(\d+)/runs", proc.stdout
    )
    assert found, proc.stdout + proc.stderr
    base, experiment_id = found.groups()
    assert base == f"http://127.0.0.1:{port}"
    server.tie_to_this_process(daemon_root)  # tied twice: a no-op, not the end of the server
    time.sleep(1.5)
    assert server.is_healthy(base)
    with urllib.request.urlopen(base + "/", timeout=10) as reply:
        assert reply.status == 200
    get = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with urllib.request.urlopen(get, timeout=10) as reply:
        experiment = json.load(reply)["experiment"]
    assert experiment["name"] == "link-check"
    assert experiment["lifecycle_stage"] == "active"
    # Started again (idempotent): the same experiment, not a second one.
    again = cli_start(daemon_root, tmp_path, port)
    assert f"/#/experiments/{experiment_id}/runs" in again.stdout, again.stdout + again.stderr
