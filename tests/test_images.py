"""Tests for deepfake_audio.dsp.images on real files written with Pillow, checked against Keras."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp.images import (
    DEMO_CLASSES,
    IMAGE_SUFFIXES,
    ImageError,
    load_image,
    write_demo_images,
)

TARGET = (224, 224)

# (height, width) of the source images: down-scaled (the notebook's usual case), unchanged,
# and up-scaled.
SOURCE_SIZES = [(200, 300), (224, 224), (150, 100)]


def _noise(size: tuple[int, int], channels: int, seed: int) -> np.ndarray:
    """Random pixels: every nearest-neighbour index mistake shows up as a mismatch."""
    rng = np.random.default_rng(seed)
    shape = size if channels == 1 else (*size, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _write(path: Path, kind: str, size: tuple[int, int], seed: int = 0) -> Path:
    """Write one image of the given Pillow flavour; returns the path."""
    if kind == "rgb_png":
        img = Image.fromarray(_noise(size, 3, seed))
    elif kind == "rgba_png":
        img = Image.fromarray(_noise(size, 4, seed))
    elif kind == "gray_png":
        img = Image.fromarray(_noise(size, 1, seed))
    elif kind in ("palette_png", "palette_trns_png"):
        # Random indices into a random 64-colour palette (quantizing noise is slow).
        img = Image.fromarray(_noise(size, 1, seed) // 4).convert("P")
        img.putpalette(_noise((64,), 3, seed + 1).ravel().tolist())
        assert img.mode == "P"
        if kind == "palette_trns_png":
            img.info["transparency"] = 0
    elif kind in ("rgb_jpeg", "gray_jpeg"):
        img = Image.fromarray(_noise(size, 3 if kind == "rgb_jpeg" else 1, seed))
    else:
        raise AssertionError(kind)
    img.save(path, **({"quality": 90} if kind.endswith("jpeg") else {}))
    return path


KINDS = ["rgb_png", "rgba_png", "gray_png", "palette_png", "palette_trns_png", "rgb_jpeg"]
KINDS_ALL = [*KINDS, "gray_jpeg"]


def _suffix(kind: str) -> str:
    return ".jpg" if kind.endswith("jpeg") else ".png"


@pytest.fixture(scope="module")
def keras():
    """Keras, imported only by the tests that compare against it (it pulls in TensorFlow)."""
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def image_data_generator():
    """The generator class the notebook used (keras 3 keeps it in its legacy module)."""
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError:  # pragma: no cover - depends on the installed Keras
        pytest.skip("keras has no legacy ImageDataGenerator")
    return ImageDataGenerator


def _assert_one_line(err: ImageError, path: Path, *parts: str) -> None:
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(str(path)), message
    assert path.name in message
    for part in parts:
        assert part in message, (part, message)


# --- equality with Keras ---------------------------------------------------------------------


@pytest.mark.parametrize("source_size", SOURCE_SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("kind", KINDS_ALL)
def test_matches_keras_load_img(tmp_path: Path, keras, kind: str, source_size) -> None:
    path = _write(tmp_path / f"img{_suffix(kind)}", kind, source_size)
    ours, meta = load_image(path, TARGET)

    img = keras.utils.load_img(path, target_size=TARGET)
    raw = keras.utils.img_to_array(img)
    # The brief's reference: /255 differs from *(1/255) by at most one float32 ulp.
    np.testing.assert_allclose(ours, raw / 255.0, rtol=0, atol=1e-7)
    # What ImageDataGenerator(rescale=1./255).standardize does (x *= rescale): bit-identical.
    expected = raw.copy()
    expected *= 1.0 / 255
    assert ours.dtype == expected.dtype == np.float32
    assert np.array_equal(ours, expected)
    assert (meta["height"], meta["width"]) == source_size


def test_matches_flow_from_directory(tmp_path: Path, image_data_generator) -> None:
    """The notebook's exact call, on a tree mixing every mode and size."""
    root = tmp_path / "train"
    for class_index, label in enumerate(DEMO_CLASSES):
        (root / label).mkdir(parents=True)
        for i, kind in enumerate(KINDS_ALL):
            size = SOURCE_SIZES[(i + class_index) % len(SOURCE_SIZES)]
            _write(root / label / f"{kind}{_suffix(kind)}", kind, size, seed=10 * class_index + i)

    generator = image_data_generator(rescale=1.0 / 255).flow_from_directory(
        root, target_size=TARGET, class_mode="binary", shuffle=False, batch_size=64
    )
    batch_x, batch_y = generator[0]
    assert len(generator.filepaths) == 2 * len(KINDS_ALL) == len(batch_x)
    assert generator.class_indices == {"FAKE": 0, "REAL": 1}
    for filepath, x, y in zip(generator.filepaths, batch_x, batch_y, strict=True):
        ours, _ = load_image(filepath, TARGET)
        assert np.array_equal(ours, x), filepath
        assert y == DEMO_CLASSES.index(Path(filepath).parent.name)


def test_suffixes_match_flow_from_directory(image_data_generator) -> None:
    from keras.src.legacy.preprocessing.image import DirectoryIterator

    assert set(IMAGE_SUFFIXES) == {f".{ext}" for ext in DirectoryIterator.white_list_formats}
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)


# --- output contract -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_shape_range(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / f"img{_suffix(kind)}", kind, (200, 300))
    array, _ = load_image(path, TARGET)
    assert array.dtype == np.float32
    assert array.shape == (224, 224, 3)
    assert array.min() >= 0.0 and array.max() <= 1.0
    if not kind.startswith("palette"):  # a 64-colour palette need not reach either end
        assert array.min() < 0.05 and array.max() > 0.95  # random pixels span the range


def test_size_is_height_width(tmp_path: Path) -> None:
    path = _write(tmp_path / "img.png", "rgb_png", (200, 300))
    array, meta = load_image(path, (64, 96))
    assert array.shape == (64, 96, 3)
    assert (meta["width"], meta["height"]) == (300, 200)


def test_same_size_is_not_resampled(tmp_path: Path) -> None:
    pixels = _noise((64, 96), 3, seed=3)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    array, _ = load_image(path, (64, 96))
    assert np.array_equal(np.rint(array * 255).astype(np.uint8), pixels)


def test_metadata_and_bytes_source(tmp_path: Path) -> None:
    path = _write(tmp_path / "img.png", "rgba_png", (200, 300))
    data = path.read_bytes()
    from_path, meta = load_image(path, TARGET)
    from_bytes, meta_bytes = load_image(data, TARGET)
    assert meta == {"width": 300, "height": 200, "sha256": hashlib.sha256(data).hexdigest()}
    assert meta_bytes == meta
    assert np.array_equal(from_path, from_bytes)


def test_rejects_bad_size(tmp_path: Path) -> None:
    path = _write(tmp_path / "img.png", "rgb_png", (20, 30))
    for size in [(0, 10), (10, -1), (10.5, 10), (True, 10), (10,)]:
        with pytest.raises(ValueError, match="size"):
            load_image(path, size)


# --- errors ----------------------------------------------------------------------------------


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\nsecond line\n")
    with pytest.raises(ImageError) as info:
        load_image(path, TARGET)
    _assert_one_line(info.value, path, "not an image")


def test_truncated_png(tmp_path: Path) -> None:
    full = _write(tmp_path / "full.png", "rgb_png", (200, 300))
    path = tmp_path / "half.png"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        load_image(path, TARGET)
    _assert_one_line(info.value, path, "truncated")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        load_image(path, TARGET)
    _assert_one_line(info.value, path, "empty file")


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_constant_colour_image(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"blank_{mode}.png"
    img = Image.new("RGB", (300, 200), (10, 20, 30))
    # quantize, not convert("P"): the latter dithers to the web palette, so is not constant.
    (img.quantize(colors=4) if mode == "P" else img.convert(mode)).save(path)
    with pytest.raises(ImageError) as info:
        load_image(path, TARGET)
    _assert_one_line(info.value, path, "blank image: every pixel is the same")


def test_constant_colour_with_varying_alpha_is_blank(tmp_path: Path) -> None:
    """Keras drops alpha, so only the (constant) colour would reach the model."""
    rgba = np.zeros((50, 60, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = _noise((50, 60), 1, seed=1)
    path = tmp_path / "alpha_only.png"
    Image.fromarray(rgba).save(path)
    with pytest.raises(ImageError, match="blank image"):
        load_image(path, TARGET)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageError) as info:
        load_image(missing, TARGET)
    _assert_one_line(info.value, missing, "no such file")
    with pytest.raises(ImageError) as info:
        load_image(tmp_path, TARGET)
    _assert_one_line(info.value, tmp_path, "directory")


def test_error_is_user_error_and_pickles(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        load_image(path, TARGET)
    err = info.value
    assert isinstance(err, UserError)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ImageError
    assert str(clone) == str(err) and clone.source == str(path) and clone.reason == err.reason


def test_bytes_error_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^<bytes>: not an image"):
        load_image(b"plain text", TARGET)


# --- demo tree -------------------------------------------------------------------------------

DEMO_COUNTS = {"train": 4, "validation": 2, "test": 1}
DEMO_SIZE = (64, 96)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_demo_layout_and_decodable(tmp_path: Path) -> None:
    write_demo_images(tmp_path, DEMO_COUNTS, size=DEMO_SIZE, seed=0)
    for split, count in DEMO_COUNTS.items():
        for label in DEMO_CLASSES:
            files = sorted((tmp_path / split / label).iterdir())
            assert len(files) == count
            for path in files:
                assert path.suffix in IMAGE_SUFFIXES
                array, meta = load_image(path, DEMO_SIZE)
                assert array.shape == (*DEMO_SIZE, 3)
                assert (meta["height"], meta["width"]) == DEMO_SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEMO_COUNTS)


def test_demo_default_size_is_notebook_size(tmp_path: Path) -> None:
    write_demo_images(tmp_path, {"train": 1})
    for label in DEMO_CLASSES:
        with Image.open(tmp_path / "train" / label / f"{label.lower()}_0000.png") as img:
            assert (img.size, img.mode) == ((224, 224), "RGB")


def test_demo_is_deterministic(tmp_path: Path) -> None:
    write_demo_images(tmp_path / "a", DEMO_COUNTS, size=DEMO_SIZE, seed=7)
    write_demo_images(tmp_path / "b", DEMO_COUNTS, size=DEMO_SIZE, seed=7)
    write_demo_images(tmp_path / "c", DEMO_COUNTS, size=DEMO_SIZE, seed=8)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[key] != c[key] for key in a)
    # Every image is distinct (per-image seeds, no repeated draws across splits or classes).
    assert len({hashlib.sha256(v).digest() for v in a.values()}) == len(a)


def test_demo_growing_a_split_keeps_existing_images(tmp_path: Path) -> None:
    write_demo_images(tmp_path / "small", {"train": 2}, size=DEMO_SIZE)
    write_demo_images(tmp_path / "large", {"train": 5, "test": 1}, size=DEMO_SIZE)
    small, large = _tree(tmp_path / "small"), _tree(tmp_path / "large")
    assert all(large[key] == value for key, value in small.items())


def test_demo_classes_differ_learnably(tmp_path: Path) -> None:
    """FAKE has a horizontal band of extra energy: a row profile separates the class means."""
    write_demo_images(tmp_path, {"train": 12}, size=DEMO_SIZE, seed=0)

    def rows(label: str) -> np.ndarray:
        files = sorted((tmp_path / "train" / label).iterdir())
        # Viridis' green channel rises with level; average over time and images.
        return np.mean([load_image(p, DEMO_SIZE)[0][..., 1].mean(axis=1) for p in files], axis=0)

    diff = rows("FAKE") - rows("REAL")
    peak = int(np.argmax(diff))
    assert diff[peak] > 0.05
    assert diff[peak] > 5 * np.median(np.abs(diff))
    assert peak < DEMO_SIZE[0] // 2  # the band is high in the spectrum, i.e. near the top


def test_demo_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_class"):
        write_demo_images(tmp_path, {"train": -1})
