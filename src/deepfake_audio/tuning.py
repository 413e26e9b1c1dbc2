"""The tune stage: keras-tuner over params.yaml's search space, every trial in MLflow.

One MLflow parent run per search, one child run per trial (hyperparameters as
params, metrics per epoch, the objective, the trial's best model). keras-tuner
by default records a trial that raises as failed and carries on; here a trial
that raises stops the search with its error, because a search whose every
trial silently failed (the tensorflow-cpu/tensorboard trap) is worse than none.

The tuner directory is a persistent DVC output: an interrupted search resumes
where it stopped. Its project name is a hash of everything that makes trials
comparable (data, features, architecture, search space, budget per trial), so
changing any of those starts a fresh search, while raising
`tune.max_trials` continues the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from deepfake_audio.errors import UserError
from deepfake_audio.params import Params

OBJECTIVE_DIRECTION = {"val_eer": "min", "val_accuracy": "max"}


def project_name(params: Params, dataset_digest: str) -> str:
    key = {
        "dataset": dataset_digest,
        "seed": params.seed,
        "model": params.section("model"),
        "tune": {
            k: v for k, v in params.section("tune").items() if k not in ("max_trials", "workers")
        },
    }
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return "search-" + hashlib.sha256(blob).hexdigest()[:12]


def _tuner_class(kind: str) -> type:
    import keras_tuner as kt

    base = {
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[kind]

    class TrackedTuner(base):  # type: ignore[misc, valid-type]
        """A keras-tuner tuner whose trials are MLflow child runs and fail loudly."""

        mlflow_parent_run_id: str = ""
        mlflow_tags: dict[str, str] = {}
        objective_name: str = "val_eer"

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            import mlflow
            from keras_tuner import errors as kt_errors
            from keras_tuner.src.engine import tuner_utils
            from mlflow.tracking import MlflowClient

            from deepfake_audio import tracking
            from deepfake_audio.callbacks import MlflowEpochLogger

            client = MlflowClient()
            values = dict(trial.hyperparameters.values)
            run = client.create_run(
                experiment_id=mlflow.get_experiment_by_name(self.experiment_name).experiment_id,
                run_name=f"trial-{trial.trial_id}",
                tags={
                    **self.mlflow_tags,
                    "mlflow.parentRunId": self.mlflow_parent_run_id,
                    "trial_id": str(trial.trial_id),
                    "tuner_id": str(self.tuner_id),
                    "search": self.project_name,
                },
            )
            run_id = run.info.run_id
            try:
                client.log_batch(
                    run_id,
                    params=[
                        mlflow.entities.Param(k, str(v))
                        for k, v in {**values, "architecture": self.architecture}.items()
                    ],
                )
                callbacks = list(kwargs.pop("callbacks", []))
                callbacks.insert(1, MlflowEpochLogger(run_id))
                results = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)
                summary = tuner_utils.convert_to_metrics_dict(results, self.oracle.objective)
                objective = float(summary[self.objective_name])
                client.log_metric(run_id, "objective", objective)
                client.log_metric(run_id, f"best_{self.objective_name}", objective)
                # The search's parent run is the active one; reopen the child beside it.
                with mlflow.start_run(run_id=run_id, nested=True):
                    tracking.log_keras_model(self.load_model(trial))
            except Exception as exc:
                client.set_terminated(run_id, status="FAILED")
                if isinstance(exc, kt_errors.FatalError):
                    raise
                # keras-tuner would swallow this and go on to the next trial.
                raise kt_errors.FatalError(
                    f"trial {trial.trial_id} failed: {type(exc).__name__}: {exc}"
                ) from exc
            client.set_terminated(run_id, status="FINISHED")
            return results

    TrackedTuner.__name__ = f"Tracked{base.__name__}"
    return TrackedTuner


def make_tuner(params: Params, build_fn: Any, directory: Path, project: str) -> Any:
    import keras_tuner as kt

    objective = kt.Objective(
        params.tune.objective, direction=OBJECTIVE_DIRECTION[params.tune.objective]
    )
    common = {
        "objective": objective,
        "directory": str(directory),
        "project_name": project,
        "overwrite": False,
        "seed": params.seed,
        "executions_per_trial": params.tune.executions_per_trial,
    }
    cls = _tuner_class(params.tune.tuner)
    if params.tune.tuner == "hyperband":
        return cls(
            build_fn, max_epochs=params.tune.epochs, factor=3, hyperband_iterations=1, **common
        )
    return cls(build_fn, max_trials=params.tune.max_trials, **common)


def run(params: Params, dataset_dir: Path, tuner_dir: Path, out: Path) -> dict[str, Any]:
    """Run (or resume) the search and write the best hyperparameters to `out`."""
    import mlflow

    from deepfake_audio import models, runtime, tracking
    from deepfake_audio.callbacks import standard_callbacks
    from deepfake_audio.dataset import SpectrogramDataset

    if params.tune.workers != 1:
        raise UserError(
            "tune.workers: only 1 is supported in this version (distributed keras-tuner is planned)"
        )
    tracking.connect(params.mlflow.experiment_name)
    runtime.configure(params.seed)
    data = SpectrogramDataset(dataset_dir)
    digest = tracking.directory_digest(dataset_dir)
    project = project_name(params, digest)
    build_fn = models.hypermodel(params, data.input_shape, data.mean, data.std, data.norm_axis)
    tuner = make_tuner(params, build_fn, tuner_dir, project)
    tags = tracking.run_tags(digest, stage="tune")

    parent_file = Path(tuner_dir) / project / "mlflow_parent_run_id"
    parent_id = _resume_parent(parent_file)
    with mlflow.start_run(
        run_id=parent_id, run_name=None if parent_id else f"tune-{project}"
    ) as parent:
        if parent_id is None:
            parent_file.parent.mkdir(parents=True, exist_ok=True)
            parent_file.write_text(parent.info.run_id)
        mlflow.set_tags({**tags, "search": project, "tuner": params.tune.tuner})
        # Everything here is fixed for a search (it is in the project hash), so a
        # resumed search logs the same values; max_trials may grow, so it is a metric.
        mlflow.log_params(
            {
                "tuner": params.tune.tuner,
                "objective": params.tune.objective,
                "executions_per_trial": params.tune.executions_per_trial,
                "epochs": params.tune.epochs,
                "batch_size": params.tune.batch_size,
                "architecture": params.model.architecture,
            }
        )
        mlflow.log_metric("max_trials", params.tune.max_trials)
        tracking.log_dataset_input(dataset_dir, digest, context="tuning")
        mark_interrupted_trials(parent.info.run_id)
        tuner.mlflow_parent_run_id = parent.info.run_id
        tuner.mlflow_tags = tags
        tuner.objective_name = params.tune.objective
        tuner.experiment_name = params.mlflow.experiment_name
        tuner.architecture = params.model.architecture

        train = data.tf_dataset("train", params.tune.batch_size, shuffle=True, seed=params.seed)
        val = data.tf_dataset("validation", params.tune.batch_size)
        callbacks = standard_callbacks(params, val, data.labels("validation"))
        tuner.search(
            train,
            validation_data=val,
            epochs=params.tune.epochs,
            callbacks=callbacks,
            verbose=int(os.environ.get("DEEPFAKE_AUDIO_VERBOSE", "2")),
            shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
        )
        best = tuner.oracle.get_best_trials(1)
        if not best:
            raise UserError("the search finished without a single completed trial")
        trial = best[0]
        completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
        result = {
            "values": dict(trial.hyperparameters.values),
            "trial_id": trial.trial_id,
            "objective": params.tune.objective,
            "objective_value": float(trial.score),
            "trials_completed": len(completed),
            "search": project,
            "architecture": params.model.architecture,
            "mlflow_parent_run_id": parent.info.run_id,
        }
        mlflow.log_metric(f"best_{params.tune.objective}", float(trial.score))
        mlflow.log_metric("trials_completed", len(completed))
        tracking.write_json(out, result)
        mlflow.log_artifact(str(out))
    print(
        f"best trial {trial.trial_id}: {params.tune.objective} = {trial.score:.4f} "
        f"({len(completed)} trials completed)",
        file=sys.stderr,
    )
    return result


def mark_interrupted_trials(parent_run_id: str) -> list[str]:
    """Trial runs of this search left RUNNING by a killed stage become KILLED.

    keras-tuner reruns an interrupted trial under the same id; its old MLflow
    run would otherwise stay RUNNING forever next to the new one.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    stale = client.search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
        ),
    )
    for run in stale:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def _resume_parent(path: Path) -> str | None:
    """The parent run of an interrupted search, if it still exists on the server."""
    if not path.exists():
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run_id = path.read_text().strip()
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        return None
    return run_id
