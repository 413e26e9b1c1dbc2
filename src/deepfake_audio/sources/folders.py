"""The `{training,validation,testing}/{real,fake}/` layout (Fake-or-Real, the notebook).

Split and class folder names vary between corpora; the aliases below cover
the ones users arrive with. Anything else under the root is ignored, and a
layout with no recognisable split folders fails before any decoding.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_audio.errors import UserError
from deepfake_audio.params import Params
from deepfake_audio.sources import Clip

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
}
LABEL_ALIASES = {"real": "bonafide", "bonafide": "bonafide", "fake": "spoof", "spoof": "spoof"}


def list_clips(params: Params) -> list[Clip]:
    root = Path(params.data.path or "")
    if not root.is_dir():
        raise UserError(f"data.path: {root} is not a directory")
    clips: list[Clip] = []
    seen_splits: dict[str, Path] = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_ALIASES.get(split_dir.name.lower())
        if split is None:
            continue
        if split in seen_splits:
            raise UserError(
                f"data.path: {seen_splits[split].name}/ and {split_dir.name}/ are both the "
                f"{split} split; keep one"
            )
        seen_splits[split] = split_dir
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = LABEL_ALIASES.get(class_dir.name.lower())
            if label is None:
                continue
            for file in sorted(class_dir.rglob("*")):
                if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES:
                    rel = file.relative_to(root).as_posix()
                    clips.append(Clip(clip_id=rel, split=split, label=label, path=rel))
    if not seen_splits:
        raise UserError(
            f"data.path: {root} has no split folders (expected training/validation/testing "
            "with real/fake inside)"
        )
    if not clips:
        raise UserError(f"data.path: {root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return clips
