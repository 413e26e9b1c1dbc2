"""The served model's limits, as pure checks (no TensorFlow, no server): `serving.limits`.

Which `path` rows a served model reads (none unless the operator names a root; below it
only, by the dataset stage's own lexical check), the cap on a base64 row's size, and the
cap on a recording's length, read from the header before anything is decoded
(`dsp.audio.decode`). tests/test_serving.py sends the same rows to `mlflow models serve`.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deepfake_audio import sources
from deepfake_audio.core import paths
from deepfake_audio.dsp.audio import CUT_IT, AudioError, decode, load_wave
from deepfake_audio.serving.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SECONDS,
    MAX_BYTES_ENV,
    MAX_SECONDS_ENV,
    OUTSIDE,
    PATHS_OFF,
    SERVE_ROOT_ENV,
    Limits,
    Refused,
)


def _wav(seconds: float, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.1 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _refusal(limits: Limits, text: str) -> str:
    with pytest.raises(Refused) as caught:
        limits.path(text)
    return str(caught.value)


def test_the_served_path_check_is_the_dataset_stages() -> None:
    assert sources.inside is paths.inside


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/a.wav, root/sub/b.wav, and secret.wav beside the root."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for path in (root / "a.wav", root / "sub" / "b.wav", tmp_path / "secret.wav"):
        path.write_bytes(_wav(0.5))
    return root


def test_path_rows_are_off_by_default(tree: Path) -> None:
    for limits in (Limits(), Limits.from_environment({})):
        assert limits.root is None and not limits.any_path
        assert limits.max_seconds == DEFAULT_MAX_SECONDS and limits.max_bytes == DEFAULT_MAX_BYTES
        for text in (str(tree / "a.wav"), "a.wav", "/etc/passwd", "/no/such.wav"):
            assert _refusal(limits, text) == PATHS_OFF
    assert SERVE_ROOT_ENV in PATHS_OFF


@pytest.mark.parametrize(
    ("text", "below"),
    [("a.wav", "a.wav"), ("sub/b.wav", "sub/b.wav"), ("sub/../a.wav", "a.wav"), ("new.wav", "")],
)
def test_a_root_lets_paths_below_it_through(tree: Path, text: str, below: str) -> None:
    limits = Limits.from_environment({SERVE_ROOT_ENV: str(tree)})
    found, name = limits.path(text)
    assert found == tree / (below or text) and name == text  # messages name it as sent
    found, name = limits.path(str(tree / text))  # an absolute path inside the root
    assert found == tree / (below or text) and name == str(tree / text)


def test_outside_the_root_is_one_answer_whether_the_file_exists_or_not(tree: Path) -> None:
    limits = Limits(root=tree)
    secret = tree.parent / "secret.wav"
    assert secret.is_file()
    outside = [
        "../secret.wav",
        "../no-such.wav",
        str(secret),
        str(tree.parent / "no-such.wav"),
        f"{tree}/../secret.wav",
        "sub/../../secret.wav",
        "/etc/passwd",
        "..\\secret.wav",
        "C:\\secret.wav",
        "a\x00.wav",
        ".",
        str(tree),
    ]
    for text in outside:
        assert _refusal(limits, text) == f"path {text!r} {OUTSIDE}", text
    assert SERVE_ROOT_ENV in OUTSIDE and str(tree) not in _refusal(limits, "../secret.wav")


def test_predict_reads_the_users_own_files(tree: Path) -> None:
    local = Limits.local()
    secret = str(tree.parent / "secret.wav")
    assert local.path(secret) == (Path(secret), secret)
    assert local.max_seconds is None and local.max_bytes is None  # the dataset's cap
    assert local.seconds_note == CUT_IT


def test_the_environment_is_checked_when_the_model_loads(tmp_path: Path) -> None:
    limits = Limits.from_environment(
        {SERVE_ROOT_ENV: str(tmp_path), MAX_SECONDS_ENV: "30", MAX_BYTES_ENV: "1e6"}
    )
    assert (limits.root, limits.max_seconds, limits.max_bytes) == (tmp_path, 30.0, 1_000_000)
    with pytest.raises(ValueError, match=f"{SERVE_ROOT_ENV}=.*not a folder"):
        Limits.from_environment({SERVE_ROOT_ENV: str(tmp_path / "missing")})
    for bad in ("ten", "0", "-5", "nan", "inf"):
        with pytest.raises(ValueError, match=f"{MAX_SECONDS_ENV}='{bad}': expected a positive"):
            Limits.from_environment({MAX_SECONDS_ENV: bad})


def test_a_base64_row_over_the_cap_is_refused_before_it_is_decoded() -> None:
    limits = Limits(max_bytes=1000)
    data = bytes(range(256)) * 4  # 1,024 bytes
    assert limits.base64(base64.b64encode(data[:1000]).decode(), "audio_base64") == data[:1000]
    with pytest.raises(Refused) as caught:
        limits.base64(base64.b64encode(data).decode(), "audio_base64")
    assert str(caught.value) == (
        f"<bytes>: audio_base64 holds 1,024 bytes, above the 1,000-byte cap per row "
        f"({MAX_BYTES_ENV})"
    )
    # Not base64 at all, but too long: the size answers first, nothing is decoded.
    with pytest.raises(Refused, match="holds 3,000 bytes, above the 1,000-byte cap"):
        limits.base64("!" * 4000, "audio_base64")
    with pytest.raises(Refused, match="not valid base64"):
        limits.base64("not base64!", "audio_base64")


def test_the_length_cap_is_read_from_the_header_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _wav(3.0)
    path = tmp_path / "three.wav"
    path.write_bytes(data)
    assert decode(data, max_seconds=3.0)[0].size == 24000  # at the cap: decoded

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded a block of a file over the cap")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    for source, name in ((data, "<bytes>"), (path, str(path))):
        with pytest.raises(AudioError) as caught:
            load_wave(source, 16000, max_seconds=2.5, cap_note=MAX_SECONDS_ENV)
        assert str(caught.value) == (
            f"{name}: audio is 3.0 s long, above the 2.5 s cap ({MAX_SECONDS_ENV})"
        )
    with pytest.raises(AudioError, match=r"above the 1 s cap \(cut it into shorter files\)"):
        decode(data, max_seconds=1)
