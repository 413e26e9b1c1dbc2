"""The LFCC-LCNN countermeasure (`model.architecture: lcnn`), the ASVspoof 2021 LA/DF baseline.

Layer plan of the ASVspoof 2021 `Baseline-LFCC-LCNN` (Wang & Yamagishi, after the STC LCNN
of Lavrentyeva et al. 2019): nine convolutions, each followed by a Max-Feature-Map that keeps
the larger of two halves of the channels, four 2x2 max pools, batch norms without scale or
offset, dropout, then two bidirectional LSTMs over time whose output is added to their input
and averaged over time. The baseline ends in a 1-unit linear layer and a sigmoid; here that is
`models.network.build()`'s float32 `bonafide_logit`, trained on logits.

Where this differs from the baseline, and why:

- Layout: the pipeline gives (rows, frames, 1) with rows = coefficients or mel bins; the
  baseline convolves (frames, coefficients). All kernels are square, so this is the same
  network; only the order in which (coefficient, channel) pairs are flattened into the LSTM
  input differs, a fixed permutation of its input weights.
- LSTM biases: a PyTorch LSTM carries two bias vectors (input and recurrent), Keras one; they
  add up, so the function is the same and Keras counts 4 x hidden fewer weights per
  direction (768 fewer over the two bi-LSTMs at 60 LFCC rows).
- Batch-norm momentum 0.9 and epsilon 1e-5 are PyTorch's defaults, not Keras' 0.99 / 1e-3.
- Nothing was cut for CPU cost: the convolutions are ~0.17 GMAC per 2 s clip (60 x 201).
"""

from __future__ import annotations

from typing import Any

import keras

# The feature kinds it takes: frames of coefficients (mel bins or cepstra).
INPUTS = ("logmel", "lfcc")
SEARCH_SPACE: dict[str, Any] = {
    # The baseline trains with Adam at 3e-4.
    "learning_rate": {"min": 1.0e-4, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam", "rmsprop"],
    # Dropout on the convolutional map before the LSTMs; the baseline uses 0.7.
    "dropout": [0.5, 0.7],
}

# Per convolution: filters before the MFM halves them, square kernel, 2x2 max pool after.
_CONVS = (
    (64, 5, True),
    (64, 1, False),
    (96, 3, True),
    (96, 1, False),
    (128, 3, True),
    (128, 1, False),
    (64, 3, False),
    (64, 1, False),
    (64, 3, True),
)
# Indices of the convolutions whose MFM (and pool, if any) a batch norm without scale or
# offset follows, as in the baseline: all but the 1st, 5th and 9th.
_BATCH_NORM_AFTER = {1, 2, 3, 5, 6, 7}


@keras.saving.register_keras_serializable(package="deepfake_audio")
class MaxFeatureMap(keras.layers.Layer):
    """Max-Feature-Map: the element-wise max of the two halves of the channels.

    LCNN's activation: a competitive "maxout" of two feature maps, which halves the channels
    and suppresses the weaker of each pair, instead of a fixed nonlinearity.
    """

    def call(self, inputs: Any) -> Any:
        first, second = keras.ops.split(inputs, 2, axis=-1)
        return keras.ops.maximum(first, second)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        channels = input_shape[-1]
        if channels is not None and channels % 2:
            raise ValueError(f"MaxFeatureMap needs an even channel count, got {channels}")
        return (*input_shape[:-1], None if channels is None else channels // 2)


def _batch_norm() -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(center=False, scale=False, momentum=0.9, epsilon=1e-5)


def lcnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """LCNN + bi-LSTM on (rows, frames, 1) LFCC or log-mel features, as the 2021 baseline.

    Needs at least 16 rows and 16 frames (four 2x2 pools); frames may be None.
    """
    if len(inputs.shape) != 4:
        raise ValueError(f"lcnn takes (rows, frames, 1) features, got {inputs.shape[1:]}")
    rows = inputs.shape[1]
    if rows is None or rows < 16:
        raise ValueError(f"lcnn needs a fixed number of >= 16 feature rows, got {rows}")
    x = inputs
    for index, (filters, kernel, pool) in enumerate(_CONVS):
        x = keras.layers.Conv2D(filters, kernel, padding="same")(x)
        x = MaxFeatureMap()(x)
        if pool:
            x = keras.layers.MaxPooling2D(pool_size=2)(x)
        if index in _BATCH_NORM_AFTER:
            x = _batch_norm()(x)
    x = keras.layers.Dropout(values["dropout"])(x)

    # (rows/16, frames/16, channels) -> a sequence over frames of rows/16 * channels features.
    x = keras.layers.Permute((2, 1, 3))(x)
    width = x.shape[2] * x.shape[3]
    x = keras.layers.Reshape((-1, width))(x)
    lstm = x
    for _ in range(2):
        recurrent = keras.layers.LSTM(width // 2, return_sequences=True)
        lstm = keras.layers.Bidirectional(recurrent)(lstm)
    x = keras.layers.Add()([lstm, x])
    return keras.layers.GlobalAveragePooling1D()(x)
