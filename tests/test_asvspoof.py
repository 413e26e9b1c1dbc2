"""The asvspoof source: three protocol dialects, real FLAC/WAV files, attack ids kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio.config.params import parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.sources import list_clips
from deepfake_audio.sources.asvspoof import parse_line
from deepfake_audio.stages import dataset


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("LA_0079 LA_T_1138215 - - bonafide", ("LA_0079", "LA_T_1138215", "-", "bonafide")),
        ("LA_0079 LA_T_1271820 - A01 spoof", ("LA_0079", "LA_T_1271820", "A01", "spoof")),
        (
            "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
            ("LA_0009", "LA_E_9332881", "A07", "spoof"),
        ),
        (
            "LA_0023 LA_E_5085671 none ita_tx bonafide bonafide notrim eval",
            ("LA_0023", "LA_E_5085671", "-", "bonafide"),
        ),
        (
            "T_4850\tT_0000000001\tF\t-\t-\t-\tAC3\tA05\tspoof\t-",
            ("T_4850", "T_0000000001", "A05", "spoof"),
        ),
        ("   ", None),
    ],
)
def test_protocol_dialects(line: str, expected: tuple | None) -> None:
    assert parse_line(line, "p.txt:1") == expected


@pytest.mark.parametrize(
    "line", ["LA_0079 LA_T_1 - A01 maybe", "only_one_field", "S ../../etc/passwd - A01 spoof"]
)
def test_bad_protocol_lines_name_file_and_line(line: str) -> None:
    with pytest.raises(UserError, match=r"^p.txt:7: "):
        parse_line(line, "p.txt:7")


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = {"train": [], "validation": [], "test": []}
    for split, prefix in (("train", "T"), ("validation", "D"), ("test", "E")):
        folder = root / f"ASVspoof2019_LA_{split}" / "flac"
        folder.mkdir(parents=True)
        for i in range(4):
            utt = f"LA_{prefix}_{i:07d}"
            spoof = i % 2 == 1
            attack = ("A01" if split != "test" else "A17") if spoof else "-"
            suffix = ".wav" if i == 3 else ".flac"
            t = np.arange(12000) / 16000
            wave = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.normal(
                size=t.size
            )
            sf.write(folder / f"{utt}{suffix}", wave.astype(np.float32), 16000)
            lines[split].append(f"LA_00{i}0 {utt} - {attack} {'spoof' if spoof else 'bonafide'}")
    protocols = root / "protocols"
    protocols.mkdir()
    for split, rows in lines.items():
        (protocols / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def _params(root: Path):
    return parse_params(
        {
            "data": {
                "source": "asvspoof",
                "path": str(root),
                "protocols": {s: f"protocols/{s}.txt" for s in ("train", "validation", "test")},
            },
            "features": {"clip_seconds": 0.5, "n_mels": 16, "workers": 1},
        }
    )


def test_asvspoof_corpus_builds_with_attack_ids(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "LA")
    params = _params(root)
    clips = list_clips(params)
    assert len(clips) == 12
    summary = dataset.build(params, clips, tmp_path / "spec", tmp_path / "reports")
    assert summary["clips"] == 12
    test = SpectrogramDataset(tmp_path / "spec").manifest("test")
    assert sorted(set(test["attack"])) == ["-", "A17"]
    assert set(test["speaker"]) >= {"LA_0010"}
    assert all(Path(p).parts[0] == "ASVspoof2019_LA_test" for p in test["path"])


def test_missing_audio_and_protocol_are_clear_errors(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "LA")
    (root / "protocols" / "test.txt").write_text("LA_0001 LA_E_9999999 - A17 spoof\n")
    with pytest.raises(UserError, match=r"test.txt:1: no audio file LA_E_9999999"):
        list_clips(_params(root))
    (root / "protocols" / "test.txt").unlink()
    with pytest.raises(UserError, match=r"data.protocols.test: .*test.txt not found"):
        list_clips(_params(root))
    params = parse_params(
        {"data": {"source": "asvspoof", "path": str(root), "protocols": {"train": "x"}}}
    )
    with pytest.raises(UserError, match="data.protocols: no protocol file for validation, test"):
        list_clips(params)
