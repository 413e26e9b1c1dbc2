"""The package's own import graph, read from the source with `ast` (nothing is imported).

Two things depend on knowing exactly which of our modules a piece of code can reach:
`log_model` ships with a model only what serving imports, and dvc.yaml must list every
module a stage imports as a dependency (a test walks each stage with this). Imports inside
functions count too: they run as soon as the function does.

A module that imports modules by name at run time (`importlib`) says so with a module-level
string `LOADS_PACKAGE = "deepfake_audio.<package>"`: it counts as importing every module of
that package (`models.network` imports each architecture file so).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "deepfake_audio"
LOADS_PACKAGE = "LOADS_PACKAGE"


def package_root() -> Path:
    """The deepfake_audio folder this code runs from."""
    return Path(__file__).resolve().parent.parent


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The file of `deepfake_audio.x.y` (a module or a package's __init__), or None."""
    root = root or package_root()
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def direct_imports(module: str, root: Path | None = None) -> set[str]:
    """Our modules that `module`'s source imports (at top level or inside functions)."""
    path = module_file(module, root)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [base]
            # `from pkg import mod` imports a submodule when pkg has one of that name.
            names += [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == PACKAGE and module_file(name, root) is not None:
                found.add(name)
    found |= _loaded_by_name(tree, root) - {module}
    return found


def _loaded_by_name(tree: ast.Module, root: Path | None) -> set[str]:
    """The modules of the package named by a top-level `LOADS_PACKAGE = "..."`, if any."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == LOADS_PACKAGE for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            package = node.value.value
            folder = module_file(package, root)
            if folder is None or folder.name != "__init__.py":
                return set()
            return {f"{package}.{path.stem}" for path in folder.parent.glob("*.py")} - {
                f"{package}.__init__"
            }
    return set()


def closure(modules: list[str], root: Path | None = None) -> set[str]:
    """Every module of ours reachable from `modules`, their parent packages included."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name, root) is None:
            continue
        seen.add(name)
        todo.extend(direct_imports(name, root))
        todo.extend(_parents(name))
    return seen


def files_of(modules: set[str], root: Path | None = None) -> list[Path]:
    """The source files of `modules`, relative to the package's parent folder."""
    root = root or package_root()
    files = {module_file(m, root) for m in modules}
    return sorted(f.relative_to(root.parent) for f in files if f is not None)
