"""What a served model takes from a client: deny by default, a cap on every row.

A request to `mlflow models serve` comes from whoever can reach the port. Left open, its
`path` column let any client read files on the server (probing which exist, scoring what
it cannot see), and one row could ask for an hour of audio or a body of any size. So the
served model (`DetectorModel`) reads its `Limits` from the environment when it loads:

    DEEPFAKE_AUDIO_SERVE_ROOT    path rows only below this folder (relative to it, or an
                                 absolute path inside it); unset: every path row is refused
    DEEPFAKE_AUDIO_MAX_SECONDS   audio longer than this is refused (default 600 s), from the
                                 header where the format states a length, before decoding
    DEEPFAKE_AUDIO_MAX_BYTES     a base64 row whose file is larger is refused before it is
                                 decoded (default 25,000,000 bytes)

A path outside the root gets the same answer whether or not the file exists: the check
is lexical (`core.paths.inside`, the dataset stage's own), so it never looks at the disk.
Errors stay per row. `deepfake-audio predict` scores the user's own files in the user's
own process: it uses `Limits.local()` (any path, the dataset's one-hour cap).
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deepfake_audio.core.paths import inside

SERVE_ROOT_ENV = "DEEPFAKE_AUDIO_SERVE_ROOT"
MAX_SECONDS_ENV = "DEEPFAKE_AUDIO_MAX_SECONDS"
MAX_BYTES_ENV = "DEEPFAKE_AUDIO_MAX_BYTES"
# Ten minutes: an interview or a voicemail, scored in ~1,200 windows of 1 s; more is a
# file to cut, or a server the operator sizes for it.
DEFAULT_MAX_SECONDS = 600.0
# 25 MB: ten minutes of 16 kHz 16-bit mono WAV (19.2 MB) fits, a compressed hour too.
DEFAULT_MAX_BYTES = 25_000_000
PATHS_OFF = f"path rows are off: set {SERVE_ROOT_ENV} to a folder to allow them"
OUTSIDE = f"is not a path inside the serving root ({SERVE_ROOT_ENV})"


class Refused(Exception):
    """A row these limits refuse; the message is its one-line reason."""


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={text!r}: expected a positive number")
    return value


@dataclass(frozen=True)
class Limits:
    """Which rows a detector reads: where `path` rows may point, how long, how large."""

    root: Path | None = None  # path rows below it only; None: path rows are off
    any_path: bool = False  # the user's own files (`deepfake-audio predict`): no root
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # None: the dataset's (dsp.audio)
    max_bytes: int | None = DEFAULT_MAX_BYTES  # of a base64 row's file; None: no cap
    seconds_note: str = MAX_SECONDS_ENV  # how an over-long row's message names the cap

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """A served model's limits: `DEEPFAKE_AUDIO_*` above; a bad value is a ValueError."""
        environ = os.environ if environ is None else environ
        root_text = environ.get(SERVE_ROOT_ENV, "").strip()
        root = None
        if root_text:
            root = Path(os.path.abspath(os.path.expanduser(root_text)))
            if not root.is_dir():
                raise ValueError(f"{SERVE_ROOT_ENV}={root_text!r}: not a folder")
        return cls(
            root=root,
            max_seconds=_number(environ, MAX_SECONDS_ENV, DEFAULT_MAX_SECONDS),
            max_bytes=int(_number(environ, MAX_BYTES_ENV, DEFAULT_MAX_BYTES)),
        )

    @classmethod
    def local(cls) -> Limits:
        """`deepfake-audio predict` on the user's own machine: any path, the dataset's cap."""
        from deepfake_audio.dsp.audio import CUT_IT

        return cls(any_path=True, max_seconds=None, max_bytes=None, seconds_note=CUT_IT)

    def path(self, text: str) -> tuple[Path, str]:
        """The file a `path` row may read, and how messages name it; `Refused` if none.

        Below the root, a row names its file relative to the root (an absolute path inside
        the root is taken too) and messages name it as the client wrote it, never the
        server's folder. Outside, the refusal is the same whether the file exists or not.
        """
        if self.any_path:
            return Path(text), text
        if self.root is None:
            raise Refused(PATHS_OFF)
        relative = text
        if text.startswith("/"):  # lexically, against the root as the operator named it
            relative = os.path.relpath(os.path.normpath(text), self.root)
        found = inside(self.root, relative)
        if found is None:
            raise Refused(f"path {_shown(text)} {OUTSIDE}")
        return found, text

    def base64(self, value: str | bytes, column: str) -> bytes:
        """A base64 row's bytes: the size is checked on the text, before decoding."""
        if self.max_bytes is not None:
            padding = value[-2:].count("=" if isinstance(value, str) else b"=")
            size = len(value) * 3 // 4 - padding  # the decoded size, from the text's length
            if size > self.max_bytes:
                raise Refused(
                    f"<bytes>: {column} holds {size:,} bytes, above the {self.max_bytes:,}-byte "
                    f"cap per row ({MAX_BYTES_ENV})"
                )
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Refused(f"<bytes>: not valid base64 ({exc})") from None


def _shown(text: str, limit: int = 120) -> str:
    """A client's path in a message: quoted, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
