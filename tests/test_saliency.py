"""Saliency (serving/saliency.py): the gradient is the model's, the picks are the extremes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_hparams
from deepfake_audio.serving import saliency


def test_pick_takes_the_most_confident_right_and_wrong_per_attack() -> None:
    scores = np.array([3.0, 0.5, -1.0, -4.0, 2.0, -0.2, 1.5, -3.0])
    targets = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    attacks = np.array(["-", "-", "-", "A01", "A01", "A01", "A02", "A02"])
    chosen = saliency.pick(scores, targets, attacks, threshold=0.0)
    assert chosen == [
        (0, "-", "right"),  # bona fide, far above
        (2, "-", "wrong"),  # bona fide, furthest below
        (3, "A01", "right"),
        (4, "A01", "wrong"),  # a spoof scored 2.0: the most confident mistake
        (7, "A02", "right"),
        (6, "A02", "wrong"),
    ]
    assert saliency.pick(scores[:1], targets[:1], attacks[:1], 0.0) == [(0, "-", "right")]


def test_the_gradient_is_the_bona_fide_logits_and_the_picture_draws() -> None:
    """Against central differences on a real (built) network, per row of a batch."""
    from deepfake_audio.models import network

    hparams = tiny_hparams(filters=4, dense_units=4)
    shape = (8, 12, 1)
    model = network.build(
        hparams, "compact_cnn", shape, np.zeros(8, np.float32), np.ones(8, np.float32)
    )
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    grads = saliency.gradients(model, x)
    assert grads.shape == x.shape
    eps = 1e-2
    for row, (i, j) in ((0, (3, 5)), (1, (6, 2))):
        up, down = x.copy(), x.copy()
        up[row, i, j, 0] += eps
        down[row, i, j, 0] -= eps
        numeric = (model(up)[row, 0] - model(down)[row, 0]) / (2 * eps)
        assert float(grads[row, i, j, 0]) == pytest.approx(float(numeric), rel=0.05, abs=1e-3)
    picture = saliency.attribution(x[0], grads[0])
    assert picture.shape == (8, 12)
    fig = saliency.figure(x[0], picture, "logmel", "a clip")
    assert len(fig.axes) == 2
