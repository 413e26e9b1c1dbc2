"""Security defaults: loopback unless asked, basic auth, paths confined to data.path, no pickle."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from deepfake_audio.config.params import parse_params
from deepfake_audio.core.errors import UserError
from deepfake_audio.ops import server, tracking
from deepfake_audio.sources import inside, list_clips

CLI = [sys.executable, "-m", "deepfake_audio.cli"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("mlflow.example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert server.is_loopback(host) is loopback


def test_cli_binds_loopback_by_default() -> None:
    from deepfake_audio.cli import build_parser

    args = build_parser().parse_args(["server", "start"])
    assert args.host == "127.0.0.1"
    files = server.ServerFiles(Path("store"))
    cmd = server.command(files, args.host, 5000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "1"  # one process owns the SQLite file
    assert "--app-name" not in cmd
    team = server.command(files, "0.0.0.0", 5000, "postgresql://mlflow@db/mlflow", "s3://b/m")
    assert team[team.index("--backend-store-uri") + 1] == "postgresql://mlflow@db/mlflow"
    assert team[team.index("--artifacts-destination") + 1] == "s3://b/m"
    assert team[team.index("--workers") + 1] == "4"


@pytest.fixture
def restore_mlflow_uri() -> Iterator[None]:
    """`tracking.connect` sets MLflow's process-wide URI: point it back afterwards."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(saved)  # None: follow the environment again


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow  # a real server with the basic-auth app
@pytest.mark.usefixtures("restore_mlflow_uri")
def test_exposed_server_warns_and_basic_auth_guards_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`server start --host 0.0.0.0 --basic-auth`: one warning line; no password, no access."""
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-test-password-123",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
    }
    port, root = free_port(), tmp_path / "store"
    proc = subprocess.run(
        [*CLI, "server", "start", "--root", str(root), "--host", "0.0.0.0"]
        + ["--port", str(port), "--basic-auth"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        server.tie_to_this_process(root)  # a test killed outright leaves no server behind
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, proc.stderr
        assert "0.0.0.0" in warnings[0] and "read and write" in warnings[0]
        assert "--basic-auth" in warnings[0]
        url = f"http://127.0.0.1:{port}"
        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(api) == 401
        assert _get(api, ("admin", "wrong")) == 401
        assert _get(api, ("admin", "a-long-test-password-123")) == 200
        # Our own client code, with MLflow's standard credential variables.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-long-test-password-123")
        assert tracking.connect("behind-basic-auth")
        # The README's way to add a team member: the admin creates the user.
        from mlflow.server import get_app_client

        get_app_client("basic-auth", tracking_uri=url).create_user("alice", "alice-pass-12345")
        assert _get(api, ("alice", "alice-pass-12345")) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-pass-12345")
        assert tracking.connect("alice-experiment")
    finally:
        server.stop(root)
    assert not server.is_healthy(f"http://127.0.0.1:{port}")


# --- paths from protocol files stay inside data.path ------------------------------------


@pytest.mark.parametrize(
    ("relative", "ok"),
    [
        ("train/real/a.wav", True),
        ("a/../b.wav", True),
        ("LA_T_1.flac", True),
        ("../outside.wav", False),
        ("a/../../outside.wav", False),
        ("/etc/passwd", False),
        ("..\\..\\secret.wav", False),
        ("C:\\corpus\\a.wav", False),
        ("C:a.wav", False),
        ("a\x00.wav", False),
        ("", False),
        (".", False),
    ],
)
def test_inside(relative: str, ok: bool, tmp_path: Path) -> None:
    result = inside(tmp_path, relative)
    assert (result is not None) is ok
    if ok:
        assert tmp_path in (result, *result.parents)


def _asvspoof(root: Path, test_line: str) -> dict:
    import soundfile as sf

    rng = np.random.default_rng(0)
    (root / "flac").mkdir(parents=True)
    for utt in ("A1", "A2"):
        sf.write(root / "flac" / f"{utt}.flac", 0.1 * rng.standard_normal(8000), 16000)
    (root / "p").mkdir()
    (root / "p" / "train.txt").write_text("S1 A1 - - bonafide\nS1 A2 - A01 spoof\n")
    (root / "p" / "dev.txt").write_text("S1 A1 - - bonafide\n")
    (root / "p" / "eval.txt").write_text(f"S1 A1 - - bonafide\n{test_line}\n")
    return {
        "data": {
            "source": "asvspoof",
            "path": str(root),
            "protocols": {"train": "p/train.txt", "validation": "p/dev.txt", "test": "p/eval.txt"},
        }
    }


@pytest.mark.parametrize(
    "entry", ["../secret", "../../etc/passwd", "/etc/passwd", "..\\..\\secret", ".hidden"]
)
def test_protocol_entries_cannot_leave_data_path(tmp_path: Path, entry: str) -> None:
    (tmp_path / "secret.flac").write_bytes(b"outside data.path")
    params = parse_params(_asvspoof(tmp_path / "LA", f"S9 {entry} - A02 spoof"))
    with pytest.raises(UserError) as caught:
        list_clips(params)
    message = str(caught.value)
    assert message.startswith("p/eval.txt:2: ") and "\n" not in message
    assert "not a plain file name" in message


def test_a_valid_protocol_still_lists_its_clips(tmp_path: Path) -> None:
    clips = list_clips(parse_params(_asvspoof(tmp_path / "LA", "S1 A2 - A01 spoof")))
    assert [c.path for c in clips if c.split == "test"] == ["flac/A1.flac", "flac/A2.flac"]


# --- no pickle of anything a user hands us ----------------------------------------------


def test_a_pickled_shard_is_refused_not_unpickled(tmp_path: Path) -> None:
    """A dataset shard holding Python objects would run code on np.load(allow_pickle=True)."""
    from deepfake_audio.dataset.shards import SpectrogramDataset

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = tmp_path / "spec"
    data.mkdir()
    (data / "stats.json").write_text(
        json.dumps({"input_shape": [2, 2, 1], "normalisation": {"mean": [0], "std": [1]}})
    )
    (data / "manifest_train.csv").write_text("clip_id,target,shard,row\nc,1,0,0\n")
    np.save(data / "train-00000.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        list(SpectrogramDataset(data).iter_shards("train"))
    assert not marker.exists()


def test_no_pickle_loading_in_the_package() -> None:
    """Nothing under src/ loads pickles or unsafe YAML, or Keras models outside safe mode."""
    src = Path(__file__).resolve().parents[1] / "src" / "deepfake_audio"
    offenders = []
    for path in src.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if any(
                bad in code
                for bad in (
                    "pickle.load",
                    "allow_pickle=True",
                    "yaml.load(",
                    "yaml.unsafe_load",
                    "safe_mode=False",
                    "joblib.load",
                )
            ):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
