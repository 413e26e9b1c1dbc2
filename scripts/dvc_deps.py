"""Write each DVC stage's code deps in dvc.yaml from the modules the stage really imports.

`python scripts/dvc_deps.py` (`make dvc-deps`) rewrites the `src/deepfake_audio/...` lines
of every stage's `deps:` in dvc.yaml; `--check` only says which stages differ (exit 1).

Why per module and not per folder: with a folder as a dep, editing any file in it reruns
the stage, so touching the evaluation metrics rebuilt the dataset and reran the search.
The import closure of a stage's module (read with `ast` by `deepfake_audio.core.imports`,
imports inside functions and modules loaded by name included) is exactly the code that
stage can run; files with nothing to run (a docstring and constants) are left out.
Everything else in dvc.yaml - data deps, params, outs, comments - is kept as written.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from deepfake_audio.core import imports  # noqa: E402

# The module each stage's command runs (`deepfake-audio <stage>` imports it and calls main).
STAGE_MODULES = {
    "dataset": "deepfake_audio.stages.dataset",
    "baseline": "deepfake_audio.stages.baseline",
    "tune": "deepfake_audio.stages.tune",
    "train": "deepfake_audio.stages.train",
    "evaluate": "deepfake_audio.stages.evaluate",
    "register": "deepfake_audio.stages.register",
}
CODE_PREFIX = "src/deepfake_audio"
_STAGE = re.compile(r"^  (?P<name>[A-Za-z_][\w-]*):\s*$")
_CODE_DEP = re.compile(r"^(?P<indent> +)- src/deepfake_audio(/\S*)?\s*(#.*)?$")
_DEPS = re.compile(r"^    deps:\s*$")


def has_code(path: Path) -> bool:
    """False for a file with nothing to run: a docstring and constant assignments at most."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        return True
    return False


def stage_code(stage: str, root: Path | None = None) -> list[str]:
    """The source files (as dvc.yaml names them) that `stage`'s module can import."""
    root = root or imports.package_root()
    files = imports.files_of(imports.closure([STAGE_MODULES[stage]], root), root)
    return [f"src/{f.as_posix()}" for f in files if has_code(root.parent / f)]


def declared_code(text: str) -> dict[str, list[str]]:
    """stage -> the `src/deepfake_audio...` deps dvc.yaml lists for it, in order."""
    out: dict[str, list[str]] = {}
    stage, in_deps = None, False
    for line in text.splitlines():
        if m := _STAGE.match(line):
            stage, in_deps = m["name"], False
            out.setdefault(stage, [])
        elif _DEPS.match(line):
            in_deps = True
        elif re.match(r"^    \S", line):
            in_deps = False
        elif in_deps and stage and (m := _CODE_DEP.match(line)):
            out[stage].append(line.split("- ", 1)[1].split("#")[0].strip())
    return out


def rewrite(text: str, wanted: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's code deps replaced by `wanted[stage]`, in place of
    the first code dep it had (or at the end of its deps); nothing else changes."""
    lines, out = text.splitlines(keepends=True), []
    stage, in_deps, written = None, False, set()
    for i, line in enumerate(lines):
        if m := _STAGE.match(line):
            stage, in_deps = m["name"], False
        elif _DEPS.match(line):
            in_deps = True
        elif in_deps and re.match(r"^    \S", line):
            in_deps = False
        if in_deps and stage in wanted and (m := _CODE_DEP.match(line)):
            if stage not in written:
                out += [f"{m['indent']}- {path}\n" for path in wanted[stage]]
                written.add(stage)
            continue
        out.append(line)
        # The deps list ends where the next line is not one of its items: add them there
        # when the stage listed no code dep at all.
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        ends = in_deps and not re.match(r"^ {6,}(- |#)", nxt) and not _DEPS.match(line)
        if ends and stage in wanted and stage not in written:
            indent = re.match(r"^( +)", line)[1] if line.strip().startswith("- ") else "      "
            out += [f"{indent}- {path}\n" for path in wanted[stage]]
            written.add(stage)
    return "".join(out)


def stale(text: str, root: Path | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (declared, wanted) for every stage whose code deps are not its imports."""
    declared = declared_code(text)
    wanted = {stage: stage_code(stage, root) for stage in STAGE_MODULES}
    return {s: (declared.get(s, []), w) for s, w in wanted.items() if declared.get(s, []) != w}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if stale")
    parser.add_argument("--dvc-yaml", type=Path, default=PROJECT / "dvc.yaml")
    args = parser.parse_args(argv)
    text = args.dvc_yaml.read_text()
    differs = stale(text)
    if args.check:
        for stage, (declared, wanted) in differs.items():
            extra = sorted(set(declared) - set(wanted))
            missing = sorted(set(wanted) - set(declared))
            print(f"{args.dvc_yaml}: stage {stage}: missing {missing}, not imported {extra}")
        return 1 if differs else 0
    if differs:
        wanted = {stage: stage_code(stage) for stage in STAGE_MODULES}
        new = rewrite(text, wanted)
        tmp = args.dvc_yaml.with_name(args.dvc_yaml.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(args.dvc_yaml)
    print(f"{args.dvc_yaml}: code deps of {', '.join(differs) or 'no stage'} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
