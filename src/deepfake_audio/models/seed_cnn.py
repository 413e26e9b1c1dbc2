"""The notebook's 2-layer CNN (`model.architecture: seed_cnn`), kept to reproduce its run."""

from __future__ import annotations

from typing import Any

import keras

# The feature kinds it takes: a time-frequency map, or the notebook's pictures.
INPUTS = ("logmel", "lfcc", "image")
SEARCH_SPACE: dict[str, Any] = {
    # The notebook's own ranges.
    "filters_1": {"min": 32, "max": 128, "step": 32},
    "filters_2": {"min": 64, "max": 256, "step": 64},
    "kernel_size_1": [3, 5],
    "kernel_size_2": [3, 5],
    "dense_units": {"min": 64, "max": 256, "step": 64},
    "learning_rate": {"min": 1.0e-5, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam", "rmsprop"],
}


def seed_cnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The notebook's 2-layer CNN, layer for layer (Flatten into a wide Dense included)."""
    x = keras.layers.Conv2D(values["filters_1"], values["kernel_size_1"], activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Conv2D(values["filters_2"], values["kernel_size_2"], activation="relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=2)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(values["dense_units"], activation="relu")(x)
