"""A flat `{real,fake}/` corpus split by the stage: by speaker, deterministic, no leaks."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio.config.params import ParamsError, parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.sources import list_clips
from deepfake_audio.sources.folders import assign_splits, group_files
from deepfake_audio.stages import dataset


def _tone(seed: int, seconds: float = 0.4, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(90, 300)
    return (0.2 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def _params(root: Path, seed: int = 42, **data: object):
    return parse_params(
        {
            "seed": seed,
            "data": {"source": "folders", "path": str(root), "shard_size": 4, **data},
            "features": {"clip_seconds": 0.25, "n_mels": 16, "workers": 2},
        }
    )


def _flat_by_prefix(root: Path, speakers: int = 12, per_speaker: int = 4) -> Path:
    """VCTK-like names: `p<speaker>_<utterance>.wav`, real and fake of every speaker."""
    seed = 0
    for label in ("REAL", "Fake"):  # any case
        folder = root / label
        folder.mkdir(parents=True)
        for s in range(speakers):
            for u in range(per_speaker):
                seed += 1
                sf.write(folder / f"p{200 + s}_{u:03d}.wav", _tone(seed), 16000)
    return root


def test_flat_layout_splits_by_file_name_prefix_without_leaks(tmp_path: Path) -> None:
    params = _params(_flat_by_prefix(tmp_path / "corpus"))
    clips = list_clips(params)
    assert len(clips) == 2 * 12 * 4
    splits_of_speaker: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        assert clip.speaker == Path(clip.path).name.split("_")[0]
        splits_of_speaker[clip.speaker].add(clip.split)
    assert all(len(s) == 1 for s in splits_of_speaker.values()), "a speaker in two splits"
    per_split = Counter(c.split for c in clips)
    assert set(per_split) == {"train", "validation", "test"}
    assert per_split["train"] > per_split["validation"] and per_split["train"] > per_split["test"]
    # Deterministic: the same files and seed give the same split; another seed another one.
    assert [c.split for c in list_clips(params)] == [c.split for c in clips]
    other = list_clips(_params(tmp_path / "corpus", seed=43))
    assert [c.split for c in other] != [c.split for c in clips]


def test_flat_layout_speaker_folders_and_identical_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    seed = 0
    for label in ("bonafide", "spoof"):
        for s in range(6):
            folder = root / label / f"spk{s}"
            folder.mkdir(parents=True)
            for u in range(3):
                seed += 1
                sf.write(folder / f"{u}.wav", _tone(seed), 16000)
    # The same recording filed under two speakers: both speakers must share a split.
    shutil.copy(root / "bonafide" / "spk0" / "0.wav", root / "bonafide" / "spk5" / "copy.wav")
    clips = list_clips(_params(root))
    split_of = {c.speaker: c.split for c in clips}
    assert all(split_of[c.speaker] == c.split for c in clips)
    assert split_of["spk0"] == split_of["spk5"]


def test_flat_layout_builds_a_dataset_with_every_clip(tmp_path: Path) -> None:
    params = _params(_flat_by_prefix(tmp_path / "corpus"))
    summary = dataset.build(params, list_clips(params), tmp_path / "spec", tmp_path / "reports")
    assert summary["clips"] == 96 and summary["rejected"] == 0
    data = SpectrogramDataset(tmp_path / "spec")
    paths = [p for split in ("train", "validation", "test") for p in data.manifest(split)["path"]]
    assert len(paths) == len(set(paths)) == 96


def test_group_pattern_names_the_speaker(tmp_path: Path) -> None:
    root = _flat_by_prefix(tmp_path / "corpus", speakers=4, per_speaker=3)
    clips = list_clips(_params(root, group_pattern=r"^p(\d+)_"))
    assert {c.speaker for c in clips} == {"200", "201", "202", "203"}
    with pytest.raises(UserError, match=r"data.group_pattern: '\^q\(\\d\+\)' does not match"):
        list_clips(_params(root, group_pattern=r"^q(\d+)"))


def test_group_files_falls_back_to_single_files() -> None:
    names = [Path(f"file{i}.wav_16k.wav") for i in range(30)]  # Fake-or-Real style: no speaker
    groups, how = group_files(names, None)
    assert how == "file" and len(set(groups)) == 30
    few = [Path(f"{p}_{i}.wav") for p in ("tts", "vc") for i in range(20)]  # 2 prefixes: no
    assert group_files(few, None)[1] == "file"


def test_assign_splits_follows_shares_and_keeps_groups_whole() -> None:
    groups = [f"g{i // 5}" for i in range(1000)]  # 200 groups of 5
    labels = ["bonafide" if i % 10 < 5 else "spoof" for i in range(1000)]
    splits = assign_splits(groups, labels, (0.6, 0.2, 0.2), seed=3)
    counts = Counter(splits)
    assert abs(counts["train"] - 600) <= 10 and abs(counts["test"] - 200) <= 10
    for label in ("bonafide", "spoof"):
        per = Counter(s for s, lab in zip(splits, labels, strict=True) if lab == label)
        assert abs(per["validation"] - 100) <= 5  # stratified: each class gets its share
    for g in set(groups):
        assert len({s for s, h in zip(splits, groups, strict=True) if h == g}) == 1
    assert assign_splits(groups, labels, (0.6, 0.2, 0.2), seed=4) != splits


def test_split_params_are_validated() -> None:
    with pytest.raises(ParamsError, match=r"data.split: train \+ validation \+ test is 1.1"):
        parse_params({"data": {"split": {"train": 0.8, "validation": 0.15, "test": 0.15}}})
    with pytest.raises(ParamsError, match=r"data.split.test: must be above 0"):
        parse_params({"data": {"split": {"train": 0.8, "validation": 0.2, "test": 0.0}}})
    with pytest.raises(ParamsError, match="data.group_pattern: .* needs a capture group"):
        parse_params({"data": {"group_pattern": "p[0-9]+"}})
    with pytest.raises(ParamsError, match="data.group_pattern: .* is not a valid regex"):
        parse_params({"data": {"group_pattern": "(p"}})
