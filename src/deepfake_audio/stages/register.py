"""The register stage and `promote`: registry versions, aliases and the champion gate.

Every pipeline run registers a version and points `challenger` at it.
`champion` - the alias serving reads - moves only when the new version beats
the current champion's test EER by `registry.promote_min_improvement`, or by
hand (`deepfake-audio promote --version N`); pointing it back at an older
version is a rollback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from deepfake_audio.core.errors import UserError
from deepfake_audio.core.params import Params

CHAMPION = "champion"
CHALLENGER = "challenger"
# Metrics of reports/metrics.json every version carries as tags (where evaluate wrote them).
METRIC_TAGS = (
    "test_eer",
    "test_min_dcf",
    "test_roc_auc",
    "test_accuracy",
    "validation_eer",
    "threshold",
)
MODEL_DESCRIPTION = (
    "Spoofed-speech detector, an MLflow pyfunc that takes raw audio: a DataFrame column "
    "`audio_base64` (the bytes of any file libsndfile decodes) or `path` (image models: "
    "`image_base64` or `path`), and returns `fake_probability`, `label` (fake/real at the "
    "validation threshold), `windows` and `error`. Serve the champion with `mlflow models "
    "serve -m models:/<this name>@champion --env-manager local`; score files with "
    "`deepfake-audio predict`. `mlflow.keras.load_model` gives the bare network (features in, "
    "bona fide logit out). `champion` moves only through the EER gate or `deepfake-audio "
    "promote`; `challenger` is the latest version."
)

# What earlier versions of this module wrote; replaced, a description someone edited is kept.
_OLD_MODEL_DESCRIPTION = "Spoofed-speech detector (bona fide logit out); see the project README."


def describe(tags: dict[str, str], summary: dict[str, Any], source: str) -> str:
    """A version's one-paragraph description: what, on which data, how good, made how."""
    digest = tags.get("dataset_digest") or "unknown"
    demo = " (synthetic demo corpus: not a benchmark)" if source == "demo" else ""
    exp = tags.get("dvc_exp_name")
    how = f"`dvc exp run` {exp}" if exp else "`dvc repro` (no DVC experiment)"
    commit = tags.get("git_commit") or "unknown"
    return (
        f"{tags.get('architecture') or 'model'} on {source} data (dataset {digest}), "
        f"test EER {summary['test_eer']:.2%}{demo}; labels at the validation threshold "
        f"{summary['threshold']:.4f} (bona fide logit). Trained by {how} at commit {commit}, "
        f"MLflow run {tags.get('train_run_id', '')}."
    )


def _version_eer(client: Any, name: str, version: str) -> float | None:
    tags = client.get_model_version(name, version).tags
    try:
        return float(tags["test_eer"])
    except (KeyError, ValueError):
        return None


_ALIAS_TRIES = 5


def _lost_alias_race(exc: Exception) -> bool:
    """The database's unique-constraint error for an alias row (SQLite and PostgreSQL)."""
    text = str(exc).lower()
    return "unique constraint" in text or "duplicate key" in text


def _try_set_alias(client: Any, name: str, alias: str, version: str | int, final: bool) -> bool:
    """Set the alias; False when a parallel setter's insert won the race (unless `final`,
    which raises it), so the caller can look again and retry."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(name, alias, str(version))
        return True
    except MlflowException as exc:
        if final or not _lost_alias_race(exc):
            raise
        return False


def set_alias(client: Any, name: str, alias: str, version: str | int) -> None:
    """`set_registered_model_alias` that survives a parallel register.

    MLflow's SQL store sets an alias by reading its row, then inserting or updating it. Two
    registers at once (`dvc queue start -j 2`) can both find no row and both insert: one
    gets the database's unique-constraint error (seen in CI). Trying again finds the row and
    updates it; the last writer wins, as it would one after the other.
    """
    for attempt in range(_ALIAS_TRIES):
        if _try_set_alias(client, name, alias, version, final=attempt == _ALIAS_TRIES - 1):
            return
        time.sleep(0.2 * (attempt + 1))


def _champion(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def gate(
    new_eer: float,
    champion_eer: float | None,
    min_improvement: float,
    same_data: bool = True,
) -> bool:
    """True when the new version should become champion.

    EERs measured on different test data do not compare: a version trained and
    tested on another dataset never replaces the champion by itself (promote
    it by hand once you trust the new data).
    """
    if champion_eer is None:
        return True
    if not same_data:
        return False
    return new_eer <= champion_eer - min_improvement


def register(params: Params, run_info: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = params.registry.model_name
    run = client.get_run(run_info["run_id"])
    tags = {
        **{
            key: f"{float(summary[key]):.6f}"
            for key in METRIC_TAGS
            if isinstance(summary.get(key), int | float)
        },
        "git_commit": run.data.tags.get("git_commit", ""),
        "dvc_exp_name": run.data.tags.get("dvc_exp_name", ""),
        "dataset_digest": run.data.tags.get("dataset_digest", ""),
        "architecture": run.data.params.get("architecture", ""),
        "data_source": params.data.source,
        "train_run_id": run_info["run_id"],
    }
    served = run_info.get("threshold")
    if served is not None and abs(float(served) - float(summary["threshold"])) > 1e-4 * max(
        1.0, abs(float(served))
    ):
        print(
            f"warning: the model serves at threshold {float(served):.6f} (train stage) but "
            f"evaluate chose {summary['threshold']:.6f}; labels follow the former",
            file=sys.stderr,
        )
    description = describe(tags, summary, params.data.source)
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=MODEL_DESCRIPTION)
        except MlflowException as exc:
            # A parallel register (`dvc queue start -j 2`) created it between our two calls.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    else:
        if not registered.description or registered.description == _OLD_MODEL_DESCRIPTION:
            client.update_registered_model(name, description=MODEL_DESCRIPTION)
    version = mlflow.register_model(run_info["logged_model_uri"], name, tags=tags)
    client.update_model_version(name, version.version, description=description)
    set_alias(client, name, CHALLENGER, version.version)
    for attempt in range(_ALIAS_TRIES):
        current = _champion(client, name)
        champion_eer = _version_eer(client, name, current.version) if current else None
        same_data = current is None or current.tags.get("dataset_digest") == tags["dataset_digest"]
        promoted = gate(
            summary["test_eer"], champion_eer, params.registry.promote_min_improvement, same_data
        )
        final = attempt == _ALIAS_TRIES - 1
        if not promoted or _try_set_alias(client, name, CHAMPION, version.version, final):
            break
        # Another register (a parallel `dvc queue` task) set a champion just now: compare
        # against that one instead.
        time.sleep(0.2 * (attempt + 1))
    aliases = sorted(client.get_model_version(name, version.version).aliases)
    result = {
        "model_name": name,
        "version": int(version.version),
        "aliases": aliases,
        "run_id": run_info["run_id"],
        "test_eer": summary["test_eer"],
        "promoted_to_champion": promoted,
        "previous_champion": {"version": int(current.version), "test_eer": champion_eer}
        if current
        else None,
        "model_uri": f"models:/{name}/{version.version}",
    }
    if promoted:
        verdict = "now champion"
    elif not same_data:
        verdict = (
            f"champion stays version {current.version}: it was tested on other data, so the "
            f"EERs do not compare (deepfake-audio promote --version {version.version} to switch)"
        )
    else:
        verdict = (
            f"champion stays version {current.version} (EER {champion_eer:.2%}; needs an "
            f"improvement of {params.registry.promote_min_improvement:.2%})"
        )
    print(f"registered {name} version {version.version} (challenger); {verdict}", file=sys.stderr)
    return result


def promote(params: Params, version: int, force: bool = False) -> dict[str, Any]:
    """Point `champion` at `version` by hand; refuses a worse model unless forced."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = params.registry.model_name
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise UserError(f"--version {version}: {name} has no such version") from None
    new_eer = _version_eer(client, name, str(version))
    current = _champion(client, name)
    old_eer = _version_eer(client, name, current.version) if current else None
    if (
        not force
        and current is not None
        and new_eer is not None
        and old_eer is not None
        and new_eer > old_eer
    ):
        raise UserError(
            f"version {version} (EER {new_eer:.2%}) is worse than champion version "
            f"{current.version} (EER {old_eer:.2%}); add --force to promote it anyway"
        )
    set_alias(client, name, CHAMPION, version)

    def show(v: Any, eer: float | None) -> str:
        return f"version {v} (test EER {eer:.2%})" if eer is not None else f"version {v}"

    old = show(current.version, old_eer) if current else "none"
    if current is not None and int(current.version) == int(version):
        note = " (unchanged)"
    elif current is not None and int(version) < int(current.version):
        note = " (rollback)"
    else:
        note = ""
    print(f"{name} champion: {old} -> {show(version, new_eer)}{note}")
    return {
        "model_name": name,
        "champion": version,
        "previous": current.version if current else None,
    }


def write_report(path: Path, result: dict[str, Any]) -> None:
    from deepfake_audio.core.io import write_json

    write_json(path, result)
