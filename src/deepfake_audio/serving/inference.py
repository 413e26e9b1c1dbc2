"""The network at serving time: one compiled call, built once at load, and the process's threads.

`keras.Model.predict` is made for epochs of data, not for requests: every call wraps its
input in a fresh tf.data pipeline and iterator, which cost ~150 ms a call on this project's
2-core CPUs while the network itself needs ~3 ms for a 2 s log-mel. A served model therefore
calls the network through `Network`: a `tf.function` over the model's forward pass in
inference mode, with an input signature whose batch dimension is open (`None`), traced once
when the model is loaded. Every later call, whatever its number of windows, runs that one
graph: no tracing, no tf.data, no Python per layer.

The numbers are those of `predict` (float32 logits; the same graph ops, only the batching of
windows differs, which changes the last bits at most - the equivalence test holds both to
1e-5 on every feature kind).

On a GPU, batches are zero-padded up to a power of two (`BUCKETS`): a graph with an open batch
dimension still autotunes its convolutions once per distinct shape, so a few bucket sizes
keep that a start-up cost rather than a per-request one. The padding rows are dropped before
anything reads them; every row is scored independently (batch norm runs in inference mode),
so they cannot change the others. On a CPU nothing is padded: there the rows would be paid
for in full.

Threads (`configure_threads`): the feature front end's matrix products are tiny (64 x 257 by
257 x 201), and OpenBLAS's default of one spinning thread per core made them ~10x slower on a
busy 2-core machine, so a scoring process runs BLAS on one thread. TensorFlow's pools keep
their defaults (every core) unless `DEEPFAKE_AUDIO_THREADS` says otherwise, which is how
several server workers on one machine share its cores (docs/serving.md).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

# Most windows sent through the network in one call: bounds the memory of a request with many
# long recordings (the old `predict(batch_size=64)` bound), and is the largest GPU bucket.
BATCH_SIZE = 64
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
THREADS_ENV = "DEEPFAKE_AUDIO_THREADS"
# A frame of at least this many rows per thread is decoded on several threads
# (`Detector.row_inputs`): `deepfake-audio predict`'s chunks, not a request of a row or two.
ROWS_PER_THREAD = 8

_configured = False


def threads_from_env() -> int | None:
    """`DEEPFAKE_AUDIO_THREADS` as a positive int, None when unset or empty.

    A bad value is a `UserError` (one line from the CLI; the model fails to load in a
    server), never a ValueError, which the pyfunc would answer as a bad request.
    """
    from deepfake_audio.core.errors import UserError

    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
    return value


def configure_threads() -> None:
    """Thread settings of a scoring process (a server worker, `deepfake-audio predict`).

    BLAS: one thread, always (see the module docstring). TensorFlow: `DEEPFAKE_AUDIO_THREADS`
    intra- and inter-op threads when set. TensorFlow accepts that only before its runtime
    starts, so this runs before the model is loaded; if something in the process started it
    already, the setting is reported on stderr and the defaults stay. Idempotent.

    Process-wide and for good: every process that loads the pyfunc gets it, MLflow's check of
    the input example when the train stage logs a model included. That process has finished
    its own BLAS-heavy work by then (the fit), and nothing after it needs more threads.
    """
    global _configured
    if _configured:
        return
    _configured = True
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # process-wide, not a context: stays in force
    threads = threads_from_env()
    if threads is None:
        return
    from deepfake_audio.core.backend import import_tensorflow

    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        print(
            f"deepfake-audio: {THREADS_ENV}={threads} ignored: TensorFlow's runtime had "
            "already started in this process",
            file=sys.stderr,
        )


def row_threads() -> int:
    """Threads that decode the rows of a large frame: `DEEPFAKE_AUDIO_THREADS`, else the cores."""
    configured = threads_from_env()
    if configured is not None:
        return configured
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def bucket(n: int) -> int:
    """The smallest bucket that holds `n` rows (`n` <= BATCH_SIZE)."""
    for size in BUCKETS:
        if size >= n:
            return size
    return n


class Network:
    """The model's forward pass in inference mode, compiled once: features in, float32 logits out.

    Thread-safe: concurrent requests of a server worker call the same compiled graph.
    """

    def __init__(self, model: Any, batch_size: int = BATCH_SIZE) -> None:
        import keras

        self.model = model
        self.batch_size = int(batch_size)
        self.input_shape = tuple(int(d) for d in model.input_shape[1:])
        if keras.backend.backend() != "tensorflow":  # not this project's backend; still right
            self._call = self._predict_on_batch
            self._pad = False
        else:
            from deepfake_audio.core.backend import import_tensorflow

            tf = import_tensorflow()
            self._tf = tf
            spec = tf.TensorSpec((None, *self.input_shape), tf.float32)

            def forward(x: Any) -> Any:
                return tf.cast(model(x, training=False), tf.float32)

            self._compiled = tf.function(forward, input_signature=[spec], autograph=False)
            self._concrete = self._compiled.get_concrete_function()  # the one trace
            self._call = self._call_graph
            self._pad = bool(tf.config.list_logical_devices("GPU"))
        # One call now, so the first request does not pay for kernel and allocator warm-up.
        self(np.zeros((1, *self.input_shape), dtype=np.float32))

    @property
    def traces(self) -> int:
        """How often the forward pass was traced: 1 for the life of the process (0 off TF)."""
        compiled = getattr(self, "_compiled", None)
        return 0 if compiled is None else int(compiled.experimental_get_tracing_count())

    def _call_graph(self, batch: np.ndarray) -> np.ndarray:
        return self._concrete(self._tf.constant(batch)).numpy()

    def _predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch))

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Logits of `inputs` (n, *input_shape) as float32, shape (n,); n may be 0."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.shape[1:] != self.input_shape:
            raise ValueError(
                f"network input of shape {inputs.shape[1:]}, expected {self.input_shape}"
            )
        n = len(inputs)
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, self.batch_size):
            batch = inputs[start : start + self.batch_size]
            rows = len(batch)
            if self._pad and bucket(rows) != rows:
                padded = np.zeros((bucket(rows), *self.input_shape), dtype=np.float32)
                padded[:rows] = batch
                batch = padded
            logits = np.asarray(self._call(np.ascontiguousarray(batch)), dtype=np.float32)
            out[start : start + rows] = logits.reshape(len(batch), -1)[:rows, 0]
        return out
