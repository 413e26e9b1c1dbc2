"""Registry aliases against a real MLflow server, with registers running at once."""

from __future__ import annotations

import threading

from mlflow.tracking import MlflowClient

from deepfake_audio.stages import register as registry


def test_parallel_registers_setting_one_alias_all_succeed(mlflow_server: str) -> None:
    """`dvc queue start -j 2` runs two register stages at once. MLflow's SQL store sets an
    alias by a read then an insert, so two first-time setters both insert and one gets a
    unique-constraint error (CI saw it; 5 of 15 rounds of 6 threads with the plain client
    here). `registry.set_alias` must absorb that and leave the alias set."""
    client = MlflowClient(tracking_uri=mlflow_server)
    name = "race-model"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment("registry-race"))
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    ).version
    errors: list[str] = []
    for round_ in range(15):
        alias = f"alias{round_}"
        barrier = threading.Barrier(6)

        def set_it(alias: str = alias, barrier: threading.Barrier = barrier) -> None:
            own = MlflowClient(tracking_uri=mlflow_server)
            barrier.wait()
            try:
                registry.set_alias(own, name, alias, version)
            except Exception as exc:  # collected, so the assertion names every failure
                errors.append(f"{alias}: {exc}")

        threads = [threading.Thread(target=set_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    aliases = set(client.get_model_version(name, version).aliases)
    assert aliases == {f"alias{i}" for i in range(15)}
