"""Shared pieces: figure records, timing on a noisy machine, the machine block, output.

This machine (and most laptops) is noisy: other work steals cores at random. So every
timing is a median over repeats, the candidates of a comparison run interleaved (A, B, A,
B, ...) within one process so a slow minute hits both, and every ratio is formed from
figures measured in the same run, never against a stored number.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
VERSIONED_PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "librosa",
    "scipy",
    "keras-tuner",
    "mlflow",
    "dvc",
    "soundfile",
    "pillow",
)


@dataclass
class Figure:
    """One reported number: what it is, how often it was measured, what it compared."""

    key: str
    value: float
    unit: str
    repeats: int
    compared: str
    target: str | None = None  # e.g. ">= 3"; None when the figure has no target
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, _, bound = self.target.partition(" ")
        limit = float(bound)
        return {">=": self.value >= limit, "<=": self.value <= limit}[op]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("key")
        out["met"] = self.met
        return _finite(out)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become null (and the test suite rejects them anyway)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def epoch_timer() -> Any:
    """A Keras callback that keeps each epoch's wall time (Keras imported only when asked)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> dict[str, float]:
    """The raw repeats and their range, so a reader can see how noisy a median is."""
    return {
        "median": round(median(values), 6),
        "min": round(min(values), 6),
        "max": round(max(values), 6),
        "runs": [round(v, 6) for v in values],
    }


def interleaved(
    candidates: dict[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every candidate `warmup` times (discarded), then `repeats` rounds, interleaved.

    A candidate returns the seconds it measured itself (so it can leave out its own set-up).
    The order within a round rotates, so no candidate always runs right after another.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(candidates[name]())
    return times


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine ----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """GPUs as nvidia-smi names them (no TensorFlow import needed), plus TF's view if loaded."""
    found: list[str] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            found = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    tf = sys.modules.get("tensorflow")
    if not found and tf is not None:
        found = [d.name for d in tf.config.list_physical_devices("GPU")]
    return found


def machine() -> dict[str, Any]:
    import psutil

    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpus = _gpus()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpus or "none",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- output ---------------------------------------------------------------------


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2e}"


def markdown_table(figures: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| figure | value | unit | repeats | target | compared |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for key, fig in figures.items():
        target = fig.get("target") or ""
        if target:
            target += " ✓" if fig.get("met") else " ✗ missed"
        compared = str(fig.get("compared", "")).replace("|", "\\|").replace("\n", " ")
        value = fig.get("value")
        shown = _fmt(value) if isinstance(value, int | float) else str(value)
        rows.append(
            f"| `{key}` | {shown} | {fig.get('unit', '')} | {fig.get('repeats', '')} "
            f"| {target} | {compared} |"
        )
    return "\n".join(rows)
