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

MLflow 3 also starts job-execution consumers (huey) with every server: eight more
processes and about 1.4 GB resident that this pipeline never uses. `start` turns
them off (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`) unless `jobs=True`.

The server runs in a process group of its own (`start_new_session=True`): its pid
is the group id, and `stop` ends the whole group - MLflow's uvicorn child and any
job consumers included - and returns only once none of it is left. A server that
a test or benchmark starts passes `die_with_parent=True`: it then runs under a
small supervisor that ends the group when the starter is gone, even when the
starter was killed with SIGKILL or by the OOM killer, which runs no cleanup code.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_text

DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_ROOT = Path("mlruns")
DEFAULT_EXPERIMENT = "deepfake-audio"
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
PR_SET_PDEATHSIG = 1  # linux/prctl.h

# The write end of each die-with-parent server's lifeline pipe, by process group id.
# It stays open as long as this process lives: its closing (on any exit) is the signal.
_LIFELINES: dict[int, int] = {}


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
        "or an authenticating proxy (docs/team.md)"
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
    """The `mlflow server` command line (its environment comes from `server_env`)."""
    root = files.root.resolve()
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    if workers is None:
        # One process owns a SQLite file: several would contend for its lock. With one
        # worker uvicorn serves in-process, so the whole server is two processes.
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


def server_env(jobs: bool = False) -> dict[str, str]:
    """This process's environment with MLflow's job execution set explicitly on or off.

    MLflow 3 turns job execution on by default (huey consumers for GenAI jobs: about eight
    processes and 1.4 GB more). Set either way, so a variable left in the shell cannot
    decide it behind the `jobs` argument's back.
    """
    return {**os.environ, JOBS_ENV: "true" if jobs else "false"}


def start(
    root: Path = DEFAULT_ROOT,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = 120.0,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int | None = None,
    basic_auth: bool = False,
    jobs: bool = False,
    die_with_parent: bool = False,
) -> str:
    """Start the server in the background (idempotent) and return its URL once healthy.

    `backend_store_uri` defaults to the SQLite file `root/mlflow.db` and
    `artifacts_destination` to `root/artifacts`; a `postgresql://` URI and an
    `s3://` (or other object store) URL make it a team server. A `host` that is
    not a loopback address prints a one-line warning on stderr. `jobs=True` keeps
    MLflow's job execution (off by default: the pipeline never submits jobs).

    By default the server is a daemon that outlives the caller (`deepfake-audio
    server start` returns to the shell). `die_with_parent=True` ties its whole
    process group to this process instead: tests and benchmarks use it so that a
    run killed outright (SIGKILL, OOM killer) leaves no server behind. A server
    already running from `root` is returned as it is.
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
        if die_with_parent:
            process = _start_supervised(cmd, server_env(jobs), log.fileno())
        else:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env(jobs),
                start_new_session=True,  # survives the shell that started it, and Ctrl-C there
            )
    write_text(files.pid, f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _end_group(process.pid, timeout=10.0)  # a uvicorn child it may have left
            _close_lifeline(process.pid)
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


# The supervisor runs as `python -c`: it finds this package through the path this copy
# was imported from, whatever sys.path tweaks (a test's, a benchmark's) the starter made.
_SRC = str(Path(__file__).resolve().parents[2])  # the folder holding deepfake_audio/
_SUPERVISOR_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from deepfake_audio.ops.server import _supervise_main; _supervise_main()"
)


def _start_supervised(cmd: list[str], env: dict[str, str], log: int) -> subprocess.Popen:
    """Start `cmd` under a supervisor that ends the server's group once we are gone.

    The supervisor is the group leader (its pid goes into the pid file); it holds the read
    end of a pipe whose write end only this process holds. However this process ends, the
    kernel closes that end and the supervisor reads EOF. Why not PR_SET_PDEATHSIG on the
    server: it fires when the *thread* that forked exits (a server started from a
    short-lived thread would die with it) and reaches only the direct child, while MLflow
    serves from a uvicorn grandchild that would be left running.
    """
    read_end, write_end = os.pipe()  # both close-on-exec; pass_fds hands the child one
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISOR_BOOT, _SRC, str(read_end), *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(read_end,),
            start_new_session=True,  # its own group: stop() and the supervisor end it whole
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _LIFELINES[process.pid] = write_end
    return process


_WATCHER_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from deepfake_audio.ops.server import _watch_main; _watch_main()"
)


def tie_to_this_process(root: Path = DEFAULT_ROOT) -> None:
    """Make the running server of `root` end when this process ends, however it ends.

    For a test that must start a real daemon (`deepfake-audio server start` in a
    subprocess) yet leave nothing behind if it is killed -9: a small watcher, outside the
    server's group, holds the read end of a lifeline pipe as the supervisor does, ends the
    group on EOF, and exits by itself once the group is gone (`stop`).
    """
    files = ServerFiles(root)
    pgid = _read_pid(files)
    if pgid is None or not _is_server_group(pgid):
        raise UserError(f"no MLflow server is running from {root}/")
    if pgid in _LIFELINES:  # tied already (supervised, or watched): closing that would end it
        return
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-c", _WATCHER_BOOT, _SRC, str(read_end), str(pgid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(read_end,),
            start_new_session=True,  # a Ctrl-C for the tests is not one for the watcher
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _LIFELINES[pgid] = write_end


def _watch_main() -> None:
    """Entry point of the watcher process: `<lifeline fd> <pgid>`."""
    lifeline, pgid = int(sys.argv[1]), int(sys.argv[2])
    while group_members(pgid):
        ready, _, _ = select.select([lifeline], [], [], 0.5)
        if ready and not os.read(lifeline, 64):  # EOF: the process that tied it is gone
            _end_group(pgid, timeout=10.0)
            return


def _close_lifeline(pgid: int) -> None:
    fd = _LIFELINES.pop(pgid, None)
    if fd is not None:
        os.close(fd)


def _supervise_main() -> None:
    """Entry point of the supervisor process: `<lifeline fd> <server command...>`."""
    sys.exit(_supervise(int(sys.argv[1]), sys.argv[2:]))


def _supervise(lifeline: int, cmd: list[str]) -> int:
    """Run the server, end its process group when the starter is gone; the exit code.

    Also ends the group when the server exits by itself, so no uvicorn child outlives it,
    and returns the server's exit code for `start` to report.
    """
    me = os.getpid()
    server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_death_signal(me))
    while server.poll() is None:
        ready, _, _ = select.select([lifeline], [], [], 0.5)
        if ready and not os.read(lifeline, 64):  # EOF: the starter has exited
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # outlive our own group signal
            _end_group(me, timeout=10.0, spare=me)
            server.wait()
            return 0
    _end_group(me, timeout=5.0, spare=me)
    return server.returncode


def _death_signal(parent: int) -> Callable[[], None]:
    """A preexec_fn: SIGTERM this child if the supervisor itself is killed.

    SIGTERM, not SIGKILL: `mlflow server` forwards SIGTERM to its uvicorn child, so the
    group still ends whole when the supervisor is the process that was killed -9. The
    supervisor is single-threaded, so the death signal's thread caveat does not apply.
    """

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the supervisor died before the signal was armed
            os._exit(1)

    return arm


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "(no log)"
    # A Python traceback ends in its message, which may run over several lines: the
    # last line naming an exception says what went wrong, not its continuation.
    errors = [line for line in lines if "Error" in line or "Exception:" in line]
    return (errors or lines or ["(empty log)"])[-1].strip()


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from /proc.

    A zombie holds no memory and is gone once its parent (or init) reaps it, so it does not
    count. Without /proc (not Linux) this falls back to `killpg(pgid, 0)`: [pgid] or [].
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _is_server_group(pgid: int) -> bool:
    """True if group `pgid` still runs an MLflow server (or its leftovers).

    The pid file may be stale and its number reused by an unrelated process group: that
    group is not ours to kill.
    """
    _reap(pgid)
    members = group_members(pgid)
    if not members:
        return False
    if not Path("/proc").is_dir():
        return True
    return any("mlflow" in _cmdline(pid) for pid in members)


def _reap(pgid: int) -> None:
    """Collect our own exited children in group `pgid`, so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _signal_group(pgid: int, sig: int, spare: int | None) -> None:
    if spare is None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        return
    for pid in group_members(pgid):
        if pid != spare:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _wait_group_gone(pgid: int, timeout: float, spare: int | None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pgid)
        if not [pid for pid in group_members(pgid) if pid != spare]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _end_group(pgid: int, timeout: float, spare: int | None = None) -> None:
    """SIGTERM to every process of group `pgid`, SIGKILL after `timeout`; returns once empty.

    SIGTERM first lets uvicorn finish its requests and SQLite close cleanly; the SIGKILL
    catches job consumers or workers that ignore it. `spare` (the supervisor) is left out.
    """
    _signal_group(pgid, signal.SIGTERM, spare)
    if not _wait_group_gone(pgid, timeout, spare):
        _signal_group(pgid, signal.SIGKILL, spare)
        # SIGKILL cannot be caught; only a process stuck in the kernel (D state) delays it.
        if not _wait_group_gone(pgid, 30.0, spare):
            left = ", ".join(map(str, group_members(pgid)))
            raise UserError(f"mlflow server: processes {left} of group {pgid} survived SIGKILL")
    if spare is None:
        _wait_reaped(pgid, 5.0)


def _wait_reaped(pgid: int, timeout: float) -> None:
    """Wait (briefly) until the group's last zombies are reaped and `killpg(pgid, 0)` fails.

    A server process whose parent died first is reaped by init a moment after it exits;
    until then the group id still exists. Bounded: an init that never reaps must not hang
    `stop`, and a zombie holds no memory.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.05)


def stop(root: Path = DEFAULT_ROOT, timeout: float = 20.0) -> bool:
    """Stop the server whose pid file is under `root`; False if none was running.

    Ends the server's whole process group (MLflow, its uvicorn child, any job consumers,
    the supervisor of a die-with-parent server) and returns only when none of it is left,
    so the next server, or a measurement of free memory, never races the last one's
    workers. Also clears what a server whose main process died left in its group.
    """
    files = ServerFiles(root)
    try:
        pgid: int | None = int(files.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        pgid = None
    running = False
    if pgid is not None:
        running = _is_server_group(pgid)
        if running:
            _end_group(pgid, timeout)
        _close_lifeline(pgid)
    files.pid.unlink(missing_ok=True)
    return running


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


def project_experiment_name(params: Path = Path("params.yaml")) -> str:
    """`mlflow.experiment_name` from the params file; the default name when there is none.

    `server start` works from any folder: without a params file there is no project
    setting to honour, so the stages' own default applies. A params file that exists but
    does not validate raises UserError (the link would name the wrong experiment).
    """
    if not params.exists():
        return DEFAULT_EXPERIMENT
    from deepfake_audio.config.params import load_params

    return load_params(params).mlflow.experiment_name


def experiments_link(url: str) -> str:
    return f"{url.rstrip('/')}/#/experiments"


def runs_link(url: str, experiment_id: str) -> str:
    """The UI's runs table of one experiment.

    MLflow 3's UI opens an experiment on its GenAI overview; the training runs this
    pipeline logs are under "Model training", which this route shows directly.
    """
    return f"{url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def experiment_id(url: str, name: str, timeout: float = 10.0) -> str:
    """The id of experiment `name` on the server at `url`, created if it is missing.

    Speaks the REST API with urllib rather than the MLflow client: `server start` stays
    free of MLflow's seconds-long import. Credentials come from the variables the MLflow
    client reads (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD).
    """
    api = url.rstrip("/") + "/api/2.0/mlflow/experiments/"
    query = "get-by-name?" + urllib.parse.urlencode({"experiment_name": name})
    for attempt in range(2):
        found = _rest(api + query, None, timeout)
        if found is not None:
            experiment = found["experiment"]
            if experiment.get("lifecycle_stage") == "deleted":
                raise UserError(
                    f"experiment {name!r} is deleted on {url}: restore it "
                    f"(mlflow experiments restore --experiment-id {experiment['experiment_id']})"
                )
            return str(experiment["experiment_id"])
        try:
            created = _rest(api + "create", {"name": name}, timeout)
        except UserError:
            if attempt:  # created by someone else meanwhile: look it up once more
                raise
            continue
        if created is not None:
            return str(created["experiment_id"])
    raise UserError(f"experiment {name!r}: {url} neither finds nor creates it")


def _rest(address: str, body: dict | None, timeout: float) -> dict | None:
    """One MLflow REST call: the JSON reply, or None for 404 (no such resource)."""
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(address, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        if err.code in (401, 403):
            raise UserError(
                "the server asks for credentials: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD"
            ) from None
        raise UserError(f"{address.split('?')[0]}: HTTP {err.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise UserError(f"{address.split('?')[0]}: {err}") from None
