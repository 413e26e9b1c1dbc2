"""A small raw-waveform CNN (`model.architecture: wave_cnn`, `features.kind: waveform`).

The smallest network that takes the waveform kind end to end (tests, quick runs on a CPU);
the raw-waveform architecture worth training is AASIST. It reads the notebook's
hyperparameter names, so its trials line up with the others in the MLflow compare view.
"""

from __future__ import annotations

from typing import Any

import keras

# The feature kind it takes: the raw waveform.
INPUTS = ("waveform",)
SEARCH_SPACE: dict[str, Any] = {
    # The notebook's ranges and knob names (filters_1: the front end's filters).
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
# The learned front end: 8 ms filters every 1 ms at 16 kHz, like a filterbank's frames.
FRONT_KERNEL = 128
FRONT_STRIDE = 16


def wave_cnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Strided 1-D front end, then two depthwise-separable 1-D blocks and global pooling.

    filters_1 sets the front end's filters; filters_2, kernel_size_1 and kernel_size_2 the
    blocks after it (kernels counted in front-end frames, 1 ms each, after 4x pooling).
    """

    def block(x: keras.KerasTensor, layer: keras.layers.Layer, pool: int) -> keras.KerasTensor:
        x = layer(x)
        if pool > 1:
            x = keras.layers.MaxPooling1D(pool_size=pool)(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return keras.layers.Activation("relu")(x)

    f1, f2 = values["filters_1"], values["filters_2"]
    k1, k2 = values["kernel_size_1"], values["kernel_size_2"]
    front = keras.layers.Conv1D(
        f1, FRONT_KERNEL, strides=FRONT_STRIDE, padding="same", use_bias=False
    )
    x = block(inputs, front, pool=4)
    x = block(x, keras.layers.SeparableConv1D(f2, k1, padding="same", use_bias=False), pool=4)
    x = block(x, keras.layers.SeparableConv1D(f2, k2, padding="same", use_bias=False), pool=1)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.layers.Dense(values["dense_units"], activation="relu")(x)
