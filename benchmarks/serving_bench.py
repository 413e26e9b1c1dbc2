"""`serving.*`: a registered model behind `mlflow models serve`, and `deepfake-audio predict`.

Set-up, all in the run's temporary work folder: a fresh MLflow server on a free loopback port
(`deepfake_audio.ops.server.start`); a `compact_cnn` at the middle of the notebook's search
space (`MODEL_HPARAMS`; untrained - the weights do not change the cost) on the default
`params.yaml` features, logged with `serving.log_model` - so the served code is this
checkout's - and registered as a version. The clips are 2-4 s recordings: the FoR sample's
(`FOR_SAMPLE`, real speech) when it is there, else generated demo clips of random length;
`details.clips` says which.

Then, side by side in one run:

* `mlflow models serve -m models:/<name>/<version> --env-manager local` (its own process
  group), one clip per request as base64 WAV in `dataframe_split`, one request in ten a bad row
  (not base64, not audio, silent, too short, empty) cycling through `BAD_ROWS`. Our own load
  generator (`load`: threads, one persistent `http.client` connection each, to 127.0.0.1
  only) gives requests/s and p50/p99 latency at concurrency 1 and 8, the HTTP errors, and
  whether every bad row came back `label: error` with its reason (and no good row did). Memory
  is the resident set summed over the server's process group (`/proc`), after the first 100
  requests and after 5,000.
* A second server beside it with `--workers 2` and `DEEPFAKE_AUDIO_THREADS=1`, for
  docs/serving.md: what a second worker buys at concurrency 8 (rounds alternating between the
  two servers) and what it costs (RSS, PSS and private memory of a worker process).
* `deepfake-audio predict --model models:/<name>/<version> --timing` over a folder of 1,000
  clips (the clip set cycled through symbolic links), 3 runs: clips/s over the scoring time the
  command reports, start-up (imports, model download and load) apart.
* In this process, on the same clips as 1-row frames: `Detector.score` (the compiled network)
  against the same `Detector` calling `keras.Model.predict`, interleaved.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Figure, interleaved, log, median, spread
from benchmarks.corpus import Workspace
from benchmarks.features_bench import _deepfake_audio
from benchmarks.pipeline_bench import free_port

FOR_SAMPLE = Path(os.environ.get("DEEPFAKE_AUDIO_FOR_SAMPLE", "/work/shared/datasets/for-sample"))
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0
GENERATED_CLIPS = 40
MODEL_HPARAMS = {
    "filters_1": 64,
    "filters_2": 128,
    "kernel_size_1": 3,
    "kernel_size_2": 3,
    "dense_units": 128,
    "learning_rate": 1e-4,
    "optimizer": "adam",
}
HOST = "127.0.0.1"  # the load generator talks to this address and no other
BAD_EVERY = 10  # request i is a bad row when i % BAD_EVERY == BAD_EVERY - 1
FULL = {
    "c1": 300,
    "c8": 1200,
    "memory_total": 5000,
    "memory_first": 100,
    "two_workers_c1": 100,
    "two_workers_c8": 400,
    "two_workers_rounds": 4,
    "predict_clips": 1000,
    "predict_repeats": 3,
    "ratio_rows": 20,
    "ratio_repeats": 3,
}
QUICK = {
    "c1": 30,
    "c8": 80,
    "memory_total": 300,
    "memory_first": 100,
    "two_workers_c1": 20,
    "two_workers_c8": 40,
    "two_workers_rounds": 2,
    "predict_clips": 40,
    "predict_repeats": 1,
    "ratio_rows": 4,
    "ratio_repeats": 1,
}


# --- the clips and the requests ------------------------------------------------------


def _wav(wave: np.ndarray, rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def clips(folder: Path) -> tuple[list[Path], str]:
    """2-4 s clips: the FoR sample's when present, else generated; and which it was."""
    import soundfile

    if FOR_SAMPLE.is_dir():
        found = []
        for path in sorted(FOR_SAMPLE.rglob("*.wav")):
            try:
                info = soundfile.info(str(path))
            except RuntimeError:
                continue
            if MIN_SECONDS <= info.duration <= MAX_SECONDS:
                found.append(path)
        if len(found) >= 10:
            return found, f"FoR sample ({FOR_SAMPLE}): {len(found)} real clips of 2-4 s"
    from deepfake_audio.sources.demo import generate_clip, plan_corpus

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    made = []
    for demo in plan_corpus(7, {"train": 0, "validation": 0, "test": GENERATED_CLIPS}):
        seconds = float(rng.uniform(MIN_SECONDS, MAX_SECONDS))
        path = folder / f"{demo.clip_id}.wav"
        path.write_bytes(_wav(generate_clip(demo, sample_rate=16000, clip_seconds=seconds), 16000))
        made.append(path)
    return made, f"generated demo clips (no FoR sample at {FOR_SAMPLE}): {len(made)} of 2-4 s"


def bad_rows() -> list[tuple[str, str]]:
    """(base64 column value, the reason the answer must name) for each kind of bad row."""
    rng = np.random.default_rng(3)
    b64 = base64.b64encode
    return [
        ("this is not base64!", "not valid base64"),
        (b64(b"RIFF\x10\x00\x00\x00WAVEthis is not audio").decode(), "not a readable audio file"),
        (b64(_wav(np.zeros(32000, np.float32), 16000)).decode(), "silent"),
        (b64(_wav(0.1 * rng.normal(size=400).astype(np.float32), 16000)).decode(), "too short"),
        ("", "no audio_base64 given"),
    ]


def request_body(value: str) -> bytes:
    frame = {"columns": ["audio_base64"], "data": [[value]]}
    return json.dumps({"dataframe_split": frame}).encode()


class Requests:
    """Request i of a run: a good clip, or (one in BAD_EVERY) a bad row and its reason."""

    def __init__(self, good: list[bytes], bad: list[tuple[str, str]]) -> None:
        self.good = [request_body(base64.b64encode(raw).decode()) for raw in good]
        self.bad = [(request_body(value), reason) for value, reason in bad]

    def __getitem__(self, i: int) -> tuple[bytes, str | None]:
        if i % BAD_EVERY == BAD_EVERY - 1:
            body, reason = self.bad[(i // BAD_EVERY) % len(self.bad)]
            return body, reason
        return self.good[i % len(self.good)], None


# --- the load generator ------------------------------------------------------------------


@dataclass
class LoadResult:
    """One run of `load`: what came back, and how long each request took."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    http_errors: int = 0
    bad_rows: int = 0
    bad_rows_unexplained: int = 0
    good_rows_failed: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000.0, q))

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.per_second, 2),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p90_ms": round(self.percentile_ms(90), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "max_ms": round(max(self.latencies) * 1000.0, 2),
            "http_errors": self.http_errors,
            "bad_rows": self.bad_rows,
            "bad_rows_unexplained": self.bad_rows_unexplained,
            "good_rows_failed": self.good_rows_failed,
            "examples": self.examples[:5],
        }


def _check(status: int, payload: bytes, reason: str | None, result: LoadResult) -> None:
    """Count what is wrong with one answer (the caller holds the lock)."""
    if reason is not None:
        result.bad_rows += 1
    if status != 200:
        result.http_errors += 1
        result.examples.append(f"HTTP {status}: {payload[:200]!r}")
        return
    try:
        (row,) = json.loads(payload)["predictions"]
    except (ValueError, KeyError, TypeError):
        result.http_errors += 1
        result.examples.append(f"unreadable answer {payload[:200]!r}")
        return
    if reason is not None:
        if row.get("label") != "error" or reason not in str(row.get("error", "")):
            result.bad_rows_unexplained += 1
            result.examples.append(f"bad row ({reason}) answered {row}")
    elif row.get("label") not in ("real", "fake") or row.get("error"):
        result.good_rows_failed += 1
        result.examples.append(f"good row answered {row}")


def load(port: int, requests: Requests, count: int, concurrency: int, first: int = 0) -> LoadResult:
    """Send requests `first`..`first + count - 1` from `concurrency` threads; wait for all.

    Each thread keeps one HTTP/1.1 connection (reopened after an error) and takes the next
    request number as soon as its previous answer is in: a closed loop, so the offered load is
    what the server sustains.
    """
    result = LoadResult()
    lock = threading.Lock()
    state = {"next": first}
    end = first + count
    headers = {"Content-Type": "application/json"}

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            while True:
                with lock:
                    i = state["next"]
                    if i >= end:
                        return
                    state["next"] = i + 1
                body, reason = requests[i]
                started = time.perf_counter()
                try:
                    connection.request("POST", "/invocations", body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, port, timeout=120)
                    status, payload = -1, repr(exc).encode()
                elapsed = time.perf_counter() - started
                with lock:
                    result.requests += 1
                    result.latencies.append(elapsed)
                    _check(status, payload, reason, result)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result


# --- the server and its memory -----------------------------------------------------------


def group_memory(pgid: int) -> dict[str, Any]:
    """RSS (and PSS) of every process in process group `pgid`, from /proc, in MiB."""
    page = os.sysconf("SC_PAGE_SIZE")
    processes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            resident = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
            pss, private = None, 0
            for line in Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1]) * 1024
            raw = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        processes.append(
            {
                "pid": int(entry),
                "rss_mib": round(resident / 2**20, 1),
                "pss_mib": None if pss is None else round(pss / 2**20, 1),
                "uss_mib": round(private / 2**20, 1),
                "command": raw.decode(errors="replace")[:160],
            }
        )
    return {
        "rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
        "pss_mib": round(sum(p["pss_mib"] or 0.0 for p in processes), 1),
        "processes": sorted(processes, key=lambda p: p["pid"]),
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of group `pgid`, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def measured(server: ModelServer, requests: Requests, count: int, clients: int, first: int):
    """`load` plus what it cost: load averages around it, server and client CPU a request."""
    averages = [round(x, 2) for x in os.getloadavg()]
    server_cpu = group_cpu_seconds(server.proc.pid)
    client_cpu = time.process_time()
    result = load(server.port, requests, count, clients, first=first)
    cost = {
        "load_average_before": averages,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "server_cpu_ms_per_request": round(
            (group_cpu_seconds(server.proc.pid) - server_cpu) * 1000 / max(count, 1), 2
        ),
        "client_cpu_ms_per_request": round(
            (time.process_time() - client_cpu) * 1000 / max(count, 1), 2
        ),
    }
    return result, cost


class ModelServer:
    """`mlflow models serve` of one model URI in its own process group; stopped on exit."""

    def __init__(
        self, uri: str, folder: Path, env: dict[str, str], workers: int = 1, threads: int = 0
    ) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "serve.log"
        env = dict(env)
        if threads:
            env["DEEPFAKE_AUDIO_THREADS"] = str(threads)
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait(timeout=600)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {self.tail()}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer /ping: {self.tail()}")
            time.sleep(0.5)

    def tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def memory(self) -> dict[str, Any]:
        return group_memory(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM to the whole group (mlflow -> uvicorn -> workers), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the model -------------------------------------------------------------------------


def register_model(ws: Workspace, url: str, name: str) -> tuple[str, Path, dict[str, Any]]:
    """Build, log (this checkout's serving code) and register the model: URI, .keras, config."""
    import mlflow

    from deepfake_audio.models import network
    from deepfake_audio.serving import pyfunc as serving

    params = ws.params()
    fp = params.features
    model = network.build(
        MODEL_HPARAMS,
        "compact_cnn",
        fp.input_shape,
        np.full(fp.n_mels, -45.0, np.float32),
        np.full(fp.n_mels, 18.0, np.float32),
    )
    keras_path = ws.root / "serving" / "model.keras"
    model.save(keras_path)
    config = serving.make_config(params.section("features"), threshold=0.0)
    mlflow.set_tracking_uri(url)
    # MLflow prints run links and registry notes on stdout, which holds the Markdown table.
    with contextlib.redirect_stdout(sys.stderr):
        mlflow.set_experiment("serving-bench")
        with mlflow.start_run(run_name="serving-bench"):
            info = serving.log_model(keras_path, config)
        version = mlflow.register_model(info.model_uri, name)
    return f"models:/{name}/{version.version}", keras_path, config


# --- predict ---------------------------------------------------------------------------


TIMING = re.compile(
    r"loaded in (?P<load>[0-9.]+) s; (?P<files>\d+) files \((?P<windows>\d+) windows\) "
    r"scored in (?P<score>[0-9.]+) s"
)


def _predict(uri: str, folder: Path, env: dict[str, str], expect: int) -> dict[str, float]:
    """One `deepfake-audio predict --timing` run: wall, model load, scoring, its CPU seconds."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [_deepfake_audio(), "predict", "--model", uri, "--timing", str(folder)],
        cwd=folder.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = proc.stdout.strip().splitlines()
    found = TIMING.search(proc.stderr)
    if proc.returncode != 0 or len(lines) != expect + 1 or found is None:
        raise RuntimeError(
            f"deepfake-audio predict exited {proc.returncode} with {len(lines) - 1} rows "
            f"(expected {expect}): {proc.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall": wall,
        "load": float(found["load"]),
        "score": float(found["score"]),
        "windows": float(found["windows"]),
        "startup": wall - float(found["score"]),
        "cpu": cpu,
    }


def predict_figures(
    uri: str, sources: list[Path], base: Path, env: dict[str, str], sizes: dict[str, int]
) -> list[Figure]:
    many = sizes["predict_clips"]
    folder = base / f"predict-{many}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(many):
        (folder / f"clip_{i:05d}.wav").symlink_to(sources[i % len(sources)])
    runs = []
    for _ in range(sizes["predict_repeats"]):
        log(f"serving: deepfake-audio predict --timing over {many} clips")
        runs.append(_predict(uri, folder, env, many))
    rates = [many / r["score"] for r in runs]
    startup = [r["startup"] for r in runs]
    details = {
        "clips": many,
        "windows": runs[0]["windows"],
        "clips_per_second": spread(rates),
        "scoring_seconds": spread([r["score"] for r in runs]),
        "startup_seconds": spread(startup),
        "model_load_seconds": spread([r["load"] for r in runs]),
        "wall_seconds": spread([r["wall"] for r in runs]),
        "process_cpu_seconds": spread([r["cpu"] for r in runs]),
        "how": (
            f"`deepfake-audio predict --model {uri} --timing DIR` (CSV on stdout): scoring is "
            "the time from the model loaded to the last row scored, as the command reports "
            "it; start-up is the rest of the wall time (Python and TensorFlow imports, model "
            "download and load, the CSV)"
        ),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return [
        Figure(
            key="serving.predict_clips_per_second",
            value=median(rates),
            unit="clips/s",
            repeats=len(runs),
            compared=f"`deepfake-audio predict` over {many} 2-4 s clips, start-up excluded",
            target=">= 200",
            details=details,
        ),
        Figure(
            key="serving.predict_startup_seconds",
            value=median(startup),
            unit="s",
            repeats=len(runs),
            compared="`deepfake-audio predict` wall time less its scoring: imports, model load",
            details=details,
        ),
    ]


# --- in-process: compiled network vs Model.predict ------------------------------------------


def ratio_figure(keras_path: Path, config: dict[str, Any], sources: list[Path], sizes) -> Figure:
    import pandas as pd

    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.serving.inference import configure_threads

    configure_threads()
    model = serving.load_keras(keras_path)

    class PredictDetector(serving.Detector):
        """The serving path before: the network through `keras.Model.predict`."""

        def logits(self, inputs: np.ndarray) -> np.ndarray:
            out = self.model.predict(inputs, batch_size=64, verbose=0)
            return np.asarray(out, dtype=np.float64).reshape(-1)

    fast = serving.Detector(model, config)
    slow = PredictDetector(model, config)
    rows = sources[: sizes["ratio_rows"]]
    frames = [
        pd.DataFrame({"audio_base64": [base64.b64encode(p.read_bytes()).decode()]}) for p in rows
    ]
    together = pd.concat(frames, ignore_index=True)
    same = np.allclose(
        fast.score(together)["fake_probability"].astype(float),
        slow.score(together)["fake_probability"].astype(float),
        rtol=1e-5,
        atol=1e-5,
    )

    def candidate(detector: Any) -> Any:
        def run() -> float:
            started = time.perf_counter()
            for frame in frames:
                detector.score(frame)
            return (time.perf_counter() - started) / len(frames)

        return run

    times = interleaved(
        {"compiled": candidate(fast), "keras_predict": candidate(slow)},
        repeats=sizes["ratio_repeats"],
    )
    ours, theirs = median(times["compiled"]), median(times["keras_predict"])
    return Figure(
        key="serving.speedup_vs_keras_predict",
        value=theirs / ours,
        unit="x",
        repeats=sizes["ratio_repeats"],
        compared=(
            f"`Detector.score` of one 2-4 s clip a call ({len(frames)} clips), the network "
            "compiled once at load vs through `keras.Model.predict`, same rows, interleaved"
        ),
        details={
            "ms_per_row_compiled": spread([t * 1000 for t in times["compiled"]]),
            "ms_per_row_keras_predict": spread([t * 1000 for t in times["keras_predict"]]),
            "same_numbers_to_1e-5": bool(same),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    )


# --- the section -------------------------------------------------------------------------


def _served(
    server: ModelServer, uri: str, requests: Requests, sizes: dict[str, int]
) -> list[Figure]:
    """One worker, default threads: the targets' figures (the caller starts and stops it)."""
    idle = server.memory()
    first = sizes["memory_first"]
    warm = load(server.port, requests, first, 8, first=0)
    after_first = server.memory()
    sent = first
    log(f"serving: concurrency 1, {sizes['c1']} requests")
    c1, load_1 = measured(server, requests, sizes["c1"], 1, sent)
    sent += sizes["c1"]
    log(f"serving: concurrency 8, {sizes['c8']} requests")
    c8, load_8 = measured(server, requests, sizes["c8"], 8, sent)
    sent += sizes["c8"]
    rest = max(0, sizes["memory_total"] - sent)
    log(f"serving: {rest} more requests at concurrency 8 (memory after {sent + rest})")
    tail = load(server.port, requests, rest, 8, first=sent)
    sent += rest
    after_all = server.memory()
    runs = [warm, c1, c8, tail]
    http_errors = sum(r.http_errors for r in runs)
    unexplained = sum(r.bad_rows_unexplained + r.good_rows_failed for r in runs)
    bad = sum(r.bad_rows for r in runs)
    growth = after_all["rss_mib"] / after_first["rss_mib"]
    common = {
        "clients": "threads of this process, one keep-alive http.client connection each",
        "bad_rows": f"1 request in {BAD_EVERY}",
        "server": f"`mlflow models serve -m {uri} --env-manager local --workers 1`",
        "startup_seconds": round(server.startup_seconds, 1),
    }
    figures = [
        Figure(
            "serving.c1_requests_per_second",
            c1.per_second,
            "req/s",
            1,
            "one client, one 2-4 s clip a request (base64 WAV), 1 in 10 a bad row",
            ">= 30",
            {**common, **c1.summary(), **load_1},
        ),
        Figure(
            "serving.c1_p50_ms",
            c1.percentile_ms(50),
            "ms",
            1,
            "median latency, one client",
            "<= 25",
            {**common, **c1.summary(), **load_1},
        ),
        Figure(
            "serving.c1_p99_ms",
            c1.percentile_ms(99),
            "ms",
            1,
            "99th percentile latency, one client",
            None,
            {**load_1},
        ),
        Figure(
            "serving.c8_requests_per_second",
            c8.per_second,
            "req/s",
            1,
            "8 concurrent clients, one 2-4 s clip a request, 1 in 10 a bad row",
            ">= 50",
            {**common, **c8.summary(), **load_8},
        ),
        Figure(
            "serving.c8_p50_ms",
            c8.percentile_ms(50),
            "ms",
            1,
            "median latency, 8 clients",
            None,
            {**load_8},
        ),
        Figure(
            "serving.c8_p99_ms",
            c8.percentile_ms(99),
            "ms",
            1,
            "99th percentile latency, 8 clients",
            "<= 500",
            {**common, **c8.summary(), **load_8},
        ),
        Figure(
            "serving.http_errors",
            float(http_errors),
            "requests",
            1,
            f"answers other than HTTP 200 with one prediction, over all {sent} requests",
            "<= 0",
            {"examples": [e for r in runs for e in r.examples][:10]},
        ),
        Figure(
            "serving.rows_misanswered",
            float(unexplained),
            "rows",
            1,
            f"bad rows ({bad} of {sent}) not answered `label: error` with their reason, plus "
            "good rows answered with an error",
            "<= 0",
            {"examples": [e for r in runs for e in r.examples][:10]},
        ),
        Figure(
            "serving.memory_growth_5000_vs_100",
            growth,
            "ratio",
            1,
            f"server RSS (process group, /proc) after {sent} requests over after {first}",
            "<= 1.1",
            {
                "idle_mib": idle,
                f"after_{first}_mib": after_first,
                f"after_{sent}_mib": after_all,
            },
        ),
        Figure(
            "serving.server_rss_mib",
            after_all["rss_mib"],
            "MiB",
            1,
            f"server RSS summed over its process group after {sent} requests, 1 worker",
            None,
            {"after": after_all, "idle": idle},
        ),
    ]
    return figures


def _two_workers(
    one: ModelServer, two: ModelServer, uri: str, requests: Requests, sizes: dict[str, int]
) -> list[Figure]:
    """1 worker against 2 workers at 8 clients, both servers up, rounds interleaved."""
    load(two.port, requests, 40, 4, first=0)
    rates: dict[str, list[float]] = {"one": [], "two": []}
    p99: dict[str, list[float]] = {"one": [], "two": []}
    costs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    servers = {"one": one, "two": two}
    wrong = 0
    for r in range(sizes["two_workers_rounds"]):
        for name in ("one", "two") if r % 2 == 0 else ("two", "one"):
            result, cost = measured(servers[name], requests, sizes["two_workers_c8"], 8, 0)
            rates[name].append(result.per_second)
            wrong += result.http_errors + result.bad_rows_unexplained + result.good_rows_failed
            p99[name].append(result.percentile_ms(99))
            costs[name].append(cost)
    c1, cost_1 = measured(two, requests, sizes["two_workers_c1"], 1, 0)
    memory = two.memory()
    workers = [p for p in memory["processes"] if "multiprocessing" in p["command"]]
    per_worker_pss = median([p["pss_mib"] for p in workers if p["pss_mib"]] or [float("nan")])
    per_worker_uss = median([p["uss_mib"] for p in workers] or [float("nan")])
    per_worker_rss = median([p["rss_mib"] for p in workers] or [float("nan")])
    details = {
        "c8_requests_per_second_1_worker": spread(rates["one"]),
        "c8_requests_per_second_2_workers": spread(rates["two"]),
        "c8_p99_ms_1_worker": spread(p99["one"]),
        "c8_p99_ms_2_workers": spread(p99["two"]),
        "c8_costs_1_worker": costs["one"],
        "c8_costs_2_workers": costs["two"],
        "c1_2_workers": {**c1.summary(), **cost_1},
        "requests_answered_wrong": wrong + c1.http_errors + c1.bad_rows_unexplained,
        "memory_2_workers": memory,
        "worker_rss_mib": per_worker_rss,
        "worker_pss_mib": per_worker_pss,
        "worker_uss_mib": per_worker_uss,
        "servers": f"`mlflow models serve -m {uri} --env-manager local`: --workers 1 with "
        "default threads (the server above) against --workers 2 with DEEPFAKE_AUDIO_THREADS=1",
    }
    return [
        Figure(
            "serving.two_workers_c8_speedup",
            median(rates["two"]) / median(rates["one"]),
            "x",
            len(rates["two"]),
            f"requests/s at 8 clients, {sizes['two_workers_c8']} requests a round: "
            "--workers 2 (DEEPFAKE_AUDIO_THREADS=1) over --workers 1, both servers up, "
            "rounds interleaved",
            None,
            details,
        ),
        Figure(
            "serving.two_workers_c8_requests_per_second",
            median(rates["two"]),
            "req/s",
            len(rates["two"]),
            "as serving.c8_requests_per_second, with --workers 2 and DEEPFAKE_AUDIO_THREADS=1",
            None,
            details,
        ),
        Figure(
            "serving.worker_uss_mib",
            per_worker_uss,
            "MiB",
            1,
            "private memory (USS) of one uvicorn worker process, model loaded and warm: what "
            "one more worker costs (its RSS and PSS are in details)",
            None,
            details,
        ),
    ]


def run(ws: Workspace) -> list[Figure]:
    from deepfake_audio.ops import server as tracking_server

    sizes = QUICK if ws.quick else FULL
    base = ws.root / "serving"
    base.mkdir(parents=True, exist_ok=True)
    sources, which = clips(base / "generated")
    log(f"serving: clips: {which}")
    store = base / "mlflow"
    port = free_port()
    url = tracking_server.start(root=store, port=port, timeout=180)
    figures: list[Figure] = []
    try:
        from deepfake_audio.serving.pyfunc import package_dir

        uri, keras_path, config = register_model(ws, url, "serving-bench")
        log(f"serving: registered {uri}")
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        requests = Requests([p.read_bytes() for p in sources], bad_rows())
        log("serving: starting `mlflow models serve` (1 worker)")
        with ModelServer(uri, base / "server-1", env) as one:
            log(f"serving: up in {one.startup_seconds:.0f} s on port {one.port}")
            figures += _served(one, uri, requests, sizes)
            log("serving: starting `mlflow models serve --workers 2` (DEEPFAKE_AUDIO_THREADS=1)")
            with ModelServer(uri, base / "server-2", env, workers=2, threads=1) as two:
                log("serving: 1 worker against 2 workers at 8 clients, interleaved")
                figures += _two_workers(one, two, uri, requests, sizes)
        figures += predict_figures(uri, sources, base, env, sizes)
        log("serving: in-process compiled network vs keras.Model.predict")
        figures.append(ratio_figure(keras_path, config, sources, sizes))
    finally:
        tracking_server.stop(store)
    for figure in figures:
        figure.details.setdefault("clips", which)
        figure.details.setdefault("model", {"architecture": "compact_cnn", **MODEL_HPARAMS})
        figure.details.setdefault("served_code", str(package_dir()))
    return figures
