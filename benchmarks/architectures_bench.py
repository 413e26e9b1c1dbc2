"""`architectures.*`: trainable parameters and training samples/s of every architecture.

What an anti-spoofing researcher asks first of a model they might run: how big is it and
how fast does it train on the hardware at hand. Each architecture gets its own input kind
at the project's feature settings (params.yaml: a 2 s window at 16 kHz), the same batch
size, and one fixed set of hyperparameter values; throughput is the median of epochs
2.. (epoch 1 traces the graph), on random inputs, because the arithmetic of a training
step does not depend on what the numbers are. Quality (EER) is `make quality`'s job.

It imports Keras only (no TensorFlow API), so the same section runs on the Keras torch
backend, as on the GPU machine that has PyTorch and no TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import Figure, epoch_timer, log, median, spread
from benchmarks.corpus import Workspace

BATCH_SIZE = 32
# Training clips per epoch: 2 batches of the slowest model (AASIST, 1-3 clips/s on two CPU
# cores) keep the section within a few minutes; --quick (the tests) trains one batch of 8.
SAMPLES = 64
QUICK_SAMPLES = 8
EPOCHS = 3
QUICK_EPOCHS = 2
# (architecture, features.kind): each on the input it was designed for.
PLAN = (
    ("tdnn", "lfcc"),
    ("compact_cnn", "logmel"),
    ("lcnn", "lfcc"),
    ("wave_cnn", "waveform"),
    ("aasist_l", "waveform"),
    ("aasist", "waveform"),
    # Whisper tiny.en's frozen encoder (block 1) in the model, only the pooled head trained.
    ("whisper_head", "whisper"),
    # The same encoder, a TDNN with attentive statistics pooling on its frames.
    ("whisper_tdnn", "whisper"),
)
# --quick (the tests check the harness, not the figures): two cheap architectures, one on
# spectral features and one on the waveform. That every architecture builds and trains on its
# own input is the end-to-end test's job (tests/test_architectures_end_to_end.py).
QUICK_PLAN = (("tdnn", "lfcc"), ("wave_cnn", "waveform"))
# The CNNs: the smallest widths of the notebook's ranges (as the `train` section); the
# reference models search only these three, at their papers' learning rates.
TDNN_VALUES = {"channels": 128, "dense_units": 128}
CNN_VALUES = {
    "filters_1": 32,
    "filters_2": 64,
    "kernel_size_1": 3,
    "kernel_size_2": 3,
    "dense_units": 64,
}
REFERENCE_VALUES = {"dropout": 0.5}
WHISPER_HEAD_VALUES = {"hidden_units": 128, "dropout": 0.3}
WHISPER_TDNN_VALUES = {"channels": 64, "pooling": "attentive", "dropout": 0.3}


def _values(arch: str) -> dict[str, Any]:
    own = CNN_VALUES if arch in ("compact_cnn", "seed_cnn", "wave_cnn") else REFERENCE_VALUES
    own = TDNN_VALUES if arch == "tdnn" else own
    own = WHISPER_HEAD_VALUES if arch == "whisper_head" else own
    own = WHISPER_TDNN_VALUES if arch == "whisper_tdnn" else own
    return {**own, "learning_rate": 1e-4, "optimizer": "adam"}


def _trainable(model: Any) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def measure(
    arch: str,
    input_shape: tuple[int, ...],
    samples: int,
    epochs: int,
    values: dict[str, Any] | None = None,
    features: Any = None,
) -> dict[str, Any]:
    """Build `arch` for `input_shape` (with `values`, default `_values(arch)`; `features`: the
    dataset's, for a front end's settings), train `epochs` on random data, time the epochs."""
    values = _values(arch) if values is None else values
    import keras

    from deepfake_audio.models import network

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, *input_shape)).astype(np.float32)
    y = rng.integers(0, 2, size=(samples, 1)).astype(np.float32)
    channels = input_shape[0] if len(input_shape) == 3 else 1
    norm_axis = 1 if len(input_shape) == 3 else 2
    mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    model = network.build(values, arch, input_shape, mean, std, norm_axis, features=features)
    timer = epoch_timer()
    batch = min(BATCH_SIZE, samples)
    model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[timer], verbose=0)
    timed = timer.seconds[1:] if len(timer.seconds) > 1 else timer.seconds
    rates = [samples / s for s in timed]
    result = {
        "trainable_params": _trainable(model),
        "samples_per_second": median(rates),
        "samples_per_second_per_epoch": spread(rates),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "timed_epochs": len(timed),
        "input_shape": list(input_shape),
        "values": values,
        "batch_size": batch,
    }
    del model
    keras.backend.clear_session()
    return result


def run(ws: Workspace) -> list[Figure]:
    import keras

    samples = QUICK_SAMPLES if ws.quick else SAMPLES
    epochs = QUICK_EPOCHS if ws.quick else EPOCHS
    backend = keras.backend.backend()
    figures = []
    for arch, kind in QUICK_PLAN if ws.quick else PLAN:
        over = {"features": {"kind": kind}, "model": {"architecture": arch}}
        shape = ws.params(over).features.input_shape
        log(f"architectures: {arch} on {kind} {list(shape)}, {epochs} epochs of {samples}")
        r = measure(arch, shape, samples, epochs)
        details = {**r, "features_kind": kind, "keras_backend": backend}
        figures.append(
            Figure(
                key=f"architectures.samples_per_second.{arch}",
                value=r["samples_per_second"],
                unit="training samples/s",
                repeats=r["timed_epochs"],
                compared=(
                    f"{arch} on {kind} {list(shape)}, batch {r['batch_size']}, {samples} random "
                    f"clips an epoch; median over epochs 2..{epochs}; Keras on {backend}"
                ),
                details=details,
            )
        )
        figures.append(
            Figure(
                key=f"architectures.trainable_params.{arch}",
                value=r["trainable_params"],
                unit="parameters",
                repeats=1,
                compared=f"{arch} built for {kind} {list(shape)} (normalisation not trained)",
            )
        )
    return figures
