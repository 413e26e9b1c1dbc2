"""`input_pipeline.*`: our tf.data reader against the notebook's ImageDataGenerator."""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import Figure, Stopwatch, interleaved, log, median, spread
from benchmarks.corpus import IMAGE_SIZE, Workspace

BATCH_SIZE = 32
EPOCHS = 2
REPEATS = 3


def image_data_generator() -> tuple[Any, str]:
    """The notebook's ImageDataGenerator, wherever this Keras keeps it."""
    try:  # Keras 2 / tf-keras
        from keras.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "keras.preprocessing.image.ImageDataGenerator"
    except ImportError:
        pass
    # Keras 3 keeps the legacy class only under the tf.keras namespace.
    import tensorflow as tf

    return (
        tf.keras.preprocessing.image.ImageDataGenerator,
        "tf.keras.preprocessing.image.ImageDataGenerator (Keras 3 legacy)",
    )


def run(ws: Workspace) -> list[Figure]:
    from deepfake_audio.dataset.shards import IN_MEMORY_BYTES, SpectrogramDataset
    from deepfake_audio.ops import runtime  # noqa: F401 - quiets TensorFlow before its import

    params = ws.params()
    data = SpectrogramDataset(ws.dataset_dir)
    n = len(data.manifest("train"))
    batches_per_epoch = math.ceil(n / BATCH_SIZE)
    images = ws.images_dir("train")
    generator_class, generator_name = image_data_generator()

    dataset = data.tf_dataset("train", BATCH_SIZE, shuffle=True, seed=params.seed)
    # The same split forced down the streaming path that splits over IN_MEMORY_BYTES take.
    streaming = data.tf_dataset(
        "train", BATCH_SIZE, shuffle=True, seed=params.seed, in_memory_bytes=0
    )
    in_memory = n * 2 * int(np.prod(data.feature_shape)) <= IN_MEMORY_BYTES
    with contextlib.redirect_stdout(io.StringIO()):  # "Found 400 images belonging to ..."
        flow = generator_class(rescale=1.0 / 255).flow_from_directory(
            str(images),
            target_size=(IMAGE_SIZE, IMAGE_SIZE),
            batch_size=BATCH_SIZE,
            class_mode="binary",
            shuffle=True,
            seed=params.seed,
        )
    if flow.samples != n or len(flow) != batches_per_epoch:
        raise RuntimeError(f"flow_from_directory found {flow.samples} images, expected {n}")
    shapes: dict[str, Any] = {}

    first_batch: list[float] = []

    def reader(name: str, pipeline: Any, first: list[float]) -> Callable[[], float]:
        def candidate() -> float:
            count = 0
            with Stopwatch() as sw:
                for _ in range(EPOCHS):
                    epoch_start = time.perf_counter()
                    for element in pipeline:  # a fresh iterator per epoch, as Keras' fit makes
                        if count % batches_per_epoch == 0:
                            first.append(time.perf_counter() - epoch_start)
                        count += 1
                        last = element[0]
            shapes[name] = [list(last.shape), last.dtype.name]
            assert count == EPOCHS * batches_per_epoch, count
            return sw.seconds

        return candidate

    first_streaming: list[float] = []

    def notebook() -> float:
        with Stopwatch() as sw:
            for _ in range(EPOCHS * len(flow)):  # fit() walks the sequence batch by batch
                x, _y = next(flow)
        shapes["imagedatagenerator"] = [list(x.shape), str(x.dtype)]
        return sw.seconds

    log(f"input pipeline: {EPOCHS} epochs of {n} clips, batch {BATCH_SIZE}, {REPEATS} repeats")
    times = interleaved(
        {
            "ours": reader("ours", dataset, first_batch),
            "ours_streaming": reader("ours_streaming", streaming, first_streaming),
            "imagedatagenerator": notebook,
        },
        repeats=REPEATS,
    )
    batches = EPOCHS * batches_per_epoch
    rate = {name: batches / median(t) for name, t in times.items()}
    return [
        Figure(
            key="input_pipeline.speedup_vs_imagedatagenerator",
            value=rate["ours"] / rate["imagedatagenerator"],
            unit="x (batches/s ratio)",
            repeats=REPEATS,
            target=">= 20",
            compared=(
                f"batches of {BATCH_SIZE} over the {n}-clip training split, {EPOCHS} epochs: "
                f"SpectrogramDataset.tf_dataset(shuffle=True) over float16 log-mel shards "
                f"({'held in memory' if in_memory else 'streamed'}, as training reads them) "
                f"{rate['ours']:.0f} batches/s vs ImageDataGenerator(rescale=1/255)"
                f".flow_from_directory(target_size=(224, 224), class_mode='binary') over "
                f"224x224 RGB PNG renderings of the same spectrograms "
                f"{rate['imagedatagenerator']:.1f} batches/s"
            ),
            details={
                "synthetic_demo_corpus": True,
                "clips": n,
                "batch_size": BATCH_SIZE,
                "epochs_per_repeat": EPOCHS,
                "batches_per_repeat": batches,
                "batches_per_second": {k: round(v, 2) for k, v in rate.items()},
                "seconds": {k: spread(v) for k, v in times.items()},
                "batch_shape_and_dtype": shapes,
                "ours_first_batch_of_epoch_ms": spread([1000 * t for t in first_batch]),
                "ours_streaming_first_batch_of_epoch_ms": spread(
                    [1000 * t for t in first_streaming]
                ),
                "ours_path": "in memory" if in_memory else "streaming",
                "in_memory_bytes_limit": IN_MEMORY_BYTES,
                "imagedatagenerator": generator_name,
                "warmup": "one full repeat of each, discarded (warms the page cache too)",
                "renderings": (
                    "each clip's log-mel, top 80 dB over the magma colour map, low "
                    "frequencies at the bottom, bilinear resize to 224x224, PNG"
                ),
            },
        ),
        Figure(
            key="input_pipeline.streaming_speedup_vs_imagedatagenerator",
            value=rate["ours_streaming"] / rate["imagedatagenerator"],
            unit="x (batches/s ratio)",
            repeats=REPEATS,
            compared=(
                f"the same, with tf_dataset forced to stream shard by shard through a "
                f"shuffle buffer (the path of splits over {IN_MEMORY_BYTES >> 20} MiB) "
                f"{rate['ours_streaming']:.0f} batches/s vs ImageDataGenerator "
                f"{rate['imagedatagenerator']:.1f} batches/s"
            ),
            details={"see": "input_pipeline.speedup_vs_imagedatagenerator"},
        ),
    ]
