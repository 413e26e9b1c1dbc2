"""Importing the numerical backend quietly: shared by the stages and by serving.

Serving may import only the core, yet a served model needs TensorFlow loaded without its
C++ start-up noise (oneDNN notices, "Could not find cuda drivers") in every server log,
and with GPU memory growth so several workers can share a card.
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


def grow_gpu_memory(tf: Any) -> None:
    """Memory growth on every GPU, so processes (tuner workers, server workers) share cards."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised in this process
