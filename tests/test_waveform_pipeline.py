"""End to end: `dvc exp run -S features.kind=waveform` through every stage, with training
augmentation on (codec copies, random windows, noise, RawBoost), against a real MLflow
server; the registered model then scores raw audio through its pyfunc."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env

pytestmark = pytest.mark.slow

SMALL = {
    "seed": 11,
    "data": {"demo": {"train_clips": 24, "validation_clips": 16, "test_clips": 16}},
    "features": {"clip_seconds": 0.5, "max_seconds": 1.0, "workers": 2},
    "tune": {
        "max_trials": 1,
        "epochs": 2,
        "batch_size": 8,
        "search_space": {
            "wave_cnn": {
                "filters_1": [8],
                "filters_2": [8],
                "kernel_size_1": [3],
                "kernel_size_2": [3],
                "dense_units": [8],
                "learning_rate": {"min": 1.0e-4, "max": 1.0e-3, "sampling": "log"},
                "optimizer": ["adam"],
            },
        },
    },
    "train": {"epochs": 2},
    "augment": {
        "enabled": True,
        "random_crop": True,
        "noise_p": 0.5,
        "rawboost_p": 0.5,
        "rawboost_algo": 5,
        "codecs": ["mp3", "ogg"],
        "codec_copies": 1,
    },
    "baseline": {"components": 4, "max_frames": 2000},
}


def test_waveform_kind_runs_end_to_end(tmp_path: Path, mlflow_server: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    experiment, model_name = f"wave-{tag}", f"wave-model-{tag}"
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {
            **SMALL,
            "mlflow": {"experiment_name": experiment},
            "registry": {"model_name": model_name},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(mlflow_server)
    commit_project(root, env)
    out = run_command(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "features.kind=waveform",
            "-S",
            "model.architecture=wave_cnn",
        ],
        root,
        env,
    )
    for stage in ("dataset", "baseline", "tune", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out, stage
    # `dvc exp run` restores the workspace to the experiment's results.
    stats = json.loads((root / "data/spectrograms/stats.json").read_text())
    assert stats["features"]["kind"] == "waveform" and stats["shard_dtype"] == "int16"
    assert stats["input_shape"] == [8000, 1] and stats["train_waves"]["samples"] == 16000
    assert stats["codec_copies"] == 24  # one per training clip
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["test_eer"] <= 1.0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    train = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert len(train) == 1
    logged = train[0].data.params
    assert logged["features.kind"] == "waveform" and logged["architecture"] == "wave_cnn"
    assert logged["augment.enabled"] == "True" and logged["augment.rawboost_algo"] == "5"
    assert logged["augment.codecs"] == "['mp3', 'ogg']"
    assert logged["class_weight.bonafide"] == "1.0"
    assert "best_epoch" in train[0].data.metrics
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert trials and all(t.data.params["augment.noise_p"] == "0.5" for t in trials)

    # The registered model scores a raw recording through its pyfunc, no project code needed.
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    version = json.loads((root / "reports/registry.json").read_text())["version"]
    served = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    rng = np.random.default_rng(0)
    wav = tmp_path / "upload.wav"
    sf.write(wav, (0.1 * rng.standard_normal(22050)).astype(np.float32), 22050)
    scores = served.predict(pd.DataFrame({"path": [str(wav)]}))
    assert scores["error"][0] == "" and 0.0 <= float(scores["fake_probability"][0]) <= 1.0
    keras_model = mlflow.keras.load_model(f"models:/{model_name}/{version}")
    assert keras_model.input_shape[1:] == (8000, 1)
