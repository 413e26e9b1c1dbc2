"""Spectrogram image decoding, bit-for-bit what the research notebook fed its CNN.

The original notebook trained on PNG/JPG spectrogram renders through
``ImageDataGenerator(rescale=1./255).flow_from_directory(dir, target_size=(224, 224),
class_mode='binary')``. For those images to run through this pipeline unchanged, `load_image`
reproduces that loader exactly, step by step, without importing TensorFlow:

1. decode with Pillow from the file bytes (as ``keras.utils.load_img`` does);
2. ``convert("RGB")`` when the mode is not already RGB (``color_mode="rgb"``): palette images
   are expanded, grayscale is replicated, and alpha is *dropped*, not composited;
3. resize with nearest-neighbour (Keras' default ``interpolation="nearest"``) only when the
   size differs from the target;
4. cast to float32 and multiply by ``1/255`` (``ImageDataGenerator.standardize`` does
   ``x *= rescale``; that is not bit-identical to ``x / 255``, so we multiply).

Like Keras, no EXIF orientation is applied and no JPEG draft (reduced-resolution) decoding is
used: either would change the pixels the model was trained on.

Anything wrong with the file itself (unreadable, not an image, truncated, zero-size, blank)
raises `ImageError`, a `UserError`, so a dataset build can skip the file and the server can
answer with one line naming it, exactly like `deepfake_audio.dsp.audio.AudioError`.

`write_demo_images` renders a small synthetic tree in the notebook's directory layout, so tests
and benchmarks can exercise the images pipeline without the notebook's data.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_audio.core.errors import UserError

__all__ = [
    "DEMO_CLASSES",
    "IMAGE_SUFFIXES",
    "ImageError",
    "load_image",
    "write_demo_images",
]

# The extensions `flow_from_directory` picks up (Keras' DirectoryIterator.white_list_formats,
# the same list in keras-preprocessing and in keras 3's legacy module), all readable by Pillow.
# Compare lower-cased, as Keras does. Note this is not `image_dataset_from_directory`'s list
# (that one takes .gif and skips .ppm/.tif/.tiff); the notebook used flow_from_directory.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")

# ImageDataGenerator(rescale=1./255) multiplies a float32 array by this Python float, which
# NumPy evaluates in float32; spelled out so the product rounds exactly as it did in Keras.
_RESCALE = np.float32(1.0 / 255.0)

# Class folders of the notebook's layout; flow_from_directory sorts them, so FAKE=0, REAL=1.
DEMO_CLASSES = ("FAKE", "REAL")

# Errors Pillow's decoders raise on malformed data (its own `Image.open` catches this set while
# probing formats, plus ValueError and EOFError that some decoders raise while loading).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)

Source = str | os.PathLike | bytes


class ImageError(UserError):
    """An image input that cannot be used, with a one-line message ``<source>: <reason>``.

    ``source`` is the path as given (``"<bytes>"`` for in-memory data), so a dataset build can
    log and skip the file and the server can answer 400. The message is collapsed to one line,
    whatever Pillow said.
    """

    def __init__(self, source: str, reason: str | None = None) -> None:
        self.source: str | None = source if reason is not None else None
        self.reason: str | None = None if reason is None else " ".join(str(reason).split())
        message = str(source) if reason is None else f"{source}: {self.reason}"
        super().__init__(" ".join(message.split()))

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str | None]]:
        # Rebuild from the original arguments so the error survives a trip through a worker
        # process (the default would call __init__ with the formatted message only).
        if self.reason is None:
            return (type(self), (str(self),))
        return (type(self), (str(self.source), self.reason))


def _read_bytes(source: Source) -> tuple[str, bytes]:
    """Return ``(name for messages, file bytes)``, reading a path exactly once."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
    else:
        name = os.fsdecode(source)
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            raise ImageError(name, "no such file") from None
        except IsADirectoryError:
            raise ImageError(name, "is a directory, not an image file") from None
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return name, data


def _decode_rgb(name: str, data: bytes) -> Image.Image:
    """Decode bytes fully and convert to RGB the way ``load_img(color_mode="rgb")`` does.

    The pixels are loaded here, inside the error handling, because Pillow decodes lazily: a
    truncated file would otherwise only fail later, far from the file name.
    """
    try:
        img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not an image Pillow can decode") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(name, f"not a readable image ({exc})") from None
    try:
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(name, f"corrupt or truncated image ({exc})") from None
    return img


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a ``(height, width)`` target; a bad one is a caller bug, hence ValueError."""
    if len(size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in size):
        raise ValueError(f"size must be (height, width) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def load_image(source: Source, size: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Decode an image file into the float32 array the notebook's generator produced.

    Args:
        source: a path, or the file's bytes (named ``<bytes>`` in errors).
        size: ``(height, width)`` of the output, Keras' ``target_size`` order.

    Returns:
        ``(array, meta)``: ``array`` is float32 ``(height, width, 3)`` in [0, 1], equal to
        ``img_to_array(load_img(path, target_size=size)) * (1/255)``; ``meta`` is
        ``{"width", "height"}`` of the original image and ``"sha256"`` of the file bytes (to
        spot duplicates across splits, which would leak test data into training).

    Raises:
        ImageError: missing/unreadable or empty file, not an image, corrupt or truncated data,
            a zero-size image, or a blank image (every pixel the same colour: the image
            analogue of silent audio, nothing for the model to look at).
        ValueError: ``size`` is not two positive ints.
    """
    height, width = _check_size(size)
    name, data = _read_bytes(source)
    img = _decode_rgb(name, data)
    orig_width, orig_height = img.size
    if orig_width == 0 or orig_height == 0:
        # Pillow 13 already refuses such headers when opening; kept for other versions/plugins.
        raise ImageError(name, f"zero-size image ({orig_width}x{orig_height})")
    # Per-band (min, max) on the converted image: what the model would see, cheaply in C.
    if all(lo == hi for lo, hi in img.getextrema()):
        raise ImageError(name, "blank image: every pixel is the same")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.NEAREST)
    array = np.asarray(img, dtype=np.float32) * _RESCALE
    meta = {
        "width": orig_width,
        "height": orig_height,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return array, meta


# --- synthetic demo tree -------------------------------------------------------------------

# matplotlib's viridis at 9 evenly spaced points: perceptually ordered, the usual specshow look,
# without importing matplotlib.
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ],
    dtype=np.float64,
)

# The FAKE cue: a narrow band of extra energy (think vocoder artefact) centred at this fraction
# of the height from the bottom, a few dB above the noise so a small CNN learns it in a few
# epochs but a single pixel does not give it away.
_FAKE_BAND_CENTRE = 0.72
_FAKE_BAND_WIDTH = 0.025
_FAKE_BAND_DB = (6.0, 12.0)
_NOISE_DB = 4.0
_LEVEL_PERCENTILES = (0.5, 99.5)
_TILT_DB = 20.0


def _colourise(level: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB through viridis (piecewise-linear)."""
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    channels = [np.interp(level, anchors, _VIRIDIS[:, c]) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def _gaussian(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / width) ** 2)


def _demo_spectrogram(rng: np.random.Generator, size: tuple[int, int], fake: bool) -> np.ndarray:
    """Render one log-mel-like image: tilt + syllables with formants + noise (+ FAKE band).

    Built in dB so the look (and the difficulty) resembles a real log-mel render; row 0 is the
    top, i.e. the highest frequency, as specshow draws it.
    """
    height, width = size
    freq = np.linspace(1.0, 0.0, height)[:, None]  # fraction of the band, top row = highest
    time = np.linspace(0.0, 1.0, width)[None, :]
    envelope = np.zeros((1, width))
    for _ in range(rng.integers(3, 7)):  # syllables
        envelope = envelope + rng.uniform(0.5, 1.0) * _gaussian(
            time, rng.uniform(0.05, 0.95), rng.uniform(0.03, 0.08)
        )
    envelope = np.minimum(envelope, 1.0)
    formants = sum(
        rng.uniform(0.6, 1.0) * _gaussian(freq, rng.uniform(0.05, 0.5), rng.uniform(0.03, 0.08))
        for _ in range(3)
    )
    level = -_TILT_DB * freq + 25.0 * envelope * formants
    level = level + rng.normal(0.0, _NOISE_DB, (height, width))
    if fake:
        centre = _FAKE_BAND_CENTRE + rng.uniform(-0.04, 0.04)
        band = _gaussian(freq, centre, _FAKE_BAND_WIDTH)
        level = level + rng.uniform(*_FAKE_BAND_DB) * band * (0.6 + 0.4 * envelope)
    # Percentiles rather than min/max, so one noise outlier cannot squeeze the band into the
    # floor or the ceiling of the colour map.
    lo, hi = np.percentile(level, _LEVEL_PERCENTILES)
    return _colourise(np.clip((level - lo) / (hi - lo), 0.0, 1.0))


def write_demo_images(
    root: str | os.PathLike,
    per_class: dict[str, int],
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
) -> None:
    """Write ``root/<split>/{FAKE,REAL}/<class>_NNNN.png`` synthetic spectrogram images.

    The layout is the notebook's (``flow_from_directory`` on each split directory), so the
    images data source can be exercised end to end without the notebook's data. FAKE images
    carry a faint band of extra energy high in the spectrum on top of the same random speech-
    like structure and noise as REAL ones: learnable, not trivial.

    Args:
        root: directory to write into (created; existing files of the same name are replaced).
        per_class: split name (e.g. ``train``, ``validation``, ``test``) -> images per class.
        size: ``(height, width)`` of every image.
        seed: every image depends only on (seed, split, class, index), so the output is
            deterministic and growing a split leaves its existing images unchanged.
    """
    height, width = _check_size(size)
    for split, count in per_class.items():
        if isinstance(count, bool) or int(count) != count or count < 0:
            raise ValueError(f"per_class[{split!r}] must be a non-negative int, got {count!r}")
        split_key = zlib.crc32(split.encode("utf-8"))  # stable, unlike hash()
        for class_index, label in enumerate(DEMO_CLASSES):
            directory = Path(root) / split / label
            directory.mkdir(parents=True, exist_ok=True)
            for index in range(int(count)):
                rng = np.random.default_rng([seed, split_key, class_index, index])
                pixels = _demo_spectrogram(rng, (height, width), fake=label == "FAKE")
                Image.fromarray(pixels).save(directory / f"{label.lower()}_{index:04d}.png")
