"""Start, stop and check the local MLflow tracking server.

The default set-up in one folder (`mlruns/`, git-ignored): a SQLite backend
store, artifacts served by the server itself (`--artifacts-destination`), a pid
file and a log file. One server process with one worker owns the SQLite file;
clients only speak HTTP to it, so several stages or tuner workers can log at
once without ever opening the database themselves.

A team points the same command at a database and an object store instead
(`backend_store_uri="postgresql://..."`, `artifacts_destination="s3://..."`);
the pid and log files still live under `root`. The server binds to 127.0.0.1
unless told otherwise, and says so on stderr when it is told otherwise:
MLflow's REST API has no authentication of its own (`basic_auth=True` turns on
`mlflow server --app-name basic-auth`).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_text

DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_ROOT = Path("mlruns")


@dataclass(frozen=True)
class ServerFiles:
    """Where one local server keeps its state; everything lives under `root`."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def pid(self) -> Path:
        return self.root / "server.pid"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


def port_from_env() -> int:
    raw = os.environ.get("MLFLOW_PORT", str(DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UserError(f"MLFLOW_PORT: {raw!r} is not a TCP port number (1-65535)")
    return int(raw)


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when an MLflow server answers /health at `url`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_pid(files: ServerFiles) -> int | None:
    try:
        pid = int(files.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or an interface address: reachable from elsewhere


def exposure_warning(host: str, port: int) -> str:
    return (
        f"warning: the MLflow server listens on {host}:{port}: anyone who can reach this "
        "machine can read and write its runs and registered models; use --basic-auth "
        "or an authenticating proxy (README: Team setup)"
    )


def command(
    files: ServerFiles,
    host: str,
    port: int,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int | None = None,
    basic_auth: bool = False,
) -> list[str]:
    root = files.root.resolve()
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    if workers is None:
        # One process owns a SQLite file: several would contend for its lock.
        workers = 1 if backend.startswith("sqlite:") else 4
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts_destination or str(root / "artifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if basic_auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def start(
    root: Path = DEFAULT_ROOT,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = 120.0,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int | None = None,
    basic_auth: bool = False,
) -> str:
    """Start the server in the background (idempotent) and return its URL once healthy.

    `backend_store_uri` defaults to the SQLite file `root/mlflow.db` and
    `artifacts_destination` to `root/artifacts`; a `postgresql://` URI and an
    `s3://` (or other object store) URL make it a team server. A `host` that is
    not a loopback address prints a one-line warning on stderr.
    """
    port = port_from_env() if port is None else port
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    files = ServerFiles(root)
    files.root.mkdir(parents=True, exist_ok=True)
    if artifacts_destination is None:
        files.artifacts.mkdir(exist_ok=True)
    if not is_loopback(host):
        print(exposure_warning(host, port), file=sys.stderr)
    pid = _read_pid(files)
    if pid is not None and is_healthy(url):
        return url
    if is_healthy(url):
        raise UserError(
            f"port {port}: another MLflow server already answers at {url}; "
            "stop it or set MLFLOW_PORT to a free port"
        )
    cmd = command(files, host, port, backend_store_uri, artifacts_destination, workers, basic_auth)
    with open(files.log, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the shell that started it, and Ctrl-C there
        )
    write_text(files.pid, f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            files.pid.unlink(missing_ok=True)
            tail = _tail(files.log)
            raise UserError(f"mlflow server exited with code {process.returncode}: {tail}")
        if is_healthy(url):
            return url
        time.sleep(0.5)
    stop(root)
    raise UserError(
        f"mlflow server did not answer {url}/health within {timeout:.0f} s; see {files.log}"
    )


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "(no log)"
    # A Python traceback ends in its message, which may run over several lines: the
    # last line naming an exception says what went wrong, not its continuation.
    errors = [line for line in lines if "Error" in line or "Exception:" in line]
    return (errors or lines or ["(empty log)"])[-1].strip()


def stop(root: Path = DEFAULT_ROOT, timeout: float = 20.0) -> bool:
    """Stop the server whose pid file is under `root`; False if none was running."""
    files = ServerFiles(root)
    pid = _read_pid(files)
    if pid is None:
        files.pid.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and its uvicorn/gunicorn workers
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    files.pid.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def status(root: Path = DEFAULT_ROOT, host: str = DEFAULT_HOST, port: int | None = None) -> str:
    port = port_from_env() if port is None else port
    url = f"http://{host}:{port}"
    pid = _read_pid(ServerFiles(root))
    healthy = is_healthy(url)
    if pid is not None and healthy:
        return f"running: pid {pid}, {url} (store {root}/)"
    if healthy:
        return f"an MLflow server answers at {url}, but not one started from {root}/"
    if pid is not None:
        return f"process {pid} is up but {url}/health does not answer (see {root}/server.log)"
    return f"stopped (start it with: deepfake-audio server start; port {port})"
