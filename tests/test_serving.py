"""The registered model as a service: pyfunc round trip, `mlflow models serve`, `predict`.

Against the session's real MLflow server, no mocks. The network is built, not
trained (`models.network.build`): what is under test is the serving path around it -
decoding, the training features, windows, calibration, threshold, errors, registry.
The registered model carries a logistic calibration at ASVspoof 5's spoof prior (0.05),
so every served `fake_probability` must be the calibrated one and `score` the raw mean
logit; the image model is served from a format-1 config (before calibration) and must
still give sigmoid(-logit).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import free_port, tiny_hparams, tiny_logmel_model, voice
from deepfake_audio.config.params import parse_params
from deepfake_audio.dsp.features import clip_features
from deepfake_audio.scoring.calibration import Calibration, Decision, bayes_threshold
from deepfake_audio.serving.limits import MAX_BYTES_ENV, MAX_SECONDS_ENV, PATHS_OFF, SERVE_ROOT_ENV

# The serving limits an operator sets (limits.py): a test's server gets exactly its own.
LIMIT_ENVS = (SERVE_ROOT_ENV, MAX_SECONDS_ENV, MAX_BYTES_ENV)

RATE = 22050  # not the model's 16 kHz: every file is resampled on the way in
CLIP = 1.0  # training clip length, seconds
HPARAMS = tiny_hparams()


def _voice(seed: int, seconds: float) -> np.ndarray:
    return voice(seed, seconds, RATE)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


PRIOR = 0.05  # the served model's target prior: ASVspoof 5's
SLOPE = 0.8  # the served calibration's slope; its offset puts the Bayes threshold on s.threshold


class Served:
    """What the module fixture built: files, expected logits, the registered name."""

    def __init__(self, root: Path, name: str, experiment: str, params_file: Path) -> None:
        self.root, self.name, self.experiment, self.params_file = (
            root,
            name,
            experiment,
            params_file,
        )
        self.files: dict[str, Path] = {}
        self.logits: dict[str, float] = {}
        self.threshold = 0.0
        self.calibration = Calibration(method="logistic")
        self.logged_model_uri = ""

    def b64(self, key: str) -> str:
        return base64.b64encode(self.files[key].read_bytes()).decode("ascii")

    def expected(self, key: str) -> tuple[float, str]:
        """Calibrated P(spoof) at PRIOR, and the label at the served threshold."""
        logit = self.logits[key]
        probability = float(self.calibration.fake_probability([logit], PRIOR)[0])
        assert probability != pytest.approx(_sigmoid(-logit), rel=1e-3)  # not the old output
        return probability, "real" if logit > self.threshold else "fake"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Served:
    import mlflow

    from deepfake_audio.dsp import audio
    from deepfake_audio.ops import tracking
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.stages import dataset
    from deepfake_audio.stages import register as registry

    root = tmp_path_factory.mktemp("serving")
    tag = uuid.uuid4().hex[:8]
    raw = {
        "features": {"kind": "logmel", "clip_seconds": CLIP, "n_mels": 32},
        "model": {"architecture": "compact_cnn"},
        "mlflow": {"experiment_name": f"serving-{tag}"},
        "registry": {"model_name": f"serving-model-{tag}"},
    }
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = parse_params(raw)
    fp = params.features
    s = Served(root, params.registry.model_name, params.mlflow.experiment_name, params_file)

    audio_dir = root / "audio"
    audio_dir.mkdir()
    for key, seed, seconds, channels in (
        ("clip", 1, 1.0, 1),
        ("short", 2, 0.6, 2),  # shorter than the training clip, stereo: padded, down-mixed
        ("long", 3, 3 * CLIP, 1),  # three training lengths: scored in windows
    ):
        wave = _voice(seed, seconds)
        data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
        s.files[key] = audio_dir / f"{key}.wav"
        sf.write(s.files[key], data, RATE, subtype="PCM_16")
    s.files["corrupt"] = audio_dir / "corrupt.wav"
    s.files["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio")

    model = tiny_logmel_model(fp.n_mels, fp.input_shape)
    keras_path = root / "model.keras"
    model.save(keras_path)

    # Expected logits straight from the training code path (dataset.file_features).
    def logit(feats: np.ndarray) -> float:
        x = feats.reshape((-1, *fp.input_shape)).astype(np.float32)
        return float(np.asarray(model.predict(x, verbose=0)).ravel().mean())

    for key in ("clip", "short"):
        s.logits[key] = logit(dataset.file_features(s.files[key], fp)[0])
    # The long file: windows of 1 s every 0.5 s over the whole normalised recording; the
    # middle one is exactly the clip training would have cut (center crop).
    wave = audio.load_wave(s.files["long"], fp.sample_rate)
    n, hop = fp.n_samples, fp.n_samples // 2
    assert wave.size == 3 * n
    starts = [0, hop, 2 * hop, 3 * hop, 4 * hop]
    windows = np.stack([clip_features(wave[a : a + n], fp) for a in starts])
    np.testing.assert_array_equal(windows[2], dataset.file_features(s.files["long"], fp)[0])
    s.logits["long"] = logit(windows)
    assert len({round(v, 6) for v in s.logits.values()}) == 3, s.logits
    # A threshold between the logits, so both labels occur.
    ordered = sorted(s.logits.values())
    s.threshold = (ordered[0] + ordered[1]) / 2
    # A calibration whose Bayes threshold (ASVspoof 5's prior and costs) is that threshold:
    # the served labels are then the calibrated Bayes decisions, as the train stage makes them.
    llr_threshold = bayes_threshold()
    s.calibration = Calibration(
        method="logistic", slope=SLOPE, offset=llr_threshold - SLOPE * s.threshold
    )
    decision = Decision(
        threshold=s.threshold,
        rule="bayes",
        calibration=s.calibration,
        target_prior=PRIOR,
        c_miss=1.0,
        c_fa=10.0,
        llr_threshold=llr_threshold,
    )

    tracking.connect(params.mlflow.experiment_name)
    digest = "0123456789abcdef0123456789abcdef.dir"
    with mlflow.start_run(run_name="train", tags=tracking.run_tags(digest, "train")) as run:
        mlflow.log_param("architecture", "compact_cnn")
        config = serving.make_config(
            params.section("features"),
            s.threshold,
            calibration=s.calibration,
            target_prior=PRIOR,
            threshold_rule="bayes",
        )
        info = serving.log_model(keras_path, config)
    s.logged_model_uri = info.model_uri
    run_info = {
        "run_id": run.info.run_id,
        "logged_model_uri": info.model_uri,
        "threshold": s.threshold,
        "decision": decision.to_dict(),
    }
    summary = {
        "test_eer": 0.3,
        "test_min_dcf": 0.5,
        "test_act_dcf": 0.55,
        "test_act_dcf_raw": 0.9,
        "test_cllr": 0.8,
        "test_cllr_raw": 1.4,
        "test_min_cllr": 0.7,
        "test_roc_auc": 0.7,
        "validation_eer": 0.25,
        "threshold": s.threshold,
    }
    result = registry.register(params, run_info, summary)
    assert result["version"] == 1 and result["promoted_to_champion"]
    s.params = params
    s.run_info = run_info
    return s


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never fitted
def test_pyfunc_by_alias_scores_bytes_paths_windows_and_errors(served: Served) -> None:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(f"models:/{served.name}@champion")
    keys = ["clip", "long", "corrupt", "short"]
    out = model.predict(pd.DataFrame({"audio_base64": [served.b64(k) for k in keys]}))
    assert list(out.columns) == ["fake_probability", "label", "windows", "error", "score"]
    assert list(out["windows"]) == [1, 5, 0, 1]
    for i, key in enumerate(keys):
        if key == "corrupt":
            continue
        probability, label = served.expected(key)
        assert out["fake_probability"][i] == pytest.approx(probability, rel=1e-4, abs=1e-6), key
        assert out["score"][i] == pytest.approx(served.logits[key], rel=1e-4, abs=1e-6), key
        assert out["label"][i] == label, key
        assert out["error"][i] == ""
    assert {"real", "fake"} <= set(out["label"])
    assert out["label"][2] == "error" and out["fake_probability"][2] is None
    assert out["score"][2] is None
    assert "not a readable audio file" in out["error"][2]

    # Deny by default: no DEEPFAKE_AUDIO_SERVE_ROOT when the model loaded, so every path row
    # is refused with its reason, an existing file and a missing one alike.
    paths = pd.DataFrame({"path": [str(served.files["clip"]), str(served.root / "missing.wav")]})
    refused = model.predict(paths)
    assert list(refused["label"]) == ["error", "error"]
    assert list(refused["error"]) == [PATHS_OFF, PATHS_OFF]
    # `deepfake-audio predict`'s switch: the user's own files, in the user's own process.
    model.unwrap_python_model().score_local_files()
    by_path = model.predict(paths)
    assert by_path["fake_probability"][0] == pytest.approx(out["fake_probability"][0], rel=1e-6)
    assert by_path["label"][0] == out["label"][0]
    assert "no such file" in by_path["error"][1] and by_path["label"][1] == "error"

    bad_b64 = model.predict(pd.DataFrame({"audio_base64": ["not base64 at all!"]}))
    assert "not valid base64" in bad_b64["error"][0]
    with pytest.raises(MlflowException, match="exactly one of the columns"):
        model.predict(pd.DataFrame({"audio_base64": [served.b64("clip")], "path": ["x.wav"]}))

    # The very same artifact is also the bare Keras network (features in, logit out).
    keras_model = mlflow.keras.load_model(f"models:/{served.name}@champion")
    assert keras_model.input_shape[1:] == (32, 101, 1)


@pytest.mark.slow
def test_registered_version_carries_metrics_provenance_and_description(
    served: Served, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version(served.name, "1")
    tags = version.tags
    for key in ("test_eer", "test_min_dcf", "validation_eer", "threshold"):
        assert key in tags, key
    for key in ("test_act_dcf", "test_act_dcf_raw", "test_cllr", "test_cllr_raw", "test_min_cllr"):
        assert key in tags, key
    assert float(tags["test_eer"]) == pytest.approx(0.3)
    assert float(tags["test_act_dcf"]) == pytest.approx(0.55)
    assert (tags["threshold_rule"], tags["calibration_method"]) == ("bayes", "logistic")
    assert tags["target_prior"] == "0.05" and tags["promote_metric"] == "test_eer"
    assert float(tags["threshold"]) == pytest.approx(served.threshold, abs=1e-6)
    assert tags["dataset_digest"] == "0123456789abcdef0123456789abcdef.dir"
    assert tags["git_commit"] and tags["git_commit"] != "unknown"
    assert "dvc_exp_name" in tags
    description = version.description
    assert "compact_cnn on demo data" in description
    assert "0123456789abcdef0123456789abcdef.dir" in description
    assert "test EER 30.00%" in description
    assert "actDCF 0.5500 (raw logit 0.9000), Cllr 0.8000 bits (raw 1.4000" in description
    assert "labels at the Bayes threshold for a spoof prior of 0.05" in description
    assert tags["git_commit"] in description
    assert "`dvc repro`" in description or "`dvc exp run`" in description
    registered = client.get_registered_model(served.name)
    assert "audio_base64" in registered.description


def _post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# The served limits of the one server this module starts: path rows below audio/, a 5 s
# cap (the 3 s "long" clip fits, a 6 s one does not) and 0.2 MB of file per base64 row.
SERVE_MAX_SECONDS = 5
SERVE_MAX_BYTES = 200_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rows(base: str, column: str, values: list[str]) -> list[dict[str, Any]]:
    status, body = _post(
        base + "/invocations",
        {"dataframe_split": {"columns": [column], "data": [[v] for v in values]}},
    )
    assert status == 200, body
    return body["predictions"]


def _check_limits(served: Served, base: str) -> None:
    """The served rules, as an outside client meets them: each row refused with its reason,
    the other rows of the same request still scored."""
    root = served.files["clip"].parent
    outside = served.root / "outside.wav"  # exists, beside the root: must look like a miss
    outside.write_bytes(served.files["clip"].read_bytes())
    clip_probability, clip_label = served.expected("clip")
    inside = [
        "clip.wav",  # relative to the root
        str(served.files["clip"]),  # absolute, inside the root
        "missing.wav",  # inside the root, no such file: the root's own business
    ]
    outside_rows = [
        "../outside.wav",
        str(outside),
        "../nothing-here.wav",
        "/etc/passwd",
        "sub/../../outside.wav",
    ]
    rows = _rows(base, "path", inside + outside_rows)
    for row in rows[:2]:
        assert row["error"] == "" and row["label"] == clip_label, row
        assert row["fake_probability"] == pytest.approx(clip_probability, rel=1e-4, abs=1e-6)
    assert rows[2]["error"] == "missing.wav: no such file"  # named as sent, not by the root
    for row, sent in zip(rows[3:], outside_rows, strict=True):
        assert row["label"] == "error" and row["fake_probability"] is None
        # The same answer whether the file exists or not: no probing of the disk.
        assert row["error"] == (
            f"path {sent!r} is not a path inside the serving root ({SERVE_ROOT_ENV})"
        )
    assert str(root) not in json.dumps(rows)

    # Over the seconds cap: refused from the header; a row within it is still scored.
    rate = 8000
    t = np.arange((SERVE_MAX_SECONDS + 1) * rate) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.1 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    assert len(buffer.getvalue()) < SERVE_MAX_BYTES
    over_size = _b64(np.random.default_rng(0).bytes(SERVE_MAX_BYTES + 100_000))
    rows = _rows(base, "audio_base64", [_b64(buffer.getvalue()), served.b64("clip"), over_size])
    assert rows[0]["label"] == "error" and rows[0]["error"] == (
        f"<bytes>: audio is {SERVE_MAX_SECONDS + 1:.1f} s long, above the "
        f"{SERVE_MAX_SECONDS} s cap ({MAX_SECONDS_ENV})"
    )
    assert rows[1]["error"] == "" and rows[1]["label"] == clip_label
    assert rows[2]["label"] == "error" and rows[2]["error"] == (
        f"<bytes>: audio_base64 holds 300,000 bytes, above the 200,000-byte cap per row "
        f"({MAX_BYTES_ENV})"
    )


def _check_timeline(served: Served, base: str) -> None:
    """`params: {"timeline": true}`: each row's windows and ranges as JSON, under the same
    limits; the row's score is the file's served score, timeline or not."""
    payload = {
        "dataframe_split": {
            "columns": ["audio_base64"],
            "data": [[served.b64("long")], [served.b64("corrupt")]],
        },
        "params": {"timeline": True, "timeline_hop": 0.5},  # the served windows
    }
    status, body = _post(base + "/invocations", payload)
    assert status == 200, body
    long, corrupt = body["predictions"]
    found = json.loads(long["timeline"])
    assert long["windows"] == len(found["windows"]) == 5 and long["error"] == ""
    assert [w["start_s"] for w in found["windows"]] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert long["score"] == pytest.approx(served.logits["long"], rel=1e-4, abs=1e-5)
    assert found["duration_s"] == pytest.approx(3 * CLIP)
    assert corrupt["label"] == "error" and "not a readable audio file" in corrupt["error"]
    outside = _post(
        base + "/invocations",
        {
            "dataframe_split": {"columns": ["path"], "data": [["/etc/passwd"]]},
            "params": {"timeline": True},
        },
    )[1]["predictions"][0]
    assert outside["error"] == (
        f"path '/etc/passwd' is not a path inside the serving root ({SERVE_ROOT_ENV})"
    )


@contextlib.contextmanager
def _models_serve(served: Served, mlflow_server: str, limits: dict[str, str]) -> Iterator[str]:
    """`mlflow models serve` of the champion, as an operator starts it, with the serving
    limits in `limits` (limits.py reads them when the model loads); yields its base URL."""
    port = free_port()
    log_path = served.root / f"serve-{port}.log"
    # As from an activated venv: the server execs `uvicorn` from PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in LIMIT_ENVS},
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PATH": path,
        **limits,
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{served.name}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=served.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None, log_path.read_text()[-4000:]
                try:
                    with urllib.request.urlopen(base + "/ping", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-4000:]
                time.sleep(1)
            yield base
        finally:
            _stop(proc)


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(served: Served, mlflow_server: str) -> None:
    # What the operator names when serving (limits.py): deny by default otherwise.
    limits = {
        SERVE_ROOT_ENV: str(served.files["clip"].parent),
        MAX_SECONDS_ENV: str(SERVE_MAX_SECONDS),
        MAX_BYTES_ENV: str(SERVE_MAX_BYTES),
    }
    with _models_serve(served, mlflow_server, limits) as base:
        payload = {
            "dataframe_split": {
                "columns": ["audio_base64"],
                "data": [[served.b64("clip")], [served.b64("long")], [served.b64("corrupt")]],
            }
        }
        status, body = _post(base + "/invocations", payload)
        assert status == 200, body
        (served.root / "invocations.json").write_text(json.dumps(body, indent=2))
        rows = body["predictions"]
        for row, key in zip(rows[:2], ("clip", "long"), strict=True):
            probability, label = served.expected(key)
            assert row["fake_probability"] == pytest.approx(probability, rel=1e-4, abs=1e-6)
            assert row["score"] == pytest.approx(served.logits[key], rel=1e-4, abs=1e-6)
            assert row["label"] == label and row["error"] == ""
        assert rows[1]["windows"] == 5
        assert rows[2]["label"] == "error" and rows[2]["fake_probability"] is None
        assert rows[2]["score"] is None
        assert "not a readable audio file" in rows[2]["error"]
        status, body = _post(
            base + "/invocations", {"dataframe_split": {"columns": ["x"], "data": [["y"]]}}
        )
        assert status == 400 and "exactly one of the columns" in json.dumps(body)
        _check_limits(served, base)
        _check_timeline(served, base)


@pytest.mark.slow
def test_mlflow_models_serve_with_no_root_named_refuses_every_path_row(
    served: Served, mlflow_server: str
) -> None:
    """Served as an operator who names no root: an audio file on the server's disk, a
    system file and a missing one get the same refusal with its reason, so a client can
    neither score files it cannot see nor probe which exist; uploads are still scored."""
    with _models_serve(served, mlflow_server, {}) as base:
        sent = [str(served.files["clip"]), "/etc/passwd", str(served.root / "missing.wav")]
        payload = {"dataframe_split": {"columns": ["path"], "data": [[p] for p in sent]}}
        status, body = _post(base + "/invocations", payload)
        assert status == 200, body
        rows = body["predictions"]
        assert [r["label"] for r in rows] == ["error"] * 3
        assert [r["error"] for r in rows] == [PATHS_OFF] * 3
        assert all(r["fake_probability"] is None for r in rows)
        upload = {"dataframe_split": {"columns": ["audio_base64"], "data": [[served.b64("clip")]]}}
        status, body = _post(base + "/invocations", upload)
        assert status == 200 and body["predictions"][0]["error"] == "", body


def _stop(proc: subprocess.Popen) -> None:
    """End the server we started: its own process group (mlflow -> uvicorn -> workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def _cli(served: Served, *args: str, mlflow_server: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    return subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", "--params", str(served.params_file), *args],
        cwd=served.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_predict_cli_uses_the_champion_and_reports_bad_files(
    served: Served, mlflow_server: str
) -> None:
    proc = _cli(served, "predict", "audio", mlflow_server=mlflow_server)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (served.root / "predict.csv").write_text(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "path,fake_probability,label,score"
    rows = {Path(line.split(",")[0]).stem: line.split(",") for line in lines[1:]}
    assert sorted(rows) == ["clip", "corrupt", "long", "short"]
    for key in ("clip", "long", "short"):
        probability, label = served.expected(key)
        assert float(rows[key][1]) == pytest.approx(probability, abs=2e-6)
        assert rows[key][2] == label
        assert float(rows[key][3]) == pytest.approx(served.logits[key], rel=1e-4, abs=2e-6)
    assert rows["corrupt"][1:] == ["", "error", ""]
    assert "corrupt.wav: not a readable audio file" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = _cli(
        served, "predict", "audio/clip.wav", "--format", "json", mlflow_server=mlflow_server
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)
    assert row["label"] == served.expected("clip")[1] and row["windows"] == 1
    assert row["fake_probability"] == pytest.approx(served.expected("clip")[0], abs=2e-6)
    assert row["score"] == pytest.approx(served.logits["clip"], rel=1e-4, abs=2e-6)


@pytest.mark.slow
def test_predict_with_a_model_uri_runs_anywhere(
    served: Served, mlflow_server: str, tmp_path: Path
) -> None:
    """A colleague with only the server's address: no checkout, no params.yaml."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clip = elsewhere / "clip.wav"
    clip.write_bytes(served.files["clip"].read_bytes())
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    uri = f"models:/{served.name}@champion"
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", "predict", "clip.wav", "--model", uri],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not (elsewhere / "params.yaml").exists()
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = proc.stdout.strip().splitlines()[1:]
    probability, label = served.expected("clip")
    assert float(row.split(",")[1]) == pytest.approx(probability, abs=2e-6)
    assert row.split(",")[2] == label

    # Without --model, the project's params.yaml names the model: outside, one clear line.
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", "predict", "clip.wav"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "params.yaml: not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_promote_refuses_worse_then_rolls_back_with_force(
    served: Served, mlflow_server: str
) -> None:
    from deepfake_audio.stages import register as registry

    summary = {"test_eer": 0.2, "test_min_dcf": 0.4, "threshold": served.threshold}
    result = registry.register(served.params, served.run_info, summary)
    assert result["version"] == 2 and result["promoted_to_champion"]  # 0.20 beats 0.30

    proc = _cli(served, "promote", "--version", "1", mlflow_server=mlflow_server)
    assert proc.returncode == 2
    assert "is worse than champion version 2" in proc.stderr and "--force" in proc.stderr

    proc = _cli(served, "promote", "--version", "1", "--force", mlflow_server=mlflow_server)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"{served.name} champion: version 2 (test EER 20.00%) -> "
        "version 1 (test EER 30.00%) (rollback)"
    ) in proc.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.get_model_version_by_alias(served.name, "champion").version == "1"
    assert client.get_model_version_by_alias(served.name, "challenger").version == "2"


def test_sliding_windows_cover_the_recording_and_pad_short_ones() -> None:
    from deepfake_audio.dsp.audio import fix_length, sliding_windows

    wave = np.arange(10, dtype=np.float32)
    starts = [int(w[0]) for w in sliding_windows(wave, 4, 2)]
    assert starts == [0, 2, 4, 6]  # 6 + 4 = 10: the hops land on the end
    starts = [int(w[0]) for w in sliding_windows(wave[:9], 4, 2)]
    assert starts == [0, 2, 4, 5]  # the last window is aligned with the end
    assert all(w.shape == (4,) for w in sliding_windows(wave[:9], 4, 2))
    (only,) = sliding_windows(wave[:4], 4, 2)
    np.testing.assert_array_equal(only, wave[:4])
    for pad in ("repeat", "zeros"):
        (short,) = sliding_windows(wave[:3], 8, 4, pad=pad)
        np.testing.assert_array_equal(short, fix_length(wave[:3], 8, pad=pad))


@pytest.mark.slow
def test_image_model_takes_image_base64_or_path(
    tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """features.kind image: the notebook's spectrogram pictures, the same loader as training;
    `path` rows below the root the operator named (read when the model loads)."""
    import mlflow
    import pandas as pd

    from deepfake_audio.dsp.images import write_demo_images
    from deepfake_audio.models import network
    from deepfake_audio.ops import tracking
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.stages import dataset

    raw = {"data": {"source": "images", "path": str(tmp_path)}}
    raw["features"] = {"kind": "image", "image_size": [32, 32]}
    raw["model"] = {"architecture": "compact_cnn"}
    params = parse_params(raw)
    fp = params.features
    write_demo_images(tmp_path / "pics", {"test": 1}, size=(48, 40))
    pictures = sorted((tmp_path / "pics").rglob("*.png"))
    model = network.build(
        HPARAMS, "compact_cnn", fp.input_shape, np.full(3, 0.5), np.full(3, 0.25), norm_axis=3
    )
    model.save(tmp_path / "image.keras")
    expected = [
        float(model.predict(dataset.file_features(p, fp)[0][None], verbose=0).ravel()[0])
        for p in pictures
    ]
    # The threshold sits midway between the two logits: one placed exactly on a
    # logit would make the label depend on float rounding between batch sizes.
    assert abs(expected[0] - expected[1]) > 1e-4, expected
    threshold = (expected[0] + expected[1]) / 2
    tracking.connect(f"serving-images-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run():
        config = serving.make_config(params.section("features"), threshold=threshold)
        # As a version logged before calibration existed: format 1, no calibration keys.
        for key in ("calibration", "target_prior"):
            del config[key]
        config["format"] = 1
        info = serving.log_model(tmp_path / "image.keras", config)
    monkeypatch.setenv(SERVE_ROOT_ENV, str(tmp_path / "pics"))
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == ["image_base64", "path"]
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in pictures]
    for frame in (
        pd.DataFrame({"image_base64": encoded}),
        pd.DataFrame({"path": [str(p) for p in pictures]}),
    ):
        out = loaded.predict(frame)
        for i, logit in enumerate(expected):
            assert out["fake_probability"][i] == pytest.approx(_sigmoid(-logit), rel=1e-4)
            assert out["score"][i] == pytest.approx(logit, rel=1e-4, abs=1e-6)
            assert out["label"][i] == ("real" if logit > threshold else "fake")
        assert list(out["windows"]) == [1, 1]


@pytest.mark.slow
def test_predict_with_model_uri_needs_no_project_and_reports_timing(
    served: Served, mlflow_server: str, tmp_path: Path
) -> None:
    """A version logged from code (pyfunc `loaders.code_model`) brings its own features and
    threshold: no params.yaml in sight, and `--timing` reports start-up apart from scoring."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    files = [str(served.files[key]) for key in ("clip", "long")]
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_audio.cli", "predict", "--model"]
        + [f"models:/{served.name}@champion", "--timing", "--format", "json", *files],
        cwd=tmp_path,  # no params.yaml here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for row, key in zip(rows, ("clip", "long"), strict=True):
        probability, label = served.expected(key)
        assert row["fake_probability"] == pytest.approx(probability, abs=2e-6)
        assert row["label"] == label
    assert [row["windows"] for row in rows] == [1, 5]
    assert "loaded in" in proc.stderr and "2 files (6 windows) scored in" in proc.stderr
