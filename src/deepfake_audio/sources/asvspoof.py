"""ASVspoof-style protocol files plus a folder of audio.

One protocol file per split (`data.protocols`, relative to `data.path`). The
three protocol formats users arrive with differ in their columns but agree on
three things, which is all this parser relies on: the speaker is the first
column, the utterance id the second, and one later column is the key
`bonafide` or `spoof`, with the attack id in the column just before it:

    LA 2019 CM      LA_0079 LA_T_1271820 - A01 spoof
    LA/DF 2021      LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
    ASVspoof 5      T_4850 T_0000000001 F - - - AC3 A05 spoof -

Audio is found by utterance id anywhere under `data.path` (`<id>.flac` or
`.wav`), so the corpora's different folder layouts need no configuration, and
an id can never name a file outside `data.path`.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.sources import SPLITS, Clip

AUDIO_SUFFIXES = (".flac", ".wav")
KEYS = ("bonafide", "spoof")


def parse_line(line: str, where: str) -> tuple[str, str, str, str] | None:
    """(speaker, utterance id, attack, label) of one protocol line; None for a blank line."""
    fields = line.split()
    if not fields:
        return None
    key_at = next((i for i in range(2, len(fields)) if fields[i].lower() in KEYS), None)
    if len(fields) < 3 or key_at is None:
        raise UserError(f"{where}: not a protocol line (no bonafide/spoof key): {line.strip()!r}")
    speaker, utterance = fields[0], fields[1]
    # An id names a file found by a walk of data.path: a path in its place (`../x`,
    # `/etc/x`, `..\\x`) could only be an attempt to read something outside it.
    if "/" in utterance or "\\" in utterance or utterance.startswith("."):
        raise UserError(
            f"{where}: utterance id {utterance!r} is not a plain file name "
            "(paths outside data.path are refused)"
        )
    label = fields[key_at].lower()
    attack = fields[key_at - 1] if key_at >= 3 and label == "spoof" else "-"
    return speaker, utterance, attack, label


def _read_protocol(protocol: Path, split: str) -> list[str]:
    try:
        return protocol.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"data.protocols.{split}: {protocol}: {exc.strerror}") from None


def _audio_index(root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def list_clips(params: Params) -> list[Clip]:
    root = Path(params.data.path or "")
    if not root.is_dir():
        raise UserError(f"data.path: {root} is not a directory")
    protocols = params.data.protocols
    missing = [split for split in SPLITS if split not in protocols]
    if missing:
        raise UserError(
            f"data.protocols: no protocol file for {', '.join(missing)} "
            "(give one per split: train, validation, test)"
        )
    index = _audio_index(root)
    if not index:
        raise UserError(f"data.path: {root} holds no .flac or .wav files")
    clips: list[Clip] = []
    for split in SPLITS:
        protocol = root / protocols[split]
        if not protocol.is_file():
            raise UserError(f"data.protocols.{split}: {protocol} not found")
        for number, line in enumerate(_read_protocol(protocol, split), start=1):
            where = f"{protocols[split]}:{number}"
            parsed = parse_line(line, where)
            if parsed is None:
                continue
            speaker, utterance, attack, label = parsed
            audio = index.get(utterance)
            if audio is None:
                raise UserError(f"{where}: no audio file {utterance}.flac or .wav under {root}")
            rel = audio.relative_to(root).as_posix()
            clips.append(
                Clip(
                    clip_id=utterance,
                    split=split,
                    label=label,
                    path=rel,
                    speaker=speaker,
                    attack=attack,
                )
            )
    return clips
