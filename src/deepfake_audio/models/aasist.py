"""AASIST (`model.architecture: aasist`) on the raw waveform, and the layers AASIST-L shares.

AASIST (Jung et al., "AASIST: Audio anti-spoofing using integrated spectro-temporal graph
attention networks", ICASSP 2022), written for Keras 3 after the authors' `clovaai/aasist`
(`models/AASIST.py`, `config/AASIST.conf`, `config/AASIST-L.conf`):

1. Front end: 70 fixed (non-trainable) band-pass sinc filters, mel-spaced up to 8 kHz and
   Hamming-windowed, 129 taps; the magnitude of their outputs is max-pooled 3x3 into a
   (time, 23 bands) one-channel image, then batch norm and SELU.
2. Encoder: six 2-D residual blocks (conv-BN-SELU-conv, a 1x3 conv on the shortcut where the
   width changes, max pool 3 over time), 2x3 kernels over (band, time).
3. Graphs: spectral nodes (max |.| over time, + a learned positional embedding) and temporal
   nodes (max |.| over bands), each through a graph attention layer and a graph pool.
4. Two branches of heterogeneous stacking graph attention (HS-GAL: both graphs and a learned
   stack node, attention weights per node-type pair), each HS-GAL -> graph pool -> HS-GAL with
   a residual sum; the branches meet in an element-wise max.
5. Readout: max |.| and mean of the temporal and of the spectral nodes and the stack node,
   5 x gat_dims[1] features, then dropout.

The reference ends in a 2-unit linear layer for cross-entropy; in the pipeline that is
`models.network.build()`'s one-unit float32 `bonafide_logit` on binary cross-entropy.

Layout: the pipeline's waveform is (samples, 1); the encoder works on (time, band, channels),
so the reference's (band, time) kernels are transposed: 2x3 -> 3x2, 1x3 -> 3x1, pool 1x3 ->
3x1. Batch norms use PyTorch's defaults (momentum 0.1, i.e. Keras 0.9; epsilon 1e-5).
Left out: the reference's optional frequency-mask augmentation in the sinc layer (off in
both published configs) and its weight decay and cosine schedule (optimizer matters of the
pipeline, not of the model).

Parameter counts (trainable; none depends on the input length) match the published ones.
Both frameworks count batch norm alike (PyTorch: weight and bias are parameters, running
statistics are buffers; Keras: gamma and beta trainable, moving statistics non-trainable), and
the fixed sinc filters are no parameters in either. The match needs one deliberate oddity. In
the reference's `Residual_block`, every block but the first creates `bn1` (batch norm on the
block input), but `forward` then computes `out = self.conv1(x)` from the raw input, so `bn1`
and its SELU never touch the output: its weights are counted in the published figures yet
never trained (the published models and EERs come from this code). `reference_model` keeps
those slots as `InertBatchNorm` layers (weights, no effect), so the count and a state-dict
port line up one to one; the pipeline's `aasist`/`aasist_l` compute the same function without
the dead weights. Layer by layer (trainable; "bn1" is inside the encoder figure):

    layer                                     AASIST    AASIST-L
    encoder, 6 residual blocks                211,072   50,792
      of which bn1 of blocks 2-6 (2 x input)      512      272   (32+32+64+64+64 | 32+32+24*3)
    first batch norm (1 channel)                    2        2
    positional embedding, 23 bands x width      1,472      552
    two learned stack nodes                       128       48
    GAT-S + GAT-T                              25,344    3,744
    4 HS-GALs                                  59,264   29,664
    6 graph pools                                 262      182
    output layer, 5 x 32 -> 2                     322      322
    published / reference_model               297,866   85,306
    - bn1 slots                                  -512     -272
    - (2-unit out -> 1-unit logit) 322 - 161     -161     -161
    pipeline (Normalization + body + logit)   297,193   84,873   (Normalization: no trainables)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

# The feature kind it takes: the raw waveform (AASIST learns its own front end).
INPUTS = ("waveform",)
SEARCH_SPACE: dict[str, Any] = {
    # The reference trains with Adam at 1e-4 (cosine-annealed to 5e-6).
    "learning_rate": {"min": 5.0e-5, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam"],
    # Dropout on the readout (5 x 32 features) before the logit; the reference uses 0.5.
    "dropout": [0.3, 0.5],
}

# PyTorch's batch-norm defaults, as in the reference.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class AasistConfig:
    """One published configuration; names follow the reference's `model_config`."""

    first_conv: int  # sinc filter length (made odd)
    sinc_bands: int  # filts[0]
    blocks: tuple[tuple[int, int], ...]  # (in, out) channels of the six residual blocks
    gat_dims: tuple[int, int]
    pool_ratios: tuple[float, float, float]  # GAT-S pool, GAT-T pool, HS-GAL pools
    temperatures: tuple[float, float, float]  # GAT-S, GAT-T, HS-GAL


# The reference's pool_ratios[3] and temperatures[3] are never read; they are left out.
CONFIGS = {
    "AASIST": AasistConfig(
        first_conv=128,
        sinc_bands=70,
        blocks=((1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)),
        gat_dims=(64, 32),
        pool_ratios=(0.5, 0.7, 0.5),
        temperatures=(2.0, 2.0, 100.0),
    ),
    "AASIST-L": AasistConfig(
        first_conv=128,
        sinc_bands=70,
        blocks=((1, 32), (32, 32), (32, 24), (24, 24), (24, 24), (24, 24)),
        gat_dims=(24, 32),
        pool_ratios=(0.4, 0.5, 0.7),
        temperatures=(2.0, 2.0, 100.0),
    ),
}


def _dense(units: int, name: str) -> keras.layers.Dense:
    return keras.layers.Dense(units, name=name)


def _batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _pairwise(x: Any) -> Any:
    """(batch, n, d) -> (batch, n, n, d) products of every pair of nodes: the attention input."""
    return keras.ops.expand_dims(x, 2) * keras.ops.expand_dims(x, 1)


def sinc_filters(bands: int, kernel_size: int, sample_rate: int = 16000) -> np.ndarray:
    """AASIST's fixed filter bank, (taps, bands): mel-spaced ideal band-passes, Hamming-windowed.

    Band edges are equally spaced on the mel scale from 0 Hz to Nyquist; each filter is the
    difference of two windowed-sinc low-passes. The length is made odd so filters are symmetric.
    """
    taps = kernel_size + 1 - kernel_size % 2
    top_mel = 2595.0 * np.log10(1.0 + (sample_rate // 2) / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(0.0, top_mel, bands + 1) / 2595.0) - 1.0)
    t = np.arange(taps) - (taps - 1) / 2
    low, high = edges[:-1, None], edges[1:, None]
    ideal = 2 * high / sample_rate * np.sinc(2 * high * t / sample_rate) - (
        2 * low / sample_rate * np.sinc(2 * low * t / sample_rate)
    )
    return (np.hamming(taps) * ideal).T.astype(np.float32)


@keras.saving.register_keras_serializable(package="deepfake_audio")
class SincFilterbank(keras.layers.Layer):
    """Fixed sinc band-pass filters on (batch, samples, 1) -> |output| as (batch, time, band, 1).

    The filters are recomputed from the config, not stored: they are no weights, as in the
    reference, and a saved model cannot carry altered ones.
    """

    def __init__(self, bands: int, kernel_size: int, sample_rate: int = 16000, **kwargs: Any):
        super().__init__(**kwargs)
        self.bands = bands
        self.kernel_size = kernel_size
        self.sample_rate = sample_rate
        self._filters = sinc_filters(bands, kernel_size, sample_rate)[:, None, :]

    def call(self, inputs: Any) -> Any:
        kernel = keras.ops.convert_to_tensor(self._filters, dtype=self.compute_dtype)
        x = keras.ops.conv(inputs, kernel, strides=1, padding="valid")
        return keras.ops.expand_dims(keras.ops.abs(x), -1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        length = input_shape[1]
        taps = self._filters.shape[0]
        return (input_shape[0], None if length is None else length - taps + 1, self.bands, 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(bands=self.bands, kernel_size=self.kernel_size, sample_rate=self.sample_rate)
        return config


@keras.saving.register_keras_serializable(package="deepfake_audio")
class InertBatchNorm(keras.layers.Layer):
    """The slot of the reference's `bn1`: batch-norm weights that are never applied.

    Used only by `reference_model`, so its parameter count and a port of the published
    checkpoints match the reference one to one (see the module docstring). Returns its input.
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="moving_variance"
        )

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package="deepfake_audio")
class SpectroTemporalNodes(keras.layers.Layer):
    """Encoder map (batch, time, band, C) -> [temporal nodes (batch, time, C),
    spectral nodes (batch, band, C) + a learned positional embedding per band]."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        bands, channels = input_shape[2], input_shape[3]
        self.position = self.add_weight(
            shape=(1, bands, channels),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="position",
        )

    def call(self, inputs: Any) -> list[Any]:
        magnitude = keras.ops.abs(inputs)
        temporal = keras.ops.max(magnitude, axis=2)
        spectral = keras.ops.max(magnitude, axis=1) + self.position
        return [temporal, spectral]

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> list[tuple]:
        batch, time, bands, channels = input_shape
        return [(batch, time, channels), (batch, bands, channels)]


@keras.saving.register_keras_serializable(package="deepfake_audio")
class GraphAttention(keras.layers.Layer):
    """Graph attention over a fully connected graph of nodes (batch, n, d) -> (batch, n, units).

    Attention of node i on node j comes from the product of their features (tanh projection,
    then a learned vector), sharpened or flattened by `temperature`; the output adds an
    attention-weighted and a plain projection, then batch norm and SELU.
    """

    def __init__(self, units: int, temperature: float = 1.0, dropout: float = 0.2, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = units
        self.temperature = temperature
        self.dropout = dropout
        self.input_drop = keras.layers.Dropout(dropout)
        self.att_proj = _dense(units, "att_proj")
        self.proj_with_att = _dense(units, "proj_with_att")
        self.proj_without_att = _dense(units, "proj_without_att")
        self.bn = _batch_norm("bn")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.att_proj.build((*input_shape[:2], input_shape[1], input_shape[2]))
        self.att_weight = self.add_weight(
            shape=(self.units, 1), initializer="glorot_normal", name="att_weight"
        )
        self.proj_with_att.build(input_shape)
        self.proj_without_att.build(input_shape)
        self.bn.build((*input_shape[:2], self.units))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.input_drop(inputs, training=training)
        scores = keras.ops.tanh(self.att_proj(_pairwise(x)))
        scores = keras.ops.squeeze(keras.ops.matmul(scores, self.att_weight), -1)
        attention = keras.ops.softmax(scores / self.temperature, axis=-1)
        x = self.proj_with_att(keras.ops.matmul(attention, x)) + self.proj_without_att(x)
        return keras.activations.selu(self.bn(x, training=training))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:2], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, temperature=self.temperature, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="deepfake_audio")
class HeteroGraphAttention(keras.layers.Layer):
    """HS-GAL: graph attention over temporal and spectral nodes together, plus a stack node.

    Inputs [temporal, spectral] (the stack node is then this layer's own learned vector) or
    [temporal, spectral, stack]; returns [temporal, spectral, stack], (batch, ., units) each.
    Each node type is first projected on its own; attention uses a separate learned vector for
    temporal-temporal, spectral-spectral and cross-type pairs; the stack node attends to all
    nodes (one-way) and is not batch-normalised, as in the reference.
    """

    def __init__(
        self,
        units: int,
        temperature: float = 1.0,
        dropout: float = 0.2,
        learned_stack: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.temperature = temperature
        self.dropout = dropout
        self.learned_stack = learned_stack
        self.input_drop = keras.layers.Dropout(dropout)
        self.att_proj = _dense(units, "att_proj")
        self.att_proj_stack = _dense(units, "att_proj_stack")
        self.proj_with_att = _dense(units, "proj_with_att")
        self.proj_without_att = _dense(units, "proj_without_att")
        self.proj_with_att_stack = _dense(units, "proj_with_att_stack")
        self.proj_without_att_stack = _dense(units, "proj_without_att_stack")
        self.bn = _batch_norm("bn")

    def build(self, input_shape: list[tuple[int | None, ...]]) -> None:
        temporal, spectral = input_shape[0], input_shape[1]
        dim = temporal[-1]
        if spectral[-1] != dim or temporal[1] is None or spectral[1] is None:
            raise ValueError(f"HeteroGraphAttention needs static, equal-width nodes: {input_shape}")
        self.proj_temporal = _dense(dim, "proj_temporal")
        self.proj_spectral = _dense(dim, "proj_spectral")
        self.proj_temporal.build(temporal)
        self.proj_spectral.build(spectral)
        nodes = (None, None, dim)
        for layer in (self.att_proj, self.att_proj_stack, self.proj_with_att):
            layer.build(nodes)
        for layer in (self.proj_without_att, self.proj_with_att_stack, self.proj_without_att_stack):
            layer.build(nodes)
        # Columns: temporal-temporal, spectral-spectral, cross-type pairs.
        self.att_weights = self.add_weight(
            shape=(self.units, 3), initializer="glorot_normal", name="att_weights"
        )
        self.att_weight_stack = self.add_weight(
            shape=(self.units, 1), initializer="glorot_normal", name="att_weight_stack"
        )
        if self.learned_stack:
            self.stack = self.add_weight(
                shape=(1, 1, dim),
                initializer=keras.initializers.RandomNormal(stddev=1.0),
                name="stack",
            )
        self.bn.build((None, None, self.units))
        n_temporal, n_spectral = temporal[1], spectral[1]
        kind = np.full((n_temporal + n_spectral,) * 2, 2)
        kind[:n_temporal, :n_temporal] = 0
        kind[n_temporal:, n_temporal:] = 1
        self._pair_kind = np.eye(3, dtype=np.float32)[kind]  # (n, n, 3) one-hot

    def call(self, inputs: list[Any], training: bool | None = None) -> list[Any]:
        temporal, spectral = inputs[0], inputs[1]
        stack = self.stack if self.learned_stack else inputs[2]
        n_temporal = temporal.shape[1]
        x = keras.ops.concatenate(
            [self.proj_temporal(temporal), self.proj_spectral(spectral)], axis=1
        )
        x = self.input_drop(x, training=training)

        # The stack node gathers from all nodes, weighted by attention on (node * stack).
        scores = keras.ops.tanh(self.att_proj_stack(x * stack))
        scores = keras.ops.matmul(scores, self.att_weight_stack) / self.temperature
        attention = keras.ops.softmax(scores, axis=1)  # over nodes: (batch, n, 1)
        gathered = keras.ops.matmul(keras.ops.transpose(attention, (0, 2, 1)), x)
        stack = self.proj_with_att_stack(gathered) + self.proj_without_att_stack(stack)

        scores = keras.ops.tanh(self.att_proj(_pairwise(x)))
        scores = keras.ops.matmul(scores, self.att_weights)  # (batch, n, n, 3)
        pair_kind = keras.ops.convert_to_tensor(self._pair_kind, dtype=scores.dtype)
        scores = keras.ops.sum(scores * pair_kind, axis=-1) / self.temperature
        attention = keras.ops.softmax(scores, axis=-1)
        x = self.proj_with_att(keras.ops.matmul(attention, x)) + self.proj_without_att(x)
        x = keras.activations.selu(self.bn(x, training=training))
        return [x[:, :n_temporal], x[:, n_temporal:], stack]

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> list[tuple]:
        temporal, spectral = input_shape[0], input_shape[1]
        return [
            (temporal[0], temporal[1], self.units),
            (spectral[0], spectral[1], self.units),
            (temporal[0], 1, self.units),
        ]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=self.units,
            temperature=self.temperature,
            dropout=self.dropout,
            learned_stack=self.learned_stack,
        )
        return config


@keras.saving.register_keras_serializable(package="deepfake_audio")
class GraphPool(keras.layers.Layer):
    """Keep the top `ratio` of nodes by a learned sigmoid score, scaled by that score.

    Kept nodes come in descending score order (as torch.topk); at least one node is kept.
    """

    def __init__(self, ratio: float, dropout: float = 0.3, **kwargs: Any):
        super().__init__(**kwargs)
        self.ratio = ratio
        self.dropout = dropout
        self.drop = keras.layers.Dropout(dropout)
        self.proj = _dense(1, "proj")

    def _kept(self, nodes: int | None) -> int:
        if nodes is None:
            raise ValueError("GraphPool needs a static number of nodes (a fixed input length)")
        return max(int(nodes * self.ratio), 1)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self._kept(input_shape[1])
        self.proj.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        scores = keras.ops.sigmoid(self.proj(self.drop(inputs, training=training)))
        _, index = keras.ops.top_k(keras.ops.squeeze(scores, -1), self._kept(inputs.shape[1]))
        return keras.ops.take_along_axis(inputs * scores, keras.ops.expand_dims(index, -1), 1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self._kept(input_shape[1]), input_shape[2])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(ratio=self.ratio, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="deepfake_audio")
class GraphReadout(keras.layers.Layer):
    """[temporal, spectral, stack] -> max |.| and mean of each graph's nodes, and the stack node."""

    def call(self, inputs: list[Any]) -> Any:
        temporal, spectral, stack = inputs
        return keras.ops.concatenate(
            [
                keras.ops.max(keras.ops.abs(temporal), axis=1),
                keras.ops.mean(temporal, axis=1),
                keras.ops.max(keras.ops.abs(spectral), axis=1),
                keras.ops.mean(spectral, axis=1),
                keras.ops.squeeze(stack, 1),
            ],
            axis=-1,
        )

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple:
        return (input_shape[0][0], 5 * input_shape[0][-1])


def _residual_block(
    x: keras.KerasTensor, channels: tuple[int, int], inert_bn: bool
) -> keras.KerasTensor:
    """The reference's Residual_block as it computes, on (time, band, channels) maps.

    conv1's (1, 1) padding over (band, time) grows the band axis by one; conv2 (no band
    padding) shrinks it back, so only the max pool changes the map's size.
    """
    channels_in, channels_out = channels
    out = InertBatchNorm()(x) if inert_bn else x
    out = keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(out)
    out = keras.layers.Conv2D(channels_out, (3, 2))(out)
    out = _batch_norm()(out)
    out = keras.layers.Activation("selu")(out)
    out = keras.layers.ZeroPadding2D(((1, 1), (0, 0)))(out)
    out = keras.layers.Conv2D(channels_out, (3, 2))(out)
    if channels_in != channels_out:
        x = keras.layers.Conv2D(channels_out, (3, 1), padding="same")(x)
    out = keras.layers.Add()([out, x])
    return keras.layers.MaxPooling2D((3, 1))(out)


def min_samples(config: AasistConfig) -> int:
    """The shortest waveform the network takes: one time step left after seven 3x pools."""
    taps = config.first_conv + 1 - config.first_conv % 2
    return taps - 1 + 3 ** (1 + len(config.blocks))


def body(
    config: AasistConfig, inputs: keras.KerasTensor, dropout: float, inert_bn: bool = False
) -> keras.KerasTensor:
    """(batch, samples, 1) waveform -> the 5 x gat_dims[1] readout, after dropout."""
    if len(inputs.shape) != 3 or inputs.shape[-1] != 1:
        raise ValueError(f"AASIST takes a (samples, 1) waveform, got {inputs.shape[1:]}")
    if inputs.shape[1] is None or inputs.shape[1] < min_samples(config):
        raise ValueError(
            f"AASIST needs a fixed length of at least {min_samples(config)} samples, "
            f"got {inputs.shape[1]}"
        )
    gat_s, gat_t, hs_gal = config.temperatures
    pool_s, pool_t, pool_hs = config.pool_ratios
    dim_0, dim_1 = config.gat_dims

    x = SincFilterbank(config.sinc_bands, config.first_conv)(inputs)
    x = keras.layers.MaxPooling2D((3, 3))(x)
    x = _batch_norm()(x)
    x = keras.layers.Activation("selu")(x)
    for index, channels in enumerate(config.blocks):
        x = _residual_block(x, channels, inert_bn=inert_bn and index > 0)

    temporal, spectral = SpectroTemporalNodes()(x)
    spectral = GraphPool(pool_s)(GraphAttention(dim_0, gat_s)(spectral))
    temporal = GraphPool(pool_t)(GraphAttention(dim_0, gat_t)(temporal))

    branches = []
    for _ in range(2):
        t, s, stack = HeteroGraphAttention(dim_1, hs_gal, learned_stack=True)([temporal, spectral])
        s = GraphPool(pool_hs)(s)
        t = GraphPool(pool_hs)(t)
        t_aug, s_aug, stack_aug = HeteroGraphAttention(dim_1, hs_gal)([t, s, stack])
        nodes = (
            keras.layers.Add()([t, t_aug]),
            keras.layers.Add()([s, s_aug]),
            keras.layers.Add()([stack, stack_aug]),
        )
        branches.append([keras.layers.Dropout(0.2)(node) for node in nodes])
    merged = [keras.layers.Maximum()(list(pair)) for pair in zip(*branches, strict=True)]
    x = GraphReadout()(merged)
    return keras.layers.Dropout(dropout)(x)


def aasist(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """AASIST (the published 297k-parameter configuration) on a (samples, 1) waveform."""
    return body(CONFIGS["AASIST"], inputs, values["dropout"])


def reference_model(config: str, n_samples: int = 64600) -> keras.Model:
    """The published configuration with the reference's 2-unit output layer and bn1 slots.

    For checking parameter counts against the paper and for porting released checkpoints;
    the pipeline builds `aasist`/`aasist_l` through `models.network.build()` instead.
    """
    if config not in CONFIGS:
        raise ValueError(f"unknown AASIST config {config!r}; choose from {sorted(CONFIGS)}")
    inputs = keras.Input(shape=(n_samples, 1), name="waveform")
    x = body(CONFIGS[config], inputs, dropout=0.5, inert_bn=True)
    outputs = keras.layers.Dense(2, name="out_layer")(x)
    return keras.Model(inputs, outputs, name=config.replace("-", "_").lower())
