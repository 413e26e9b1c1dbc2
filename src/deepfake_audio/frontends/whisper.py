"""Whisper's encoder as frozen Keras 3 layers: raw 16 kHz audio in, 50 frames a second out.

Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"; the code
follows OpenAI's `whisper/audio.py` and `whisper/model.py` step by step, in keras.ops only (no
TensorFlow call), so the layers run on any Keras backend:

- `WhisperLogMel`: (batch, samples) -> (batch, samples // 160, 80). A 400-sample periodic Hann
  window every 160 samples (25 ms / 10 ms), the clip reflect-padded by 200 at each end
  (torch.stft's center=True), the last frame dropped (as Whisper does); the power spectrum
  through Whisper's own mel filters (librosa.filters.mel(sr=16000, n_fft=400, n_mels=80):
  Slaney scale and area normalisation, built here in numpy); log10 of max(power, 1e-10),
  floored at the clip's maximum - 8, then (x + 4) / 4. The log-mel is computed inside the model
  (a strided convolution with a fixed windowed-DFT kernel), so a served model takes raw audio,
  and the floor is the clip's own maximum: no 30 s of padding, any length.
- `WhisperEncoder`: the log-mel -> (batch, ceil(frames / 2), d_model). Conv1d k3 + GELU, conv1d
  k3 stride 2 + GELU (both padded by 1 at each end, as PyTorch's), plus the learned position
  encodings sliced to the clip's frame count (at most n_positions = 1500: 30 s); then the first
  `n_layers` pre-LayerNorm blocks (self-attention with n_heads heads, then a 4x MLP with exact
  GELU, each added to its input). After the last of all the blocks Whisper applies a final
  LayerNorm: `final_norm` does too, so the full encoder is Whisper's; after fewer blocks the
  output is the residual stream (Hugging Face's `hidden_states[n]`), the features whose early
  blocks carry spoofing artefacts (issue 20).

Both layers are frozen (trainable=False: the back end trains, the encoder does not) and float32
whatever the mixed-precision policy. The encoder's weights are Keras variables set from the
CTranslate2 file by `load_weights` (`whisper_encoder` does both), so a saved .keras model
carries them and loads in safe mode on a machine without the whisper extra.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from deepfake_audio.dsp.features import mel_filterbank
from deepfake_audio.frontends import ctranslate2_weights
from deepfake_audio.frontends.ctranslate2_weights import WhisperWeights

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's


def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = 80) -> np.ndarray:
    """Whisper's mel filters, (n_mels, n_fft // 2 + 1): librosa.filters.mel's defaults (Slaney
    mel scale from 0 Hz to sample_rate / 2, Slaney area normalisation), which Whisper's
    assets/mel_filters.npz was made with - the project's own filterbank (`dsp.features`)."""
    return mel_filterbank(sample_rate, n_fft, n_mels)


def dft_kernel(n_fft: int = N_FFT) -> np.ndarray:
    """(n_fft, 1, 2 * bins) float64: the periodic-Hann-windowed real and imaginary DFT rows, a
    convolution kernel whose output at each hop is one frame's spectrum."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # torch.hann_window (periodic)
    angle = 2.0 * np.pi * np.outer(n, np.arange(n_fft // 2 + 1)) / n_fft
    kernel = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]
    return kernel[:, None, :]


def _frozen_float32(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("dtype", "float32")
    kwargs["trainable"] = False
    return kwargs


@keras.saving.register_keras_serializable(package="deepfake_audio")
class WhisperLogMel(keras.layers.Layer):
    """(batch, samples) 16 kHz audio in [-1, 1] -> (batch, samples // 160, n_mels) Whisper
    log-mel. The DFT kernel and mel filters are recomputed from the config, not stored."""

    def __init__(self, n_mels: int = 80, **kwargs: Any):
        super().__init__(**_frozen_float32(kwargs))
        self.n_mels = n_mels
        self._kernel = dft_kernel().astype(np.float32)
        self._filters = mel_filters(n_mels=n_mels).T.astype(np.float32)  # (bins, n_mels)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        x = ops.pad(x, [[0, 0], [N_FFT // 2, N_FFT // 2]], mode="reflect")
        kernel = ops.convert_to_tensor(self._kernel, dtype="float32")
        spectrum = ops.conv(ops.expand_dims(x, -1), kernel, strides=HOP_LENGTH, padding="valid")
        spectrum = spectrum[:, :-1, :]  # Whisper drops the last frame
        bins = N_FFT // 2 + 1
        power = ops.square(spectrum[..., :bins]) + ops.square(spectrum[..., bins:])
        mel = ops.matmul(power, ops.convert_to_tensor(self._filters, dtype="float32"))
        log_mel = ops.log10(ops.maximum(mel, 1e-10))
        ceiling = ops.max(log_mel, axis=(1, 2), keepdims=True)
        log_mel = ops.maximum(log_mel, ceiling - 8.0)
        return (log_mel + 4.0) / 4.0

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        samples = input_shape[1]
        return (input_shape[0], None if samples is None else samples // HOP_LENGTH, self.n_mels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_mels": self.n_mels}


@keras.saving.register_keras_serializable(package="deepfake_audio")
class WhisperEncoder(keras.layers.Layer):
    """(batch, frames, n_mels) Whisper log-mel -> (batch, ceil(frames / 2), d_model): the conv
    stem, position encodings and the first `n_layers` blocks (`final_norm`: then Whisper's
    final LayerNorm, for the whole encoder). Frozen; weights from `load_weights`."""

    def __init__(
        self,
        n_layers: int,
        n_mels: int = 80,
        d_model: int = 384,
        n_heads: int = 6,
        ffn_dim: int = 1536,
        n_positions: int = 1500,
        final_norm: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**_frozen_float32(kwargs))
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_layers, self.n_mels, self.d_model = n_layers, n_mels, d_model
        self.n_heads, self.ffn_dim, self.n_positions = n_heads, ffn_dim, n_positions
        self.final_norm = final_norm

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Every variable's name (CTranslate2's tensor name) and its Keras shape."""
        d, f = self.d_model, self.ffn_dim
        shapes: dict[str, tuple[int, ...]] = {
            "encoder/conv1/weight": (3, self.n_mels, d),  # (kernel, in, out)
            "encoder/conv1/bias": (d,),
            "encoder/conv2/weight": (3, d, d),
            "encoder/conv2/bias": (d,),
            "encoder/position_encodings/encodings": (self.n_positions, d),
        }
        for i in range(self.n_layers):
            block = f"encoder/layer_{i}"
            for part, rows, cols in (
                ("self_attention/linear_0", d, 3 * d),  # q, k, v
                ("self_attention/linear_1", d, d),
                ("ffn/linear_0", d, f),
                ("ffn/linear_1", f, d),
            ):
                shapes[f"{block}/{part}/weight"] = (rows, cols)  # (in, out)
                shapes[f"{block}/{part}/bias"] = (cols,)
            for part in ("self_attention", "ffn"):
                shapes[f"{block}/{part}/layer_norm/gamma"] = (d,)
                shapes[f"{block}/{part}/layer_norm/beta"] = (d,)
        if self.final_norm:
            shapes["encoder/layer_norm/gamma"] = (d,)
            shapes["encoder/layer_norm/beta"] = (d,)
        return shapes

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        frames = input_shape[1]
        if frames is not None and (frames + 1) // 2 > self.n_positions:
            raise ValueError(
                f"{frames} log-mel frames make {(frames + 1) // 2} encoder frames; Whisper's "
                f"position encodings cover {self.n_positions} ({self.n_positions // 50} s)"
            )
        self.by_name = {
            name: self.add_weight(
                shape=shape,
                initializer="ones" if name.endswith("gamma") else "zeros",
                trainable=False,
                name=name.removeprefix("encoder/").replace("/", "_"),
            )
            for name, shape in self._shapes().items()
        }

    def load_weights_from(self, weights: WhisperWeights) -> None:
        """Set every variable from Whisper's tensors (PyTorch layouts transposed to Keras')."""
        if not self.built:
            self.build((None, None, self.n_mels))
        for name, variable in self.by_name.items():
            value = weights.tensors[name]
            if value.ndim == 3:  # conv1d (out, in, kernel) -> (kernel, in, out)
                value = value.transpose(2, 1, 0)
            elif value.ndim == 2 and "position_encodings" not in name:  # (out, in) -> (in, out)
                value = value.T
            if value.shape != tuple(variable.shape):
                raise ctranslate2_weights.WeightsError(
                    f"{weights.path}: {name} is {value.shape}, the layer wants {variable.shape}"
                )
            variable.assign(value)

    def _layer_norm(self, x: Any, prefix: str) -> Any:
        ops = keras.ops
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        x = (x - mean) * ops.rsqrt(variance + LAYER_NORM_EPSILON)
        return x * self.by_name[f"{prefix}/gamma"] + self.by_name[f"{prefix}/beta"]

    def _linear(self, x: Any, prefix: str) -> Any:
        return (
            keras.ops.matmul(x, self.by_name[f"{prefix}/weight"]) + self.by_name[f"{prefix}/bias"]
        )

    def _attention(self, x: Any, block: str) -> Any:
        ops = keras.ops
        heads, d_head = self.n_heads, self.d_model // self.n_heads
        qkv = self._linear(x, f"{block}/self_attention/linear_0")
        batch, frames = ops.shape(x)[0], ops.shape(x)[1]

        def split(start: int) -> Any:  # (batch, frames, d) -> (batch, heads, frames, d_head)
            part = qkv[..., start * self.d_model : (start + 1) * self.d_model]
            return ops.transpose(ops.reshape(part, (batch, frames, heads, d_head)), (0, 2, 1, 3))

        q, k, v = split(0), split(1), split(2)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / float(np.sqrt(d_head))
        context = ops.matmul(ops.softmax(scores, axis=-1), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, frames, self.d_model))
        return self._linear(context, f"{block}/self_attention/linear_1")

    def _conv(self, x: Any, name: str, stride: int) -> Any:
        ops = keras.ops
        x = ops.pad(x, [[0, 0], [1, 1], [0, 0]])  # PyTorch's padding=1, both ends
        x = ops.conv(x, self.by_name[f"{name}/weight"], strides=stride, padding="valid")
        return ops.gelu(x + self.by_name[f"{name}/bias"], approximate=False)

    def _stem(self, inputs: Any) -> Any:
        """The conv stem and position encodings: the stream the blocks add to."""
        ops = keras.ops
        x = self._conv(ops.cast(inputs, "float32"), "encoder/conv1", 1)
        x = self._conv(x, "encoder/conv2", 2)
        positions = self.by_name["encoder/position_encodings/encodings"]
        return x + positions[: ops.shape(x)[1]]

    def _block(self, x: Any, i: int) -> Any:
        """Block `i` (0-based): pre-LayerNorm self-attention, then the MLP, each residual."""
        block = f"encoder/layer_{i}"
        x = x + self._attention(self._layer_norm(x, f"{block}/self_attention/layer_norm"), block)
        hidden = self._linear(
            self._layer_norm(x, f"{block}/ffn/layer_norm"), f"{block}/ffn/linear_0"
        )
        return x + self._linear(keras.ops.gelu(hidden, approximate=False), f"{block}/ffn/linear_1")

    def call(self, inputs: Any, depth: int | None = None) -> Any:
        """The frames after the stem and `depth` blocks (all `n_layers` by default)."""
        x = self._stem(inputs)
        depth = self.n_layers if depth is None else depth
        for i in range(depth):
            x = self._block(x, i)
        if self.final_norm and depth == self.n_layers:
            x = self._layer_norm(x, "encoder/layer_norm")
        return x

    def hidden_states(self, inputs: Any) -> list[Any]:
        """The frames after each depth 1..n_layers in one pass: element d - 1 equals
        `call(inputs, depth=d)` (the last with the final LayerNorm when `final_norm`). For a
        layer-wise probe (benchmarks/frontend_probe.py), which reads every depth of one clip."""
        x, states = self._stem(inputs), []
        for i in range(self.n_layers):
            x = self._block(x, i)
            states.append(x)
        if self.final_norm and states:
            states[-1] = self._layer_norm(x, "encoder/layer_norm")
        return states

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        frames = input_shape[1]
        return (input_shape[0], None if frames is None else (frames + 1) // 2, self.d_model)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_layers": self.n_layers,
            "n_mels": self.n_mels,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "ffn_dim": self.ffn_dim,
            "n_positions": self.n_positions,
            "final_norm": self.final_norm,
        }


def whisper_encoder(
    model: str = "tiny.en", layers: int = 1
) -> tuple[WhisperLogMel, WhisperEncoder]:
    """Whisper's log-mel and its encoder up to block `layers` (the final LayerNorm too when
    that is every block), weights read from `model` (ctranslate2_weights.whisper_weights: a
    pinned name or a CTranslate2 model.bin), frozen. Apply in turn to (batch, samples) audio."""
    weights = ctranslate2_weights.whisper_weights(model)
    if not 0 <= layers <= weights.n_layers:
        raise ctranslate2_weights.WeightsError(
            f"{weights.source} has {weights.n_layers} encoder blocks; asked for {layers}"
        )
    encoder = WhisperEncoder(
        n_layers=layers,
        n_mels=weights.n_mels,
        d_model=weights.d_model,
        n_heads=weights.n_heads,
        ffn_dim=weights.ffn_dim,
        n_positions=weights.n_positions,
        final_norm=layers == weights.n_layers,
    )
    encoder.load_weights_from(weights)
    return WhisperLogMel(n_mels=weights.n_mels), encoder
