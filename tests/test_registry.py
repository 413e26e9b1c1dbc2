"""Registry aliases against a real MLflow server: registers running at once, and the champion
gate by `registry.promote_metric`."""

from __future__ import annotations

import threading
import uuid

import mlflow
import mlflow.pyfunc
import pytest
from mlflow.tracking import MlflowClient

from deepfake_audio.config.params import Params, parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.stages import register as registry

# The stand-in model below has no type hints; MLflow says so on every log.
pytestmark = pytest.mark.filterwarnings("ignore:.*Add type hints:UserWarning")


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


# --- the champion gate by registry.promote_metric ---------------------------------------------


class _Constant(mlflow.pyfunc.PythonModel):
    """The smallest model the registry accepts: the gate, not the model, is under test."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return model_input


@pytest.fixture(scope="module")
def logged(mlflow_server: str) -> dict:
    """A run with a logged model, as models/run.json describes it after train."""
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(f"gate-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run() as run:
        mlflow.set_tags({"git_commit": "abc1234", "dataset_digest": "d" * 32 + ".dir"})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Constant(), pip_requirements=["mlflow"]
        )
    decision = {
        "threshold": 0.25,
        "threshold_rule": "bayes",
        "calibration": {"method": "logistic", "slope": 0.5, "offset": -0.7668538861723947},
        "method": "logistic",
        "target_prior": 0.05,
        "c_miss": 1.0,
        "c_fa": 10.0,
        "llr_threshold": -0.6418538861723947,
        "warnings": [],
    }
    return {
        "run_id": run.info.run_id,
        "logged_model_uri": info.model_uri,
        "threshold": 0.25,
        "decision": decision,
    }


def _params(name: str, metric: str) -> Params:
    return parse_params({"registry": {"model_name": name, "promote_metric": metric}})


def _summary(eer: float, act_dcf: float | None = None, cllr: float | None = None) -> dict:
    summary = {"test_eer": eer, "test_min_dcf": 0.4, "threshold": 0.25, "validation_eer": 0.2}
    if act_dcf is not None:
        summary |= {"test_act_dcf": act_dcf, "test_act_dcf_raw": act_dcf + 0.3}
    if cllr is not None:
        summary |= {"test_cllr": cllr, "test_cllr_raw": cllr + 0.5, "test_min_cllr": cllr - 0.1}
    return summary


def test_gate_compares_the_promote_metric(logged: dict, capsys: pytest.CaptureFixture) -> None:
    name = f"gate-actdcf-{uuid.uuid4().hex[:8]}"
    params = _params(name, "test_act_dcf")
    first = registry.register(params, logged, _summary(0.30, act_dcf=0.50, cllr=0.9))
    assert first["promoted_to_champion"] and first["promote_metric"] == "test_act_dcf"
    # A far better EER does not matter: the gate looks at actDCF, which is worse.
    second = registry.register(params, logged, _summary(0.10, act_dcf=0.60, cllr=0.8))
    assert not second["promoted_to_champion"]
    assert second["previous_champion"] == {"version": 1, "test_eer": 0.3, "test_act_dcf": 0.5}
    assert "(test actDCF 0.5000 vs test actDCF 0.6000; needs an improvement of 0.005)" in (
        capsys.readouterr().err
    )
    # Better, but by less than registry.promote_min_improvement (0.005, in actDCF).
    assert not registry.register(params, logged, _summary(0.4, 0.497, 0.9))["promoted_to_champion"]
    fourth = registry.register(params, logged, _summary(0.40, act_dcf=0.30, cllr=0.95))
    assert fourth["promoted_to_champion"] and fourth["version"] == 4
    client = MlflowClient()
    version = client.get_model_version(name, "4")
    assert set(version.aliases) == {"champion", "challenger"}
    tags = version.tags
    assert tags["promote_metric"] == "test_act_dcf" and tags["test_act_dcf"] == "0.300000"
    assert tags["test_act_dcf_raw"] == "0.600000" and tags["test_cllr"] == "0.950000"
    assert tags["threshold_rule"] == "bayes" and tags["calibration_method"] == "logistic"
    assert tags["target_prior"] == "0.05"
    # The description says which threshold the labels use and why.
    assert "labels at the Bayes threshold for a spoof prior of 0.05 and costs Cmiss 1 / Cfa 10" in (
        version.description
    )
    assert "calibrated LLR > -0.6419, i.e. bona fide logit > 0.2500" in version.description
    assert "actDCF 0.3000 (raw logit 0.6000)" in version.description
    assert "logistic calibration fitted on validation" in version.description


def test_promote_uses_the_metric_and_prints_old_and_new(
    logged: dict, capsys: pytest.CaptureFixture
) -> None:
    name = f"gate-cllr-{uuid.uuid4().hex[:8]}"
    params = _params(name, "test_cllr")
    registry.register(params, logged, _summary(0.2, act_dcf=0.5, cllr=0.9))
    assert registry.register(params, logged, _summary(0.3, 0.6, cllr=0.7))["promoted_to_champion"]
    capsys.readouterr()
    with pytest.raises(UserError) as err:
        registry.promote(params, 1)
    assert str(err.value) == (
        "version 1 (test Cllr (bits) 0.9000) is worse than champion version 2 (test Cllr (bits) "
        "0.7000) by registry.promote_metric test_cllr; add --force to promote it anyway"
    )
    result = registry.promote(params, 1, force=True)
    assert capsys.readouterr().out == (
        f"{name} champion: version 2 (test Cllr (bits) 0.7000) -> version 1 (test Cllr (bits) "
        "0.9000) (rollback); compared by test_cllr\n"
    )
    assert result["promote_metric"] == "test_cllr"
    assert (result["previous_value"], result["value"]) == (0.7, 0.9)
    # By EER, version 1 (20 %) beats version 2 (30 %): promote needs no --force there.
    registry.promote(_params(name, "test_eer"), 2, force=True)
    registry.promote(_params(name, "test_eer"), 1)
    assert "version 2 (test EER 30.00%) -> version 1 (test EER 20.00%)" in capsys.readouterr().out


def test_a_champion_without_the_metric_is_not_replaced_blindly(
    logged: dict, capsys: pytest.CaptureFixture
) -> None:
    name = f"gate-old-{uuid.uuid4().hex[:8]}"
    # Registered before actDCF was measured: no test_act_dcf tag.
    assert registry.register(_params(name, "test_eer"), logged, _summary(0.3))["version"] == 1
    params = _params(name, "test_act_dcf")
    result = registry.register(params, logged, _summary(0.1, act_dcf=0.2))
    assert not result["promoted_to_champion"]
    assert "it has no test actDCF (registered before it was measured)" in capsys.readouterr().err
    assert MlflowClient().get_model_version_by_alias(name, "champion").version == "1"
    # A metrics.json without the gate's metric fails before registering anything.
    with pytest.raises(UserError, match="registry.promote_metric: 'test_act_dcf' is not in"):
        registry.register(params, logged, _summary(0.1))
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == 2
