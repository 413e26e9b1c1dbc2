"""The package's rooms and their rules, checked by reading the source with `ast`.

- No import cycle between our modules (imports inside functions count: they run).
- `core/` imports neither MLflow, keras-tuner nor DVC; serving reaches only core, models
  (for their layers) and serving; ops only core and ops; models only core and models.
- Every module a DVC stage can import is covered by that stage's deps in dvc.yaml, so
  `dvc repro` reruns a stage whenever code it runs has changed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from deepfake_audio.core import imports

ROOT = imports.package_root()
PROJECT = ROOT.parent.parent
FORBIDDEN_IN_CORE = ("mlflow", "keras_tuner", "dvc")
# Where each room may reach (itself included); `sources` sits beside core as input layouts.
ROOMS = {
    "core": {"core"},
    "models": {"core", "models"},
    # A served model needs its architecture's registered layers to load in safe mode.
    "serving": {"core", "models", "serving"},
    "ops": {"core", "ops"},
    "sources": {"core", "sources"},
}


def all_modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    return {m: imports.direct_imports(m) for m in all_modules()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in edges:
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt == path[-1]:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not t.startswith(module + ".")}
    assert find_cycle(edges) is None


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_no_tracking_tuner_or_dvc() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(third_party_imports(path) & set(FORBIDDEN_IN_CORE))
        for path in sorted((ROOT / "core").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_forbidden_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import mlflow.pyfunc\n    from dvc.repo import Repo\n")
    assert third_party_imports(bad) >= {"mlflow", "dvc"}


@pytest.mark.parametrize("name", sorted(ROOMS))
def test_each_room_reaches_only_where_it_may(name: str) -> None:
    allowed = ROOMS[name]
    members = [m for m in all_modules() if room(m) == name]
    assert members, f"no modules in {name}/"
    reached = imports.closure(members)
    outside = sorted(m for m in reached if room(m) and room(m) not in allowed)
    assert outside == [], f"{name}/ reaches {outside}"


def test_the_served_model_ships_only_what_serving_imports() -> None:
    from deepfake_audio.serving import pyfunc

    shipped = {str(p) for p in pyfunc.served_files()}
    assert "deepfake_audio/serving/pyfunc.py" in shipped
    assert "deepfake_audio/core/features.py" in shipped
    assert not [p for p in shipped if p.startswith(("deepfake_audio/stages", "deepfake_audio/ops"))]


# --- dvc.yaml deps cover what each stage imports -------------------------------------------

STAGE_MODULES = {
    "dataset": "deepfake_audio.stages.dataset",
    "baseline": "deepfake_audio.stages.baseline",
    "tune": "deepfake_audio.stages.tune",
    "train": "deepfake_audio.stages.train",
    "evaluate": "deepfake_audio.stages.evaluate",
    "register": "deepfake_audio.stages.register",
}


def trivial(path: Path) -> bool:
    """A file with nothing to run: a docstring and constant assignments at most."""
    body = ast.parse(path.read_text()).body
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return False
    return True


def uncovered(stage_module: str, deps: list[str]) -> list[str]:
    files = imports.files_of(imports.closure([stage_module]))
    missing = []
    for relative in files:
        path = Path("src") / relative
        if trivial(PROJECT / path):
            continue
        if not any(path == Path(d) or Path(d) in path.parents for d in deps):
            missing.append(str(path))
    return missing


def test_every_stage_is_walked() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_MODULES)


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_dvc_deps_cover_every_module_the_stage_imports(stage: str) -> None:
    spec = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"][stage]
    deps = [str(d) for d in spec["deps"]]
    assert uncovered(STAGE_MODULES[stage], deps) == []


def test_the_deps_check_fails_when_a_folder_is_missing() -> None:
    missing = uncovered("deepfake_audio.stages.train", ["src/deepfake_audio/stages/train.py"])
    assert "src/deepfake_audio/core/params.py" in missing
    assert "src/deepfake_audio/models/__init__.py" in missing
