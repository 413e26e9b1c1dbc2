"""The frame-level TDNN: its size follows from its layer plan, its pooling is the clip's
mean and standard deviation, and a saved model loads in Keras safe mode."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from deepfake_audio.models import network
from deepfake_audio.models.tdnn import StatisticsPooling


def _tdnn(rows: int, channels: int, dense: int) -> keras.Model:
    values = {
        "channels": channels,
        "dense_units": dense,
        "learning_rate": 1e-3,
        "optimizer": "adam",
    }
    mean, std = np.zeros(rows, np.float32), np.ones(rows, np.float32)
    return network.build(values, "tdnn", (rows, 201, 1), mean, std)


def _expected(rows: int, c: int, dense: int) -> int:
    """Frame layers (kernel 5, 3, 3; no bias) + their batch norms' scale and offset, the 1x1
    layer to 2c, the embedding and the logit."""
    frames = rows * c * 5 + c * c * 3 + c * c * 3 + 3 * 2 * c
    wide = c * 2 * c + 2 * 2 * c
    return frames + wide + (2 * 2 * c * dense + dense) + (dense + 1)


@pytest.mark.parametrize(("rows", "channels", "dense"), [(60, 128, 128), (64, 64, 256)])
def test_parameter_count_follows_the_layer_plan(rows: int, channels: int, dense: int) -> None:
    model = _tdnn(rows, channels, dense)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == _expected(rows, channels, dense)
    assert _expected(60, 128, 128) == 236_545  # the default search space's middle, on LFCC


def test_statistics_pooling_is_mean_and_std_over_frames() -> None:
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 50, 4)).astype("float32")
    pooled = keras.ops.convert_to_numpy(StatisticsPooling()(x))
    np.testing.assert_allclose(pooled[:, :4], x.mean(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pooled[:, 4:], x.std(axis=1), rtol=1e-3, atol=1e-3)


def test_saved_model_loads_in_safe_mode_with_the_same_scores(tmp_path: Path) -> None:
    model = _tdnn(60, 64, 64)
    x = np.random.default_rng(1).normal(size=(3, 60, 201, 1)).astype("float32")
    path = tmp_path / "tdnn.keras"
    model.save(path)
    loaded = network.load(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
