"""The LFCC-GMM baseline stage: real features, real scikit-learn GMMs, a real MLflow server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfake_audio.config.params import BaselineParams, ParamsError, parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.dataset.shards import SpectrogramDataset
from deepfake_audio.ops import tracking
from deepfake_audio.sources import list_clips
from deepfake_audio.stages import baseline
from deepfake_audio.stages.dataset import build

SMALL = {
    "seed": 3,
    "data": {"demo": {"train_clips": 24, "validation_clips": 12, "test_clips": 16}},
    "features": {"kind": "logmel", "clip_seconds": 0.5, "workers": 2},
    "baseline": {"components": 4, "max_frames": 400},
}


@pytest.fixture(scope="module")
def spectrograms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CNN's dataset (log-mel) of a small demo corpus, as the dataset stage builds it."""
    root = tmp_path_factory.mktemp("baseline-data")
    params = parse_params(SMALL)
    build(params, list_clips(params), root / "spectrograms", root / "reports")
    return root / "spectrograms"


def test_params_section_defaults_and_validation() -> None:
    assert parse_params(None).baseline == BaselineParams(components=64, max_frames=40_000)
    assert parse_params(SMALL).baseline == BaselineParams(components=4, max_frames=400)
    for patch, message in [
        ({"components": 0}, "baseline.components: 0 is below the minimum 1"),
        ({"components": 5000}, "baseline.components: 5000 is above the maximum 4096"),
        ({"components": "many"}, "baseline.components: 'many' is not an integer"),
        ({"max_frames": 10}, "baseline.max_frames: 10 is below baseline.components 64"),
        ({"frames": 10}, "baseline.frames: unknown key (allowed: components, max_frames)"),
    ]:
        with pytest.raises(ParamsError) as info:
            parse_params({"baseline": patch})
        assert str(info.value).startswith(message), str(info.value)
        assert "\n" not in str(info.value)


def test_lfcc_params_change_only_the_feature_kind() -> None:
    params = parse_params(SMALL)
    lfcc = baseline.lfcc_params(params)
    assert lfcc.features.kind == "lfcc" and params.features.kind == "logmel"
    assert lfcc.features.feature_shape == (60, 1 + 8000 // 160)
    assert lfcc.data == params.data and lfcc.features.clip_seconds == 0.5


def test_lfcc_shards_of_the_dataset_stage_are_reused_only_when_identical(tmp_path: Path) -> None:
    """With features.kind lfcc and no augmentation the CNN's shards are the baseline's own."""
    lfcc = parse_params({**SMALL, "features": {**SMALL["features"], "kind": "lfcc"}})
    assert baseline.reuses_cnn_features(lfcc)
    assert not baseline.reuses_cnn_features(parse_params(SMALL))  # logmel
    augmented = parse_params(
        {**SMALL, "features": {**SMALL["features"], "kind": "lfcc"}, "augment": {"enabled": True}}
    )
    assert not baseline.reuses_cnn_features(augmented)

    build(lfcc, list_clips(lfcc), tmp_path / "cnn", tmp_path / "reports")
    cnn = SpectrogramDataset(tmp_path / "cnn")
    own = baseline.build_features(lfcc, tmp_path / "own")
    for split in ("train", "validation", "test"):
        assert cnn.manifest(split).equals(own.manifest(split))
        for a, b in zip(cnn.shards(split), own.shards(split), strict=True):
            assert np.array_equal(np.load(a), np.load(b))
    assert np.array_equal(cnn.mean, own.mean) and np.array_equal(cnn.std, own.std)


def test_training_frames_are_a_bounded_seeded_subsample(tmp_path: Path) -> None:
    params = parse_params(SMALL)
    data = baseline.build_features(params, tmp_path)
    n_frames = data.feature_shape[-1]  # 51 frames x 12 clips = 612 per class
    frames = baseline.training_frames(data, 400, seed=1)
    assert {k: v.shape for k, v in frames.items()} == {
        "bonafide": (400, 60),
        "spoof": (400, 60),
    }
    again = baseline.training_frames(data, 400, seed=1)
    np.testing.assert_array_equal(frames["spoof"], again["spoof"])
    other = baseline.training_frames(data, 400, seed=2)
    assert not np.array_equal(frames["spoof"], other["spoof"])
    every = baseline.training_frames(data, 10_000, seed=1)
    assert every["bonafide"].shape == (12 * n_frames, 60)
    # Standardised with the training split's statistics: about zero mean, unit variance.
    pooled = np.concatenate(list(every.values()))
    np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(pooled.std(axis=0), 1.0, atol=0.05)


def test_baseline_run_reports_and_logs_to_mlflow(
    spectrograms: Path, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    params = parse_params({**SMALL, "mlflow": {"experiment_name": "baseline-test"}})
    out = tmp_path / "reports" / "baseline.json"
    report = baseline.run(params, spectrograms, out)

    assert json.loads(out.read_text()) == report
    assert 0.0 <= report["test_eer"] <= 1.0 and 0.0 <= report["validation_eer"] <= 1.0
    assert 0.0 <= report["test_min_dcf"] <= 1.0 and 0.0 <= report["test_roc_auc"] <= 1.0
    assert report["test_clips"] == {"bonafide": 8, "spoof": 8}
    assert report["frames_per_class"] == {"bonafide": 400, "spoof": 400}
    assert set(report["converged"]) == {"bonafide", "spoof"}
    assert report["components"] == 4 and report["synthetic_demo_corpus"] is True
    assert set(report["test_per_attack_eer"]) <= {"A01", "A02", "A03", "A04", "A05"}
    assert "notebook_style" not in report
    # Its scores are LLRs already: actDCF and Cllr as they are, no calibration.
    assert report["test_act_dcf"] == report["test_act_dcf_raw"] >= report["test_min_dcf"]
    assert report["test_cllr"] == report["test_cllr_raw"] >= report["test_min_cllr"] >= 0.0
    assert "calibration" not in report

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("baseline-test")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'baseline'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset_digest"] == tracking.directory_digest(spectrograms)
    assert run.data.tags["baseline"] == "lfcc-gmm"
    assert {"git_commit", "dvc_exp_name"} <= set(run.data.tags)
    assert run.data.params["components"] == "4" and run.data.params["covariance_type"] == "diag"
    assert run.data.params["frames_bonafide"] == "400"
    assert run.data.metrics["test_eer"] == pytest.approx(report["test_eer"])
    assert run.data.metrics["test_min_dcf"] == pytest.approx(report["test_min_dcf"])
    assert run.data.metrics["test_act_dcf"] == pytest.approx(report["test_act_dcf"])
    assert run.data.metrics["test_cllr"] == pytest.approx(report["test_cllr"])
    # Both GMMs were fitted: EM ran on each class.
    assert run.data.metrics["em_iterations_bonafide"] >= 1
    assert run.data.metrics["em_iterations_spoof"] >= 1
    assert run.inputs.dataset_inputs
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "baseline")]
    assert artifacts == ["baseline/baseline.json"]


def test_fitted_models_score_clips_in_manifest_order(spectrograms: Path, tmp_path: Path) -> None:
    params = parse_params(SMALL)
    data = baseline.build_features(params, tmp_path)
    frames = baseline.training_frames(data, 400, seed=0)
    models = baseline.fit_models(frames, components=4, seed=0, workers=2)
    assert set(models) == {"bonafide", "spoof"}
    for model in models.values():
        assert model.means_.shape == (4, 60) and model.covariances_.shape == (4, 60)
    scores = baseline.clip_scores(models, data, "test")
    assert scores.shape == (16,) and np.all(np.isfinite(scores))
    # One clip by hand: mean frame log-likelihood ratio of its standardised frames.
    manifest = data.manifest("test")
    first = manifest.iloc[0]
    x = np.load(data.shards("test")[int(first["shard"])])[int(first["row"])]
    z = ((x.astype(np.float32) - data.mean[:, None]) / data.std[:, None]).T
    llr = models["bonafide"].score_samples(z) - models["spoof"].score_samples(z)
    assert scores[0] == pytest.approx(llr.mean(), rel=1e-5)
    # Serial and parallel fits agree (seeded).
    serial = baseline.fit_models(frames, components=4, seed=0, workers=1)
    np.testing.assert_allclose(serial["spoof"].means_, models["spoof"].means_)
    check = SpectrogramDataset(spectrograms)
    baseline.check_same_clips(data, check)


def test_repeated_frames_do_not_collapse_a_component() -> None:
    # Silence and repeat-padding give many identical frames; without a variance floor a
    # component sits on them with zero variance and scikit-learn refuses to fit.
    rng = np.random.default_rng(0)
    frames = np.vstack([np.full((300, 60), -2.5), rng.normal(size=(200, 60))])
    models = baseline.fit_models({"bonafide": frames, "spoof": frames[::-1]}, 8, 0, workers=1)
    for model in models.values():
        assert model.covariances_.min() >= baseline.REG_COVAR


def test_too_few_frames_and_mismatched_splits_are_one_line_errors(
    spectrograms: Path, tmp_path: Path
) -> None:
    frames = {"bonafide": np.zeros((3, 60)), "spoof": np.zeros((10, 60))}
    with pytest.raises(UserError, match="only 3 bonafide training frames"):
        baseline.fit_models(frames, components=4, seed=0, workers=1)
    other = parse_params(
        {**SMALL, "data": {"demo": {"train_clips": 24, "validation_clips": 12, "test_clips": 20}}}
    )
    data = baseline.build_features(other, tmp_path)
    with pytest.raises(UserError, match="test split hold 20 clips, the CNN's dataset 16"):
        baseline.check_same_clips(data, SpectrogramDataset(spectrograms))


def test_images_are_skipped_without_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_audio.stages import evaluate as evaluation

    # Nothing answers here: a skipped baseline must not need the server.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    params = parse_params(
        {
            "data": {"source": "images", "path": str(tmp_path)},
            "features": {"kind": "image"},
            "model": {"architecture": "compact_cnn"},
        }
    )
    out = tmp_path / "baseline.json"
    report = baseline.run(params, tmp_path / "no-dataset", out)
    assert report == {"skipped": baseline.IMAGES_SKIPPED}
    assert json.loads(out.read_text()) == report
    assert evaluation.baseline_numbers(out) == {
        "baseline_lfcc_gmm_test_eer": None,
        "baseline_lfcc_gmm_test_min_dcf": None,
        "baseline_lfcc_gmm_test_act_dcf": None,
        "baseline_lfcc_gmm_test_cllr": None,
        "baseline_lfcc_gmm_test_min_cllr": None,
    }
