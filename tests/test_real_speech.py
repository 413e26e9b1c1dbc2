"""`make real-speech`: the overrides it passes to `dvc exp run`, read back through DVC's own
override code and the project's params validation, and the corpora they name (no training)."""

from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT
from deepfake_audio.config.params import parse_params

SHARED = PROJECT.parent / "shared" / "datasets"


def _passed_overrides(capsys: pytest.CaptureFixture[str], seed: int) -> list[str]:
    """The `-S` values of the command the entry point would run (its --dry-run line)."""
    from benchmarks import real_speech

    assert real_speech.main(["--dry-run", "--seed", str(seed), "--name", "rs"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[:5] == ["dvc", "exp", "run", "-n", "rs"]
    flags, values = words[5::2], words[6::2]
    assert set(flags) == {"-S"}
    return values


def _applied(tmp_path: Path, overrides: list[str]) -> dict:
    """params.yaml as shipped, with the overrides applied by DVC (as `dvc exp run -S` does)."""
    from dvc.utils.hydra import apply_overrides

    params_file = tmp_path / "params.yaml"
    params_file.write_text((PROJECT / "params.yaml").read_text())
    apply_overrides(str(params_file), overrides)
    return yaml.safe_load(params_file.read_text())


def test_the_real_speech_settings_reach_dvc_as_valid_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PROJECT)
    params = parse_params(_applied(tmp_path, _passed_overrides(capsys, seed=2)))
    shipped = parse_params(yaml.safe_load((PROJECT / "params.yaml").read_text()))

    assert params.seed == 2
    assert (params.features.kind, params.features.clip_seconds) == ("whisper", 2.0)
    whisper = params.features.whisper
    assert (whisper.model, whisper.layers, whisper.pooling) == ("base", 3, "mean_std")
    assert params.model.architecture == "whisper_head"
    assert params.tune.objective == "val_eer"
    # Its own registry entry: the demo's champion is never compared with it.
    assert params.registry.model_name != shipped.registry.model_name
    # The five shared corpora, all trained on, exactly as the LOCO list names and splits them.
    loco = yaml.safe_load((PROJECT / "benchmarks/loco_shared.yaml").read_text())["data"]
    assert params.data.path == loco["path"]
    assert [(c.name, c.path, c.group_pattern) for c in params.data.corpora] == [
        (c["name"], c["path"], c.get("group_pattern")) for c in loco["corpora"]
    ]
    assert {c.role for c in params.data.corpora} == {"train"}
    assert params.data.corpora[1].group_pattern == r"^(u\d+)_"  # the backslash survived


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (the shared corpora)")
def test_the_real_speech_corpora_are_the_shared_ones_and_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative to the project root the paths name the shared corpora, every file of their
    real/ and fake/ becomes a clip, and each corpus lands in all three splits."""
    from deepfake_audio.sources import list_clips

    monkeypatch.chdir(PROJECT)
    params = parse_params(_applied(tmp_path, _passed_overrides(capsys, seed=0)))
    clips = list_clips(params)
    for corpus in params.data.corpora:
        folder = Path(corpus.path).resolve()
        assert folder.parent == SHARED.resolve()
        files = [p for p in folder.rglob("*") if p.is_file() and p.parent.name in ("real", "fake")]
        own = [c for c in clips if c.corpus == corpus.name]
        assert len(own) == len(files) > 0, corpus.name
        assert set(Counter(c.split for c in own)) == {"train", "validation", "test"}, corpus.name


def test_a_missing_corpus_stops_before_dvc_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import real_speech

    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "data:\n  path: ../nowhere\n  corpora:\n    - {name: gone, path: ../nowhere/gone}\n"
    )
    monkeypatch.chdir(PROJECT)
    with pytest.raises(SystemExit) as stop:
        real_speech.main(["--settings", str(settings)])
    message = str(stop.value)
    assert "\n" not in message and "gone (../nowhere/gone)" in message
