"""`deepfake-audio predict`: score audio files with a registered (or local) model.

Audio goes through the same decoding, crop/pad and log-mel code as the
dataset stage, so the model sees at serving time exactly what it saw in
training. A file that cannot be decoded gets its own error row; the others
are still scored, and the exit code (1) says that something failed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.errors import UserError
from deepfake_audio.params import Params
from deepfake_audio.sources.folders import AUDIO_SUFFIXES


def expand(inputs: list[str], suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes))
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{item}: no such file or directory")
    if not files:
        raise UserError(f"no input files ({', '.join(suffixes)}) in {' '.join(inputs)}")
    return files


def load_model(params: Params, uri: str | None) -> tuple[Any, float, str]:
    """The Keras model and its decision threshold (a bona fide logit)."""
    uri = uri or f"models:/{params.registry.model_name}@champion"
    if Path(uri).suffix == ".keras":
        from deepfake_audio import models

        return models.load(uri), 0.0, uri
    import mlflow
    from mlflow.exceptions import MlflowException

    from deepfake_audio import tracking

    tracking.connect(params.mlflow.experiment_name)
    try:
        model = mlflow.keras.load_model(uri)
    except MlflowException as exc:
        raise UserError(f"--model {uri}: cannot load ({exc.message.splitlines()[0]})") from None
    threshold = 0.0
    if uri.startswith("models:/"):
        from mlflow.tracking import MlflowClient

        name, _, ref = uri[len("models:/") :].partition("@")
        client = MlflowClient()
        version = (
            client.get_model_version_by_alias(name, ref)
            if ref
            else client.get_model_version(*name.split("/", 1))
        )
        threshold = float(version.tags.get("threshold", 0.0))
    return model, threshold, uri


def score_files(
    model: Any, files: list[Path], params: Params, threshold: float
) -> list[dict[str, Any]]:
    from deepfake_audio.dataset import BadFile, file_features

    fp = params.features
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            feats, _ = file_features(path, fp)
        except BadFile as exc:
            rows.append(
                {"path": str(path), "fake_probability": "", "label": "error", "error": str(exc)}
            )
            continue
        feats = feats.reshape((1, *fp.input_shape)).astype(np.float32)
        logit = float(np.asarray(model.predict(feats, verbose=0)).ravel()[0])
        rows.append(
            {
                "path": str(path),
                "fake_probability": round(float(1.0 / (1.0 + np.exp(logit))), 6),
                "label": "real" if logit > threshold else "fake",
                "error": "",
            }
        )
    return rows


def run(params: Params, inputs: list[str], model_uri: str | None, fmt: str) -> int:
    if params.features.kind == "image":
        from deepfake_audio.images import IMAGE_SUFFIXES

        files = expand(inputs, IMAGE_SUFFIXES)
    else:
        files = expand(inputs)
    model, threshold, _ = load_model(params, model_uri)
    rows = score_files(model, files, params, threshold)
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(("path", "fake_probability", "label"))
        for row in rows:
            writer.writerow((row["path"], row["fake_probability"], row["label"]))
    failed = [row for row in rows if row["error"]]
    for row in failed:
        print(f"deepfake-audio: error: {row['error']}", file=sys.stderr)
    return 1 if failed else 0
