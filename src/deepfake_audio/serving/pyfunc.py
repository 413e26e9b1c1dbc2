"""The registered model: raw audio in, `fake_probability` and `label` out.

What the train stage logs and the register stage registers is an MLflow pyfunc
(`DetectorModel`) around the trained Keras model and a small JSON config: the
features section the model was *trained* with (from the dataset's stats.json,
not today's params.yaml), its input shape and the decision threshold chosen on
validation. `mlflow models serve -m models:/<name>@champion` and
`deepfake-audio predict` both go through it:

    input   a DataFrame with exactly one of the columns
              audio_base64   the bytes of any file libsndfile decodes, base64
              path           a file below the folder the operator names with
                             DEEPFAKE_AUDIO_SERVE_ROOT (none by default: path rows are
                             refused); `deepfake-audio predict` reads the user's own files
            (image models - features.kind: image - take image_base64 or path of a PNG/JPG)
    output  fake_probability  P(spoof | audio) at the config's `target_prior`: the mean bona
                              fide logit through the calibration fitted on validation (a
                              log-likelihood ratio), then Bayes' rule; a config without a
                              calibration (format 1, or `calibration.method: none`) gives
                              sigmoid(-mean logit) as before
            label             "real" when the mean logit is above the threshold, else "fake";
                              "error" for a row that could not be scored
            windows           how many model-length windows the row was scored in
            error             empty, or the one-line reason the row was not scored
            score             the raw mean bona fide logit (higher = bona fide, the ASVspoof
                              convention), for anyone who calibrates or thresholds it themselves

The threshold is on the raw score, so `label` never depends on rounding in the calibration:
the train stage converts its rule (the Bayes threshold of `calibration.target_prior`,
`c_miss` and `c_fa` on the calibrated LLR, or the validation EER threshold) into the raw
logit that makes the same decisions (`Calibration.raw_threshold`).

Every row goes through the training code: `audio.load_wave` (decode, mono,
resample, loudness), `dsp.preprocess.prepare` (DC, silence, speech level, short clips: the
dataset's `data.preprocess`, stored in the config's features section as ``preprocess``;
absent means none) and `dsp.features.clip_features` (log-mel or LFCC), or
`images.load_image`. A recording no longer than the training clip is padded
as in training; a longer one is cut into windows of the training length every
half window (the last one aligned with the end), each window is scored, and
the window logits are averaged. The mean of logits, rather than the maximum
fake probability, keeps the aggregate on the scale the validation threshold
was chosen on: a per-window maximum drifts towards "fake" the more windows a
recording has, so its false alarms would grow with the length of the file.
(The price: a short spoofed insert in a long genuine recording is diluted.)

A row that cannot be decoded gets an `error` and `label` "error"; the other
rows of the batch are still scored. So does a row the served model's `limits.Limits`
refuse: a path outside the serving root (or any path when none is named), audio longer
than DEEPFAKE_AUDIO_MAX_SECONDS (600 s), a base64 file larger than
DEEPFAKE_AUDIO_MAX_BYTES (25 MB). A batch without exactly one of the input
columns is refused as a whole.

The logged model also carries the `keras` flavor over the very same .keras
file, so `mlflow.keras.load_model(uri)` still returns the bare network
(features in, bona fide logit out) without a second copy of the weights.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from deepfake_audio.config.kinds import FeatureKind
from deepfake_audio.config.params import features_from_dict
from deepfake_audio.dsp.preprocess import Preprocess
from deepfake_audio.scoring.calibration import Calibration
from deepfake_audio.serving.inference import (
    ROWS_PER_THREAD,
    Network,
    configure_threads,
    row_threads,
)
from deepfake_audio.serving.limits import Limits, Refused

# 2: adds `calibration` (a `Calibration.to_dict`, or null) and `target_prior`. Format 1
# configs (no calibration) are still read: their fake_probability is sigmoid(-logit).
CONFIG_FORMAT = 2
KERAS_ARTIFACT = "keras_model"
CONFIG_ARTIFACT = "config"
KERAS_FILE = "model.keras"  # the keras flavor's loader looks for <data>/model.keras
AUDIO_COLUMNS = ("audio_base64", "path")
IMAGE_COLUMNS = ("image_base64", "path")
# `score` is last: clients that read the first four columns by position keep working.
OUTPUT_COLUMNS = ("fake_probability", "label", "windows", "error", "score")
# Windows start every half window: each moment of a long recording is seen by two windows,
# once away from a window edge.
WINDOW_HOP = 0.5
# The package's own imports at scoring time, pinned in the logged model's requirements.
SERVING_PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "scipy",
    "pandas",
    "soundfile",
    "pillow",
    "pyyaml",
    "cloudpickle",
    "threadpoolctl",
)


# --- config --------------------------------------------------------------------


def make_config(
    features: dict[str, Any],
    threshold: float,
    calibration: Calibration | None = None,
    target_prior: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The serving config stored next to the Keras model (JSON-serialisable).

    Args:
        threshold: raw mean-logit threshold; a clip is "real" above it.
        calibration: the score -> LLR map fitted on validation; None serves sigmoid(-logit)
            as format 1 did.
        target_prior: P(spoof) that turns the LLR into `fake_probability`; required with a
            calibration (a probability without a stated prior means nothing).
    """
    fp = features_from_dict(features)
    if calibration is not None and target_prior is None:
        raise ValueError("a calibrated config needs the target_prior its probabilities assume")
    config = {
        "format": CONFIG_FORMAT,
        "features": features,
        "input_shape": list(fp.input_shape),
        "threshold": float(threshold),
        "calibration": calibration.to_dict() if calibration is not None else None,
        "target_prior": float(target_prior) if target_prior is not None else None,
        "score": "bonafide_logit",
        "aggregation": "mean_logit",
        "window_hop": WINDOW_HOP,
        **extra,
    }
    OutputRule.from_config(config)  # refuse to log a config the model could not serve
    return config


@dataclasses.dataclass(frozen=True)
class OutputRule:
    """How a clip's mean logit becomes the served `fake_probability` and `label`.

    Read from the config once, when the model loads, so a stale or hand-edited config fails
    at load time with its reason rather than on the first request.
    """

    threshold: float
    calibration: Calibration | None = None
    target_prior: float | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OutputRule:
        threshold = float(config["threshold"])
        if math.isnan(threshold):
            raise ValueError("serving config threshold is NaN")
        raw = config.get("calibration")  # absent in format 1
        if raw is None:
            return cls(threshold)
        prior = config.get("target_prior")
        if isinstance(prior, bool) or not isinstance(prior, int | float) or not 0 < prior < 1:
            raise ValueError(f"serving config target_prior {prior!r} is not between 0 and 1")
        return cls(threshold, Calibration.from_dict(raw), float(prior))

    def fake_probability(self, scores: np.ndarray) -> np.ndarray:
        """P(spoof) per mean logit: calibrated at `target_prior`, else sigmoid(-logit)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.calibration is None or self.target_prior is None:
            from scipy.special import expit

            return expit(-scores)
        return self.calibration.fake_probability(scores, self.target_prior)

    def label(self, score: float) -> str:
        return "real" if score > self.threshold else "fake"


def input_columns(kind: FeatureKind) -> tuple[str, str]:
    return AUDIO_COLUMNS if kind.audio else IMAGE_COLUMNS


def signature(kind: FeatureKind) -> Any:
    """Either input column (both optional strings: send exactly one) and the outputs."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", name, required=False) for name in input_columns(kind)])
    outputs = Schema(
        [
            ColSpec("double", "fake_probability"),
            ColSpec("string", "label"),
            ColSpec("long", "windows"),
            ColSpec("string", "error"),
            ColSpec("double", "score"),
        ]
    )
    # `timeline: true` adds each row's windows and fake ranges (serving/timeline.py) as
    # the JSON of a `timeline` column; `timeline_hop` (seconds, 0: half a window) its hop.
    params = ParamSchema(
        [ParamSpec("timeline", "boolean", False), ParamSpec("timeline_hop", "double", 0.0)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


# --- scoring -------------------------------------------------------------------


class RowError(Exception):
    """One input row that cannot be scored; the message is its one-line reason."""


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str | bytes) and len(value) == 0


class Detector:
    """A Keras model and its serving config: DataFrame of inputs in, scores out.

    Plain Python, no MLflow: `DetectorModel` wraps it for the registry, and
    `deepfake-audio predict` uses it directly for a local .keras file. `limits` says which
    rows it reads (default: no path rows, the served caps); a served model's come from
    the environment (`Limits.from_environment`), predict's are `Limits.local()`.
    """

    def __init__(self, model: Any, config: dict[str, Any], limits: Limits | None = None) -> None:
        self.model = model
        self.config = config
        self.limits = Limits() if limits is None else limits
        self.features = features_from_dict(config["features"])
        # What the dataset did between decoding and the cut (None: nothing): done here too.
        self.preprocess = Preprocess.from_dict(config["features"].get("preprocess"))
        self.threshold = float(config["threshold"])
        self.rule = OutputRule.from_config(config)
        self.hop = max(1, int(round(self.features.n_samples * config.get("window_hop", 0.5))))
        self.columns = input_columns(self.features.feature_kind)
        expected = tuple(config.get("input_shape", self.features.input_shape))
        got = tuple(model.input_shape[1:])
        if got != expected:
            raise ValueError(
                f"the Keras model takes inputs of shape {got}, but its serving config "
                f"describes features of shape {expected}"
            )
        # The network compiled once, here, so that no request pays for set-up (inference.py).
        self.network = Network(model)

    @property
    def kind(self) -> FeatureKind:
        return self.features.feature_kind

    def column(self, frame: pd.DataFrame) -> str:
        present = [c for c in self.columns if c in frame.columns]
        if len(present) != 1:
            got = "both" if present else "neither"
            raise ValueError(
                f"this {self.kind.name} model takes a DataFrame with exactly one of the columns "
                f"{' or '.join(self.columns)}; the input has {got}"
            )
        return present[0]

    def source(self, column: str, value: Any) -> tuple[Any, str]:
        """What one row's audio is read from (bytes or a path) and how errors name it.

        `RowError` for a missing value or one the limits refuse (limits.py).
        """
        if _missing(value):
            raise RowError(f"no {column} given")
        if not isinstance(value, str | bytes | os.PathLike):
            raise RowError(f"{column}: expected a string, got {type(value).__name__}")
        try:
            if column.endswith("_base64"):
                return self.limits.base64(value, column), "<bytes>"
            return self.limits.path(os.fsdecode(value))
        except Refused as exc:
            raise RowError(str(exc)) from None

    def windows(self, column: str, value: Any) -> np.ndarray:
        """Model inputs for one row, shape (windows, *input_shape); `RowError` if unusable."""
        from deepfake_audio.core.errors import UserError

        source, name = self.source(column, value)
        limits = self.limits
        fp = self.features
        try:
            if not fp.feature_kind.audio:
                from deepfake_audio.dsp.images import load_image

                image, _ = load_image(source, fp.image_size)
                inputs = image[None].astype(np.float32)
            else:
                from deepfake_audio.dsp.audio import load_wave, sliding_windows
                from deepfake_audio.dsp.features import clip_features
                from deepfake_audio.dsp.preprocess import prepare

                wave = load_wave(
                    source,
                    fp.sample_rate,
                    max_seconds=limits.max_seconds,
                    cap_note=limits.seconds_note,
                )
                named = str(source) if isinstance(source, Path) else name
                wave = prepare(wave, fp.sample_rate, self.preprocess, fp.n_samples, named)
                windows = sliding_windows(wave, fp.n_samples, self.hop, pad=fp.pad)
                inputs = np.empty((len(windows), *fp.input_shape), dtype=np.float32)
                for i, window in enumerate(windows):  # straight into the batch: no stack copy
                    inputs[i] = clip_features(window, fp).reshape(fp.input_shape)
        except (UserError, ValueError) as exc:
            raise RowError(_named(exc, source, name)) from None
        if not np.all(np.isfinite(inputs)):  # the dataset stage rejects these too
            raise RowError(f"{name}: features are not finite")
        return inputs

    def timeline(
        self, column: str, value: Any, hop: float | None = None, smooth: int | None = None
    ) -> Any:
        """One row's `timeline.Timeline` (windows, fake ranges); `RowError` if unusable.

        Streams the audio (memory flat in its length) under the same limits as `score`.
        """
        from deepfake_audio.core.errors import UserError
        from deepfake_audio.serving import timeline

        source, name = self.source(column, value)
        try:
            return timeline.compute(
                self,
                source,
                name,
                hop_seconds=hop,
                smooth=timeline.DEFAULT_SMOOTH if smooth is None else int(smooth),
                max_seconds=self.limits.max_seconds,
                cap_note=self.limits.seconds_note,
            )
        except (UserError, ValueError) as exc:
            raise RowError(_named(exc, source, name)) from None

    def score_timelines(
        self, frame: pd.DataFrame, hop: float | None = None, smooth: int | None = None
    ) -> pd.DataFrame:
        """`score`'s columns from each row's timeline, plus `timeline` (its JSON)."""
        column = self.column(frame)
        rows = []
        for value in frame[column].tolist():
            try:
                found = self.timeline(column, value, hop, smooth)
            except RowError as exc:
                rows.append((None, "error", 0, str(exc) or "cannot be scored", None, ""))
                continue
            rows.append(
                (
                    found.fake_probability,
                    found.label,
                    len(found.scores),
                    "",
                    found.score,
                    json.dumps(found.to_dict()),
                )
            )
        names = (*OUTPUT_COLUMNS, "timeline")
        out = pd.DataFrame(rows, columns=names, index=frame.index)
        out["windows"] = out["windows"].astype("int64")
        return out

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Bona fide logits of a batch of windows, through the network compiled at load."""
        return self.network(inputs).astype(np.float64)

    def row_inputs(self, column: str, values: list[Any]) -> tuple[list[np.ndarray], list[str]]:
        """Every row's windows (none for a row that cannot be scored) and its error or "".

        Rows of a large frame (`deepfake-audio predict` over a folder) are decoded on a few
        threads: decoding, the FFT and the filterbank product release the GIL. A request of a
        row or two stays on the calling thread, where a pool would cost more than it saves.
        """

        def one(value: Any) -> tuple[np.ndarray, str]:
            try:
                return self.windows(column, value), ""
            except RowError as exc:
                empty = np.empty((0, *self.features.input_shape), dtype=np.float32)
                return empty, str(exc) or "cannot be scored"

        workers = min(row_threads(), len(values) // ROWS_PER_THREAD)
        if workers < 2:
            results = [one(value) for value in values]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="deepfake-audio-rows") as pool:
                results = list(pool.map(one, values))
        return [r[0] for r in results], [r[1] for r in results]

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One output row per input row (same index), in the order given."""
        column = self.column(frame)
        parts, errors = self.row_inputs(column, frame[column].tolist())
        counts = [len(p) for p in parts]
        stacked = np.concatenate(parts) if any(counts) else None
        logits = self.logits(stacked) if stacked is not None else np.empty(0)
        means: list[float | None] = []
        start = 0
        for count, error in zip(counts, errors, strict=True):
            if error:
                means.append(None)
                continue
            means.append(float(np.mean(logits[start : start + count])))
            start += count
        scored = np.array([m for m in means if m is not None], dtype=np.float64)
        calibrated = iter(self.rule.fake_probability(scored).tolist())
        probabilities = [None if m is None else next(calibrated) for m in means]
        labels = ["error" if m is None else self.rule.label(m) for m in means]
        dtype = object if any(errors) else "float64"  # None, not NaN: JSON null when served
        return pd.DataFrame(
            {
                "fake_probability": pd.Series(probabilities, index=frame.index, dtype=dtype),
                "label": pd.Series(labels, index=frame.index, dtype=object),
                "windows": pd.Series(counts, index=frame.index, dtype="int64"),
                "error": pd.Series(errors, index=frame.index, dtype=object),
                "score": pd.Series(means, index=frame.index, dtype=dtype),
            }
        )


def _named(exc: Exception, source: Any, name: str) -> str:
    """An error's message with a served path named as the client wrote it, never the root."""
    message = str(exc)
    if isinstance(source, Path) and message.startswith(str(source)):
        message = name + message[len(str(source)) :]
    return message


def load_keras(path: str | os.PathLike) -> Any:
    """The Keras model file for inference: safe mode (no arbitrary code), no optimizer.

    Safe mode rebuilds only layers Keras knows by name: the architectures' own layers
    (Max-Feature-Map, the TDNN's pooling, AASIST's sinc front end and graph attention) are
    registered when `deepfake_audio.models.network` imports every architecture, so it is
    imported first - and, being imported by serving, every architecture file ships with
    every logged model.
    """
    import keras

    import deepfake_audio.models.network  # noqa: F401 - registers the custom layers by name

    return keras.saving.load_model(os.fspath(path), compile=False, safe_mode=True)


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc: `Detector` built from the logged artifacts."""

    def load_context(self, context: Any) -> None:
        from deepfake_audio.core.backend import grow_gpu_memory, import_tensorflow

        configure_threads()  # before TensorFlow's runtime starts: it fixes its pools then
        grow_gpu_memory(import_tensorflow())
        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        if int(config.get("format", 0)) > CONFIG_FORMAT:
            raise ValueError(
                f"serving config format {config['format']} is newer than this code "
                f"understands ({CONFIG_FORMAT})"
            )
        # Which rows it reads: from the operator's environment, deny by default (limits.py).
        limits = Limits.from_environment()
        self.detector = Detector(load_keras(context.artifacts[KERAS_ARTIFACT]), config, limits)

    @property
    def config(self) -> dict[str, Any]:
        return self.detector.config

    def score_local_files(self) -> None:
        """`deepfake-audio predict`: the user's own files, in the user's own process.

        Not reachable by a client of `mlflow models serve`, which only sends frames.
        """
        self.detector.limits = Limits.local()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        params = params or {}
        try:
            if params.get("timeline"):
                hop = float(params.get("timeline_hop") or 0) or None
                return self.detector.score_timelines(model_input, hop)
            return self.detector.score(model_input)
        except ValueError as exc:
            from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


# --- logging -------------------------------------------------------------------


def requirements() -> list[str]:
    """Pinned requirements of the logged model: what scoring imports, at today's versions."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in SERVING_PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


def example_input(kind: FeatureKind, seconds: float = 0.5) -> pd.DataFrame:
    """A small, valid request: `seconds` of a buzzy tone at 8 kHz (half a second; a model
    that drops clips shorter than its window gets one window and a half), or a noise PNG."""
    import io

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    if not kind.audio:
        from PIL import Image

        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        import soundfile

        rate = 8000
        t = np.arange(int(rate * seconds)) / rate
        wave = sum(np.sin(2 * np.pi * 140.0 * k * t) / k for k in range(1, 6))
        wave = 0.1 * wave + 0.005 * rng.normal(size=t.size)
        soundfile.write(buffer, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return pd.DataFrame({input_columns(kind)[0]: [encoded]})


class _DetectorFlavor:
    """`mlflow.pyfunc` plus a `keras` flavor entry over the same .keras artifact."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import keras

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        saved = mlflow_model.flavors["python_function"]["artifacts"][KERAS_ARTIFACT]["path"]
        data, name = os.path.split(saved)
        if name != KERAS_FILE:  # the keras flavor's loader reads <data>/model.keras
            raise RuntimeError(f"unexpected artifact layout {saved!r}")
        mlflow_model.add_flavor(
            "keras",
            data=data,
            keras_version=keras.__version__,
            keras_backend=keras.backend.backend(),
            save_exported_model=False,
        )
        mlflow_model.save(os.path.join(path, "MLmodel"))


_MODEL_CODE = """\
# The deepfake-audio detector (deepfake_audio/serving/pyfunc.py, shipped beside this file).
import mlflow.models

from deepfake_audio.serving.pyfunc import DetectorModel

mlflow.models.set_model(DetectorModel())
"""


def package_dir() -> Path:
    """The deepfake_audio package this process runs: shipped with the model as code."""
    import deepfake_audio

    return Path(deepfake_audio.__file__).resolve().parent


def served_files() -> list[Path]:
    """The package's files a served model runs: this module and what it imports, no more.

    Found by reading the imports (`core.imports`), so a stage module or the tracking
    helpers never travel with a model, and a new import here travels without a list
    to update.
    """
    from deepfake_audio.core import imports

    return imports.files_of(imports.closure([__name__]), package_dir())


def log_model(keras_path: str | os.PathLike, config: dict[str, Any], name: str = "model") -> Any:
    """Log the detector to the active run (a logged model); returns MLflow's ModelInfo.

    The serving part of the package's source goes with the model (`code_paths`:
    `served_files`): a server imports exactly the feature code the model was trained
    with, and needs no installed deepfake-audio (with `--env-manager local` a copy is already
    installed; the shipped one comes first on sys.path there). The model
    itself is "models from code" - a three-line file that instantiates
    `DetectorModel` - so nothing is unpickled when it loads.
    """
    fp = features_from_dict(config["features"])
    kind = fp.feature_kind
    prep = Preprocess.from_dict(config["features"].get("preprocess"))
    seconds = fp.clip_seconds * 1.5 if prep is not None and prep.short == "drop" else 0.5
    with tempfile.TemporaryDirectory(prefix="deepfake-audio-model-") as tmp:
        staging = Path(tmp)
        shutil.copyfile(keras_path, staging / KERAS_FILE)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        code = staging / "code" / "deepfake_audio"
        for relative in served_files():
            target = staging / "code" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package_dir().parent / relative, target)
        # Models from code: the model is this one line, run at load time, not a pickle.
        (staging / "detector.py").write_text(_MODEL_CODE)
        from mlflow.models import Model

        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_DetectorFlavor,
            python_model=str(staging / "detector.py"),
            artifacts={
                KERAS_ARTIFACT: str(staging / KERAS_FILE),
                CONFIG_ARTIFACT: str(staging / "config.json"),
            },
            code_paths=[str(code)],
            signature=signature(kind),
            input_example=example_input(kind, seconds),
            pip_requirements=requirements(),
        )
