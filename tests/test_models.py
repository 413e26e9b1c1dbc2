"""Architectures: the tuned learning rate reaches the optimizer, the notebook's CNN is intact,
and an architecture is one file in models/ plus a params.yaml block."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from conftest import PROJECT
from deepfake_audio.config import architectures
from deepfake_audio.models import network

VALUES = {
    "filters_1": 32,
    "filters_2": 64,
    "kernel_size_1": 3,
    "kernel_size_2": 5,
    "dense_units": 64,
    "learning_rate": 3.1e-4,
    "optimizer": "rmsprop",
}


@pytest.mark.parametrize("architecture", ["compact_cnn", "seed_cnn"])
def test_learning_rate_and_optimizer_reach_the_model(architecture: str) -> None:
    model = network.build(VALUES, architecture, (32, 51, 1), np.zeros(32), np.ones(32))
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert lr == pytest.approx(3.1e-4)
    assert model.output.shape[-1] == 1


def test_seed_cnn_is_the_notebooks_network() -> None:
    """At the notebook's 224x224x3 input, its widest dense layer dominates (~48M weights)."""
    values = {**VALUES, "filters_1": 64, "filters_2": 256, "kernel_size_1": 3, "kernel_size_2": 5}
    values["dense_units"] = 64
    model = network.build(values, "seed_cnn", (224, 224, 3), np.zeros(224), np.ones(224))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("MaxPooling2D") == 2
    assert "Flatten" in kinds
    flatten = next(layer for layer in model.layers if type(layer).__name__ == "Flatten")
    assert flatten.output.shape[-1] == 53 * 53 * 256
    assert model.count_params() > 45_000_000


def test_mixed_precision_keeps_a_float32_logit_and_normalises_inside() -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mean, std = np.full(16, -40.0), np.full(16, 10.0)
        model = network.build(VALUES, "compact_cnn", (16, 33, 1), mean, std)
        assert model.output.dtype == "float32"
        norm = model.get_layer("normalise")
        x = np.full((1, 16, 33, 1), -30.0, dtype=np.float32)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(norm(x)), 1.0, rtol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_search_space_declares_the_notebook_hyperparameters() -> None:
    import keras_tuner as kt

    from deepfake_audio.config.params import parse_params

    params = parse_params({"model": {"architecture": "compact_cnn"}})
    hp = kt.HyperParameters()
    build = network.hypermodel(params, (16, 33, 1), np.zeros(16), np.ones(16))
    build(hp)
    assert set(hp.values) == {
        "filters_1",
        "filters_2",
        "kernel_size_1",
        "kernel_size_2",
        "dense_units",
        "learning_rate",
        "optimizer",
    }
    lr = next(p for p in hp.space if p.name == "learning_rate")
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-5, 1e-3, "log")


def test_missing_or_corrupt_model_file_is_a_one_line_error(tmp_path) -> None:
    from deepfake_audio.core.errors import UserError

    with pytest.raises(UserError, match="model file not found"):
        network.load(tmp_path / "none.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UserError, match="not a loadable Keras model") as err:
        network.load(bad)
    assert "\n" not in str(err.value)


# --- an architecture is one file in models/ and a params.yaml block ---------------------------

TOY = '''"""A toy architecture: global pooling and one dense layer."""

from __future__ import annotations

from typing import Any

import keras

INPUTS = ("logmel", "lfcc")
SEARCH_SPACE: dict[str, Any] = {
    "units": [4, 8],
    "learning_rate": {"min": 1.0e-3, "max": 1.0e-2, "sampling": "log"},
    "optimizer": ["adam"],
}


def toy(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.layers.Dense(values["units"], activation="relu")(x)
'''

TOY_CHECK = """
import sys

import numpy as np
import yaml

import deepfake_audio
from deepfake_audio.config import architectures
from deepfake_audio.config.params import ParamsError, load_params, parse_params
from deepfake_audio.core import imports

assert deepfake_audio.__file__.startswith(sys.argv[1]), deepfake_audio.__file__
assert "toy" in architectures.names()
params = load_params("params.yaml")
assert params.model.architecture == "toy"
assert sorted(params.tune.search_space) == ["learning_rate", "optimizer", "units"]
assert "tensorflow" not in sys.modules and "keras" not in sys.modules  # validation is light
raw = yaml.safe_load(open("params.yaml"))
raw["features"]["kind"] = "waveform"
try:
    parse_params(raw)
    raise SystemExit("toy took a waveform")
except ParamsError as exc:
    assert "'toy' does not take features.kind 'waveform' (it takes logmel, lfcc)" in str(exc)
shipped = {str(p) for p in imports.files_of(imports.closure(["deepfake_audio.serving.pyfunc"]))}
assert "deepfake_audio/models/toy.py" in shipped, "a served model ships every architecture"

import keras_tuner as kt

from deepfake_audio.models import network

hp = kt.HyperParameters()
model = network.hypermodel(params, (60, 101, 1), np.zeros(60), np.ones(60))(hp)
assert set(hp.values) == {"units", "learning_rate", "optimizer"}, hp.values
assert model.name == "toy" and model.output.shape == (None, 1)
print("toy ok")
"""


def test_an_architecture_is_one_file_in_models_and_a_params_block(tmp_path: Path) -> None:
    """A copy of the package plus models/toy.py, and a params.yaml with a toy block: params
    validation lists it (inputs, search space), a served model ships it, network builds it."""
    package = Path(network.__file__).resolve().parents[1]
    copy = tmp_path / "deepfake_audio"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "models" / "toy.py").write_text(TOY)
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    raw["model"]["architecture"] = "toy"
    raw["tune"]["search_space"]["toy"] = {
        "units": [4, 8],
        "learning_rate": {"min": 1.0e-3, "max": 1.0e-2, "sampling": "log"},
        "optimizer": ["adam"],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", TOY_CHECK, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "toy ok" in proc.stdout


def test_the_catalogue_lists_every_file_of_models_that_describes_itself() -> None:
    catalogue = architectures.catalogue()
    folder = architectures.folder()
    described = {
        p.stem for p in folder.glob("*.py") if re.search(r"^SEARCH_SPACE\b", p.read_text(), re.M)
    }
    assert set(catalogue) == described
    assert set(catalogue) == set(network.ARCHITECTURES)
    assert {"tdnn", "compact_cnn", "seed_cnn", "lcnn", "aasist", "aasist_l", "wave_cnn"} <= set(
        catalogue
    )


def test_a_half_described_architecture_file_is_refused(tmp_path: Path) -> None:
    half = tmp_path / "half.py"
    half.write_text('INPUTS = ("lfcc",)\n\ndef half(values, inputs):\n    return inputs\n')
    with pytest.raises(architectures.ArchitectureFileError, match="needs SEARCH_SPACE"):
        architectures.read(half)
    computed = tmp_path / "computed.py"
    computed.write_text('INPUTS = tuple(["lfcc"])\nSEARCH_SPACE = {}\n')
    with pytest.raises(architectures.ArchitectureFileError, match="INPUTS must be a literal"):
        architectures.read(computed)
    nameless = tmp_path / "nameless.py"
    nameless.write_text(TOY)
    with pytest.raises(architectures.ArchitectureFileError, match=r"no function nameless\("):
        architectures.read(nameless)
    assert architectures.read(Path(network.__file__)) is None  # not an architecture
