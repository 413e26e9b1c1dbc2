"""requirements.lock against pyproject.toml, and the installed packages against the lock.

requirements.lock pins every package of `[project.dependencies]` and the `dev`, `whisper` and
`whisper-base` extras (and all they pull in) to the versions tested; `make venv`, and so
`make test`, `make demo` and CI, install exactly those. `make lock` writes it, with a stamp of
pyproject's dependency lists in its header: a pyproject edited without `make lock` fails here.

Run as a script (`python tests/test_lock.py --stamp`), it prints the stamp: `make lock`
writes it that way, from a venv with nothing but pip-tools (stdlib and `packaging` only).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the lock is for 3.11 anyway
    tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
STAMP_KEY = "pyproject-sha256"
STALE_HINT = (
    "requirements.lock is stale: pyproject.toml's dependencies or locked extras changed "
    "since it was made; run `make lock` (and commit requirements.lock)"
)
LOCKED_EXTRAS = ("dev", "whisper", "whisper-base")  # the gpu extra stays unlocked (no GPU in CI)
_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\S+)")
_STAMP = re.compile(rf"^#\s*{STAMP_KEY}:\s*(?P<stamp>[0-9a-f]{{64}})\s*$", re.MULTILINE)


def load_pyproject(path: Path = PYPROJECT) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def locked_requirements(pyproject: dict) -> dict[str, list[str]]:
    """The requirement lists the lock covers, as pyproject writes them."""
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    lists = {"dependencies": list(project.get("dependencies", []))}
    lists.update({name: list(extras.get(name, [])) for name in LOCKED_EXTRAS})
    return lists


def _normalised(requirement: str) -> str:
    """One requirement in a canonical spelling: case, `-_.`, spaces and order don't count."""
    req = Requirement(requirement)
    extras = ",".join(sorted(canonicalize_name(e) for e in req.extras))
    text = canonicalize_name(req.name) + (f"[{extras}]" if extras else "")
    text += ",".join(sorted(str(s) for s in req.specifier))
    return text + (f"; {req.marker}" if req.marker else "")


def pyproject_stamp(pyproject: dict) -> str:
    """sha256 of the normalised dependency lists the lock was resolved from."""
    lists = {k: sorted(map(_normalised, v)) for k, v in locked_requirements(pyproject).items()}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def read_pins(text: str) -> tuple[dict[str, Version], list[str]]:
    """{canonical name: version} of the lock, and an error for each line not an exact pin."""
    pins: dict[str, Version] = {}
    errors = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        if match is None:
            errors.append(f"line {number}: {line!r} is not an exact pin (name==version)")
            continue
        name = canonicalize_name(match["name"])
        try:
            version = Version(match["version"])
        except InvalidVersion:
            errors.append(f"line {number}: {line!r} pins no valid version")
            continue
        if name in pins:
            errors.append(f"line {number}: {name} is pinned twice")
        pins[name] = version
    return pins, errors


def check_lock(lock: Path = LOCK, pyproject: Path = PYPROJECT) -> list[str]:
    """Everything wrong with `lock` as the lock of `pyproject`; empty when it is right."""
    text = Path(lock).read_text()
    data = load_pyproject(pyproject)
    pins, errors = read_pins(text)
    stamps = _STAMP.findall(text)
    if len(stamps) != 1:
        errors.append(f"no '# {STAMP_KEY}: <sha256>' line in the header; run `make lock`")
    elif stamps[0] != pyproject_stamp(data):
        errors.append(STALE_HINT)
    for group, requirements in locked_requirements(data).items():
        for requirement in requirements:
            req = Requirement(requirement)
            if req.marker is not None and not req.marker.evaluate({"extra": group}):
                continue  # not for this platform/Python
            name = canonicalize_name(req.name)
            if name not in pins:
                errors.append(f"{requirement!r} ({group}) is not pinned in the lock")
            elif not req.specifier.contains(pins[name], prereleases=True):
                errors.append(
                    f"{name}=={pins[name]} in the lock does not satisfy {requirement!r} ({group})"
                )
    errors += [f"{name}: a gpu-extra package in the lock" for name in pins if "nvidia" in name]
    return errors


def _fail(message: str) -> None:
    import pytest

    pytest.fail(message, pytrace=False)


def _needs_tomllib() -> None:
    if tomllib is None:
        import pytest

        pytest.skip("tomllib needs Python 3.11 (the lock's Python)")


# The real lock ----------------------------------------------------------------------------


def test_lock_is_current() -> None:
    _needs_tomllib()
    match = _STAMP.search(LOCK.read_text())
    if match is None or match["stamp"] != pyproject_stamp(load_pyproject()):
        _fail(STALE_HINT)


def test_lock_pins_pyproject_exactly() -> None:
    _needs_tomllib()
    errors = [e for e in check_lock() if e != STALE_HINT]  # test_lock_is_current says that
    if errors:
        _fail("requirements.lock does not match pyproject.toml:\n  " + "\n  ".join(errors))


def test_installed_packages_are_the_locked_ones() -> None:
    """This venv is what CI tests: every locked package installed at its locked version."""
    from importlib.metadata import PackageNotFoundError, version

    pins, _ = read_pins(LOCK.read_text())
    wrong = []
    for name, locked in sorted(pins.items()):
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "none"
        if installed == "none" or Version(installed) != locked:
            wrong.append(f"{name} {installed} (locked {locked})")
    if wrong:
        _fail(f"installed != requirements.lock: {', '.join(wrong)}; run `make venv`")


# Wrong locks are rejected -----------------------------------------------------------------


def _copy(tmp_path: Path, lock: str | None = None, pyproject: str | None = None) -> list[str]:
    """check_lock on copies of the lock and pyproject.toml, either one replaced."""
    (tmp_path / "requirements.lock").write_text(LOCK.read_text() if lock is None else lock)
    (tmp_path / "pyproject.toml").write_text(
        PYPROJECT.read_text() if pyproject is None else pyproject
    )
    return check_lock(tmp_path / "requirements.lock", tmp_path / "pyproject.toml")


def _with_pin(text: str, name: str, replacement: str) -> str:
    """The lock text with the line pinning `name` replaced (deleted for '')."""
    pattern = re.compile(rf"^{re.escape(name)}==\S+[^\n]*\n", re.MULTILINE | re.IGNORECASE)
    assert pattern.search(text), f"{name} is not in the lock"
    return pattern.sub(replacement, text, count=1)


def test_copies_of_the_real_files_check_as_the_real_files(tmp_path: Path) -> None:
    _needs_tomllib()
    assert _copy(tmp_path) == check_lock()  # [] unless the tests above fail


def test_a_pin_outside_pyprojects_range_is_rejected(tmp_path: Path) -> None:
    _needs_tomllib()
    errors = _copy(tmp_path, lock=_with_pin(LOCK.read_text(), "tensorflow", "tensorflow==2.0\n"))
    assert any(e.startswith("tensorflow==2.0 in the lock does not satisfy") for e in errors)


def test_a_missing_requirement_is_rejected(tmp_path: Path) -> None:
    _needs_tomllib()
    errors = _copy(tmp_path, lock=_with_pin(LOCK.read_text(), "keras-tuner", ""))
    assert any(e.startswith("'keras-tuner") and "is not pinned" in e for e in errors)


def test_a_dev_extra_requirement_is_checked_too(tmp_path: Path) -> None:
    _needs_tomllib()
    errors = _copy(tmp_path, lock=_with_pin(LOCK.read_text(), "pytest", "pytest==7.4.0\n"))
    assert any("pytest==7.4.0" in e and "(dev)" in e for e in errors)


def test_lines_that_are_not_exact_pins_are_rejected(tmp_path: Path) -> None:
    _needs_tomllib()
    lock = _with_pin(LOCK.read_text(), "numpy", "numpy>=1.26\n")
    lock += "-e .\nrequests\nscipy==1.17.1\nscipy==1.17.1\nnvidia-cudnn-cu12==9.3.0.75\n"
    errors = _copy(tmp_path, lock=lock)
    for expected in (
        "'numpy>=1.26' is not an exact pin",
        "'-e .' is not an exact pin",
        "'requests' is not an exact pin",
        "scipy is pinned twice",
        "nvidia-cudnn-cu12: a gpu-extra package",
    ):
        assert any(expected in e for e in errors), (expected, errors)


def test_pyproject_changed_without_make_lock_is_rejected(tmp_path: Path) -> None:
    _needs_tomllib()
    text = PYPROJECT.read_text()
    changed = text.replace('"pyyaml>=6.0",', '"pyyaml>=6.0",\n    "no-such-package>=2",', 1)
    assert changed != text
    errors = _copy(tmp_path, pyproject=changed)
    assert STALE_HINT in errors
    assert "\n" not in STALE_HINT and "make lock" in STALE_HINT
    assert any(e.startswith("'no-such-package>=2' (dependencies) is not pinned") for e in errors)


def test_a_lock_without_a_stamp_is_rejected(tmp_path: Path) -> None:
    _needs_tomllib()
    lock = re.sub(rf"^# {STAMP_KEY}:.*\n", "", LOCK.read_text(), flags=re.MULTILINE)
    assert any(STAMP_KEY in e and "make lock" in e for e in _copy(tmp_path, lock=lock))


def test_the_stamp_ignores_formatting_only(tmp_path: Path) -> None:
    _needs_tomllib()
    data = load_pyproject()
    shuffled = {"project": {**data["project"]}}
    shuffled["project"]["dependencies"] = [
        f"  {r.upper()} " for r in reversed(data["project"]["dependencies"])
    ]
    shuffled["project"]["optional-dependencies"] = {
        **data["project"]["optional-dependencies"],
        "gpu": ["anything-else>=1"],  # not locked: not stamped
    }
    assert pyproject_stamp(shuffled) == pyproject_stamp(data)
    bumped = {"project": {**data["project"], "dependencies": ["numpy>=99"]}}
    assert pyproject_stamp(bumped) != pyproject_stamp(data)


if __name__ == "__main__":
    if sys.argv[1:] != ["--stamp"]:
        sys.exit("usage: python tests/test_lock.py --stamp  (prints pyproject.toml's stamp)")
    print(pyproject_stamp(load_pyproject()))
