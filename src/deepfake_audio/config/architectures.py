"""The architectures, as configuration sees them: read from `models/` without importing it.

An architecture is one file, `models/<name>.py`, that describes itself with two module-level
literals beside its layers:

    INPUTS = ("logmel", "lfcc")          # the feature kinds (features.kind) it takes
    SEARCH_SPACE = {                     # its default search space, written as params.yaml
        "learning_rate": {"min": 1.0e-4, "max": 1.0e-3, "sampling": "log"},   # writes
        "optimizer": ["adam"],           # tune.search_space.<name>: a range or a list of
        ...                              # choices per hyperparameter it reads
    }

    def <name>(values, inputs): ...      # hyperparameter values and the normalised input
                                         # -> the layer before the logit

Every file of `models/` that assigns both literals is an architecture; the others
(`network.py`, `__init__.py`) are not. The literals are read with `ast.literal_eval`, so
params validation, `deepfake-audio --help` and every stage that only checks its params list
the architectures without importing Keras or TensorFlow. `models.network` imports each
listed file to build it.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "deepfake_audio.models"
# The literals an architecture file holds.
DESCRIPTORS = ("INPUTS", "SEARCH_SPACE")


class ArchitectureFileError(Exception):
    """A file of models/ that half-describes an architecture: a bug of the code, not of params."""


@dataclass(frozen=True)
class Architecture:
    name: str  # model.architecture, the file's stem and its body function's name
    inputs: tuple[str, ...]  # feature kinds it takes
    search_space: dict[str, Any]  # its default search space, in params.yaml's format
    path: Path

    @property
    def module(self) -> str:
        return f"{PACKAGE}.{self.name}"

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """The names it reads from the search space (learning_rate and optimizer included)."""
        return tuple(self.search_space)


def folder() -> Path:
    """The models/ folder beside this package's config/ (in a served model's copy too)."""
    return Path(__file__).resolve().parent.parent / "models"


def read(path: Path) -> Architecture | None:
    """The architecture `path` describes, or None for a file that describes none."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, Any] = {}
    functions = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.add(node.name)
        targets = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in DESCRIPTORS:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise ArchitectureFileError(
                        f"{path}: {target.id} must be a literal (read without importing)"
                    ) from None
    if not found:
        return None
    name = path.stem
    missing = [d for d in DESCRIPTORS if d not in found]
    if missing:
        raise ArchitectureFileError(f"{path}: an architecture file needs {', '.join(missing)}")
    if name not in functions:
        raise ArchitectureFileError(f"{path}: no function {name}(values, inputs) to build it")
    inputs, space = found["INPUTS"], found["SEARCH_SPACE"]
    if not (isinstance(inputs, tuple) and inputs and all(isinstance(k, str) for k in inputs)):
        raise ArchitectureFileError(f"{path}: INPUTS must be a tuple of feature kinds")
    if not (isinstance(space, dict) and {"learning_rate", "optimizer"} <= set(space)):
        raise ArchitectureFileError(
            f"{path}: SEARCH_SPACE must be a dict with learning_rate and optimizer at least"
        )
    return Architecture(name, inputs, space, path)


@functools.cache
def _catalogue(where: Path) -> dict[str, Architecture]:
    found = {}
    for path in sorted(where.glob("*.py")):
        architecture = read(path)
        if architecture is not None:
            found[architecture.name] = architecture
    return found


def catalogue() -> dict[str, Architecture]:
    """Every architecture of models/, by name (sorted by file name)."""
    return dict(_catalogue(folder()))


def names() -> tuple[str, ...]:
    return tuple(catalogue())
