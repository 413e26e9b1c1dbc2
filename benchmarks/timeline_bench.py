"""`timeline.*`: `deepfake-audio predict --timeline` over a 60-minute file against a 1-minute one.

The claim (serving/timeline.py): memory stays flat in the recording's length, time grows
linearly. Set-up, in the run's work folder: the project's params.yaml (its default features
and architecture), an untrained model of that architecture saved as a .keras file (the
weights do not change the cost), and two 16 kHz 16-bit WAVs of the synthetic demo corpus's
speech (`sources.demo`: one minute generated, tiled to the long file's length, written block
by block so this process stays small too).

Each measurement is a fresh `deepfake-audio predict --timeline --timing` process, started
by a small fresh Python wrapper that reports `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`:
the peak resident set of that one command and nothing else. Runs alternate short, long,
short, ... (`REPEATS` of each; the long file once under --quick) so a busy minute hits both.

Figures: the peak-RSS ratio long/short (target <= 1.10, the issue's "within 10 %"), the
scoring time per audio hour, and the time ratio long/short over the scoring time the command
reports (start-up, TensorFlow's import and the model load, apart: it does not grow with the
file), against the length ratio (60: linear).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Figure, log, median
from benchmarks.corpus import Workspace
from benchmarks.features_bench import _deepfake_audio

SHORT_S, LONG_S = 60.0, 3600.0
QUICK_SHORT_S, QUICK_LONG_S = 10.0, 60.0
REPEATS = 2
RATE = 16000
WRAPPER = (
    "import resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, "
    "text=True)\n"
    "sys.stderr.write(proc.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(proc.returncode)\n"
)
TIMING = re.compile(r"timing: .* scored in ([0-9.]+) s")


def write_speech(path: Path, seconds: float, source: np.ndarray) -> None:
    """`seconds` of `source` tiled, written in blocks (16-bit PCM)."""
    import soundfile as sf

    total = int(round(seconds * RATE))
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
        written = 0
        while written < total:
            part = source[: total - written]
            out.write(part)
            written += part.size


def make_model(ws: Workspace, folder: Path) -> tuple[Path, Path]:
    """params.yaml (the project's defaults) and an untrained model of its architecture."""
    import yaml

    from benchmarks.corpus import project_params_raw
    from deepfake_audio.config.params import parse_params
    from deepfake_audio.models import network

    raw = project_params_raw()
    params = parse_params(raw)
    params_path = folder / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    fp = params.features
    values = {name: _middle(spec) for name, spec in params.tune.search_space.items()}
    shape = tuple(fp.input_shape)
    rows = shape[0]  # the spectral rows the normalisation runs along (norm_axis 1)
    model = network.build(
        values,
        params.model.architecture,
        shape,
        np.zeros(rows, np.float32),
        np.ones(rows, np.float32),
        fp.feature_kind.norm_axis,
        features=fp,
    )
    model_path = folder / "model.keras"
    model.save(model_path)
    return params_path, model_path


def _middle(spec: Any) -> Any:
    """A hyperparameter's middle value (a choice's first)."""
    if hasattr(spec, "values"):
        return spec.values[0]
    low, high = spec.min, spec.max
    if isinstance(low, int) and isinstance(high, int):
        step = getattr(spec, "step", None) or 1
        return low + ((high - low) // step // 2) * step
    if getattr(spec, "sampling", "") == "log":
        return float(np.sqrt(low * high))
    return (low + high) / 2


def measure(params: Path, model: Path, wav: Path) -> dict[str, float]:
    """One fresh `predict --timeline` process: peak RSS (MiB), wall and scoring seconds."""
    import time

    cmd = [
        sys.executable,
        "-c",
        WRAPPER,
        _deepfake_audio(),
        "--params",
        str(params),
        "predict",
        str(wav),
        "--model",
        str(model),
        "--timeline",
        "--timing",
        "--format",
        "csv",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"predict --timeline {wav.name} failed: {proc.stderr[-2000:]}")
    found = TIMING.search(proc.stderr)
    if found is None:
        raise RuntimeError(f"no timing line in: {proc.stderr[-2000:]}")
    rss_kib = int(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mib": rss_kib / 1024, "wall_s": wall, "scoring_s": float(found.group(1))}


def run(ws: Workspace) -> list[Figure]:
    from deepfake_audio.sources import demo

    folder = ws.root / "timeline"
    folder.mkdir(parents=True, exist_ok=True)
    short_s, long_s = (QUICK_SHORT_S, QUICK_LONG_S) if ws.quick else (SHORT_S, LONG_S)
    params, model = make_model(ws, folder)
    from benchmarks.corpus import project_params_raw
    from deepfake_audio.config.params import parse_params

    project = parse_params(project_params_raw())
    window = project.features.clip_seconds
    plan = demo.plan_corpus(0, {"test": 4})
    speech = demo.generate_clip(plan[0], RATE, 60.0)
    short, long = folder / "short.wav", folder / "long.wav"
    write_speech(short, short_s, speech)
    write_speech(long, long_s, speech)
    log(f"timeline: {short_s:g} s and {long_s:g} s files written")
    runs: dict[str, list[dict[str, float]]] = {"short": [], "long": []}
    long_repeats = 1 if ws.quick else REPEATS
    for i in range(max(REPEATS, long_repeats)):
        runs["short"].append(measure(params, model, short))
        if i < long_repeats:
            runs["long"].append(measure(params, model, long))
        log(f"timeline: round {i + 1}: {runs['short'][-1]} / {runs['long'][-1]}")
    rss = {k: median([r["peak_rss_mib"] for r in v]) for k, v in runs.items()}
    scoring = {k: median([r["scoring_s"] for r in v]) for k, v in runs.items()}
    details = {
        "files_s": {"short": short_s, "long": long_s},
        "runs": runs,
        "model": f"untrained {project.model.architecture} on {project.features.kind}, "
        f"{window:g} s windows every {window / 8:g} s",
        "synthetic_demo_corpus": True,
    }
    compared = f"predict --timeline, {long_s / 60:g}-minute file vs {short_s / 60:g}-minute file"
    return [
        Figure(
            "timeline.peak_rss_ratio",
            round(rss["long"] / rss["short"], 3),
            "x",
            len(runs["long"]),
            f"{compared}: peak RSS of the command, long / short "
            f"({rss['long']:.0f} / {rss['short']:.0f} MiB)",
            target="<= 1.1",
            details=details,
        ),
        Figure(
            "timeline.scoring_time_ratio",
            round(scoring["long"] / scoring["short"], 2),
            "x",
            len(runs["long"]),
            f"{compared}: scoring time long / short, start-up apart "
            f"(length ratio {long_s / short_s:g}: linear)",
            details={"scoring_s": scoring},
        ),
        Figure(
            "timeline.scoring_s_per_audio_hour",
            round(scoring["long"] * 3600.0 / long_s, 1),
            "s",
            len(runs["long"]),
            f"{compared}: scoring seconds per hour of audio (long file)",
            details={"wall_s": {k: median([r["wall_s"] for r in v]) for k, v in runs.items()}},
        ),
    ]
