"""The one lexical check that a path a user or client hands us stays inside a folder.

Used by the dataset stage (clip paths from a directory walk, a protocol file or a manifest
stay inside `data.path`) and by a served model (`path` rows stay inside the folder the
operator names with `DEEPFAKE_AUDIO_SERVE_ROOT`). The check is lexical: it looks at the
text, never at the disk, so its answer does not depend on which files exist (a client
cannot probe the disk with it), and a symbolic link inside the folder is followed, as
DVC's own symlink cache needs.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath


def inside(root: str | os.PathLike, relative: str) -> Path | None:
    """`root / relative` if that names something inside `root`, else None.

    Rejects absolute paths (POSIX or Windows, drive letters included), NUL bytes and
    any `..` that climbs above `root`; backslashes count as separators.
    """
    if not relative or "\x00" in relative:
        return None
    if PureWindowsPath(relative).drive or PureWindowsPath(relative).root:
        return None
    unix = relative.replace("\\", "/")
    if PurePosixPath(unix).is_absolute():
        return None
    normal = posixpath.normpath(unix)
    if normal == ".." or normal.startswith("../") or normal == ".":
        return None
    return Path(root) / normal
