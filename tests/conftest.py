"""Shared fixtures: a real MLflow tracking server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfake_audio.ops import server

PROJECT = Path(__file__).resolve().parents[1]


def voice(seed: int, seconds: float, rate: int) -> np.ndarray:
    """A voiced test signal: a wandering F0 with harmonics, a syllable envelope, a little
    noise. Real audio for decoding and featurising, made in the test, so nothing is fetched."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(90, 220) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k ** rng.uniform(0.5, 1.5) for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    return (0.05 * wave * envelope + 0.003 * rng.normal(size=t.size)).astype(np.float32)


def tiny_hparams(filters: int = 8, dense_units: int = 8) -> dict[str, float | int | str]:
    """compact_cnn's hyperparameters at their smallest: a real model that fits in seconds.

    One place for the many tests that need a network only to have one; a fresh dict each
    call, so a test that changes it changes only its own.
    """
    return {
        "filters_1": filters,
        "filters_2": filters,
        "kernel_size_1": 3,
        "kernel_size_2": 3,
        "dense_units": dense_units,
        "learning_rate": 1e-3,
        "optimizer": "adam",
    }


def tiny_logmel_model(n_mels: int, input_shape: tuple[int, ...]) -> Any:
    """An untrained tiny compact_cnn on log-mel features, normalised as real log-mels are.

    Serving and timeline tests need a real detector, not a trained one; keras is imported
    here, not at the top, so tests without a model do not pay for it.
    """
    from deepfake_audio.models import network

    return network.build(
        tiny_hparams(),
        "compact_cnn",
        input_shape,
        np.full(n_mels, -40.0, np.float32),
        np.full(n_mels, 20.0, np.float32),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Give the stages the tests start a working Ctrl-C, however pytest was launched.

    A shell without job control starts a background command (`make test &`, nohup under a
    script) with SIGINT ignored, and every child inherits that: the Ctrl-C tests then sent
    SIGINT to stages that never saw it and ran to the end. A handler, unlike "ignored",
    does not survive exec, so the stages start with Python's usual KeyboardInterrupt.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def copy_project(root: Path) -> None:
    """What a clone of the project holds for DVC: code, dvc.yaml, DVC config, data/raw."""
    shutil.copytree(
        PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw")
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(PROJECT / ".dvc" / name, root / ".dvc" / name)
    # The offline `dvc plots show` template that .dvc/config names.
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")


def merge(base: dict, over: dict) -> dict:
    """`over` laid over `base`, nested sections merged key by key (as `dvc exp run -S`)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def stage_env(tracking_uri: str | None = None) -> dict[str, str]:
    """The environment git, dvc and the stages run in inside a temporary project repository:
    this venv's commands first, quiet stages, a git identity, and no `DVC_EXP_NAME` leaking
    in from an experiment the test suite itself may run under, nor an MLflow experiment id
    that an in-process test made active."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DEEPFAKE_AUDIO_VERBOSE": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.pop("DVC_EXP_NAME", None)
    # mlflow.set_experiment in this process exports the active experiment for subprocesses.
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return env


def run_command(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900, check: bool = True
) -> str:
    """Run a command; its stdout + stderr, or an AssertionError with their tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}")
    return output


def commit_project(root: Path, env: dict[str, str]) -> None:
    """`git init` the copied project and commit all of it, as a fresh clone would be."""
    run_command(["git", "init", "-q", "-b", "main"], root, env)
    run_command(["git", "add", "-A"], root, env)
    run_command(["git", "commit", "-qm", "project"], root, env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`deepfake-audio server start` for real, in a temporary store, for the whole session.

    Tied to this pytest process (`die_with_parent`): a session killed outright (OOM
    killer, kill -9) runs no teardown, and its server would otherwise stay behind,
    holding half a gigabyte on a machine that runs the next session.
    """
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = server.start(root=root, port=port, timeout=180, die_with_parent=True)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = url
    try:
        yield url
    finally:
        server.stop(root)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
