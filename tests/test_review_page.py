"""`deepfake-audio review`, used as a person uses it: a real headless Chromium (tests/cdp.py)
chooses a file on the page, waits for the verdict, checks the timeline is drawn, then
chooses a bad file and reads the error. The server is the real command, on a tiny model
built here (what is under test is the page and its rules, not the detector).
Skips with its reason where no Chromium is installed (Debian: `apt-get install chromium`;
.ci/run installs it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from cdp import Browser, find_chromium
from conftest import free_port, tiny_logmel_model, voice
from deepfake_audio.serving.limits import MAX_BYTES_ENV, MAX_SECONDS_ENV

pytestmark = pytest.mark.slow
SHOTS_ENV = "DEEPFAKE_AUDIO_SCREENSHOTS"  # a folder: keep the screenshots there (docs/img)
MAX_BYTES = 1_500_000


def _model(root: Path) -> tuple[Path, Path]:
    from deepfake_audio.config.params import parse_params

    raw = {"features": {"kind": "logmel", "clip_seconds": 1.0, "n_mels": 32}}
    fp = parse_params(raw).features
    model = tiny_logmel_model(fp.n_mels, fp.input_shape)
    model.save(root / "model.keras")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root / "params.yaml", root / "model.keras"


def start_page(params: Path | None, model: str, env: dict[str, str], log: Path) -> tuple:
    """`deepfake-audio review` on a free loopback port; (process, base URL) once it answers."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "deepfake-audio")]
    if params is not None:
        command += ["--params", str(params)]
    command += ["review", "--model", model, "--port", str(port)]
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc, base
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def drive(browser: Browser, base: str, good: Path, bad: Path, shots: Path) -> dict:
    """Upload, verdict, timeline, bad file, error: what the page showed."""
    browser.call("Page.enable")
    browser.call("Page.navigate", url=base + "/")
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
    browser.set_file("#file", good)
    state = browser.wait_for(
        "['scored', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"
    )
    seen = {
        "state": state,
        "error": browser.evaluate("document.getElementById('error').textContent"),
        "verdict": browser.evaluate("document.getElementById('verdict').textContent"),
        "probability": browser.evaluate("document.getElementById('prob').textContent"),
        "bars": browser.evaluate("document.querySelectorAll('#timeline rect.bar').length"),
        "saliency": browser.evaluate("document.getElementById('saliency').naturalWidth"),
    }
    # A click on the timeline at 60 % of its width plays from 60 % of the recording.
    seen["seek"] = browser.evaluate(
        "(() => { const s = document.getElementById('timeline'), b = s.getBoundingClientRect();"
        " s.dispatchEvent(new MouseEvent('click', {clientX: b.left + 0.6 * b.width,"
        " clientY: b.top + 10, bubbles: true}));"
        " return document.getElementById('player').currentTime / duration; })()"
    )
    browser.screenshot(shots / "review-result.png")
    browser.set_file("#file", bad)
    browser.wait_for("document.body.dataset.state === 'error'")
    seen["bad_error"] = browser.evaluate("document.getElementById('error').textContent")
    browser.screenshot(shots / "review-error.png")
    return seen


def test_the_review_page_in_a_real_browser(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    params, model = _model(tmp_path)
    good = tmp_path / "interview.wav"
    sf.write(good, voice(4, 12.0, 22050), 22050, subtype="PCM_16")
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio")
    env = {**os.environ, MAX_BYTES_ENV: str(MAX_BYTES), MAX_SECONDS_ENV: "60"}
    proc, base = start_page(params, str(model), env, tmp_path / "review.log")
    browser = None
    try:
        # The rules without a browser first. Over the cap: refused from Content-Length,
        # before a byte of the body is read (so none is sent here).
        import http.client

        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.putrequest("POST", "/api/score")
        conn.putheader("X-Filename", "above.wav")
        conn.putheader("Content-Length", str(MAX_BYTES + 1))
        conn.endheaders()
        reply = conn.getresponse()
        assert reply.status == 413
        assert json.loads(reply.read())["error"] == (
            f"above.wav: the upload is larger than the 1,500,000-byte cap ({MAX_BYTES_ENV})"
        )
        conn.close()
        request = urllib.request.Request(
            base + "/api/score", data=b"", headers={"X-Filename": "../empty.wav"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == 400  # and the client's folder is not echoed back
        assert json.loads(caught.value.read())["error"] == "empty.wav: empty file (0 bytes)"
        browser = Browser(chromium)
        shots = Path(os.environ.get(SHOTS_ENV) or tmp_path / "shots")
        seen = drive(browser, base, good, bad, shots)
    finally:
        if browser is not None:
            browser.close()
        stop(proc)
    assert seen["state"] == "scored", seen
    verdicts = {"Likely fake", "No fake detected"}
    assert seen["verdict"] in verdicts or seen["verdict"].startswith("Fake passages"), seen
    assert seen["probability"].startswith("P(fake) 0."), seen
    assert seen["bars"] > 10, seen  # the timeline is drawn: 12 s at an eighth of 1 s
    assert seen["saliency"] > 100, seen  # the saliency picture loaded
    assert seen["seek"] == pytest.approx(0.6, abs=0.02), seen
    assert seen["bad_error"].startswith("notes.wav: not a readable audio file"), seen
    assert (shots / "review-result.png").stat().st_size > 20_000
    assert (shots / "review-error.png").stat().st_size > 5_000
