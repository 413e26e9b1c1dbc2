"""Building a compiled model of any architecture from search-space values, and loading one.

`compact_cnn` (ours) and `seed_cnn` (the notebook's) read the notebook's hyperparameter
names, so their trials line up in the MLflow compare view; `tdnn` (params.yaml's default)
is a frame-level network with statistics pooling that searches its widths; the field's reference
countermeasures - `lcnn` (LFCC-LCNN) and `aasist`/`aasist_l` (raw waveform) - keep their
published layer plans and search only learning rate, optimizer and dropout
(`tune.search_space.<architecture>` in params.yaml).

The architectures are the files of `models/` that `config.architectures` lists; importing
this module imports every one of them (by name, `ARCHITECTURES`), which also registers their
custom layers with Keras, so that `load` (and serving) can rebuild a saved model in safe mode.

Every model starts with a Normalization layer that holds the training split's statistics
(per mel bin / coefficient, per colour channel, or one for a waveform): the saved model
takes raw features, and serving cannot forget to normalise. A kind with a pretrained front
end (`features.kind: whisper`) starts with that instead: Whisper's frozen encoder on the
stored samples at their own level (it was trained on audio, not on standardised samples),
its frames pooled (`features.whisper`) or, for a frame head (`FRAMES`), the frames
themselves, and the architecture normalises what it gets.
Every model ends in a single float32 logit, "higher = more bona fide" (the ASVspoof score
convention). The notebook ended in a sigmoid; a logit carries the same ranking without
saturating into ties, which would make the EER meaningless.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from deepfake_audio.config import architectures
from deepfake_audio.config.params import (
    Choice,
    FeaturesParams,
    FloatRange,
    Hyperparameter,
    IntRange,
    Params,
)
from deepfake_audio.core.errors import UserError

# Imported here, not where it is used: importing it registers Whisper's layers with Keras, which
# `load` (and serving) need to rebuild a saved model in safe mode.
from deepfake_audio.frontends.whisper import whisper_encoder
from deepfake_audio.models.tdnn import StatisticsPooling

# The architecture modules are imported by name; this tells the import graph
# (`core.imports`: what a served model ships, what a DVC stage depends on) that this module
# imports every module of the package.
LOADS_PACKAGE = "deepfake_audio.models"


def declare(hp: Any, name: str, spec: Hyperparameter) -> Any:
    """Declare one search-space entry from params.yaml on a keras-tuner HyperParameters."""
    if isinstance(spec, IntRange):
        return hp.Int(name, min_value=spec.min, max_value=spec.max, step=spec.step)
    if isinstance(spec, FloatRange):
        sampling = "log" if spec.sampling == "log" else "linear"
        return hp.Float(name, min_value=spec.min, max_value=spec.max, sampling=sampling)
    if isinstance(spec, Choice):
        return hp.Choice(name, values=list(spec.values))
    raise TypeError(f"unknown hyperparameter spec {spec!r}")


def _normalisation(mean: np.ndarray, std: np.ndarray, axis: int) -> keras.layers.Layer:
    return keras.layers.Normalization(
        axis=axis,
        mean=mean.tolist(),
        variance=(std.astype(np.float64) ** 2).tolist(),
        name="normalise",
    )


Body = Callable[[dict[str, Any], keras.KerasTensor], keras.KerasTensor]


def _bodies() -> tuple[dict[str, Body], frozenset[str]]:
    """Each architecture's function from hyperparameter values and the normalised input to
    the layer before the logit (`<name>` of `models/<name>.py`), and the names of those that
    read a front end's frame sequence rather than its pooled vector (`FRAMES = True`)."""
    modules = {
        name: importlib.import_module(architecture.module)
        for name, architecture in architectures.catalogue().items()
    }
    bodies = {name: getattr(module, name) for name, module in modules.items()}
    frames = frozenset(name for name, module in modules.items() if getattr(module, "FRAMES", False))
    return bodies, frames


ARCHITECTURES, FRAME_HEADS = _bodies()


def _whisper_frontend(
    inputs: keras.KerasTensor, features: FeaturesParams, pool: bool = True
) -> keras.KerasTensor:
    """(batch, samples, 1) stored samples -> Whisper's pooled frames (batch, 2 * d_model for
    mean_std, d_model for mean): the frozen encoder of features.whisper, in the model; with
    `pool` False the frames themselves, (batch, frames, d_model), for a frame head."""
    settings = features.whisper
    log_mel, encoder = whisper_encoder(settings.model, settings.layers)
    x = keras.layers.Reshape((inputs.shape[1],), name="samples")(inputs)
    x = encoder(log_mel(x))
    if not pool:
        return x
    if settings.pooling == "mean":
        return keras.layers.GlobalAveragePooling1D(name="whisper_mean")(x)
    return StatisticsPooling(name="whisper_mean_std")(x)


def build(
    values: dict[str, Any],
    architecture: str,
    input_shape: tuple[int, ...],
    mean: np.ndarray,
    std: np.ndarray,
    norm_axis: int = 1,
    features: FeaturesParams | None = None,
) -> keras.Model:
    """A compiled model for one set of hyperparameter values.

    `norm_axis` is where the dataset's statistics run: 1 for spectral rows (mel
    bins, cepstral coefficients), 3 for the colour channels of images, 2 for the one
    channel of a waveform input (n_samples, 1): a single mean and variance over all samples.
    `features` (the dataset's) says whether a pretrained front end comes first instead
    (`FeatureKind.frontend`); without them, an architecture that takes only such a kind gets
    its front end's default settings.
    """
    name = "image" if input_shape[-1] == 3 else "features"
    inputs = keras.Input(shape=input_shape, name=name)
    if features is None and architectures.catalogue()[architecture].inputs == ("whisper",):
        features = FeaturesParams(kind="whisper")
    if features is not None and features.feature_kind.frontend == "whisper":
        x = _whisper_frontend(inputs, features, pool=architecture not in FRAME_HEADS)
    else:
        x = _normalisation(mean, std, norm_axis)(inputs)
    x = ARCHITECTURES[architecture](values, x)
    # float32 output even under a mixed_float16 policy, so logits stay precise.
    logit = keras.layers.Dense(1, dtype="float32", name="bonafide_logit")(x)
    model = keras.Model(inputs, logit, name=architecture)
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}
    # The notebook tuned learning_rate but never passed it on; here it reaches the optimizer.
    optimizer = optimizers[values["optimizer"]](learning_rate=values["learning_rate"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )
    return model


def hypermodel(
    params: Params,
    input_shape: tuple[int, ...],
    mean: np.ndarray,
    std: np.ndarray,
    norm_axis: int = 1,
    features: FeaturesParams | None = None,
):
    """A keras-tuner build function over the search space in params.yaml (`features`: the
    dataset's, as `build` takes them; params.features when not given)."""
    features = params.features if features is None else features

    def build_from_hp(hp: Any) -> keras.Model:
        values = {name: declare(hp, name, spec) for name, spec in params.tune.search_space.items()}
        return build(values, params.model.architecture, input_shape, mean, std, norm_axis, features)

    return build_from_hp


def load(path: str | Path) -> keras.Model:
    """Load a saved .keras model in safe mode (no arbitrary code), with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found (run `dvc repro train`)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise UserError(
            f"{path}: not a loadable Keras model ({type(exc).__name__}); "
            "delete it and run `dvc repro train` to rebuild it"
        ) from None
