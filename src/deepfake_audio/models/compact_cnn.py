"""Our compact log-mel CNN (`model.architecture: compact_cnn`)."""

from __future__ import annotations

from typing import Any

import keras

# The feature kinds it takes: a time-frequency map, or the notebook's pictures.
INPUTS = ("logmel", "lfcc", "image")
SEARCH_SPACE: dict[str, Any] = {
    # The notebook's ranges and knob names, so its trials line up with the seed's.
    "filters_1": {"min": 32, "max": 128, "step": 32},
    "filters_2": {"min": 64, "max": 256, "step": 64},
    "kernel_size_1": [3, 5],
    "kernel_size_2": [3, 5],
    "dense_units": {"min": 64, "max": 256, "step": 64},
    "learning_rate": {"min": 1.0e-5, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam", "rmsprop"],
}

# Keras' default batch-norm momentum (0.99) stalls on small corpora; 0.9 does not.
BN_MOMENTUM = 0.9


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
