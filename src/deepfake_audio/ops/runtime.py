"""Device set-up shared by every stage that runs TensorFlow.

On GPUs: memory growth (so tuner workers can share a card), mixed precision
(the model keeps a float32 output layer), XLA through Keras' `jit_compile="auto"`
(on for a single GPU, off on CPUs and under tf.distribute, where it does not
pay), and `MirroredStrategy` when more than one GPU is visible. On a CPU:
TensorFlow's thread pools use every core unless a tuner worker was given its
share (`TF_NUM_INTRAOP_THREADS`); start-up noise is kept out of the logs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from deepfake_audio.core.backend import import_tensorflow

__all__ = ["configure", "gpus", "import_tensorflow", "strategy"]


def gpus() -> list[Any]:
    return import_tensorflow().config.list_physical_devices("GPU")


def strategy() -> Any:
    """MirroredStrategy over every visible GPU when there are several, else the default."""
    tf = import_tensorflow()
    devices = gpus()
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def configure(seed: int, mixed_precision: bool | None = None) -> dict[str, object]:
    """Seed everything and set up the devices; returns what was chosen, for logging."""
    tf = import_tensorflow()
    import keras

    found = gpus()
    for gpu in found:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised in this process; growth was set then
    use_mixed = bool(found) if mixed_precision is None else mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    keras.utils.set_random_seed(seed)
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    info = {
        "device": "gpu" if found else "cpu",
        "gpus": len(found),
        "replicas": len(found) if len(found) > 1 else 1,
        "precision_policy": "mixed_float16" if use_mixed else "float32",
        "cpu_count": os.cpu_count() or 1,
        "intra_op_threads": threads or (os.cpu_count() or 1),
    }
    print(
        f"runtime: {info['device']} ({info['gpus']} GPU, {info['replicas']} replica), "
        f"policy {info['precision_policy']}, {info['intra_op_threads']} CPU threads",
        file=sys.stderr,
    )
    return info
