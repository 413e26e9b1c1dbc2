"""The MLflow side of every stage: connection, run tags, dataset inputs, hand-over.

Stages never fall back to a local ./mlruns file store: a run that silently
lands somewhere nobody looks is worse than a stage that stops. So `connect`
checks the server first and fails within seconds, saying how to start one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from deepfake_audio.core.errors import UserError
from deepfake_audio.ops.server import is_healthy

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def connect(experiment_name: str) -> str:
    """Point MLflow at the tracking server and experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")) and not is_healthy(uri, timeout=3.0):
        raise UserError(
            f"no MLflow tracking server answers at {uri}: start one with "
            "`deepfake-audio server start` (or `make server`), or set MLFLOW_TRACKING_URI"
        )
    # A server that answered /health but restarts mid-run is waited for, within a
    # bounded time (HTTP_RETRY_DEFAULTS), rather than failing the stage or hanging.
    set_http_retry_defaults()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(experiment_name)
    # Pinned by id as well: when two stages create the same new experiment at once (`dvc queue
    # start -j 2`), MLflow's set_experiment, losing that race, returns the experiment WITHOUT
    # making it active, and the stage's run then lands in whatever MLFLOW_EXPERIMENT_ID names
    # (an inherited one, or Default). Seen once in CI: a queued baseline run filed elsewhere.
    experiment = mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return experiment.experiment_id


def git_commit() -> str:
    """The commit the code ran at; '-dirty' marks uncommitted changes to tracked files."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def dvc_exp_name() -> str:
    """The DVC experiment name under `dvc exp run`; empty for a plain `dvc repro`."""
    return os.environ.get("DVC_EXP_NAME", "")


def directory_digest(path: Path) -> str:
    """The md5 that DVC 3 gives a directory output (`<md5>.dir` in dvc.lock).

    Computed the way dvc-data builds its tree object - the sorted list of
    {relpath, md5} entries serialised as JSON - so the `dataset_digest` tag of
    an MLflow run is the same string `dvc.lock` records for the dataset.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: dataset directory not found (run the dataset stage first)")
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        entries.append({"md5": digest.hexdigest(), "relpath": file.relative_to(path).as_posix()})
    entries.sort(key=lambda entry: entry["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(blob).hexdigest() + ".dir"


def run_tags(dataset_digest: str, stage: str) -> dict[str, str]:
    return {
        "git_commit": git_commit(),
        "dvc_exp_name": dvc_exp_name(),
        "dataset_digest": dataset_digest,
        "stage": stage,
    }


def log_dataset_input(dataset_dir: Path, digest: str, context: str) -> None:
    """Log the spectrogram dataset's manifest as an MLflow dataset input of the active run."""
    import mlflow
    import pandas as pd

    frames = [pd.read_csv(p) for p in sorted(Path(dataset_dir).glob("manifest_*.csv"))]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    # Floats, not ints, in the schema MLflow infers: it warns that ints cannot hold NaN.
    manifest = manifest.astype({c: "float64" for c in manifest.select_dtypes("integer").columns})
    dataset = mlflow.data.from_pandas(
        manifest,
        source=str(Path(dataset_dir).resolve()),
        name="spectrograms",
        digest=digest[:36],
    )
    mlflow.log_input(dataset, context=context)


def model_requirements() -> list[str]:
    """Pinned requirements of a logged Keras model.

    Stated rather than inferred: MLflow's inference re-imports the model in a
    subprocess, which costs seconds per trial and finds nothing more.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("tensorflow", "keras", "numpy")]


class _KerasFlavor:
    """`mlflow.keras` with its model folder created before anything is written to it.

    MLflow 3.17's `mlflow.keras.save_model` writes the input example before it
    creates the model folder, so `log_model(..., input_example=...)` fails with
    FileNotFoundError. Everything else is `mlflow.keras` itself.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> Any:
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        return mlflow.keras.save_model(path=path, **kwargs)


def log_keras_model(model: Any, signature: Any = None, input_example: Any = None) -> Any:
    """Log a Keras 3 model (MLflow keras flavor) to the active run; returns its ModelInfo."""
    from mlflow.models import Model

    return Model.log(
        artifact_path=None,
        name="model",
        flavor=_KerasFlavor,
        model=model,
        signature=signature,
        input_example=input_example,
        pip_requirements=model_requirements(),
    )


# A server that goes away mid-stage ----------------------------------------------------

#: MLflow's own HTTP retries, as our stages set them unless the environment already does.
#: urllib3 retries at once, then backs off factor * 2**(n-1) s before retry n: with 6
#: retries and factor 2 that is 4 + 8 + 16 + 32 + 64 = 124 s (+ up to 1 s jitter each)
#: before a request to a server that refuses connections gives up - enough to ride out a
#: restart, bounded for one that stays down. A server that accepts connections but never
#: answers costs up to the timeout (30 s) per attempt on top.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class ServerUnreachable(UserError):
    """The tracking server stopped answering mid-stage and MLflow's retries ran out."""


def set_http_retry_defaults() -> None:
    """HTTP_RETRY_DEFAULTS for every MLflow request of this process; the environment wins."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def server_wait_s() -> int:
    """Seconds MLflow keeps retrying one request to a server that refuses connections."""

    def setting(name: str) -> int:
        raw = os.environ.get(name, HTTP_RETRY_DEFAULTS[name])
        return int(raw) if raw.strip().isdigit() else int(HTTP_RETRY_DEFAULTS[name])

    retries = setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    factor = setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    # urllib3: no pause before the first retry, factor * 2**(n-1) s (at most 120) before retry n.
    return sum(min(120, factor * 2 ** (n - 1)) for n in range(2, retries + 1))


def is_unreachable(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it came from, is a failure to reach the server.

    MLflow re-raises a connection failure as a plain MlflowException whose context
    is the `requests` error; an answer from the server (404, a bad parameter) is not
    a connection failure and keeps its own message.
    """
    import requests

    kinds = (
        ServerUnreachable,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,  # 5xx until the retries ran out: a server starting up
    )
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


_WAITED_S: list[int] = []  # set by give_up_on_server: the wait that ran out


def unreachable(during: str, then: str = "") -> ServerUnreachable:
    """The one-line error for a server that stayed away longer than `server_wait_s()`."""
    waited = _WAITED_S[0] if _WAITED_S else server_wait_s()
    message = f"MLflow server at {tracking_uri()} unreachable for {waited} s during {during}"
    return ServerUnreachable(f"{message}; {then}" if then else message)


def give_up_on_server() -> None:
    """No more waiting in this process: closing its runs on the way out fails fast instead
    of sitting through another round of retries against a server that is gone."""
    if not _WAITED_S:
        _WAITED_S.append(server_wait_s())
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
