"""The team set-up's backend store: MLflow on PostgreSQL, for real.

The test makes its own throw-away PostgreSQL cluster (Debian's `postgresql`
package: `initdb` and `pg_ctl` under /usr/lib/postgresql/*/bin) on a free
loopback port, starts `deepfake-audio server start --backend-store-uri
postgresql://...` against it, and logs a run, a Keras model, a registry version
and its aliases through our own code; then restarts the server and reads it all
back from the database. Skipped, with the reason, where PostgreSQL is not
installed (`.ci/run` installs it when it can) or the psycopg driver is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port, tiny_hparams
from deepfake_audio.ops import server

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "deepfake_audio.cli"]


def _pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's layout, else initdb on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder; yields a SQLAlchemy URI of an empty database."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (the dev extra has it)")
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and runuser is missing")
        prefix = [runuser, "-u", "postgres", "--"]
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="deepfake-audio-pg-"))
    data, sockets, log = base / "data", base / "sockets", base / "postgres.log"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}{tail}")

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "mlflow",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def restore_mlflow_uri() -> Iterator[None]:
    """`tracking.connect` sets MLflow's process-wide URI: point it back afterwards."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(saved)  # None: follow the environment again


def _start(root: Path, port: int, uri: str) -> str:
    proc = subprocess.run(
        [*CLI, "server", "start", "--root", str(root), "--port", str(port)]
        + ["--backend-store-uri", uri, "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.tie_to_this_process(root)  # a test killed outright leaves no server behind
    assert "warning" not in proc.stderr  # loopback: nothing to warn about
    return f"http://127.0.0.1:{port}"


@pytest.mark.usefixtures("restore_mlflow_uri")
def test_mlflow_on_postgresql_keeps_runs_models_and_aliases(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    from deepfake_audio.config.params import parse_params
    from deepfake_audio.models import network
    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import register as registry

    root, port = tmp_path / "store", free_port()
    url = _start(root, port, postgres)
    try:
        assert not (root / "mlflow.db").exists(), "the runs went to PostgreSQL, not SQLite"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        tag = uuid.uuid4().hex[:8]
        params = parse_params(
            {
                "mlflow": {"experiment_name": f"pg-{tag}"},
                "registry": {"model_name": f"pg-model-{tag}"},
            }
        )
        tracking.connect(params.mlflow.experiment_name)
        shape = (16, 51, 1)
        values = tiny_hparams(filters=4, dense_units=8)
        model = network.build(
            values, "compact_cnn", shape, np.zeros(16, np.float32), np.ones(16, np.float32)
        )
        with mlflow.start_run(run_name="pg-train") as run:
            mlflow.set_tags(tracking.run_tags("0" * 32 + ".dir", stage="train"))
            mlflow.log_params({"architecture": "compact_cnn", "filters_1": 4})
            mlflow.log_metric("test_eer", 0.25)
            info = tracking.log_keras_model(model)
        result = registry.register(
            params,
            {"run_id": run.info.run_id, "logged_model_uri": info.model_uri},
            {"test_eer": 0.25, "threshold": 0.0},
        )
        assert result["version"] == 1
        assert set(result["aliases"]) == {"challenger", "champion"}
    finally:
        server.stop(root)
    assert not server.is_healthy(url)

    # A new server process on the same database: everything comes back from PostgreSQL.
    url = _start(root, free_port(), postgres)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = MlflowClient(tracking_uri=url)
        stored = client.get_run(run.info.run_id)
        assert stored.data.metrics["test_eer"] == pytest.approx(0.25)
        assert stored.data.tags["stage"] == "train"
        champion = client.get_model_version_by_alias(params.registry.model_name, "champion")
        assert champion.version == "1" and champion.run_id == run.info.run_id
        assert set(champion.aliases) == {"challenger", "champion"}
        mlflow.set_tracking_uri(url)
        loaded = mlflow.keras.load_model(f"models:/{params.registry.model_name}@champion")
        assert loaded.input_shape[1:] == shape
    finally:
        server.stop(root)
