"""The process launcher: a keras-tuner chief and its workers on this machine.

keras-tuner's own distributed mode does the scheduling (a chief oracle, workers asking it
for trials, `KERASTUNER_*` variables); this module only starts those processes as copies
of the tune stage, pins each to its GPU or CPU share, and makes sure none outlives the
stage: Ctrl-C or SIGTERM ends them all, and they end themselves if it is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.stages.tune.search import Search


def _gpu_ids() -> list[str]:
    """The GPUs a worker may be pinned to: those CUDA_VISIBLE_DEVICES allows, or all."""
    from deepfake_audio.ops import runtime

    count = len(runtime.gpus())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:count]
    return [str(i) for i in range(count)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, chief: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chief.poll() is not None:
            raise UserError(f"tune: the keras-tuner chief exited early: {_last_line(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise UserError(f"tune: the keras-tuner chief did not listen on port {port} (log: {log})")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1].strip().removeprefix("deepfake-audio: error: ")


def run_distributed(
    params: Params, dataset_dir: Path, tuner_dir: Path, out: Path, params_path: Path
) -> dict[str, Any]:
    """keras-tuner's distributed mode on this machine: one chief, `tune.workers` workers.

    Each worker is this same stage with `KERASTUNER_TUNER_ID` set; with GPUs each
    gets one (`CUDA_VISIBLE_DEVICES`, round robin), on a CPU each gets its share of
    the cores. A worker that fails stops the search with its error.
    """
    search = Search(params, dataset_dir, tuner_dir)
    n = params.tune.workers
    gpu_ids = _gpu_ids()
    port = _free_port()
    logs = Path(tuner_dir) / search.project / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "deepfake_audio.cli",
        "--params",
        str(params_path),
        "tune",
        "--dataset",
        str(dataset_dir),
        "--tuner-dir",
        str(tuner_dir),
        "--out",
        str(out),
    ]
    with search.parent_run() as parent:
        base = {
            **os.environ,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
            "DEEPFAKE_AUDIO_TUNE_PARENT_RUN": parent.info.run_id,
            "DEEPFAKE_AUDIO_TUNE_LAUNCHER_PID": str(os.getpid()),
        }
        procs: dict[str, tuple[subprocess.Popen, Path]] = {}

        def spawn(tuner_id: str, extra: dict[str, str]) -> None:
            log = logs / f"{tuner_id}.log"
            with open(log, "w") as handle:
                proc = subprocess.Popen(
                    command,
                    env={**base, "KERASTUNER_TUNER_ID": tuner_id, **extra},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            procs[tuner_id] = (proc, log)

        try:
            spawn("chief", {"CUDA_VISIBLE_DEVICES": ""})  # the oracle needs no GPU
            _wait_for_port(port, procs["chief"][0], procs["chief"][1], timeout=300)
            share = max(1, (os.cpu_count() or 1) // n)
            for i in range(n):
                if gpu_ids:
                    extra = {"CUDA_VISIBLE_DEVICES": gpu_ids[i % len(gpu_ids)]}
                else:
                    extra = {"TF_NUM_INTRAOP_THREADS": str(share), "OMP_NUM_THREADS": str(share)}
                spawn(f"tuner{i}", extra)
            where = f"GPU {', '.join(gpu_ids)}" if gpu_ids else f"{share} CPU threads each"
            print(
                f"tune: keras-tuner chief on 127.0.0.1:{port} + {n} workers ({where}); "
                f"logs in {logs}",
                file=sys.stderr,
            )
            _wait_for_workers(procs)
        finally:
            for proc, _ in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc, _ in procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        # The chief kept the oracle's state on disk; reloading it here gives the best trial.
        return search.result(search.tuner(parent.info.run_id), parent.info.run_id, out)


def _wait_for_workers(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Until every worker has exited 0; the first failure (chief's too) stops the search."""
    workers = {k: v for k, v in procs.items() if k != "chief"}
    chief, chief_log = procs["chief"]
    while True:
        codes = {k: proc.poll() for k, (proc, _) in workers.items()}
        failed = [k for k, code in codes.items() if code not in (None, 0)]
        if failed:
            name = failed[0]
            log = workers[name][1]
            raise UserError(f"tune: worker {name} failed: {_last_line(log)} (log: {log})")
        if all(code == 0 for code in codes.values()):
            return
        if chief.poll() not in (None, 0):
            raise UserError(f"tune: the keras-tuner chief failed: {_last_line(chief_log)}")
        time.sleep(1)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) here, so `finally` clean-up runs as on Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_launcher() -> None:
    """A chief or worker our launcher started ends with it, even when it is killed -9.

    Linux delivers SIGTERM to this process when its parent dies (PR_SET_PDEATHSIG);
    if the launcher is already gone, this process stops here.
    """
    launcher = os.environ.get("DEEPFAKE_AUDIO_TUNE_LAUNCHER_PID", "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):
        raise UserError("tune: the stage that started this tuner process is gone")
