"""Architectures and the hyperparameter search space.

Both architectures read the notebook's hyperparameter names, so trials of
either line up in the MLflow compare view. Both start with a Normalization
layer that holds the training split's statistics (per mel bin / coefficient,
or per colour channel): the saved model takes raw features, and serving
cannot forget to normalise.

Both end in a single float32 logit, "higher = more bona fide" (the ASVspoof
score convention). The notebook ended in a sigmoid; a logit carries the same
ranking without saturating into ties, which would make the EER meaningless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from deepfake_audio.errors import UserError
from deepfake_audio.params import Choice, FloatRange, Hyperparameter, IntRange, Params

# Keras' default batch-norm momentum (0.99) stalls on small corpora; 0.9 does not.
BN_MOMENTUM = 0.9


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


def seed_cnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The notebook's 2-layer CNN, layer for layer (Flatten into a wide Dense included)."""
    x = keras.layers.Conv2D(values["filters_1"], values["kernel_size_1"], activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Conv2D(values["filters_2"], values["kernel_size_2"], activation="relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(values["dense_units"], activation="relu")(x)


def compact_cnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Our default: the same hyperparameters at a fraction of the compute.

    A strided first convolution and depthwise-separable convolutions after it
    keep the notebook's widest setting (128/256 filters, 5x5 kernels) at about
    100 training clips/s on 2 CPU cores; global average pooling replaces the
    Flatten that made the notebook's dense layer ~50M parameters. Pooling comes
    before batch normalisation, which then runs on a quarter of the activations
    (batch norm on the full-size map halved CPU throughput).
    """

    def block(x: keras.KerasTensor, layer: keras.layers.Layer, pool: bool) -> keras.KerasTensor:
        x = layer(x)
        if pool:
            x = keras.layers.MaxPooling2D(pool_size=2)(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return keras.layers.Activation("relu")(x)

    f1, f2 = values["filters_1"], values["filters_2"]
    k1, k2 = values["kernel_size_1"], values["kernel_size_2"]
    conv = keras.layers.Conv2D(f1, k1, strides=2, padding="same", use_bias=False)
    x = block(inputs, conv, pool=True)
    x = block(x, keras.layers.SeparableConv2D(f2, k2, padding="same", use_bias=False), pool=True)
    x = block(x, keras.layers.SeparableConv2D(f2, 3, padding="same", use_bias=False), pool=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.layers.Dense(values["dense_units"], activation="relu")(x)


ARCHITECTURES = {"seed_cnn": seed_cnn, "compact_cnn": compact_cnn}


def build(
    values: dict[str, Any],
    architecture: str,
    input_shape: tuple[int, int, int],
    mean: np.ndarray,
    std: np.ndarray,
    norm_axis: int = 1,
) -> keras.Model:
    """A compiled model for one set of hyperparameter values.

    `norm_axis` is where the dataset's statistics run: 1 for spectral rows (mel
    bins, cepstral coefficients), 3 for the colour channels of images.
    """
    name = "image" if input_shape[-1] == 3 else "features"
    inputs = keras.Input(shape=input_shape, name=name)
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
    input_shape: tuple[int, int, int],
    mean: np.ndarray,
    std: np.ndarray,
    norm_axis: int = 1,
):
    """A keras-tuner build function over the search space in params.yaml."""

    def build_from_hp(hp: Any) -> keras.Model:
        values = {name: declare(hp, name, spec) for name, spec in params.tune.search_space.items()}
        return build(values, params.model.architecture, input_shape, mean, std, norm_axis)

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
