"""Datasets survive a DVC remote: real `dvc push` / `dvc pull` in a temporary git repository.

Two workflows the README documents: the spectrogram dataset built by the real
`dataset` stage, and a raw corpus tracked with `dvc add` and consumed by that
stage. Each goes to a local remote, the workspace copy and the whole DVC cache are
deleted, and `dvc pull` must bring back the same files, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import PROJECT, copy_project, merge, stage_env
from deepfake_audio.ops.tracking import directory_digest

pytestmark = pytest.mark.slow  # about 45 s: two repositories, a dozen dvc commands each

TINY = {
    "seed": 7,
    "data": {"demo": {"train_clips": 24, "validation_clips": 12, "test_clips": 12}},
    "features": {"clip_seconds": 0.5, "workers": 2},
}


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = stage_env()

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(cmd), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}"
            )
        return proc

    def lock_out(self, stage: str, path: str) -> str:
        lock = yaml.safe_load((self.root / "dvc.lock").read_text())
        return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)

    def lock_dep(self, stage: str, path: str) -> str:
        lock = yaml.safe_load((self.root / "dvc.lock").read_text())
        return next(d["md5"] for d in lock["stages"][stage]["deps"] if d["path"] == path)


def _sha256_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write_corpus(folder: Path, per_class: int = 2) -> None:
    """Real WAV files in the folders layout; every clip distinct (no cross-split duplicates)."""
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for split in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            target = folder / split / label
            target.mkdir(parents=True)
            for i in range(per_class):
                tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
                wave = (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
                sf.write(target / f"{label}_{i}.wav", wave, 16000, subtype="PCM_16")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """This project's stage code, dvc.yaml and tiny params in a fresh git + DVC repository."""
    root = tmp_path / "repo"
    root.mkdir()
    copy_project(root)  # .dvc/ included: its config turns analytics off
    params = merge(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = Repo(root)
    r.run("git", "init", "-q", "-b", "main")
    r.run("dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    r.run("git", "add", "-A")
    r.run("git", "commit", "-qm", "project")
    return r


def _assert_up_to_date(repo: Repo, *targets: str) -> None:
    assert json.loads(repo.run("dvc", "status", "--json", *targets).stdout) == {}
    assert "up to date" in repo.run("dvc", "status", *targets).stdout
    assert "in sync" in repo.run("dvc", "status", "--cloud", *targets).stdout


def test_spectrograms_round_trip_through_a_remote(repo: Repo) -> None:
    repo.run("dvc", "repro", "dataset")
    data = repo.root / "data" / "spectrograms"
    before = _sha256_tree(data)
    assert {"manifest_train.csv", "stats.json", "train-00000.npy"} <= set(before)
    # The digest our MLflow runs are tagged with is the hash DVC recorded for the out.
    dvc_md5 = repo.lock_out("dataset", "data/spectrograms")
    assert dvc_md5.endswith(".dir")
    assert directory_digest(data) == dvc_md5

    assert "pushed" in repo.run("dvc", "push").stdout
    shutil.rmtree(data)
    shutil.rmtree(repo.root / ".dvc" / "cache")
    # Targeted: a bare `dvc pull` fails while the later stages have no lock entry.
    repo.run("dvc", "pull", "dataset")

    assert _sha256_tree(data) == before
    assert directory_digest(data) == dvc_md5
    _assert_up_to_date(repo, "dataset")


def test_dvc_added_raw_corpus_feeds_the_stage_and_round_trips(repo: Repo) -> None:
    corpus = repo.root / "data" / "raw" / "my-corpus"
    _write_corpus(corpus)
    if repo.run("git", "ls-files", "data/raw").stdout.strip():
        # data/raw holds git-tracked files (its README), so DVC refuses to take it over:
        # the reason the README says `dvc add data/raw/<corpus>`.
        refused = repo.run("dvc", "add", "data/raw", check=False)
        assert refused.returncode != 0 and "SCM" in refused.stderr
    repo.run("dvc", "add", "data/raw/my-corpus")
    added = yaml.safe_load((repo.root / "data" / "raw" / "my-corpus.dvc").read_text())
    repo.run("git", "add", "data/raw/my-corpus.dvc", "data/raw/.gitignore")
    repo.run("git", "commit", "-qm", "my corpus")

    repo.run(
        "dvc",
        "exp",
        "run",
        "-S",
        "data.source=folders",
        "-S",
        "data.path=data/raw/my-corpus",
        "dataset",
    )
    assert repo.lock_dep("dataset", "data/raw/my-corpus") == added["outs"][0]["md5"]
    report = json.loads((repo.root / "reports" / "dataset.json").read_text())
    assert report["per_split"]["train"] == {"bonafide": 2, "spoof": 2}
    assert report["rejected"] == 0

    spectrograms = repo.root / "data" / "spectrograms"
    before = {"raw": _sha256_tree(corpus), "spectrograms": _sha256_tree(spectrograms)}
    assert len(before["raw"]) == 12
    repo.run("dvc", "push", "data/raw/my-corpus.dvc", "dataset")
    shutil.rmtree(corpus)
    shutil.rmtree(spectrograms)
    shutil.rmtree(repo.root / ".dvc" / "cache")
    repo.run("dvc", "pull", "data/raw/my-corpus.dvc", "dataset")

    assert {"raw": _sha256_tree(corpus), "spectrograms": _sha256_tree(spectrograms)} == before
    _assert_up_to_date(repo, "data/raw/my-corpus.dvc", "dataset")
