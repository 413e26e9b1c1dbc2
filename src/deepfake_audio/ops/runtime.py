"""Device set-up shared by every stage that runs TensorFlow.

On GPUs: memory growth (so tuner workers can share a card), mixed precision
(the model keeps a float32 output layer), XLA through Keras' `jit_compile="auto"`
(on for a single GPU, off on CPUs and under tf.distribute, where it does not
pay), and `MirroredStrategy` when more than one GPU is visible. On a CPU:
TensorFlow's thread pools use every core unless a tuner worker was given its
share (`TF_NUM_INTRAOP_THREADS`); start-up noise is kept out of the logs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

# Set before TensorFlow is first imported anywhere in the process: no INFO/WARNING
# lines from its C++ core (oneDNN notices, CPU feature notes) in every stage's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 - where TensorFlow's C++ logging writes - for a moment.

    On a machine without CUDA drivers, importing TensorFlow prints "Could not find
    cuda drivers" and a cuInit error through absl before any log level applies.
    Python exceptions raised inside still propagate and are printed after.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow() -> Any:
    """Import TensorFlow (and find its devices) without the C++ start-up messages."""
    if os.environ.get("DEEPFAKE_AUDIO_TF_LOGS") == "1":  # for debugging a device problem
        import tensorflow as tf

        return tf
    with _quiet_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf


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
