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

import os
from pathlib import Path
from typing import Any

from deepfake_audio.config.params import Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.stages.tune.launcher import (
    die_with_launcher,
    run_distributed,
    sigterm_as_exit,
)
from deepfake_audio.stages.tune.search import (
    RESUME_HINT,
    Search,
    make_tuner,
    mark_interrupted_trials,
    project_name,
)
from deepfake_audio.stages.tune.state import check_tuner_state, completed_trials

__all__ = [
    "Search",
    "check_tuner_state",
    "completed_trials",
    "die_with_launcher",
    "make_tuner",
    "mark_interrupted_trials",
    "project_name",
    "run",
]


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
        with sigterm_as_exit():  # so the clean-up below runs on SIGTERM as on Ctrl-C
            if params.tune.workers > 1:
                return run_distributed(params, dataset_dir, tuner_dir, out, params_path)
            return _run_single(params, dataset_dir, tuner_dir, out)
    except Exception as exc:
        # Outside a trial (opening the parent run, the final report): the same one line.
        if isinstance(exc, UserError) or not tracking.is_unreachable(exc):
            raise
        error = tracking.unreachable("the tune stage", RESUME_HINT)
        tracking.give_up_on_server()
        raise error from None


def _run_single(params: Params, dataset_dir: Path, tuner_dir: Path, out: Path) -> dict[str, Any]:
    search = Search(params, dataset_dir, tuner_dir)
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
    die_with_launcher()
    search = Search(params, dataset_dir, tuner_dir)
    tuner = search.tuner(os.environ.get("DEEPFAKE_AUDIO_TUNE_PARENT_RUN", ""))
    search.search(tuner)
