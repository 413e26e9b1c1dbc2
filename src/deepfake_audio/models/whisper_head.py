"""A pooled head on Whisper's frozen encoder (`model.architecture: whisper_head`).

`features.kind: whisper` puts Whisper's encoder (deepfake_audio.frontends.whisper: the conv
stem and the first `features.whisper.layers` blocks, frozen) in the model before this head,
and pools its frames (`features.whisper.pooling`: each dimension's mean and standard
deviation over the clip by default), so the head gets one vector a clip: 768 numbers for
tiny.en. A batch normalisation standardises them (the encoder's dimensions differ in scale by
orders of magnitude), then a linear probe (`hidden_units: 0`, the issue 20 probe's logistic
regression) or one hidden layer; `models.network.build` adds the logit. Only the head trains.
"""

from __future__ import annotations

from typing import Any

import keras

# The feature kind it takes: Whisper's encoder frames, pooled.
INPUTS = ("whisper",)
SEARCH_SPACE: dict[str, Any] = {
    "hidden_units": [0, 128],  # 0: a linear probe on the pooled frames
    "dropout": [0.0, 0.3],
    "learning_rate": {"min": 1.0e-4, "max": 3.0e-3, "sampling": "log"},
    "optimizer": ["adam"],
}

# Keras' default batch-norm momentum (0.99) stalls on small corpora; 0.9 does not.
BN_MOMENTUM = 0.9


def whisper_head(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """(batch, features) pooled Whisper frames -> the layer before the logit."""
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_norm")(inputs)
    if values["dropout"]:
        x = keras.layers.Dropout(values["dropout"])(x)
    if values["hidden_units"]:
        x = keras.layers.Dense(values["hidden_units"], activation="relu", name="head_hidden")(x)
        if values["dropout"]:
            x = keras.layers.Dropout(values["dropout"])(x)
    return x
