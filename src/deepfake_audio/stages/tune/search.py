"""The tracked tuner: keras-tuner's tuners with every trial an MLflow child run.

One MLflow parent run per search, one child run per trial (hyperparameters as params,
metrics per epoch, the objective, the trial's best model). keras-tuner by default records
a trial that raises as failed and carries on; here a trial that raises stops the search
with its error, because a search whose every trial silently failed (the
tensorflow-cpu/tensorboard trap) is worse than none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_json, write_text
from deepfake_audio.stages.tune.state import (
    check_tuner_state,
    completed_trials,
    corrupt_state_message,
    make_state_writes_atomic,
    skip_completed_retries,
)

OBJECTIVE_DIRECTION = {"val_eer": "min", "val_accuracy": "max", "xcorpus_eer": "min"}
RESUME_HINT = "the search state is saved, rerun `dvc repro` to resume"


def project_name(params: Params, dataset_digest: str) -> str:
    key = {
        "dataset": dataset_digest,
        "seed": params.seed,
        "model": params.section("model"),
        "tune": {
            k: v for k, v in params.section("tune").items() if k not in ("max_trials", "workers")
        },
    }
    # What the training batches are made of changes every trial's result. Added only when in
    # use, so searches begun before these keys existed keep their names (and resume).
    if params.augment.applies_to(params.features.feature_kind):
        key["augment"] = params.section("augment")
    if params.train.class_weight != "none":
        key["class_weight"] = params.train.class_weight
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return "search-" + hashlib.sha256(blob).hexdigest()[:12]


def _tuner_class(kind: str) -> type:
    import keras_tuner as kt

    make_state_writes_atomic()
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
        fit_params: dict[str, Any] = {}  # augment.*, class_weight.*: logged on every trial

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            import mlflow
            from keras_tuner import errors as kt_errors
            from keras_tuner.src.engine import tuner_utils
            from mlflow.tracking import MlflowClient

            from deepfake_audio.ops import tracking
            from deepfake_audio.stages.callbacks import MlflowEpochLogger

            client = MlflowClient()
            values = dict(trial.hyperparameters.values)
            run_id = None
            try:
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
                client.log_batch(
                    run_id,
                    params=[
                        mlflow.entities.Param(k, str(v))
                        for k, v in {
                            **values,
                            "architecture": self.architecture,
                            **self.fit_params,
                        }.items()
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
            except (KeyboardInterrupt, SystemExit):
                _close_run_quietly(run_id, "KILLED")  # the oracle reruns it on resume
                raise
            except Exception as exc:
                if tracking.is_unreachable(exc):
                    # Left RUNNING: the resumed search marks it KILLED and reruns the trial.
                    error = tracking.unreachable(f"trial {trial.trial_id}", RESUME_HINT)
                    tracking.give_up_on_server()
                    raise kt_errors.FatalError(str(error)) from None
                _close_run_quietly(run_id, "FAILED")
                if isinstance(exc, kt_errors.FatalError):
                    raise
                # keras-tuner would swallow this and go on to the next trial.
                raise kt_errors.FatalError(
                    f"trial {trial.trial_id} failed: {type(exc).__name__}: {exc}"
                ) from exc
            # FINISHED once the oracle has recorded the trial (on_trial_end): a kill in
            # between leaves a RUNNING run that the resumed search closes as the oracle says.
            self.__dict__.setdefault("_trial_runs", {})[trial.trial_id] = run_id
            return results

        def on_trial_end(self, trial: Any) -> None:
            from keras_tuner import errors as kt_errors
            from keras_tuner.engine import trial as trial_module
            from mlflow.tracking import MlflowClient

            from deepfake_audio.ops import tracking

            super().on_trial_end(trial)  # the oracle saves trial.json and oracle.json
            run_id = self.__dict__.get("_trial_runs", {}).pop(trial.trial_id, None)
            if run_id is None:
                return
            done = trial.status == trial_module.TrialStatus.COMPLETED
            try:
                MlflowClient().set_terminated(run_id, status="FINISHED" if done else "FAILED")
            except Exception as exc:
                if not tracking.is_unreachable(exc):
                    raise
                error = tracking.unreachable(f"trial {trial.trial_id}", RESUME_HINT)
                tracking.give_up_on_server()
                raise kt_errors.FatalError(str(error)) from None

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
    from deepfake_audio.ops import runtime

    if len(runtime.gpus()) > 1:  # every trial trains on all GPUs of this process
        common["distribution_strategy"] = runtime.strategy()
    cls = _tuner_class(params.tune.tuner)
    if params.tune.tuner == "hyperband":
        return cls(
            build_fn, max_epochs=params.tune.epochs, factor=3, hyperband_iterations=1, **common
        )
    return cls(build_fn, max_trials=params.tune.max_trials, **common)


class Search:
    """What every role of a search shares: the data, its digest, the project, the tuner."""

    def __init__(self, params: Params, dataset_dir: Path, tuner_dir: Path) -> None:
        from deepfake_audio.dataset.shards import SpectrogramDataset
        from deepfake_audio.models import network
        from deepfake_audio.ops import runtime, tracking

        tracking.connect(params.mlflow.experiment_name)
        self.device = runtime.configure(params.seed)
        self.params, self.dataset_dir, self.tuner_dir = params, dataset_dir, tuner_dir
        self.data = SpectrogramDataset(dataset_dir)
        self.digest = tracking.directory_digest(dataset_dir)
        self.project = project_name(params, self.digest)
        self.project_dir = Path(tuner_dir) / self.project
        check_tuner_state(self.project_dir)
        self.tags = tracking.run_tags(self.digest, stage="tune")
        data = self.data
        self.build_fn = network.hypermodel(
            params, data.input_shape, data.mean, data.std, data.norm_axis, data.features
        )

    def fit_params(self) -> dict[str, Any]:
        """The flat augment.* and class_weight.* params of this search's training batches."""
        from deepfake_audio.dataset.train_batches import class_weights, log_params, source_targets

        weights = class_weights(source_targets(self.data), self.params.train.class_weight)
        return log_params(self.params.augment, self.data.features.feature_kind, weights)

    def tuner(self, parent_run_id: str = "") -> Any:
        from keras_tuner.src.distribute import utils as dist_utils

        params = self.params
        # keras-tuner reloads a search only when this process's own tuner file
        # (tuner0.json, chief.json: an empty state) exists, else builds one model up
        # front and starts the oracle over. A search begun with another tune.workers
        # lacks it: write it, so the oracle - kept in oracle.json - carries on.
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
        tuner_file = self.project_dir / f"{tuner_id}.json"
        holds_oracle = not dist_utils.has_chief_oracle() or dist_utils.is_chief_oracle()
        oracle_file = self.project_dir / "oracle.json"
        if holds_oracle and oracle_file.is_file() and not tuner_file.exists():
            write_text(tuner_file, "{}")
        resuming = tuner_file.exists()
        try:
            tuner = make_tuner(params, self.build_fn, self.tuner_dir, self.project)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if resuming:
                raise UserError(
                    corrupt_state_message(
                        self.project_dir, self.project_dir, f"{type(exc).__name__}: {first}"
                    )
                ) from None
            if not isinstance(exc, (ValueError, TypeError)):
                raise
            raise UserError(
                f"tune: model.architecture {params.model.architecture!r} cannot be built for "
                f"input {self.data.input_shape} with this search space: {first}"
            ) from None
        skip_completed_retries(tuner.oracle)
        tuner.mlflow_parent_run_id = parent_run_id
        tuner.mlflow_tags = self.tags
        tuner.objective_name = params.tune.objective
        tuner.experiment_name = params.mlflow.experiment_name
        tuner.architecture = params.model.architecture
        return tuner

    def search(self, tuner: Any) -> None:
        from keras_tuner import errors as kt_errors

        from deepfake_audio.dataset.train_batches import training_input
        from deepfake_audio.stages.callbacks import selection_input, standard_callbacks

        params, data = self.params, self.data
        # Augmented or plain training batches and class weights (validation is never augmented).
        fit_input = training_input(data, params)
        tuner.fit_params = fit_input.params
        train = fit_input.dataset
        val = data.tf_dataset("validation", params.tune.batch_size)
        callbacks = standard_callbacks(
            params, val, data.labels("validation"), selection_input(params, data)
        )
        try:
            tuner.search(
                train,
                validation_data=val,
                epochs=params.tune.epochs,
                callbacks=callbacks,
                verbose=int(os.environ.get("DEEPFAKE_AUDIO_VERBOSE", "2")),
                shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
                class_weight=fit_input.class_weight,
            )
        except kt_errors.FatalError as exc:
            raise UserError(f"tune: {str(exc).strip().splitlines()[0]}") from None

    @contextlib.contextmanager
    def parent_run(self) -> Iterator[Any]:
        """The search's MLflow parent run, resumed when the search is.

        On the way out it is FINISHED, FAILED, or KILLED (Ctrl-C, SIGTERM), and
        trial runs the stage's processes left RUNNING are closed at once; with the
        server gone none of that is attempted (the next run does it).
        """
        import mlflow

        from deepfake_audio.ops import tracking

        params = self.params
        parent_file = self.project_dir / "mlflow_parent_run_id"
        parent_id = _resume_parent(parent_file)
        parent = mlflow.start_run(
            run_id=parent_id, run_name=None if parent_id else f"tune-{self.project}"
        )
        try:
            if parent_id is None:
                write_text(parent_file, parent.info.run_id)
            mlflow.set_tags({**self.tags, "search": self.project, "tuner": params.tune.tuner})
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
                    **self.fit_params(),
                }
            )
            mlflow.log_metric("max_trials", params.tune.max_trials)
            mlflow.log_metric("workers", params.tune.workers)
            tracking.log_dataset_input(self.dataset_dir, self.digest, context="tuning")
            mark_interrupted_trials(parent.info.run_id, completed_trials(self.project_dir))
            yield parent
        except BaseException as exc:
            _close_parent(exc, parent.info.run_id, self.project_dir)
            raise
        mlflow.end_run()

    def result(self, tuner: Any, parent_run_id: str, out: Path) -> dict[str, Any]:
        import mlflow

        params = self.params
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
            "search": self.project,
            "architecture": params.model.architecture,
            "mlflow_parent_run_id": parent_run_id,
        }
        mlflow.log_metric(f"best_{params.tune.objective}", float(trial.score))
        mlflow.log_metric("trials_completed", len(completed))
        write_json(out, result)
        mlflow.log_artifact(str(out))
        print(
            f"best trial {trial.trial_id}: {params.tune.objective} = {trial.score:.4f} "
            f"({len(completed)} trials completed)",
            file=sys.stderr,
        )
        return result


def mark_interrupted_trials(parent_run_id: str, completed: Iterable[str] = ()) -> list[str]:
    """Close the trial runs of this search that a killed stage left RUNNING; their ids.

    keras-tuner reruns an interrupted trial under the same id, and its old MLflow run
    would otherwise stay RUNNING forever next to the new one: it becomes KILLED. A run
    whose trial the oracle had recorded as done (`completed`: the stage died between
    the two bookkeepings) becomes FINISHED instead - its metrics and model are logged,
    and keras-tuner will not run that trial again.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=50000,
    )
    finished = {r.data.tags.get("trial_id") for r in children if r.info.status == "FINISHED"}
    completed = set(completed)
    closed = []
    for run in children:
        if run.info.status != "RUNNING":
            continue
        trial_id = run.data.tags.get("trial_id")
        done = trial_id in completed and trial_id not in finished
        if done:
            finished.add(trial_id)
        client.set_terminated(run.info.run_id, status="FINISHED" if done else "KILLED")
        closed.append(run.info.run_id)
    return closed


def _close_run_quietly(run_id: str | None, status: str) -> None:
    """Best effort: the error that got us here is the one the user needs to see."""
    if run_id is None:
        return
    from mlflow.tracking import MlflowClient

    with contextlib.suppress(Exception):
        MlflowClient().set_terminated(run_id, status=status)


def _close_parent(exc: BaseException, parent_run_id: str, project_dir: Path) -> None:
    """End the search's parent run after `exc`, never masking it."""
    import mlflow

    from deepfake_audio.ops import tracking
    from deepfake_audio.ops.server import is_healthy

    uri = tracking.tracking_uri()
    gone = tracking.is_unreachable(exc) or (
        uri.startswith(("http://", "https://")) and not is_healthy(uri, timeout=3.0)
    )
    if gone:
        tracking.give_up_on_server()  # ending the run below fails at once
    else:
        with contextlib.suppress(Exception):  # workers stopped mid-trial
            mark_interrupted_trials(parent_run_id, completed_trials(project_dir))
    status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
    with contextlib.suppress(Exception):
        mlflow.end_run(status)


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
