"""The device code paths, exercised on a CPU: quiet start-up, mixed precision, MirroredStrategy.

No GPU here, so the GPU switches are forced: the mixed_float16 policy, and a
MirroredStrategy over two logical CPU devices - the same model-building and
training code a multi-GPU machine runs, in its own process (devices must be
configured before TensorFlow starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_tensorflow_starts_without_log_noise() -> None:
    proc = _python(
        """
        from deepfake_audio.ops.runtime import configure, import_tensorflow
        import_tensorflow()
        info = configure(0)
        print(info["device"], info["precision_policy"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "float32"]
    # Only our own one-line summary: no absl/oneDNN/CUDA start-up lines.
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("runtime: cpu")
    ]


@pytest.mark.slow
def test_mixed_precision_model_trains_under_mirrored_strategy() -> None:
    proc = _python(
        """
        import numpy as np
        from deepfake_audio.ops.runtime import configure, import_tensorflow
        tf = import_tensorflow()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        info = configure(0, mixed_precision=True)
        import keras
        from deepfake_audio.models import network
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        values = {"filters_1": 8, "filters_2": 8, "kernel_size_1": 3, "kernel_size_2": 3,
                  "dense_units": 8, "learning_rate": 1e-3, "optimizer": "adam"}
        with strategy.scope():
            model = network.build(values, "compact_cnn", (16, 51, 1),
                                 np.zeros(16, "float32"), np.ones(16, "float32"))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 16, 51, 1)).astype("float32")
        y = (rng.random(32) > 0.5).astype("float32")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        out = model.predict(x[:4], verbose=0)
        print(strategy.num_replicas_in_sync, info["precision_policy"],
              model.layers[2].compute_dtype, out.dtype, model.jit_compile,
              bool(np.isfinite(history.history["loss"]).all()))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    replicas, policy, inner_dtype, out_dtype, jit, finite = proc.stdout.split()
    assert replicas == "2" and policy == "mixed_float16"
    assert inner_dtype == "float16", "layers compute in float16 under the mixed policy"
    assert out_dtype == "float32", "the logit stays float32"
    assert jit == "False", "Keras turns XLA off under tf.distribute"
    assert finite == "True"
