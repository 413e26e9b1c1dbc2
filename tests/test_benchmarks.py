"""The benchmark suite (benchmarks/): its output format, and a quick real run of the cheap parts.

No timing is asserted anywhere: this machine is shared and noisy, and a figure that misses
its target is a finding for the report, not a broken build.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(PROJECT))

from benchmarks.common import (  # noqa: E402
    Figure,
    interleaved,
    machine,
    markdown_table,
    write_json_atomic,
)
from benchmarks.run import SECTIONS, parse_sections  # noqa: E402

MACHINE_KEYS = {"cpu_model", "logical_cores", "ram_gib", "gpu", "python", "versions", "date"}
VERSION_KEYS = {"tensorflow", "keras", "numpy", "librosa"}
CHEAP_FIGURES = {
    "features.speedup_vs_librosa",
    "features.speedup_vs_librosa_single_process",
    "features.stage_speedup_vs_librosa",
    "features.peak_memory_mb",
    "features.peak_memory_ratio_4n_vs_n",
    "input_pipeline.speedup_vs_imagedatagenerator",
    "input_pipeline.streaming_speedup_vs_imagedatagenerator",
}


def test_figure_target_and_json() -> None:
    fig = Figure("a.b", 2.5, "x", 3, "ours vs theirs", target=">= 3", details={"n": 1.0})
    assert fig.met is False
    assert Figure("a.b", 1.1, "x", 3, "flat", target="<= 1.25").met is True
    assert Figure("a.b", 1.0, "s", 1, "no target").met is None
    out = fig.as_json()
    assert out["value"] == 2.5 and out["repeats"] == 3 and out["met"] is False
    assert "key" not in out
    assert Figure("a.b", 1.0, "s", 1, "c", details={"bad": math.nan}).as_json()["details"] == {
        "bad": None
    }


def test_interleaved_discards_warmup_and_repeats() -> None:
    calls: list[str] = []

    def make(name: str):
        def candidate() -> float:
            calls.append(name)
            return float(len(calls))

        return candidate

    times = interleaved({"a": make("a"), "b": make("b")}, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert len(calls) == 8  # one warm-up each, then three rounds
    assert calls[2:4] == ["a", "b"] and calls[4:6] == ["b", "a"]  # the order rotates


def test_write_json_atomic_and_table(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "bench.json"
    figures = {"x.y": Figure("x.y", 4.0, "x", 3, "a | b", target=">= 3").as_json()}
    write_json_atomic(out, {"figures": figures})
    assert json.loads(out.read_text())["figures"]["x.y"]["value"] == 4.0
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temp file left
    table = markdown_table(figures)
    assert table.splitlines()[0].startswith("| figure | value | unit | repeats |")
    assert "`x.y`" in table and "a \\| b" in table


def test_machine_block() -> None:
    block = machine()
    assert set(block) >= MACHINE_KEYS
    assert set(block["versions"]) >= VERSION_KEYS
    assert block["logical_cores"] >= 1 and block["ram_gib"] > 0


def test_sections() -> None:
    assert parse_sections(None) == list(SECTIONS)
    assert parse_sections("input_pipeline,features") == ["features", "input_pipeline"]
    assert parse_sections("tune") == ["pipeline"]
    with pytest.raises(SystemExit):
        parse_sections("features,nope")


def test_render_is_a_224_rgb_picture() -> None:
    from benchmarks.corpus import colour_lut, render

    logmel = np.linspace(-100.0, 0.0, 64 * 201, dtype=np.float32).reshape(64, 201)
    image = render(logmel, colour_lut())
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert image.std() > 0


@pytest.mark.slow
def test_quick_run_of_the_cheap_sections(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "features,input_pipeline",
            "--out",
            str(out),
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert set(report["machine"]) >= MACHINE_KEYS
    assert set(report["machine"]["versions"]) >= VERSION_KEYS
    assert report["settings"]["quick"] is True
    figures = report["figures"]
    assert set(figures) >= CHEAP_FIGURES
    for key in CHEAP_FIGURES:
        fig = figures[key]
        assert isinstance(fig["value"], int | float), key
        assert math.isfinite(fig["value"]) and fig["value"] > 0, (key, fig["value"])
        assert fig["unit"] and fig["compared"], key
        assert isinstance(fig["repeats"], int) and fig["repeats"] >= 1, key
    assert figures["features.speedup_vs_librosa"]["details"]["synthetic_demo_corpus"] is True
    for key in CHEAP_FIGURES:
        assert f"`{key}`" in proc.stdout  # the Markdown table


@pytest.mark.slow
def test_quick_run_of_the_architectures_section(tmp_path: Path) -> None:
    """The section's harness: each planned architecture built on its own input kind, trained
    for two epochs and timed (--quick plans two cheap ones: every architecture's build and
    training is the end-to-end test's job, AASIST-L's size test_reference_models.py's)."""
    from benchmarks.architectures_bench import PLAN, QUICK_PLAN

    from deepfake_audio.config.architectures import catalogue

    out = tmp_path / "benchmarks.json"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "architectures"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    figures = report["figures"]
    measured = {key.rsplit(".", 1)[1] for key in figures}
    assert measured == {arch for arch, _ in QUICK_PLAN}
    # The full plan: every architecture but the notebook's image CNN (the `train` section's).
    assert {arch for arch, _ in PLAN} == set(catalogue()) - {"seed_cnn"}
    for arch in measured:
        speed = figures[f"architectures.samples_per_second.{arch}"]
        assert math.isfinite(speed["value"]) and speed["value"] > 0, arch
        size = figures[f"architectures.trainable_params.{arch}"]
        assert size["value"] == speed["details"]["trainable_params"] > 0, arch


def _fake_model_server(answer):
    """A loopback HTTP server whose /invocations answers `answer(value) -> (status, row)`."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            (value,) = body["dataframe_split"]["data"][0]
            status, row = answer(value)
            payload = json.dumps({"predictions": [row]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_serving_load_generator_counts_what_it_must() -> None:
    """Every request answered and timed; bad rows must come back as errors with their reason."""
    from benchmarks.serving_bench import BAD_EVERY, Requests, bad_rows, load

    bad = bad_rows()
    reasons = dict(bad)

    def honest(value: str):
        if value in reasons:
            return 200, {"label": "error", "error": f"<bytes>: {reasons[value]}"}
        return 200, {"label": "real", "error": "", "fake_probability": 0.2}

    def sloppy(value: str):
        if value == bad[0][0]:
            return 200, {"label": "real", "error": ""}  # a bad row scored as if good
        if value == bad[1][0]:
            return 500, {}
        return honest(value)

    requests = Requests([b"one", b"two", b"three"], bad)
    assert [requests[i][1] is not None for i in range(BAD_EVERY)] == [False] * 9 + [True]
    server = _fake_model_server(honest)
    try:
        result = load(server.server_address[1], requests, 100, 4)
    finally:
        server.shutdown()
    assert result.requests == 100 and len(result.latencies) == 100
    assert result.bad_rows == 10 and result.bad_rows_unexplained == 0
    assert result.http_errors == 0 and result.good_rows_failed == 0
    assert result.per_second > 0 and 0 < result.percentile_ms(50) <= result.percentile_ms(99)

    server = _fake_model_server(sloppy)
    try:
        result = load(server.server_address[1], requests, 100, 3)
    finally:
        server.shutdown()
    assert result.requests == 100
    assert result.http_errors == 2 and result.bad_rows_unexplained == 2, result.summary()


def test_group_memory_reads_this_process_group() -> None:
    import os

    from benchmarks.serving_bench import group_cpu_seconds, group_memory

    memory = group_memory(os.getpgid(0))
    assert os.getpid() in [p["pid"] for p in memory["processes"]]
    assert memory["rss_mib"] > 10
    assert group_cpu_seconds(os.getpgid(0)) > 0


SERVING_FIGURES = {
    "serving.c1_requests_per_second",
    "serving.c1_p50_ms",
    "serving.c8_requests_per_second",
    "serving.c8_p99_ms",
    "serving.http_errors",
    "serving.rows_misanswered",
    "serving.memory_growth_5000_vs_100",
    "serving.server_rss_mib",
    "serving.two_workers_c8_requests_per_second",
    "serving.two_workers_c8_speedup",
    "serving.worker_uss_mib",
    "serving.predict_clips_per_second",
    "serving.predict_startup_seconds",
    "serving.speedup_vs_keras_predict",
}


@pytest.mark.slow
def test_quick_run_of_the_serving_section(tmp_path: Path) -> None:
    """Real servers, real requests: every answer right; no timing asserted."""
    out = tmp_path / "benchmarks.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "serving", "--out", str(out)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert set(figures) >= SERVING_FIGURES
    assert figures["serving.http_errors"]["value"] == 0
    assert figures["serving.rows_misanswered"]["value"] == 0
    for key in SERVING_FIGURES - {"serving.http_errors", "serving.rows_misanswered"}:
        assert math.isfinite(figures[key]["value"]) and figures[key]["value"] > 0, key
    assert figures["serving.speedup_vs_keras_predict"]["details"]["same_numbers_to_1e-5"]
    assert figures["serving.two_workers_c8_speedup"]["details"]["requests_answered_wrong"] == 0
    assert "clips" in figures["serving.c1_p50_ms"]["details"]
    assert proc.stdout.lstrip().startswith("## Benchmarks")  # nothing else on stdout
