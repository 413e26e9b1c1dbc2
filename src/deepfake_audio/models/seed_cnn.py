"""The notebook's 2-layer CNN (`model.architecture: seed_cnn`), kept to reproduce its run."""

from __future__ import annotations

from typing import Any

import keras


def seed_cnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The notebook's 2-layer CNN, layer for layer (Flatten into a wide Dense included)."""
    x = keras.layers.Conv2D(values["filters_1"], values["kernel_size_1"], activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Conv2D(values["filters_2"], values["kernel_size_2"], activation="relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(values["dense_units"], activation="relu")(x)
