"""Input layouts -> one flat list of clips.

Each source module turns one corpus layout into `Clip` records; the dataset
stage does not care where a clip came from. A clip is either a file under
`data.path` or a synthetic demo clip generated from its seed.

A clip's path comes from a directory walk, a protocol file or a manifest: text
a user hands us. Every one is checked to stay inside `data.path` (no absolute
path, no `..` climbing out), so a crafted list cannot make the dataset stage
read, hash and report on files elsewhere. The check (`core.paths.inside`, shared with a
served model's `path` rows) is lexical: a symbolic link under `data.path` is followed, as
DVC's own symlink cache needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.paths import inside

SPLITS = ("train", "validation", "test")
# The dataset's splits of held-out corpora (data.corpora roles select and eval): every clip of
# such a corpus, whatever its own layout's split, goes to its role's split.
HELDOUT_SPLITS = {"select": "xcorpus_select", "eval": "xcorpus_eval"}
LABELS = ("bonafide", "spoof")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    split: str  # train | validation | test
    label: str  # bonafide | spoof
    path: str  # a file under data.path, or "demo:<clip_id>" for synthetic clips
    speaker: str = ""
    attack: str = "-"  # attack/system id where the source knows it, "-" for bona fide
    demo_seed: int | None = None  # set for demo clips: the clip is generated from it
    corpus: str = ""  # its data.corpora entry's name ("" for the single corpus of data.path)

    @property
    def target(self) -> int:
        """1 = bona fide, 0 = spoof: scores are 'more bona fide is higher', as in ASVspoof."""
        return 1 if self.label == "bonafide" else 0


def list_clips(params: Params) -> list[Clip]:
    """Every clip of the configured source, in a deterministic order."""
    if params.data.corpora:
        from deepfake_audio.sources import corpora

        return corpora.list_clips(params)
    source = params.data.source
    if source == "demo":
        return _demo_clips(params)
    clips = _file_clips(params)
    root = params.data.path or "."
    for clip in clips:
        if inside(root, clip.path) is None:
            raise UserError(
                f"data.path: clip {clip.path!r} ({clip.split}) is not a path inside {root}"
            )
    return clips


def _file_clips(params: Params) -> list[Clip]:
    source = params.data.source
    if source == "folders":
        from deepfake_audio.sources import folders

        return folders.list_clips(params)
    if source == "asvspoof":
        from deepfake_audio.sources import asvspoof

        return asvspoof.list_clips(params)
    if source == "images":
        # The notebook's layout: the same folders, holding spectrogram pictures.
        from deepfake_audio.dsp.images import IMAGE_SUFFIXES
        from deepfake_audio.sources import folders

        return folders.list_clips(params, suffixes=IMAGE_SUFFIXES, what="image")
    raise UserError(
        f"data.source: {source!r} is unknown (available: demo, folders, asvspoof, images)"
    )


def _demo_clips(params: Params) -> list[Clip]:
    from deepfake_audio.sources.demo import plan_corpus

    counts = {
        "train": params.data.demo.train_clips,
        "validation": params.data.demo.validation_clips,
        "test": params.data.demo.test_clips,
    }
    return [
        Clip(
            clip_id=c.clip_id,
            split=c.split,
            label=c.label,
            path=f"demo:{c.clip_id}",
            speaker=c.speaker,
            attack=c.attack,
            demo_seed=c.seed,
        )
        for c in plan_corpus(params.seed, counts)
    ]
