"""Repairs of keras-tuner's on-disk state, so an interrupted search resumes.

keras-tuner rewrites its JSON state in place and can rerun a trial it had finished; these
functions make its writes atomic, refuse a damaged state with one line, and skip finished
trials on resume. They patch keras-tuner's private API (`keras_tuner.src.utils.save_json`,
the oracle's `_retry_queue`), which is why pyproject.toml bounds keras-tuner's version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_text


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
                raise UserError(corrupt_state_message(path, project_dir, "empty file"))
            json.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(corrupt_state_message(path, project_dir, type(exc).__name__)) from None
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON: {exc}"
            raise UserError(corrupt_state_message(path, project_dir, reason)) from None


def corrupt_state_message(path: Path, project_dir: Path, reason: str) -> str:
    return (
        f"tune: {path}: keras-tuner state is corrupted ({reason}); delete {project_dir} to "
        "restart this search from scratch (its finished trials stay in MLflow), "
        "or restore that folder from a backup"
    )


def skip_completed_retries(oracle: Any) -> None:
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


def make_state_writes_atomic() -> None:
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
