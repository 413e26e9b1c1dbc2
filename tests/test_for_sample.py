"""The dataset stage on real audio: the Fake-or-Real sample in shared/datasets/for-sample.

Runs `deepfake-audio dataset` as a user would (a subprocess, its own params file)
and checks every clip against the sample's own manifest.csv, which was written
independently of this project: nothing is lost, nothing lands in the wrong split
or class, and the per-clip metadata is the file's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PROJECT

# The repository is <work>/main and the shared data sits beside it in <work>/shared.
SAMPLE = PROJECT.parent / "shared" / "datasets" / "for-sample"
SPLITS = {"training": "train", "validation": "validation", "testing": "test"}
LABELS = {"real": "bonafide", "fake": "spoof"}
OUR_SPLITS = ("train", "validation", "test")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SAMPLE / "manifest.csv").is_file():
        pytest.skip(f"the Fake-or-Real sample is not at {SAMPLE}")
    root = tmp_path_factory.mktemp("for-sample")
    params = {
        # Preprocessing on (the default for real corpora), short clips padded: at 2 s windows
        # dropping them would empty the test fakes, and the build would stop (docs/data.md).
        "data": {"source": "folders", "path": str(SAMPLE), "preprocess": {"short": "pad"}},
        "features": {"workers": 2},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DEEPFAKE_AUDIO_VERBOSE": "0",
    }
    cmd = [
        "deepfake-audio",
        "--params",
        str(root / "params.yaml"),
        "dataset",
        "--out",
        str(root / "spectrograms"),
        "--reports",
        str(root / "reports"),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def _manifests(root: Path) -> dict[str, list[dict[str, str]]]:
    return {s: _read_csv(root / "spectrograms" / f"manifest_{s}.csv") for s in OUR_SPLITS}


def _sample_rows() -> dict[str, dict[str, str]]:
    return {row["file"]: row for row in _read_csv(SAMPLE / "manifest.csv")}


def test_every_file_is_in_one_manifest_or_rejected(built: Path) -> None:
    audio = {
        p.relative_to(SAMPLE).as_posix()
        for p in SAMPLE.rglob("*")
        if p.is_file() and p.name not in ("README.md", "manifest.csv")
    }
    assert audio == set(_sample_rows()), "the folder holds exactly the sample's listed clips"
    listed = Counter(r["path"] for rows in _manifests(built).values() for r in rows)
    rejected = Counter(r["path"] for r in _read_csv(built / "reports" / "bad_files.csv"))
    for path in audio:
        assert listed[path] + rejected[path] == 1, path
    assert set(listed) | set(rejected) == audio


def test_splits_and_labels_follow_the_folders(built: Path) -> None:
    for split, rows in _manifests(built).items():
        for row in rows:
            split_dir, class_dir, _ = row["path"].split("/", 2)
            assert SPLITS[split_dir] == split == row["split"], row["path"]
            assert LABELS[class_dir] == row["label"], row["path"]
            assert row["target"] == ("1" if row["label"] == "bonafide" else "0")


def test_reported_counts_equal_the_manifests(built: Path) -> None:
    report = json.loads((built / "reports" / "dataset.json").read_text())
    manifests = _manifests(built)
    bad = _read_csv(built / "reports" / "bad_files.csv")
    for split, rows in manifests.items():
        per_label = Counter(r["label"] for r in rows)
        assert report["per_split"][split] == {
            "bonafide": per_label["bonafide"],
            "spoof": per_label["spoof"],
        }
    assert report["clips"] == sum(map(len, manifests.values()))
    assert report["rejected"] == len(bad)
    # Kept + rejected per split and class is the sample's own count (README: 233 clips).
    expected = Counter((SPLITS[r["split"]], LABELS[r["label"]]) for r in _sample_rows().values())
    got = Counter((r["split"], r["label"]) for rows in manifests.values() for r in rows)
    got.update((r["split"], LABELS[r["path"].split("/")[1]]) for r in bad)
    assert got == expected
    assert sum(expected.values()) == 233


def test_rows_carry_the_files_metadata(built: Path) -> None:
    sample = _sample_rows()
    for rows in _manifests(built).values():
        for row in rows:
            assert float(row["duration_s"]) > 0, row["path"]
            assert int(row["sample_rate"]) > 0, row["path"]
            assert re.fullmatch(r"[0-9a-f]{64}", row["sha256"]), row["path"]
            source = sample[row["path"]]
            assert int(row["sample_rate"]) == int(source["sample_rate"]), row["path"]
            assert float(row["duration_s"]) == pytest.approx(
                float(source["duration_s"]), abs=0.01
            ), row["path"]
            data = (SAMPLE / row["path"]).read_bytes()
            assert row["sha256"] == hashlib.sha256(data).hexdigest(), row["path"]
    rates = {int(r["sample_rate"]) for rows in _manifests(built).values() for r in rows}
    assert rates == {16000, 44100}  # README: six 44.1 kHz clips in training/real


def test_shards_hold_one_row_per_manifest_row(built: Path) -> None:
    stats = json.loads((built / "spectrograms" / "stats.json").read_text())
    n_mels, n_frames, _ = stats["input_shape"]
    for split, rows in _manifests(built).items():
        shards = sorted((built / "spectrograms").glob(f"{split}-*.npy"))
        arrays = [np.load(p, mmap_mode="r") for p in shards]
        assert sum(len(a) for a in arrays) == len(rows)
        assert all(a.shape[1:] == (n_mels, n_frames) for a in arrays)
        assert {(int(r["shard"]), int(r["row"])) for r in rows} == {
            (i, j) for i, a in enumerate(arrays) for j in range(len(a))
        }
