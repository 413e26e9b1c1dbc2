"""Architectures: the tuned learning rate reaches the optimizer, the notebook's CNN is intact."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepfake_audio import models

VALUES = {
    "filters_1": 32,
    "filters_2": 64,
    "kernel_size_1": 3,
    "kernel_size_2": 5,
    "dense_units": 64,
    "learning_rate": 3.1e-4,
    "optimizer": "rmsprop",
}


@pytest.mark.parametrize("architecture", ["compact_cnn", "seed_cnn"])
def test_learning_rate_and_optimizer_reach_the_model(architecture: str) -> None:
    model = models.build(VALUES, architecture, (32, 51, 1), np.zeros(32), np.ones(32))
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert lr == pytest.approx(3.1e-4)
    assert model.output.shape[-1] == 1


def test_seed_cnn_is_the_notebooks_network() -> None:
    """At the notebook's 224x224x3 input, its widest dense layer dominates (~48M weights)."""
    values = {**VALUES, "filters_1": 64, "filters_2": 256, "kernel_size_1": 3, "kernel_size_2": 5}
    values["dense_units"] = 64
    model = models.build(values, "seed_cnn", (224, 224, 3), np.zeros(224), np.ones(224))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("MaxPooling2D") == 2
    assert "Flatten" in kinds
    flatten = next(layer for layer in model.layers if type(layer).__name__ == "Flatten")
    assert flatten.output.shape[-1] == 53 * 53 * 256
    assert model.count_params() > 45_000_000


def test_mixed_precision_keeps_a_float32_logit_and_normalises_inside() -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mean, std = np.full(16, -40.0), np.full(16, 10.0)
        model = models.build(VALUES, "compact_cnn", (16, 33, 1), mean, std)
        assert model.output.dtype == "float32"
        norm = model.get_layer("normalise")
        x = np.full((1, 16, 33, 1), -30.0, dtype=np.float32)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(norm(x)), 1.0, rtol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_search_space_declares_the_notebook_hyperparameters() -> None:
    import keras_tuner as kt

    from deepfake_audio.config.params import parse_params

    params = parse_params(None)
    hp = kt.HyperParameters()
    build = models.hypermodel(params, (16, 33, 1), np.zeros(16), np.ones(16))
    build(hp)
    assert set(hp.values) == {
        "filters_1",
        "filters_2",
        "kernel_size_1",
        "kernel_size_2",
        "dense_units",
        "learning_rate",
        "optimizer",
    }
    lr = next(p for p in hp.space if p.name == "learning_rate")
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-5, 1e-3, "log")


def test_missing_or_corrupt_model_file_is_a_one_line_error(tmp_path) -> None:
    from deepfake_audio.core.errors import UserError

    with pytest.raises(UserError, match="model file not found"):
        models.load(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UserError, match="not a loadable Keras model") as err:
        models.load(bad)
    assert "\n" not in str(err.value)
