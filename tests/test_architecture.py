"""The package's rooms and their rules, checked by reading the source with `ast`.

- No import cycle between our modules (imports inside functions count: they run).
- The pure rooms (core, config, dsp, scoring, dataset) import neither MLflow, keras-tuner nor
  DVC; each room reaches only the rooms listed in ROOMS (serving: what a served model needs).
- Every module a DVC stage can import is covered by that stage's deps in dvc.yaml, so
  `dvc repro` reruns a stage whenever code it runs has changed.
"""

from __future__ import annotations

import ast
import importlib.util
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
    # Pretrained front ends (Whisper's encoder): their weights reader and frozen layers.
    "frontends": {"core", "config", "dsp", "frontends"},
    "models": {"core", "config", "dsp", "frontends", "models"},
    # A served model runs the feature code of training, its calibration, and needs its
    # architecture's (and front end's) registered layers to load in safe mode.
    "serving": {"core", "config", "dsp", "scoring", "frontends", "models", "serving"},
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


# --- dvc.yaml's code deps are what each stage imports --------------------------------------


def _dvc_deps():
    """scripts/dvc_deps.py (`make dvc-deps`), which writes the code deps, as a module."""
    spec = importlib.util.spec_from_file_location("dvc_deps", PROJECT / "scripts" / "dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_stage_is_walked() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(_dvc_deps().STAGE_MODULES)


def test_dvc_code_deps_are_exactly_the_modules_each_stage_imports() -> None:
    stale = _dvc_deps().stale((PROJECT / "dvc.yaml").read_text())
    assert stale == {}, f"dvc.yaml's code deps differ from the imports (run make dvc-deps): {stale}"


def test_the_metrics_are_no_dependency_of_dataset_tune_or_train() -> None:
    """Why the deps are per module: the evaluation metrics rerun what reports them only."""
    dvc_deps = _dvc_deps()
    metrics = "src/deepfake_audio/scoring/metrics.py"
    users = {stage for stage in dvc_deps.STAGE_MODULES if metrics in dvc_deps.stage_code(stage)}
    assert users == {"baseline", "evaluate"}
    # What training selects on (the EER) is a dependency of tune and train, on its own.
    assert "src/deepfake_audio/scoring/eer.py" in dvc_deps.stage_code("tune")


def test_the_deps_writer_replaces_code_deps_and_keeps_the_rest() -> None:
    dvc_deps = _dvc_deps()
    text = (
        "stages:\n"
        "  train:\n"
        "    cmd: deepfake-audio train\n"
        "    deps:\n"
        "      - data/spectrograms   # the dataset\n"
        "      - src/deepfake_audio/core\n"
        "      - src/deepfake_audio/stages/train.py\n"
        "    params:\n"
        "      - seed\n"
    )
    assert dvc_deps.declared_code(text)["train"] == [
        "src/deepfake_audio/core",
        "src/deepfake_audio/stages/train.py",
    ]
    wanted = dvc_deps.stage_code("train")
    assert "src/deepfake_audio/config/params.py" in wanted
    assert "src/deepfake_audio/models/tdnn.py" in wanted  # imported by name, still seen
    assert "src/deepfake_audio/models/__init__.py" not in wanted  # a docstring: nothing to run
    out = dvc_deps.rewrite(text, {"train": wanted})
    assert dvc_deps.declared_code(out)["train"] == wanted
    assert "      - data/spectrograms   # the dataset\n" in out
    assert out.endswith("    params:\n      - seed\n")
    assert set(dvc_deps.stale(text)) >= {"train"}


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
        if path.name == "__init__.py" and not _dvc_deps().has_code(path):
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
