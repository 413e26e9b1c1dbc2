"""Device set-up shared by every stage that runs TensorFlow.

On a GPU: memory growth (so tuner workers can share a card), and mixed
precision (the model keeps a float32 output layer). On a CPU: TensorFlow's
own thread pools already use every core; we only quiet its start-up noise.
"""

from __future__ import annotations

import os
import sys

# Set before TensorFlow is first imported anywhere in the process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configure(seed: int, mixed_precision: bool | None = None) -> dict[str, object]:
    """Seed everything and set up the devices; returns what was chosen, for logging."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised in this process; growth was set then
    use_mixed = bool(gpus) if mixed_precision is None else mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    keras.utils.set_random_seed(seed)
    info = {
        "device": "gpu" if gpus else "cpu",
        "gpus": len(gpus),
        "precision_policy": "mixed_float16" if use_mixed else "float32",
        "cpu_count": os.cpu_count() or 1,
    }
    print(
        f"runtime: {info['device']} ({info['gpus']} GPU), policy {info['precision_policy']}",
        file=sys.stderr,
    )
    return info
