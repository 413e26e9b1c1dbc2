"""Atomic file writes: the one way this project writes a file that someone else reads.

DVC caches outputs, keras-tuner resumes from its state and MLflow uploads reports: a file
cut short by a crash, a kill -9 or a full disk would be read later as if it were whole.
So every output is written under a temporary name beside its target and renamed over it
in one step (a rename within one folder is atomic on POSIX); a failed write removes the
temporary file and leaves the old target untouched.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deepfake_audio.core.errors import UserError


def temporary_name(path: Path, keep_suffix: bool = False) -> Path:
    """The hidden name a file is written under before it is renamed into place.

    `.<name>.tmp` by default; `.tmp-<name>` when the writer insists on the real suffix
    (Keras' `.keras`, a picture format read from the name).
    """
    name = f".tmp-{path.name}" if keep_suffix else f".{path.name}.tmp"
    return path.with_name(name)


@contextlib.contextmanager
def replacing(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, payload: Any) -> None:
    """Pretty, sorted JSON (stable diffs in git and in `dvc metrics diff`)."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Path:
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(header))
        writer.writerows(rows)
    return path


def write_dict_rows(
    path: str | Path, fields: Iterable[str], rows: Iterable[dict[str, Any]]
) -> Path:
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found ({what}); run the stage that writes it") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
