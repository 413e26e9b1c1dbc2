"""`deepfake-audio predict`: score audio files with a registered (or local) model.

The default model is `models:/<registry.model_name>@champion` of the project's
params.yaml. Given `--model` (a models:/ or runs:/ URI), predict needs no project
checkout at all, only `MLFLOW_TRACKING_URI`: the model carries its features, its
threshold and the code that computes them. It is loaded as the MLflow pyfunc that
`mlflow models serve` runs (`serving.pyfunc.DetectorModel`), and
given the files as its `path` column: predict and the server give the same
numbers, from the same decoding, the features the model was trained with, the
same windows over long recordings, the model's own calibration (fitted on
validation) and its threshold. A served model refuses path rows unless its operator
names a folder (`serving.limits`); predict tells the model it loaded in its own process
that the files are the user's own (`Limits.local()`: any path the user named, the
dataset's one-hour cap), and keeps passing paths, so errors name the files.

Each file gets `fake_probability` (calibrated: P(spoof) at the model's target prior),
`label` and `score` (the raw mean bona fide logit, higher = bona fide). The CSV columns
are `path,fake_probability,label,score`: `score` last, so readers of the first three keep
working.

A local `.keras` file carries none of that: it is scored with the features in
params.yaml, threshold 0 and no calibration (probability sigmoid(-logit)). A version
registered before the pyfunc existed (Keras flavor only) is scored the same way, with the
threshold from its registry tags.

A file that cannot be decoded gets its own error row; the others are still
scored, and the exit code (1) says that something failed.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deepfake_audio.config.kinds import FeatureKind
from deepfake_audio.config.params import Params, features_from_dict
from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp.audio import AUDIO_SUFFIXES
from deepfake_audio.serving.limits import Limits

Scorer = Callable[[Any], Any]  # pandas DataFrame with a `path` column -> scores DataFrame
CSV_COLUMNS = ("path", "fake_probability", "label", "score")
# The pyfunc flavor's loader of a `DetectorModel`: MLflow 3 records models from code under
# `loaders.code_model`, older versions pickled ones under `model`. Anything else (the keras
# flavor's own pyfunc, "mlflow.keras") is a Keras-only version registered before the pyfunc.
# Missing the first sent every champion down the Keras-only path, where the served config -
# its features, calibration and threshold - was ignored.
PYFUNC_LOADERS = ("mlflow.pyfunc.loaders.code_model", "mlflow.pyfunc.model")
# Files scored per call: enough windows to fill the network's batches and the decoding
# threads, few enough that a folder of any size is scored in bounded memory (two calls in
# flight hold ~25 MB of log-mel windows for 4 s clips).
CHUNK_FILES = 64
CHUNKS_IN_FLIGHT = 2


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


def _keras_detector(model: Any, params: Params, threshold: float) -> Any:
    from deepfake_audio.dsp.preprocess import resolve
    from deepfake_audio.serving import pyfunc as serving

    # The preprocessing a dataset of these params would have stored with the features.
    prep = resolve(
        params.data.preprocess, params.data.audio_source(), params.features.feature_kind.audio
    )
    features = params.section("features") | ({"preprocess": prep.to_dict()} if prep else {})
    config = serving.make_config(features, threshold)
    try:
        return serving.Detector(model, config, Limits.local())
    except ValueError as exc:
        raise UserError(f"{exc} (features from params.yaml)") from None


def _registry_threshold(uri: str) -> float:
    """The `threshold` tag of a models:/ URI's version (0 for other URIs)."""
    if not uri.startswith("models:/"):
        return 0.0
    from mlflow.tracking import MlflowClient

    name, _, ref = uri[len("models:/") :].partition("@")
    client = MlflowClient()
    version = (
        client.get_model_version_by_alias(name, ref)
        if ref
        else client.get_model_version(*name.split("/", 1))
    )
    return float(version.tags.get("threshold", 0.0))


DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
# A Python-model pyfunc: pickled (`mlflow.pyfunc.model`, older versions) or "models from code"
# (`loaders.code_model`, what `serving.log_model` logs). Either is our `DetectorModel`, which
# brings its features and threshold; missing the second sent every version logged from code
# down the Keras-only path (params.yaml's features), or refused it without a project.
PYFUNC_LOADERS = ("mlflow.pyfunc.model", "mlflow.pyfunc.loaders.code_model")


def _check_server(uri: str) -> None:
    """Fail in seconds, with the address, when the tracking server does not answer."""
    import urllib.error
    import urllib.request

    tracking = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking)
    if not tracking.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking.rstrip("/") + "/health", timeout=5) as response:
            if response.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError):
        pass
    raise UserError(
        f"--model {uri}: no MLflow tracking server answers at {tracking} "
        "(set MLFLOW_TRACKING_URI, or start one with `deepfake-audio server start`)"
    )


def load_model(params: Params | None, uri: str | None) -> tuple[Scorer, FeatureKind, str]:
    """A scorer for DataFrames of paths, the model's feature kind, and the URI used.

    `params` is needed only for the project's default model and for a bare .keras file;
    a registered or logged model brings everything else itself.
    """
    scorer, kind, uri, _ = load_detector(params, uri)
    return scorer, kind, uri


def load_detector(params: Params | None, uri: str | None) -> tuple[Scorer, FeatureKind, str, Any]:
    """`load_model`'s three, and the `pyfunc.Detector` behind the scorer (for timelines)."""
    if uri is None:
        if params is None:
            raise UserError("predict: give --model, or run it in the project (params.yaml)")
        uri = f"models:/{params.registry.model_name}@champion"
    if Path(uri).suffix == ".keras":
        if params is None:
            raise UserError(f"--model {uri}: a bare .keras file needs the project's params.yaml")
        from deepfake_audio.serving import pyfunc as serving

        if not Path(uri).is_file():
            raise UserError(f"{uri}: model file not found")
        from deepfake_audio.serving.inference import configure_threads

        configure_threads()  # what DetectorModel.load_context does for a logged model
        try:
            keras_model = serving.load_keras(uri)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
            raise UserError(f"{uri}: not a loadable Keras model ({type(exc).__name__})") from None
        detector = _keras_detector(keras_model, params, 0.0)
        return detector.score, detector.kind, uri, detector
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _check_server(uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(uri)
        loader = str(info.flavors.get("python_function", {}).get("loader_module") or "")
        # Our detector is a python model ("models from code": mlflow.pyfunc.loaders.
        # code_model); a Keras-only version's pyfunc loader is mlflow.keras.
        if loader in PYFUNC_LOADERS:
            model = mlflow.pyfunc.load_model(uri)
            python_model = model.unwrap_python_model()
            config = getattr(python_model, "config", None)
            if config is None:
                raise UserError(f"--model {uri}: not a deepfake-audio detector")
            # The user's files, in the user's process: path rows allowed (a version logged
            # before serving denied them has no such switch, and reads any path anyway).
            local = getattr(python_model, "score_local_files", None)
            if local is not None:
                local()
            kind = features_from_dict(config["features"]).feature_kind
            return model.predict, kind, uri, getattr(python_model, "detector", None)
        if params is None:
            raise UserError(
                f"--model {uri}: a Keras-only version (registered before the pyfunc) needs "
                "the project's params.yaml for its features"
            )
        keras_model = mlflow.keras.load_model(uri)
        threshold = _registry_threshold(uri)
    except MlflowException as exc:
        raise UserError(f"--model {uri}: cannot load ({exc.message.splitlines()[0]})") from None
    detector = _keras_detector(keras_model, params, threshold)
    return detector.score, detector.kind, uri, detector


def _scores(scorer: Scorer, files: list[Path]) -> Iterator[tuple[Path, Any]]:
    """(file, its output row) in order, scored `CHUNK_FILES` files a call, two calls at a time.

    Chunks rather than one call for the whole folder: the windows of every file of a call
    are held in memory at once, so memory stays flat whatever the folder's size. Two calls in
    flight overlap one chunk's network (TensorFlow, no GIL) with the next one's decoding.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    chunks = [files[i : i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]

    def score(chunk: list[Path]) -> Any:
        return scorer(pd.DataFrame({"path": [str(path) for path in chunk]}))

    with ThreadPoolExecutor(CHUNKS_IN_FLIGHT, thread_name_prefix="deepfake-audio-chunk") as pool:
        pending = []
        for chunk in chunks:
            pending.append((chunk, pool.submit(score, chunk)))
            while len(pending) > CHUNKS_IN_FLIGHT or (pending and pending[0][1].done()):
                done, future = pending.pop(0)
                yield from zip(done, (out for _, out in future.result().iterrows()), strict=True)
        for done, future in pending:
            yield from zip(done, (out for _, out in future.result().iterrows()), strict=True)


def score_files(scorer: Scorer, files: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path, out in _scores(scorer, files):
        error = out.get("error") or ""
        probability = out.get("fake_probability")
        score = out.get("score")  # absent from a model logged before scores were served
        rows.append(
            {
                "path": str(path),
                "fake_probability": "" if error else round(float(probability), 6),
                "label": "error" if error else str(out["label"]),
                "score": "" if error or score is None else round(float(score), 6),
                "windows": int(out.get("windows", 0) or 0),
                "error": str(error),
            }
        )
    return rows


def run(
    params: Params | None,
    inputs: list[str],
    model_uri: str | None,
    fmt: str,
    timing: bool = False,
) -> int:
    """Score the files; with `timing`, say on stderr how long loading and scoring took."""
    import time

    for item in inputs:  # before the (slow) model load
        if not Path(item).exists():
            raise UserError(f"{item}: no such file or directory")
    started = time.perf_counter()
    scorer, kind, uri = load_model(params, model_uri)
    loaded = time.perf_counter()
    if not kind.audio:
        from deepfake_audio.dsp.images import IMAGE_SUFFIXES

        files = expand(inputs, IMAGE_SUFFIXES)
    else:
        files = expand(inputs)
    rows = score_files(scorer, files)
    if timing:  # start-up apart from scoring: the two scale differently
        seconds = time.perf_counter() - loaded
        windows = sum(row["windows"] for row in rows)
        print(
            f"deepfake-audio: timing: model {uri} loaded in {loaded - started:.2f} s; "
            f"{len(files)} files ({windows} windows) scored in {seconds:.3f} s "
            f"({len(files) / max(seconds, 1e-9):.1f} files/s)",
            file=sys.stderr,
        )
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(tuple(row[name] for name in CSV_COLUMNS))
    failed = [row for row in rows if row["error"]]
    for row in failed:
        print(f"deepfake-audio: error: {row['error']}", file=sys.stderr)
    return 1 if failed else 0


def run_timeline(
    params: Params | None,
    inputs: list[str],
    model_uri: str | None,
    fmt: str,
    hop: float | None = None,
    smooth: int | None = None,
    plots: str | None = None,
    timing: bool = False,
) -> int:
    """`predict --timeline`: each file's windows and fake ranges (serving/timeline.py).

    JSON: one object per file (its path, the file's result, `ranges`, `summary` and
    `windows`). CSV: one row per window, `path` first. The ranges in words go to stderr
    either way ("a.wav: fake from 12.5 s to 19.0 s"), and with `plots` a PNG per file
    (`<plots>/<file stem>.timeline.png`). Files are streamed one at a time: memory stays
    flat whatever their length.
    """
    from deepfake_audio.serving import timeline
    from deepfake_audio.serving.pyfunc import RowError

    for item in inputs:
        if not Path(item).exists():
            raise UserError(f"{item}: no such file or directory")
    if smooth is not None and (smooth < 1 or smooth % 2 == 0):
        raise UserError(f"--smooth {smooth}: expected an odd number of windows (1 = none)")
    _, kind, uri, detector = load_detector(params, model_uri)
    if detector is None:
        raise UserError(f"--model {uri}: a timeline needs a deepfake-audio detector")
    if not kind.audio:
        raise UserError(f"--model {uri}: a timeline needs an audio model, this one takes pictures")
    try:  # a bad --hop fails once, before any file
        timeline.hop_samples(hop, detector.features.n_samples, detector.features.sample_rate, 0.5)
    except ValueError as exc:
        raise UserError(f"--hop: {exc}") from None
    files = expand(inputs)
    results: list[dict[str, Any]] = []
    failed = 0
    writer = csv.writer(sys.stdout) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(("path", *timeline.CSV_COLUMNS))
    import time

    for path in files:
        started = time.perf_counter()
        try:
            found = detector.timeline("path", str(path), hop, smooth)
        except RowError as exc:
            failed += 1
            print(f"deepfake-audio: error: {exc}", file=sys.stderr)
            results.append({"path": str(path), "error": str(exc)})
            continue
        if timing:
            print(
                f"deepfake-audio: timing: {path} ({found.duration:.1f} s of audio, "
                f"{len(found.scores)} windows) scored in {time.perf_counter() - started:.3f} s",
                file=sys.stderr,
            )
        said = "; ".join(found.summary()) or "no fake range"
        print(f"{path}: {found.label} ({found.fake_probability:.3f}); {said}", file=sys.stderr)
        if plots is not None:
            timeline.write_png(found, Path(plots) / f"{path.stem}.timeline.png", title=path.name)
        if writer is not None:
            for row in found.rows():
                writer.writerow((str(path), *(row[name] for name in timeline.CSV_COLUMNS)))
        else:
            results.append({"path": str(path), "error": "", **found.to_dict()})
    if fmt == "json":
        print(json.dumps(results, indent=2))
    return 1 if failed else 0
