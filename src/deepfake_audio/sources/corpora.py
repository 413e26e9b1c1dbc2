"""Several named corpora (`data.corpora`) -> one list of clips, each tagged with its corpus.

Each corpus is listed by its own source module exactly as a single corpus would be (its own
`group_pattern`, `split` shares, protocols, and the check that its paths stay inside it), so
a corpus's speakers or utterances never straddle two of its splits. Then:

- `train` corpora keep their splits and are pooled: the training split is every training
  corpus's training split, and so on;
- `select` and `eval` corpora are held out whole: every clip, whatever split its own layout
  gave it, goes to its role's split (`HELDOUT_SPLITS`), so a corpus the model never trained
  on is scored as one piece.

A clip's `path` becomes the corpus path joined with its path inside the corpus (both
relative to the project root, where the stages run), its `clip_id` and `speaker` are
prefixed with the corpus name (two corpora may both have `real/0001.wav` or a speaker `p1`),
and its `corpus` names the entry. A corpus with a `manifest.csv` holding `file` and `system`
columns (the shared corpora's) gives each spoofed clip its system as the attack id, so
every held-out corpus is also scored per synthesis system.
"""

from __future__ import annotations

import csv
import dataclasses
import posixpath
from pathlib import Path

from deepfake_audio.config.params import CorpusParams, Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.sources import HELDOUT_SPLITS, Clip

MANIFEST = "manifest.csv"


def corpus_params(params: Params, corpus: CorpusParams) -> Params:
    """`params` as if `corpus` were the single corpus of data.path (what its source reads)."""
    data = dataclasses.replace(
        params.data,
        source=corpus.source,
        path=corpus.path,
        group_pattern=corpus.group_pattern,
        protocols=dict(corpus.protocols),
        split=corpus.split,
        corpora=(),
    )
    return dataclasses.replace(params, data=data)


def split_of(corpus: CorpusParams, own_split: str) -> str:
    """The dataset split a clip of `corpus` goes to: its own for training corpora, else its
    role's held-out split."""
    return own_split if corpus.role == "train" else HELDOUT_SPLITS[corpus.role]


def systems(root: Path) -> dict[str, str]:
    """file (relative to the corpus) -> synthesis system, from the corpus's manifest.csv.

    Empty when there is no manifest or it has no `file` and `system` columns: the attack id
    then stays the source's own ("-" for a folder layout).
    """
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"file", "system"} <= set(reader.fieldnames or ()):
                return {}
            return {
                row["file"].strip(): row["system"].strip()
                for row in reader
                if row.get("file") and row.get("system")
            }
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read the corpus manifest ({exc})") from None


def list_clips(params: Params) -> list[Clip]:
    """Every clip of every corpus of data.corpora, in the order of the list."""
    from deepfake_audio import sources

    clips: list[Clip] = []
    for index, corpus in enumerate(params.data.corpora):
        where = f"data.corpora[{index}]"
        root = Path(corpus.path)
        if not root.is_dir():
            raise UserError(
                f"{where}.path: {corpus.path} (corpus {corpus.name!r}) is not a directory"
            )
        try:
            own = sources.list_clips(corpus_params(params, corpus))
        except UserError as exc:
            raise UserError(f"{where} ({corpus.name}): {exc}") from None
        attacks = systems(root)
        for clip in own:
            attack = clip.attack
            if clip.label == "spoof" and attacks.get(clip.path):
                attack = attacks[clip.path]
            clips.append(
                dataclasses.replace(
                    clip,
                    clip_id=f"{corpus.name}/{clip.clip_id}",
                    split=split_of(corpus, clip.split),
                    path=posixpath.join(root.as_posix(), clip.path),
                    speaker=f"{corpus.name}/{clip.speaker}" if clip.speaker else "",
                    attack=attack,
                    corpus=corpus.name,
                )
            )
    return clips
