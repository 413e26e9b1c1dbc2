"""Each reference architecture through every stage: `dvc exp run -S model.architecture=...`.

A few training steps on a tiny synthetic corpus against the real MLflow server, then the
registered version scores a recording through `deepfake-audio predict` in a fresh process -
which must import the architecture's own layers itself to load the model in safe mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env

pytestmark = pytest.mark.slow

TINY = {
    "seed": 7,
    "data": {"demo": {"train_clips": 12, "validation_clips": 8, "test_clips": 8}},
    "features": {"clip_seconds": 0.5, "max_seconds": 0.75, "workers": 1},
    "tune": {"max_trials": 1, "epochs": 1, "batch_size": 4},
    "train": {"epochs": 1},
    "augment": {"codec_copies": 0, "codecs": []},
    "baseline": {"components": 2, "max_frames": 2000},
}
CASES = {
    "tdnn": [],  # params.yaml's default (on lfcc)
    "compact_cnn": ["-S", "features.kind=logmel"],
    "lcnn": ["-S", "features.kind=lfcc"],
    "aasist_l": ["-S", "features.kind=waveform"],
    "aasist": ["-S", "features.kind=waveform"],
}


@pytest.mark.parametrize("architecture", sorted(CASES))
def test_architecture_trains_registers_and_serves(
    architecture: str, tmp_path: Path, mlflow_server: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    model_name = f"{architecture.replace('_', '-')}-{tag}"
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {
            **TINY,
            "mlflow": {"experiment_name": f"arch-{tag}"},
            "registry": {"model_name": model_name},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(mlflow_server)
    commit_project(root, env)
    out = run_command(
        ["dvc", "exp", "run", "-S", f"model.architecture={architecture}", *CASES[architecture]],
        root,
        env,
    )
    for stage in ("dataset", "tune", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out, stage
    hparams = json.loads((root / "models/best_hparams.json").read_text())
    assert hparams["architecture"] == architecture
    # Each architecture searched its own space, as params.yaml declares it.
    assert set(hparams["values"]) == set(params["tune"]["search_space"][architecture])
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["test_eer"] <= 1.0

    wav = tmp_path / "upload.wav"
    rng = np.random.default_rng(1)
    sf.write(wav, (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000)
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", "predict", str(wav)]
        + ["--model", f"models:/{model_name}@champion", "--format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)
    assert row["error"] == "" and 0.0 <= float(row["fake_probability"]) <= 1.0
