"""keras-tuner wiring: trials fail loudly, land in MLflow, and the search resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepfake_audio.config.params import parse_params

pytestmark = pytest.mark.slow


def _tiny_model(hp, input_dim: int):
    import keras

    units = hp.Int("units", 2, 4)
    model = keras.Sequential(
        [keras.Input((input_dim,)), keras.layers.Dense(units), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )
    return model


def _data(n: int = 32, dim: int = 5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    return x, y


def test_a_trial_that_raises_fails_the_search(tmp_path: Path, mlflow_server: str) -> None:
    """keras-tuner would record the failure and carry on; we stop with the trial's error."""
    import mlflow
    from keras_tuner.errors import FatalError

    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import tune as tuning

    params = parse_params({"tune": {"max_trials": 3, "objective": "val_accuracy"}})
    tracking.connect("tuning-failure")
    x, y = _data(dim=5)
    # The model expects 4 features, the data has 5: every fit raises.
    tuner = tuning.make_tuner(params, lambda hp: _tiny_model(hp, 4), tmp_path, "p")
    tuner.mlflow_parent_run_id = ""
    tuner.mlflow_tags = {}
    tuner.objective_name = "val_accuracy"
    tuner.experiment_name = "tuning-failure"
    tuner.architecture = "tiny"
    with pytest.raises(FatalError, match="trial 0 failed"):
        tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("tuning-failure")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["trial_id"] == "0"


def test_trials_are_child_runs_and_a_search_resumes(tmp_path: Path, mlflow_server: str) -> None:
    import mlflow

    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import tune as tuning

    tracking.connect("tuning-resume")
    x, y = _data()
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("tuning-resume")

    def search(max_trials: int) -> object:
        params = parse_params({"tune": {"max_trials": max_trials, "objective": "val_accuracy"}})
        tuner = tuning.make_tuner(params, lambda hp: _tiny_model(hp, 5), tmp_path, "p")
        with mlflow.start_run(run_name="parent") as parent:
            tuner.mlflow_parent_run_id = parent.info.run_id
            tuner.mlflow_tags = {"stage": "tune"}
            tuner.objective_name = "val_accuracy"
            tuner.experiment_name = "tuning-resume"
            tuner.architecture = "tiny"
            import keras

            tuner.search(
                x,
                y,
                validation_data=(x, y),
                epochs=1,
                verbose=0,
                callbacks=[keras.callbacks.EarlyStopping(patience=1)],
            )
        return tuner

    tuner = search(2)
    first = client.search_runs([experiment.experiment_id], filter_string="tags.trial_id != ''")
    assert len(first) == 2
    assert all(r.info.status == "FINISHED" and "units" in r.data.params for r in first)
    assert all(client.get_metric_history(r.info.run_id, "val_loss") for r in first)
    # A trial run left RUNNING by a killed stage is closed as KILLED on resume.
    from deepfake_audio.stages.tune import mark_interrupted_trials

    parent_id = first[0].data.tags["mlflow.parentRunId"]
    orphan = client.create_run(experiment.experiment_id, tags={"mlflow.parentRunId": parent_id})
    assert mark_interrupted_trials(parent_id) == [orphan.info.run_id]
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    # Same directory and project, a bigger budget: only the new trial runs.
    tuner = search(3)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.trial_id != ''")
    assert len(runs) == 3
    assert sorted(r.data.tags["trial_id"] for r in runs) == ["0", "1", "2"]
    assert len(tuner.oracle.trials) == 3
