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

Faults. keras-tuner's state files are written to a temporary name and renamed,
so a kill -9 or Ctrl-C never leaves half a file; if one is damaged anyway the
stage stops with one line naming it (delete the project folder to restart the
search, or restore it). A trial's MLflow run turns FINISHED only after the oracle
has recorded the trial, and a resumed search closes what a killed one left
RUNNING: FINISHED if the oracle had recorded the trial, KILLED if it reruns it.
MLflow requests ride out a server restart (tracking.HTTP_RETRY_DEFAULTS); a
server that stays away longer fails the stage with one line, the search state
saved. Ctrl-C or SIGTERM ends every chief and worker the stage started, and they
end themselves if it is killed outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_json, write_text
from deepfake_audio.core.params import Params

OBJECTIVE_DIRECTION = {"val_eer": "min", "val_accuracy": "max"}
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
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return "search-" + hashlib.sha256(blob).hexdigest()[:12]


def _tuner_class(kind: str) -> type:
    import keras_tuner as kt

    _make_state_writes_atomic()
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


def run(
    params: Params,
    dataset_dir: Path,
    tuner_dir: Path,
    out: Path,
    params_path: Path = Path("params.yaml"),
) -> dict[str, Any]:
    """Run (or resume) the search and write the best hyperparameters to `out`.

    Three ways in: one process (`tune.workers: 1`); a launcher that starts a
    keras-tuner chief and `tune.workers` workers on this machine; or, when
    `KERASTUNER_TUNER_ID` is already set (by us or by you, on other machines),
    one chief or worker of keras-tuner's own distributed mode.
    """
    from deepfake_audio.ops import tracking

    try:
        if os.environ.get("KERASTUNER_TUNER_ID"):
            _run_role(params, dataset_dir, tuner_dir)
            return {}
        with _sigterm_as_exit():  # so the clean-up below runs on SIGTERM as on Ctrl-C
            if params.tune.workers > 1:
                return _run_distributed(params, dataset_dir, tuner_dir, out, params_path)
            return _run_single(params, dataset_dir, tuner_dir, out)
    except Exception as exc:
        # Outside a trial (opening the parent run, the final report): the same one line.
        if isinstance(exc, UserError) or not tracking.is_unreachable(exc):
            raise
        error = tracking.unreachable("the tune stage", RESUME_HINT)
        tracking.give_up_on_server()
        raise error from None


class _Search:
    """What every role of a search shares: the data, its digest, the project, the tuner."""

    def __init__(self, params: Params, dataset_dir: Path, tuner_dir: Path) -> None:
        from deepfake_audio import models
        from deepfake_audio.core.shards import SpectrogramDataset
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
        self.build_fn = models.hypermodel(
            params, self.data.input_shape, self.data.mean, self.data.std, self.data.norm_axis
        )

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
                    _corrupt_state(
                        self.project_dir, self.project_dir, f"{type(exc).__name__}: {first}"
                    )
                ) from None
            if not isinstance(exc, (ValueError, TypeError)):
                raise
            raise UserError(
                f"tune: model.architecture {params.model.architecture!r} cannot be built for "
                f"input {self.data.input_shape} with this search space: {first}"
            ) from None
        _skip_completed_retries(tuner.oracle)
        tuner.mlflow_parent_run_id = parent_run_id
        tuner.mlflow_tags = self.tags
        tuner.objective_name = params.tune.objective
        tuner.experiment_name = params.mlflow.experiment_name
        tuner.architecture = params.model.architecture
        return tuner

    def search(self, tuner: Any) -> None:
        from keras_tuner import errors as kt_errors

        from deepfake_audio.stages.callbacks import standard_callbacks

        params, data = self.params, self.data
        train = data.tf_dataset("train", params.tune.batch_size, shuffle=True, seed=params.seed)
        val = data.tf_dataset("validation", params.tune.batch_size)
        callbacks = standard_callbacks(params, val, data.labels("validation"))
        try:
            tuner.search(
                train,
                validation_data=val,
                epochs=params.tune.epochs,
                callbacks=callbacks,
                verbose=int(os.environ.get("DEEPFAKE_AUDIO_VERBOSE", "2")),
                shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
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


def _run_single(params: Params, dataset_dir: Path, tuner_dir: Path, out: Path) -> dict[str, Any]:
    search = _Search(params, dataset_dir, tuner_dir)
    with search.parent_run() as parent:
        tuner = search.tuner(parent.info.run_id)
        search.search(tuner)
        return search.result(tuner, parent.info.run_id, out)


def _run_role(params: Params, dataset_dir: Path, tuner_dir: Path) -> None:
    """One process of keras-tuner's distributed mode, as its environment says.

    The chief serves the oracle (and keeps its state in the tuner directory);
    a worker asks it for trials until the search is over. Worker trial runs
    hang under the parent run named by `DEEPFAKE_AUDIO_TUNE_PARENT_RUN`.
    """
    _die_with_launcher()
    search = _Search(params, dataset_dir, tuner_dir)
    tuner = search.tuner(os.environ.get("DEEPFAKE_AUDIO_TUNE_PARENT_RUN", ""))
    search.search(tuner)


def _gpu_ids() -> list[str]:
    """The GPUs a worker may be pinned to: those CUDA_VISIBLE_DEVICES allows, or all."""
    from deepfake_audio.ops import runtime

    count = len(runtime.gpus())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:count]
    return [str(i) for i in range(count)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, chief: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chief.poll() is not None:
            raise UserError(f"tune: the keras-tuner chief exited early: {_last_line(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise UserError(f"tune: the keras-tuner chief did not listen on port {port} (log: {log})")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1].strip().removeprefix("deepfake-audio: error: ")


def _run_distributed(
    params: Params, dataset_dir: Path, tuner_dir: Path, out: Path, params_path: Path
) -> dict[str, Any]:
    """keras-tuner's distributed mode on this machine: one chief, `tune.workers` workers.

    Each worker is this same stage with `KERASTUNER_TUNER_ID` set; with GPUs each
    gets one (`CUDA_VISIBLE_DEVICES`, round robin), on a CPU each gets its share of
    the cores. A worker that fails stops the search with its error.
    """
    search = _Search(params, dataset_dir, tuner_dir)
    n = params.tune.workers
    gpu_ids = _gpu_ids()
    port = _free_port()
    logs = Path(tuner_dir) / search.project / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "deepfake_audio.cli",
        "--params",
        str(params_path),
        "tune",
        "--dataset",
        str(dataset_dir),
        "--tuner-dir",
        str(tuner_dir),
        "--out",
        str(out),
    ]
    with search.parent_run() as parent:
        base = {
            **os.environ,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
            "DEEPFAKE_AUDIO_TUNE_PARENT_RUN": parent.info.run_id,
            "DEEPFAKE_AUDIO_TUNE_LAUNCHER_PID": str(os.getpid()),
        }
        procs: dict[str, tuple[subprocess.Popen, Path]] = {}

        def spawn(tuner_id: str, extra: dict[str, str]) -> None:
            log = logs / f"{tuner_id}.log"
            with open(log, "w") as handle:
                proc = subprocess.Popen(
                    command,
                    env={**base, "KERASTUNER_TUNER_ID": tuner_id, **extra},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            procs[tuner_id] = (proc, log)

        try:
            spawn("chief", {"CUDA_VISIBLE_DEVICES": ""})  # the oracle needs no GPU
            _wait_for_port(port, procs["chief"][0], procs["chief"][1], timeout=300)
            share = max(1, (os.cpu_count() or 1) // n)
            for i in range(n):
                if gpu_ids:
                    extra = {"CUDA_VISIBLE_DEVICES": gpu_ids[i % len(gpu_ids)]}
                else:
                    extra = {"TF_NUM_INTRAOP_THREADS": str(share), "OMP_NUM_THREADS": str(share)}
                spawn(f"tuner{i}", extra)
            where = f"GPU {', '.join(gpu_ids)}" if gpu_ids else f"{share} CPU threads each"
            print(
                f"tune: keras-tuner chief on 127.0.0.1:{port} + {n} workers ({where}); "
                f"logs in {logs}",
                file=sys.stderr,
            )
            _wait_for_workers(procs)
        finally:
            for proc, _ in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc, _ in procs.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        # The chief kept the oracle's state on disk; reloading it here gives the best trial.
        return search.result(search.tuner(parent.info.run_id), parent.info.run_id, out)


def _wait_for_workers(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Until every worker has exited 0; the first failure (chief's too) stops the search."""
    workers = {k: v for k, v in procs.items() if k != "chief"}
    chief, chief_log = procs["chief"]
    while True:
        codes = {k: proc.poll() for k, (proc, _) in workers.items()}
        failed = [k for k, code in codes.items() if code not in (None, 0)]
        if failed:
            name = failed[0]
            log = workers[name][1]
            raise UserError(f"tune: worker {name} failed: {_last_line(log)} (log: {log})")
        if all(code == 0 for code in codes.values()):
            return
        if chief.poll() not in (None, 0):
            raise UserError(f"tune: the keras-tuner chief failed: {_last_line(chief_log)}")
        time.sleep(1)


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


def completed_trials(project_dir: Path) -> set[str]:
    """Ids of the trials keras-tuner's saved state records as COMPLETED."""
    done = set()
    for path in Path(project_dir).glob("trial_*/trial.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # check_tuner_state reports it
        if isinstance(state, dict) and state.get("status") == "COMPLETED":
            done.add(str(state.get("trial_id")))
    return done


def check_tuner_state(project_dir: Path) -> None:
    """Stop with one line when a file keras-tuner would reload cannot be read.

    The oracle (`oracle.json`), one file per tuner process (`tuner0.json`,
    `chief.json`, ...) and each trial (`trial_*/trial.json`, `build_config.json`) are
    JSON; keras-tuner itself would fail on a damaged one with a traceback, or worse,
    report it as a model that cannot be built.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        return
    for path in sorted([*project_dir.glob("*.json"), *project_dir.glob("trial_*/*.json")]):
        try:
            text = path.read_text()
            if not text.strip():
                raise UserError(_corrupt_state(path, project_dir, "empty file"))
            json.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(_corrupt_state(path, project_dir, type(exc).__name__)) from None
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON: {exc}"
            raise UserError(_corrupt_state(path, project_dir, reason)) from None


def _corrupt_state(path: Path, project_dir: Path, reason: str) -> str:
    return (
        f"tune: {path}: keras-tuner state is corrupted ({reason}); delete {project_dir} to "
        "restart this search from scratch (its finished trials stay in MLflow), "
        "or restore that folder from a backup"
    )


def _skip_completed_retries(oracle: Any) -> None:
    """A trial saved COMPLETED but still listed as ongoing in oracle.json is not rerun.

    keras-tuner writes trial.json before oracle.json when a trial ends; a stage killed
    between the two would otherwise run that finished trial again on resume.
    """
    from keras_tuner.engine import trial as trial_module

    queue = getattr(oracle, "_retry_queue", None)
    if not queue:
        return  # a worker's oracle client, or nothing to retry
    for trial_id in list(queue):
        trial = oracle.trials.get(trial_id)
        if trial is not None and trial.status == trial_module.TrialStatus.COMPLETED:
            queue.remove(trial_id)
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)


_KERAS_TUNER_SAVE_JSON: Any = None


def _make_state_writes_atomic() -> None:
    """keras-tuner's JSON state files written to a temporary name, then renamed.

    keras-tuner truncates and rewrites oracle.json and trial.json in place, so a
    kill -9 or Ctrl-C at the wrong moment leaves an empty or half file and a search
    that cannot resume. Its one writer, `keras_tuner.src.utils.save_json`, is replaced
    for local paths (a remote tuner directory, gs://..., keeps keras-tuner's own).
    """
    global _KERAS_TUNER_SAVE_JSON
    from keras_tuner.src import utils as kt_utils

    if _KERAS_TUNER_SAVE_JSON is not None:
        return
    _KERAS_TUNER_SAVE_JSON = kt_utils.save_json

    def save_json(path: Any, obj: Any) -> str:
        if "://" in str(path):
            return _KERAS_TUNER_SAVE_JSON(path, obj)
        text = json.dumps(obj)
        write_text(Path(path), text)
        return text

    kt_utils.save_json = save_json


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


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) here, so `finally` clean-up runs as on Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _die_with_launcher() -> None:
    """A chief or worker our launcher started ends with it, even when it is killed -9.

    Linux delivers SIGTERM to this process when its parent dies (PR_SET_PDEATHSIG);
    if the launcher is already gone, this process stops here.
    """
    launcher = os.environ.get("DEEPFAKE_AUDIO_TUNE_LAUNCHER_PID", "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):
        raise UserError("tune: the stage that started this tuner process is gone")


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
