"""The package's rooms and their rules, checked by reading the source with `ast`.

- No import cycle between our modules (imports inside functions count: they run).
- The pure rooms (core, config, dsp, scoring, dataset) import neither MLflow, keras-tuner nor
  DVC; each room reaches only the rooms listed in ROOMS (serving: what a served model needs).
- Every module a DVC stage can import is covered by that stage's deps in dvc.yaml, so
  `dvc repro` reruns a stage whenever code it runs has changed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from deepfake_audio.core import imports

ROOT = imports.package_root()
PROJECT = ROOT.parent.parent
FORBIDDEN_IN_PURE = ("mlflow", "keras_tuner", "dvc")
# The rooms that hold no tracking, tuning or pipeline code: any stage, and a served model, can
# use them without pulling those in.
PURE_ROOMS = ("core", "config", "dsp", "scoring", "dataset")
# Where each room may reach (itself included). cli.py and stages/ may reach everything.
ROOMS = {
    "core": {"core"},
    "config": {"core", "config"},
    "dsp": {"core", "config", "dsp"},
    "scoring": {"core", "scoring"},
    "dataset": {"core", "config", "dsp", "dataset"},
    "models": {"core", "config", "models"},
    # A served model runs the feature code of training, its calibration, and needs its
    # architecture's registered layers to load in safe mode.
    "serving": {"core", "config", "dsp", "scoring", "models", "serving"},
    "ops": {"core", "config", "ops"},
    # Input layouts: which files are audio or pictures is the decoders' to say.
    "sources": {"core", "config", "dsp", "sources"},
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


def test_pure_rooms_import_no_tracking_tuner_or_dvc() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(third_party_imports(path) & set(FORBIDDEN_IN_PURE))
        for name in PURE_ROOMS
        for path in sorted((ROOT / name).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_params_validation_imports_no_keras_or_tensorflow() -> None:
    """`deepfake-audio --help` and every params check stay instant: config reads the
    architectures' files, it does not import them."""
    files = imports.files_of(imports.closure(["deepfake_audio.config.params"]))
    heavy = {str(f): third_party_imports(ROOT.parent / f) & {"keras", "tensorflow"} for f in files}
    assert {f: sorted(v) for f, v in heavy.items() if v} == {}


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
    assert "deepfake_audio/dsp/features.py" in shipped
    # Every architecture, imported by name by models.network, for its layers (safe mode).
    assert "deepfake_audio/models/tdnn.py" in shipped
    assert "deepfake_audio/models/aasist_l.py" in shipped
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
    assert "src/deepfake_audio/config/params.py" in missing
    assert "src/deepfake_audio/models/network.py" in missing
    assert "src/deepfake_audio/models/tdnn.py" in missing  # imported by name, still seen


# --- docs/architecture.md's tree is the package's ---------------------------------------------

_TREE_ENTRY = re.compile(r"^(?P<indent> +)(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.py|/))(?:\s|$)")


def documented_tree(text: str) -> set[str]:
    """The paths (relative to src/deepfake_audio) that the doc's indented tree names.

    The tree is the code block that starts with `    src/deepfake_audio/`; an entry is a
    line whose first word is a file (`x.py`) or a folder (`x/`), nested two spaces a level.
    Lines indented to the description column continue a description.
    """
    lines = text.splitlines()
    start = lines.index("    src/deepfake_audio/")
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, folder) of the open folders
    for line in lines[start + 1 :]:
        if line and not line.startswith("    "):
            break  # the end of the code block
        match = _TREE_ENTRY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack and indent != stack[-1][0] + 2:
            continue  # a continuation line that happens to start with a file name
        if not stack and indent != 6:
            continue
        path = "".join(folder for _, folder in stack) + match["name"]
        paths.add(path.rstrip("/"))
        if match["name"].endswith("/"):
            stack.append((indent, match["name"]))
    return paths


def package_files() -> tuple[set[str], set[str]]:
    """(every module file and folder, those a reader may skip: empty __init__ files)."""
    files, skippable = set(), set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        files.add(relative)
        files |= {p.as_posix() for p in Path(relative).parents if str(p) != "."}
        if path.name == "__init__.py" and trivial(path):
            skippable.add(relative)
    skippable.add("__init__.py")  # the package's version
    return files, skippable


def test_the_tree_reader_reads_nesting_and_skips_descriptions() -> None:
    text = (
        "    src/deepfake_audio/\n"
        "      cli.py          the command line\n"
        "      stages/         one module per stage\n"
        "        tune/           the tune stage\n"
        "          search.py       the tuner;\n"
        "                          launcher.py: not an entry, a description\n"
        "        train.py        the fit\n"
        "      core/           shared\n"
        "\n"
        "Prose: x.py\n"
    )
    assert documented_tree(text) == {
        "cli.py",
        "stages",
        "stages/tune",
        "stages/tune/search.py",
        "stages/train.py",
        "core",
    }


def test_the_architecture_doc_names_every_module_and_only_those() -> None:
    named = documented_tree((PROJECT / "docs" / "architecture.md").read_text())
    files, skippable = package_files()
    assert sorted(named - files) == [], "docs/architecture.md names files that do not exist"
    assert sorted(files - skippable - named) == [], "modules docs/architecture.md leaves out"
