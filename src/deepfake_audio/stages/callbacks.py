"""Keras callbacks shared by the tune and train stages.

keras-tuner deep-copies the callbacks of a search once per execution; these
callbacks hold a tf.data pipeline or an MLflow run, which must be shared, not
copied, so each defines `__deepcopy__` to hand out a fresh instance over the
same underlying objects.
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

from deepfake_audio.scoring.eer import compute_eer


def validation_eer(scores: np.ndarray, targets: np.ndarray) -> float:
    """EER of bona fide (1) vs spoof (0) scores; 0.5 when the scores carry no ranking.

    A freshly initialised or collapsed network can emit one constant score (or
    NaN after divergence); that is a bad trial, not a crash: it gets the EER of
    a coin (0.5) or the worst possible (1.0) for NaN, so the tuner ranks it last.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        return 1.0
    try:
        eer, _ = compute_eer(scores[targets == 1], scores[targets == 0])
    except ValueError:
        return 0.5
    return float(eer)


class ValidationEER(keras.callbacks.Callback):
    """Adds `val_eer` (the field's metric) to the epoch logs, before anything reads them.

    Put it first in the callback list: EarlyStopping, keras-tuner's objective
    tracking and the MLflow logger then all see `val_eer` like any Keras metric.

    With `selection` (`selection_input`: the dataset, targets and corpus names of the
    data.corpora of role `select`, held out of training) it adds `xcorpus_eer` too: the mean
    over those corpora of each one's EER, what `tune.objective: xcorpus_eer` (and early
    stopping, the kept epoch) select on, so that choices favour a model that transfers to
    corpora it never trained on. The `eval` corpora, which the reported `xcorpus_eer` of
    reports/metrics.json averages, are never seen here. A mean of per-corpus EERs, not one
    pooled EER: corpora differ in size and prior, and a pooled number would mostly measure
    the largest.
    """

    def __init__(
        self,
        dataset: Any,
        targets: np.ndarray,
        selection: tuple[Any, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.targets = np.asarray(targets)
        self.selection = selection

    def __deepcopy__(self, memo: dict) -> ValidationEER:
        return ValidationEER(self.dataset, self.targets, self.selection)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = self.model.predict(self.dataset, verbose=0)
        if logs is not None:
            logs["val_eer"] = validation_eer(scores, self.targets)
        if self.selection is not None and logs is not None:
            dataset, targets, corpora = self.selection
            held_out = np.asarray(self.model.predict(dataset, verbose=0)).ravel()
            logs["xcorpus_eer"] = selection_eer(held_out, np.asarray(targets), corpora)


def selection_eer(scores: np.ndarray, targets: np.ndarray, corpora: np.ndarray) -> float:
    """The mean over corpora of each one's `validation_eer` (`corpora`: each clip's name)."""
    names = np.asarray(corpora).astype(str)
    return float(
        np.mean(
            [
                validation_eer(scores[names == name], targets[names == name])
                for name in dict.fromkeys(names.tolist())
            ]
        )
    )


# The dataset split of the `select` corpora (sources.HELDOUT_SPLITS["select"]).
SELECT_SPLIT = "xcorpus_select"


def selection_input(
    params: Any, data: Any, objective: bool = True
) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """(dataset, targets, corpora) of the select corpora when a setting reads xcorpus_eer:
    the early-stopping or learning-rate monitor, and with `objective` (tune) the objective."""
    es, rl = params.tune.early_stopping, params.tune.reduce_lr
    read = (es.monitor, rl.monitor, *((params.tune.objective,) if objective else ()))
    if "xcorpus_eer" not in read:
        return None
    if not data.has_split(SELECT_SPLIT):
        from deepfake_audio.core.errors import UserError

        raise UserError(
            "tune.objective: xcorpus_eer needs the dataset's select corpora (data.corpora "
            "role: select), which it does not hold; rerun `dvc repro dataset`"
        )
    manifest = data.manifest(SELECT_SPLIT)
    return (
        data.tf_dataset(SELECT_SPLIT, params.tune.batch_size),
        manifest["target"].to_numpy(),
        manifest["corpus"].astype(str).to_numpy(),
    )


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to one MLflow run; executions continue the step count.

    A server that went away stops training with `tracking.ServerUnreachable` once
    MLflow's retries run out, rather than training on with nowhere to log.
    """

    def __init__(self, run_id: str, state: dict | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.state = state if state is not None else {"step": 0}

    def __deepcopy__(self, memo: dict) -> MlflowEpochLogger:
        return MlflowEpochLogger(self.run_id, self.state)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        metrics = {}
        for name, value in (logs or {}).items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                metrics[name] = number
        try:
            metrics["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )
        except (AttributeError, TypeError, ValueError):
            pass
        if metrics:
            from deepfake_audio.ops import tracking

            now = int(time.time() * 1000)
            step = self.state["step"]
            # Blocks while MLflow retries (a server restart: training waits, nothing is
            # lost); past tracking.server_wait_s() it gives up with one line.
            try:
                MlflowClient().log_batch(
                    self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()]
                )
            except Exception as exc:
                if not tracking.is_unreachable(exc):
                    raise
                error = tracking.unreachable(f"epoch {epoch + 1}")
                tracking.give_up_on_server()
                raise error from None
        self.state["step"] += 1


# Step metrics: on a validation split of N clips they take few values, so epochs tie.
STEP_METRICS = ("val_eer", "val_accuracy", "xcorpus_eer")


class BestEpoch(keras.callbacks.EarlyStopping):
    """EarlyStopping whose kept epoch is the best on validation, ties broken by `val_loss`.

    The model a stage keeps must be the best epoch on validation. Keras 3.15 restores the
    best weights at the end of training whether or not it stopped early; Keras 2 and some
    Keras 3 releases (this project allows keras>=3.3) restored them only on an early stop,
    leaving the last epoch's weights after a full run. Restoring again here is idempotent.

    Ties: EER and accuracy on a small validation split are step functions (56 clips in the
    FoR sample: steps of 3.6 points), and Keras keeps the *first* epoch that reaches the best
    value and stops `patience` epochs later. On the FoR sample that kept epoch 2 of a run
    whose EER sat at its best for five epochs while the loss kept falling, and the model was
    at chance on test. So an epoch that equals the best step value with a lower validation
    loss counts as an improvement: it is kept and it resets the patience.
    """

    def __init__(self, *args: Any, tie_break: str | None = "val_loss", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tie_break = tie_break if self.monitor in STEP_METRICS else None
        self._tie: float | None = None
        self._best_tie = math.inf

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._best_tie = math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        tie = (logs or {}).get(self.tie_break) if self.tie_break else None
        self._tie = float(tie) if tie is not None and math.isfinite(float(tie)) else None
        super().on_epoch_end(epoch, logs)

    def _is_improvement(self, monitor_value: Any, reference_value: Any) -> bool:
        better = bool(super()._is_improvement(monitor_value, reference_value))
        if (
            not better
            and self._tie is not None
            and reference_value is not None
            and float(monitor_value) == float(reference_value)
        ):
            better = self._tie < self._best_tie
        if better and self._tie is not None:
            self._best_tie = self._tie
        return better

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def standard_callbacks(
    params: Any,
    val_dataset: Any,
    val_targets: np.ndarray,
    selection: tuple[Any, np.ndarray, np.ndarray] | None = None,
) -> list:
    """val_eer first (and xcorpus_eer, with `selection_input`'s select corpora), then the
    notebook's EarlyStopping and ReduceLROnPlateau.

    Order matters: Keras calls callbacks in list order at each epoch's end, so `ValidationEER`
    must write `val_eer` into the logs before EarlyStopping, ReduceLROnPlateau and
    keras-tuner's best-epoch checkpoint (appended after these) read it.
    """
    es, rl = params.tune.early_stopping, params.tune.reduce_lr
    mode = {"val_loss": "min", "val_eer": "min", "val_accuracy": "max", "xcorpus_eer": "min"}
    return [
        ValidationEER(val_dataset, val_targets, selection),
        BestEpoch(
            monitor=es.monitor,
            mode=mode[es.monitor],
            patience=es.patience,
            restore_best_weights=es.restore_best_weights,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=rl.monitor,
            mode=mode[rl.monitor],
            factor=rl.factor,
            patience=rl.patience,
            min_delta=rl.min_delta,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
