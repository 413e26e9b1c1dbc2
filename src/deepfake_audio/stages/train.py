"""The train stage: fit the best configuration from scratch and hand it on.

A fresh fit of the best hyperparameters (rather than continuing the best
trial's weights, as the notebook did) makes the final model a function of
params.yaml and the data alone. The MLflow run created here is the model's
run: evaluate logs its metrics to it and register registers its model, found
through `models/run.json`.

Calibration happens here too, on the validation split's logits: a logistic (or isotonic)
map from logit to log-likelihood ratio and the served threshold (`calibration.*`), stored
in the served model's config and in `models/run.json` for evaluate and register. Why not a
stage of its own: the served config is logged with the model, in this run, and a separate
stage would have to log a second copy of the model (or move the model logging out of
train and change what `models/run.json` means to evaluate and register). The price: a
change of `calibration.*` reruns training, which is seeded and gives the same weights.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.config.params import Params
from deepfake_audio.core.io import read_json, replacing, write_json
from deepfake_audio.scoring.calibration import Decision, decide_on_validation


def validation_scores(model: Any, val: Any) -> np.ndarray:
    """Bona fide logits of the validation split, in manifest order."""
    return np.asarray(model.predict(val, verbose=0), dtype=np.float64).ravel()


def choose_decision(params: Params, scores: np.ndarray, targets: np.ndarray) -> Decision:
    """Calibration and served threshold from the validation split (`calibration.*` params).

    Here rather than in a stage of its own: the served config - the calibration included -
    is logged with the model in this run, and these validation logits are computed here
    anyway. Warnings (a fit that cannot serve) go to stderr; evaluate reports the result.
    """
    cp = params.calibration
    decision = decide_on_validation(
        scores,
        np.asarray(targets),
        method=cp.method,  # type: ignore[arg-type]
        rule=cp.threshold,
        target_prior=cp.target_prior,
        c_miss=cp.c_miss,
        c_fa=cp.c_fa,
    )
    for warning in decision.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return decision


def run(
    params: Params, dataset_dir: Path, hparams_path: Path, model_path: Path, run_info_path: Path
) -> dict[str, Any]:
    import mlflow

    from deepfake_audio.dataset.shards import SpectrogramDataset
    from deepfake_audio.dataset.train_batches import training_input
    from deepfake_audio.models import network
    from deepfake_audio.ops import runtime, tracking
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.stages.callbacks import (
        MlflowEpochLogger,
        selection_input,
        standard_callbacks,
    )

    best = read_json(hparams_path, "best hyperparameters")
    tracking.connect(params.mlflow.experiment_name)
    device = runtime.configure(params.seed)
    data = SpectrogramDataset(dataset_dir)
    digest = tracking.directory_digest(dataset_dir)
    values = best["values"]
    with runtime.strategy().scope():  # MirroredStrategy over several GPUs, else a no-op
        model = network.build(
            values,
            params.model.architecture,
            data.input_shape,
            data.mean,
            data.std,
            data.norm_axis,
            data.features,
        )

    tags = {
        **tracking.run_tags(digest, stage="train"),
        "tune_run_id": best.get("mlflow_parent_run_id", ""),
        "best_trial_id": str(best.get("trial_id", "")),
    }
    # Augmented or plain training batches and class weights (validation is never augmented).
    fit_input = training_input(data, params)
    with mlflow.start_run(run_name="train", tags=tags) as active:
        run_id = active.info.run_id
        mlflow.log_params(
            {
                **values,
                "architecture": params.model.architecture,
                "epochs": params.train.epochs,
                "batch_size": params.tune.batch_size,
                "seed": params.seed,
                "n_params": model.count_params(),
                "precision_policy": device["precision_policy"],
                "replicas": device["replicas"],
                "jit_compile": model.jit_compile,  # Keras "auto": XLA on one GPU, not on CPU
                **{f"features.{k}": v for k, v in params.section("features").items()},
                # What the dataset did before the features (stored with it, served with the
                # model) and the vocoded spoofs it added: runs with and without differ here.
                "data.preprocess": str(data.meta["features"].get("preprocess") or "off"),
                "data.vocoded.vocoders": str(list(params.data.vocoded.vocoders)),
                **fit_input.params,
            }
        )
        tracking.log_dataset_input(dataset_dir, digest, context="training")
        train = fit_input.dataset
        val = data.tf_dataset("validation", params.tune.batch_size)
        callbacks = standard_callbacks(
            params, val, data.labels("validation"), selection_input(params, data, objective=False)
        )
        callbacks.insert(1, MlflowEpochLogger(run_id))
        history = model.fit(
            train,
            validation_data=val,
            epochs=params.train.epochs,
            callbacks=callbacks,
            verbose=2,
            shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
            class_weight=fit_input.class_weight,
        )
        epochs_run = len(history.history.get("loss", []))
        mlflow.log_metric("epochs_run", epochs_run)
        # The model kept is the best epoch on validation (BestEpoch restores it).
        best_epoch = next((c.best_epoch for c in callbacks if hasattr(c, "best_epoch")), None)
        if best_epoch is not None and params.tune.early_stopping.restore_best_weights:
            mlflow.log_metric("best_epoch", best_epoch + 1)

        model_path = Path(model_path)
        with replacing(model_path, keep_suffix=True) as tmp:  # Keras wants the .keras suffix
            model.save(tmp)

        # The registered model: raw audio in, calibrated fake probability out, with the
        # features this model was trained with, and the calibration and threshold chosen on
        # validation (see serving/pyfunc.py).
        decision = choose_decision(params, validation_scores(model, val), data.labels("validation"))
        threshold = decision.threshold
        config = serving.make_config(
            data.meta["features"],
            threshold,
            calibration=decision.calibration,
            target_prior=decision.target_prior if decision.calibration else None,
            threshold_rule=decision.rule,
            llr_threshold=decision.llr_threshold,
            c_miss=decision.c_miss,
            c_fa=decision.c_fa,
            architecture=params.model.architecture,
            dataset_digest=digest,
            train_run_id=run_id,
        )
        mlflow.log_params({f"calibration.{k}": v for k, v in params.section("calibration").items()})
        if decision.calibration is not None and decision.calibration.method == "logistic":
            mlflow.log_metrics(
                {
                    "calibration_slope": decision.calibration.slope,
                    "calibration_offset": decision.calibration.offset,
                }
            )
        mlflow.log_metric("served_threshold", threshold)
        info = serving.log_model(model_path, config)
        result = {
            "run_id": run_id,
            "experiment_id": active.info.experiment_id,
            "model_uri": f"runs:/{run_id}/model",
            "logged_model_uri": info.model_uri,
            "model_id": info.model_id,
            "threshold": threshold,
            "decision": decision.to_dict(),
            "dataset_digest": digest,
            "epochs_run": epochs_run,
            "tracking_uri": tracking.tracking_uri(),
        }
        write_json(run_info_path, result)
    print(
        f"trained {params.model.architecture} for {epochs_run} epochs; run {run_id}",
        file=sys.stderr,
    )
    return result
