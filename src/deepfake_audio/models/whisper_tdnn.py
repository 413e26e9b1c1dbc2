"""A frame-level TDNN on Whisper's frozen encoder frames (`model.architecture: whisper_tdnn`).

`whisper_head` sees one pooled vector a clip: the mean and spread of every encoder dimension,
so an artefact that lives in a few frames (a vocoder glitch at a phone boundary, a breath a
TTS never makes) is averaged away before the head sees it. This back end reads the frame
sequence itself - 384 numbers every 20 ms for tiny.en (`models.network` hands it the frames,
not the pooled vector, because `FRAMES` is set) - and pools only after learning which frames
matter:

- a batch normalisation of the frames' dimensions (they differ in scale by orders of
  magnitude after an early block);
- two dilated 1-D convolutions over time, the encoder's dimensions as channels (kernel 3,
  dilations 1 and 2: 7 frames, 140 ms of context), then a 1x1 convolution twice as wide, as
  in the x-vector (`models/tdnn.py`);
- attentive statistics pooling (Okabe et al., Interspeech 2018): a small tanh scorer weights
  each frame, and the weighted mean and standard deviation of every channel make the clip's
  vector; or plain mean and standard deviation (`pooling: mean_std`), the x-vector's;
- dropout and a dense embedding; `models.network.build` adds the logit.

Why a TDNN rather than LCNN or an AASIST-style graph: the encoder's 384 dimensions have no
order (a 2-D convolution's locality along them, as LCNN's over frequency, means nothing),
the frames are already a learned representation, so a few frames of learned context plus a
learned pooling is the back end the SSL front-end papers found sufficient on top of a strong
encoder, and it costs a fraction of a millisecond a clip beside the encoder's few. Only this
head trains; `features.whisper.pooling` does not apply (the head pools itself).
"""

from __future__ import annotations

from typing import Any

import keras

from deepfake_audio.models.tdnn import StatisticsPooling, frame_layers

# The feature kind it takes: Whisper's encoder frames, unpooled (FRAMES).
INPUTS = ("whisper",)
SEARCH_SPACE: dict[str, Any] = {
    "channels": {"min": 64, "max": 128, "step": 64},  # the frame layers' width
    "pooling": ["attentive", "mean_std"],
    "dropout": [0.0, 0.3],
    "learning_rate": {"min": 1.0e-4, "max": 3.0e-3, "sampling": "log"},
    "optimizer": ["adam"],
}
# models.network hands this architecture the encoder's frames (batch, frames, d_model).
FRAMES = True

# Keras' default batch-norm momentum (0.99) stalls on small corpora; 0.9 does not.
BN_MOMENTUM = 0.9
# (kernel, dilation) of the frame layers: 3 frames, then +4 = 7 frames (140 ms at 50 Hz).
_FRAME_LAYERS = ((3, 1), (3, 2))
ATTENTION_UNITS = 64


@keras.saving.register_keras_serializable(package="deepfake_audio")
class AttentiveStatisticsPooling(keras.layers.Layer):
    """(batch, frames, channels) -> (batch, 2 * channels): each channel's mean and standard
    deviation over the frames, weighted by a softmax over the frames of a learned score
    v . tanh(W h_t + b) (Okabe et al. 2018, one attention head). In float32 whatever the
    precision policy: the softmax and the variance lose too much in float16."""

    def __init__(self, units: int = ATTENTION_UNITS, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[-1]
        self.w = self.add_weight(
            shape=(channels, self.units), initializer="glorot_uniform", name="w", dtype="float32"
        )
        self.b = self.add_weight(
            shape=(self.units,), initializer="zeros", name="b", dtype="float32"
        )
        self.v = self.add_weight(
            shape=(self.units, 1), initializer="glorot_uniform", name="v", dtype="float32"
        )

    def weights_over_frames(self, inputs: Any) -> Any:
        """(batch, frames, 1): each frame's weight, summing to 1 over the clip."""
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        scores = ops.matmul(ops.tanh(ops.matmul(x, self.w) + self.b), self.v)
        return ops.softmax(scores, axis=1)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        alpha = self.weights_over_frames(x)
        mean = ops.sum(alpha * x, axis=1)
        variance = ops.sum(alpha * ops.square(x), axis=1) - ops.square(mean)
        std = ops.sqrt(ops.maximum(variance, 1e-6))
        return ops.cast(ops.concatenate([mean, std], axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 2 * input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def whisper_tdnn(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """(batch, frames, d_model) Whisper encoder frames -> the layer before the logit."""
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="frames_norm")(inputs)
    width = int(values["channels"])
    x = frame_layers(x, width, _FRAME_LAYERS)
    if values["pooling"] == "attentive":
        x = AttentiveStatisticsPooling(name="attentive_pooling")(x)
    else:
        x = StatisticsPooling(name="statistics_pooling")(x)
    if values["dropout"]:
        x = keras.layers.Dropout(values["dropout"])(x)
    return keras.layers.Dense(width, activation="relu", name="embedding")(x)
