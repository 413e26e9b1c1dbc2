"""The field's reference countermeasures: published sizes, shapes, safe-mode saving, training."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from deepfake_audio.models.aasist import aasist, reference_model
from deepfake_audio.models.aasist_l import aasist_l
from deepfake_audio.models.lcnn import MaxFeatureMap, lcnn

# The modules themselves (a function of the same name is imported above).
aasist_module = importlib.import_module("deepfake_audio.models.aasist")
aasist_l_module = importlib.import_module("deepfake_audio.models.aasist_l")
lcnn_module = importlib.import_module("deepfake_audio.models.lcnn")

HALF_SECOND = 8000
Body = Callable[[dict[str, Any], keras.KerasTensor], keras.KerasTensor]


def build(
    body: Body, input_shape: tuple[int, ...], values: dict[str, Any], jit_compile: Any = "auto"
) -> keras.Model:
    """What models.network.build() makes of a body: Normalization in front, a float32 logit after.

    `jit_compile="auto"` is build()'s default (XLA on TensorFlow, CPU included). Fast tests
    train without XLA, which also spares a compile; one slow test trains AASIST under XLA.
    """
    inputs = keras.Input(shape=input_shape)
    if len(input_shape) == 2:  # waveform: one statistic
        norm = keras.layers.Normalization(axis=-1, mean=[0.0], variance=[1.0])
    else:  # spectral: one statistic per row
        rows = input_shape[0]
        norm = keras.layers.Normalization(axis=1, mean=[0.0] * rows, variance=[1.0] * rows)
    x = body(values, norm(inputs))
    logit = keras.layers.Dense(1, dtype="float32", name="bonafide_logit")(x)
    model = keras.Model(inputs, logit)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=values["learning_rate"]),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


VALUES = {"learning_rate": 1e-3, "optimizer": "adam", "dropout": 0.5}


@pytest.mark.parametrize(("config", "published"), [("AASIST", 297_866), ("AASIST-L", 85_306)])
def test_reference_configs_have_the_published_parameter_counts(config: str, published: int):
    model = reference_model(config)
    assert trainable(model) == published
    assert model.output.shape == (None, 2)
    # The reference's never-applied bn1 (blocks 2-6) is all that the pipeline body leaves out.
    inert = [layer for layer in model.layers if isinstance(layer, aasist_module.InertBatchNorm)]
    assert sum(trainable(layer) for layer in inert) == {"AASIST": 512, "AASIST-L": 272}[config]


@pytest.mark.parametrize(
    ("body", "input_shape", "count"),
    [
        # published - the never-applied bn1 slots (512 | 272) - (2-unit -> 1-unit head, 161)
        (aasist, (64600, 1), 297_866 - 512 - 161),
        (aasist_l, (64600, 1), 85_306 - 272 - 161),
        (aasist_l, (32000, 1), 84_873),  # no count depends on the length
        # 9 convs 157,504 + 2 bi-LSTMs over 96 (60 rows) or 128 (64 rows) features + logit
        (lcnn, (60, 201, 1), 157_504 + 2 * 2 * 4 * (48 * (96 + 48) + 48) + 97),
        (lcnn, (64, 201, 1), 157_504 + 2 * 2 * 4 * (64 * (128 + 64) + 64) + 129),
    ],
)
def test_pipeline_variants_have_the_stated_parameter_counts(
    body: Body, input_shape: tuple[int, ...], count: int
):
    assert trainable(build(body, input_shape, VALUES)) == count


@pytest.mark.parametrize(
    ("body", "input_shape"),
    [(aasist_l, (HALF_SECOND, 1)), (lcnn, (60, 201, 1)), (lcnn, (64, 120, 1))],
)
def test_forward_gives_one_finite_logit_per_clip(body: Body, input_shape: tuple[int, ...]):
    model = build(body, input_shape, VALUES)
    x = np.random.default_rng(0).normal(size=(3, *input_shape)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (3, 1) and np.isfinite(y).all()


def test_lcnn_takes_any_number_of_frames():
    model = build(lcnn, (60, None, 1), VALUES)
    for frames in (40, 75):
        assert model.predict(np.zeros((2, 60, frames, 1), "float32"), verbose=0).shape == (2, 1)


class RecordingDict(dict):
    """Hyperparameter values that remember which names a body read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize(
    ("body", "module", "shape"),
    [
        (aasist, aasist_module, (HALF_SECOND, 1)),
        (aasist_l, aasist_l_module, (HALF_SECOND, 1)),
        (lcnn, lcnn_module, (60, 201, 1)),
    ],
)
def test_search_space_lists_exactly_what_the_body_reads(
    body: Body, module: Any, shape: tuple[int, ...]
):
    space = module.SEARCH_SPACE
    assert {"learning_rate", "optimizer"} <= set(space)
    assert set(space["optimizer"]) <= {"adam", "rmsprop"}
    assert space["learning_rate"]["sampling"] == "log"
    values = RecordingDict({k: v[0] if isinstance(v, list) else v["min"] for k, v in space.items()})
    body(values, keras.Input(shape))
    assert values.read == set(space) - {"learning_rate", "optimizer"}  # build() reads those


def test_max_feature_map_keeps_the_larger_half():
    x = np.array([[[[1.0, -2.0, 3.0, 0.5]]]], dtype="float32")
    y = keras.ops.convert_to_numpy(MaxFeatureMap()(x))
    np.testing.assert_array_equal(y, [[[[3.0, 0.5]]]])


def test_sinc_filters_are_fixed_mel_spaced_band_passes():
    bank = aasist_module.sinc_filters(70, 128)
    assert bank.shape == (129, 70)
    np.testing.assert_allclose(bank, bank[::-1], atol=1e-7)  # symmetric: linear phase
    response = np.abs(np.fft.rfft(bank, n=4096, axis=0))
    peaks = response.argmax(axis=0) * 8000 / 2048
    assert (np.diff(peaks) >= 0).all()  # centre frequencies rise with the band index
    assert np.diff(peaks)[-10:].mean() > 4 * np.diff(peaks)[:10].mean()  # mel: wider on top
    layer = aasist_module.SincFilterbank(70, 128)
    layer.build((None, HALF_SECOND, 1))
    assert layer.trainable_weights == [] and layer.weights == []


def test_aasist_rejects_clips_too_short_for_its_pools():
    shortest = aasist_module.min_samples(aasist_module.CONFIGS["AASIST-L"])
    assert shortest < HALF_SECOND
    aasist_l(VALUES, keras.Input((shortest, 1)))
    with pytest.raises(ValueError, match="at least"):
        aasist_l(VALUES, keras.Input((shortest - 1, 1)))


def test_mixed_precision_builds_with_a_float32_logit():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for body, shape in [(aasist_l, (HALF_SECOND, 1)), (lcnn, (60, 201, 1))]:
            assert build(body, shape, VALUES).output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("which", ["aasist_l", "reference", "lcnn"])
def test_safe_mode_round_trip_gives_identical_outputs(which: str, tmp_path):
    rng = np.random.default_rng(1)
    if which == "lcnn":
        model = build(lcnn, (60, 64, 1), VALUES)
        x = rng.normal(size=(2, 60, 64, 1)).astype("float32")
    else:
        if which == "reference":
            model = reference_model("AASIST-L", n_samples=HALF_SECOND)
        else:
            model = build(aasist_l, (HALF_SECOND, 1), VALUES)
        x = rng.normal(size=(2, HALF_SECOND, 1)).astype("float32")
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)  # saved with its (empty) state
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert trainable(loaded) == trainable(model)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def fit_tiny_batch(body: Body, input_shape: tuple[int, ...], jit_compile: Any) -> None:
    """Eight clips, six full-batch steps: the loss drops below its start, most weights move.

    Not "falls every step": batch norm on 8 clips and AASIST's fixed graph dropouts make the
    per-step loss noisy (seen: 1.12, 1.02, 0.67, 0.79, 1.21, 1.13).
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *input_shape)).astype("float32")
    y = np.array([0, 1] * 4, dtype="float32")
    model = build(body, input_shape, {**VALUES, "dropout": 0.0}, jit_compile=jit_compile)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert min(losses[1:]) < losses[0]
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2


# AASIST-L with build()'s default jit_compile="auto" (XLA on TensorFlow: its top-k pooling
# must compile), as the pipeline trains it; one run covers both, as each costs a graph build.
@pytest.mark.parametrize(
    ("body", "input_shape", "jit_compile"),
    [
        pytest.param(aasist_l, (HALF_SECOND, 1), "auto", marks=pytest.mark.slow),
        (lcnn, (60, 64, 1), False),
    ],
)
def test_a_few_training_steps_fit_a_tiny_batch(
    body: Body, input_shape: tuple[int, ...], jit_compile: Any
):
    fit_tiny_batch(body, input_shape, jit_compile=jit_compile)
