"""The register stage and `promote`: registry versions, aliases and the champion gate.

Every pipeline run registers a version and points `challenger` at it.
`champion` - the alias serving reads - moves only when the new version beats
the current champion's `registry.promote_metric` (test EER by default; minDCF, actDCF or
Cllr, ASVspoof 5's metrics, on request; all lower-is-better) by
`registry.promote_min_improvement`, or by hand (`deepfake-audio promote --version N`);
pointing it back at an older version is a rollback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError

CHAMPION = "champion"
CHALLENGER = "challenger"
# Metrics of reports/metrics.json every version carries as tags (where evaluate wrote them).
METRIC_TAGS = (
    "test_eer",
    "test_min_dcf",
    "test_act_dcf",
    "test_act_dcf_raw",
    "test_cllr",
    "test_cllr_raw",
    "test_min_cllr",
    "test_roc_auc",
    "test_accuracy",
    "validation_eer",
    "threshold",
    "validation_eer_threshold",
    "xcorpus_eer",  # data.corpora: the mean EER of the eval corpora
)
# How each gate metric is shown: (label, as a percentage?).
METRIC_DISPLAY = {
    "test_eer": ("test EER", True),
    "test_min_dcf": ("test minDCF", False),
    "test_act_dcf": ("test actDCF", False),
    "test_cllr": ("test Cllr (bits)", False),
    "xcorpus_eer": ("cross-corpus EER", True),
}
MODEL_DESCRIPTION = (
    "Spoofed-speech detector, an MLflow pyfunc that takes raw audio: a DataFrame column "
    "`audio_base64` (the bytes of any file libsndfile decodes) or `path` (image models: "
    "`image_base64` or `path`), and returns `fake_probability` (P(spoof), calibrated on "
    "validation, at the spoof prior named in each version's description), `label` (fake/real "
    "at the version's threshold), `windows`, `error` and `score` (the raw mean bona fide "
    "logit). Serve the champion with `mlflow models "
    "serve -m models:/<this name>@champion --env-manager local`; score files with "
    "`deepfake-audio predict`. `mlflow.keras.load_model` gives the bare network (features in, "
    "bona fide logit out). `champion` moves only through the gate on `registry.promote_metric` "
    "or `deepfake-audio promote`; `challenger` is the latest version."
)

# What earlier versions of this module wrote; replaced, a description someone edited is kept.
_OLD_MODEL_DESCRIPTION = "Spoofed-speech detector (bona fide logit out); see the project README."


def threshold_reason(decision: dict[str, Any] | None, threshold: float) -> str:
    """Which threshold the labels use, and why, in one clause (for the description)."""
    if not decision:
        return f"labels at the validation threshold {threshold:.4f} (bona fide logit)"
    if decision.get("threshold_rule") == "bayes":
        prior, c_miss, c_fa = decision["target_prior"], decision["c_miss"], decision["c_fa"]
        on = (
            "calibrated LLR"
            if decision.get("calibration")
            else "bona fide logit read as an LLR (no calibration)"
        )
        asvspoof = (
            ", ASVspoof 5's operating point, so the labels are the decisions actDCF scores"
            if (prior, c_miss, c_fa) == (0.05, 1.0, 10.0)
            else ""
        )
        return (
            f"labels at the Bayes threshold for a spoof prior of {prior:g} and costs Cmiss "
            f"{c_miss:g} / Cfa {c_fa:g}{asvspoof} ({on} > {decision['llr_threshold']:.4f}, "
            f"i.e. bona fide logit > {threshold:.4f}): the label of least expected cost there"
        )
    return (
        f"labels at the validation EER threshold {threshold:.4f} (bona fide logit; "
        "`calibration.threshold: validation_eer`): equal miss and false-alarm rates on "
        "validation, blind to the costs of the two errors"
    )


def describe(
    tags: dict[str, str],
    summary: dict[str, Any],
    source: str,
    decision: dict[str, Any] | None = None,
) -> str:
    """A version's one-paragraph description: what, on which data, how good, made how."""
    digest = tags.get("dataset_digest") or "unknown"
    demo = " (synthetic demo corpus: not a benchmark)" if source == "demo" else ""
    exp = tags.get("dvc_exp_name")
    how = f"`dvc exp run` {exp}" if exp else "`dvc repro` (no DVC experiment)"
    commit = tags.get("git_commit") or "unknown"
    asvspoof = ""
    if all(isinstance(summary.get(k), int | float) for k in ("test_act_dcf", "test_cllr")):
        asvspoof = (
            f", minDCF {summary['test_min_dcf']:.4f}, actDCF {summary['test_act_dcf']:.4f} "
            f"(raw logit {summary.get('test_act_dcf_raw', float('nan')):.4f}), Cllr "
            f"{summary['test_cllr']:.4f} bits (raw {summary.get('test_cllr_raw', float('nan')):.4f}"
            f", minCllr {summary.get('test_min_cllr', float('nan')):.4f})"
        )
    calibrated = ""
    if decision and decision.get("calibration"):
        calibrated = (
            f" fake_probability: {decision['calibration']['method']} calibration fitted on "
            f"validation, at a spoof prior of {decision['target_prior']:g}."
        )
    elif decision:
        calibrated = " fake_probability: sigmoid(-logit), uncalibrated."
    return (
        f"{tags.get('architecture') or 'model'} on {source} data (dataset {digest}), "
        f"test EER {summary['test_eer']:.2%}{asvspoof}{demo}; "
        f"{threshold_reason(decision, float(summary['threshold']))}.{calibrated} "
        f"Trained by {how} at commit {commit}, MLflow run {tags.get('train_run_id', '')}."
    )


def _version_metric(client: Any, name: str, version: str, metric: str = "test_eer") -> float | None:
    """A version's `metric` tag as a number; None when it was registered without one."""
    tags = client.get_model_version(name, version).tags
    try:
        return float(tags[metric])
    except (KeyError, ValueError):
        return None


def show_metric(metric: str, value: float | None) -> str:
    """``test EER 20.00%`` / ``test actDCF 0.4123``; ``no test actDCF`` when missing."""
    label, percent = METRIC_DISPLAY.get(metric, (metric, False))
    if value is None:
        return f"no {label}"
    return f"{label} {value:.2%}" if percent else f"{label} {value:.4f}"


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
    new_value: float,
    champion_value: float | None,
    min_improvement: float,
    same_data: bool = True,
) -> bool:
    """True when the new version should become champion (lower metric wins).

    The metric is `registry.promote_metric` (EER, minDCF, actDCF or Cllr: all costs);
    `min_improvement` is in its units. ``champion_value`` None means there is no champion.
    Metrics measured on different test data do not compare: a version trained and
    tested on another dataset never replaces the champion by itself (promote
    it by hand once you trust the new data).
    """
    if champion_value is None:
        return True
    if not same_data:
        return False
    return new_value <= champion_value - min_improvement


def register(params: Params, run_info: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = params.registry.model_name
    metric = params.registry.promote_metric
    if not isinstance(summary.get(metric), int | float):
        raise UserError(
            f"registry.promote_metric: {metric!r} is not in the evaluation metrics "
            "(reports/metrics.json from before it was measured? rerun `dvc repro evaluate`)"
        )
    decision = run_info.get("decision")
    source = "corpora" if params.data.corpora else params.data.source  # data.corpora: many
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
        "data_source": source,
        "train_run_id": run_info["run_id"],
        "promote_metric": metric,
    }
    if decision:
        tags["threshold_rule"] = str(decision.get("threshold_rule", ""))
        tags["calibration_method"] = str(decision.get("method", ""))
        tags["target_prior"] = f"{float(decision['target_prior']):g}"
    served = run_info.get("threshold")
    if served is not None and abs(float(served) - float(summary["threshold"])) > 1e-4 * max(
        1.0, abs(float(served))
    ):
        print(
            f"warning: the model serves at threshold {float(served):.6f} (train stage) but "
            f"evaluate chose {summary['threshold']:.6f}; labels follow the former",
            file=sys.stderr,
        )
    description = describe(tags, summary, source, decision)
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
    min_improvement = params.registry.promote_min_improvement
    new_value = float(summary[metric])
    for attempt in range(_ALIAS_TRIES):
        current = _champion(client, name)
        champion_value = _version_metric(client, name, current.version, metric) if current else None
        same_data = current is None or current.tags.get("dataset_digest") == tags["dataset_digest"]
        # A champion registered before `metric` was measured cannot be compared by it: it
        # stays until promoted by hand (treating it as absent would replace it blindly).
        comparable = current is None or champion_value is not None
        promoted = comparable and gate(new_value, champion_value, min_improvement, same_data)
        final = attempt == _ALIAS_TRIES - 1
        if not promoted or _try_set_alias(client, name, CHAMPION, version.version, final):
            break
        # Another register (a parallel `dvc queue` task) set a champion just now: compare
        # against that one instead.
        time.sleep(0.2 * (attempt + 1))
    aliases = sorted(client.get_model_version(name, version.version).aliases)
    previous = None
    if current:
        previous = {
            "version": int(current.version),
            "test_eer": _version_metric(client, name, current.version, "test_eer"),
            metric: champion_value,
        }
    result = {
        "model_name": name,
        "version": int(version.version),
        "aliases": aliases,
        "run_id": run_info["run_id"],
        "test_eer": summary["test_eer"],
        "promote_metric": metric,
        metric: new_value,
        "promoted_to_champion": promoted,
        "previous_champion": previous,
        "model_uri": f"models:/{name}/{version.version}",
    }
    switch = f"deepfake-audio promote --version {version.version} to switch"
    if promoted:
        verdict = f"now champion ({show_metric(metric, new_value)})"
    elif not comparable:
        verdict = (
            f"champion stays version {current.version}: it has {show_metric(metric, None)} "
            f"(registered before it was measured), so `registry.promote_metric: {metric}` "
            f"cannot compare ({switch})"
        )
    elif not same_data:
        verdict = (
            f"champion stays version {current.version}: it was tested on other data, so the "
            f"{METRIC_DISPLAY[metric][0]}s do not compare ({switch})"
        )
    else:
        step = f"{min_improvement:.2%}" if METRIC_DISPLAY[metric][1] else f"{min_improvement:g}"
        verdict = (
            f"champion stays version {current.version} ({show_metric(metric, champion_value)} "
            f"vs {show_metric(metric, new_value)}; needs an improvement of {step})"
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
    metric = params.registry.promote_metric
    new_value = _version_metric(client, name, str(version), metric)
    current = _champion(client, name)
    old_value = _version_metric(client, name, current.version, metric) if current else None
    if (
        not force
        and current is not None
        and new_value is not None
        and old_value is not None
        and new_value > old_value
    ):
        raise UserError(
            f"version {version} ({show_metric(metric, new_value)}) is worse than champion "
            f"version {current.version} ({show_metric(metric, old_value)}) by "
            f"registry.promote_metric {metric}; add --force to promote it anyway"
        )
    set_alias(client, name, CHAMPION, version)

    def show(v: Any, value: float | None) -> str:
        return f"version {v} ({show_metric(metric, value)})"

    old = show(current.version, old_value) if current else "none"
    if current is not None and int(current.version) == int(version):
        note = " (unchanged)"
    elif current is not None and int(version) < int(current.version):
        note = " (rollback)"
    else:
        note = ""
    print(f"{name} champion: {old} -> {show(version, new_value)}{note}; compared by {metric}")
    return {
        "model_name": name,
        "champion": version,
        "previous": current.version if current else None,
        "promote_metric": metric,
        "previous_value": old_value,
        "value": new_value,
    }


def write_report(path: Path, result: dict[str, Any]) -> None:
    from deepfake_audio.core.io import write_json

    write_json(path, result)
