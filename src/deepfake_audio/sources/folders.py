"""Folder layouts: `{training,validation,testing}/{real,fake}/` or a flat `{real,fake}/`.

The split layout is the Fake-or-Real corpus's and the notebook's; split and
class folder names vary between corpora, and the aliases below cover the ones
users arrive with. Anything else under the root is ignored.

A flat `{real,fake}/` folder is split here, deterministically, by *group*:
a speaker folder (`real/p225/001.wav`), a file-name prefix that recurs
(`p225_001.wav`, `19-198-0001.flac`), or the first group of
`data.group_pattern`; byte-identical files are merged into one group. A group
never straddles two splits, so a speaker - or a copied file - cannot leak from
training into the test set. Groups are ordered by a seeded hash and dealt out
by `data.split` shares within each class, so the split is stable for a given
file set and seed, and both classes reach every split.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dsp.audio import AUDIO_SUFFIXES
from deepfake_audio.sources import SPLITS, Clip

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
# A recurring file-name prefix is taken for a speaker only when it really groups files:
# at least this many distinct prefixes, and on average two files or more each.
MIN_PREFIX_GROUPS = 10
_PREFIX = re.compile(r"^([^_\-\s.]+)[_\-\s]")


def list_clips(
    params: Params, suffixes: tuple[str, ...] = AUDIO_SUFFIXES, what: str = "audio"
) -> list[Clip]:
    """Clips of either layout; `suffixes`/`what` let the images source reuse it."""
    root = Path(params.data.path or "")
    if not root.is_dir():
        raise UserError(f"data.path: {root} is not a directory")
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [p for p in dirs if p.name.lower() in SPLIT_ALIASES]
    class_dirs = [p for p in dirs if p.name.lower() in LABEL_ALIASES]
    if split_dirs:
        clips = _split_layout(root, split_dirs, suffixes)
    elif class_dirs:
        clips = _flat_layout(root, class_dirs, suffixes, params)
    else:
        raise UserError(
            f"data.path: {root} has neither split folders (training/validation/testing with "
            "real/fake inside) nor class folders (real/fake) to split"
        )
    if not clips:
        raise UserError(f"data.path: {root} holds no {what} files ({', '.join(suffixes)})")
    return clips


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)


def _split_layout(root: Path, split_dirs: list[Path], suffixes: tuple[str, ...]) -> list[Clip]:
    clips: list[Clip] = []
    seen: dict[str, Path] = {}
    for split_dir in split_dirs:
        split = SPLIT_ALIASES[split_dir.name.lower()]
        if split in seen:
            raise UserError(
                f"data.path: {seen[split].name}/ and {split_dir.name}/ are both the "
                f"{split} split; keep one"
            )
        seen[split] = split_dir
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = LABEL_ALIASES.get(class_dir.name.lower())
            if label is None:
                continue
            for file in _files(class_dir, suffixes):
                rel = file.relative_to(root).as_posix()
                clips.append(Clip(clip_id=rel, split=split, label=label, path=rel))
    return clips


def _flat_layout(
    root: Path, class_dirs: list[Path], suffixes: tuple[str, ...], params: Params
) -> list[Clip]:
    files: list[tuple[str, str, Path]] = []  # (relative path, label, path below the class dir)
    for class_dir in class_dirs:
        label = LABEL_ALIASES[class_dir.name.lower()]
        for file in _files(class_dir, suffixes):
            files.append((file.relative_to(root).as_posix(), label, file.relative_to(class_dir)))
    if not files:
        return []
    groups, how = group_files([below for _, _, below in files], params.data.group_pattern)
    # Byte-identical files join one group, so a copy cannot land in another split.
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(_sha256, (root / rel for rel, _, _ in files)))
    merged = _merge_identical(groups, digests)
    splits = assign_splits(
        merged,
        [label for _, label, _ in files],
        (params.data.split.train, params.data.split.validation, params.data.split.test),
        params.seed,
    )
    speakers = how != "file"
    clips = [
        Clip(clip_id=rel, split=split, label=label, path=rel, speaker=group if speakers else "")
        for (rel, label, _), group, split in zip(files, groups, splits, strict=True)
    ]
    per_split = Counter(splits)
    print(
        f"data.split: {len(files)} files in {len(set(merged))} groups ({how}) -> "
        + ", ".join(f"{s} {per_split.get(s, 0)}" for s in SPLITS),
        file=sys.stderr,
    )
    return clips


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def group_files(below: list[Path], pattern: str | None) -> tuple[list[str], str]:
    """One group name per file (path below its class folder) and how they were found."""
    if pattern is not None:
        regex = re.compile(pattern)
        groups = []
        for path in below:
            match = regex.search(path.name)
            if match is None or not match.group(1):
                raise UserError(f"data.group_pattern: '{pattern}' does not match {path.name!r}")
            groups.append(match.group(1))
        return groups, "data.group_pattern"
    if all(len(path.parts) > 1 for path in below):
        return [path.parts[0] for path in below], "speaker folders"
    prefixes = [_PREFIX.match(path.name) for path in below]
    if all(prefixes):
        names = [m.group(1) for m in prefixes]  # type: ignore[union-attr]
        distinct = len(set(names))
        if distinct >= MIN_PREFIX_GROUPS and 2 * distinct <= len(names):
            return names, "file-name prefixes"
    return [path.as_posix() for path in below], "file"


def _merge_identical(groups: list[str], digests: list[str]) -> list[str]:
    """Union-find over groups linked by identical file contents; returns each file's root."""
    parent: dict[str, str] = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first: dict[str, str] = {}
    for group, digest in zip(groups, digests, strict=True):
        other = first.setdefault(digest, group)
        a, b = find(group), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(g) for g in groups]


def assign_splits(
    groups: list[str], labels: list[str], shares: tuple[float, float, float], seed: int
) -> list[str]:
    """Deal whole groups into train/validation/test by `shares`, class by class.

    Each group counts under its majority label; within a label, groups are
    ordered by a seeded hash and a group goes to the split its midpoint in the
    running total falls into. Deterministic for a given file set and seed.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    by_label: dict[str, list[str]] = defaultdict(list)
    for group, indices in members.items():
        majority = Counter(labels[i] for i in indices).most_common(1)[0][0]
        by_label[majority].append(group)
    bounds = (shares[0], shares[0] + shares[1])
    out = [""] * len(groups)
    for label in sorted(by_label):
        ordered = sorted(
            by_label[label], key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()
        )
        total = sum(len(members[g]) for g in ordered)
        done = 0
        chosen: dict[str, str] = {}
        for group in ordered:
            size = len(members[group])
            middle = (done + size / 2) / total
            chosen[group] = (
                "train" if middle < bounds[0] else "validation" if middle < bounds[1] else "test"
            )
            done += size
        _fill_empty_splits(ordered, chosen)
        for group, split in chosen.items():
            for index in members[group]:
                out[index] = split
    return out


def _fill_empty_splits(ordered: list[str], chosen: dict[str, str]) -> None:
    """With few groups, shares can leave a split empty: give it a group from a split with two."""
    if len(ordered) < len(SPLITS):
        return
    for needed in ("test", "validation", "train"):
        sizes = Counter(chosen.values())
        if sizes[needed]:
            continue
        donor = next(g for g in reversed(ordered) if sizes[chosen[g]] > 1)
        chosen[donor] = needed
