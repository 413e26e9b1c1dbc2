"""benchmarks/frontend_probe.py (`python -m benchmarks probe`): the layer-wise linear probe
under leave-one-corpus-out, end to end on three tiny corpora of real audio written here.

The fakes carry a planted cue every front end can see (a steady 5 kHz tone under the voice,
well above its harmonics; preprocessing removes DC, level and silence, not a tone), so each
held-out corpus is separable by a probe trained on the other two: EER near 0 there, while the
real pipeline's listing, preprocessing, cut, Whisper encoder and EER run unmocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from benchmarks import frontend_probe
from tests.conftest import voice

RATE = 16000
CORPORA = ("alpha", "beta", "gamma")


def write_corpora(root: Path, n: int = 5) -> Path:
    """Three corpora in folder layout (real/, fake/), the fakes with the tone; their list."""
    t = np.arange(int(2.3 * RATE)) / RATE
    for c, name in enumerate(CORPORA):
        for label in ("real", "fake"):
            folder = root / name / label
            folder.mkdir(parents=True)
            for i in range(n):
                wave = voice(100 * c + 10 * (label == "fake") + i, 2.3, RATE)
                if label == "fake":
                    wave = wave + 0.02 * np.sin(2 * np.pi * 5000 * t).astype(np.float32)
                sf.write(folder / f"s{i}_{label}.wav", wave, RATE)
    listed = root / "corpora.yaml"
    entries = [{"name": name, "path": str(root / name)} for name in CORPORA]
    listed.write_text(yaml.safe_dump({"data": {"path": str(root), "corpora": entries}}))
    return listed


def test_the_probe_runs_end_to_end_and_sees_a_planted_cue(tmp_path: Path) -> None:
    listed = write_corpora(tmp_path / "data")
    out = tmp_path / "reports" / "probe.json"
    args = ["--corpora", str(listed), "--cache", str(tmp_path / "cache"), "--out", str(out)]
    args += ["--settings", "whisper-tiny.en-L1-mean_std,whisper-tiny.en-L4-mean,lfcc-mean_std"]
    args += ["--vocoded", "griffin_lim"]
    assert frontend_probe.main(args) == 0
    report = json.loads(out.read_text())
    assert "| lfcc-mean_std |" in out.with_suffix(".md").read_text()
    assert list(report["corpora"]) == list(CORPORA)
    assert all(v == {"bonafide": 5, "spoof": 5, "vocoded": 5} for v in report["corpora"].values())
    assert report["skipped"] == []
    for row in report["settings"].values():
        assert set(row["eer"]) == set(CORPORA)
        assert all(0.0 <= e <= 1.0 for e in row["eer"].values())
        assert row["unconverged_fits"] == 0
    assert report["wall_s"]["vocoded_copies_made"] == 15
    assert report["settings"]["lfcc-mean_std"]["mean"] <= 0.1
    assert report["settings"]["whisper-tiny.en-L1-mean_std"]["dims"] == 768
    assert report["settings"]["whisper-tiny.en-L4-mean"]["dims"] == 384
    # A rerun reads every feature from the cache: same numbers, no new cache files.
    files = sorted((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 2 * 30 + 2 * 15  # (clips + vocoded copies) x (whisper, spectral)
    assert frontend_probe.main(args) == 0
    assert json.loads(out.read_text())["settings"] == report["settings"]
    assert sorted((tmp_path / "cache").rglob("*.npz")) == files


def probe_error(capsys: pytest.CaptureFixture) -> str:
    """The probe's error: one line, the last of stderr (the listing prints its splits first)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if line.startswith("probe:")] == lines[-1:]
    return lines[-1]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    listed = write_corpora(tmp_path / "data", n=2)
    base = ["--corpora", str(listed), "--cache", str(tmp_path / "cache")]
    out = ["--out", str(tmp_path / "probe.json")]
    assert frontend_probe.main([*base, *out, "--settings", "whisper-tiny.en-L9-mean"]) == 2
    error = probe_error(capsys)
    assert "unknown setting 'whisper-tiny.en-L9-mean'" in error
    (tmp_path / "data" / "beta" / "real").rename(tmp_path / "data" / "beta-real")
    (tmp_path / "data" / "beta" / "fake").rename(tmp_path / "data" / "beta-fake")
    (tmp_path / "data" / "beta").rmdir()
    assert frontend_probe.main([*base, *out, "--settings", "lfcc-mean_std"]) == 2
    error = probe_error(capsys)
    assert "beta" in error and "not a directory" in error
    assert not (tmp_path / "probe.json").exists()
