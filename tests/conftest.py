"""Shared fixtures: a real MLflow tracking server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepfake_audio import server

PROJECT = Path(__file__).resolve().parents[1]


def copy_project(root: Path) -> None:
    """What a clone of the project holds for DVC: code, dvc.yaml, DVC config, data/raw."""
    shutil.copytree(
        PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw")
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(PROJECT / ".dvc" / name, root / ".dvc" / name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`deepfake-audio server start` for real, in a temporary store, for the whole session."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = server.start(root=root, port=port, timeout=180)
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
